//! Where deliveries go: a sender per channel kind (`http`, `file`); the
//! engine holds one [`Channels`] registry with a shared, pooled HTTP client
//! and each channel's own state on this node: its circuit breaker
//! ([`breaker`]), its rate and concurrency limits ([`rate`]) and the token
//! its `refresh_auth` fetched ([`Tokens`]).

pub(crate) mod breaker;
pub(crate) mod deadline;
pub mod file;
mod http;
pub mod pool;
pub(crate) mod rate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use jiff::Timestamp;

use crate::model::{Channel, ChannelKind, RefreshAuth, Secret};
pub use crate::model::{DeliveryResult, Response, TransportError, MAX_BODY};

pub use breaker::Breakers;
pub use deadline::{Deadline, Deadlines};
pub use file::FileSpool;
pub use http::{client_builder as http_client_builder, Fetched, HttpSender, RefreshError};
pub use pool::{Pick, Pools};
pub use rate::Limits;

/// What the engine hands a channel for one attempt.
#[derive(Debug, Clone)]
pub struct Delivery<'a> {
    pub job_id: &'a str,
    pub flow: &'a str,
    pub step: &'a str,
    /// The same value on every retry and fallback of this step.
    pub idempotency_key: &'a str,
    /// The body: JSON text.
    pub payload: &'a str,
    /// The worker's deadline to time the attempt with; without one, the
    /// attempt gets a timer of its own.
    pub deadline: Option<&'a Deadline>,
    /// The W3C `traceparent` of the attempt's span, sent to the partner
    /// (with `[telemetry] otlp_endpoint`).
    pub traceparent: Option<&'a str>,
    /// Keep the answer's headers: a later step's expressions read them.
    pub keep_headers: bool,
}

/// Sends one delivery over one channel, and keeps each channel's state.
pub struct Channels {
    http: HttpSender,
    breakers: Breakers,
    limits: Limits,
    tokens: Tokens,
    pools: Pools,
}

impl Channels {
    pub fn new() -> Result<Self, TransportError> {
        Ok(Self {
            http: HttpSender::new()?,
            breakers: Breakers::new(),
            limits: Limits::new(),
            tokens: Tokens::default(),
            pools: Pools::default(),
        })
    }

    /// Sends without a refreshed token (`on_dead` notifications).
    pub async fn deliver(&self, channel: &ChannelKind, delivery: &Delivery<'_>) -> DeliveryResult {
        match channel {
            ChannelKind::Http(http) => self.http.send(http, delivery, None).await,
            ChannelKind::File(file) => FileSpool::write(file, delivery).await,
            // The executor sends to the member it picked, never to the pool.
            ChannelKind::Pool(_) => Err(TransportError {
                kind: crate::model::ErrorKind::Internal,
                message: "a pool cannot be sent to; its member is".to_string(),
            }),
        }
    }

    /// Sends with the token the channel's `refresh_auth` last fetched, if
    /// any; also returns that token's generation (0: none), for
    /// [`Channels::refresh_token`].
    pub async fn send(&self, channel: &Channel, delivery: &Delivery<'_>) -> (DeliveryResult, u64) {
        match &channel.kind {
            ChannelKind::Http(http) if http.refresh_auth.is_some() => {
                let (token, generation) = self.tokens.current(&channel.name);
                let result = self.http.send(http, delivery, token.as_ref()).await;
                (result, generation)
            }
            kind => (self.deliver(kind, delivery).await, 0),
        }
    }

    /// Whether `channel`'s token must be fetched before sending at `now`
    /// (none yet, or expired), and the generation seen.
    pub fn token_needed(&self, channel: &str, now: Timestamp) -> (bool, u64) {
        let cell = self.tokens.cell(channel);
        let state = cell.state.read().unwrap_or_else(|e| e.into_inner());
        let expired = state.expires_at.is_some_and(|at| at <= now);
        (state.token.is_none() || expired, state.generation)
    }

    /// Fetches a fresh token for `channel`, unless one newer than
    /// generation `seen` arrived meanwhile (another attempt refreshed it):
    /// concurrent 401s cost one refresh.
    pub async fn refresh_token(
        &self,
        channel: &str,
        refresh: &RefreshAuth,
        seen: u64,
        now: Timestamp,
    ) -> Result<(), RefreshError> {
        let cell = self.tokens.cell(channel);
        let _one_at_a_time = cell.refreshing.lock().await;
        if cell.read().1 > seen {
            return Ok(());
        }
        let fetched = self.http.fetch_token(refresh).await;
        let mut state = cell.state.write().unwrap_or_else(|e| e.into_inner());
        match fetched {
            Ok(Fetched { token, expires_in }) => {
                // Taken as expired a little early (a tenth of its life, at
                // most a minute), so that no request leaves with a token
                // that lapses on the way.
                state.expires_at = expires_in.map(|life| {
                    let margin = (life / 10).min(std::time::Duration::from_secs(60));
                    crate::clock::later(now, life.saturating_sub(margin))
                });
                state.token = Some(token);
                state.generation += 1;
                state.refreshed_at = Some(now);
                state.refreshes += 1;
                state.last_error = None;
                Ok(())
            }
            Err(error) => {
                state.failures += 1;
                state.last_error = Some(error.message.clone());
                Err(error)
            }
        }
    }

    pub fn breakers(&self) -> &Breakers {
        &self.breakers
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }
}

pub type SharedChannels = Arc<Channels>;

/// The tokens fetched by channels' `refresh_auth`, in memory only: never
/// logged, never in the step log, never shown by the API (which says only
/// whether there is one and when it was fetched).
#[derive(Default)]
pub struct Tokens {
    cells: Mutex<HashMap<String, Arc<TokenCell>>>,
}

#[derive(Default)]
struct TokenCell {
    state: RwLock<TokenState>,
    /// Held while a refresh runs.
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct TokenState {
    token: Option<Secret>,
    /// Bumped by every refresh that got a token.
    generation: u64,
    refreshed_at: Option<Timestamp>,
    /// When the token lapses (its `expires_in`, less a margin); `None`:
    /// kept until a partner refuses it.
    expires_at: Option<Timestamp>,
    refreshes: u64,
    failures: u64,
    last_error: Option<String>,
}

/// What `GET /v1/channels` shows of a channel's token: never the token.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct TokenSnapshot {
    pub has_token: bool,
    pub refreshed_at: Option<Timestamp>,
    pub refreshes: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

impl Tokens {
    fn cell(&self, channel: &str) -> Arc<TokenCell> {
        let mut cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
        cells.entry(channel.to_string()).or_default().clone()
    }

    /// The token in force and its generation (0: none yet).
    fn current(&self, channel: &str) -> (Option<Secret>, u64) {
        let cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
        match cells.get(channel) {
            Some(cell) => cell.read(),
            None => (None, 0),
        }
    }

    pub fn snapshot(&self, channel: &str) -> TokenSnapshot {
        let cell = self.cell(channel);
        let state = cell.state.read().unwrap_or_else(|e| e.into_inner());
        TokenSnapshot {
            has_token: state.token.is_some(),
            refreshed_at: state.refreshed_at,
            refreshes: state.refreshes,
            failures: state.failures,
            last_error: state.last_error.clone(),
        }
    }
}

impl TokenCell {
    fn read(&self) -> (Option<Secret>, u64) {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        (state.token.clone(), state.generation)
    }
}
