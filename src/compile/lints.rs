//! Warnings about policies that compile but likely do not do what their
//! author meant. Each check is a pure function of the compiled definitions,
//! tested on its own; [`lint`] reports what they find at the key to change.
//!
//! - a template whose retries add up past its `total_timeout`: the last
//!   retries can never run;
//! - a classifier rule that an earlier rule always matches first, so it is
//!   never reached (a rule after a catch-all is reported where rules are
//!   compiled, in `classifiers`).
//!
//! The other likely mistakes are found where their definitions are
//! compiled: unused templates, classifiers and channels (`mod.rs`), a
//! fallback to the step's own channel (`flows`), keys without effect
//! (`templates`, `classifiers`).

use std::time::Duration;

use super::context::{Ctx, Site};
use super::duration::format_duration;
use super::flows::Compiled;
use super::names::Registry;
use crate::model::{Matcher, RetryTemplate, Rule, StatusPattern};
use crate::retry::nominal_delay;

/// Runs every check over what compiled.
pub fn lint(ctx: &mut Ctx<'_>, registry: &Registry<'_>, compiled: &Compiled<'_>) {
    for entry in registry.templates.values() {
        if RetryTemplate::builtin(entry.name).is_some() {
            continue;
        }
        let Some(template) = compiled.templates.get(entry.name) else {
            continue;
        };
        if let Some(cut) = retries_past_deadline(template) {
            // At the key to change: `total_timeout` where this template
            // writes it, else the template (it inherits the deadline).
            let site = if entry.def.total_timeout.is_some() {
                entry.site.child("total_timeout")
            } else {
                entry.site.clone()
            };
            let message = cut.message(template);
            if entry.def.total_timeout.is_some() {
                ctx.warning(&site, message);
            } else {
                ctx.warning_at_key(&site, message);
            }
        }
    }
    for entry in registry.classifiers.values() {
        let Some(classifier) = compiled.classifiers.get(entry.name) else {
            continue;
        };
        let rules_site = entry.site.child("rules");
        for (later, earlier) in shadowed_rules(&classifier.rules) {
            let site: Site = rules_site.index(later);
            ctx.warning(
                &site,
                format_args!(
                    "never reached: rule {earlier} (`{}`) matches every answer this rule \
                     matches, and comes first; move this rule above it or narrow rule {earlier}",
                    classifier.rules[earlier].label
                ),
            );
        }
    }
}

/// Retries that a template's own deadline forbids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlineCut {
    /// The first retry (1-based) that would start past `total_timeout`.
    pub first: u32,
    /// When it would start, after the first attempt, before jitter.
    pub starts_after: Duration,
    /// The time every retry needs, before jitter.
    pub needed: Duration,
    pub total_timeout: Duration,
}

impl DeadlineCut {
    fn message(&self, template: &RetryTemplate) -> String {
        let which = if self.first == template.retries {
            format!("retry {} can never run", self.first)
        } else {
            format!(
                "retries {} to {} can never run",
                self.first, template.retries
            )
        };
        format!(
            "{which}: retry {} would start {} after the first attempt (delays before \
             jitter), past total_timeout {}; lower `retries` to {} or raise \
             `total_timeout` to at least {}",
            self.first,
            format_duration(self.starts_after),
            format_duration(self.total_timeout),
            self.first - 1,
            format_duration(self.needed),
        )
    }
}

/// Whether the template's retries, at their delays before jitter, run past
/// its `total_timeout` (time held by calendars aside, which does not count).
pub fn retries_past_deadline(template: &RetryTemplate) -> Option<DeadlineCut> {
    let total_timeout = template.total_timeout?;
    let mut elapsed = Duration::ZERO;
    let mut first = None;
    for retry in 1..=template.retries {
        elapsed = elapsed.saturating_add(nominal_delay(template, retry)?);
        if elapsed > total_timeout && first.is_none() {
            first = Some((retry, elapsed));
        }
    }
    first.map(|(first, starts_after)| DeadlineCut {
        first,
        starts_after,
        needed: elapsed,
        total_timeout,
    })
}

