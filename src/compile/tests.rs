//! Compilation end to end on small policy texts: each check with its exact
//! `file:line:col`, defaults, `extends`, and `${VAR}` handling.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::model::{
    Backoff, BreakerConfig, ChannelKind, ErrorKind, FailureRatio, Jitter, MaintenanceRule,
    OffHours, Outcome, Rate, RefreshAuth, RefreshBody, RetryAfter, RetryTemplate,
};
use crate::policy::{Format, MapEnv, SourceFile};

fn yaml(path: &str, text: &str) -> SourceFile {
    SourceFile::new(path, text, Format::Yaml)
}

fn toml(path: &str, text: &str) -> SourceFile {
    SourceFile::new(path, text, Format::Toml)
}

fn env() -> EnvMode {
    EnvMode::from_source(
        MapEnv::new()
            .with("ACME_TOKEN", "tok-very-secret")
            .with("ACME_HOST", "api.acme.example")
            .with("BAD_URL", "not-a-url-secret"),
    )
}

fn run(sources: &[SourceFile]) -> Compilation {
    compile(sources, &env())
}

fn shown(c: &Compilation) -> Vec<String> {
    c.diagnostics.iter().map(ToString::to_string).collect()
}

/// The diagnostics of one YAML file `p.yaml`.
fn diags(text: &str) -> Vec<String> {
    shown(&run(&[yaml("p.yaml", text)]))
}

/// Compiles one YAML file that must have no error.
fn ok(text: &str) -> CompiledPolicy {
    let c = run(&[yaml("p.yaml", text)]);
    assert!(!c.has_errors(), "{:#?}", shown(&c));
    c.policy.expect("a policy when there is no error")
}

/// A flow using everything, so that nothing below is "unused".
const USES: &str = "\
flows:
  f:
    steps:
      - name: s
        channel: c
";

const CHANNEL: &str = "\
channels:
  c:
    file: { dir: spool }
";

