use std::time::Duration;

/// A compiled retry template: how many retries and how far apart.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryTemplate {
    pub name: String,
    /// Retries after the first attempt.
    pub retries: u32,
    pub backoff: Backoff,
    /// Upper bound of a delay, jitter included. Always set for exponential
    /// templates (default 60s); for fixed and schedule only when written.
    pub max_interval: Option<Duration>,
    /// No new attempt later than this after the first attempt of a series.
    pub total_timeout: Option<Duration>,
    pub jitter: Jitter,
    /// Upper bound of an honoured `Retry-After`.
    pub retry_after_cap: Duration,
    /// Retries cut where the channel's history says they do not succeed.
    pub adapt: Option<Adapt>,
}

/// `adapt`: the history a template's retries read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adapt {
    pub window: Duration,
    pub min_samples: u64,
    /// A fraction: 0.01 for `1%`.
    pub stop_below: f64,
}

impl Adapt {
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(7 * 86_400);
    pub const MAX_WINDOW: Duration = Duration::from_secs(30 * 86_400);
    pub const DEFAULT_MIN_SAMPLES: u64 = 100;
}

#[derive(Debug, Clone, PartialEq)]
pub enum Backoff {
    Exponential {
        initial: Duration,
        multiplier: f64,
    },
    Fixed {
        interval: Duration,
    },
    /// Delay before retry `i` is `delays[i - 1]`; the last does not repeat.
    Schedule {
        delays: Vec<Duration>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    None,
    /// Uniform in `[0, delay]`.
    Full,
    /// Uniform in `delay × [1 − f, 1 + f]`, `f` in `0.0..=1.0`.
    Proportional(f64),
}

impl RetryTemplate {
    pub const DEFAULT_RETRIES: u32 = 3;
    pub const DEFAULT_INITIAL: Duration = Duration::from_secs(1);
    pub const DEFAULT_MULTIPLIER: f64 = 2.0;
    pub const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(60);
    pub const DEFAULT_JITTER: Jitter = Jitter::Proportional(0.2);
    /// Cap of `Retry-After` when the template has no `max_interval`.
    pub const DEFAULT_RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

    /// The built-in templates of the product contract.
    pub fn builtins() -> Vec<RetryTemplate> {
        vec![Self::conservative(), Self::standard(), Self::aggressive()]
    }

    /// 2 retries, 5s apart.
    pub fn conservative() -> RetryTemplate {
        RetryTemplate {
            name: "conservative".to_string(),
            retries: 2,
            backoff: Backoff::Fixed {
                interval: Duration::from_secs(5),
            },
            max_interval: None,
            total_timeout: None,
            jitter: Self::DEFAULT_JITTER,
            retry_after_cap: Self::DEFAULT_RETRY_AFTER_CAP,
            adapt: None,
        }
    }

    /// 3 retries after 2s, 4s, 8s.
    pub fn standard() -> RetryTemplate {
        Self::exponential("standard", 3, Duration::from_secs(2))
    }

    /// 5 retries after 1s, 2s, 4s, 8s, 16s.
    pub fn aggressive() -> RetryTemplate {
        Self::exponential("aggressive", 5, Duration::from_secs(1))
    }

    fn exponential(name: &str, retries: u32, initial: Duration) -> RetryTemplate {
        RetryTemplate {
            name: name.to_string(),
            retries,
            backoff: Backoff::Exponential {
                initial,
                multiplier: Self::DEFAULT_MULTIPLIER,
            },
            max_interval: Some(Self::DEFAULT_MAX_INTERVAL),
            total_timeout: None,
            jitter: Self::DEFAULT_JITTER,
            retry_after_cap: Self::DEFAULT_MAX_INTERVAL,
            adapt: None,
        }
    }

    pub fn builtin(name: &str) -> Option<RetryTemplate> {
        Self::builtins().into_iter().find(|t| t.name == name)
    }
}
