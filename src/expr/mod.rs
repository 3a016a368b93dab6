//! Expressions and templates that read a job: a step's `when`, the `when`
//! of its `retry` entries, and its `body` mapping. MiniJinja syntax,
//! compiled once when the policy loads ([`Expr::condition`],
//! [`Expr::value`], [`Expr::text`], [`Mapping::compile`]) and evaluated
//! against a [`Scope`] (`payload`, `job`, `steps.NAME.response`) under a
//! fuel limit, so that no expression can loop or allocate without bound.
//!
//! Undefined values are strict where it matters: printing or reading into a
//! missing field fails (an attempt with error kind `mapping`, which the
//! classifier decides), while a missing field tested for truth is false.

mod responses;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use jiff::Timestamp;
use minijinja::{Environment, UndefinedBehavior, Value};

pub use responses::{KeptResponse, Responses};

/// The instructions an evaluation may run (MiniJinja's fuel; about as many
/// as a loop over a few thousand items).
pub const FUEL: u64 = 50_000;

/// The names an expression may read.
pub const ROOTS: [&str; 3] = ["payload", "job", "steps"];

/// The fields of `job`.
pub const JOB_FIELDS: [&str; 5] = ["id", "key", "flow", "priority", "created_at"];

/// The fields of `steps.NAME.response`.
pub const RESPONSE_FIELDS: [&str; 4] = ["status", "headers", "json", "body"];

const NAME: &str = "expr";

/// What an expression yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// True or false (a `when`).
    Condition,
    /// A JSON value of any type (`"{{ payload.amount }}"` alone).
    Value,
    /// Text with expressions inside (`"lead {{ job.key }}"`).
    Text,
}

/// A compiled expression or template. Cheap to clone.
#[derive(Clone)]
pub struct Expr(Arc<Compiled>);

struct Compiled {
    source: String,
    kind: Kind,
    env: Environment<'static>,
    /// The variables it reads, as dotted paths (`payload.email`,
    /// `steps.score.response.json`).
    variables: Vec<String>,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expr({:?})", self.0.source)
    }
}

/// Why an expression does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SyntaxError(pub String);

/// Why an evaluation failed: the expression and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expression `{expression}` failed: {message}")]
pub struct EvalError {
    pub expression: String,
    pub message: String,
}

/// The filter a lone expression is rendered through: its value as JSON,
/// and an error where the value is undefined (MiniJinja's `tojson` would
/// write `null` for a missing field, hiding a mapping mistake).
const JSON_FILTER: &str = "__steadfast_json";

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_fuel(Some(FUEL));
    env.add_filter(JSON_FILTER, |value: Value| {
        if value.is_undefined() {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::UndefinedError,
                "no such field (add `| default(…)` where it may be missing)",
            ));
        }
        serde_json::to_string(&value).map_err(|e| {
            minijinja::Error::new(minijinja::ErrorKind::BadSerialization, e.to_string())
        })
    });
    env
}

fn describe(error: &minijinja::Error) -> String {
    let mut text = match error.detail() {
        Some(detail) => format!("{}: {detail}", kind_text(error)),
        None => kind_text(error),
    };
    if let Some(line) = error.line().filter(|line| *line > 1) {
        text.push_str(&format!(" (line {line})"));
    }
    text
}

fn kind_text(error: &minijinja::Error) -> String {
    // The kind's Display is a sentence fragment ("syntax error").
    error.kind().to_string()
}

impl Expr {
    /// A condition (`when`): a single expression, true or false.
    pub fn condition(source: &str) -> Result<Self, SyntaxError> {
        Self::single(source, Kind::Condition)
    }

    /// One expression whose value keeps its JSON type.
    pub fn value(source: &str) -> Result<Self, SyntaxError> {
        Self::single(source, Kind::Value)
    }

