//! Pacing that adapts: what the engine learns from each channel's history
//! and how it paces itself by it. [`insights`]: hourly counts per channel
//! in the step log, shared by the nodes, and what they say;
//! [`recorder`]: this node's counts on their way there; [`cuts`]: where
//! that history cuts an `adapt` template's retries; [`errors`]: failed
//! attempts per channel and second, for `slow_down`; [`pool_health`]: the
//! members' shared history for `healthiest` pools; [`health`]: the
//! engine's health from the lag of due jobs.

pub mod cuts;
pub mod errors;
pub mod health;
pub mod insights;
pub mod pool_health;
pub mod recorder;

pub use cuts::Cuts;
pub use errors::ErrorWindows;
pub use recorder::Recorder;
