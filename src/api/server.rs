//! The API's listener: HTTP/1.1 connections, bounded and timed.
//!
//! `axum::serve` holds a connection that never finishes its request headers
//! forever, before any authentication runs: a few hundred such connections
//! used up the process's file descriptors, after which submissions timed out
//! and reloads failed with "Too many open files". Here:
//!
//! - a connection that has not sent its request headers within
//!   [`ServeConfig::header_timeout`] (10 s) is closed;
//! - at most [`ServeConfig::max_connections`] are open at once; more wait in
//!   the kernel's backlog. The bound never exceeds what the process's file
//!   descriptor limit leaves after a reserve for the step log, the policy
//!   watcher and outgoing deliveries;
//! - an `accept` that fails (the descriptor limit reached anyway) is retried
//!   after a pause instead of ending the server.
//!
//! Shutdown stops accepting, then lets the requests in flight finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::Layer;

/// How the listener bounds its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// Open connections at most; more wait to be accepted.
    pub max_connections: usize,
    /// A connection that has not sent a request's headers within this is
    /// closed.
    pub header_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// File descriptors kept out of the connection bound: the step log's
/// files and connections, the policy watcher, outgoing deliveries.
const DESCRIPTOR_RESERVE: u64 = 128;

/// The pause after an `accept` that failed, before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// `max_connections` lowered, if need be, to what the file descriptor limit
/// allows beside the reserve. Raises the soft limit to the hard one first,
/// as most servers do.
pub fn connection_bound(max_connections: usize) -> usize {
    let Some(limit) = descriptor_limit() else {
        return max_connections;
    };
    let room = limit.saturating_sub(DESCRIPTOR_RESERVE).max(16);
    let bound = max_connections.min(usize::try_from(room).unwrap_or(usize::MAX));
    if bound < max_connections {
        tracing::warn!(
            max_connections,
            bound,
            descriptor_limit = limit,
            "--max-connections lowered to fit the open file limit (raise `ulimit -n` for more)"
        );
    }
    bound.max(1)
}

#[cfg(unix)]
fn descriptor_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

#[cfg(not(unix))]
fn descriptor_limit() -> Option<u64> {
    None
}

/// Serves `router` on `listener` until `shutdown` completes, then waits for
/// the requests in flight.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if !is_connection_error(&error) {
                        tracing::warn!(%error, "accepting an API connection failed; retrying");
                        tokio::time::sleep(ACCEPT_RETRY).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // The client's address, for the count of unknown tokens.
        let service = TowerToHyperService::new(
            axum::Extension(axum::extract::ConnectInfo(peer)).layer(router.clone()),
        );
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that goes away mid-request is not the server's error.
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Errors of one connection that say nothing about the listener.
fn is_connection_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_leaves_room_for_the_engine_itself() {
        let limit = descriptor_limit().expect("unix");
        let bound = connection_bound(usize::MAX);
        assert!(bound as u64 <= limit.saturating_sub(DESCRIPTOR_RESERVE).max(16));
        assert_eq!(connection_bound(3), 3);
    }
}
