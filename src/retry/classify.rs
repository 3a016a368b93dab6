//! What a partner's answer means: success, retry, or a permanent failure.
//!
//! A step's own classifier is tried first, rule by rule (first match wins);
//! where none matches, the built-in rules apply (so a 2xx stays a success
//! unless a rule says otherwise); what neither classifies gets the
//! classifier's `default` (retry, unless set).

use std::sync::LazyLock;
use std::time::Duration;

use jiff::Timestamp;

use super::backoff::parse_retry_after;
use crate::model::{
    Classifier, DeliveryResult, ErrorKind, Matcher, Outcome, RetryAfter, RetryTemplate, Rule,
    StatusPattern,
};

/// The classifier's judgement of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub outcome: Outcome,
    /// The rule that decided: its label, or `default`.
    pub rule: String,
    /// The partner's `Retry-After`, when the rule honours it, already capped.
    pub retry_after: Option<Duration>,
}

/// The rules every step falls back on, labelled `builtin[index]`.
pub static BUILTIN_RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    let status = |codes: &[u16]| Matcher {
        status: codes.iter().map(|&c| StatusPattern::Code(c)).collect(),
        ..Matcher::default()
    };
    let rules = [
        (
            Matcher {
                status: vec![StatusPattern::Class(2)],
                ..Matcher::default()
            },
            Outcome::Success,
            RetryAfter::Ignore,
        ),
        (status(&[429, 503]), Outcome::Retry, RetryAfter::Honor),
        (
            status(&[408, 500, 502, 504]),
            Outcome::Retry,
            RetryAfter::Ignore,
        ),
        (
            Matcher {
                error: vec![
                    ErrorKind::Timeout,
                    ErrorKind::Connect,
                    ErrorKind::Dns,
                    ErrorKind::Reset,
                ],
                ..Matcher::default()
            },
            Outcome::Retry,
            RetryAfter::Ignore,
        ),
        (
            status(&[400, 401, 403, 404, 405, 406, 409, 410, 411, 422, 451]),
            Outcome::Fail,
            RetryAfter::Ignore,
        ),
        // A body that cannot be built for this job will not build on a
        // retry either: the job waits in the dead-letter queue for its
        // payload to be edited.
        (
            Matcher {
                error: vec![ErrorKind::Mapping],
                ..Matcher::default()
            },
            Outcome::Fail,
            RetryAfter::Ignore,
        ),
    ];
    rules
        .into_iter()
        .enumerate()
        .map(|(i, (matcher, outcome, retry_after))| Rule {
            label: format!("builtin[{i}]"),
            matcher,
            outcome,
            retry_after,
        })
        .collect()
});

/// Classifies one attempt's result.
pub fn classify(
    classifier: Option<&Classifier>,
    result: &DeliveryResult,
    template: &RetryTemplate,
    now: Timestamp,
) -> Verdict {
    let own_rules = classifier.map(|c| c.rules.as_slice()).unwrap_or_default();
    let matched = own_rules
        .iter()
        .chain(BUILTIN_RULES.iter())
        .find(|rule| matches(&rule.matcher, result));
    match matched {
        Some(rule) => Verdict {
            outcome: rule.outcome,
            rule: rule.label.clone(),
            retry_after: honoured_retry_after(rule, result, template, now),
        },
        None => Verdict {
            outcome: classifier.map_or(Outcome::Retry, |c| c.default),
            rule: "default".to_string(),
            retry_after: None,
        },
    }
}

/// Whether every condition the matcher sets holds for `result`.
pub fn matches(matcher: &Matcher, result: &DeliveryResult) -> bool {
    match result {
        Ok(response) => {
            matcher.error.is_empty()
                && matcher.error_message.is_none()
                && (matcher.status.is_empty()
                    || matcher.status.iter().any(|p| p.matches(response.status)))
                && matcher
                    .body
                    .as_ref()
                    .is_none_or(|re| re.is_match(&response.body))
        }
        Err(error) => {
            matcher.status.is_empty()
                && matcher.body.is_none()
                && (matcher.error.is_empty() || matcher.error.contains(&error.kind))
                && matcher
                    .error_message
                    .as_ref()
                    .is_none_or(|re| re.is_match(&error.message))
        }
    }
}

fn honoured_retry_after(
    rule: &Rule,
    result: &DeliveryResult,
    template: &RetryTemplate,
    now: Timestamp,
) -> Option<Duration> {
    if rule.retry_after != RetryAfter::Honor {
        return None;
    }
    let header = result.as_ref().ok()?.retry_after.as_deref()?;
    let wait = parse_retry_after(header, now)?;
    Some(wait.min(template.retry_after_cap))
}

#[cfg(test)]
mod tests {
    use regex::Regex;

    use super::*;
    use crate::model::{Response, TransportError};

    fn now() -> Timestamp {
        "2026-03-01T12:00:00Z".parse().unwrap()
    }

    fn standard() -> RetryTemplate {
        RetryTemplate::builtin("standard").unwrap()
    }

    fn response(status: u16, body: &str) -> DeliveryResult {
        Ok(Response {
            status,
            retry_after: None,
            body: body.to_string(),
            headers: Vec::new(),
        })
    }

    fn error(kind: ErrorKind, message: &str) -> DeliveryResult {
        Err(TransportError {
            kind,
            message: message.to_string(),
        })
    }

