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

mod quick;
mod responses;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use jiff::Timestamp;
use minijinja::{Environment, UndefinedBehavior, Value};

pub use responses::{KeptResponse, Responses};

use quick::Quick;

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
    /// A condition's own template (a body's expressions are rendered by
    /// the body's template).
    condition: Option<Environment<'static>>,
    /// The variables it reads, as dotted paths (`payload.email`,
    /// `steps.score.response.json`).
    variables: Vec<String>,
    /// Its short form, where it has one (see `quick.rs`).
    quick: Option<Quick>,
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

/// What to do about a field that may be missing, in messages.
pub const MISSING_FIELD_HINT: &str = "add `| default(…)` where it may be missing";

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
                format!("no such field ({MISSING_FIELD_HINT})"),
            ));
        }
        serde_json::to_string(&value).map_err(|e| {
            minijinja::Error::new(minijinja::ErrorKind::BadSerialization, e.to_string())
        })
    });
    env
}

fn describe(error: &minijinja::Error) -> String {
    match error.detail() {
        Some(detail) => format!("{}: {detail}", kind_text(error)),
        // A missing field compared or used in arithmetic: say which fix.
        None if error.kind() == minijinja::ErrorKind::UndefinedError => format!(
            "{}: a field it reads is missing ({MISSING_FIELD_HINT})",
            kind_text(error)
        ),
        None => kind_text(error),
    }
}

