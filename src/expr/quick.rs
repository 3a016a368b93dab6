//! A short way for the commonest expressions: a field read alone
//! (`payload.email`), text made of fields (`lead {{ job.key }}`) and a
//! field compared with a literal (`payload.amount >= 10000`). They are
//! answered by reading the scope directly instead of running MiniJinja,
//! which costs an attempt several times as much.
//!
//! The short way answers only where its answer is MiniJinja's by
//! construction: a field that exists, of a type whose printing and
//! comparison are the same both ways. Anything else (a missing field, a
//! float printed in text, a string compared with a number) returns `None`
//! and the caller runs the template, which gives the answer or the error
//! the user would have seen anyway. `tests.rs` checks both ways agree.

use std::borrow::Cow;
use std::cmp::Ordering;

use super::Scope;

/// A dotted field path from `payload` or `job`: `payload.lead.email`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FieldPath {
    root: Root,
    fields: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    Payload,
    Job,
}

/// A text's pieces: literal text and fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Piece {
    Literal(String),
    Field(FieldPath),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Comparison {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Literal {
    Integer(i64),
    Text(String),
}

/// The short form of an expression, where it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Quick {
    /// A field alone: its value as JSON.
    Value(FieldPath),
    /// Literal text and fields.
    Text(Vec<Piece>),
    /// A field alone as a condition (a boolean field).
    Truth(FieldPath),
    /// A field compared with a literal.
    Compare(FieldPath, Comparison, Literal),
}

/// A field's value as the short way sees it: a scalar, or nothing it
/// answers for.
enum Scalar<'a> {
    Text(Cow<'a, str>),
    Integer(i64),
    /// A JSON number that is not an `i64` (a float, a large `u64`).
    OtherNumber(&'a serde_json::Number),
    Bool(bool),
}

fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl FieldPath {
    /// `payload.a.b` or `job.field`, identifiers only (so that it never
    /// names one of MiniJinja's globals, keywords or methods).
    pub(super) fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('.');
        let root = match parts.next()? {
            "payload" => Root::Payload,
            "job" => Root::Job,
            _ => return None,
        };
        let fields: Vec<String> = parts.map(str::to_string).collect();
        let valid = !fields.is_empty() && fields.iter().all(|f| is_identifier(f));
        let job_field = root == Root::Payload || fields.len() == 1;
        (valid && job_field).then_some(Self { root, fields })
    }

    /// The field's value, where it exists and is a string, a number or a
    /// boolean (a `none`, a list or a map is left to MiniJinja: their
    /// printing differs).
    fn read<'a>(&self, scope: &'a Scope) -> Option<Scalar<'a>> {
        match self.root {
            Root::Payload => {
                let mut value = &scope.payload;
                for field in &self.fields {
                    value = value.as_object()?.get(field)?;
                }
                match value {
                    serde_json::Value::String(text) => Some(Scalar::Text(Cow::Borrowed(text))),
                    serde_json::Value::Number(number) => Some(match number.as_i64() {
                        Some(integer) => Scalar::Integer(integer),
                        None => Scalar::OtherNumber(number),
                    }),
                    serde_json::Value::Bool(truth) => Some(Scalar::Bool(*truth)),
                    _ => None,
                }
            }
            Root::Job => {
                let job = &scope.job;
                Some(match self.fields.first()?.as_str() {
                    "id" => Scalar::Text(Cow::Borrowed(&job.id)),
                    "key" => Scalar::Text(Cow::Borrowed(&job.key)),
                    "flow" => Scalar::Text(Cow::Borrowed(&job.flow)),
                    "priority" => Scalar::Integer(i64::from(job.priority)),
                    "created_at" => Scalar::Text(Cow::Owned(job.created_at.to_string())),
                    _ => return None,
                })
            }
        }
    }
}

impl Quick {
    /// The short form of a condition.
    pub(super) fn condition(source: &str) -> Option<Self> {
        const OPERATORS: [(&str, Comparison); 6] = [
            ("==", Comparison::Eq),
            ("!=", Comparison::Ne),
            (">=", Comparison::Ge),
            ("<=", Comparison::Le),
            (">", Comparison::Gt),
            ("<", Comparison::Lt),
        ];
        for (symbol, comparison) in OPERATORS {
            if let Some((left, right)) = source.split_once(symbol) {
                let path = FieldPath::parse(left)?;
                let literal = Literal::parse(right.trim())?;
                return Some(Self::Compare(path, comparison, literal));
            }
        }
        FieldPath::parse(source).map(Self::Truth)
    }

    /// The short form of a lone expression in a body.
    pub(super) fn value(source: &str) -> Option<Self> {
        FieldPath::parse(source).map(Self::Value)
    }

    /// The short form of a text: literal text without braces and
    /// `{{ field }}`s.
    pub(super) fn text(source: &str) -> Option<Self> {
        let mut pieces = Vec::new();
        let mut rest = source;
        while !rest.is_empty() {
            let (literal, after) = match rest.find("{{") {
                Some(start) => (&rest[..start], Some(&rest[start + 2..])),
                None => (rest, None),
            };
            if literal.contains(['{', '}']) {
                return None;
            }
            if !literal.is_empty() {
                pieces.push(Piece::Literal(literal.to_string()));
            }
            let Some(after) = after else { break };
            let (inside, tail) = after.split_once("}}")?;
            pieces.push(Piece::Field(FieldPath::parse(inside)?));
            rest = tail;
        }
        Some(Self::Text(pieces))
    }

