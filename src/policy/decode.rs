//! One source file → its `*Def`s, positions and `${VAR}` expansions, with a
//! diagnostic for every problem found on the way.
//!
//! The steps, in order: parse into a [`Node`] tree; report repeated keys (at
//! the second one); drop the reserved `tests` key; record every key path's
//! position; expand `${VAR}` in string values; decode each entry of each
//! section on its own (with `serde_path_to_error`), so that one broken entry
//! does not hide problems in the others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use super::cases::TestCaseDef;
use super::defs::{CalendarDef, ChannelDef, ClassifierDef, FlowDef, TemplateDef, TOP_LEVEL_KEYS};
use super::diagnostic::{shorten, Diagnostic};
use super::env::{expand, EnvMode, ExpandOutcome, Expansion};
use super::node::{
    child_path, duplicate_keys, index_path, to_json, Node, NodeValue, Pos, Positions,
};
use super::source::{parse, SourceFile};

/// The kinds of named definitions; each is its own namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    Templates,
    Classifiers,
    Calendars,
    Channels,
    Flows,
}

impl Section {
    pub const ALL: [Section; 5] = [
        Section::Templates,
        Section::Classifiers,
        Section::Calendars,
        Section::Channels,
        Section::Flows,
    ];

    /// The top-level key.
    pub fn key(self) -> &'static str {
        match self {
            Section::Templates => "templates",
            Section::Classifiers => "classifiers",
            Section::Calendars => "calendars",
            Section::Channels => "channels",
            Section::Flows => "flows",
        }
    }

    /// One definition of this kind, for messages.
    pub fn singular(self) -> &'static str {
        match self {
            Section::Templates => "template",
            Section::Classifiers => "classifier",
            Section::Calendars => "calendar",
            Section::Channels => "channel",
            Section::Flows => "flow",
        }
    }

    fn from_key(key: &str) -> Option<Section> {
        Section::ALL.into_iter().find(|s| s.key() == key)
    }
}

/// A definition and the name it was given.
#[derive(Debug, Clone, PartialEq)]
pub struct Named<T> {
    pub name: String,
    pub def: T,
}

/// Everything one file defines, in source order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileDefs {
    pub templates: Vec<Named<TemplateDef>>,
    pub classifiers: Vec<Named<ClassifierDef>>,
    pub calendars: Vec<Named<CalendarDef>>,
    pub channels: Vec<Named<ChannelDef>>,
    pub flows: Vec<Named<FlowDef>>,
    /// Names whose definition could not be decoded (already reported): they
    /// still exist, so references to them are not reported as unknown.
    pub broken: Vec<(Section, String)>,
}

/// One decoded file: its definitions and what is needed to point into it.
#[derive(Debug, Clone)]
pub struct ParsedFile {
    pub path: PathBuf,
    pub defs: FileDefs,
    pub positions: Positions,
    /// Key path → how its string value was expanded, for strings that name
    /// a variable.
    pub expansions: BTreeMap<String, Expansion>,
    /// False when the file could not be parsed at all: its names are
    /// unknown, so "unknown name" and "unused" checks would mislead.
    pub parsed: bool,
}

impl ParsedFile {
    /// Where to point for `path` (see [`Positions::at`]).
    pub fn at(&self, path: &str) -> Pos {
        self.positions.at(path)
    }

    /// The key's own position (see [`Positions::key_at`]).
    pub fn key_at(&self, path: &str) -> Pos {
        self.positions.key_at(path)
    }

    /// How the value at `path` was expanded, if it names a variable.
    pub fn expansion(&self, path: &str) -> Option<&Expansion> {
        self.expansions.get(path)
    }

    /// Whether the value at `path` is real: false for placeholders and
    /// missing variables, whose checks are skipped.
    pub fn is_resolved(&self, path: &str) -> bool {
        self.expansions.get(path).is_none_or(|e| e.resolved)
    }

    /// The text to quote in a message for the value at `path`: as written
    /// when it came from `${VAR}`, so that no message shows a secret.
    pub fn shown<'a>(&'a self, path: &str, value: &'a str) -> &'a str {
        self.expansions.get(path).map_or(value, |e| e.raw.as_str())
    }
}

