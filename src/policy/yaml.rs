//! YAML text → [`Node`] tree with the line and column of every key and value.
//!
//! serde-saphyr reports positions through its `Spanned<T>` wrapper; a small
//! visitor driven by `deserialize_any` wraps every mapping key, mapping value
//! and list item in `Spanned`, so no `*Def` type has to carry spans.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, MessageFormatter, Spanned};

use super::node::{Key, Node, NodeValue, Pos};

/// A YAML file that could not be parsed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct YamlSyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Parses one YAML document. An empty document is an empty mapping.
pub fn parse(text: &str) -> Result<Node, YamlSyntaxError> {
    let mut options = serde_saphyr::Options::default();
    // Repeated keys are reported by our own check (with both positions, the
    // same way for YAML and TOML), so the parser must hand them through.
    options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
    options.with_snippet = false;
    // YAML 1.2 booleans only: a channel named `n` or a value `no` stays
    // text (the "Norway problem" of YAML 1.1).
    options.strict_booleans = true;
    let root: Spanned<Raw> = serde_saphyr::from_str_with_options(text, options).map_err(|err| {
        let pos = err
            .location()
            .map_or(Pos::new(1, 1), |l| Pos::saturating(l.line(), l.column()));
        let message = serde_saphyr::DefaultMessageFormatter
            .format_message(err.without_snippet())
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        YamlSyntaxError { pos, message }
    })?;
    let node = node_of(root);
    Ok(match node.value {
        NodeValue::Null => Node::new(Pos::new(1, 1), NodeValue::Map(Vec::new())),
        _ => node,
    })
}

fn pos_of(spanned: &Spanned<Raw>) -> Pos {
    let loc = spanned.referenced;
    Pos::saturating(loc.line(), loc.column())
}

fn node_of(spanned: Spanned<Raw>) -> Node {
    let pos = pos_of(&spanned);
    Node::new(pos, spanned.value.0)
}

/// A node's value, its children already positioned. Its own position comes
/// from the `Spanned` around it.
struct Raw(NodeValue);

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw(NodeValue::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw(NodeValue::Int(i128::from(v))))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw(NodeValue::Int(i128::from(v))))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw(NodeValue::Int(v)))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        i128::try_from(v)
            .map(|v| Raw(NodeValue::Int(v)))
            .map_err(|_| E::custom(format!("integer {v} is too large")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw(NodeValue::Float(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw(NodeValue::Str(v.to_string())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
        Ok(Raw(NodeValue::Str(v)))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Raw, E> {
        Err(E::custom("binary values are not allowed in policy files"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw(NodeValue::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw(NodeValue::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Raw, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Raw>>()? {
            items.push(node_of(item));
        }
        Ok(Raw(NodeValue::Seq(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Raw>>()? {
            let key_pos = pos_of(&key);
            let name = match key.value.0 {
                NodeValue::Str(s) => s,
                NodeValue::Int(i) => i.to_string(),
                NodeValue::Bool(b) => b.to_string(),
                NodeValue::Float(f) => f.to_string(),
                NodeValue::Null => "null".to_string(),
                NodeValue::Seq(_) | NodeValue::Map(_) => {
                    return Err(de::Error::custom(
                        "a mapping key must be text, not a list or mapping",
                    ))
                }
            };
            let value = map.next_value::<Spanned<Raw>>()?;
            entries.push((Key { name, pos: key_pos }, node_of(value)));
        }
        Ok(Raw(NodeValue::Map(entries)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(node: &Node) -> (u32, u32) {
        (node.pos.line, node.pos.column)
    }

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

    #[test]
    fn keys_values_and_nested_lists_keep_their_positions() {
        let text = "\
flows:
  acme:
    steps:
      - name: deliver
        fallback: [a, b]
      - name: confirm
        retry: 3
";
        let root = parse(text).unwrap();
        let flows = &entries(&root)[0];
        assert_eq!(flows.0.name, "flows");
        assert_eq!((flows.0.pos.line, flows.0.pos.column), (1, 1));
        let acme = &entries(&flows.1)[0];
        assert_eq!((acme.0.pos.line, acme.0.pos.column), (2, 3));
        let steps = &entries(&acme.1)[0].1;
        let first = &items(steps)[0];
        let name = &entries(first)[0];
        assert_eq!((name.0.pos.line, name.0.pos.column), (4, 9));
        assert_eq!(pos(&name.1), (4, 15));
        let fallback = &entries(first)[1].1;
        assert_eq!(pos(&items(fallback)[1]), (5, 23));
        let second = &items(steps)[1];
        let retry = &entries(second)[1];
        assert_eq!(retry.1.value, NodeValue::Int(3));
        assert_eq!(pos(&retry.1), (7, 16));
    }

    #[test]
    fn lists_inside_lists_keep_positions() {
        let root = parse("a:\n  - [1, [x, y]]\n  -\n    - z\n").unwrap();
        let a = &entries(&root)[0].1;
        let first = &items(a)[0];
        let inner = &items(first)[1];
        assert_eq!(pos(&items(inner)[1]), (2, 13));
        let second = &items(a)[1];
        assert_eq!(pos(&items(second)[0]), (4, 7));
    }

    #[test]
    fn flow_mappings_and_scalar_types() {
        let root = parse("a: { b: 1.5, c: true, d: ~, 200: x, e: '7' }\n").unwrap();
        let a = &entries(&root)[0].1;
        let values: Vec<_> = entries(a)
            .iter()
            .map(|(k, v)| (k.name.as_str(), v.value.clone(), pos(v)))
            .collect();
        assert_eq!(
            values,
            vec![
                ("b", NodeValue::Float(1.5), (1, 9)),
                ("c", NodeValue::Bool(true), (1, 17)),
                ("d", NodeValue::Null, (1, 26)),
                ("200", NodeValue::Str("x".into()), (1, 34)),
                ("e", NodeValue::Str("7".into()), (1, 40)),
            ]
        );
    }

    #[test]
    fn only_yaml_1_2_booleans_are_booleans() {
        let root = parse("n: no\ny: true\n").unwrap();
        let values: Vec<_> = entries(&root)
            .iter()
            .map(|(k, v)| (k.name.as_str(), v.value.clone()))
            .collect();
        assert_eq!(
            values,
            vec![
                ("n", NodeValue::Str("no".into())),
                ("y", NodeValue::Bool(true)),
            ]
        );
    }

    #[test]
    fn repeated_keys_reach_the_tree() {
        let root = parse("a: 1\nb: 2\na: 3\n").unwrap();
        let names: Vec<_> = entries(&root).iter().map(|(k, _)| k.pos.line).collect();
        assert_eq!(names, vec![1, 2, 3]);
    }

    #[test]
    fn empty_document_is_an_empty_mapping() {
        assert_eq!(parse("").unwrap().value, NodeValue::Map(Vec::new()));
        assert_eq!(
            parse("# only a comment\n").unwrap().value,
            NodeValue::Map(Vec::new())
        );
    }

    #[test]
    fn syntax_errors_carry_the_parser_position() {
        let err = parse("a:\n  b: [1, 2\n").unwrap_err();
        assert!(err.pos.line >= 2, "{err:?}");
        assert!(!err.message.is_empty());
        let err = parse("ok: 1\nbad: a: b\n").unwrap_err();
        assert_eq!(err.pos.line, 2, "{err:?}");
    }
}
