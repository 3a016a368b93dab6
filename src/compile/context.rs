//! The state one compilation carries: the decoded files, to point into them,
//! and the diagnostics found so far.

use std::fmt::Display;

use crate::policy::{Diagnostic, ParsedFile, Pos, Severity};

/// Where in the sources a value was written: a file (by index) and a key
/// path in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub file: usize,
    pub path: String,
}

impl Site {
    pub fn new(file: usize, path: impl Into<String>) -> Self {
        Self {
            file,
            path: path.into(),
        }
    }

    /// The site of a key under this one.
    pub fn child(&self, key: &str) -> Site {
        Site::new(self.file, format!("{}.{key}", self.path))
    }

    /// The site of list item `index` under this one.
    pub fn index(&self, index: usize) -> Site {
        Site::new(self.file, format!("{}[{index}]", self.path))
    }
}

pub struct Ctx<'a> {
    pub files: &'a [ParsedFile],
    diags: Vec<Diagnostic>,
}

impl<'a> Ctx<'a> {
    pub fn new(files: &'a [ParsedFile]) -> Self {
        Self {
            files,
            diags: Vec::new(),
        }
    }

    pub fn file(&self, site: &Site) -> &'a ParsedFile {
        &self.files[site.file]
    }

    /// Whether the value at `site` is the real one (not a placeholder nor a
    /// missing variable): checks of its content are skipped otherwise.
    pub fn is_resolved(&self, site: &Site) -> bool {
        self.file(site).is_resolved(&site.path)
    }

    /// `value` as it may be quoted in a message: as written when it came
    /// from `${VAR}`.
    pub fn shown<'v>(&self, site: &Site, value: &'v str) -> &'v str
    where
        'a: 'v,
    {
        self.file(site).shown(&site.path, value)
    }

    /// The site of each of `count` values written at `site` either as a
    /// list (`key[i]`) or, for keys that take one value or a list, as one
    /// value (`key`).
    pub fn item_sites(&self, site: &Site, count: usize) -> Vec<Site> {
        let as_list = self
            .file(site)
            .positions
            .exact(&site.index(0).path)
            .is_some();
        (0..count)
            .map(|i| if as_list { site.index(i) } else { site.clone() })
            .collect()
    }

    /// `file:line:col` of a site's key, for messages that name another
    /// place.
    pub fn describe_key(&self, site: &Site) -> String {
        let file = self.file(site);
        let pos = file.key_at(&site.path);
        format!("{}:{}:{}", file.path.display(), pos.line, pos.column)
    }

    /// An error at the value of `site` (or the key of a list or mapping).
    pub fn error(&mut self, site: &Site, message: impl Display) {
        let pos = self.file(site).at(&site.path);
        self.push(Severity::Error, site, pos, message);
    }

    /// An error at the key of `site`: for names and keys that should not be
    /// there.
    pub fn error_at_key(&mut self, site: &Site, message: impl Display) {
        let pos = self.file(site).key_at(&site.path);
        self.push(Severity::Error, site, pos, message);
    }

    pub fn warning(&mut self, site: &Site, message: impl Display) {
        let pos = self.file(site).at(&site.path);
        self.push(Severity::Warning, site, pos, message);
    }

    pub fn warning_at_key(&mut self, site: &Site, message: impl Display) {
        let pos = self.file(site).key_at(&site.path);
        self.push(Severity::Warning, site, pos, message);
    }

    fn push(&mut self, severity: Severity, site: &Site, pos: Pos, message: impl Display) {
        let file = self.file(site);
        self.diags.push(Diagnostic::new(
            severity,
            &file.path,
            pos,
            site.path.clone(),
            message.to_string(),
        ));
    }

    pub fn into_diagnostics(self) -> Vec<Diagnostic> {
        self.diags
    }
}
