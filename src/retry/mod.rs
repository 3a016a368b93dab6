//! Pure retry maths: how long to wait before the next attempt
//! ([`backoff`]), what a partner's answer means ([`classify`]), and how
//! many retries an hour may bring ([`quota`]).
//!
//! Nothing here does I/O or reads the clock: the time and the random jitter
//! sample are arguments, so every result can be tested exactly.

pub(crate) mod backoff;
pub(crate) mod classify;
pub mod quota;

pub use backoff::{delay_before_retry, nominal_delay, parse_retry_after};
pub use classify::{classify, Verdict, BUILTIN_RULES};