    fn rule(label: &str, matcher: Matcher, outcome: Outcome) -> Rule {
        Rule {
            label: label.to_string(),
            matcher,
            outcome,
            retry_after: RetryAfter::Ignore,
        }
    }

    fn acme() -> Classifier {
        Classifier {
            name: "acme".into(),
            rules: vec![
                rule(
                    "acme[0]",
                    Matcher {
                        status: vec![StatusPattern::Code(200)],
                        body: Some(Regex::new("(?i)duplicate lead").unwrap()),
                        ..Matcher::default()
                    },
                    Outcome::Success,
                ),
                rule(
                    "acme[1]",
                    Matcher {
                        status: vec![StatusPattern::Code(200)],
                        body: Some(Regex::new(r#""status"\s*:\s*"busy""#).unwrap()),
                        ..Matcher::default()
                    },
                    Outcome::Retry,
                ),
                rule(
                    "cert",
                    Matcher {
                        error_message: Some(Regex::new("(?i)certificate").unwrap()),
                        ..Matcher::default()
                    },
                    Outcome::Fail,
                ),
            ],
            default: Outcome::Fail,
        }
    }

    fn verdict(c: Option<&Classifier>, r: &DeliveryResult) -> (Outcome, String) {
        let v = classify(c, r, &standard(), now());
        (v.outcome, v.rule)
    }

    #[test]
    fn builtin_rules_follow_the_contract() {
        for status in [200, 201, 204, 299] {
            assert_eq!(verdict(None, &response(status, "")).0, Outcome::Success);
        }
        for status in [408, 429, 500, 502, 503, 504] {
            assert_eq!(
                verdict(None, &response(status, "")).0,
                Outcome::Retry,
                "{status}"
            );
        }
        for status in [400, 401, 403, 404, 405, 406, 409, 410, 411, 422, 451] {
            assert_eq!(
                verdict(None, &response(status, "")).0,
                Outcome::Fail,
                "{status}"
            );
        }
        for kind in [
            ErrorKind::Timeout,
            ErrorKind::Connect,
            ErrorKind::Dns,
            ErrorKind::Reset,
        ] {
            assert_eq!(
                verdict(None, &error(kind, "x")),
                (Outcome::Retry, "builtin[3]".into())
            );
        }
        // Unlisted answers fall to the default: retry.
        assert_eq!(
            verdict(None, &response(418, "")),
            (Outcome::Retry, "default".into())
        );
        assert_eq!(
            verdict(None, &error(ErrorKind::Tls, "x")),
            (Outcome::Retry, "default".into())
        );
    }

    #[test]
    fn own_rules_win_first_match_then_builtins_then_default() {
        let c = acme();
        assert_eq!(
            verdict(Some(&c), &response(200, "Error: Duplicate Lead")),
            (Outcome::Success, "acme[0]".into())
        );
        assert_eq!(
            verdict(Some(&c), &response(200, r#"{"status": "busy"}"#)),
            (Outcome::Retry, "acme[1]".into())
        );
        // No own rule matches a plain 200: the built-in success applies.
        assert_eq!(
            verdict(Some(&c), &response(200, "ok")),
            (Outcome::Success, "builtin[0]".into())
        );
        assert_eq!(
            verdict(Some(&c), &error(ErrorKind::Tls, "invalid peer certificate")),
            (Outcome::Fail, "cert".into())
        );
        // Neither classifies a 418: this classifier's default is fail.
        assert_eq!(
            verdict(Some(&c), &response(418, "")),
            (Outcome::Fail, "default".into())
        );
    }

    #[test]
    fn status_classes_lists_and_error_kinds_match() {
        let m = Matcher {
            status: vec![StatusPattern::Class(4), StatusPattern::Code(503)],
            ..Matcher::default()
        };
        assert!(matches(&m, &response(404, "")));
        assert!(matches(&m, &response(503, "")));
        assert!(!matches(&m, &response(500, "")));
        assert!(!matches(&m, &error(ErrorKind::Timeout, "")));
        let m = Matcher {
            error: vec![ErrorKind::Timeout, ErrorKind::Reset],
            ..Matcher::default()
        };
        assert!(matches(&m, &error(ErrorKind::Reset, "")));
        assert!(!matches(&m, &error(ErrorKind::Dns, "")));
        assert!(!matches(&m, &response(200, "")));
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let with_header = |value: &str| -> DeliveryResult {
            Ok(Response {
                status: 429,
                retry_after: Some(value.to_string()),
                body: String::new(),
                headers: Vec::new(),
            })
        };
        let t = standard();
        let v = classify(None, &with_header("7"), &t, now());
        assert_eq!(
            (v.outcome, v.retry_after),
            (Outcome::Retry, Some(Duration::from_secs(7)))
        );
        let v = classify(None, &with_header("3600"), &t, now());
        assert_eq!(
            v.retry_after,
            Some(Duration::from_secs(60)),
            "capped by max_interval"
        );
        let v = classify(
            None,
            &with_header("Sun, 01 Mar 2026 12:00:30 GMT"),
            &t,
            now(),
        );
        assert_eq!(v.retry_after, Some(Duration::from_secs(30)));
        // 500 is retried but its rule does not honour the header.
        let v = classify(
            None,
            &Ok(Response {
                status: 500,
                retry_after: Some("9".into()),
                body: String::new(),
                headers: Vec::new(),
            }),
            &t,
            now(),
        );
        assert_eq!(v.retry_after, None);
    }
}