fn template(policy: &CompiledPolicy, name: &str) -> RetryTemplate {
    (*policy.templates[name]).clone()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ---------- templates ----------

#[test]
fn template_defaults_follow_the_contract() {
    let p = ok(&format!(
        "templates:\n  bare: {{}}\n  fixed: {{ backoff: fixed }}\n  \
         nightly: {{ schedule: [1m, 5m, 1h] }}\n{CHANNEL}{USES}        retry: bare\n      \
         - {{ name: t, channel: c, retry: fixed }}\n      - {{ name: u, channel: c, retry: nightly }}\n"
    ));
    assert_eq!(
        template(&p, "bare"),
        RetryTemplate {
            name: "bare".into(),
            retries: 3,
            backoff: Backoff::Exponential {
                initial: secs(1),
                multiplier: 2.0
            },
            max_interval: Some(secs(60)),
            total_timeout: None,
            jitter: Jitter::Proportional(0.2),
            retry_after_cap: secs(60),
            adapt: None,
        }
    );
    let fixed = template(&p, "fixed");
    assert_eq!(fixed.backoff, Backoff::Fixed { interval: secs(1) });
    assert_eq!(fixed.max_interval, None);
    assert_eq!(fixed.retry_after_cap, secs(3600));
    let nightly = template(&p, "nightly");
    assert_eq!(nightly.retries, 3);
    assert_eq!(
        nightly.backoff,
        Backoff::Schedule {
            delays: vec![secs(60), secs(300), secs(3600)]
        }
    );
    assert_eq!(nightly.max_interval, None);
    // The built-ins are there too.
    assert_eq!(
        template(&p, "standard"),
        RetryTemplate::builtin("standard").unwrap()
    );
}

#[test]
fn every_template_key_is_read() {
    let p = ok(&format!(
        "templates:\n  t:\n    retries: 6\n    backoff: exponential\n    initial: 2s\n    \
         multiplier: 1.5\n    max_interval: 1m30s\n    total_timeout: 30m\n    jitter: full\n    \
         retry_after_cap: 10m\n{CHANNEL}{USES}        retry: t\n"
    ));
    assert_eq!(
        template(&p, "t"),
        RetryTemplate {
            name: "t".into(),
            retries: 6,
            backoff: Backoff::Exponential {
                initial: secs(2),
                multiplier: 1.5
            },
            max_interval: Some(secs(90)),
            total_timeout: Some(secs(1800)),
            jitter: Jitter::Full,
            retry_after_cap: secs(600),
            adapt: None,
        }
    );
}

#[test]
fn extends_merges_key_by_key_from_user_and_builtin_parents() {
    let p = ok(&format!(
        "templates:\n  base:\n    extends: aggressive\n    retries: 8\n    jitter: none\n  \
         child:\n    extends: base\n    initial: 3s\n    max_interval: 20s\n  \
         slow:\n    extends: conservative\n    backoff: exponential\n\
         {CHANNEL}{USES}        retry: child\n      - {{ name: t, channel: c, retry: slow }}\n"
    ));
    let child = template(&p, "child");
    assert_eq!(child.retries, 8);
    assert_eq!(child.jitter, Jitter::None);
    assert_eq!(
        child.backoff,
        Backoff::Exponential {
            initial: secs(3),
            multiplier: 2.0
        }
    );
    assert_eq!(child.max_interval, Some(secs(20)));
    assert_eq!(child.retry_after_cap, secs(20));
    // Switching conservative (fixed 5s) to exponential keeps its 5s and
    // gains the exponential default cap.
    let slow = template(&p, "slow");
    assert_eq!(
        slow.backoff,
        Backoff::Exponential {
            initial: secs(5),
            multiplier: 2.0
        }
    );
    assert_eq!(slow.retries, 2);
    assert_eq!(slow.max_interval, Some(secs(60)));
}

#[test]
fn bad_template_values_are_reported_where_written() {
    let text = format!(
        "templates:\n  t:\n    initial: 2 s\n    jitter: 0.2\n    multiplier: 0.5\n    \
         schedule: [1m, soon]\n    total_timeout: 0s\n{CHANNEL}{USES}        retry: t\n"
    );
    assert_eq!(
        diags(&text),
        vec![
            "p.yaml:3:14: error: templates.t.initial: bad duration `2 s`: write a number and \
             a unit (ms, s, m, h, d), e.g. `30s`",
            "p.yaml:4:13: error: templates.t.jitter: bad jitter `0.2`: write a percentage from \
             0% to 100% (e.g. `20%`), `full` or `none`",
            "p.yaml:5:17: error: templates.t.multiplier: multiplier 0.5 must be at least 1.0",
            "p.yaml:6:20: error: templates.t.schedule[1]: bad duration `soon`: write a number \
             and a unit (ms, s, m, h, d), e.g. `30s`",
            "p.yaml:7:20: error: templates.t.total_timeout: total_timeout must be longer than \
             0s (leave it out for no limit)",
        ]
    );
}

#[test]
fn schedule_conflicts_and_lengths() {
    let text = format!(
        "templates:\n  a:\n    backoff: fixed\n    schedule: [1m]\n  b:\n    backoff: schedule\n  \
         c:\n    schedule: [1m, 2m]\n    retries: 3\n  d:\n    schedule: []\n\
         {CHANNEL}{USES}        retry: a\n      - {{ name: t2, channel: c, retry: b }}\n      \
         - {{ name: t3, channel: c, retry: c }}\n      - {{ name: t4, channel: c, retry: d }}\n"
    );
    assert_eq!(
        diags(&text),
        vec![
            "p.yaml:4:5: error: templates.a.schedule: `schedule` goes only with backoff \
             schedule, not fixed",
            "p.yaml:6:14: error: templates.b.backoff: backoff `schedule` needs a non-empty \
             `schedule` list of delays",
            "p.yaml:9:14: error: templates.c.retries: retries 3 is more than the 2 delays of \
             `schedule` (the last delay does not repeat)",
            "p.yaml:11:5: error: templates.d.schedule: backoff `schedule` needs a non-empty \
             `schedule` list of delays",
        ]
    );
}

#[test]
fn extends_cycles_and_unknown_parents() {
    let text = format!(
        "templates:\n  a: {{ extends: b }}\n  b: {{ extends: a }}\n  c: {{ extends: a }}\n  \
         d: {{ extends: nope }}\n  e: {{ extends: e }}\n{CHANNEL}{USES}        retry: c\n      \
         - {{ name: t, channel: c, retry: d }}\n      - {{ name: u, channel: c, retry: e }}\n"
    );
    assert_eq!(
        diags(&text),
        vec![
            "p.yaml:3:17: error: templates.b.extends: `extends` makes a cycle: a → b → a",
            "p.yaml:5:17: error: templates.d.extends: unknown template `nope`; defined \
             templates: a, aggressive, b, c, conservative, d, e, standard",
            "p.yaml:6:17: error: templates.e.extends: `extends` makes a cycle: e → e",
        ]
    );
}

#[test]
fn builtin_names_cannot_be_redefined() {
    assert_eq!(
        diags(&format!(
            "templates:\n  standard: {{ retries: 1 }}\n{CHANNEL}{USES}"
        )),
        vec![
            "p.yaml:2:3: error: templates.standard: template `standard` is built in; choose \
             another name (`extends: standard` starts from the built-in one)"
        ]
    );
}

#[test]
fn keys_without_effect_are_warned_about() {
    let text = format!(
        "templates:\n  t:\n    backoff: fixed\n    multiplier: 3.0\n{CHANNEL}{USES}        retry: t\n"
    );
    assert_eq!(
        diags(&text),
        vec!["p.yaml:4:17: warning: templates.t.multiplier: `multiplier` has no effect with backoff fixed"]
    );
}

// ---------- classifiers ----------

#[test]
fn classifier_rules_compile_with_labels() {
    let p = ok(&format!(
        "classifiers:\n  acme:\n    rules:\n      \
         - match: {{ status: [502, 4xx], body: '(?i)busy' }}\n        outcome: retry\n        \
         retry_after: honor\n      - match: {{ error: [timeout, dns], error_message: cert }}\n        \
         outcome: fail\n        name: cert-failure\n      - outcome: success\n    default: fail\n\
         {CHANNEL}{USES}        classify: acme\n"
    ));
    let c = &p.classifiers["acme"];
    assert_eq!(c.default, Outcome::Fail);
    let labels: Vec<&str> = c.rules.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(labels, vec!["acme[0]", "cert-failure", "acme[2]"]);
    assert_eq!(c.rules[0].retry_after, RetryAfter::Honor);
    assert_eq!(
        c.rules[0].matcher.status,
        vec![
            crate::model::StatusPattern::Code(502),
            crate::model::StatusPattern::Class(4)
        ]
    );
    assert!(c.rules[0].matcher.body.as_ref().unwrap().is_match("BUSY"));
    assert_eq!(
        c.rules[1].matcher.error,
        vec![
            crate::model::ErrorKind::Timeout,
            crate::model::ErrorKind::Dns
        ]
    );
    assert!(c.rules[2].matcher.status.is_empty());
    assert!(p.flows["f"].steps[0].classifier.is_some());
}

#[test]
fn bad_rules_are_reported() {
    let text = format!(
        "classifiers:\n  k:\n    rules:\n      - match: {{ status: [200, 6xx] }}\n        \
         outcome: success\n      - match: {{ status: 99 }}\n        outcome: fail\n      \
         - match: {{ body: '(unclosed' }}\n        outcome: retry\n      - match: {{ status: 401 }}\n        \
         outcome: refresh_auth\n      - {{ match: {{ status: 500 }}, outcome: retry, name: x }}\n      \
         - {{ match: {{ status: 501 }}, outcome: retry, name: x }}\n  \
         typo:\n    rules:\n      - match: {{ error: tmeout }}\n        outcome: retry\n\
         {CHANNEL}{USES}        classify: k\n      - {{ name: t, channel: c, classify: typo }}\n"
    );
    assert_eq!(
        diags(&text),
        vec![
            "p.yaml:4:32: error: classifiers.k.rules[0].match.status[1]: bad status `6xx`: \
             write a code from 100 to 599 or a class from `1xx` to `5xx`",
            "p.yaml:6:26: error: classifiers.k.rules[1].match.status: bad status `99`: write a \
             code from 100 to 599 or a class from `1xx` to `5xx`",
            "p.yaml:8:24: error: classifiers.k.rules[2].match.body: bad regex: unclosed group",
            "p.yaml:13:57: error: classifiers.k.rules[5].name: rule name `x` is already used \
             by rule 4",
            "p.yaml:16:25: error: classifiers.typo.rules[0].match.error: unknown variant \
             `tmeout`, expected one of `timeout`, `connect`, `dns`, `reset`, `tls`, `io`, \
             `internal`, `mapping`, `other`",
        ]
    );
}

#[test]
fn rules_that_cannot_matter_are_warned_about() {
    let text = format!(
        "classifiers:\n  k:\n    rules:\n      - match: {{ status: 500, error: timeout }}\n        \
         outcome: retry\n      - outcome: fail\n        retry_after: honor\n      \
         - match: {{ status: 200 }}\n        outcome: success\n{CHANNEL}{USES}        classify: k\n"
    );
    assert_eq!(
        diags(&text),
        vec![
            "p.yaml:4:9: warning: classifiers.k.rules[0].match: this rule never matches: \
             `status` and `body` test HTTP answers, `error` and `error_message` test \
             deliveries that got no answer",
            "p.yaml:7:22: warning: classifiers.k.rules[1].retry_after: `retry_after: honor` \
             has no effect with outcome fail",
            "p.yaml:8:9: warning: classifiers.k.rules[2]: never reached: rule 1 before it \
             matches everything",
        ]
    );
}

#[test]
fn likely_mistakes_are_warned_about_at_the_key_to_change() {
    let text = format!(
        "templates:\n  short:\n    backoff: schedule\n    schedule: [1m, 5m, 1h]\n    \
         total_timeout: 30m\n  child:\n    extends: short\n    schedule: [1m, 5m]\n    \
         total_timeout: 1h\n  inherits:\n    extends: short\n    schedule: [10m, 30m]\n\
         classifiers:\n  k:\n    rules:\n      - match: {{ status: 4xx }}\n        \
         outcome: fail\n      - match: {{ status: 429 }}\n        outcome: retry\n\
         {CHANNEL}{USES}        classify: k\n        retry: short\n      \
         - name: t\n        channel: c\n        retry: child\n      \
         - name: u\n        channel: c\n        retry: inherits\n"
    );
    assert_eq!(
        diags(&text),
        vec![
            "p.yaml:5:20: warning: templates.short.total_timeout: retry 3 can never run: \
             retry 3 would start 1h6m after the first attempt (delays before jitter), past \
             total_timeout 30m; lower `retries` to 2 or raise `total_timeout` to at least 1h6m",
            "p.yaml:10:3: warning: templates.inherits: retry 2 can never run: retry 2 would \
             start 40m after the first attempt (delays before jitter), past total_timeout \
             30m; lower `retries` to 1 or raise `total_timeout` to at least 40m",
            "p.yaml:18:9: warning: classifiers.k.rules[1]: never reached: rule 0 \
             (`k[0]`) matches every answer this rule matches, and comes first; move this \
             rule above it or narrow rule 0",
        ]
    );
}

// ---------- channels ----------

#[test]
fn http_channels_compile_with_defaults_and_secrets() {
    let p = ok(&format!(
        "channels:\n  c:\n    http:\n      url: https://${{ACME_HOST}}/leads\n      \
         headers: {{ Authorization: 'Bearer ${{ACME_TOKEN}}', X-Version: 2 }}\n  \
         d:\n    http: {{ url: 'http://x.example', method: put, timeout: 10s }}\n\
         {USES}        fallback: d\n"
    ));
    let ChannelKind::Http(c) = &p.channels["c"].kind else {
        panic!("http")
    };
    assert_eq!(c.url.expose(), "https://api.acme.example/leads");
    assert_eq!(c.url_display, "https://${ACME_HOST}/leads");
    assert_eq!(c.method, "POST");
    assert_eq!(c.timeout, secs(30));
    let headers: Vec<(&str, &str)> = c
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .collect();
    assert_eq!(
        headers,
        vec![
            ("Authorization", "Bearer tok-very-secret"),
            ("X-Version", "2")
        ]
    );
    assert!(!format!("{:?}", p.channels).contains("tok-very-secret"));
    let ChannelKind::Http(d) = &p.channels["d"].kind else {
        panic!("http")
    };
    assert_eq!((d.method.as_str(), d.timeout), ("PUT", secs(10)));
    assert_eq!(p.flows["f"].steps[0].fallback, vec!["d".to_string()]);
}

#[test]
fn bad_channels_are_reported() {
    let text = format!(
        "channels:\n  c:\n    file: {{ dir: spool }}\n  both:\n    http: {{ url: 'https://a.example' }}\n    \
         file: {{ dir: x }}\n  none: {{}}\n  h:\n    http:\n      url: api.example/leads\n      \
         method: FETCH\n      timeout: 0s\n      headers:\n        Bad Name: x\n        \
         Idempotency-Key: k\n        x-a: 1\n        X-A: 2\n        X-B: \"a\\nb\"\n  \
         e:\n    file: {{ dir: '' }}\n  u:\n    file: {{ dir: x }}\n    circuit_breaker: {{ failures: 0, \
         window: 0s, min_requests: 0 }}\n    concurrency: 0\n    rate: 5/fortnight\n    \
         refresh_auth: {{ url: 'https://a.example', token: t }}\n\
         {USES}        fallback: [both, none, h, e, u]\n"
    );
    assert_eq!(
        diags(&text),
        vec![
            "p.yaml:4:3: error: channels.both: a channel has exactly one kind: write `http`, \
             `file` or `pool`, not two",
            "p.yaml:7:3: error: channels.none: a channel needs its kind: `http`, `file` or \
             `pool`",
            "p.yaml:10:12: error: channels.h.http.url: url `api.example/leads` is not an \
             absolute http(s) URL, e.g. `https://api.example.com/leads`",
            "p.yaml:11:15: error: channels.h.http.method: unknown method `FETCH`; use one of \
             GET, POST, PUT, PATCH, DELETE",
            "p.yaml:12:16: error: channels.h.http.timeout: timeout must be longer than 0s",
            "p.yaml:14:9: error: channels.h.http.headers.Bad Name: bad header name `Bad Name`: \
             use letters, digits and `-` (no spaces or `:`)",
            "p.yaml:15:9: error: channels.h.http.headers.Idempotency-Key: `Idempotency-Key` is \
             set by the engine on every attempt (the job's key); remove it here",
            "p.yaml:17:9: error: channels.h.http.headers.X-A: header `X-A` is written twice \
             (also as `x-a`; names ignore case)",
            "p.yaml:18:14: error: channels.h.http.headers.X-B: header value holds a line break \
             or another control character",
            "p.yaml:20:18: error: channels.e.file.dir: dir must name a directory",
            "p.yaml:23:34: error: channels.u.circuit_breaker.failures: failures must be at \
             least 1",
            "p.yaml:23:45: error: channels.u.circuit_breaker.window: window must be longer than 0s",
            "p.yaml:23:63: error: channels.u.circuit_breaker.min_requests: min_requests must be \
             at least 1",
            "p.yaml:24:18: error: channels.u.concurrency: concurrency must be at least 1 (the \
             most attempts in flight at once)",
            "p.yaml:25:11: error: channels.u.rate: bad rate `5/fortnight`: the period after `/`: \
             write a number and a unit (ms, s, m, h, d), e.g. `30s`; write a count per period, \
             e.g. `50/s`, `600/m` or `5/10s`",
            "p.yaml:26:5: error: channels.u.refresh_auth: `refresh_auth` is for `http` \
             channels; a `file` channel has no token",
        ]
    );
}

// ---------- channel limits: breakers, rates, concurrency, refresh_auth ----------

#[test]
fn channel_limits_compile() {
    let p = ok("\
channels:
  api:
    http:
      url: https://api.acme.example/leads
      headers: { Authorization: \"Bearer ${ACME_TOKEN}\" }
    circuit_breaker: { failures: 5, window: 60s, cooldown: 30s }
    rate: 50/s
    concurrency: 8
    refresh_auth:
      url: https://${ACME_HOST}/token
      form: { grant_type: client_credentials, client_secret: \"${ACME_TOKEN}\" }
      token: $.data.access_token
  ratio:
    file: { dir: spool }
    circuit_breaker: { failure_ratio: 50%, window: 1m, half_open_probes: 2 }
classifiers:
  k:
    rules:
      - { match: { status: 401 }, outcome: refresh_auth }
flows:
  f:
    steps:
      - { name: s, channel: api, classify: k, fallback: [ratio] }
");
    let api = &p.channels["api"];
    assert_eq!(
        api.breaker,
        Some(BreakerConfig {
            failures: Some(5),
            failure_ratio: None,
            window: Some(secs(60)),
            cooldown: secs(30),
            half_open_probes: 1,
        })
    );
    assert_eq!(
        api.rate,
        Some(Rate {
            count: 50,
            per: secs(1)
        })
    );
    assert_eq!(api.concurrency, Some(8));
    let ChannelKind::Http(http) = &api.kind else {
        panic!("http")
    };
    let refresh = http.refresh_auth.as_ref().expect("refresh_auth");
    assert_eq!(refresh.url.expose(), "https://api.acme.example/token");
    assert_eq!(refresh.url_display, "https://${ACME_HOST}/token");
    assert_eq!(refresh.method, "POST");
    assert_eq!(refresh.token.text, "$.data.access_token");
    assert_eq!(refresh.header_value("t"), "Bearer t");
    assert_eq!(refresh.timeout, RefreshAuth::DEFAULT_TIMEOUT);
    let Some(RefreshBody::Form(form)) = &refresh.body else {
        panic!("form body")
    };
    assert_eq!(form[1].0, "grant_type");
    assert!(!format!("{:?}", p.channels).contains("tok-very-secret"));

    let ratio = p.channels["ratio"].breaker.clone().expect("breaker");
    assert_eq!(ratio.failures, None);
    assert_eq!(
        ratio.failure_ratio,
        Some(FailureRatio {
            ratio: 0.5,
            min_requests: BreakerConfig::DEFAULT_MIN_REQUESTS
        })
    );
    assert_eq!(ratio.cooldown, BreakerConfig::DEFAULT_COOLDOWN);
    assert_eq!(ratio.half_open_probes, 2);
}

#[test]
fn channel_limits_compile_from_toml() {
    let c = run(&[toml(
        "p.toml",
        "[channels.api]\nhttp = { url = \"https://a.example\" }\nrate = \"600/m\"\nconcurrency = 4\n\
         circuit_breaker = { failure_ratio = 0.25, window = \"30s\", min_requests = 8 }\n\
         [channels.api.refresh_auth]\nurl = \"https://a.example/token\"\n\
         body = { client_id = \"x\", scopes = [\"a\", \"b\"] }\ntoken = \"access_token\"\nscheme = \"\"\n\
         [[flows.f.steps]]\nname = \"s\"\nchannel = \"api\"\n",
    )]);
    assert!(!c.has_errors(), "{:#?}", shown(&c));
    let p = c.policy.unwrap();
    let api = &p.channels["api"];
    assert_eq!(api.rate.map(|r| r.to_string()).as_deref(), Some("600/m"));
    let breaker = api.breaker.clone().unwrap();
    assert_eq!(
        breaker.failure_ratio,
        Some(FailureRatio {
            ratio: 0.25,
            min_requests: 8
        })
    );
    let ChannelKind::Http(http) = &api.kind else {
        panic!("http")
    };
    let refresh = http.refresh_auth.as_ref().unwrap();
    assert_eq!(
        refresh.header_value("t"),
        "t",
        "scheme \"\" sends the token alone"
    );
    let Some(RefreshBody::Json(body)) = &refresh.body else {
        panic!("a JSON body")
    };
    let body: serde_json::Value = serde_json::from_str(body.expose()).unwrap();
    assert_eq!(body["scopes"][1], "b");
}

#[test]
fn bad_breakers_and_refresh_auth_are_reported() {
    let text = "\
channels:
  a:
    file: { dir: a }
    circuit_breaker: { cooldown: 10s }
  b:
    file: { dir: b }
    circuit_breaker: { failure_ratio: 150%, failures: 3, min_requests: 5, cooldown: 2 }
  c:
    file: { dir: c }
    circuit_breaker: { failure_ratio: 0.5, half_open_probes: 0 }
  d:
    http:
      url: https://d.example
    refresh_auth:
      url: d.example/token
      body: { id: x }
      form: { id: x }
      token: data..token
      header: Idempotency-Key
      scheme: Bearer token
flows:
  f:
    steps:
      - { name: s, channel: a, fallback: [b, c, d] }
";
    assert_eq!(
        diags(text),
        vec![
            "p.yaml:4:5: error: channels.a.circuit_breaker: a circuit breaker needs \
             `failures: N` (opens after N failures in a row) or `failure_ratio` with `window` \
             (opens when that share of recent attempts failed), e.g. `{ failures: 5, window: \
             60s, cooldown: 30s }`",
            "p.yaml:7:24: error: channels.b.circuit_breaker.failure_ratio: `failure_ratio` \
             needs a `window` to count attempts over, e.g. `window: 60s`",
            "p.yaml:7:39: error: channels.b.circuit_breaker.failure_ratio: bad failure_ratio \
             `150%`: write a share above 0 and at most 1, as `50%` or `0.5`",
            "p.yaml:7:85: error: channels.b.circuit_breaker.cooldown: bad duration `2`: write \
             a number and a unit (ms, s, m, h, d), e.g. `30s`",
            "p.yaml:10:24: error: channels.c.circuit_breaker.failure_ratio: `failure_ratio` \
             needs a `window` to count attempts over, e.g. `window: 60s`",
            "p.yaml:10:62: error: channels.c.circuit_breaker.half_open_probes: \
             half_open_probes must be at least 1 (a breaker closes only after a probe succeeds)",
            "p.yaml:15:12: error: channels.d.refresh_auth.url: url `d.example/token` is not an \
             absolute http(s) URL, e.g. `https://auth.example.com/oauth/token`",
            "p.yaml:17:7: error: channels.d.refresh_auth.form: write the refresh request's \
             `body` or its `form`, not both",
            "p.yaml:18:14: error: channels.d.refresh_auth.token: bad token path `data..token`: \
             an empty key (two dots in a row, or a dot at the end); write where the token is in \
             the JSON answer, e.g. `access_token` or `$.data.token`",
            "p.yaml:19:15: error: channels.d.refresh_auth.header: the token cannot go in \
             `Idempotency-Key`, which the engine sets",
            "p.yaml:20:15: error: channels.d.refresh_auth.scheme: scheme is one word, e.g. \
             `Bearer` (or `\"\"` for the token alone)",
        ]
    );
}

#[test]
fn a_step_breaker_configures_its_channel() {
    let p = ok("\
channels:
  a: { file: { dir: a } }
  b: { file: { dir: b }, circuit_breaker: { failures: 3 } }
flows:
  f:
    steps:
      - { name: one, channel: a, circuit_breaker: { failures: 5, window: 60s, cooldown: 30s } }
      - { name: two, channel: a, circuit_breaker: { failures: 5, window: 60s, cooldown: 30s } }
      - { name: three, channel: b, circuit_breaker: { failures: 3 } }
");
    let a = p.channels["a"].breaker.clone().expect("set by the steps");
    assert_eq!(
        (a.failures, a.window, a.cooldown),
        (Some(5), Some(secs(60)), secs(30))
    );
    assert_eq!(p.channels["b"].breaker.as_ref().unwrap().failures, Some(3));
}

#[test]
fn a_channel_has_one_breaker() {
    let text = "\
channels:
  a: { file: { dir: a } }
  b:
    file: { dir: b }
    circuit_breaker: { failures: 3 }
flows:
  f:
    steps:
      - { name: one, channel: a, circuit_breaker: { failures: 5 } }
      - { name: two, channel: a, circuit_breaker: { failures: 6 } }
      - { name: three, channel: b, circuit_breaker: { failures: 4 } }
";
    assert_eq!(
        diags(text),
        vec![
            "p.yaml:10:34: error: flows.f.steps[1].circuit_breaker: channel `a` already has a \
             different breaker, set by the step at p.yaml:9:34; a breaker belongs to its \
             channel: write it once, under `channels.a`",
            "p.yaml:11:36: error: flows.f.steps[2].circuit_breaker: channel `b` has its own \
             circuit_breaker (p.yaml:5:5), different from this one; a breaker belongs to its \
             channel: remove this one or make them equal",
        ]
    );
}

#[test]
fn refresh_auth_rules_warn_on_channels_without_refresh_auth() {
    let text = "\
classifiers:
  k:
    rules:
      - { match: { status: 401 }, outcome: refresh_auth, name: expired }
channels:
  c: { http: { url: 'https://c.example' } }
flows:
  f:
    steps:
      - { name: s, channel: c, classify: k }
";
    assert_eq!(
        diags(text),
        vec![
            "p.yaml:10:42: warning: flows.f.steps[0].classify: rule `expired` of classifier \
             `k` answers `refresh_auth`, but channel `c` has no `refresh_auth` to run: there \
             that answer fails the job; add `refresh_auth` to the channel"
        ]
    );
}

// ---------- flows ----------

#[test]
fn flows_resolve_every_reference() {
    let p = ok(
        "templates:\n  t: { retries: 1 }\nclassifiers:\n  k: { rules: [] }\nchannels:\n  \
         a: { file: { dir: a } }\n  b: { file: { dir: b } }\n  n: { file: { dir: n } }\n\
         flows:\n  f:\n    steps:\n      - { name: one, channel: a, retry: t, classify: k, fallback: [b] }\n      \
         - { name: two, channel: b }\n    on_dead: { notify: n }\n",
    );
    let f = &p.flows["f"];
    assert_eq!(f.steps.len(), 2);
    assert_eq!(f.steps[0].retry.name, "t");
    assert_eq!(f.steps[0].classifier.as_ref().unwrap().name, "k");
    assert_eq!(f.steps[0].fallback, vec!["b".to_string()]);
    assert_eq!(f.steps[1].retry.name, DEFAULT_TEMPLATE);
    assert!(f.steps[1].classifier.is_none());
    assert_eq!(f.on_dead.as_ref().unwrap().notify, "n");
}

#[test]
fn unknown_references_list_what_exists() {
    let text = "\
channels:
  acme-api: { file: { dir: a } }
  acme-backup: { file: { dir: b } }
flows:
  f:
    steps:
      - name: deliver
        channel: acme-apii
        fallback: [acme-backup, nope]
        retry: agressive
        classify: acme
    on_dead:
      notify: ops
";
    assert_eq!(
        diags(text),
        vec![
            "p.yaml:2:3: warning: channels.acme-api: channel `acme-api` is not used by any \
             step, fallback or on_dead",
            "p.yaml:8:18: error: flows.f.steps[0].channel: unknown channel `acme-apii`; \
             defined channels: acme-api, acme-backup",
            "p.yaml:9:33: error: flows.f.steps[0].fallback[1]: unknown channel `nope`; \
             defined channels: acme-api, acme-backup",
            "p.yaml:10:16: error: flows.f.steps[0].retry: unknown template `agressive`; \
             defined templates: aggressive, conservative, standard",
            "p.yaml:11:19: error: flows.f.steps[0].classify: unknown classifier `acme`; no \
             classifiers are defined",
            "p.yaml:13:15: error: flows.f.on_dead.notify: unknown channel `ops`; defined \
             channels: acme-api, acme-backup",
        ]
    );
}

#[test]
fn step_rules_and_unsupported_step_keys() {
    let text = format!(
        "{CHANNEL}flows:\n  empty: {{ steps: [] }}\n  f:\n    steps:\n      - {{ name: a, channel: c }}\n      \
         - {{ name: a, channel: c }}\n      - {{ name: on_dead, channel: c }}\n      \
         - name: b\n        channel: c\n        fallback: c\n        hours: {{ calendar: x }}\n        \
         circuit_breaker: {{ failures: 5, window: 60s, cooldown: 30s }}\n"
    );
    assert_eq!(
        diags(&text),
        vec![
            "p.yaml:5:3: error: flows.empty: a flow needs at least one step under `steps`",
            "p.yaml:9:17: error: flows.f.steps[1].name: step `a` is already the name of steps[0]",
            "p.yaml:10:17: error: flows.f.steps[2].name: `on_dead` is reserved for the dead-job \
             notification; choose another step name",
            "p.yaml:13:19: warning: flows.f.steps[3].fallback: fallback `c` is the step's own \
             channel: it runs the same retries again against the same partner",
            "p.yaml:14:9: warning: flows.f.steps[3].hours: `hours` sets none of `in_hours`, \
             `off_hours` and `maintenance`, so the calendar changes nothing: add `off_hours: \
             hold`, `off_hours: { retry: TEMPLATE }` or `maintenance: suspend`",
            "p.yaml:14:28: error: flows.f.steps[3].hours.calendar: unknown calendar `x`; no \
             calendars are defined",
        ]
    );
}

#[test]
fn unused_definitions_are_warned_about() {
    let text = format!(
        "templates:\n  lonely: {{}}\n  parent: {{}}\n  child: {{ extends: parent }}\n\
         classifiers:\n  k: {{}}\nchannels:\n  c: {{ file: {{ dir: a }} }}\n  spare: {{ file: {{ dir: b }} }}\n\
         {}        retry: child\n",
        USES
    );
    assert_eq!(
        diags(&text),
        vec![
            "p.yaml:2:3: warning: templates.lonely: template `lonely` is not used by any step",
            "p.yaml:6:3: warning: classifiers.k: classifier `k` is not used by any step",
            "p.yaml:9:3: warning: channels.spare: channel `spare` is not used by any step, \
             fallback or on_dead",
        ]
    );
}

// ---------- calendars and step hours ----------

const OFFICE: &str = "\
calendars:
  office:
    timezone: America/New_York
    hours: { mon-fri: \"09:00-18:00\", sat: [\"10:00-12:00\", \"13:00-14:00\"] }
    holidays: [2026-12-25]
    maintenance:
      - weekly: \"sun 02:00-04:00\"
      - { from: 2026-12-01T00:00:00Z, to: 2026-12-01T06:00:00Z }
";

#[test]
fn calendars_compile_and_steps_resolve_their_hours() {
    let p = ok(&format!(
        "{OFFICE}{CHANNEL}{USES}        hours:\n          calendar: office\n          \
         off_hours: {{ retry: conservative }}\n          maintenance: suspend\n      \
         - name: t\n        channel: c\n        hours: {{ calendar: office, off_hours: hold }}\n      \
         - name: u\n        channel: c\n        \
         hours: {{ calendar: office, in_hours: {{ retry: aggressive }} }}\n"
    ));
    let office = p.calendar("office").expect("compiled calendar");
    assert_eq!(office.name(), "office");
    // Saturday 2026-05-09, 12:30 local: between the two ranges of the list.
    let at = |text: &str| -> jiff::Timestamp { text.parse().unwrap() };
    assert!(office.is_open(at("2026-05-09T15:30:00Z")));
    assert!(!office.is_open(at("2026-05-09T16:30:00Z")));
    let steps = &p.flows["f"].steps;
    let hours = steps[0].hours.as_ref().expect("hours");
    assert!(Arc::ptr_eq(&hours.calendar, office));
    assert!(matches!(&hours.off_hours, OffHours::Retry(t) if t.name == "conservative"));
    assert_eq!(hours.maintenance, MaintenanceRule::Suspend);
    let hours = steps[1].hours.as_ref().expect("hours");
    assert!(matches!(hours.off_hours, OffHours::Hold));
    assert_eq!(hours.maintenance, MaintenanceRule::AsOffHours);
    assert!(hours.in_hours.is_none());
    let hours = steps[2].hours.as_ref().expect("hours");
    assert_eq!(
        hours.in_hours.as_ref().map(|t| t.name.as_str()),
        Some("aggressive")
    );
    assert!(matches!(hours.off_hours, OffHours::Attempt));
}

#[test]
fn the_same_calendar_in_toml_with_date_literals() {
    let text = "[calendars.office]\ntimezone = \"America/New_York\"\n\
                hours = { mon-fri = \"09:00-18:00\", sat = [\"10:00-12:00\", \"13:00-14:00\"] }\n\
                holidays = [2026-12-25]\n\
                maintenance = [{ weekly = \"sun 02:00-04:00\" }, \
                { from = 2026-12-01T00:00:00Z, to = 2026-12-01T06:00:00Z }]\n\
                [channels.c]\nfile = { dir = \"spool\" }\n\
                [[flows.f.steps]]\nname = \"s\"\nchannel = \"c\"\n\
                hours = { calendar = \"office\", maintenance = \"suspend\" }\n";
    let c = run(&[toml("p.toml", text)]);
    assert!(c.diagnostics.is_empty(), "{:#?}", shown(&c));
    let p = c.policy.expect("policy");
    let office = p.calendar("office").expect("calendar");
    let at = |text: &str| -> jiff::Timestamp { text.parse().unwrap() };
    // The holiday and both windows are in force.
    assert!(!office.is_open(at("2026-12-25T15:00:00Z")));
    assert_eq!(
        office.in_maintenance(at("2026-12-01T01:00:00Z")),
        Some(at("2026-12-01T06:00:00Z"))
    );
    assert!(office.in_maintenance(at("2026-05-10T06:30:00Z")).is_some());
}

#[test]
fn calendar_errors_point_at_the_entry() {
    let text = format!(
        "calendars:\n  office:\n    timezone: America/New_Yrok\n    \
         hours: {{ mon-fry: \"09:00-18:00\", sat: \"10:00-25:00\" }}\n    \
         holidays: [2026-13-01]\n    maintenance:\n      - weekly: \"sunday 02:00\"\n      \
         - {{ from: yesterday, to: 2026-12-01T06:00:00Z }}\n      \
         - {{ weekly: \"sun 02:00-04:00\", from: 2026-12-01T00:00:00Z }}\n      \
         - {{ from: 2026-12-02T00:00:00Z, to: 2026-12-01T00:00:00Z }}\n\
         {CHANNEL}{USES}        hours: {{ calendar: office, off_hours: hold }}\n"
    );
    assert_eq!(
        diags(&text),
        vec![
            "p.yaml:3:15: error: calendars.office.timezone: unknown time zone \
             `America/New_Yrok`: use an IANA name like America/New_York",
            "p.yaml:4:14: error: calendars.office.hours.mon-fry: bad day range `mon-fry`: \
             days are mon, tue, wed, thu, fri, sat, sun",
            "p.yaml:4:43: error: calendars.office.hours.sat: bad hours `10:00-25:00`: hours \
             run from 00 to 23 and minutes from 00 to 59 (24:00 may end a range)",
            "p.yaml:5:16: error: calendars.office.holidays[0]: bad holiday `2026-13-01`: write \
             a date as YYYY-MM-DD, e.g. 2026-12-25",
            "p.yaml:7:17: error: calendars.office.maintenance[0].weekly: bad day `sunday`: days \
             are mon, tue, wed, thu, fri, sat, sun",
            "p.yaml:8:17: error: calendars.office.maintenance[1].from: bad instant `yesterday`: \
             write an RFC 3339 time with an offset, e.g. 2026-12-01T00:00:00Z",
            "p.yaml:9:9: error: calendars.office.maintenance[2]: a maintenance window is either \
             `weekly: \"sun 02:00-04:00\"` (local time, every week) or `{ from: \
             2026-12-01T00:00:00Z, to: 2026-12-01T06:00:00Z }` (once)",
            "p.yaml:10:9: error: calendars.office.maintenance[3]: empty maintenance window from \
             `2026-12-02T00:00:00Z` to `2026-12-01T00:00:00Z`: `to` must be after `from`",
        ]
    );
}

#[test]
fn a_calendar_that_never_opens_is_an_error() {
    let text = format!(
        "calendars:\n  never:\n    timezone: UTC\n    hours: {{ sat-sun: \"00:00-24:00\" }}\n    \
         maintenance:\n      - weekly: \"sat-sun 00:00-24:00\"\n\
         {CHANNEL}{USES}        hours: {{ calendar: never, off_hours: hold }}\n"
    );
    assert_eq!(
        diags(&text),
        vec![
            "p.yaml:5:5: error: calendars.never.maintenance: weekly maintenance covers every \
             opening hour: the calendar would never open; shorten a window or add hours"
        ]
    );
    let no_hours = format!(
        "calendars:\n  closed:\n    timezone: UTC\n\
         {CHANNEL}{USES}        hours: {{ calendar: closed, off_hours: hold }}\n"
    );
    assert_eq!(
        diags(&no_hours),
        vec![
            "p.yaml:2:3: error: calendars.closed.hours: no opening hours: a calendar needs \
             `hours`, e.g. mon-fri: \"09:00-18:00\""
        ]
    );
}

#[test]
fn step_hours_references_and_modes_are_checked() {
    let text = format!(
        "{OFFICE}{CHANNEL}{USES}        hours: {{ calendar: ofice, off_hours: hold }}\n      \
         - name: t\n        channel: c\n        \
         hours: {{ calendar: office, off_hours: wait, maintenance: skip }}\n      \
         - name: u\n        channel: c\n        \
         hours: {{ calendar: office, off_hours: {{ retry: gentle }} }}\n      \
         - name: v\n        channel: c\n        \
         hours: {{ calendar: office, in_hours: hold }}\n"
    );
    assert_eq!(
        diags(&text),
        vec![
            "p.yaml:17:28: error: flows.f.steps[0].hours.calendar: unknown calendar `ofice`; \
             defined calendars: office",
            "p.yaml:20:47: error: flows.f.steps[1].hours.off_hours: unknown `off_hours` mode \
             `wait`: write `hold` (no attempt until the calendar opens) or `{ retry: TEMPLATE \
             }` (retry with another template while it is closed)",
            "p.yaml:20:66: error: flows.f.steps[1].hours.maintenance: unknown `maintenance` \
             mode `skip`: write `suspend` (no attempt inside a maintenance window), or leave \
             it out to treat windows as off hours",
            "p.yaml:23:56: error: flows.f.steps[2].hours.off_hours.retry: unknown template \
             `gentle`; defined templates: aggressive, conservative, standard",
            "p.yaml:26:46: error: flows.f.steps[3].hours.in_hours: `in_hours: hold`: `hold` \
             waits for the calendar to open, and in hours it is open; write `{ retry: \
             TEMPLATE }` to retry with another template while the calendar is open",
        ]
    );
    let typo = format!(
        "{OFFICE}{CHANNEL}{USES}        hours: {{ calendar: office, off_hours: {{ retyr: standard }} }}\n"
    );
    assert_eq!(
        diags(&typo),
        vec![
            "p.yaml:17:49: error: flows.f.steps[0].hours.off_hours.retyr: unknown field \
             `retyr`, expected `retry`"
        ]
    );
}

#[test]
fn a_calendar_value_from_the_environment_is_judged_only_when_known() {
    let text = format!(
        "calendars:\n  office:\n    timezone: ${{OFFICE_TZ}}\n    hours: {{ mon-fri: \"09:00-18:00\" }}\n\
         {CHANNEL}{USES}        hours: {{ calendar: office, off_hours: hold }}\n"
    );
    let placeholders = compile(&[yaml("p.yaml", &text)], &EnvMode::Placeholders);
    assert!(
        placeholders.diagnostics.is_empty(),
        "{:?}",
        shown(&placeholders)
    );
    let missing = compile(
        &[yaml("p.yaml", &text)],
        &EnvMode::from_source(MapEnv::new()),
    );
    assert_eq!(
        shown(&missing),
        vec![
            "p.yaml:3:15: error: calendars.office.timezone: environment variable `OFFICE_TZ` \
              is not set"
        ]
    );
    let known = compile(
        &[yaml("p.yaml", &text)],
        &EnvMode::from_source(MapEnv::new().with("OFFICE_TZ", "Europe/Paris")),
    );
    let policy = known.policy.expect("compiles");
    assert_eq!(
        policy.calendar("office").map(|c| c.timezone().iana_name()),
        Some(Some("Europe/Paris"))
    );
}

#[test]
fn unused_calendars_are_warned_about() {
    assert_eq!(
        diags(&format!("{OFFICE}{CHANNEL}{USES}")),
        vec![
            "p.yaml:2:3: warning: calendars.office: calendar `office` is not used by any \
              step's `hours`"
        ]
    );
}
#[test]
fn bad_names_are_refused() {
    assert_eq!(
        diags("channels:\n  'a b': { file: { dir: x } }\nflows:\n  f:\n    steps: [{ name: 's:1', channel: 'a b' }]\n"),
        vec![
            "p.yaml:2:3: error: channels.a b: bad channel name `a b`: use letters, digits, `-`, \
             `_` and `.`, starting with a letter or digit",
            "p.yaml:5:21: error: flows.f.steps[0].name: bad step name `s:1`: use letters, \
             digits, `-`, `_` and `.`, starting with a letter or digit",
        ]
    );
}

// ---------- across files ----------

#[test]
fn a_name_defined_twice_names_both_files() {
    let c = run(&[
        yaml("policies/a.yaml", &format!("{CHANNEL}{USES}")),
        toml(
            "policies/b.toml",
            "[channels.c]\nfile = { dir = \"other\" }\n",
        ),
    ]);
    assert_eq!(
        shown(&c),
        vec![
            "policies/b.toml:1:11: error: channels.c: channel `c` is defined twice: at \
             policies/a.yaml:2:3 and at policies/b.toml:1:11"
        ]
    );
    assert!(c.policy.is_none());
}

#[test]
fn every_problem_in_every_file_is_reported_and_ordered() {
    let c = run(&[
        yaml(
            "a.yaml",
            "flows:\n  f:\n    steps: [{ name: s, channel: x }]\n",
        ),
        yaml(
            "b.yaml",
            "templates:\n  t: { initial: soon }\nchannels:\n  c: {}\n",
        ),
        toml("c.toml", "[templates.u]\nretries = -1\n"),
    ]);
    assert_eq!(
        shown(&c),
        vec![
            "a.yaml:3:33: error: flows.f.steps[0].channel: unknown channel `x`; defined \
             channels: c",
            "b.yaml:2:17: error: templates.t.initial: bad duration `soon`: write a number and \
             a unit (ms, s, m, h, d), e.g. `30s`",
            "b.yaml:4:3: error: channels.c: a channel needs its kind: `http`, `file` or `pool`",
            "c.toml:2:11: error: templates.u.retries: invalid value: integer `-1`, expected a whole number, 0 or more",
        ]
    );
}

#[test]
fn a_file_that_cannot_be_parsed_does_not_cause_unknown_name_errors() {
    let c = run(&[
        yaml(
            "a.yaml",
            "flows:\n  f:\n    steps: [{ name: s, channel: c }]\n",
        ),
        yaml("b.yaml", "channels:\n  c: [\n"),
    ]);
    assert_eq!(c.diagnostics.len(), 1, "{:?}", shown(&c));
    assert_eq!(c.diagnostics[0].file, std::path::Path::new("b.yaml"));
}

#[test]
fn policy_version_and_files_come_from_the_sources() {
    let sources = [yaml("p/a.yaml", &format!("{CHANNEL}{USES}"))];
    let c = run(&sources);
    let p = c.policy.unwrap();
    assert_eq!(p.files, vec![std::path::PathBuf::from("p/a.yaml")]);
    assert_eq!(p.version, policy_version(&sources));
}

// ---------- ${VAR} ----------

#[test]
fn missing_variables_are_errors_at_the_value() {
    assert_eq!(
        diags(&format!(
            "channels:\n  c:\n    http: {{ url: 'https://${{NOPE}}/x' }}\n{USES}"
        )),
        vec!["p.yaml:3:18: error: channels.c.http.url: environment variable `NOPE` is not set"]
    );
}

#[test]
fn placeholders_validate_without_secrets() {
    let text = format!(
        "channels:\n  c:\n    http:\n      url: ${{PARTNER_URL}}\n      \
         headers: {{ Authorization: 'Bearer ${{TOKEN}}' }}\n{USES}"
    );
    let c = compile(&[yaml("p.yaml", &text)], &EnvMode::Placeholders);
    assert!(c.diagnostics.is_empty(), "{:?}", shown(&c));
    let p = c.policy.unwrap();
    let ChannelKind::Http(h) = &p.channels["c"].kind else {
        panic!("http")
    };
    assert_eq!(h.url_display, "${PARTNER_URL}");
}

#[test]
fn expanded_values_never_reach_a_diagnostic() {
    let text = format!(
        "channels:\n  c:\n    http: {{ url: '${{BAD_URL}}', method: '${{ACME_TOKEN}}' }}\n\
         templates:\n  t: {{ initial: '${{ACME_TOKEN}}', backoff: '${{ACME_HOST}}' }}\n{USES}        \
         retry: t\n        classify: '${{ACME_TOKEN}}'\n"
    );
    let all = diags(&text).join("\n");
    for secret in ["not-a-url-secret", "tok-very-secret", "api.acme.example"] {
        assert!(!all.contains(secret), "{secret} in:\n{all}");
    }
    assert!(
        all.contains("url `${BAD_URL}` (after expanding variables) is not an absolute"),
        "{all}"
    );
    assert!(all.contains("unknown method `${ACME_TOKEN}`"), "{all}");
    assert!(all.contains("unknown classifier `${ACME_TOKEN}`"), "{all}");
}

#[test]
fn toml_diagnostics_point_into_toml() {
    let text = "\
[channels.c]
file = { dir = \"spool\" }

[[flows.f.steps]]
name = \"s\"
channel = \"c\"
retry = \"nope\"
";
    assert_eq!(
        shown(&run(&[toml("p.toml", text)])),
        vec![
            "p.toml:7:9: error: flows.f.steps[0].retry: unknown template `nope`; defined \
             templates: aggressive, conservative, standard"
        ]
    );
}

// ---------- flows that read the payload ----------

const TWO_CHANNELS: &str = "\
channels:
  score:
    http: { url: 'http://127.0.0.1:9/score' }
  crm:
    http: { url: 'http://127.0.0.1:9/crm' }
  lookup:
    http: { url: 'http://127.0.0.1:9/lookup', method: GET }
  spool:
    file: { dir: spool }
";

#[test]
fn when_retry_entries_and_bodies_compile_and_note_the_responses_to_keep() {
    let p = ok(&format!(
        "{TWO_CHANNELS}flows:
  leads:
    priority: 7
    steps:
      - name: score
        channel: score
        retry:
          - {{ when: 'payload.amount >= 10000', use: aggressive }}
          - {{ use: conservative }}
      - name: deliver
        channel: crm
        when: 'steps.score.response.json.score > 50'
        body:
          email: '{{{{ payload.email }}}}'
          note: 'lead {{{{ job.key }}}} scored {{{{ steps.score.response.json.score }}}}'
        fallback: [lookup, {{ channel: spool, body: '{{{{ payload }}}}' }}]
"
    ));
    let flow = p.flow("leads").expect("the flow");
    assert_eq!(flow.priority, 7);
    assert_eq!(flow.kept_responses.iter().collect::<Vec<_>>(), ["score"]);
    let score = &flow.steps[0];
    assert_eq!(score.retry.name, "conservative");
    assert_eq!(score.retry_when.len(), 1);
    assert_eq!(score.retry_when[0].template.name, "aggressive");
    let deliver = &flow.steps[1];
    assert!(deliver.when.is_some() && deliver.body.is_some());
    assert!(
        deliver.fallback_bodies[0].is_none(),
        "inherits the step's body"
    );
    assert!(deliver.fallback_bodies[1].is_some(), "a body of its own");
}

#[test]
fn expression_errors_point_at_the_string() {
    let errors = diags(&format!(
        "{TWO_CHANNELS}flows:
  leads:
    priority: 500
    steps:
      - name: score
        channel: score
        when: 'steps.deliver.response.status == 200'
        retry:
          - {{ when: 'payload.amount >=', use: aggressive }}
          - {{ use: nope }}
      - name: deliver
        channel: crm
        when: 'job.owner == 1 or secret > 2'
        body:
          a: '{{{{ steps.score.reponse.status }}}}'
        fallback:
          - {{ channel: spool, body: {{ b: ['{{{{ payload. }}}}'] }} }}
      - name: fetch
        channel: lookup
        body: {{ q: '{{{{ payload.q }}}}' }}
"
    ));
    assert_eq!(
        errors,
        [
            "p.yaml:12:15: error: flows.leads.priority: priority 500 is out of range: write a \
             whole number from -100 to 100 (higher starts first)",
            "p.yaml:16:15: error: flows.leads.steps[0].when: in `steps.deliver.response.status \
             == 200`: `steps.deliver`: no step runs before this one, so no response can be read",
            "p.yaml:18:21: error: flows.leads.steps[0].retry[0].when: `payload.amount >=` is not \
             a valid expression: syntax error: unexpected end of input, expected expression",
            "p.yaml:19:20: error: flows.leads.steps[0].retry[1].use: unknown template `nope`; \
             defined templates: aggressive, conservative, standard",
            "p.yaml:22:15: error: flows.leads.steps[1].when: in `job.owner == 1 or secret > 2`: \
             `job.owner` is not a field of the job; it has: id, key, flow, priority, created_at",
            "p.yaml:22:15: error: flows.leads.steps[1].when: in `job.owner == 1 or secret > 2`: \
             unknown variable `secret`; an expression can read payload, job, steps",
            "p.yaml:24:14: error: flows.leads.steps[1].body.a: in `steps.score.reponse.status`: \
             `steps.score.reponse`: a step shows its `response` (write \
             `steps.score.response.reponse`?)",
            "p.yaml:26:43: error: flows.leads.steps[1].fallback[0].body.b[0]: not a valid \
             template: syntax error: unexpected end of input, expected identifier or integer",
            "p.yaml:29:9: error: flows.leads.steps[2].body: channel `lookup` sends GET \
             requests, which carry no body: remove `body`, or give the channel `method: POST` \
             (or PUT, PATCH)",
        ]
    );
}

#[test]
fn pool_mistakes_point_at_the_member_or_key() {
    let errors = diags(
        "channels:
  a: { file: { dir: a } }
  b: { file: { dir: b } }
  p1: { pool: { members: [a, nope, p2] } }
  p2: { pool: { members: [a, b] }, rate: 5/s }
  p3: { pool: { members: [a, b], strategy: weighted } }
  p4: { pool: { members: { a: 3, b: 0 } } }
  p5: { pool: { members: [a], weighted: { b: 1 } } }
  p6: { pool: { members: [a, b], strategy: healthiest } }
flows:
  f:
    steps:
      - { name: s, channel: p6, circuit_breaker: { failures: 3 } }
",
    );
    assert_eq!(
        errors,
        [
            "p.yaml:4:30: error: channels.p1.pool.members[1]: unknown channel `nope`; defined \
             channels: a, b, p2, p3, p4, p5, p6",
            "p.yaml:4:36: error: channels.p1.pool.members[2]: `p2` is a pool: a pool's members \
             are `http` or `file` channels",
            "p.yaml:5:36: error: channels.p2.rate: `rate` belongs to the pool's member \
             channels: each partner has its own; set it on the members",
            "p.yaml:6:44: error: channels.p3.pool.strategy: `weighted` needs each member's \
             weight: write `members: { a: 3, b: 1 }`",
            "p.yaml:7:37: error: channels.p4.pool.members.b: a weight is at least 1 (leave the \
             member out instead)",
            "p.yaml:8:31: error: channels.p5.pool.weighted: write the members once: `members: \
             [a, b]` (with `strategy`), or `weighted: { a: 3, b: 1 }`",
            "p.yaml:13:33: error: flows.f.steps[0].circuit_breaker: channel `p6` is a pool: \
             each channel has its own breaker; set `circuit_breaker` on the channels",
        ]
    );
}

#[test]
fn parallel_step_mistakes_are_reported() {
    let errors = diags(
        "channels:
  a: { file: { dir: a } }
  b: { file: { dir: b } }
  p: { pool: { members: [a, b] } }
  g: { http: { url: 'http://127.0.0.1:9/g', method: GET } }
  pg: { pool: { members: [a, g] } }
flows:
  f:
    steps:
      - { name: one, channel: a, parallel: [a, b] }
      - { name: two, parallel: [a, p, a] }
      - { name: three, parallel: [a, b], fallback: [b] }
      - { name: four }
      - { name: five, parallel: [a, g], body: { x: 1 } }
      - { name: six, parallel: [b, pg], body: { x: 1 } }
",
    );
    assert_eq!(
        errors,
        [
            "p.yaml:10:34: error: flows.f.steps[0].parallel: a step has `channel` or \
             `parallel`, not both: list every channel under `parallel`",
            "p.yaml:11:39: error: flows.f.steps[1].parallel[2]: `a` is listed twice",
            "p.yaml:12:42: error: flows.f.steps[2].fallback: a parallel step has no \
             fallback: each of its channels retries on its own, and the job goes to the \
             dead-letter queue when one runs out",
            "p.yaml:13:9: error: flows.f.steps[3]: a step needs `channel: NAME` (or \
             `parallel: [A, B]` to deliver to several channels at once)",
            "p.yaml:14:41: error: flows.f.steps[4].body: channel `g` sends GET requests, \
             which carry no body: remove `body`, or give the channel `method: POST` (or \
             PUT, PATCH)",
            "p.yaml:15:41: error: flows.f.steps[5].body: channel `g` (a member of pool \
             `pg`) sends GET requests, which carry no body: remove `body`, or give the \
             channel `method: POST` (or PUT, PATCH)",
        ]
    );
}

// ---------- quick_retry ----------

#[test]
fn quick_retry_compiles_with_its_defaults() {
    let p = ok("\
channels:
  c:
    http: { url: https://a.example }
    quick_retry: { attempts: 2 }
  d:
    http: { url: https://b.example }
    quick_retry: { attempts: 1, delay: 50ms, on: timeout }
flows:
  f:
    steps:
      - name: s
        channel: c
        fallback: [d]
");
    let c = p.channels["c"].quick_retry.clone().unwrap();
    assert_eq!(c.attempts, 2);
    assert_eq!(c.delay, Duration::from_millis(200));
    assert_eq!(c.on, vec![ErrorKind::Connect, ErrorKind::Reset]);
    let d = p.channels["d"].quick_retry.clone().unwrap();
    assert_eq!(
        (d.delay, d.on),
        (Duration::from_millis(50), vec![ErrorKind::Timeout])
    );
}

#[test]
fn bad_quick_retries_are_reported_where_they_are() {
    let text = format!(
        "channels:\n  c:\n    http: {{ url: 'https://a.example' }}\n    \
         quick_retry: {{ attempts: 0, delay: 1m, on: [internal] }}\n  \
         p:\n    pool: {{ members: [c] }}\n    quick_retry: {{ attempts: 1 }}\n{USES}"
    );
    assert_eq!(
        diags(&text),
        vec![
            "p.yaml:4:30: error: channels.c.quick_retry.attempts: attempts must be 1 to 5: the \
             tries after the first within one attempt (use the retry template for more)",
            "p.yaml:4:40: error: channels.c.quick_retry.delay: a quick retry's delay is at most \
             10s (longer waits belong to the retry template, which frees the worker)",
            "p.yaml:4:49: error: channels.c.quick_retry.on[0]: `internal` fails before anything \
             is sent: a quick try would fail the same way; name transport errors (connect, \
             reset, timeout, dns, tls, io, other)",
            "p.yaml:7:5: error: channels.p.quick_retry: `quick_retry` belongs to the pool's \
             member channels: each partner has its own; set it on the members",
        ]
    );
}

// ---------- adapt ----------

#[test]
fn adapt_is_inherited_and_its_mistakes_are_reported_where_they_are() {
    let p = ok(&format!(
        "templates:\n  learned:\n    extends: standard\n    \
         adapt: {{ window: 3d, min_samples: 200, stop_below: 1% }}\n  child:\n    \
         extends: learned\n    retries: 9\n{CHANNEL}{USES}        retry: child\n"
    ));
    let adapt = p.templates["child"].adapt.unwrap();
    assert_eq!(adapt.window, Duration::from_secs(3 * 86_400));
    assert_eq!((adapt.min_samples, adapt.stop_below), (200, 0.01));
    assert_eq!(p.templates["child"].retries, 9);

    let text = format!(
        "templates:\n  t:\n    adapt: {{ window: 90d, min_samples: 3, stop_below: 150% }}\n  \
         u:\n    adapt: {{ stop_below: often }}\n{CHANNEL}{USES}"
    );
    assert_eq!(
        diags(&text),
        vec![
            "p.yaml:3:22: error: templates.t.adapt.window: window must be 1h to 30d (history \
             is counted by the hour and kept 35 days)",
            "p.yaml:3:40: error: templates.t.adapt.min_samples: min_samples must be at least \
             10: fewer attempts say little about a partner",
            "p.yaml:3:55: error: templates.t.adapt.stop_below: bad stop_below `150%`: write a \
             success rate between 0 and 100%, e.g. `1%` or `0.01`",
            "p.yaml:5:26: error: templates.u.adapt.stop_below: bad stop_below `often`: write \
             a success rate between 0 and 100%, e.g. `1%` or `0.01`",
        ]
    );
}

// ---------- slow_down ----------

#[test]
fn slow_down_compiles_and_its_mistakes_are_reported_where_they_are() {
    let p = ok("\
channels:
  c:
    http: { url: https://a.example }
    slow_down: { errors: 100, per: 3m, delay: 10s..60s }
flows:
  f:
    steps:
      - name: s
        channel: c
");
    let slow = p.channels["c"].slow_down.clone().unwrap();
    assert_eq!((slow.errors, slow.per), (100, secs(180)));
    assert_eq!(slow.delay, (secs(10), secs(60)));
    assert_eq!(slow.max_delays, 5);
    assert_eq!(slow.delay_for(0.5), secs(35));

    let text = format!(
        "channels:\n  c:\n    http: {{ url: 'https://a.example' }}\n    \
         slow_down: {{ errors: 0, per: 2h, delay: 60s..10s, max_delays: 0 }}\n  \
         d:\n    http: {{ url: 'https://b.example' }}\n    \
         slow_down: {{ errors: 1, per: soon, delay: 1s }}\n{USES}"
    );
    assert_eq!(
        diags(&text),
        vec![
            "p.yaml:4:26: error: channels.c.slow_down.errors: errors must be at least 1: the \
             failed attempts within `per` past which the channel slows down",
            "p.yaml:4:34: error: channels.c.slow_down.per: per must be 1s to 1h",
            "p.yaml:4:45: error: channels.c.slow_down.delay: the delay range runs from the \
             shorter to the longer, e.g. `10s..60s`",
            "p.yaml:4:67: error: channels.c.slow_down.max_delays: max_delays must be at least \
             1 (leave `slow_down` out to never delay)",
            "p.yaml:7:34: error: channels.d.slow_down.per: bad duration `soon`: \
             write a number and a unit (ms, s, m, h, d), e.g. `30s`",
        ]
    );
}

#[test]
fn a_body_keeps_the_key_order_of_the_file_in_yaml_and_toml() {
    let yaml_text = "\
channels:
  crm: { http: { url: 'http://127.0.0.1:9/crm' } }
flows:
  leads:
    steps:
      - name: deliver
        channel: crm
        body: { zip: '{{ payload.zip }}', email: x, nested: { z: 1, a: 2 }, b: [3] }
";
    let toml_text = "\
[channels.crm.http]
url = 'http://127.0.0.1:9/crm'

[[flows.leads.steps]]
name = 'deliver'
channel = 'crm'
body = { zip = '{{ payload.zip }}', email = 'x', nested = { z = 1, a = 2 }, b = [3] }
";
    for source in [yaml("p.yaml", yaml_text), toml("p.toml", toml_text)] {
        let c = run(&[source]);
        assert!(!c.has_errors(), "{:#?}", shown(&c));
        let policy = c.policy.expect("a policy");
        let step = &policy.flow("leads").expect("the flow").steps[0];
        let scope = crate::expr::Scope::new(
            r#"{"zip": "75001"}"#,
            crate::expr::JobFacts {
                id: "j",
                key: "k",
                flow: "leads",
                priority: 0,
                created_at: jiff::Timestamp::UNIX_EPOCH,
            },
            &crate::expr::Responses::default(),
        );
        let body = step.body.as_ref().expect("a body").render(&scope).unwrap();
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body.to_string(),
            r#"{"zip":"75001","email":"x","nested":{"z":1,"a":2},"b":[3]}"#
        );
    }
}