/// `(later, earlier)` for each rule that an earlier rule always matches
/// first; a rule after a catch-all is left to the catch-all check.
pub fn shadowed_rules(rules: &[Rule]) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    for (later, rule) in rules.iter().enumerate() {
        let earlier = rules[..later]
            .iter()
            .position(|e| covers(&e.matcher, &rule.matcher));
        if let Some(earlier) = earlier {
            if rules[..=earlier].iter().all(|r| !is_catch_all(&r.matcher)) {
                found.push((later, earlier));
            }
        }
    }
    found
}

fn is_catch_all(m: &Matcher) -> bool {
    m.status.is_empty() && m.body.is_none() && m.error.is_empty() && m.error_message.is_none()
}

/// What a matcher can match at all.
#[derive(PartialEq)]
enum Side {
    Everything,
    Answers,
    Errors,
    /// Conditions on answers and on errors: matches nothing (warned about
    /// where rules are compiled).
    Nothing,
}

fn side(m: &Matcher) -> Side {
    let answers = !m.status.is_empty() || m.body.is_some();
    let errors = !m.error.is_empty() || m.error_message.is_some();
    match (answers, errors) {
        (false, false) => Side::Everything,
        (true, false) => Side::Answers,
        (false, true) => Side::Errors,
        (true, true) => Side::Nothing,
    }
}

/// Whether every result `b` matches, `a` matches too. Conservative: regexes
/// are compared as written.
pub fn covers(a: &Matcher, b: &Matcher) -> bool {
    let same_regex = |x: &Option<regex::Regex>, y: &Option<regex::Regex>| match (x, y) {
        (None, _) => true,
        (Some(x), Some(y)) => x.as_str() == y.as_str(),
        (Some(_), None) => false,
    };
    match (side(a), side(b)) {
        (Side::Everything, _) => true,
        (Side::Answers, Side::Answers) => {
            let statuses = a.status.is_empty()
                || (!b.status.is_empty() && b.status.iter().all(|p| status_covered(&a.status, *p)));
            statuses && same_regex(&a.body, &b.body)
        }
        (Side::Errors, Side::Errors) => {
            let kinds = a.error.is_empty()
                || (!b.error.is_empty() && b.error.iter().all(|k| a.error.contains(k)));
            kinds && same_regex(&a.error_message, &b.error_message)
        }
        _ => false,
    }
}

fn status_covered(by: &[StatusPattern], pattern: StatusPattern) -> bool {
    match pattern {
        StatusPattern::Code(code) => by.iter().any(|p| p.matches(code)),
        StatusPattern::Class(class) => by.contains(&StatusPattern::Class(class)),
    }
}

#[cfg(test)]
mod tests {
    use regex::Regex;

    use super::*;
    use crate::model::{Backoff, ErrorKind, Jitter, Outcome, RetryAfter};

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn template(retries: u32, delays: &[u64], total: Option<u64>) -> RetryTemplate {
        RetryTemplate {
            name: "t".into(),
            retries,
            backoff: Backoff::Schedule {
                delays: delays.iter().map(|s| secs(*s)).collect(),
            },
            max_interval: None,
            total_timeout: total.map(secs),
            jitter: Jitter::Proportional(0.2),
            retry_after_cap: secs(3600),
            adapt: None,
        }
    }

    #[test]
    fn a_deadline_shorter_than_the_retries_cuts_the_last_ones() {
        // 60, 360, 3960 after the first attempt; the deadline is 1h.
        let cut = retries_past_deadline(&template(3, &[60, 300, 3600], Some(3600)));
        assert_eq!(
            cut,
            Some(DeadlineCut {
                first: 3,
                starts_after: secs(3960),
                needed: secs(3960),
                total_timeout: secs(3600),
            })
        );
        let t = template(3, &[60, 300, 3600], Some(3600));
        assert_eq!(
            cut.unwrap().message(&t),
            "retry 3 can never run: retry 3 would start 1h6m after the first attempt \
             (delays before jitter), past total_timeout 1h; lower `retries` to 2 or raise \
             `total_timeout` to at least 1h6m"
        );
        let t = template(3, &[3000, 300, 3600], Some(3000));
        assert!(cut_message(&t).starts_with("retries 2 to 3 can never run"));
    }

