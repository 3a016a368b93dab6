//! One position-keeping tree for both file formats, and the table from key
//! path (`flows.acme-leads.steps[0].channel`) to line and column that every
//! diagnostic uses.
//!
//! YAML and TOML parsers each report positions their own way; both are turned
//! into [`Node`] so that everything after parsing (duplicate keys, `${VAR}`
//! expansion, decoding into `*Def`s) is written once.

use std::collections::BTreeMap;

/// A 1-based line and column (in characters). `0:0` means "unknown": the
/// whole file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl Pos {
    pub const UNKNOWN: Pos = Pos { line: 0, column: 0 };

    pub fn new(line: u32, column: u32) -> Self {
        Self { line, column }
    }

    /// From a parser's wider numbers; a file of four billion lines is not a
    /// policy file, so saturating is fine.
    pub fn saturating(line: u64, column: u64) -> Self {
        Self {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(column).unwrap_or(u32::MAX),
        }
    }
}

/// A parsed value and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: NodeValue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    Null,
    Bool(bool),
    /// Wide enough for every integer either format can write.
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Keys in source order; duplicates are kept so that they can be
    /// reported (see [`duplicate_keys`]).
    Map(Vec<(Key, Node)>),
}

/// A mapping key: always text (YAML's `200:` becomes `"200"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub pos: Pos,
}

impl Node {
    pub fn new(pos: Pos, value: NodeValue) -> Self {
        Self { pos, value }
    }

    /// The entry `name` of a mapping (the first one, if repeated).
    pub fn get(&self, name: &str) -> Option<&Node> {
        match &self.value {
            NodeValue::Map(entries) => entries.iter().find(|(k, _)| k.name == name).map(|e| &e.1),
            _ => None,
        }
    }

    /// What kind of value this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self.value {
            NodeValue::Null => "null",
            NodeValue::Bool(_) => "a boolean",
            NodeValue::Int(_) => "an integer",
            NodeValue::Float(_) => "a number",
            NodeValue::Str(_) => "a string",
            NodeValue::Seq(_) => "a list",
            NodeValue::Map(_) => "a mapping",
        }
    }

    fn is_container(&self) -> bool {
        matches!(self.value, NodeValue::Seq(_) | NodeValue::Map(_))
    }
}

/// Appends a mapping key to a key path.
pub fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Appends a list index to a key path.
pub fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// Where one key path sits in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    /// The key's own position (none for list items and the root).
    pub key: Option<Pos>,
    pub value: Pos,
    /// Whether the value is a list or mapping.
    pub container: bool,
}

/// Key path → position, for one file.
#[derive(Debug, Clone, Default)]
pub struct Positions {
    table: BTreeMap<String, Located>,
}

impl Positions {
    /// Records every key path under `root`, whose own path is `prefix`.
    pub fn record(&mut self, prefix: &str, key: Option<Pos>, node: &Node) {
        // The first occurrence wins: a repeated key is an error reported at
        // the second one, and the first is what its path means.
        self.table.entry(prefix.to_string()).or_insert(Located {
            key,
            value: node.pos,
            container: node.is_container(),
        });
        match &node.value {
            NodeValue::Map(entries) => {
                for (k, v) in entries {
                    self.record(&child_path(prefix, &k.name), Some(k.pos), v);
                }
            }
            NodeValue::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.record(&index_path(prefix, i), None, item);
                }
            }
            _ => {}
        }
    }

    /// Where the path's entry is, if it was written.
    pub fn exact(&self, path: &str) -> Option<Located> {
        self.table.get(path).copied()
    }

    /// The best place to point at for `path`: a scalar's value, or the key of
    /// a list or mapping (its value may start lines below). A path that was
    /// not written (a missing key) falls back to its nearest written
    /// ancestor.
    pub fn at(&self, path: &str) -> Pos {
        let mut path = path;
        loop {
            if let Some(located) = self.table.get(path) {
                return if located.container {
                    located.key.unwrap_or(located.value)
                } else {
                    located.value
                };
            }
            match parent_of(path) {
                Some(parent) => path = parent,
                None => return Pos::new(1, 1),
            }
        }
    }

    /// The key's own position (for unknown or repeated keys, and names), or
    /// [`Positions::at`] when the path has no key.
    pub fn key_at(&self, path: &str) -> Pos {
        match self.table.get(path).and_then(|l| l.key) {
            Some(pos) => pos,
            None => self.at(path),
        }
    }
}

/// `a.b[2]` → `a.b`, `a.b` → `a`, `a` → `""`, `""` → none.
pub fn parent_of(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    if path.ends_with(']') {
        if let Some(open) = path.rfind('[') {
            return Some(&path[..open]);
        }
    }
    Some(path.rfind('.').map_or("", |dot| &path[..dot]))
}

/// A key written twice in one mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct DuplicateKey {
    /// The path of the repeated key.
    pub path: String,
    /// The second occurrence, where the error points.
    pub pos: Pos,
    /// The first occurrence.
    pub first: Pos,
}

/// Every key repeated inside one mapping, anywhere under `node`.
pub fn duplicate_keys(prefix: &str, node: &Node) -> Vec<DuplicateKey> {
    let mut found = Vec::new();
    collect_duplicates(prefix, node, &mut found);
    found
}

