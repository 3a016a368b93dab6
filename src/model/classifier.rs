use std::fmt;
use std::str::FromStr;

use regex::Regex;

/// A step's own rules; first match wins. The built-in rules apply after them
/// (see [`crate::retry::classify`]).
#[derive(Debug, Clone)]
pub struct Classifier {
    pub name: String,
    pub rules: Vec<Rule>,
    /// What neither these rules nor the built-in ones classify.
    pub default: Outcome,
}

#[derive(Debug, Clone)]
pub struct Rule {
    /// How attempts name this rule: its `name:`, else `classifier[index]`.
    pub label: String,
    pub matcher: Matcher,
    pub outcome: Outcome,
    pub retry_after: RetryAfter,
}

/// Every condition that is set must hold.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    pub status: Vec<StatusPattern>,
    pub body: Option<Regex>,
    pub error: Vec<ErrorKind>,
    pub error_message: Option<Regex>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusPattern {
    Code(u16),
    /// `4xx` is `Class(4)`.
    Class(u16),
}

impl StatusPattern {
    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusPattern::Code(code) => code == status,
            StatusPattern::Class(class) => status / 100 == class,
        }
    }
}

impl fmt::Display for StatusPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusPattern::Code(code) => write!(f, "{code}"),
            StatusPattern::Class(class) => write!(f, "{class}xx"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Success,
    Retry,
    /// Permanent: the job goes dead without further attempts.
    Fail,
    RefreshAuth,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Success,
        Outcome::Retry,
        Outcome::Fail,
        Outcome::RefreshAuth,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Retry => "retry",
            Outcome::Fail => "fail",
            Outcome::RefreshAuth => "refresh_auth",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s).ok_or(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetryAfter {
    #[default]
    Ignore,
    /// Wait as long as the partner's `Retry-After` says, up to the template's
    /// `retry_after_cap`.
    Honor,
}

/// Why a delivery failed without an HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    Timeout,
    Connect,
    Dns,
    Reset,
    Tls,
    /// A file channel's write failed.
    Io,
    /// The engine itself failed during the attempt (a bug, caught): the
    /// job goes on by its policy instead of being wedged.
    Internal,
    /// A step's expression failed for this job (a missing field, a type
    /// that does not fit): nothing was sent.
    Mapping,
    Other,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::Timeout,
        ErrorKind::Connect,
        ErrorKind::Dns,
        ErrorKind::Reset,
        ErrorKind::Tls,
        ErrorKind::Io,
        ErrorKind::Internal,
        ErrorKind::Mapping,
        ErrorKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Dns => "dns",
            ErrorKind::Reset => "reset",
            ErrorKind::Tls => "tls",
            ErrorKind::Io => "io",
            ErrorKind::Internal => "internal",
            ErrorKind::Mapping => "mapping",
            ErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        ErrorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(())
    }
}
