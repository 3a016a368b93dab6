//! The policy files as users write them.
