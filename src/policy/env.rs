//! `${VAR}` expansion in string values, and where variables come from.
//!
//! Expansion runs after parsing, on string values only (never keys, never
//! numbers), so positions stay true and no syntax-error snippet can hold a
//! secret. `$${` writes a literal `${`; any other `$` is kept as is.
//!
//! Where values come from is an [`EnvMode`]: a real [`EnvSource`] (the
//! process environment, or a map that may overlay it), or placeholders
//! (`--no-env`), which leave every `${VAR}` unexpanded so that CI can check
//! policies without production secrets; checks that need the real value are
//! then skipped for that value.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

/// Where `${VAR}` values come from.
pub trait EnvSource: Send + Sync {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment. A variable that is not valid Unicode counts as
/// not set.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// Variables from a map, optionally laid over the process environment (the
/// map wins). `demo` uses it to inject its loopback partner's URL; tests use
/// it to stay independent of the machine.
#[derive(Clone, Default)]
pub struct MapEnv {
    vars: BTreeMap<String, String>,
    overlay_process: bool,
}

impl MapEnv {
    /// Only the map's variables.
    pub fn new() -> Self {
        Self::default()
    }

    /// The map's variables, then the process environment.
    pub fn overlaying_process() -> Self {
        Self {
            vars: BTreeMap::new(),
            overlay_process: true,
        }
    }

    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.set(name, value);
        self
    }

    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.vars.insert(name.into(), value.into());
    }
}

impl EnvSource for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        match self.vars.get(name) {
            Some(value) => Some(value.clone()),
            None if self.overlay_process => ProcessEnv.var(name),
            None => None,
        }
    }
}

impl fmt::Debug for MapEnv {
    // Names only: the values may be secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapEnv")
            .field("names", &self.vars.keys().collect::<Vec<_>>())
            .field("overlay_process", &self.overlay_process)
            .finish()
    }
}

/// How `${VAR}` is treated while loading policies.
#[derive(Clone)]
pub enum EnvMode {
    /// Expand from this source; a missing variable is an error.
    Resolve(Arc<dyn EnvSource>),
    /// `--no-env`: keep `${VAR}` as written and skip the checks that need
    /// its value (URL shape, header values, …). For validation only.
    Placeholders,
}

impl EnvMode {
    /// Expand from the process environment: what `run` uses.
    pub fn process() -> Self {
        EnvMode::Resolve(Arc::new(ProcessEnv))
    }

    pub fn from_source(source: impl EnvSource + 'static) -> Self {
        EnvMode::Resolve(Arc::new(source))
    }
}

impl fmt::Debug for EnvMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvMode::Resolve(_) => f.write_str("EnvMode::Resolve(..)"),
            EnvMode::Placeholders => f.write_str("EnvMode::Placeholders"),
        }
    }
}

/// A `${` that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("unterminated `${{`: close it with `}}`, or write `$${{` for a literal `${{`")]
    Unterminated,
    #[error(
        "bad variable name `${{{0}}}`: use letters, digits and `_`, not starting with a digit"
    )]
    BadName(String),
}

/// The result of expanding one string that mentions at least one variable.
#[derive(Clone, PartialEq, Eq)]
pub struct Expansion {
    /// The text as written (safe to show).
    pub raw: String,
    /// The expanded text; the raw text when not `resolved`.
    pub value: String,
    /// Every variable the text names, in order, without repeats.
    pub vars: Vec<String>,
    /// Variables the source does not have (always empty for placeholders).
    pub missing: Vec<String>,
    /// False with placeholders or a missing variable: `value` is not the
    /// real value, so checks that need it are skipped.
    pub resolved: bool,
    /// The values substituted, for redaction of messages.
    pub secrets: Vec<String>,
}

impl fmt::Debug for Expansion {
    // Never the expanded value: only what was written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expansion")
            .field("raw", &self.raw)
            .field("vars", &self.vars)
            .field("missing", &self.missing)
            .field("resolved", &self.resolved)
            .finish_non_exhaustive()
    }
}