    /// A template: text with `{{ … }}` (and `{% … %}`) inside.
    pub fn text(source: &str) -> Result<Self, SyntaxError> {
        let mut env = environment();
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| SyntaxError(describe(&e)))?;
        let variables = {
            let template = env
                .get_template(NAME)
                .map_err(|e| SyntaxError(describe(&e)))?;
            sorted(template.undeclared_variables(true))
        };
        Ok(Self(Arc::new(Compiled {
            source: source.to_string(),
            kind: Kind::Text,
            env,
            variables,
        })))
    }

    fn single(source: &str, kind: Kind) -> Result<Self, SyntaxError> {
        let probe = environment();
        let variables = {
            let expression = probe
                .compile_expression(source)
                .map_err(|e| SyntaxError(describe(&e)))?;
            sorted(expression.undeclared_variables(true))
        };
        let wrapped = match kind {
            Kind::Condition => format!("{{% if ({source}) %}}true{{% endif %}}"),
            Kind::Value | Kind::Text => format!("{{{{ ({source}) | {JSON_FILTER} }}}}"),
        };
        let mut env = environment();
        env.add_template_owned(NAME, wrapped)
            .map_err(|e| SyntaxError(describe(&e)))?;
        Ok(Self(Arc::new(Compiled {
            source: source.to_string(),
            kind,
            env,
            variables,
        })))
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.0.source
    }

    /// The variables it reads, as dotted paths, sorted.
    pub fn variables(&self) -> &[String] {
        &self.0.variables
    }

    /// The names of the steps whose responses it reads (`steps.NAME`).
    pub fn steps_read(&self) -> impl Iterator<Item = &str> {
        self.0.variables.iter().filter_map(|path| {
            let mut parts = path.split('.');
            (parts.next() == Some("steps"))
                .then(|| parts.next())
                .flatten()
        })
    }

    fn render(&self, scope: &Scope) -> Result<String, EvalError> {
        let template = self.0.env.get_template(NAME).map_err(|e| self.failed(&e))?;
        template.render(&scope.root).map_err(|e| self.failed(&e))
    }

    fn failed(&self, error: &minijinja::Error) -> EvalError {
        EvalError {
            expression: self.0.source.clone(),
            message: describe(error),
        }
    }

    /// Whether the condition holds for `scope`.
    pub fn holds(&self, scope: &Scope) -> Result<bool, EvalError> {
        debug_assert_eq!(self.0.kind, Kind::Condition);
        Ok(self.render(scope)? == "true")
    }

    /// The value for `scope`: its JSON value, or the text a template
    /// renders.
    pub fn evaluate(&self, scope: &Scope) -> Result<serde_json::Value, EvalError> {
        let rendered = self.render(scope)?;
        match self.0.kind {
            Kind::Text => Ok(serde_json::Value::String(rendered)),
            Kind::Condition => Ok(serde_json::Value::Bool(rendered == "true")),
            Kind::Value => serde_json::from_str(&rendered).map_err(|e| EvalError {
                expression: self.0.source.clone(),
                message: format!("its value is not JSON: {e}"),
            }),
        }
    }
}

fn sorted(set: std::collections::HashSet<String>) -> Vec<String> {
    let mut list: Vec<String> = set.into_iter().collect();
    list.sort();
    list
}

/// Whether `text` holds template syntax at all.
pub fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// The expression inside `text` when `text` is one `{{ … }}` and nothing
/// else: its value keeps its JSON type.
pub fn lone_expression(text: &str) -> Option<&str> {
    let inner = text
        .trim()
        .strip_prefix("{{")?
        .strip_suffix("}}")?
        .trim_matches(|c: char| c == '-' || c.is_whitespace());
    (!inner.contains("{{") && !inner.contains("}}") && !inner.is_empty()).then_some(inner)
}

/// A `body` mapping: a JSON shape whose strings may be templates.
#[derive(Debug, Clone)]
pub enum Mapping {
    /// No expression anywhere below: sent as written.
    Literal(serde_json::Value),
    /// `"{{ expr }}"` alone, or text with expressions inside.
    Expr(Expr),
    Object(Vec<(String, Mapping)>),
    Array(Vec<Mapping>),
}

/// Where in a mapping a string sits (keys and indexes from its root), and
/// why it does not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingError {
    pub path: Vec<PathPart>,
    pub error: SyntaxError,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPart {
    Key(String),
    Index(usize),
}

impl Mapping {
    /// Compiles every string of `shape`; every error is reported, with its
    /// place.
    pub fn compile(shape: &serde_json::Value) -> Result<Self, Vec<MappingError>> {
        let mut errors = Vec::new();
        let mut path = Vec::new();
        let mapping = Self::walk(shape, &mut path, &mut errors);
        if errors.is_empty() {
            Ok(mapping)
        } else {
            Err(errors)
        }
    }