    fn cut_message(t: &RetryTemplate) -> String {
        retries_past_deadline(t).unwrap().message(t)
    }

    #[test]
    fn a_deadline_that_fits_or_is_absent_is_fine() {
        // Exactly at the deadline still runs (the interpreter allows `<=`).
        assert_eq!(
            retries_past_deadline(&template(2, &[60, 300], Some(360))),
            None
        );
        assert_eq!(retries_past_deadline(&template(2, &[60, 300], None)), None);
        // Built-in exponential maths: standard is 2+4+8 = 14s.
        let standard = RetryTemplate {
            total_timeout: Some(secs(13)),
            ..RetryTemplate::standard()
        };
        assert_eq!(retries_past_deadline(&standard).map(|c| c.first), Some(3));
    }

    fn rule(matcher: Matcher) -> Rule {
        Rule {
            label: "r".into(),
            matcher,
            outcome: Outcome::Retry,
            retry_after: RetryAfter::Ignore,
        }
    }

    fn status(patterns: &[StatusPattern]) -> Matcher {
        Matcher {
            status: patterns.to_vec(),
            ..Matcher::default()
        }
    }

    fn body(patterns: &[StatusPattern], re: &str) -> Matcher {
        Matcher {
            body: Some(Regex::new(re).unwrap()),
            ..status(patterns)
        }
    }

    fn errors(kinds: &[ErrorKind]) -> Matcher {
        Matcher {
            error: kinds.to_vec(),
            ..Matcher::default()
        }
    }

    use StatusPattern::{Class, Code};

    #[test]
    fn a_rule_covered_by_an_earlier_one_is_found() {
        let rules = vec![
            rule(status(&[Class(4)])),
            rule(status(&[Code(429)])),
            rule(status(&[Code(404), Class(4)])),
            rule(body(&[Code(409)], "dup")),
            rule(status(&[Code(500)])),
        ];
        assert_eq!(shadowed_rules(&rules), vec![(1, 0), (2, 0), (3, 0)]);
    }

    #[test]
    fn narrower_earlier_rules_do_not_shadow() {
        let rules = vec![
            rule(body(&[Code(200)], "busy")),
            rule(status(&[Code(200)])),
            rule(status(&[Code(429)])),
            rule(status(&[Class(4)])),
            rule(errors(&[ErrorKind::Timeout, ErrorKind::Reset])),
            rule(Matcher {
                error_message: Some(Regex::new("certificate").unwrap()),
                ..Matcher::default()
            }),
            rule(errors(&[ErrorKind::Timeout])),
        ];
        assert_eq!(shadowed_rules(&rules), vec![(6, 4)]);
    }

    #[test]
    fn regexes_and_sides_are_compared_conservatively() {
        assert!(covers(&body(&[Code(200)], "x"), &body(&[Code(200)], "x")));
        assert!(!covers(&body(&[Code(200)], "x"), &body(&[Code(200)], "y")));
        assert!(!covers(&body(&[Code(200)], "x"), &status(&[Code(200)])));
        assert!(covers(&status(&[Code(200)]), &body(&[Code(200)], "x")));
        assert!(!covers(&status(&[Code(500)]), &errors(&[ErrorKind::Dns])));
        assert!(!covers(&errors(&[ErrorKind::Dns]), &status(&[Code(500)])));
        // A rule that can never match shadows nothing.
        let never = Matcher {
            error: vec![ErrorKind::Dns],
            ..status(&[Code(500)])
        };
        assert!(!covers(&never, &status(&[Code(500)])));
    }

    #[test]
    fn rules_after_a_catch_all_are_left_to_the_catch_all_check() {
        let rules = vec![
            rule(Matcher::default()),
            rule(status(&[Code(500)])),
            rule(status(&[Code(500)])),
        ];
        assert_eq!(shadowed_rules(&rules), vec![]);
    }
}
