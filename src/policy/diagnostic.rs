//! One problem found in the policy files, pointing at `file:line:col` and the
//! key path, so that both a person and a script can find it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::node::Pos;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The policy set cannot be used.
    Error,
    /// Worth a look; the policy set is still used.
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A problem in a policy file.
///
/// `Display` prints `file:line:col: error: path: message`, the form editors
/// and CI annotate (`file: error: message` when there is no position, e.g.
/// a file that cannot be read). `message` never holds a value expanded from
/// `${VAR}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    /// 1-based; 0 when the problem concerns the file as a whole.
    pub line: u32,
    /// 1-based, in characters; 0 with `line` 0.
    pub column: u32,
    /// The key path, e.g. `flows.acme-leads.steps[0].channel`; empty when
    /// the problem is not about one key.
    pub path: String,
    pub message: String,
}

impl Diagnostic {
    pub fn error(
        file: &Path,
        pos: Pos,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(Severity::Error, file, pos, path, message)
    }

    pub fn warning(
        file: &Path,
        pos: Pos,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(Severity::Warning, file, pos, path, message)
    }

    pub fn new(
        severity: Severity,
        file: &Path,
        pos: Pos,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity,
            file: file.to_path_buf(),
            line: pos.line,
            column: pos.column,
            path: shorten_path(&path.into()),
            message: message.into(),
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    pub fn pos(&self) -> Pos {
        Pos::new(self.line, self.column)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": {}: ", self.severity)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// The most characters of a key or value a message quotes. A file that is
/// not a policy at all (say, a system file) must not be shown whole.
pub const QUOTE_MAX: usize = 40;

/// `text` cut to [`QUOTE_MAX`] characters, with `…` when cut: for a key
/// quoted back to the user.
pub fn shorten(text: &str) -> String {
    match text.char_indices().nth(QUOTE_MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// Each key of a path cut to [`QUOTE_MAX`] characters.
fn shorten_path(path: &str) -> String {
    if path.chars().count() <= QUOTE_MAX {
        return path.to_string();
    }
    path.split('.').map(shorten).collect::<Vec<_>>().join(".")
}

/// Whether any of `diagnostics` is an error.
pub fn has_errors(diagnostics: &[Diagnostic]) -> bool {
    diagnostics.iter().any(Diagnostic::is_error)
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_keys_and_values_are_quoted_in_part() {
        let key = format!("root:$6${}", "x".repeat(100));
        let d = super::Diagnostic::error(
            std::path::Path::new("p.yaml"),
            super::Pos::new(1, 1),
            key.clone(),
            format!("unknown top-level key `{}`", super::shorten(&key)),
        );
        let shown = d.to_string();
        assert!(!shown.contains(&"x".repeat(41)), "{shown}");
        assert!(shown.ends_with("…`"), "{shown}");
        let short = super::Diagnostic::error(
            std::path::Path::new("p.yaml"),
            super::Pos::new(1, 1),
            "flows.a.steps[0]",
            "unknown channel `x`, see `y`",
        );
        assert_eq!(short.message, "unknown channel `x`, see `y`");
        assert_eq!(
            super::shorten("é".repeat(41).as_str()),
            format!("{}…", "é".repeat(40))
        );
        assert_eq!(short.path, "flows.a.steps[0]");
    }

    use super::*;

    #[test]
    fn displays_as_file_line_col_severity_path_message() {
        let d = Diagnostic::error(
            Path::new("policies/acme.yaml"),
            Pos::new(41, 18),
            "flows.acme-leads.steps[0].channel",
            "unknown channel `acme-apii`; defined channels: acme-api",
        );
        assert_eq!(
            d.to_string(),
            "policies/acme.yaml:41:18: error: flows.acme-leads.steps[0].channel: \
             unknown channel `acme-apii`; defined channels: acme-api"
        );
        let d = Diagnostic::warning(Path::new("p"), Pos::UNKNOWN, "", "cannot read");
        assert_eq!(d.to_string(), "p: warning: cannot read");
    }

    #[test]
    fn serializes_for_scripts() {
        let d = Diagnostic::error(Path::new("a.toml"), Pos::new(2, 3), "flows.x", "bad");
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            serde_json::json!({
                "severity": "error",
                "file": "a.toml",
                "line": 2,
                "column": 3,
                "path": "flows.x",
                "message": "bad",
            })
        );
    }
}
