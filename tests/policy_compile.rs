//! The product's policy example, written once as YAML and once as TOML,
//! loaded from disk and compiled: both must give the same model. Also: a
//! name defined in two files, and the parts of the example this engine
//! version does not support yet.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use steadfast::compile::{load_policy, Compilation};
use steadfast::model::{ChannelKind, CompiledPolicy};
use steadfast::policy::{EnvMode, MapEnv};

/// PRODUCT.md's example without `calendars`, `hours` (added back by the
/// test of unsupported parts), `circuit_breaker` and the `refresh_auth` rule
/// (not supported yet).
const EXAMPLE_YAML: &str = r#"templates:                    # built-ins: conservative, standard, aggressive
  partner-slow:
    extends: standard         # optional: start from another template
    retries: 6                # retries after the first attempt
    backoff: exponential      # exponential | fixed | schedule
    initial: 2s
    multiplier: 2.0
    max_interval: 60s
    total_timeout: 30m        # no new attempt after this since the first one
    jitter: 20%               # ±20%; also "full", "none"
  nightly:
    backoff: schedule
    schedule: [1m, 5m, 1h, 5h, 12h]

classifiers:                  # first matching rule wins
  acme:
    rules:
      - match: { status: 200, body: '(?i)duplicate lead' }
        outcome: success      # an idempotency hit is a success
      - match: { status: 200, body: '"status"\s*:\s*"busy"' }
        outcome: retry
      - match: { status: 429 }
        outcome: retry
        retry_after: honor    # obey the Retry-After header
      - match: { status: 4xx }
        outcome: fail         # permanent: straight to the dead-letter queue
      - match: { error: [timeout, connect, dns, reset] }
        outcome: retry
      - match: { error_message: '(?i)certificate' }
        outcome: fail
    default: retry            # unknown errors: retry (fail-open) or fail

