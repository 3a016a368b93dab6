//! Pure compilation of policy definitions into the [`crate::model`].
