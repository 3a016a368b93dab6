//! The policy files as users write them: reading them from disk, parsing
//! YAML or TOML into a tree that keeps every key's line and column,
//! expanding `${VAR}`, and decoding into the serde `*Def` types that
//! [`crate::compile`] turns into the [`crate::model`].
//!
//! # Layout
//!
//! - [`load`](load_paths): paths → [`SourceFile`]s (the only I/O here).
//! - `source`, `yaml`, `toml_file`: text → position-keeping tree.
//! - `node`: that tree, and the table from key path to position.
//! - `env`: `${VAR}` expansion and where variables come from ([`EnvMode`]).
//! - [`decode`]: one file → its [`defs`], positions and diagnostics.
//! - [`decode_cases`]: the policy test cases of a file ([`cases`]).
//! - `diagnostic`: [`Diagnostic`], printed as `file:line:col: error: …`.
//! - `schema`: the JSON Schema of the files ([`policy_schema`]).

pub(crate) mod cases;
pub(crate) mod defs;

mod decode;
mod diagnostic;
mod env;
mod load;
mod node;
mod schema;
mod source;
mod toml_file;
mod yaml;

pub use decode::{decode, decode_cases, CaseFile, CasesIn, FileDefs, Named, ParsedFile, Section};
pub use diagnostic::{has_errors, shorten, Diagnostic, Severity};
pub use env::{
    expand, EnvMode, EnvSource, ExpandError, ExpandOutcome, Expansion, MapEnv, ProcessEnv, Redactor,
};
pub use load::{is_policy_file_name, is_test_file_name, load_paths};
pub use node::{Located, Pos, Positions};
pub use schema::policy_schema;
pub use source::{parse, Format, SourceFile, SyntaxError};
