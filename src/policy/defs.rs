//! The policy file shape as users write it: serde `*Def` types for the
//! top-level keys `templates`, `classifiers`, `calendars`, `channels` and
//! `flows`.
//!
//! Values stay close to the text: durations, jitter and names are strings
//! here and are checked by [`crate::compile`], so that every problem is
//! reported at once with its position. Every type denies unknown fields, so a
//! typo is an error, never a silently ignored key.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IntoDeserializer, Visitor};

/// The top-level keys a policy file may hold. `tests` is reserved for policy
/// test cases and skipped by the loader.
pub const TOP_LEVEL_KEYS: [&str; 6] = [
    "templates",
    "classifiers",
    "calendars",
    "channels",
    "flows",
    "tests",
];

/// A scalar kept as its text: `10s`, `20%`, a header value. A number is kept
/// as its digits so that compile can say what to write instead (`2` is not
/// a duration; `2s` is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl Text {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;

        impl Visitor<'_> for TextVisitor {
            type Value = Text;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("text")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }

        deserializer.deserialize_any(TextVisitor)
    }
}

/// One value or a list of them: `status: 503` or `status: [502, 503]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrManyVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> OneOrManyVisitor<T> {
            fn one<E: de::Error>(d: impl Deserializer<'de, Error = E>) -> Result<OneOrMany<T>, E> {
                T::deserialize(d).map(|one| OneOrMany(vec![one]))
            }
        }

        impl<'de, T: Deserialize<'de>> Visitor<'de> for OneOrManyVisitor<T> {
            type Value = OneOrMany<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value or a list of values")
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(OneOrMany)
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Self::one(de::value::MapAccessDeserializer::new(map))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Self::one(v.into_deserializer())
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Self::one(v.into_deserializer())
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Self::one(v.into_deserializer())
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Self::one(v.into_deserializer())
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Self::one(v.into_deserializer())
            }
        }

        deserializer.deserialize_any(OneOrManyVisitor(PhantomData))
    }
}

/// `templates.NAME`. Every key is optional: defaults and `extends` fill in.
#[derive(Debug, Clone, PartialEq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct TemplateDef {
    /// Start from another template (user-defined or built-in); keys written
    /// here win, key by key.
    pub extends: Option<String>,
    /// Retries after the first attempt.
    pub retries: Option<u32>,
    /// How delays grow: `exponential` (default), `fixed` or `schedule`.
    pub backoff: Option<BackoffDef>,
    /// Exponential: the first delay; fixed: every delay.
    #[schemars(with = "Option<super::schema::DurationText>")]
    pub initial: Option<Text>,
    /// Exponential: each delay is the previous one times this; 2.0 unless
    /// written.
    pub multiplier: Option<f64>,
    /// No delay longer than this, jitter included; 60s for exponential.
    #[schemars(with = "Option<super::schema::DurationText>")]
    pub max_interval: Option<Text>,
    /// No new attempt this long after the first one of a series.
    #[schemars(with = "Option<super::schema::DurationText>")]
    pub total_timeout: Option<Text>,
    /// `20%`, `full` or `none`. A bare number (`0.2`, `20`) is refused as
    /// ambiguous.
    #[schemars(with = "Option<super::schema::JitterText>")]
    pub jitter: Option<Text>,
    /// The delays of `backoff: schedule`, in order.
    #[schemars(with = "Option<Vec<super::schema::DurationText>>")]
    pub schedule: Option<Vec<Text>>,
    /// Upper bound of an honoured `Retry-After`: `max_interval` unless
    /// written, else 1h.
    #[schemars(with = "Option<super::schema::DurationText>")]
    pub retry_after_cap: Option<Text>,
    /// Stop retrying past the attempt number after which this channel's
    /// success rate fell below `stop_below`, by its recent history.
    pub adapt: Option<AdaptDef>,
}

/// `adapt: { window: 7d, min_samples: 200, stop_below: 1% }`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct AdaptDef {
    /// How much history counts: `7d` unless written (at most `30d`).
    #[schemars(with = "Option<super::schema::DurationText>")]
    pub window: Option<Text>,
    /// Attempts needed at an attempt number (and after it) before history
    /// may cut there; 100 unless written.
    pub min_samples: Option<u64>,
    /// The success rate below which retrying stops: `1%` or `0.01`.
    pub stop_below: Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum BackoffDef {
    Exponential,
    Fixed,
    Schedule,
}

