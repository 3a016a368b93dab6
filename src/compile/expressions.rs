//! The expressions of a flow's steps (`when`, `retry` entries' `when`,
//! `body`): compiled with MiniJinja, and what they read checked against what
//! a step can see (`payload`, `job`'s fields, the responses of steps named
//! before it), each error at the `file:line:col` of the string.

use super::context::{Ctx, Site};
use crate::expr::{Expr, Mapping, PathPart, JOB_FIELDS, RESPONSE_FIELDS, ROOTS};

/// MiniJinja's own functions, which an expression may call.
const BUILTIN_GLOBALS: [&str; 6] = ["range", "dict", "namespace", "debug", "cycler", "joiner"];

/// A `when` condition at `site`, in a step preceded by the steps `earlier`.
pub fn condition(ctx: &mut Ctx<'_>, site: &Site, source: &str, earlier: &[&str]) -> Option<Expr> {
    if !ctx.is_resolved(site) {
        return None;
    }
    match Expr::condition(source) {
        Ok(expr) => check_reads(ctx, site, &expr, earlier).then_some(expr),
        Err(error) => {
            ctx.error(
                site,
                format_args!("`{source}` is not a valid expression: {error}"),
            );
            None
        }
    }
}

/// A `body` mapping at `site`.
pub fn mapping(
    ctx: &mut Ctx<'_>,
    site: &Site,
    shape: &serde_json::Value,
    earlier: &[&str],
) -> Option<Mapping> {
    match Mapping::compile(shape) {
        Ok(mapping) => {
            let mut ok = true;
            for (path, expr) in mapping.expressions() {
                ok &= check_reads(ctx, &site_of(site, &path), expr, earlier);
            }
            ok.then_some(mapping)
        }
        Err(errors) => {
            for error in errors {
                let at = site_of(site, &error.path);
                ctx.error(&at, format_args!("not a valid template: {}", error.error));
            }
            None
        }
    }
}

/// The site of the string at `path` in the mapping at `site`.
fn site_of(site: &Site, path: &[PathPart]) -> Site {
    path.iter().fold(site.clone(), |at, part| match part {
        PathPart::Key(key) => at.child(key),
        PathPart::Index(index) => at.index(*index),
    })
}

/// Reports what `expr` reads that no step can see; `true` when all is
/// known.
fn check_reads(ctx: &mut Ctx<'_>, site: &Site, expr: &Expr, earlier: &[&str]) -> bool {
    let mut ok = true;
    for path in expr.variables() {
        let parts: Vec<&str> = path.split('.').collect();
        let problem = match parts.as_slice() {
            [root, ..] if BUILTIN_GLOBALS.contains(root) => None,
            ["payload", ..] => None,
            ["job"] => None,
            ["job", field, ..] if JOB_FIELDS.contains(field) => None,
            ["job", field, ..] => Some(format!(
                "`job.{field}` is not a field of the job; it has: {}",
                JOB_FIELDS.join(", ")
            )),
            ["steps"] => None,
            ["steps", step, ..] if !earlier.contains(step) => Some(if earlier.is_empty() {
                format!("`steps.{step}`: no step runs before this one, so no response can be read")
            } else {
                format!(
                    "`steps.{step}` is not a step before this one; it can read: {}",
                    earlier.join(", ")
                )
            }),
            ["steps", _] | ["steps", _, "response"] => None,
            ["steps", step, "response", field, ..] if !RESPONSE_FIELDS.contains(field) => {
                Some(format!(
                    "`steps.{step}.response.{field}` is not part of a response; it has: {}",
                    RESPONSE_FIELDS.join(", ")
                ))
            }
            ["steps", _, "response", ..] => None,
            ["steps", step, other, ..] => Some(format!(
                "`steps.{step}.{other}`: a step shows its `response` (write `steps.{step}.response.{other}`?)"
            )),
            [root, ..] => Some(format!(
                "unknown variable `{root}`; an expression can read {}",
                ROOTS.join(", ")
            )),
            [] => None,
        };
        if let Some(problem) = problem {
            ctx.error(site, format_args!("in `{}`: {problem}", expr.source()));
            ok = false;
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use crate::expr::Expr;

    #[test]
    fn the_reads_an_expression_reports_are_its_dotted_paths() {
        let expr = Expr::condition("steps.score.response.json.score > 50 and job.key").unwrap();
        assert_eq!(
            expr.variables(),
            ["job.key", "steps.score.response.json.score"]
        );
    }
}