/// Parses and decodes one file.
pub fn decode(source: &SourceFile, env: &EnvMode) -> (ParsedFile, Vec<Diagnostic>) {
    let mut file = ParsedFile {
        path: source.path.clone(),
        defs: FileDefs::default(),
        positions: Positions::default(),
        expansions: BTreeMap::new(),
        parsed: false,
    };
    let mut diags = Vec::new();
    let mut root = match parse(source) {
        Ok(root) => root,
        Err(err) => {
            diags.push(Diagnostic::error(&source.path, err.pos, "", err.message));
            return (file, diags);
        }
    };
    file.parsed = true;

    for dup in duplicate_keys("", &root) {
        diags.push(Diagnostic::error(
            &source.path,
            dup.pos,
            dup.path.clone(),
            format!(
                "key written twice in one mapping (first at line {}, column {})",
                dup.first.line, dup.first.column
            ),
        ));
    }

    let NodeValue::Map(entries) = &mut root.value else {
        diags.push(Diagnostic::error(
            &source.path,
            root.pos,
            "",
            format!(
                "a policy file is a mapping with the keys {}; this one is {}",
                TOP_LEVEL_KEYS.join(", "),
                root.kind()
            ),
        ));
        return (file, diags);
    };
    // Reserved for policy test cases, which `steadfast test` reads.
    entries.retain(|(key, _)| key.name != "tests");

    file.positions.record("", None, &root);
    expand_tree(
        &mut root,
        "",
        env,
        &source.path,
        &mut file.expansions,
        &mut diags,
    );

    let NodeValue::Map(entries) = &root.value else {
        return (file, diags);
    };
    let mut seen = Vec::new();
    for (key, section_node) in entries {
        let Some(section) = Section::from_key(&key.name) else {
            diags.push(Diagnostic::error(
                &source.path,
                key.pos,
                key.name.clone(),
                format!(
                    "unknown top-level key `{}`; expected one of {}",
                    shorten(&key.name),
                    TOP_LEVEL_KEYS.join(", ")
                ),
            ));
            continue;
        };
        if seen.contains(&section) {
            // Reported as a repeated key already.
            continue;
        }
        seen.push(section);
        decode_section(&mut file, section, section_node, &mut diags);
    }
    (file, diags)
}

/// Where test cases are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasesIn {
    /// The `tests` key of a policy file; the rest of the file is policy,
    /// checked (and its syntax reported) by [`crate::compile`].
    PolicyFile,
    /// A `*.test.yaml` / `*.test.toml` file, which holds only `tests`.
    TestFile,
}

/// The test cases of one file and what is needed to point into it.
#[derive(Debug, Clone)]
pub struct CaseFile {
    pub path: PathBuf,
    /// The cases that could be decoded, each with its index in `tests`.
    pub cases: Vec<(usize, TestCaseDef)>,
    pub positions: Positions,
}

impl CaseFile {
    /// Where to point for `path` (see [`Positions::at`]).
    pub fn at(&self, path: &str) -> Pos {
        self.positions.at(path)
    }
}

/// Reads the test cases of one file: every case is decoded on its own, and
/// every problem is a diagnostic at its `file:line:col`. `${VAR}` is not
/// expanded in test cases: what they say is what they test.
pub fn decode_cases(source: &SourceFile, kind: CasesIn) -> (CaseFile, Vec<Diagnostic>) {
    let mut file = ParsedFile {
        path: source.path.clone(),
        defs: FileDefs::default(),
        positions: Positions::default(),
        expansions: BTreeMap::new(),
        parsed: false,
    };
    let mut cases = Vec::new();
    let mut diags = Vec::new();
    let is_test_file = kind == CasesIn::TestFile;
    let finish = |file: ParsedFile, cases| CaseFile {
        path: file.path,
        cases,
        positions: file.positions,
    };
    let root = match parse(source) {
        Ok(root) => root,
        Err(err) => {
            if is_test_file {
                diags.push(Diagnostic::error(&source.path, err.pos, "", err.message));
            }
            return (finish(file, cases), diags);
        }
    };
    file.parsed = true;
    file.positions.record("", None, &root);
    let NodeValue::Map(entries) = &root.value else {
        if is_test_file {
            diags.push(Diagnostic::error(
                &source.path,
                root.pos,
                "",
                format!(
                    "a test file is a mapping with one key, `tests`; this one is {}",
                    root.kind()
                ),
            ));
        }
        return (finish(file, cases), diags);
    };
    if is_test_file {
        for dup in duplicate_keys("", &root) {
            diags.push(Diagnostic::error(
                &source.path,
                dup.pos,
                dup.path.clone(),
                format!(
                    "key written twice in one mapping (first at line {}, column {})",
                    dup.first.line, dup.first.column
                ),
            ));
        }
        for (key, _) in entries.iter().filter(|(k, _)| k.name != "tests") {
            diags.push(Diagnostic::error(
                &source.path,
                key.pos,
                key.name.clone(),
                format!(
                    "a test file holds only `tests`; `{}` belongs in a policy file (files \
                     named *.test.yaml, *.test.yml or *.test.toml are not loaded as policy)",
                    key.name
                ),
            ));
        }
    }
    let Some(tests) = root.get("tests") else {
        if is_test_file {
            diags.push(Diagnostic::error(
                &source.path,
                Pos::new(1, 1),
                "",
                "a test file needs a `tests` list of test cases",
            ));
        }
        return (finish(file, cases), diags);
    };
    match &tests.value {
        NodeValue::Seq(items) => {
            for (index, item) in items.iter().enumerate() {
                let path = index_path("tests", index);
                if let Some(case) = decode_entry::<TestCaseDef>(&file, &path, item, &mut diags) {
                    cases.push((index, case));
                }
            }
        }
        NodeValue::Null => {}
        _ => diags.push(Diagnostic::error(
            &source.path,
            file.key_at("tests"),
            "tests",
            format!("`tests` must be a list of test cases, not {}", tests.kind()),
        )),
    }
    (finish(file, cases), diags)
}