channels:
  acme-api:
    http:
      url: https://api.acme.example/leads
      method: POST
      timeout: 10s
      headers: { Authorization: "Bearer ${ACME_TOKEN}" }
  acme-backup:
    http: { url: https://backup.acme.example/leads }
  acme-spool:
    file: { dir: spool/acme }   # one JSON file per job, written atomically
  crm-webhook:
    http: { url: https://crm.example/hooks/lead }
  ops-webhook:
    http: { url: https://ops.example/alerts }

flows:
  acme-leads:
    steps:
      - name: deliver
        channel: acme-api
        retry: aggressive
        classify: acme
        fallback: [acme-backup, acme-spool]    # in order, once retries run out
      - name: confirm
        channel: crm-webhook
        retry: standard
    on_dead:
      notify: ops-webhook       # a channel that receives the dead job
"#;

const EXAMPLE_TOML: &str = r#"[templates.partner-slow]
extends = "standard"
retries = 6
backoff = "exponential"
initial = "2s"
multiplier = 2.0
max_interval = "60s"
total_timeout = "30m"
jitter = "20%"

[templates.nightly]
backoff = "schedule"
schedule = ["1m", "5m", "1h", "5h", "12h"]

[classifiers.acme]
default = "retry"

[[classifiers.acme.rules]]
match = { status = 200, body = '(?i)duplicate lead' }
outcome = "success"

[[classifiers.acme.rules]]
match = { status = 200, body = '"status"\s*:\s*"busy"' }
outcome = "retry"

[[classifiers.acme.rules]]
match = { status = 429 }
outcome = "retry"
retry_after = "honor"

[[classifiers.acme.rules]]
match = { status = "4xx" }
outcome = "fail"

[[classifiers.acme.rules]]
match = { error = ["timeout", "connect", "dns", "reset"] }
outcome = "retry"

[[classifiers.acme.rules]]
match = { error_message = '(?i)certificate' }
outcome = "fail"

[channels.acme-api.http]
url = "https://api.acme.example/leads"
method = "POST"
timeout = "10s"
headers = { Authorization = "Bearer ${ACME_TOKEN}" }

[channels.acme-backup]
http = { url = "https://backup.acme.example/leads" }

[channels.acme-spool]
file = { dir = "spool/acme" }

[channels.crm-webhook]
http = { url = "https://crm.example/hooks/lead" }

[channels.ops-webhook]
http = { url = "https://ops.example/alerts" }

[[flows.acme-leads.steps]]
name = "deliver"
channel = "acme-api"
retry = "aggressive"
classify = "acme"
fallback = ["acme-backup", "acme-spool"]

[[flows.acme-leads.steps]]
name = "confirm"
channel = "crm-webhook"
retry = "standard"

[flows.acme-leads.on_dead]
notify = "ops-webhook"
"#;

fn env() -> EnvMode {
    EnvMode::from_source(MapEnv::new().with("ACME_TOKEN", "t0ken-xyz"))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).expect("write policy file");
    path
}

fn shown(c: &Compilation) -> Vec<String> {
    c.diagnostics.iter().map(ToString::to_string).collect()
}

fn durations(ds: &[std::time::Duration]) -> Vec<u128> {
    ds.iter().map(std::time::Duration::as_millis).collect()
}

/// Everything the engine reads from a compiled policy, as comparable JSON
/// (the model holds regexes and secrets, which do not compare directly).
fn model(p: &CompiledPolicy) -> Value {
    let templates: Value = p
        .templates
        .values()
        .map(|t| {
            let backoff = match &t.backoff {
                steadfast::model::Backoff::Exponential {
                    initial,
                    multiplier,
                } => json!({"exponential": [initial.as_millis() as u64, multiplier]}),
                steadfast::model::Backoff::Fixed { interval } => {
                    json!({"fixed": interval.as_millis() as u64})
                }
                steadfast::model::Backoff::Schedule { delays } => {
                    json!({"schedule": durations(delays)})
                }
            };
            (
                t.name.clone(),
                json!({
                    "retries": t.retries,
                    "backoff": backoff,
                    "max_interval": t.max_interval.map(|d| d.as_millis() as u64),
                    "total_timeout": t.total_timeout.map(|d| d.as_millis() as u64),
                    "jitter": format!("{:?}", t.jitter),
                    "retry_after_cap": t.retry_after_cap.as_millis() as u64,
                }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    let classifiers: Value = p
        .classifiers
        .values()
        .map(|c| {
            let rules: Vec<Value> = c
                .rules
                .iter()
                .map(|r| {
                    json!({
                        "label": r.label,
                        "status": r.matcher.status.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "body": r.matcher.body.as_ref().map(|re| re.as_str().to_string()),
                        "error": r.matcher.error.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "error_message": r.matcher.error_message.as_ref().map(|re| re.as_str().to_string()),
                        "outcome": r.outcome.as_str(),
                        "retry_after": format!("{:?}", r.retry_after),
                    })
                })
                .collect();
            (
                c.name.clone(),
                json!({"default": c.default.as_str(), "rules": rules}),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    let channels: Value = p
        .channels
        .values()
        .map(|c| {
            let kind = match &c.kind {
                ChannelKind::Http(h) => json!({"http": {
                    "url": h.url.expose(),
                    "url_display": h.url_display,
                    "method": h.method,
                    "headers": h.headers.iter().map(|(k, v)| json!([k, v.expose()])).collect::<Vec<_>>(),
                    "timeout": h.timeout.as_millis() as u64,
                }}),
                ChannelKind::File(f) => json!({"file": f.dir}),
                ChannelKind::Pool(pool) => json!({"pool": {
                    "strategy": pool.strategy.as_str(),
                    "members": pool.members.iter().map(|m| json!([m.name, m.weight])).collect::<Vec<_>>(),
                }}),
            };
            (c.name.clone(), kind)
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    let flows: Value = p
        .flows
        .values()
        .map(|f| {
            let steps: Vec<Value> = f
                .steps
                .iter()
                .map(|s| {
                    json!({
                        "name": s.name,
                        "channel": s.channel,
                        "fallback": s.fallback,
                        "retry": s.retry.name,
                        "classifier": s.classifier.as_ref().map(|c| c.name.clone()),
                    })
                })
                .collect();
            (
                f.name.clone(),
                json!({"steps": steps, "on_dead": f.on_dead.as_ref().map(|d| d.notify.clone())}),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    json!({
        "templates": templates,
        "classifiers": classifiers,
        "channels": channels,
        "flows": flows,
    })
}

#[test]
fn the_example_compiles_to_the_same_model_from_yaml_and_from_toml() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = write(dir.path(), "acme.yaml", EXAMPLE_YAML);
    let toml = write(dir.path(), "acme.toml", EXAMPLE_TOML);

    let from_yaml = load_policy(std::slice::from_ref(&yaml), &env());
    let from_toml = load_policy(std::slice::from_ref(&toml), &env());
    // In file order: partner-slow first.
    let warnings = |file: &Path, nightly: &str, slow: &str| {
        vec![
            format!(
                "{}:{slow}: warning: templates.partner-slow: template `partner-slow` is not used by any step",
                file.display()
            ),
            format!(
                "{}:{nightly}: warning: templates.nightly: template `nightly` is not used by any step",
                file.display()
            ),
        ]
    };
    assert_eq!(shown(&from_yaml), warnings(&yaml, "11:3", "2:3"));
    assert_eq!(shown(&from_toml), warnings(&toml, "11:12", "1:12"));

    let yaml_policy = from_yaml.policy.expect("the YAML example compiles");
    let toml_policy = from_toml.policy.expect("the TOML example compiles");
    assert_eq!(model(&yaml_policy), model(&toml_policy));
    assert_eq!(yaml_policy.files, vec![yaml]);
    assert_ne!(yaml_policy.version, toml_policy.version);

    // Spot checks against the contract.
    let m = model(&yaml_policy);
    assert_eq!(
        m["templates"]["partner-slow"],
        json!({
            "retries": 6,
            "backoff": {"exponential": [2000, 2.0]},
            "max_interval": 60000,
            "total_timeout": 1_800_000,
            "jitter": "Proportional(0.2)",
            "retry_after_cap": 60000,
        })
    );
    assert_eq!(
        m["templates"]["nightly"]["backoff"],
        json!({"schedule": [60000, 300000, 3_600_000, 18_000_000, 43_200_000]})
    );
    assert_eq!(m["templates"]["nightly"]["retries"], 5);
    let labels: Vec<&str> = yaml_policy.classifiers["acme"]
        .rules
        .iter()
        .map(|r| r.label.as_str())
        .collect();
    assert_eq!(
        labels,
        vec!["acme[0]", "acme[1]", "acme[2]", "acme[3]", "acme[4]", "acme[5]"]
    );
    assert_eq!(
        m["channels"]["acme-api"]["http"]["headers"],
        json!([["Authorization", "Bearer t0ken-xyz"]])
    );
    assert_eq!(m["channels"]["acme-backup"]["http"]["method"], "POST");
    assert_eq!(m["channels"]["acme-backup"]["http"]["timeout"], 30000);
    assert_eq!(
        m["flows"]["acme-leads"],
        json!({
            "steps": [
                {"name": "deliver", "channel": "acme-api", "fallback": ["acme-backup", "acme-spool"],
                 "retry": "aggressive", "classifier": "acme"},
                {"name": "confirm", "channel": "crm-webhook", "fallback": [],
                 "retry": "standard", "classifier": null},
            ],
            "on_dead": "ops-webhook",
        })
    );
}

#[test]
fn a_name_defined_in_two_files_names_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "a.yaml", EXAMPLE_YAML);
    write(
        dir.path(),
        "b.toml",
        "[channels.acme-spool]\nfile = { dir = \"elsewhere\" }\n",
    );
    // A policy test file beside them is not a policy file.
    write(dir.path(), "a.test.yaml", "not: [valid policy\n");
    let c = load_policy(&[dir.path().to_path_buf()], &env());
    let errors: Vec<String> = c.errors().map(ToString::to_string).collect();
    let a = dir.path().join("a.yaml");
    let b = dir.path().join("b.toml");
    assert_eq!(
        errors,
        vec![format!(
            "{b}:1:11: error: channels.acme-spool: channel `acme-spool` is defined twice: \
             at {a}:42:3 and at {b}:1:11",
            a = a.display(),
            b = b.display()
        )]
    );
    assert!(c.policy.is_none());
}

#[test]
fn the_example_with_every_part_in_use_compiles() {
    let full = EXAMPLE_YAML
        .replace(
            "      - match: { status: 4xx }",
            "      - match: { status: 401 }\n        outcome: refresh_auth\n      - match: { status: 4xx }",
        )
        .replace(
            "        fallback: [acme-backup, acme-spool]",
            "        hours:\n          calendar: acme-office\n          off_hours: { retry: conservative }\n          \
             maintenance: suspend\n        circuit_breaker: { failures: 5, window: 60s, cooldown: 30s }\n        \
             fallback: [acme-backup, acme-spool]",
        )
        + "calendars:\n  acme-office:\n    timezone: America/New_York\n    \
           hours: { mon-fri: \"09:00-18:00\", sat: \"10:00-14:00\" }\n    \
           holidays: [2026-12-25, 2027-01-01]\n    maintenance:\n      - weekly: \"sun 02:00-04:00\"\n      \
           - { from: 2026-12-01T00:00:00Z, to: 2026-12-01T06:00:00Z }\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "acme.yaml", &full);
    let c = load_policy(&[path], &env());
    let errors: Vec<String> = c
        .errors()
        .map(|d| format!("{}:{}: {}: {}", d.line, d.column, d.path, d.message))
        .collect();
    assert_eq!(errors, Vec::<String>::new());
}

#[test]
fn no_env_validates_the_example_without_its_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "acme.yaml", EXAMPLE_YAML);
    let c = load_policy(std::slice::from_ref(&path), &EnvMode::Placeholders);
    assert!(!c.has_errors(), "{:?}", shown(&c));
    // Without the variable and without placeholders: an error naming it,
    // at the header value.
    let c = load_policy(
        std::slice::from_ref(&path),
        &EnvMode::from_source(MapEnv::new()),
    );
    let errors: Vec<String> = c.errors().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        vec![format!(
            "{}:39:33: error: channels.acme-api.http.headers.Authorization: environment \
             variable `ACME_TOKEN` is not set",
            path.display()
        )]
    );
}

/// `sign`: a secret that is not `whsec_` base64 is named at its own
/// position in the list, never quoted; a header the signature sets is
/// refused where it is written; a good rotation list compiles.
#[test]
fn signing_secrets_are_checked_where_they_are_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "s.yaml",
        "channels:\n\
         \x20 partner:\n\
         \x20   http:\n\
         \x20     url: https://partner.example/hook\n\
         \x20     headers: { webhook-signature: x }\n\
         \x20     sign:\n\
         \x20       secret:\n\
         \x20         - whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n\
         \x20         - \"${BAD_SECRET}\"\n\
         flows:\n\
         \x20 f: { steps: [ { name: s, channel: partner, retry: standard } ] }\n",
    );
    let env = EnvMode::from_source(MapEnv::new().with("BAD_SECRET", "hunter2 not base64"));
    let c = load_policy(&[dir.path().to_path_buf()], &env);
    let errors: Vec<String> = c.errors().map(ToString::to_string).collect();
    let p = path.display();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with(&format!(
            "{p}:5:18: error: channels.partner.http.headers.webhook-signature: header \
             `webhook-signature` is set by `sign`"
        )),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with(&format!(
            "{p}:9:13: error: channels.partner.http.sign.secret[1]: a signing secret is \
             `whsec_` followed by the key in base64"
        )),
        "{errors:?}"
    );
    assert!(!errors.iter().any(|e| e.contains("hunter2")), "{errors:?}");

    let good = fs::read_to_string(&path)
        .unwrap()
        .replace("      headers: { webhook-signature: x }\n", "");
    fs::write(&path, good).unwrap();
    let env = EnvMode::from_source(MapEnv::new().with(
        "BAD_SECRET",
        "whsec_c2VjcmV0LWtleS1mb3ItdGhlLXRlc3RzLW9ubHk=",
    ));
    let c = load_policy(&[dir.path().to_path_buf()], &env);
    assert!(!c.has_errors(), "{:?}", shown(&c));
}

/// `auth.oauth2` beside a channel's own `refresh_auth` is refused where
/// `refresh_auth` is written; a token URL that is no URL is named.
#[test]
fn oauth2_is_one_way_to_get_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "o.yaml",
        "channels:\n\
         \x20 partner:\n\
         \x20   http:\n\
         \x20     url: https://partner.example/hook\n\
         \x20     auth: { oauth2: { token_url: nope, client_id: a, client_secret: b } }\n\
         \x20   refresh_auth: { url: https://auth.example/t, token: access_token }\n\
         flows:\n\
         \x20 f: { steps: [ { name: s, channel: partner, retry: standard } ] }\n",
    );
    let c = load_policy(&[dir.path().to_path_buf()], &env());
    let errors: Vec<String> = c.errors().map(ToString::to_string).collect();
    let p = path.display();
    assert_eq!(
        errors,
        [format!(
            "{p}:5:36: error: channels.partner.http.auth.oauth2.token_url: token_url `nope` is \
             not an absolute http(s) URL, e.g. `https://auth.example.com/oauth/token`"
        )]
    );
    let fixed = fs::read_to_string(&path)
        .unwrap()
        .replace("token_url: nope", "token_url: https://auth.example/t");
    fs::write(&path, fixed).unwrap();
    let c = load_policy(&[dir.path().to_path_buf()], &env());
    let errors: Vec<String> = c.errors().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [format!(
            "{p}:6:5: error: channels.partner.refresh_auth: this channel gets its token from \
             `http.auth.oauth2` already: remove `refresh_auth`, or `auth`"
        )]
    );
}
