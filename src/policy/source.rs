//! A policy file's text and format, and parsing it into a position-keeping
//! [`Node`] tree (YAML or TOML by file extension).

use std::path::{Path, PathBuf};

use super::node::{Node, Pos};
use super::{toml_file, yaml};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Yaml,
    Toml,
}

impl Format {
    /// By extension: `.yaml`, `.yml`, `.toml` (case-insensitive).
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "yaml" | "yml" => Some(Format::Yaml),
            "toml" => Some(Format::Toml),
            _ => None,
        }
    }
}

/// One policy file as read from disk (or embedded, for `demo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
    pub format: Format,
}

impl SourceFile {
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>, format: Format) -> Self {
        Self {
            path: path.into(),
            text: text.into(),
            format,
        }
    }

    /// A file whose format follows from its extension.
    pub fn from_path_and_text(path: impl Into<PathBuf>, text: impl Into<String>) -> Option<Self> {
        let path = path.into();
        let format = Format::from_path(&path)?;
        Some(Self::new(path, text, format))
    }
}

/// A file the parser rejected, at the parser's own position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Parses the file's text. Keys, values and list items keep their line and
/// column; a repeated key is kept for the caller to report (YAML) or is a
/// syntax error (TOML).
pub fn parse(source: &SourceFile) -> Result<Node, SyntaxError> {
    // A byte-order mark is not content; both parsers would stumble on it or
    // count it as a column.
    let text = source.text.strip_prefix('\u{FEFF}').unwrap_or(&source.text);
    match source.format {
        Format::Yaml => yaml::parse(text).map_err(|e| SyntaxError {
            pos: e.pos,
            message: e.message,
        }),
        Format::Toml => toml_file::parse(text).map_err(|e| SyntaxError {
            pos: e.pos,
            message: e.message,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_follows_the_extension() {
        assert_eq!(Format::from_path(Path::new("a.yaml")), Some(Format::Yaml));
        assert_eq!(Format::from_path(Path::new("a.YML")), Some(Format::Yaml));
        assert_eq!(Format::from_path(Path::new("a.toml")), Some(Format::Toml));
        assert_eq!(Format::from_path(Path::new("a.json")), None);
        assert_eq!(Format::from_path(Path::new("yaml")), None);
    }

    #[test]
    fn both_formats_parse_to_the_same_shape() {
        let yaml = SourceFile::from_path_and_text("a.yaml", "a: { b: [1, x] }\n").unwrap();
        let toml = SourceFile::from_path_and_text("a.toml", "a = { b = [1, 'x'] }\n").unwrap();
        let yaml = super::super::node::to_json("", &parse(&yaml).unwrap()).unwrap();
        let toml = super::super::node::to_json("", &parse(&toml).unwrap()).unwrap();
        assert_eq!(yaml, toml);
    }
}