fn decode_section(
    file: &mut ParsedFile,
    section: Section,
    node: &Node,
    diags: &mut Vec<Diagnostic>,
) {
    let entries = match &node.value {
        NodeValue::Map(entries) => entries,
        // `flows:` with nothing under it: an empty section.
        NodeValue::Null => return,
        _ => {
            diags.push(Diagnostic::error(
                &file.path,
                file.key_at(section.key()),
                section.key(),
                format!(
                    "`{}` must map names to {} definitions, not be {}",
                    section.key(),
                    section.singular(),
                    node.kind()
                ),
            ));
            return;
        }
    };
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in entries {
        if seen.contains(&key.name.as_str()) {
            continue;
        }
        seen.push(&key.name);
        let path = child_path(section.key(), &key.name);
        let name = key.name.clone();
        let ok = match section {
            Section::Templates => decode_entry(file, &path, value, diags).map(|def| {
                file.defs.templates.push(Named {
                    name: name.clone(),
                    def,
                })
            }),
            Section::Classifiers => decode_entry(file, &path, value, diags).map(|def| {
                file.defs.classifiers.push(Named {
                    name: name.clone(),
                    def,
                })
            }),
            Section::Calendars => decode_entry(file, &path, value, diags).map(|def| {
                file.defs.calendars.push(Named {
                    name: name.clone(),
                    def,
                })
            }),
            Section::Channels => decode_entry(file, &path, value, diags).map(|def| {
                file.defs.channels.push(Named {
                    name: name.clone(),
                    def,
                })
            }),
            Section::Flows => decode_entry(file, &path, value, diags).map(|def| {
                file.defs.flows.push(Named {
                    name: name.clone(),
                    def,
                })
            }),
        };
        if ok.is_none() {
            file.defs.broken.push((section, name));
        }
    }
}

/// Decodes one entry; every problem becomes a diagnostic at its key path.
fn decode_entry<T: DeserializeOwned>(
    file: &ParsedFile,
    path: &str,
    node: &Node,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    let json = match to_json(path, node) {
        Ok(json) => json,
        Err(err) => {
            diags.push(Diagnostic::error(
                &file.path,
                file.at(&err.path),
                err.path,
                err.message,
            ));
            return None;
        }
    };
    // A misspelt key stops serde at the first one; each is reported and
    // taken out, and the entry decoded again, so that every misspelling of
    // an entry shows in one run (bounded, should a key not come out).
    let mut json = json;
    let mut misspelt = 0;
    loop {
        let err = match serde_path_to_error::deserialize::<_, T>(json.clone()) {
            Ok(def) if misspelt == 0 => return Some(def),
            Ok(_) => return None,
            Err(err) => err,
        };
        let mut at = path.to_string();
        for segment in err.path().iter() {
            match segment {
                Segment::Seq { index } => at = index_path(&at, *index),
                Segment::Map { key } => at = child_path(&at, key),
                // Enum segments name a variant, not a key in the file.
                Segment::Enum { .. } => {}
                Segment::Unknown => break,
            }
        }
        let segments: Vec<Segment> = err.path().iter().cloned().collect();
        let message = err.into_inner().to_string();
        if misspelt > 0 && message.starts_with("missing field `") {
            // Most likely the key misspelt above: said once is enough.
            return None;
        }
        diags.push(serde_diagnostic(file, at, &message));
        let removed = quoted_after(&message, "unknown field `")
            .is_some_and(|field| remove_key(&mut json, &segments, field));
        misspelt += 1;
        if !removed || misspelt >= MAX_MISSPELT_PER_ENTRY {
            return None;
        }
    }
}