    /// Whether the condition holds, where the short way knows.
    pub(super) fn holds(&self, scope: &Scope) -> Option<bool> {
        match self {
            Self::Truth(path) => match path.read(scope)? {
                Scalar::Bool(truth) => Some(truth),
                _ => None,
            },
            Self::Compare(path, comparison, literal) => {
                let ordering = match (path.read(scope)?, literal) {
                    (Scalar::Integer(value), Literal::Integer(number)) => value.cmp(number),
                    (Scalar::Text(value), Literal::Text(text))
                        if matches!(comparison, Comparison::Eq | Comparison::Ne) =>
                    {
                        value.as_ref().cmp(text.as_str())
                    }
                    _ => return None,
                };
                Some(match comparison {
                    Comparison::Eq => ordering == Ordering::Equal,
                    Comparison::Ne => ordering != Ordering::Equal,
                    Comparison::Lt => ordering == Ordering::Less,
                    Comparison::Le => ordering != Ordering::Greater,
                    Comparison::Gt => ordering == Ordering::Greater,
                    Comparison::Ge => ordering != Ordering::Less,
                })
            }
            Self::Value(_) | Self::Text(_) => None,
        }
    }

    /// Appends the JSON this expression writes in a body, where the short
    /// way knows.
    pub(super) fn write_json(&self, scope: &Scope, out: &mut String) -> Option<()> {
        match self {
            Self::Value(path) => match path.read(scope)? {
                Scalar::Text(text) => push_json_string(out, &text)?,
                Scalar::Integer(integer) => out.push_str(&integer.to_string()),
                Scalar::OtherNumber(number) => out.push_str(&number.to_string()),
                Scalar::Bool(truth) => out.push_str(if truth { "true" } else { "false" }),
            },
            Self::Text(pieces) => {
                let mut text = String::new();
                for piece in pieces {
                    match piece {
                        Piece::Literal(literal) => text.push_str(literal),
                        // Strings and integers print the same in MiniJinja
                        // and in Rust; floats and booleans do not.
                        Piece::Field(path) => match path.read(scope)? {
                            Scalar::Text(value) => text.push_str(&value),
                            Scalar::Integer(integer) => text.push_str(&integer.to_string()),
                            Scalar::OtherNumber(_) | Scalar::Bool(_) => return None,
                        },
                    }
                }
                push_json_string(out, &text)?;
            }
            Self::Truth(_) | Self::Compare(..) => return None,
        }
        Some(())
    }
}

fn push_json_string(out: &mut String, text: &str) -> Option<()> {
    out.push_str(&serde_json::to_string(text).ok()?);
    Some(())
}

impl Literal {
    fn parse(text: &str) -> Option<Self> {
        let quoted = |quote: char| {
            text.strip_prefix(quote)?
                .strip_suffix(quote)
                .filter(|inner| !inner.contains([quote, '\\']))
        };
        if let Some(inner) = quoted('"').or_else(|| quoted('\'')) {
            return Some(Self::Text(inner.to_string()));
        }
        let digits = text.strip_prefix('-').unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok().map(Self::Integer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> FieldPath {
        FieldPath::parse(text).unwrap()
    }

    #[test]
    fn fields_texts_and_comparisons_have_short_forms() {
        assert_eq!(
            Quick::value(" payload.email "),
            Some(Quick::Value(path("payload.email")))
        );
        assert_eq!(
            Quick::text("lead {{ job.key }}!"),
            Some(Quick::Text(vec![
                Piece::Literal("lead ".into()),
                Piece::Field(path("job.key")),
                Piece::Literal("!".into()),
            ]))
        );
        assert_eq!(
            Quick::condition("payload.amount >= -10"),
            Some(Quick::Compare(
                path("payload.amount"),
                Comparison::Ge,
                Literal::Integer(-10)
            ))
        );
        assert_eq!(
            Quick::condition("payload.tier == 'gold'"),
            Some(Quick::Compare(
                path("payload.tier"),
                Comparison::Eq,
                Literal::Text("gold".into())
            ))
        );
    }

    #[test]
    fn anything_else_is_left_to_minijinja() {
        for source in [
            "payload",
            "range.x",
            "payload.a.0",
            "payload.email | upper",
            "payload.n + 1",
            "payload.f()",
        ] {
            assert_eq!(Quick::value(source), None, "{source}");
        }
        for source in [
            "payload.n >= 1 and payload.vip",
            "payload.n >= 1.5",
            "payload.n >= x",
            "payload.t == 'a\\'b'",
            "not payload.vip",
        ] {
            assert_eq!(Quick::condition(source), None, "{source}");
        }
        for source in [
            "{{- job.key }}",
            "{% if x %}{% endif %}",
            "a } {{ job.key }}",
            "{{ job.key ",
        ] {
            assert_eq!(Quick::text(source), None, "{source}");
        }
    }
}
