//! Classifiers: rules compiled into matchers (status codes and classes,
//! regexes, error kinds), each labelled by its `name:` or
//! `classifier[index]`.

use std::collections::BTreeMap;
use std::sync::Arc;

use regex::Regex;

use super::context::{Ctx, Site};
use super::names::{check_name_value, Registry};
use crate::model::{Classifier, ErrorKind, Matcher, Outcome, RetryAfter, Rule, StatusPattern};
use crate::policy::defs::{
    ClassifierDef, DefaultOutcomeDef, ErrorKindDef, OneOrMany, OutcomeDef, RetryAfterDef, RuleDef,
    StatusDef,
};

pub fn compile_classifiers(
    ctx: &mut Ctx<'_>,
    registry: &Registry<'_>,
) -> BTreeMap<String, Arc<Classifier>> {
    registry
        .classifiers
        .values()
        .filter_map(|entry| {
            compile_classifier(ctx, &entry.site, entry.name, entry.def)
                .map(|c| (c.name.clone(), Arc::new(c)))
        })
        .collect()
}

fn compile_classifier(
    ctx: &mut Ctx<'_>,
    site: &Site,
    name: &str,
    def: &ClassifierDef,
) -> Option<Classifier> {
    let rules_site = site.child("rules");
    let mut rules = Vec::new();
    let mut ok = true;
    // Label → the rule that has it, to refuse two rules of one name.
    let mut labels: BTreeMap<String, usize> = BTreeMap::new();
    let mut catch_all: Option<usize> = None;
    for (index, rule_def) in def.rules.iter().enumerate() {
        let rule_site = rules_site.index(index);
        if let Some(earlier) = catch_all {
            ctx.warning(
                &rule_site,
                format_args!("never reached: rule {earlier} before it matches everything"),
            );
        }
        let label = match &rule_def.name {
            Some(label) => {
                check_name_value(ctx, &rule_site.child("name"), "rule", label);
                label.clone()
            }
            None => format!("{name}[{index}]"),
        };
        if let Some(earlier) = labels.insert(label.clone(), index) {
            let at = rule_site.child("name");
            let shown = ctx.shown(&at, &label).to_string();
            ctx.error(
                &at,
                format_args!("rule name `{shown}` is already used by rule {earlier}"),
            );
            ok = false;
        }
        match compile_rule(ctx, &rule_site, label, rule_def) {
            Some(rule) => {
                if is_catch_all(&rule.matcher) && catch_all.is_none() {
                    catch_all = Some(index);
                }
                rules.push(rule);
            }
            None => ok = false,
        }
    }
    if !ok {
        return None;
    }
    Some(Classifier {
        name: name.to_string(),
        rules,
        default: match def.default {
            None | Some(DefaultOutcomeDef::Retry) => Outcome::Retry,
            Some(DefaultOutcomeDef::Fail) => Outcome::Fail,
        },
    })
}

fn is_catch_all(m: &Matcher) -> bool {
    m.status.is_empty() && m.body.is_none() && m.error.is_empty() && m.error_message.is_none()
}

fn compile_rule(ctx: &mut Ctx<'_>, site: &Site, label: String, def: &RuleDef) -> Option<Rule> {
    let match_site = site.child("match");
    let mut ok = true;
    let m = &def.matcher;

    let mut status = Vec::new();
    if let Some(patterns) = &m.status {
        for (pattern, at) in items(ctx, &match_site.child("status"), patterns) {
            match status_pattern(pattern) {
                Some(p) => status.push(p),
                None => {
                    let written = match pattern {
                        StatusDef::Code(code) => code.to_string(),
                        StatusDef::Text(text) => ctx.shown(&at, text).to_string(),
                    };
                    ctx.error(
                        &at,
                        format_args!(
                            "bad status `{written}`: write a code from 100 to 599 \
                             or a class from `1xx` to `5xx`"
                        ),
                    );
                    ok = false;
                }
            }
        }
    }
    let error = m.error.as_ref().map_or_else(Vec::new, |kinds| {
        kinds.0.iter().map(|k| error_kind(*k)).collect()
    });
    let body = regex(ctx, &match_site.child("body"), m.body.as_deref(), &mut ok);
    let error_message = regex(
        ctx,
        &match_site.child("error_message"),
        m.error_message.as_deref(),
        &mut ok,
    );

    let about_answers = m.status.is_some() || m.body.is_some();
    let about_errors = m.error.is_some() || m.error_message.is_some();
    if about_answers && about_errors {
        ctx.warning(
            &match_site,
            "this rule never matches: `status` and `body` test HTTP answers, \
             `error` and `error_message` test deliveries that got no answer",
        );
    }

    let outcome = match def.outcome {
        OutcomeDef::Success => Outcome::Success,
        OutcomeDef::Retry => Outcome::Retry,
        OutcomeDef::Fail => Outcome::Fail,
        OutcomeDef::RefreshAuth => Outcome::RefreshAuth,
    };
    let retry_after = match def.retry_after {
        None | Some(RetryAfterDef::Ignore) => RetryAfter::Ignore,
        Some(RetryAfterDef::Honor) => RetryAfter::Honor,
    };
    if retry_after == RetryAfter::Honor && outcome != Outcome::Retry {
        ctx.warning(
            &site.child("retry_after"),
            format_args!("`retry_after: honor` has no effect with outcome {outcome}"),
        );
    }
    ok.then(|| Rule {
        label,
        matcher: Matcher {
            status,
            body,
            error,
            error_message,
        },
        outcome,
        retry_after,
    })
}