/// One piece of a string with `${…}` in it.
enum Piece<'a> {
    Literal(&'a str),
    Var(&'a str),
}

fn pieces(text: &str) -> Result<Vec<Piece<'_>>, ExpandError> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        let after = &rest[dollar + 1..];
        if let Some(escaped) = after.strip_prefix("${") {
            // `$${` → a literal `${`.
            out.push(Piece::Literal(&rest[..dollar]));
            out.push(Piece::Literal("${"));
            rest = escaped;
        } else if let Some(body) = after.strip_prefix('{') {
            out.push(Piece::Literal(&rest[..dollar]));
            let close = body.find('}').ok_or(ExpandError::Unterminated)?;
            let name = &body[..close];
            if !is_var_name(name) {
                return Err(ExpandError::BadName(name.to_string()));
            }
            out.push(Piece::Var(name));
            rest = &body[close + 1..];
        } else {
            out.push(Piece::Literal(&rest[..=dollar]));
            rest = after;
        }
    }
    out.push(Piece::Literal(rest));
    Ok(out)
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Expands `text`: [`ExpandOutcome::Plain`] when it names no variable (an
/// escaped `$${` is unescaped all the same).
pub fn expand(text: &str, env: &EnvMode) -> Result<ExpandOutcome, ExpandError> {
    if !text.contains('$') {
        return Ok(ExpandOutcome::Plain(text.to_string()));
    }
    let pieces = pieces(text)?;
    let mut vars: Vec<String> = Vec::new();
    for piece in &pieces {
        if let Piece::Var(name) = piece {
            if !vars.iter().any(|v| v == name) {
                vars.push((*name).to_string());
            }
        }
    }
    if vars.is_empty() {
        let value = pieces
            .iter()
            .map(|p| match p {
                Piece::Literal(s) | Piece::Var(s) => *s,
            })
            .collect();
        return Ok(ExpandOutcome::Plain(value));
    }
    let source = match env {
        EnvMode::Resolve(source) => source,
        EnvMode::Placeholders => {
            return Ok(ExpandOutcome::Expanded(Expansion {
                raw: text.to_string(),
                value: text.to_string(),
                vars,
                missing: Vec::new(),
                resolved: false,
                secrets: Vec::new(),
            }))
        }
    };
    let found: BTreeMap<String, Option<String>> = vars
        .iter()
        .map(|name| (name.clone(), source.var(name)))
        .collect();
    let missing: Vec<String> = vars
        .iter()
        .filter(|name| found.get(name.as_str()).is_some_and(Option::is_none))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Ok(ExpandOutcome::Expanded(Expansion {
            raw: text.to_string(),
            value: text.to_string(),
            vars,
            missing,
            resolved: false,
            secrets: Vec::new(),
        }));
    }
    let mut value = String::new();
    for piece in &pieces {
        match piece {
            Piece::Literal(s) => value.push_str(s),
            Piece::Var(name) => {
                if let Some(Some(v)) = found.get(*name) {
                    value.push_str(v);
                }
            }
        }
    }
    Ok(ExpandOutcome::Expanded(Expansion {
        raw: text.to_string(),
        value,
        vars,
        missing,
        resolved: true,
        secrets: found.into_values().flatten().collect(),
    }))
}

/// What [`expand`] made of one string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandOutcome {
    /// No variable: the text, with `$${` unescaped.
    Plain(String),
    Expanded(Expansion),
}

/// Removes expanded values from messages: the last guard that no diagnostic
/// ever shows a secret. Values shorter than [`Redactor::MIN_LEN`] are left
/// alone: they hold no secret, and replacing every `a` would garble
/// every message.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: BTreeSet<String>,
}

impl Redactor {
    pub const MIN_LEN: usize = 3;

    pub fn add(&mut self, secret: &str) {
        if secret.chars().count() >= Self::MIN_LEN {
            self.secrets.insert(secret.to_string());
        }
    }