/// How many misspelt keys one entry reports at most.
const MAX_MISSPELT_PER_ENTRY: usize = 32;

/// Takes key `field` out of the object that `segments` lead to in `json`
/// (the path may end at the object or at the key itself). Whether it was
/// there.
fn remove_key(json: &mut serde_json::Value, segments: &[Segment], field: &str) -> bool {
    let mut here = json;
    for (n, segment) in segments.iter().enumerate() {
        let last = n + 1 == segments.len();
        here = match segment {
            Segment::Map { key } if last && key == field => break,
            Segment::Map { key } => match here.get_mut(key.as_str()) {
                Some(next) => next,
                None => return false,
            },
            Segment::Seq { index } => match here.get_mut(*index) {
                Some(next) => next,
                None => return false,
            },
            Segment::Enum { .. } => here,
            Segment::Unknown => return false,
        };
    }
    here.as_object_mut()
        .is_some_and(|object| object.shift_remove(field).is_some())
}

/// Turns a serde message into a diagnostic that points at the right key and
/// never quotes an expanded value.
fn serde_diagnostic(file: &ParsedFile, mut path: String, message: &str) -> Diagnostic {
    let mut pos = file.at(&path);
    if let Some(field) = quoted_after(message, "unknown field `") {
        // Point at the misspelt key itself, not at its value or mapping
        // (the error path may or may not end with the key already).
        if !path.ends_with(&format!(".{field}")) {
            let key_path = child_path(&path, field);
            if file.positions.exact(&key_path).is_some() {
                path = key_path;
            }
        }
        pos = file.key_at(&path);
    }
    let mut message = plain_serde_message(message);
    for prefix in ["unknown field `", "unknown variant `"] {
        if let Some(quoted) = quoted_after(&message, prefix) {
            let short = shorten(quoted);
            if short != quoted {
                message = message.replacen(
                    &format!("{prefix}{quoted}`"),
                    &format!("{prefix}{short}`"),
                    1,
                );
            }
        }
    }
    if let Some(expansion) = file.expansion(&path) {
        if expansion.resolved && !expansion.value.is_empty() {
            let escaped: String = expansion.value.escape_debug().collect();
            message = message
                .replace(&expansion.value, &expansion.raw)
                .replace(&escaped, &expansion.raw);
        }
    }
    Diagnostic::error(&file.path, pos, path, message)
}

/// serde's words for Rust types, in the words of the file: `expected u32`
/// becomes "expected a whole number", a list where a mapping goes is said
/// to be one.
fn plain_serde_message(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("invalid length ") {
        if rest.contains("expected struct ") {
            return "expected a mapping of keys here, not a list".to_string();
        }
    }
    let Some((head, expected)) = message.rsplit_once(", expected ") else {
        return message.to_string();
    };
    let plain = match expected {
        "u32" | "u64" | "u16" | "i64" => "a whole number, 0 or more",
        "f64" => "a number",
        "a boolean" => "true or false",
        "a string" => "text",
        "a sequence" => "a list",
        struct_name if struct_name.starts_with("struct ") => "a mapping of keys",
        _ => return message.to_string(),
    };
    format!("{head}, expected {plain}")
}

/// The text between `prefix` and the next backtick.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let start = message.find(prefix)? + prefix.len();
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

