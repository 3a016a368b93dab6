//! The demo's flaky partners: real HTTP servers on loopback whose answers
//! follow each job's number, so every run shows the same paths.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// How often the partner has seen each idempotency key.
#[derive(Clone, Default)]
pub struct Partner {
    seen: Arc<Mutex<HashMap<String, u32>>>,
    alerts: Arc<Mutex<u32>>,
}

/// What ACME does with lead `n` (by `n % 10`).
pub const ACME_SCENARIOS: [&str; 10] = [
    "accepted at once",
    "accepted at once",
    "accepted at once",
    "already known: duplicate lead",
    "worth 25,000 (the aggressive template): 503 twice, then accepted",
    "503 once, then accepted",
    "429 with Retry-After: 1, then accepted",
    "busy under a 200, then accepted",
    "400 invalid phone: permanent",
    "too slow once (timeout), then accepted",
];

impl Partner {
    /// Serves the partner on a free loopback port; returns its base URL.
    pub async fn serve(self) -> std::io::Result<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/acme/leads", post(acme))
            .route("/crm/east/hooks/lead", post(crm))
            .route("/crm/west/hooks/lead", post(crm))
            .route("/ops/alerts", post(alert))
            .route("/backup/orders", post(backup))
            .with_state(self);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(format!("http://{addr}"))
    }

    pub fn alerts(&self) -> u32 {
        *self.alerts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts this attempt for the request's key; returns the count.
    fn attempt(&self, headers: &HeaderMap) -> u32 {
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let count = seen.entry(key).or_default();
        *count += 1;
        *count
    }
}

fn number(body: &Value) -> u64 {
    body.get("n").and_then(Value::as_u64).unwrap_or_default()
}

async fn acme(
    State(partner): State<Partner>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let attempt = partner.attempt(&headers);
    let n = number(&body);
    let id = format!("ACME-{n:04}");
    let accepted = || {
        (
            StatusCode::OK,
            Json(json!({ "status": "accepted", "id": id })),
        )
            .into_response()
    };
    match (n % 10, attempt) {
        (3, _) => (
            StatusCode::OK,
            Json(json!({ "status": "Duplicate lead: already received", "id": id })),
        )
            .into_response(),
        (4, 1..=2) | (5, 1) => (StatusCode::SERVICE_UNAVAILABLE, "maintenance").into_response(),
        (6, 1) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "slow down",
        )
            .into_response(),
        (7, 1) => (StatusCode::OK, Json(json!({ "status": "busy" }))).into_response(),
        (8, _) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "invalid phone" })),
        )
            .into_response(),
        (9, 1) => {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            accepted()
        }
        _ => accepted(),
    }
}

/// The CRM takes every confirmation whose body carries ACME's id (the
/// policy maps it from the first step's answer).
async fn crm(Json(body): Json<Value>) -> StatusCode {
    if body.get("acme_id").and_then(Value::as_str).is_some() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    }
}

async fn alert(State(partner): State<Partner>) -> StatusCode {
    *partner.alerts.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    StatusCode::OK
}

/// The backup takes most orders; every fourth it refuses with 503.
async fn backup(
    State(partner): State<Partner>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    partner.attempt(&headers);
    if number(&body).is_multiple_of(4) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::CREATED
    }
}

/// A loopback URL where nothing listens: the "down" primary.
pub async fn closed_port_url() -> std::io::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(format!("http://{addr}"))
}