/// The items of a one-or-many value with the site of each.
pub(super) fn items<'d, T>(
    ctx: &Ctx<'_>,
    site: &Site,
    values: &'d OneOrMany<T>,
) -> Vec<(&'d T, Site)> {
    values
        .0
        .iter()
        .zip(ctx.item_sites(site, values.0.len()))
        .collect()
}

fn status_pattern(def: &StatusDef) -> Option<StatusPattern> {
    let code = |c: i64| {
        u16::try_from(c)
            .ok()
            .filter(|c| (100..=599).contains(c))
            .map(StatusPattern::Code)
    };
    match def {
        StatusDef::Code(c) => code(*c),
        StatusDef::Text(text) => {
            let text = text.trim();
            if text.len() == 3 && text.bytes().all(|b| b.is_ascii_digit()) {
                return text.parse().ok().and_then(code);
            }
            let class = text
                .strip_suffix("xx")
                .or_else(|| text.strip_suffix("XX"))?;
            match class {
                "1" | "2" | "3" | "4" | "5" => class.parse().ok().map(StatusPattern::Class),
                _ => None,
            }
        }
    }
}

pub(super) fn error_kind(def: ErrorKindDef) -> ErrorKind {
    match def {
        ErrorKindDef::Timeout => ErrorKind::Timeout,
        ErrorKindDef::Connect => ErrorKind::Connect,
        ErrorKindDef::Dns => ErrorKind::Dns,
        ErrorKindDef::Reset => ErrorKind::Reset,
        ErrorKindDef::Tls => ErrorKind::Tls,
        ErrorKindDef::Io => ErrorKind::Io,
        ErrorKindDef::Internal => ErrorKind::Internal,
        ErrorKindDef::Mapping => ErrorKind::Mapping,
        ErrorKindDef::Other => ErrorKind::Other,
    }
}

fn regex(ctx: &mut Ctx<'_>, site: &Site, pattern: Option<&str>, ok: &mut bool) -> Option<Regex> {
    let pattern = pattern?;
    match Regex::new(pattern) {
        Ok(re) => Some(re),
        Err(err) => {
            ctx.error(site, format_args!("bad regex: {}", regex_error_text(&err)));
            *ok = false;
            None
        }
    }
}

/// The regex crate's message without its multi-line diagram (which would
/// quote the pattern again, possibly expanded from `${VAR}`).
fn regex_error_text(err: &regex::Error) -> String {
    let text = err.to_string();
    text.lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix("error: "))
        .map_or_else(
            || text.split_whitespace().collect::<Vec<_>>().join(" "),
            str::to_string,
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_and_classes() {
        assert_eq!(
            status_pattern(&StatusDef::Code(503)),
            Some(StatusPattern::Code(503))
        );
        assert_eq!(
            status_pattern(&StatusDef::Text("4xx".into())),
            Some(StatusPattern::Class(4))
        );
        assert_eq!(
            status_pattern(&StatusDef::Text("5XX".into())),
            Some(StatusPattern::Class(5))
        );
        assert_eq!(
            status_pattern(&StatusDef::Text("429".into())),
            Some(StatusPattern::Code(429))
        );
        for bad in ["6xx", "0xx", "x", "4x", "", "42"] {
            assert_eq!(status_pattern(&StatusDef::Text(bad.into())), None, "{bad}");
        }
        for bad in [99, 600, -1, 0] {
            assert_eq!(status_pattern(&StatusDef::Code(bad)), None, "{bad}");
        }
    }

    #[test]
    fn regex_errors_are_one_line() {
        // Built at run time so that the lint on bad literal regexes stays
        // quiet: this one is bad on purpose.
        let pattern = String::from("(unclosed");
        let err = Regex::new(&pattern).unwrap_err();
        assert_eq!(regex_error_text(&err), "unclosed group");
    }
}
