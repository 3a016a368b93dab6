//! Engine settings: `steadfast.toml`, then `STEADFAST_*` variables, then
//! flags, layered with figment (never used for policy files, whose errors
//! need line numbers).
//!
//! ```toml
//! listen = "0.0.0.0:8787"
//! db = "sqlite://steadfast.db"
//! policies = "./policies"
//! workers = 64
//!
//! [[tokens]]
//! name = "ci"
//! secret = "${CI_SUBMIT_TOKEN}"   # read from the environment
//! scope = "submit"                # or "admin"
//!
//! [quotas]                        # off unless set
//! retries_per_hour = 100000       # the whole cluster
//! retries_per_hour_per_flow = 1000
//!
//! [retention]                     # finished jobs kept this long; "0": for ever
//! succeeded = "30d"
//! cancelled = "30d"
//!
//! [pacing]                        # the engine's health by the lag of due jobs
//! yellow_lag = "1s"
//! red_lag = "10s"
//! cut_retries = true              # retries get half the claims in yellow, a tenth in red
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use figment::providers::Serialized;
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::tokens::{Scope, Token};

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("settings: {0}")]
    Invalid(String),
}

/// Everything `steadfast run` reads from the layers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub policies: PathBuf,
    pub db: String,
    pub listen: String,
    pub workers: usize,
    #[serde(default)]
    pub tokens: Vec<TokenSetting>,
    #[serde(default)]
    pub quotas: QuotaSettings,
    #[serde(default)]
    pub alerts: Vec<crate::alerts::AlertRule>,
    #[serde(default)]
    pub retention: RetentionSettings,
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    #[serde(default)]
    pub pacing: PacingSettings,
}

/// `[pacing]`: the lags of due jobs past which the engine is yellow, then
/// red.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PacingSettings {
    pub yellow_lag: String,
    pub red_lag: String,
    /// Whether retries' share of claims is cut in yellow (half) and red (a
    /// tenth); on unless set off (see `pacing::health::Thresholds`).
    pub cut_retries: bool,
}

impl Default for PacingSettings {
    fn default() -> Self {
        Self {
            yellow_lag: "1s".into(),
            red_lag: "10s".into(),
            cut_retries: true,
        }
    }
}

impl PacingSettings {
    /// The thresholds as durations, or what to fix.
    pub fn thresholds(&self) -> Result<crate::pacing::health::Thresholds, String> {
        let lag = |key: &str, text: &str| {
            crate::compile::duration::parse_duration(text)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    format!(
                        "[pacing] {key} = \"{text}\": write a duration longer than 0, e.g. \"1s\""
                    )
                })
        };
        let yellow_lag = lag("yellow_lag", &self.yellow_lag)?;
        let red_lag = lag("red_lag", &self.red_lag)?;
        if red_lag <= yellow_lag {
            return Err(format!(
                "[pacing] red_lag = \"{}\" must be longer than yellow_lag = \"{}\"",
                self.red_lag, self.yellow_lag
            ));
        }
        Ok(crate::pacing::health::Thresholds {
            yellow_lag,
            red_lag,
            cut_retries: self.cut_retries,
        })
    }
}

/// `[telemetry]`: where traces go.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// An OTLP/HTTP collector's base URL (`http://127.0.0.1:4318`): a span
    /// per attempt goes to `/v1/traces`. Unset: no traces.
    pub otlp_endpoint: Option<String>,
}

impl TelemetrySettings {
    /// The endpoint, checked; what to fix when it is no http(s) URL.
    pub fn endpoint(&self) -> Result<Option<&str>, String> {
        let Some(endpoint) = self.otlp_endpoint.as_deref().map(str::trim) else {
            return Ok(None);
        };
        if endpoint.is_empty() {
            return Ok(None);
        }
        match reqwest::Url::parse(endpoint) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
                Ok(Some(endpoint))
            }
            _ => Err(format!(
                "[telemetry] otlp_endpoint = \"{endpoint}\": not an http(s) URL; write the \
                 collector's OTLP/HTTP address, e.g. \"http://127.0.0.1:4318\""
            )),
        }
    }
}