/// `classifiers.NAME`: rules tried in order, first match wins.
#[derive(Debug, Clone, PartialEq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct ClassifierDef {
    #[serde(default)]
    pub rules: Vec<RuleDef>,
    /// What neither the rules nor the built-in ones classify; retry unless
    /// set.
    pub default: Option<DefaultOutcomeDef>,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct RuleDef {
    /// Absent or empty: the rule matches everything.
    #[serde(rename = "match", default)]
    pub matcher: MatchDef,
    pub outcome: OutcomeDef,
    pub retry_after: Option<RetryAfterDef>,
    /// How attempts name this rule; `classifier[index]` if absent.
    pub name: Option<String>,
}

/// Conditions of a rule; all that are written must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct MatchDef {
    pub status: Option<OneOrMany<StatusDef>>,
    /// A regex searched in the response body.
    pub body: Option<String>,
    pub error: Option<OneOrMany<ErrorKindDef>>,
    /// A regex searched in a transport error's message.
    pub error_message: Option<String>,
}

/// `503`, `"503"` or a class `4xx`; checked by compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusDef {
    Code(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for StatusDef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StatusVisitor;

        impl Visitor<'_> for StatusVisitor {
            type Value = StatusDef;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status code like 503 or a class like `4xx`")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusDef, E> {
                Ok(StatusDef::Code(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusDef, E> {
                Ok(StatusDef::Code(i64::try_from(v).unwrap_or(i64::MAX)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusDef, E> {
                Ok(StatusDef::Text(v.to_string()))
            }
        }

        deserializer.deserialize_any(StatusVisitor)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum ErrorKindDef {
    Timeout,
    Connect,
    Dns,
    Reset,
    Tls,
    Io,
    Internal,
    Mapping,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum OutcomeDef {
    Success,
    Retry,
    Fail,
    /// Run the channel's `refresh_auth`, then send once more.
    RefreshAuth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum DefaultOutcomeDef {
    Retry,
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum RetryAfterDef {
    Honor,
    Ignore,
}

/// `calendars.NAME`: checked and built by [`crate::calendar`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct CalendarDef {
    pub timezone: String,
    /// Day or day range (`mon-fri`) → `HH:MM-HH:MM`, several joined by
    /// commas or given as a list.
    #[serde(default)]
    pub hours: BTreeMap<String, OneOrMany<String>>,
    /// Dates (`2026-12-25`); TOML dates arrive as the same text.
    #[serde(default)]
    pub holidays: Vec<String>,
    #[serde(default)]
    pub maintenance: Vec<MaintenanceDef>,
}

/// A maintenance window: `weekly: "sun 02:00-04:00"` or `{from, to}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct MaintenanceDef {
    pub weekly: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// `channels.NAME`: exactly one kind (`http`, `file` or `pool`).
#[derive(Debug, Clone, PartialEq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct ChannelDef {
    pub http: Option<HttpDef>,
    pub file: Option<FileDef>,
    /// Each attempt goes to one of the member channels.
    pub pool: Option<PoolDef>,
    /// The channel's breaker: stops sending while the partner is down.
    pub circuit_breaker: Option<BreakerDef>,
    /// The most attempts started per period: `50/s`, `600/m`, `5/10s`.
    pub rate: Option<Text>,
    /// The most attempts in flight on this channel at once.
    pub concurrency: Option<u32>,
    /// How an `http` channel gets a fresh token when a classifier answers
    /// `refresh_auth`.
    pub refresh_auth: Option<RefreshAuthDef>,
    /// Tries again at once, within the same attempt, when sending fails
    /// with one of the named error kinds: a dropped connection does not
    /// cost a durable retry.
    pub quick_retry: Option<QuickRetryDef>,
    /// Past `errors` failed attempts within `per`, new attempts on the
    /// channel wait a random `delay` (suspended, reason `slowed`, burning
    /// nothing), each job at most `max_delays` times.
    pub slow_down: Option<SlowDownDef>,
}

/// `slow_down: { errors: 100, per: 3m, delay: 10s..60s, max_delays: 5 }`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct SlowDownDef {
    /// Failed attempts within `per` past which the channel slows down.
    pub errors: u32,
    /// The sliding interval errors are counted over (1s to 1h).
    pub per: Text,
    /// How long a new attempt waits: `10s..60s` (a random time between) or
    /// one duration.
    pub delay: Text,
    /// The most times one job is delayed so; 5 unless written.
    pub max_delays: Option<u32>,
}

/// `quick_retry: { attempts: 2, delay: 200ms, on: [connect, reset] }`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct QuickRetryDef {
    /// Tries after the first, within the attempt (1 to 5).
    pub attempts: u32,
    /// The pause before each quick try (at most 10s); 200ms unless written.
    pub delay: Option<Text>,
    /// The error kinds that get a quick try; `[connect, reset]` unless
    /// written. Answers (any status) never do: the classifier judges them.
    pub on: Option<OneOrMany<ErrorKindDef>>,
}

/// `pool`: member channels and how each attempt chooses one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct PoolDef {
    /// The member channels, in order (`[a, b]`), or with their weights
    /// (`{ a: 3, b: 1 }`, strategy `weighted`).
    pub members: Option<PoolMembersDef>,
    /// `round_robin` (default), `weighted` or `healthiest` (the best recent
    /// success rate, then the lowest latency). Members whose breaker is
    /// open are skipped.
    pub strategy: Option<PoolStrategyDef>,
    /// Members and their weights, for `weighted`: `{ a: 3, b: 1 }`.
    pub weighted: Option<BTreeMap<String, u32>>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged)]
#[derive(schemars::JsonSchema)]
pub enum PoolMembersDef {
    List(Vec<String>),
    Weights(BTreeMap<String, u32>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum PoolStrategyDef {
    RoundRobin,
    Weighted,
    Healthiest,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct HttpDef {
    pub url: String,
    /// POST unless written.
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, Text>,
    /// 30s unless written.
    #[schemars(with = "Option<super::schema::DurationText>")]
    pub timeout: Option<Text>,
    /// Standard Webhooks signatures on every request.
    pub sign: Option<SignDef>,
    /// How the channel authenticates to the partner.
    pub auth: Option<AuthDef>,
    /// A client certificate (mutual TLS) and the partner's CA.
    pub tls: Option<TlsDef>,
}

/// `tls:` inside an `http` block: PEM files, paths relative to the
/// directory the engine runs in (as a `file` channel's `dir`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct TlsDef {
    /// The client certificate (chain) sent to the partner; with `client_key`.
    pub client_cert: Option<String>,
    /// Its private key.
    pub client_key: Option<String>,
    /// CA certificates trusted for the partner's certificate, beside the
    /// usual roots.
    pub ca: Option<String>,
}

/// `auth:` inside an `http` block.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct AuthDef {
    /// OAuth 2.0 client credentials: a token fetched before the first
    /// request, kept until it expires, fetched again on a 401.
    pub oauth2: Option<OAuth2Def>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct OAuth2Def {
    pub token_url: String,
    pub client_id: Text,
    pub client_secret: Text,
    /// Space-separated scopes, sent when written.
    pub scope: Option<Text>,
    /// 10s unless written.
    #[schemars(with = "Option<super::schema::DurationText>")]
    pub timeout: Option<Text>,
}

/// `sign: { secret: "${WEBHOOK_SECRET}" }`: `webhook-id`,
/// `webhook-timestamp` and `webhook-signature` on every request. During a
/// rotation, a list of secrets (new first): one signature each.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct SignDef {
    /// `whsec_` then the key in base64, or a list of them.
    pub secret: OneOrMany<Text>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct FileDef {
    pub dir: String,
}

/// A circuit breaker: `{ failures: 5, window: 60s, cooldown: 30s }` or
/// `{ failure_ratio: 50%, window: 60s, min_requests: 20, cooldown: 30s }`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct BreakerDef {
    /// Opens after this many failures in a row (all within `window`, when
    /// written).
    pub failures: Option<u32>,
    /// Opens when this share of the attempts within `window` failed: `50%`
    /// or `0.5`.
    pub failure_ratio: Option<Text>,
    /// `failure_ratio` is judged only over at least this many attempts.
    pub min_requests: Option<u32>,
    pub window: Option<Text>,
    /// How long the breaker stays open before a probe; 30s unless written.
    pub cooldown: Option<Text>,
    /// Probes let through when half-open; all must succeed to close. 1
    /// unless written.
    pub half_open_probes: Option<u32>,
}

/// `channels.NAME.refresh_auth`: a request whose JSON answer carries a
/// fresh token.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct RefreshAuthDef {
    pub url: String,
    /// POST unless written.
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, Text>,
    /// Sent as JSON when a mapping or list, as written when a string.
    pub body: Option<serde_json::Value>,
    /// Sent form-encoded (`application/x-www-form-urlencoded`).
    pub form: Option<BTreeMap<String, Text>>,
    /// Where the token is in the JSON answer: `access_token`,
    /// `$.data.token`, `tokens[0].value`.
    pub token: String,
    /// The header the token is sent in; `Authorization` unless written.
    pub header: Option<String>,
    /// Written before the token, with a space: `Bearer` unless written;
    /// `""` sends the token alone.
    pub scheme: Option<String>,
    /// 10s unless written.
    pub timeout: Option<Text>,
}

/// `flows.NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct FlowDef {
    /// The priority of the flow's jobs when a submission gives none
    /// (-100..100, default 0): within a flow, due jobs of higher priority
    /// start first.
    pub priority: Option<i64>,
    #[serde(default)]
    pub steps: Vec<StepDef>,
    pub on_dead: Option<OnDeadDef>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct StepDef {
    pub name: String,
    /// The channel the step delivers to (or `parallel`).
    #[serde(default)]
    pub channel: String,
    /// Channels the step delivers to at once, each retried on its own: the
    /// step succeeds when every one has (instead of `channel`).
    pub parallel: Option<Vec<String>>,
    /// A condition (MiniJinja expression over `payload`, `job` and
    /// `steps.NAME.response`): the step runs only when it holds, and is
    /// skipped otherwise.
    pub when: Option<String>,
    /// A template name (`standard` unless written), or a list of
    /// `{ when, use }` entries: the first whose `when` holds (an entry
    /// without `when` always does) names the template.
    pub retry: Option<RetryDef>,
    /// The request body, built for each attempt: a JSON shape whose strings
    /// may hold `{{ expressions }}`; one expression alone keeps its JSON
    /// type. The submitted payload unchanged unless written.
    pub body: Option<serde_json::Value>,
    /// A classifier name; the built-in rules only, unless written.
    pub classify: Option<String>,
    /// Channels tried in order once the primary's retries run out: a name,
    /// or `{ channel, body }` with a body of its own (else the step's).
    pub fallback: Option<OneOrMany<FallbackDef>>,
    /// Business hours and maintenance windows.
    pub hours: Option<StepHoursDef>,
    /// Configures the breaker of the step's channel (a breaker belongs to
    /// its channel).
    pub circuit_breaker: Option<BreakerDef>,
}

/// A step's `retry`: a template name or a list of `{ when, use }`.
#[derive(Debug, Clone, PartialEq, Eq, schemars::JsonSchema)]
#[serde(untagged)]
pub enum RetryDef {
    Template(String),
    Entries(Vec<RetryEntryDef>),
}

/// One entry of a step's `retry` list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct RetryEntryDef {
    /// A condition; an entry without one always applies.
    pub when: Option<String>,
    /// The template to retry with.
    #[serde(rename = "use")]
    pub template: String,
}

impl<'de> Deserialize<'de> for RetryDef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RetryVisitor;

        impl<'de> Visitor<'de> for RetryVisitor {
            type Value = RetryDef;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a template name, or a list of `{ when, use }` entries")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RetryDef, E> {
                Ok(RetryDef::Template(v.to_string()))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<RetryDef, A::Error> {
                Vec::<RetryEntryDef>::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(RetryDef::Entries)
            }
        }

        deserializer.deserialize_any(RetryVisitor)
    }
}