/// Expands `${VAR}` in every string value under `node`.
fn expand_tree(
    node: &mut Node,
    path: &str,
    env: &EnvMode,
    file: &Path,
    expansions: &mut BTreeMap<String, Expansion>,
    diags: &mut Vec<Diagnostic>,
) {
    match &mut node.value {
        NodeValue::Str(text) => match expand(text, env) {
            Ok(ExpandOutcome::Plain(value)) => *text = value,
            Ok(ExpandOutcome::Expanded(expansion)) => {
                if !expansion.missing.is_empty() {
                    let names: Vec<String> =
                        expansion.missing.iter().map(|n| format!("`{n}`")).collect();
                    let message = if names.len() == 1 {
                        format!("environment variable {} is not set", names[0])
                    } else {
                        format!("environment variables {} are not set", names.join(", "))
                    };
                    diags.push(Diagnostic::error(file, node.pos, path, message));
                }
                text.clone_from(&expansion.value);
                expansions.insert(path.to_string(), expansion);
            }
            Err(err) => diags.push(Diagnostic::error(file, node.pos, path, err.to_string())),
        },
        NodeValue::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_tree(item, &index_path(path, i), env, file, expansions, diags);
            }
        }
        NodeValue::Map(entries) => {
            for (key, value) in entries.iter_mut() {
                let child = child_path(path, &key.name);
                expand_tree(value, &child, env, file, expansions, diags);
            }
        }
        NodeValue::Null | NodeValue::Bool(_) | NodeValue::Int(_) | NodeValue::Float(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::defs::{BackoffDef, Text};
    use crate::policy::env::MapEnv;
    use crate::policy::source::Format;

    fn yaml(text: &str) -> SourceFile {
        SourceFile::new("p.yaml", text, Format::Yaml)
    }

    fn toml(text: &str) -> SourceFile {
        SourceFile::new("p.toml", text, Format::Toml)
    }

    fn env() -> EnvMode {
        EnvMode::from_source(MapEnv::new().with("TOKEN", "s3cr3t-value"))
    }

    fn messages(diags: &[Diagnostic]) -> Vec<String> {
        diags.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn decodes_sections_and_skips_tests() {
        let (file, diags) = decode(
            &yaml(
                "templates:\n  slow:\n    backoff: fixed\n    initial: 2s\n\
                 tests:\n  - anything: goes\n",
            ),
            &env(),
        );
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(file.defs.templates.len(), 1);
        let t = &file.defs.templates[0];
        assert_eq!(t.name, "slow");
        assert_eq!(t.def.backoff, Some(BackoffDef::Fixed));
        assert_eq!(t.def.initial, Some(Text("2s".into())));
    }

    #[test]
    fn unknown_fields_point_at_the_key() {
        let (_, diags) = decode(
            &yaml(
                "flows:\n  f:\n    steps:\n      - name: a\n        channel: c\n        retyr: x\n",
            ),
            &env(),
        );
        assert_eq!(
            messages(&diags),
            vec![
                "p.yaml:6:9: error: flows.f.steps[0].retyr: unknown field `retyr`, expected one of \
                 `name`, `channel`, `parallel`, `when`, `retry`, `body`, `classify`, \
                 `fallback`, `hours`, `circuit_breaker`"
            ]
        );
    }

    #[test]
    fn every_misspelt_key_of_an_entry_is_reported_in_one_run() {
        let (file, diags) = decode(
            &yaml(
                "flows:\n  f:\n    steps:\n      - name: a\n        chanel: c\n        \
                 retyr: x\n      - name: b\n        channel: c\n        fallbak: [d]\n    \
                 on_dead: { notfiy: n }\n",
            ),
            &env(),
        );
        let shown: Vec<(String, u32)> = diags.iter().map(|d| (d.path.clone(), d.line)).collect();
        // `chanel` is not followed by "missing field `channel`": the
        // misspelling says it.
        assert_eq!(
            shown,
            [
                ("flows.f.steps[0].chanel".to_string(), 5),
                ("flows.f.steps[0].retyr".to_string(), 6),
                ("flows.f.steps[1].fallbak".to_string(), 9),
                ("flows.f.on_dead.notfiy".to_string(), 10),
            ],
            "{:#?}",
            messages(&diags)
        );
        assert!(file.defs.flows.is_empty(), "a broken entry is not kept");
        // A wrong type after a misspelling is reported too.
        let (_, diags) = decode(
            &yaml("templates:\n  t:\n    retires: 3\n    multiplier: x\n"),
            &env(),
        );
        assert_eq!(
            diags.iter().map(|d| d.path.as_str()).collect::<Vec<_>>(),
            ["templates.t.retires", "templates.t.multiplier"]
        );
    }

    #[test]
    fn type_errors_point_at_the_value_in_both_formats() {
        let (_, diags) = decode(&yaml("templates:\n  t:\n    retries: many\n"), &env());
        assert_eq!(diags.len(), 1);
        assert_eq!((diags[0].line, diags[0].column), (3, 14));
        assert_eq!(diags[0].path, "templates.t.retries");
        let (_, diags) = decode(&toml("[templates.t]\nretries = \"many\"\n"), &env());
        assert_eq!(diags.len(), 1);
        assert_eq!((diags[0].line, diags[0].column), (2, 11));
        assert_eq!(diags[0].path, "templates.t.retries");
    }

    #[test]
    fn serde_messages_speak_of_the_file_not_of_rust() {
        let (_, diags) = decode(
            &yaml(
                "templates:\n  t:\n    retries: many\n  u:\n    multiplier: x\n\
                 channels:\n  c:\n    http: [a]\n  d:\n    file: 3\n",
            ),
            &env(),
        );
        assert_eq!(
            messages(&diags),
            vec![
                "p.yaml:3:14: error: templates.t.retries: invalid type: string \"many\", \
                 expected a whole number, 0 or more",
                "p.yaml:5:17: error: templates.u.multiplier: invalid type: string \"x\", \
                 expected a number",
                "p.yaml:8:5: error: channels.c.http: expected a mapping of keys here, not a list",
                "p.yaml:10:11: error: channels.d.file: invalid type: integer `3`, expected a \
                 mapping of keys",
            ]
        );
    }

    #[test]
    fn missing_fields_point_at_their_mapping() {
        let (file, diags) = decode(
            &yaml("flows:\n  f:\n    steps:\n      - channel: a\n"),
            &env(),
        );
        assert_eq!(
            messages(&diags),
            vec!["p.yaml:4:9: error: flows.f.steps[0]: missing field `name`"]
        );
        assert_eq!(file.defs.broken, vec![(Section::Flows, "f".to_string())]);
    }

    #[test]
    fn every_broken_entry_is_reported() {
        let (file, diags) = decode(
            &yaml(
                "channels:\n  a: { http: { url: x, wat: 1 } }\n  b: { file: { dir: d } }\n  \
                 c: { nope: 1 }\n",
            ),
            &env(),
        );
        assert_eq!(diags.len(), 2, "{diags:?}");
        assert_eq!(file.defs.channels.len(), 1);
        assert_eq!(file.defs.channels[0].name, "b");
    }

    #[test]
    fn repeated_keys_and_unknown_top_level_keys() {
        let (_, diags) = decode(
            &yaml("channels:\n  a: { file: { dir: x } }\n  a: { file: { dir: y } }\nflow: {}\n"),
            &env(),
        );
        assert_eq!(
            messages(&diags),
            vec![
                "p.yaml:3:3: error: channels.a: key written twice in one mapping \
                 (first at line 2, column 3)",
                "p.yaml:4:1: error: flow: unknown top-level key `flow`; expected one of \
                 templates, classifiers, calendars, channels, flows, tests",
            ]
        );
    }

    #[test]
    fn env_is_expanded_in_strings_and_missing_ones_are_reported() {
        let (file, diags) = decode(
            &yaml(
                "channels:\n  a:\n    http:\n      url: https://x.example/${NOPE}\n      \
                 headers: { Authorization: \"Bearer ${TOKEN}\" }\n",
            ),
            &env(),
        );
        assert_eq!(
            messages(&diags),
            vec!["p.yaml:4:12: error: channels.a.http.url: environment variable `NOPE` is not set"]
        );
        let http = file.defs.channels[0].def.http.as_ref().unwrap();
        assert_eq!(
            http.headers.get("Authorization"),
            Some(&Text("Bearer s3cr3t-value".into()))
        );
        assert!(!file.is_resolved("channels.a.http.url"));
        assert!(file.is_resolved("channels.a.http.headers.Authorization"));
        assert_eq!(
            file.shown("channels.a.http.headers.Authorization", "x"),
            "Bearer ${TOKEN}"
        );
    }

    #[test]
    fn serde_errors_never_quote_an_expanded_value() {
        let (_, diags) = decode(&yaml("templates:\n  t:\n    backoff: ${TOKEN}\n"), &env());
        assert_eq!(diags.len(), 1);
        assert!(!diags[0].message.contains("s3cr3t"), "{}", diags[0]);
        assert!(diags[0].message.contains("${TOKEN}"), "{}", diags[0]);
    }

    #[test]
    fn a_syntax_error_is_reported_at_the_parser_position() {
        let (file, diags) = decode(&toml("a = [1,\n"), &env());
        assert!(!file.parsed);
        assert_eq!(diags.len(), 1);
        assert_eq!((diags[0].line, diags[0].column), (1, 8), "{}", diags[0]);
        assert_eq!(diags[0].message, "unclosed array, expected `]`");
    }

    #[test]
    fn a_file_that_is_not_a_mapping() {
        let (_, diags) = decode(&yaml("- a\n- b\n"), &env());
        assert_eq!(diags.len(), 1);
        assert!(diags[0].message.contains("a list"), "{}", diags[0]);
    }
}
