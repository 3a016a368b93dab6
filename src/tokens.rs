//! API tokens as data: a name, a secret and a scope. `settings` reads them
//! from `steadfast.toml`; `api::auth` checks requests against them. Neither
//! owns the other's types.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Create jobs, and read.
    Submit,
    /// Everything.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Submit => "submit",
            Scope::Admin => "admin",
        }
    }
}

/// A token with its secret resolved. `Debug` never shows the secret.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    pub name: String,
    pub secret: String,
    pub scope: Scope,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("secret", &"***")
            .field("scope", &self.scope)
            .finish()
    }
}
