//! What a channel's own state is configured by: its circuit breaker, its
//! rate and concurrency limits, and how an `http` channel refreshes its
//! token. The state itself lives in [`crate::channels`].

use std::fmt;
use std::time::Duration;

use super::Secret;

/// When a channel's breaker opens, and how it closes again.
///
/// A breaker counts what says the channel is sick: attempts judged `retry`
/// (no answer, a 5xx, a 429, a "busy" rule). An answer judged `success` or
/// `fail` shows a partner that is up (a 400 rejects one payload, it does
/// not make the channel down), so it breaks a run of failures.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Opens after this many failures in a row (within `window`, if set).
    pub failures: Option<u32>,
    /// Opens when at least this share (0 to 1) of the attempts within
    /// `window` failed, over at least `min_requests` attempts.
    pub failure_ratio: Option<FailureRatio>,
    /// The span failures are counted over; `None` with `failures` only: a
    /// run of failures counts however long it took.
    pub window: Option<Duration>,
    /// How long the breaker stays open before it lets a probe through.
    pub cooldown: Duration,
    /// Probes let through while half-open; all must succeed to close.
    pub half_open_probes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailureRatio {
    /// In `(0, 1]`.
    pub ratio: f64,
    pub min_requests: u32,
}

impl BreakerConfig {
    /// Unless written: 30s open before a probe.
    pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);
    /// Unless written: `failure_ratio` is judged over at least 10 attempts.
    pub const DEFAULT_MIN_REQUESTS: u32 = 10;
}

/// At most `count` attempts started per `per`, with bursts of up to `count`
/// (a token bucket of `count` tokens refilled evenly over `per`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// The time one token takes to come back.
    pub fn interval(&self) -> Duration {
        self.per / self.count.max(1)
    }

    pub fn per_second(&self) -> f64 {
        f64::from(self.count) / self.per.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = self.per;
        match per.as_millis() {
            1_000 => write!(f, "{}/s", self.count),
            60_000 => write!(f, "{}/m", self.count),
            3_600_000 => write!(f, "{}/h", self.count),
            ms if ms.is_multiple_of(1_000) => write!(f, "{}/{}s", self.count, ms / 1_000),
            ms => write!(f, "{}/{ms}ms", self.count),
        }
    }
}

/// How an `http` channel gets a fresh token: a request whose JSON answer
/// carries it at `token`. The token is kept in memory only, never in the
/// step log, and sent as `header: scheme token`.
#[derive(Debug, Clone)]
pub struct RefreshAuth {
    pub url: Secret,
    /// As written (`${VAR}` not expanded): safe to show.
    pub url_display: String,
    pub method: String,
    pub headers: Vec<(String, Secret)>,
    pub body: Option<RefreshBody>,
    pub token: TokenPath,
    /// The header the token goes in, e.g. `Authorization`.
    pub header: String,
    /// Written before the token with a space (`Bearer`); empty: the token
    /// alone.
    pub scheme: String,
    pub timeout: Duration,
    /// `auth.oauth2` (client credentials): the token is fetched before the
    /// first request and again when the answer's `expires_in` has passed,
    /// and a 401 fetches a new one without a classifier rule.
    pub client_credentials: bool,
}

impl RefreshAuth {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// The header value that carries `token`.
    pub fn header_value(&self, token: &str) -> String {
        if self.scheme.is_empty() {
            token.to_string()
        } else {
            format!("{} {token}", self.scheme)
        }
    }
}

/// The body of the refresh request. May hold client secrets.
#[derive(Debug, Clone)]
pub enum RefreshBody {
    /// JSON text, sent as `application/json`.
    Json(Secret),
    /// Text sent as written.
    Text(Secret),
    /// Pairs sent as `application/x-www-form-urlencoded`.
    Form(Vec<(String, Secret)>),
}

/// Where a token is in a JSON document: `access_token`, `$.data.token`,
/// `tokens[0].value`, `$['access-token']`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPath {
    pub segments: Vec<PathSegment>,
    /// As written.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    Key(String),
    Index(usize),
}

impl TokenPath {
    /// Reads a path; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<TokenPath, String> {
        let trimmed = text.trim();
        let mut rest = trimmed.strip_prefix('$').unwrap_or(trimmed);
        let mut segments = Vec::new();
        let mut first = true;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('[') {
                let close = after
                    .find(']')
                    .ok_or_else(|| "a `[` is not closed by `]`".to_string())?;
                let inside = &after[..close];
                let quoted = inside
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .or_else(|| inside.strip_prefix('"').and_then(|s| s.strip_suffix('"')));
                match quoted {
                    Some(key) if !key.is_empty() => segments.push(PathSegment::Key(key.into())),
                    _ => {
                        let index = inside.parse::<usize>().map_err(|_| {
                            format!("`[{inside}]` is neither an index like `[0]` nor a key like `['name']`")
                        })?;
                        segments.push(PathSegment::Index(index));
                    }
                }
                rest = &after[close + 1..];
            } else {
                let body = match rest.strip_prefix('.') {
                    Some(body) => body,
                    None if first => rest,
                    None => return Err("expected `.key` or `[index]`".to_string()),
                };
                let end = body.find(['.', '[']).unwrap_or(body.len());
                let key = &body[..end];
                if key.is_empty() {
                    return Err("an empty key (two dots in a row, or a dot at the end)".into());
                }
                if key.contains(']') {
                    return Err("a `]` without its `[`".into());
                }
                segments.push(PathSegment::Key(key.to_string()));
                rest = &body[end..];
            }
            first = false;
        }
        if segments.is_empty() {
            return Err("the path names nothing; write e.g. `access_token`".to_string());
        }
        Ok(TokenPath {
            segments,
            text: text.to_string(),
        })
    }

    /// The token in `document`: a non-empty string (a number is taken as
    /// its digits).
    pub fn find(&self, document: &serde_json::Value) -> Option<String> {
        let mut at = document;
        for segment in &self.segments {
            at = match segment {
                PathSegment::Key(key) => at.get(key.as_str())?,
                PathSegment::Index(index) => at.get(*index)?,
            };
        }
        match at {
            serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

impl fmt::Display for TokenPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn token_paths_read_keys_and_indexes() {
        let doc = json!({
            "access_token": "a",
            "data": { "token": "b", "tokens": [{ "value": "c" }], "access-token": "d" },
            "n": 42,
            "empty": ""
        });
        for (path, want) in [
            ("access_token", Some("a")),
            ("$.access_token", Some("a")),
            ("data.token", Some("b")),
            ("$.data.tokens[0].value", Some("c")),
            ("data['access-token']", Some("d")),
            ("$[\"data\"].token", Some("b")),
            ("n", Some("42")),
            ("empty", None),
            ("data", None),
            ("missing.x", None),
            ("data.tokens[3].value", None),
        ] {
            let parsed = TokenPath::parse(path).unwrap();
            assert_eq!(parsed.find(&doc).as_deref(), want, "{path}");
        }
        for bad in ["", "$", "a..b", "a.", "a[", "a[x]", "a]b"] {
            assert!(TokenPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_print_as_written() {
        let rate = |count, ms| Rate {
            count,
            per: Duration::from_millis(ms),
        };
        assert_eq!(rate(50, 1_000).to_string(), "50/s");
        assert_eq!(rate(600, 60_000).to_string(), "600/m");
        assert_eq!(rate(5, 10_000).to_string(), "5/10s");
        assert_eq!(rate(1, 250).to_string(), "1/250ms");
        assert_eq!(rate(50, 1_000).interval(), Duration::from_millis(20));
    }
}
