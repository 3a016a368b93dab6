//! A job's life, pure: the words the step log stores ([`vocabulary`]), the
//! interpreter of a partner's answer ([`interpret`]), and the state machine
//! that decides every move of a job ([`machine::next`]). The executor and
//! [`crate::simulate`] both drive [`next`]; the stores write what it
//! returns. Nothing here does I/O or reads a clock.

pub(crate) mod interpret;
pub(crate) mod machine;
mod vocabulary;

pub use interpret::{hold_at, signed, template_at, Hold, HOLD_RECHECK};
pub use machine::{
    locate, next, Event, Landing, Located, Move, MoveKind, Position, PAUSED_RECHECK,
    VANISHED_RECHECK,
};
pub use vocabulary::{Decision, JobState, Outcome, Reason, Word};