/// A fallback: a channel's name, or `{ channel, body }`.
#[derive(Debug, Clone, PartialEq, Eq, schemars::JsonSchema)]
#[serde(untagged)]
pub enum FallbackDef {
    Channel(String),
    WithBody(FallbackEntryDef),
}

impl FallbackDef {
    pub fn channel(&self) -> &str {
        match self {
            FallbackDef::Channel(name) => name,
            FallbackDef::WithBody(entry) => &entry.channel,
        }
    }
}

/// A fallback with a body of its own.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct FallbackEntryDef {
    pub channel: String,
    /// The body sent to this fallback instead of the step's.
    pub body: Option<serde_json::Value>,
}

impl<'de> Deserialize<'de> for FallbackDef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FallbackVisitor;

        impl<'de> Visitor<'de> for FallbackVisitor {
            type Value = FallbackDef;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a channel name, or `{ channel, body }`")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<FallbackDef, E> {
                Ok(FallbackDef::Channel(v.to_string()))
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<FallbackDef, A::Error> {
                FallbackEntryDef::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(FallbackDef::WithBody)
            }
        }

        deserializer.deserialize_any(FallbackVisitor)
    }
}

/// A step's business hours.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct StepHoursDef {
    pub calendar: String,
    /// `{ retry: TEMPLATE }`: the template while the calendar is open
    /// (the step's `retry` unless written).
    pub in_hours: Option<OffHoursDef>,
    pub off_hours: Option<OffHoursDef>,
    /// `suspend`: no attempt inside a maintenance window.
    pub maintenance: Option<String>,
}