fn collect_duplicates(prefix: &str, node: &Node, found: &mut Vec<DuplicateKey>) {
    match &node.value {
        NodeValue::Map(entries) => {
            let mut seen: BTreeMap<&str, Pos> = BTreeMap::new();
            for (k, v) in entries {
                let path = child_path(prefix, &k.name);
                if let Some(first) = seen.get(k.name.as_str()) {
                    found.push(DuplicateKey {
                        path: path.clone(),
                        pos: k.pos,
                        first: *first,
                    });
                } else {
                    seen.insert(&k.name, k.pos);
                }
                collect_duplicates(&path, v, found);
            }
        }
        NodeValue::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_duplicates(&index_path(prefix, i), item, found);
            }
        }
        _ => {}
    }
}

/// A value serde cannot represent (a float that is not finite, an integer
/// beyond 64 bits).
#[derive(Debug, Clone, PartialEq)]
pub struct Unrepresentable {
    pub path: String,
    pub message: String,
}

/// Converts a node into JSON for decoding with serde. Mapping order is kept
/// only as far as `serde_json` keeps it; positions live in [`Positions`].
pub fn to_json(path: &str, node: &Node) -> Result<serde_json::Value, Unrepresentable> {
    use serde_json::Value;
    Ok(match &node.value {
        NodeValue::Null => Value::Null,
        NodeValue::Bool(b) => Value::Bool(*b),
        NodeValue::Int(i) => {
            if let Ok(small) = i64::try_from(*i) {
                Value::from(small)
            } else if let Ok(big) = u64::try_from(*i) {
                Value::from(big)
            } else {
                return Err(Unrepresentable {
                    path: path.to_string(),
                    message: format!("integer {i} is too large"),
                });
            }
        }
        NodeValue::Float(f) => match serde_json::Number::from_f64(*f) {
            Some(n) => Value::Number(n),
            None => {
                return Err(Unrepresentable {
                    path: path.to_string(),
                    message: format!("{f} is not a finite number"),
                })
            }
        },
        NodeValue::Str(s) => Value::String(s.clone()),
        NodeValue::Seq(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| to_json(&index_path(path, i), item))
                .collect::<Result<_, _>>()?,
        ),
        NodeValue::Map(entries) => {
            let mut map = serde_json::Map::new();
            for (k, v) in entries {
                // A repeated key was reported already; the first one counts.
                if !map.contains_key(&k.name) {
                    map.insert(k.name.clone(), to_json(&child_path(path, &k.name), v)?);
                }
            }
            Value::Object(map)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(line: u32, column: u32, s: &str) -> Node {
        Node::new(Pos::new(line, column), NodeValue::Str(s.into()))
    }

    fn key(line: u32, column: u32, s: &str) -> Key {
        Key {
            name: s.into(),
            pos: Pos::new(line, column),
        }
    }

    #[test]
    fn parents_of_paths() {
        assert_eq!(parent_of("a.b[2]"), Some("a.b"));
        assert_eq!(parent_of("a.b[2].c"), Some("a.b[2]"));
        assert_eq!(parent_of("a.b"), Some("a"));
        assert_eq!(parent_of("a"), Some(""));
        assert_eq!(parent_of(""), None);
    }

    #[test]
    fn positions_point_at_scalars_and_at_keys_of_containers() {
        let root = Node::new(
            Pos::new(1, 1),
            NodeValue::Map(vec![(
                key(1, 1, "a"),
                Node::new(
                    Pos::new(2, 3),
                    NodeValue::Map(vec![
                        (key(2, 3, "b"), scalar(2, 6, "x")),
                        (
                            key(3, 3, "c"),
                            Node::new(Pos::new(3, 6), NodeValue::Seq(vec![scalar(3, 7, "y")])),
                        ),
                    ]),
                ),
            )]),
        );
        let mut positions = Positions::default();
        positions.record("", None, &root);
        assert_eq!(positions.at("a.b"), Pos::new(2, 6));
        assert_eq!(positions.key_at("a.b"), Pos::new(2, 3));
        assert_eq!(positions.at("a"), Pos::new(1, 1));
        assert_eq!(positions.at("a.c"), Pos::new(3, 3));
        assert_eq!(positions.at("a.c[0]"), Pos::new(3, 7));
        // Not written: the nearest ancestor.
        assert_eq!(positions.at("a.c[0].missing"), Pos::new(3, 7));
        assert_eq!(positions.at("a.zzz"), Pos::new(1, 1));
    }

    #[test]
    fn repeated_keys_are_found_at_the_second_occurrence() {
        let root = Node::new(
            Pos::new(1, 1),
            NodeValue::Map(vec![
                (key(1, 1, "a"), scalar(1, 4, "x")),
                (key(2, 1, "a"), scalar(2, 4, "y")),
            ]),
        );
        assert_eq!(
            duplicate_keys("", &root),
            vec![DuplicateKey {
                path: "a".into(),
                pos: Pos::new(2, 1),
                first: Pos::new(1, 1),
            }]
        );
        assert_eq!(to_json("", &root).unwrap(), serde_json::json!({"a": "x"}));
    }
}
