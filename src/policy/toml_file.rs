//! TOML text → [`Node`] tree with the line and column of every key and value.
//!
//! `toml`'s spanned document (`DeTable`, every key and value a
//! `toml::Spanned`) gives byte ranges; they become lines and columns here.
//! TOML dates and times arrive as datetimes and become their RFC 3339 text,
//! the same string a YAML file holds.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::node::{Key, Node, NodeValue, Pos};

/// A TOML file that could not be parsed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct TomlSyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Parses one TOML document. Repeated keys are a syntax error in TOML, so the
/// parser reports them itself.
pub fn parse(text: &str) -> Result<Node, TomlSyntaxError> {
    let lines = LineIndex::new(text);
    let root = DeTable::parse(text).map_err(|err| TomlSyntaxError {
        pos: err
            .span()
            .map_or(Pos::new(1, 1), |span| lines.pos(span.start)),
        message: err.message().trim().replace('\n', " "),
    })?;
    let span = root.span();
    Ok(Node::new(
        lines.pos(span.start),
        table(&lines, root.into_inner()),
    ))
}

fn table(lines: &LineIndex<'_>, table: DeTable<'_>) -> NodeValue {
    let mut entries: Vec<(Key, Node)> = table
        .into_iter()
        .map(|(key, value)| {
            let key = Key {
                name: key.get_ref().to_string(),
                pos: lines.pos(key.span().start),
            };
            (key, node(lines, value))
        })
        .collect();
    // The map sorts by name; source order reads better in every later step.
    entries.sort_by_key(|(key, _)| key.pos);
    NodeValue::Map(entries)
}

fn node(lines: &LineIndex<'_>, value: Spanned<DeValue<'_>>) -> Node {
    let span: Range<usize> = value.span();
    let pos = lines.pos(span.start);
    let value = match value.into_inner() {
        DeValue::String(s) => NodeValue::Str(s.into_owned()),
        DeValue::Integer(i) => match i128::from_str_radix(i.as_str(), i.radix()) {
            Ok(v) => NodeValue::Int(v),
            // The parser has validated it; an impossible digit string is
            // kept as text rather than lost.
            Err(_) => NodeValue::Str(i.to_string()),
        },
        DeValue::Float(f) => match f.as_str().parse::<f64>() {
            Ok(v) => NodeValue::Float(v),
            Err(_) => NodeValue::Str(f.to_string()),
        },
        DeValue::Boolean(b) => NodeValue::Bool(b),
        DeValue::Datetime(d) => NodeValue::Str(d.to_string()),
        DeValue::Array(items) => {
            NodeValue::Seq(items.into_iter().map(|item| node(lines, item)).collect())
        }
        DeValue::Table(t) => table(lines, t),
    };
    Node::new(pos, value)
}

/// Byte offset → 1-based line and character column.
struct LineIndex<'a> {
    text: &'a str,
    /// Byte offset where each line starts.
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { text, starts }
    }

    fn pos(&self, offset: usize) -> Pos {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&start| start <= offset);
        let start = self
            .starts
            .get(line.saturating_sub(1))
            .copied()
            .unwrap_or(0);
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |prefix| prefix.chars().count());
        Pos::saturating(line as u64, column as u64 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(node: &Node) -> &[(Key, Node)] {
        match &node.value {
            NodeValue::Map(entries) => entries,
            other => panic!("not a map: {other:?}"),
        }
    }

    fn items(node: &Node) -> &[Node] {
        match &node.value {
            NodeValue::Seq(items) => items,
            other => panic!("not a list: {other:?}"),
        }
    }

    fn at(node: &Node) -> (u32, u32) {
        (node.pos.line, node.pos.column)
    }

    fn key_at(key: &Key) -> (u32, u32) {
        (key.pos.line, key.pos.column)
    }

    #[test]
    fn offsets_become_lines_and_character_columns() {
        let index = LineIndex::new("ab\nçd\n");
        assert_eq!(index.pos(0), Pos::new(1, 1));
        assert_eq!(index.pos(3), Pos::new(2, 1));
        // `ç` is two bytes but one column.
        assert_eq!(index.pos(5), Pos::new(2, 2));
    }

    #[test]
    fn tables_arrays_of_tables_and_nested_arrays_keep_positions() {
        let text = r#"[channels.acme]
http = { url = "https://a.example", timeout = "10s" }

[[flows.acme.steps]]
name = "deliver"
fallback = ["b", "c"]

[[flows.acme.steps]]
name = "confirm"
"#;
        let root = parse(text).unwrap();
        let top: Vec<_> = entries(&root)
            .iter()
            .map(|(k, _)| k.name.as_str())
            .collect();
        assert_eq!(top, vec!["channels", "flows"]);
        let channels = &entries(&root)[0];
        assert_eq!(key_at(&channels.0), (1, 2));
        let acme = &entries(&channels.1)[0];
        assert_eq!(key_at(&acme.0), (1, 11));
        let http = &entries(&acme.1)[0];
        let url = &entries(&http.1)[0];
        assert_eq!(key_at(&url.0), (2, 10));
        assert_eq!(at(&url.1), (2, 16));
        let timeout = &entries(&http.1)[1];
        assert_eq!(at(&timeout.1), (2, 47));

        let flows = &entries(&root)[1];
        let steps = &entries(&entries(&flows.1)[0].1)[0].1;
        let first = &items(steps)[0];
        let name = &entries(first)[0];
        assert_eq!((key_at(&name.0), at(&name.1)), ((5, 1), (5, 8)));
        let fallback = &entries(first)[1].1;
        assert_eq!(at(&items(fallback)[1]), (6, 18));
        let second = &items(steps)[1];
        assert_eq!(at(&entries(second)[0].1), (9, 8));
    }

    #[test]
    fn arrays_inside_arrays_keep_positions() {
        let root = parse("a = [1, [\"x\", \"y\"],\n  [{ b = 2 }]]\n").unwrap();
        let a = &entries(&root)[0].1;
        let inner = &items(a)[1];
        assert_eq!(at(&items(inner)[1]), (1, 15));
        let tables = &items(a)[2];
        let b = &entries(&items(tables)[0])[0];
        assert_eq!((key_at(&b.0), at(&b.1)), ((2, 6), (2, 10)));
    }

    #[test]
    fn datetimes_become_text_and_numbers_stay_numbers() {
        let text = "holidays = [2026-12-25]\nfrom = 2026-12-01T00:00:00Z\nn = 0x1F\nf = 2.5\n";
        let root = parse(text).unwrap();
        let values: Vec<_> = entries(&root)
            .iter()
            .map(|(k, v)| (k.name.clone(), v.value.clone()))
            .collect();
        assert_eq!(
            values,
            vec![
                (
                    "holidays".into(),
                    NodeValue::Seq(vec![Node::new(
                        Pos::new(1, 13),
                        NodeValue::Str("2026-12-25".into())
                    )])
                ),
                ("from".into(), NodeValue::Str("2026-12-01T00:00:00Z".into())),
                ("n".into(), NodeValue::Int(31)),
                ("f".into(), NodeValue::Float(2.5)),
            ]
        );
    }

    #[test]
    fn syntax_errors_and_repeated_keys_carry_the_parser_position() {
        let err = parse("a = 1\nb = [1,\n").unwrap_err();
        assert!(err.pos.line >= 2, "{err:?}");
        let err = parse("a = 1\nb = 2\na = 3\n").unwrap_err();
        assert_eq!(err.pos, Pos::new(3, 1), "{err:?}");
        assert!(err.message.contains("duplicate"), "{err:?}");
    }
}