/// `hold`, or `{ retry: TEMPLATE }`: what `off_hours` (and, for the
/// template form, `in_hours`) chooses.
#[derive(Debug, Clone, PartialEq, Eq, schemars::JsonSchema)]
#[schemars(untagged)]
pub enum OffHoursDef {
    Mode(String),
    Retry(OffHoursRetryDef),
}

impl<'de> Deserialize<'de> for OffHoursDef {
    // By hand rather than `untagged`, so that a typo inside the mapping is
    // reported as the unknown field it is.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OffHoursVisitor;

        impl<'de> Visitor<'de> for OffHoursVisitor {
            type Value = OffHoursDef;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`hold` or `{ retry: TEMPLATE }`")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<OffHoursDef, E> {
                Ok(OffHoursDef::Mode(v.to_string()))
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<OffHoursDef, A::Error> {
                OffHoursRetryDef::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(OffHoursDef::Retry)
            }
        }

        deserializer.deserialize_any(OffHoursVisitor)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct OffHoursRetryDef {
    pub retry: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct OnDeadDef {
    /// A channel that receives the dead job.
    pub notify: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn one_or_many_takes_a_value_or_a_list() {
        let one: OneOrMany<StatusDef> = serde_json::from_value(json!(503)).unwrap();
        assert_eq!(one.0, vec![StatusDef::Code(503)]);
        let many: OneOrMany<StatusDef> = serde_json::from_value(json!([502, "4xx"])).unwrap();
        assert_eq!(
            many.0,
            vec![StatusDef::Code(502), StatusDef::Text("4xx".into())]
        );
        let kinds: OneOrMany<ErrorKindDef> = serde_json::from_value(json!("dns")).unwrap();
        assert_eq!(kinds.0, vec![ErrorKindDef::Dns]);
        let err = serde_json::from_value::<OneOrMany<ErrorKindDef>>(json!(["dns", "tmeout"]))
            .unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `tmeout`"),
            "{err}"
        );
    }

    #[test]
    fn text_keeps_numbers_as_digits() {
        let t: Text = serde_json::from_value(json!(2)).unwrap();
        assert_eq!(t.as_str(), "2");
        let t: Text = serde_json::from_value(json!("2s")).unwrap();
        assert_eq!(t.as_str(), "2s");
    }

    #[test]
    fn unknown_fields_are_errors() {
        let err = serde_json::from_value::<StepDef>(json!({
            "name": "a", "channel": "b", "retyr": "standard"
        }))
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `retyr`"), "{err}");
    }
}