    fn walk(
        shape: &serde_json::Value,
        path: &mut Vec<PathPart>,
        errors: &mut Vec<MappingError>,
    ) -> Self {
        use serde_json::Value as J;
        match shape {
            J::String(text) if is_template(text) => {
                let compiled = match lone_expression(text) {
                    Some(inner) => Expr::value(inner),
                    None => Expr::text(text),
                };
                match compiled {
                    Ok(expr) => Mapping::Expr(expr),
                    Err(error) => {
                        errors.push(MappingError {
                            path: path.clone(),
                            error,
                        });
                        Mapping::Literal(J::Null)
                    }
                }
            }
            J::Object(fields) => {
                let mut out = Vec::with_capacity(fields.len());
                for (key, value) in fields {
                    path.push(PathPart::Key(key.clone()));
                    out.push((key.clone(), Self::walk(value, path, errors)));
                    path.pop();
                }
                if out.iter().all(|(_, m)| matches!(m, Mapping::Literal(_))) {
                    Mapping::Literal(shape.clone())
                } else {
                    Mapping::Object(out)
                }
            }
            J::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (index, value) in items.iter().enumerate() {
                    path.push(PathPart::Index(index));
                    out.push(Self::walk(value, path, errors));
                    path.pop();
                }
                if out.iter().all(|m| matches!(m, Mapping::Literal(_))) {
                    Mapping::Literal(shape.clone())
                } else {
                    Mapping::Array(out)
                }
            }
            other => Mapping::Literal(other.clone()),
        }
    }

    /// Every expression of the mapping, with its path from the root.
    pub fn expressions(&self) -> Vec<(Vec<PathPart>, &Expr)> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect<'a>(&'a self, path: &mut Vec<PathPart>, out: &mut Vec<(Vec<PathPart>, &'a Expr)>) {
        match self {
            Mapping::Literal(_) => {}
            Mapping::Expr(expr) => out.push((path.clone(), expr)),
            Mapping::Object(fields) => {
                for (key, mapping) in fields {
                    path.push(PathPart::Key(key.clone()));
                    mapping.collect(path, out);
                    path.pop();
                }
            }
            Mapping::Array(items) => {
                for (index, mapping) in items.iter().enumerate() {
                    path.push(PathPart::Index(index));
                    mapping.collect(path, out);
                    path.pop();
                }
            }
        }
    }

    /// The body for `scope`.
    pub fn build(&self, scope: &Scope) -> Result<serde_json::Value, EvalError> {
        Ok(match self {
            Mapping::Literal(value) => value.clone(),
            Mapping::Expr(expr) => expr.evaluate(scope)?,
            Mapping::Object(fields) => {
                let mut object = serde_json::Map::with_capacity(fields.len());
                for (key, mapping) in fields {
                    object.insert(key.clone(), mapping.build(scope)?);
                }
                serde_json::Value::Object(object)
            }
            Mapping::Array(items) => serde_json::Value::Array(
                items
                    .iter()
                    .map(|m| m.build(scope))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

/// What `job` shows an expression.
#[derive(Debug, Clone, Copy)]
pub struct JobFacts<'a> {
    pub id: &'a str,
    pub key: &'a str,
    pub flow: &'a str,
    pub priority: i32,
    pub created_at: Timestamp,
}

/// What an expression can read about one job.
#[derive(Debug, Clone)]
pub struct Scope {
    root: Value,
}

impl Scope {
    /// The scope of a job whose payload is `payload` (JSON text; anything
    /// else is seen as a string) with the kept `responses` of its earlier
    /// steps.
    pub fn new(payload: &str, job: JobFacts<'_>, responses: &Responses) -> Self {
        let payload: serde_json::Value = serde_json::from_str(payload)
            .unwrap_or_else(|_| serde_json::Value::String(payload.to_string()));
        let steps: BTreeMap<&str, serde_json::Value> = responses
            .iter()
            .map(|(name, kept)| (name.as_str(), kept.in_scope()))
            .collect();
        let root = serde_json::json!({
            "payload": payload,
            "job": {
                "id": job.id,
                "key": job.key,
                "flow": job.flow,
                "priority": job.priority,
                "created_at": job.created_at.to_string(),
            },
            "steps": steps,
        });
        Self {
            root: Value::from(minijinja::value::Serde(&root)),
        }
    }
}

#[cfg(test)]
mod tests;