/// How long finished jobs are kept, as written (`30d`; `0` keeps them for
/// ever). Dead jobs are kept until handled.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    pub succeeded: String,
    pub cancelled: String,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            succeeded: "30d".into(),
            cancelled: "30d".into(),
        }
    }
}

impl RetentionSettings {
    /// The ages as durations (`None`: kept for ever), or what to fix.
    pub fn ages(&self) -> Result<crate::store::Retention, String> {
        let age = |key: &str, text: &str| match text.trim() {
            "0" => Ok(None),
            text => crate::compile::duration::parse_duration(text)
                .map(Some)
                .map_err(|e| {
                    format!("[retention] {key} = \"{text}\": {e}, or \"0\" to keep them for ever")
                }),
        };
        Ok(crate::store::Retention {
            succeeded: age("succeeded", &self.succeeded)?,
            cancelled: age("cancelled", &self.cancelled)?,
        })
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            policies: PathBuf::from("./policies"),
            db: "sqlite://steadfast.db".into(),
            listen: "127.0.0.1:8787".into(),
            workers: 64,
            tokens: Vec::new(),
            quotas: QuotaSettings::default(),
            alerts: Vec::new(),
            retention: RetentionSettings::default(),
            pacing: PacingSettings::default(),
            telemetry: TelemetrySettings::default(),
        }
    }
}

/// A token as written: its secret may be `${ENV_VAR}`.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenSetting {
    pub name: String,
    pub secret: String,
    pub scope: Scope,
}

impl std::fmt::Debug for TokenSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSetting")
            .field("name", &self.name)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Retry quotas per hour, counted in memory on each node; none unless set.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries_per_hour: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries_per_hour_per_flow: Option<u64>,
    /// A flow's own hourly quota, instead of `retries_per_hour_per_flow`.
    pub flows: BTreeMap<String, u64>,
}

/// Flags given on the command line (`None`: not given).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlagSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policies: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
}

/// Reads the layers: defaults, the file (when `file` is given it must
/// exist; otherwise `./steadfast.toml` is read when present), the
/// `STEADFAST_POLICIES`, `_DB`, `_LISTEN`, `_WORKERS` variables, the flags.
pub fn load(
    file: Option<&Path>,
    env: &[(String, String)],
    flags: &FlagSettings,
) -> Result<Settings, SettingsError> {
    let mut figment = Figment::from(Serialized::defaults(Settings::default()));
    let (path, required) = match file {
        Some(path) => (path.to_path_buf(), true),
        None => (PathBuf::from("steadfast.toml"), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            // Parsed with the crate's own toml (figment's toml feature would
            // add a second, older toml to the build).
            // Checked against the settings' shape first, with positions:
            // figment's own errors name its source location, not the file's.
            toml::from_str::<SettingsFile>(&text).map_err(|e| located(&path, &text, &e))?;
            let table: toml::Table =
                toml::from_str(&text).map_err(|e| located(&path, &text, &e))?;
            figment = figment.merge(Serialized::defaults(table));
        }
        Err(error) if required || error.kind() != std::io::ErrorKind::NotFound => {
            return Err(SettingsError::Read {
                path: path.display().to_string(),
                source: error,
            })
        }
        Err(_) => {}
    }
    // Only these: STEADFAST_TOKEN and STEADFAST_SERVER belong to the CLI's
    // client side, and must never be read as engine settings.
    let env_map: BTreeMap<String, String> = env
        .iter()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix("STEADFAST_")?.to_ascii_lowercase();
            ["policies", "db", "listen", "workers"]
                .contains(&key.as_str())
                .then(|| (key, v.clone()))
        })
        .collect();
    for (key, value) in env_map {
        let value = if key == "workers" {
            let n: usize = value.parse().map_err(|_| {
                SettingsError::Invalid(format!("STEADFAST_WORKERS=`{value}` is not a whole number"))
            })?;
            figment::value::Value::from(n)
        } else {
            figment::value::Value::from(value)
        };
        figment = figment.merge(Serialized::default(&key, value));
    }
    figment = figment.merge(Serialized::defaults(flags));
    let settings: Settings = figment
        .extract()
        .map_err(|e| SettingsError::Invalid(e.to_string()))?;
    Ok(settings)
}

