//! The console: `/ui/`, HTML pages the engine renders itself for operators
//! (PRODUCT.md "The console"). No script and no build step: pages are maud
//! templates, the one stylesheet is inside the binary, every form is a plain
//! POST, and a bulk retry's progress page refreshes itself. The pages call
//! the same store and handler logic as the JSON API, so the console can do
//! nothing the API could not.
//!
//! - [`session`]: login by token, the session cookie, CSRF and cross-site
//!   guards, read-only viewers.
//! - [`overview`]: flows with their jobs by state, pause and resume, the
//!   engine's health, the channels at a glance.
//! - [`jobs`]: the job list with filters and keyset paging, a job's page
//!   (attempt timeline, payload edits), edit, retry, cancel.
//! - [`bulk`]: retry everything a filter matches at a rate, with progress.
//! - [`channels`]: breakers, limits and the last hour per channel; the
//!   policy in force with its files and last reload error.

mod bulk;
mod channels;
mod jobs;
mod layout;
mod overview;
mod session;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use jiff::Timestamp;

use super::AppState;
use crate::store::StateCounts;

pub use session::Sessions;

/// How long the overview's counts by flow and state are reused: counting
/// reads every job, so a console left open on a large step log does it
/// at most this often.
pub const COUNTS_FOR: Duration = Duration::from_secs(10);

/// The console's own state on this node.
#[derive(Default)]
pub struct Console {
    sessions: Sessions,
    counts: Mutex<Option<CountsAt>>,
}

/// Jobs by flow and state, as counted at a time.
#[derive(Clone)]
pub struct CountsAt {
    pub taken: Instant,
    pub at: Timestamp,
    pub by_flow: BTreeMap<String, StateCounts>,
}

impl Console {
    /// The counts by flow and state, counted again when older than
    /// [`COUNTS_FOR`].
    async fn counts(&self, state: &AppState) -> Result<CountsAt, crate::store::StoreError> {
        let cached = self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(counts) = cached.filter(|c| c.taken.elapsed() < COUNTS_FOR) {
            return Ok(counts);
        }
        let by_flow = state.store.jobs_count_by_flow().await?;
        let fresh = CountsAt {
            taken: Instant::now(),
            at: state.clock.now(),
            by_flow,
        };
        *self.counts.lock().unwrap_or_else(|e| e.into_inner()) = Some(fresh.clone());
        Ok(fresh)
    }

    /// Forgets the counts, after an action that changed them.
    fn recount(&self) {
        *self.counts.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The console's routes, behind its session guard.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/ui",
            get(|| async { axum::response::Redirect::to("/ui/") }),
        )
        .route("/ui/", get(overview::show))
        .route("/ui/login", get(overview::login_page).post(overview::login))
        .route("/ui/logout", post(overview::logout))
        .route("/ui/flows/{flow}/pause", post(overview::pause))
        .route("/ui/flows/{flow}/resume", post(overview::resume))
        .route("/ui/jobs", get(jobs::list))
        .route("/ui/jobs/{id}", get(jobs::show))
        .route("/ui/jobs/{id}/payload", post(jobs::edit))
        .route("/ui/jobs/{id}/retry", post(jobs::retry))
        .route("/ui/jobs/{id}/cancel", post(jobs::cancel))
        .route("/ui/retry", post(bulk::start))
        .route("/ui/operations/{id}", get(bulk::progress))
        .route("/ui/channels", get(channels::list))
        .route("/ui/policy", get(channels::policy))
        .route("/ui/assets/console.css", get(stylesheet))
        .layer(axum::middleware::map_response(secure))
        .layer(axum::middleware::from_fn_with_state(state, session::guard))
}

/// A console path that is no page: a page saying so.
pub fn not_found() -> Response {
    layout::refusal(
        axum::http::StatusCode::NOT_FOUND,
        "No such page in the console. The overview links to every page.",
    )
}

async fn secure(response: Response) -> Response {
    layout::secure(response)
}

const STYLESHEET: &str = include_str!("console.css");

async fn stylesheet() -> Response {
    let mut response = STYLESHEET.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}
