//! The metrics every attempt records, with their handles kept per route
//! (flow, step, channel) and per flow instead of looked up by their labels
//! each time: a lookup by labels copies every label and searches the
//! registry, at every attempt.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use metrics::{Counter, Histogram};

use crate::model::Outcome;

/// One node's handles. Routes come from the policies in force; those of a
/// flow a reload removed stay, as the registry's series do.
#[derive(Default)]
pub struct AttemptMetrics {
    flows: Mutex<HashMap<String, FlowMetrics>>,
    claim_lag: OnceLock<Histogram>,
}

#[derive(Default)]
struct FlowMetrics {
    /// `attempts_until_success{flow}`, registered at the flow's first
    /// success.
    until_success: Option<Histogram>,
    /// step → channel.
    routes: HashMap<String, HashMap<String, Route>>,
}

struct Route {
    /// `attempt_duration_seconds{flow,channel}`.
    duration: Histogram,
    /// `attempts_total{flow,step,channel,outcome}`, in [`Outcome::ALL`]'s order.
    attempts: [Counter; Outcome::ALL.len()],
}

impl Route {
    fn register(flow: &str, step: &str, channel: &str) -> Route {
        let (flow, step, channel) = (flow.to_string(), step.to_string(), channel.to_string());
        Route {
            duration: metrics::histogram!("steadfast_attempt_duration_seconds",
                "flow" => flow.clone(), "channel" => channel.clone()),
            attempts: Outcome::ALL.map(|outcome| {
                metrics::counter!("steadfast_attempts_total",
                    "flow" => flow.clone(), "step" => step.clone(),
                    "channel" => channel.clone(), "outcome" => outcome.as_str())
            }),
        }
    }
}

impl AttemptMetrics {
    /// `claim_lag_seconds`: how late after its due time an attempt started.
    pub fn claim_lag(&self, seconds: f64) {
        self.claim_lag
            .get_or_init(|| metrics::histogram!("steadfast_claim_lag_seconds"))
            .record(seconds);
    }

    /// An attempt of `flow`'s `step` on `channel` that took `seconds`.
    pub fn attempt(&self, flow: &str, step: &str, channel: &str, outcome: Outcome, seconds: f64) {
        self.with_flow(flow, |metrics| {
            let channels = child(&mut metrics.routes, step, HashMap::new);
            let route = child(channels, channel, || Route::register(flow, step, channel));
            route.duration.record(seconds);
            if let Some(at) = Outcome::ALL.iter().position(|o| *o == outcome) {
                route.attempts[at].increment(1);
            }
        });
    }

    /// `attempts_until_success`: a job of `flow` succeeded after `attempts`
    /// attempts in all.
    pub fn succeeded(&self, flow: &str, attempts: u32) {
        self.with_flow(flow, |metrics| {
            metrics
                .until_success
                .get_or_insert_with(|| {
                    metrics::histogram!("steadfast_attempts_until_success",
                        "flow" => flow.to_string())
                })
                .record(f64::from(attempts));
        });
    }

    fn with_flow(&self, flow: &str, record: impl FnOnce(&mut FlowMetrics)) {
        let mut flows = self.flows.lock().unwrap_or_else(PoisonError::into_inner);
        record(child(&mut flows, flow, FlowMetrics::default));
    }
}

/// The entry for `key`, made by `make` the first time: looked up by `&str`,
/// so that the key is copied only once.
fn child<'m, V>(map: &'m mut HashMap<String, V>, key: &str, make: impl FnOnce() -> V) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), make());
    }
    map.get_mut(key).expect("inserted just above")
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    #[test]
    fn each_route_counts_its_own_attempts_through_kept_handles() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let metrics = AttemptMetrics::default();
        metrics::with_local_recorder(&recorder, || {
            metrics.attempt("leads", "deliver", "crm", Outcome::Success, 0.01);
            metrics.attempt("leads", "deliver", "crm", Outcome::Retry, 0.02);
            metrics.attempt("leads", "deliver", "crm", Outcome::Success, 0.03);
            metrics.attempt("leads", "deliver", "backup", Outcome::Fail, 0.04);
            metrics.claim_lag(0.5);
            metrics.succeeded("leads", 2);
            metrics.succeeded("leads", 1);
        });
        let text = handle.render();
        for line in [
            r#"steadfast_attempts_total{flow="leads",step="deliver",channel="crm",outcome="success"} 2"#,
            r#"steadfast_attempts_total{flow="leads",step="deliver",channel="crm",outcome="retry"} 1"#,
            r#"steadfast_attempts_total{flow="leads",step="deliver",channel="backup",outcome="fail"} 1"#,
            r#"steadfast_attempt_duration_seconds_count{flow="leads",channel="crm"} 3"#,
            r#"steadfast_attempt_duration_seconds_count{flow="leads",channel="backup"} 1"#,
            "steadfast_claim_lag_seconds_count 1",
            r#"steadfast_attempts_until_success_count{flow="leads"} 2"#,
            r#"steadfast_attempts_until_success_sum{flow="leads"} 3"#,
        ] {
            assert!(text.contains(line), "`{line}` missing from:\n{text}");
        }
    }
}