/// `steadfast.toml` as written: every key optional, none unknown. Only
/// for its errors' positions; the values are read through figment.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct SettingsFile {
    policies: Option<PathBuf>,
    db: Option<String>,
    listen: Option<String>,
    workers: Option<usize>,
    tokens: Option<Vec<TokenSetting>>,
    quotas: Option<QuotaSettings>,
    alerts: Option<Vec<crate::alerts::AlertRule>>,
    retention: Option<RetentionSettings>,
    telemetry: Option<TelemetrySettings>,
    pacing: Option<PacingSettings>,
}

/// A TOML error as `FILE:LINE:COL: message`.
fn located(path: &Path, text: &str, error: &toml::de::Error) -> SettingsError {
    let (line, column) = match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            (line, column)
        }
        None => (0, 0),
    };
    let message = error.message().trim_end().to_string();
    let path = if line > 0 {
        format!("{}:{line}:{column}", path.display())
    } else {
        path.display().to_string()
    };
    SettingsError::Syntax { path, message }
}

/// The tokens with `${ENV}` read from `env`; names and secrets must be
/// unique and not empty.
pub fn resolve_tokens(
    tokens: &[TokenSetting],
    env: &[(String, String)],
) -> Result<Vec<Token>, SettingsError> {
    let mut names = HashSet::new();
    let mut secrets = HashSet::new();
    let mut out = Vec::new();
    for token in tokens {
        if token.name.trim().is_empty() {
            return Err(SettingsError::Invalid(
                "a [[tokens]] entry has an empty name".into(),
            ));
        }
        if !names.insert(token.name.clone()) {
            return Err(SettingsError::Invalid(format!(
                "token name `{}` is used twice",
                token.name
            )));
        }
        let secret = expand(&token.secret, env).map_err(|var| {
            SettingsError::Invalid(format!(
                "token `{}`: environment variable `{var}` is not set",
                token.name
            ))
        })?;
        if secret.trim().is_empty() {
            return Err(SettingsError::Invalid(format!(
                "token `{}` has an empty secret",
                token.name
            )));
        }
        if !secrets.insert(secret.clone()) {
            return Err(SettingsError::Invalid(format!(
                "token `{}` has the same secret as another token; give each its own",
                token.name
            )));
        }
        out.push(Token {
            name: token.name.clone(),
            secret,
            scope: token.scope,
        });
    }
    Ok(out)
}