    pub fn redact(&self, message: &str) -> String {
        // Longest first, so that a secret containing another is removed
        // whole.
        let mut secrets: Vec<&String> = self.secrets.iter().collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let mut out = message.to_string();
        for secret in secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
            let escaped: String = secret.escape_debug().collect();
            if escaped != **secret && out.contains(&escaped) {
                out = out.replace(&escaped, "***");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> EnvMode {
        EnvMode::from_source(
            MapEnv::new()
                .with("TOKEN", "s3cr3t")
                .with("HOST", "api.example"),
        )
    }

    fn expanded(text: &str) -> Expansion {
        match expand(text, &env()).unwrap() {
            ExpandOutcome::Expanded(e) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plain_text_and_escapes() {
        assert_eq!(
            expand("no vars, $5", &env()).unwrap(),
            ExpandOutcome::Plain("no vars, $5".into())
        );
        assert_eq!(
            expand("literal $${TOKEN}", &env()).unwrap(),
            ExpandOutcome::Plain("literal ${TOKEN}".into())
        );
        assert_eq!(
            expand("ends with $", &env()).unwrap(),
            ExpandOutcome::Plain("ends with $".into())
        );
    }

    #[test]
    fn variables_are_substituted() {
        let e = expanded("Bearer ${TOKEN} for https://${HOST}/${TOKEN} $${X}");
        assert_eq!(e.value, "Bearer s3cr3t for https://api.example/s3cr3t ${X}");
        assert_eq!(e.vars, vec!["TOKEN", "HOST"]);
        assert!(e.resolved);
        assert!(e.missing.is_empty());
        // Debug never shows the value.
        assert!(!format!("{e:?}").contains("s3cr3t"));
    }

    #[test]
    fn missing_variables_are_listed_and_nothing_is_substituted() {
        let e = expanded("${TOKEN}-${NOPE}-${ALSO_NOPE}");
        assert_eq!(e.missing, vec!["NOPE", "ALSO_NOPE"]);
        assert!(!e.resolved);
        assert_eq!(e.value, "${TOKEN}-${NOPE}-${ALSO_NOPE}");
        assert!(e.secrets.is_empty());
    }

    #[test]
    fn placeholders_keep_the_text() {
        let e = match expand("Bearer ${TOKEN}", &EnvMode::Placeholders).unwrap() {
            ExpandOutcome::Expanded(e) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(e.value, "Bearer ${TOKEN}");
        assert!(!e.resolved);
        assert!(e.missing.is_empty());
    }

    #[test]
    fn malformed_references_are_errors() {
        assert_eq!(expand("${TOKEN", &env()), Err(ExpandError::Unterminated));
        assert_eq!(
            expand("${A-B}", &env()),
            Err(ExpandError::BadName("A-B".into()))
        );
        assert_eq!(
            expand("${}", &env()),
            Err(ExpandError::BadName(String::new()))
        );
        assert_eq!(
            expand("${1X}", &env()),
            Err(ExpandError::BadName("1X".into()))
        );
    }

    #[test]
    fn map_env_overlays_the_process_env() {
        let env = MapEnv::overlaying_process().with("PATH", "mine");
        assert_eq!(env.var("PATH").as_deref(), Some("mine"));
        let only = MapEnv::new();
        assert_eq!(only.var("PATH"), None);
        assert!(!format!("{:?}", MapEnv::new().with("K", "secret")).contains("secret"));
    }

    #[test]
    fn redactor_removes_secrets_and_their_escaped_form() {
        let mut r = Redactor::default();
        r.add("s3cr3t");
        r.add("a\"b\"c");
        r.add("xy");
        assert_eq!(r.redact("got s3cr3t twice: s3cr3t"), "got *** twice: ***");
        assert_eq!(r.redact(r#"string "a\"b\"c""#), r#"string "***""#);
        assert_eq!(r.redact("xy stays"), "xy stays");
    }
}