/// [`describe`], with the line for a template the user wrote over several
/// lines.
fn describe_at_line(error: &minijinja::Error) -> String {
    let text = describe(error);
    match error.line().filter(|line| *line > 1) {
        Some(line) => format!("{text} (line {line} of the text)"),
        None => text,
    }
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
        let probe = environment();
        let template = probe
            .template_from_str(source)
            .map_err(|e| SyntaxError(describe_at_line(&e)))?;
        let variables = sorted(template.undeclared_variables(true));
        Ok(Self(Arc::new(Compiled {
            source: source.to_string(),
            kind: Kind::Text,
            condition: None,
            variables,
            quick: Quick::text(source),
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
        let (condition, quick) = match kind {
            Kind::Condition => {
                let mut env = environment();
                env.add_template_owned(NAME, format!("{{% if ({source}) %}}true{{% endif %}}"))
                    .map_err(|e| SyntaxError(describe(&e)))?;
                (Some(env), Quick::condition(source))
            }
            Kind::Value | Kind::Text => (None, Quick::value(source)),
        };
        Ok(Self(Arc::new(Compiled {
            source: source.to_string(),
            kind,
            condition,
            variables,
            quick,
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

    /// Renders a condition's template: `true` where it holds.
    fn render_condition(&self, scope: &Scope) -> Result<String, EvalError> {
        let Some(env) = &self.0.condition else {
            return Err(EvalError {
                expression: self.0.source.clone(),
                message: "not a condition".to_string(),
            });
        };
        let template = env.get_template(NAME).map_err(|e| self.failed(&e))?;
        template.render(scope.root()).map_err(|e| self.failed(&e))
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
        let quick = self.0.quick.as_ref().and_then(|quick| quick.holds(scope));
        match quick {
            Some(holds) => Ok(holds),
            None => self.holds_by_template(scope),
        }
    }

    /// [`Expr::holds`] by MiniJinja alone.
    fn holds_by_template(&self, scope: &Scope) -> Result<bool, EvalError> {
        Ok(self.render_condition(scope)? == "true")
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

/// A `body` mapping: a JSON shape whose strings may be templates, compiled
/// into one template that writes the body's JSON text in one render (each
/// expression on a line of its own, so that a failure names its
/// expression).
#[derive(Debug, Clone)]
pub struct Mapping {
    shape: Shape,
    body: Arc<BodyTemplate>,
}

/// The mapping as written, with its expressions compiled (for the checks
/// made when the policy loads, and for `explain`).
#[derive(Debug, Clone)]
enum Shape {
    /// No expression anywhere below: sent as written.
    Literal(serde_json::Value),
    /// `"{{ expr }}"` alone, or text with expressions inside.
    Expr(Expr),
    /// Each field's key, the key as JSON text (quoted once, here), and its
    /// shape.
    Object(Vec<(String, String, Shape)>),
    Array(Vec<Shape>),
}

/// The template that writes a mapping's JSON text.
struct BodyTemplate {
    env: Environment<'static>,
    /// Each expression's first and last line in the template, and its
    /// source, to name the one that failed.
    lines: Vec<(usize, usize, String)>,
}

impl fmt::Debug for BodyTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BodyTemplate")
    }
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

/// Writes literal JSON text into a template, where no Jinja syntax may
/// start.
fn push_literal(out: &mut String, text: &str) -> Result<(), SyntaxError> {
    if is_template(text) {
        if text.contains("endraw") {
            return Err(SyntaxError(
                "a key holds `{{`, `{%` or `{#` and `endraw`; rename the key".to_string(),
            ));
        }
        // An object's `{` just before would make `{{% raw %}`, which
        // MiniJinja reads as an expression: it goes inside the raw block.
        let brace = out.ends_with('{');
        if brace {
            out.pop();
        }
        out.push_str("{% raw %}");
        if brace {
            out.push('{');
        }
        out.push_str(text);
        out.push_str("{% endraw %}");
    } else {
        out.push_str(text);
    }
    Ok(())
}

impl Mapping {
    /// Compiles every string of `shape`; every error is reported, with its
    /// place.
    pub fn compile(shape: &serde_json::Value) -> Result<Self, Vec<MappingError>> {
        let mut errors = Vec::new();
        let mut path = Vec::new();
        let shape = Shape::walk(shape, &mut path, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut source = String::new();
        let mut lines = Vec::new();
        let fail = |error: SyntaxError| {
            vec![MappingError {
                path: Vec::new(),
                error,
            }]
        };
        shape.write(&mut source, &mut lines).map_err(fail)?;
        let mut env = environment();
        env.add_template_owned(NAME, source)
            .map_err(|e| fail(SyntaxError(describe(&e))))?;
        Ok(Self {
            shape,
            body: Arc::new(BodyTemplate { env, lines }),
        })
    }

    /// Every expression of the mapping, with its path from the root.
    pub fn expressions(&self) -> Vec<(Vec<PathPart>, &Expr)> {
        let mut out = Vec::new();
        self.shape.collect(&mut Vec::new(), &mut out);
        out
    }

    /// The body's JSON text for `scope`, as sent.
    pub fn render(&self, scope: &Scope) -> Result<String, EvalError> {
        let mut out = String::new();
        match self.shape.write_quick(scope, &mut out) {
            Some(()) => Ok(out),
            None => self.render_by_template(scope),
        }
    }

    /// [`Mapping::render`] by MiniJinja alone.
    fn render_by_template(&self, scope: &Scope) -> Result<String, EvalError> {
        let body = &self.body;
        let failed = |error: &minijinja::Error| {
            let line = error.line().unwrap_or(0);
            let expression = body
                .lines
                .iter()
                .find(|(first, last, _)| (*first..=*last).contains(&line))
                .map_or_else(|| "body".to_string(), |(_, _, source)| source.clone());
            EvalError {
                expression,
                message: describe(error),
            }
        };
        let template = body.env.get_template(NAME).map_err(|e| failed(&e))?;
        template.render(scope.root()).map_err(|e| failed(&e))
    }

    /// The body for `scope`, as a JSON value.
    pub fn build(&self, scope: &Scope) -> Result<serde_json::Value, EvalError> {
        let text = self.render(scope)?;
        serde_json::from_str(&text).map_err(|e| EvalError {
            expression: "body".to_string(),
            message: format!("the body built is not JSON: {e}"),
        })
    }
}

impl Shape {
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
                    Ok(expr) => Shape::Expr(expr),
                    Err(error) => {
                        errors.push(MappingError {
                            path: path.clone(),
                            error,
                        });
                        Shape::Literal(J::Null)
                    }
                }
            }
            J::Object(fields) => {
                let mut out = Vec::with_capacity(fields.len());
                for (key, value) in fields {
                    path.push(PathPart::Key(key.clone()));
                    let quoted = serde_json::Value::String(key.clone()).to_string();
                    out.push((key.clone(), quoted, Self::walk(value, path, errors)));
                    path.pop();
                }
                if out.iter().all(|(_, _, m)| matches!(m, Shape::Literal(_))) {
                    Shape::Literal(shape.clone())
                } else {
                    Shape::Object(out)
                }
            }
            J::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (index, value) in items.iter().enumerate() {
                    path.push(PathPart::Index(index));
                    out.push(Self::walk(value, path, errors));
                    path.pop();
                }
                if out.iter().all(|m| matches!(m, Shape::Literal(_))) {
                    Shape::Literal(shape.clone())
                } else {
                    Shape::Array(out)
                }
            }
            other => Shape::Literal(other.clone()),
        }
    }

    /// Appends this shape's JSON text: `{`, `[`, `,` and `:` as they are,
    /// literal JSON and keys through `literal`, each expression through
    /// `expression`. The one walk behind the body's template and the short
    /// way, so that both write the same text.
    fn emit<E>(
        &self,
        out: &mut String,
        literal: &impl Fn(&mut String, &str) -> Result<(), E>,
        expression: &mut impl FnMut(&Expr, &mut String) -> Result<(), E>,
    ) -> Result<(), E> {
        match self {
            Shape::Literal(value) => literal(out, &value.to_string())?,
            Shape::Expr(expr) => expression(expr, out)?,
            Shape::Object(fields) => {
                out.push('{');
                for (index, (_, quoted, shape)) in fields.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    literal(out, quoted)?;
                    out.push(':');
                    shape.emit(out, literal, expression)?;
                }
                out.push('}');
            }
            Shape::Array(items) => {
                out.push('[');
                for (index, shape) in items.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    shape.emit(out, literal, expression)?;
                }
                out.push(']');
            }
        }
        Ok(())
    }

    /// Appends the template text that writes this shape's JSON, noting the
    /// lines of each expression.
    fn write(
        &self,
        out: &mut String,
        lines: &mut Vec<(usize, usize, String)>,
    ) -> Result<(), SyntaxError> {
        self.emit(out, &push_literal, &mut |expr, out| {
            out.push('\n');
            let first = out.matches('\n').count() + 1;
            // `-` trims the line breaks around the tag from the output:
            // they only place the expression on lines of its own.
            match expr.0.kind {
                Kind::Text => {
                    out.push_str(&format!("{{%- filter {JSON_FILTER} %}}"));
                    out.push_str(expr.source());
                    out.push_str("{% endfilter -%}");
                }
                Kind::Value | Kind::Condition => {
                    out.push_str(&format!("{{{{- ({}) | {JSON_FILTER} -}}}}", expr.source()));
                }
            }
            let last = out.matches('\n').count() + 1;
            lines.push((first, last, expr.source().to_string()));
            out.push('\n');
            Ok(())
        })
    }

    /// Appends this shape's JSON by the expressions' short forms, where
    /// every one of them has one and knows its answer.
    fn write_quick(&self, scope: &Scope, out: &mut String) -> Option<()> {
        // `Err(())`: an expression without an answer here; the template
        // writes the body instead.
        let literal = |out: &mut String, text: &str| -> Result<(), ()> {
            out.push_str(text);
            Ok(())
        };
        self.emit(out, &literal, &mut |expr, out| {
            let quick = expr.0.quick.as_ref();
            quick.and_then(|q| q.write_json(scope, out)).ok_or(())
        })
        .ok()
    }

    fn collect<'a>(&'a self, path: &mut Vec<PathPart>, out: &mut Vec<(Vec<PathPart>, &'a Expr)>) {
        match self {
            Shape::Literal(_) => {}
            Shape::Expr(expr) => out.push((path.clone(), expr)),
            Shape::Object(fields) => {
                for (key, _, shape) in fields {
                    path.push(PathPart::Key(key.clone()));
                    shape.collect(path, out);
                    path.pop();
                }
            }
            Shape::Array(items) => {
                for (index, shape) in items.iter().enumerate() {
                    path.push(PathPart::Index(index));
                    shape.collect(path, out);
                    path.pop();
                }
            }
        }
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

/// What an expression can read about one job: the payload parsed once,
/// and MiniJinja's view of the whole built only when an expression without
/// a short form asks for it.
#[derive(Debug)]
pub struct Scope {
    payload: serde_json::Value,
    job: OwnedFacts,
    responses: Responses,
    root: std::sync::OnceLock<Value>,
}

#[derive(Debug)]
struct OwnedFacts {
    id: String,
    key: String,
    flow: String,
    priority: i32,
    created_at: Timestamp,
}

impl Scope {
    /// The scope of a job whose payload is `payload` (JSON text; anything
    /// else is seen as a string) with the kept `responses` of its earlier
    /// steps.
    pub fn new(payload: &str, job: JobFacts<'_>, responses: &Responses) -> Self {
        let payload = serde_json::from_str(payload)
            .unwrap_or_else(|_| serde_json::Value::String(payload.to_string()));
        Self {
            payload,
            job: OwnedFacts {
                id: job.id.to_string(),
                key: job.key.to_string(),
                flow: job.flow.to_string(),
                priority: job.priority,
                created_at: job.created_at,
            },
            responses: responses.clone(),
            root: std::sync::OnceLock::new(),
        }
    }

    /// `payload`, `job` and `steps` as MiniJinja values.
    fn root(&self) -> &Value {
        self.root.get_or_init(|| {
            let steps: BTreeMap<&str, Value> = self
                .responses
                .iter()
                .map(|(name, kept)| (name.as_str(), kept.in_scope()))
                .collect();
            let job = &self.job;
            minijinja::context! {
                payload => Value::from(minijinja::value::Serde(&self.payload)),
                job => minijinja::context! {
                    id => &job.id,
                    key => &job.key,
                    flow => &job.flow,
                    priority => job.priority,
                    created_at => job.created_at.to_string(),
                },
                steps => steps,
            }
        })
    }
}

#[cfg(test)]
mod tests;