/// Replaces each `${NAME}` with the variable's value; `Err(NAME)` when one
/// is not set.
fn expand(text: &str, env: &[(String, String)]) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        let value = env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| name.to_string())?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether `listen` (`host:port`) is on loopback only.
pub fn is_loopback(listen: &str) -> Result<bool, SettingsError> {
    if let Ok(addr) = listen.parse::<std::net::SocketAddr>() {
        return Ok(addr.ip().is_loopback());
    }
    match listen.rsplit_once(':') {
        Some(("localhost", port)) if port.parse::<u16>().is_ok() => Ok(true),
        Some((_, port)) if port.parse::<u16>().is_ok() => Ok(false),
        _ => Err(SettingsError::Invalid(format!(
            "listen address `{listen}` is not HOST:PORT, e.g. 127.0.0.1:8787"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steadfast.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\ndb = \"sqlite://file.db\"\nworkers = 3\n\
             [[tokens]]\nname = \"ci\"\nsecret = \"${CI}\"\nscope = \"submit\"\n\
             [quotas]\nretries_per_hour_per_flow = 5\n",
        )
        .unwrap();
        let flags = FlagSettings {
            workers: Some(9),
            ..FlagSettings::default()
        };
        let vars = env(&[
            ("STEADFAST_DB", "sqlite://env.db"),
            ("STEADFAST_TOKEN", "x"),
            ("STEADFAST_WORKERS", "4"),
        ]);
        let settings = load(Some(&path), &vars, &flags).unwrap();
        assert_eq!(settings.listen, "0.0.0.0:9000");
        assert_eq!(settings.db, "sqlite://env.db");
        assert_eq!(settings.workers, 9);
        assert_eq!(settings.quotas.retries_per_hour_per_flow, Some(5));
        assert_eq!(
            settings.quotas.retries_per_hour, None,
            "quotas are off unless set"
        );
        let tokens = resolve_tokens(&settings.tokens, &env(&[("CI", "s3cret")])).unwrap();
        assert_eq!(tokens[0].secret, "s3cret");
        let missing = resolve_tokens(&settings.tokens, &[])
            .unwrap_err()
            .to_string();
        assert!(missing.contains("`CI` is not set"), "{missing}");
    }

    #[test]
    fn unknown_keys_and_missing_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steadfast.toml");
        std::fs::write(&path, "listn = \"x\"\n").unwrap();
        let error = load(Some(&path), &[], &FlagSettings::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("listn"), "{error}");
        assert!(
            error.starts_with(&format!("{}:1:1: ", path.display())),
            "{error}"
        );
        assert!(!error.contains("src/"), "{error}");
        std::fs::write(&path, "workers = 2\n[quotas]\nretries_per_hr = 5\n").unwrap();
        let error = load(Some(&path), &[], &FlagSettings::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(&format!("{}:3:1: ", path.display())),
            "{error}"
        );
        assert!(error.contains("retries_per_hr"), "{error}");
        let error = load(
            Some(&dir.path().join("nope.toml")),
            &[],
            &FlagSettings::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("cannot read"), "{error}");
    }

    #[test]
    fn loopback_addresses() {
        assert!(is_loopback("127.0.0.1:8787").unwrap());
        assert!(is_loopback("[::1]:8787").unwrap());
        assert!(is_loopback("localhost:8787").unwrap());
        assert!(!is_loopback("0.0.0.0:8787").unwrap());
        assert!(!is_loopback("example.com:80").unwrap());
        assert!(is_loopback("nonsense").is_err());
    }

    #[test]
    fn retention_reads_durations_and_zero_keeps_for_ever() {
        let written = |succeeded: &str, cancelled: &str| RetentionSettings {
            succeeded: succeeded.into(),
            cancelled: cancelled.into(),
        };
        let defaults = RetentionSettings::default().ages().expect("the defaults");
        assert_eq!(defaults, crate::store::Retention::default());
        let ages = written("7d", "0").ages().expect("valid");
        assert_eq!(
            ages.succeeded,
            Some(std::time::Duration::from_secs(7 * 86_400))
        );
        assert_eq!(ages.cancelled, None);
        assert_eq!(ages.ages().len(), 1);
        let error = written("a month", "0").ages().expect_err("not a duration");
        assert!(
            error.contains("[retention] succeeded = \"a month\""),
            "{error}"
        );
    }

    #[test]
    fn pacing_thresholds_read_durations_in_order() {
        let written = |yellow: &str, red: &str| PacingSettings {
            yellow_lag: yellow.into(),
            red_lag: red.into(),
            cut_retries: true,
        };
        assert_eq!(
            PacingSettings::default().thresholds(),
            Ok(crate::pacing::health::Thresholds::default())
        );
        let t = written("500ms", "5s").thresholds().expect("valid");
        assert_eq!(t.yellow_lag, std::time::Duration::from_millis(500));
        let error = written("soon", "5s").thresholds().unwrap_err();
        assert!(error.contains("[pacing] yellow_lag = \"soon\""), "{error}");
        let error = written("5s", "1s").thresholds().unwrap_err();
        assert!(error.contains("must be longer than yellow_lag"), "{error}");
    }
}
