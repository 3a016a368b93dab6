//! Where deliveries go. A [`Deliver`] implementation per channel kind; the
//! engine holds one [`Channels`] registry with a shared, pooled HTTP client.

mod file;
mod http;

use std::sync::Arc;

use crate::model::ChannelKind;
pub use crate::model::{DeliveryResult, Response, TransportError, MAX_BODY};

pub use file::FileSpool;
pub use http::HttpSender;

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
}

/// Sends one delivery over one channel.
pub struct Channels {
    http: HttpSender,
}

impl Channels {
    pub fn new() -> Result<Self, TransportError> {
        Ok(Self {
            http: HttpSender::new()?,
        })
    }

    pub async fn deliver(&self, channel: &ChannelKind, delivery: &Delivery<'_>) -> DeliveryResult {
        match channel {
            ChannelKind::Http(http) => self.http.send(http, delivery).await,
            ChannelKind::File(file) => FileSpool::write(file, delivery).await,
        }
    }
}

pub type SharedChannels = Arc<Channels>;
