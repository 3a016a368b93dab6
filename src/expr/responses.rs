//! The answers of earlier steps that later steps read
//! (`steps.NAME.response`), as the step log keeps them: a JSON object by
//! step name in the job's `responses` column, so that a restart between two
//! steps loses nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A step's answer as kept: its status, headers and body (the first 64
/// KiB, as every answer is read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptResponse {
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
}

impl KeptResponse {
    pub fn new(status: u16, headers: &[(String, String)], body: &str) -> Self {
        Self {
            status,
            headers: headers.iter().cloned().collect(),
            body: body.to_string(),
        }
    }

    /// `{ response: { status, headers, body, json } }`, `json` when the
    /// body parses.
    pub(super) fn in_scope(&self) -> minijinja::Value {
        let json = serde_json::from_str::<minijinja::Value>(&self.body).ok();
        let response = match json {
            Some(json) => minijinja::context! {
                status => self.status,
                headers => &self.headers,
                body => &self.body,
                json => json,
            },
            None => minijinja::context! {
                status => self.status,
                headers => &self.headers,
                body => &self.body,
            },
        };
        minijinja::context! { response => response }
    }
}

/// The kept answers of a job's steps, by step name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Responses(BTreeMap<String, KeptResponse>);

impl Responses {
    /// The responses as the step log holds them (`None`: none kept). Text
    /// that does not parse is treated as none: an expression that reads it
    /// then fails as a `mapping` error naming the missing step.
    pub fn from_log(text: Option<&str>) -> Self {
        text.and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default()
    }

    pub fn insert(&mut self, step: &str, response: KeptResponse) {
        self.0.insert(step.to_string(), response);
    }

    pub fn get(&self, step: &str) -> Option<&KeptResponse> {
        self.0.get(step)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &KeptResponse)> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The text the step log stores.
    pub fn to_log(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".to_string())
    }
}
