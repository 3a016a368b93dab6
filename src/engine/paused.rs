//! The flows an operator paused, as this node knows them: read from the
//! step log at start and once a second after (so every node honours a
//! pause within a second), and changed at once by this node's own API.

use std::collections::HashSet;
use std::sync::RwLock;

#[derive(Debug, Default)]
pub struct PausedFlows {
    flows: RwLock<HashSet<String>>,
}

impl PausedFlows {
    pub fn contains(&self, flow: &str) -> bool {
        self.flows
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(flow)
    }

    /// The whole set, as the step log holds it.
    pub fn replace(&self, flows: impl IntoIterator<Item = String>) {
        *self.flows.write().unwrap_or_else(|e| e.into_inner()) = flows.into_iter().collect();
    }

    pub fn pause(&self, flow: &str) {
        self.flows
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(flow.to_string());
    }

    pub fn resume(&self, flow: &str) {
        self.flows
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(flow);
    }
}
