//! Unknown tokens, counted by client address: past [`MOST_UNKNOWN`] in a
//! [`WINDOW`], an address gets 429 for the rest of the window, before any
//! secret it sends is compared, on the API and the console's login alike.
//! A token is a secret someone chose; this keeps guessing it slow (at most
//! 20 a minute from one address) however short it is.
//!
//! Behind a proxy every client shares the proxy's address: one client
//! guessing then holds the others back for the rest of the minute, which is
//! the safer way round.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an address's unknown tokens are counted.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Unknown tokens an address may send in a window.
pub const MOST_UNKNOWN: u32 = 20;

/// Addresses remembered at most; past this, windows that ended are
/// forgotten first, then the oldest.
const MOST_ADDRESSES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Count {
    since: Instant,
    unknown: u32,
}

/// Unknown tokens by client address, on this node.
#[derive(Debug, Default)]
pub struct Guesses {
    by_address: Mutex<HashMap<IpAddr, Count>>,
}

impl Guesses {
    /// How long `address` must wait before a token of its is compared
    /// again; `None`: it may try now.
    pub fn refused(&self, address: IpAddr, now: Instant) -> Option<Duration> {
        let by_address = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        let count = by_address.get(&address)?;
        let ends = count.since + WINDOW;
        (count.unknown >= MOST_UNKNOWN && now < ends).then(|| ends - now)
    }

    /// Counts an unknown token from `address`; true when this one reached
    /// the limit (worth a line in the log).
    pub fn unknown(&self, address: IpAddr, now: Instant) -> bool {
        let mut by_address = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        if by_address.len() >= MOST_ADDRESSES && !by_address.contains_key(&address) {
            by_address.retain(|_, count| now < count.since + WINDOW);
            if by_address.len() >= MOST_ADDRESSES {
                let oldest = by_address
                    .iter()
                    .min_by_key(|(_, count)| count.since)
                    .map(|(address, _)| *address);
                if let Some(oldest) = oldest {
                    by_address.remove(&oldest);
                }
            }
        }
        let count = by_address.entry(address).or_insert(Count {
            since: now,
            unknown: 0,
        });
        if now >= count.since + WINDOW {
            *count = Count {
                since: now,
                unknown: 0,
            };
        }
        count.unknown = count.unknown.saturating_add(1);
        count.unknown == MOST_UNKNOWN
    }
}

/// The client's address, as the server saw the connection (`None` where a
/// request did not come through it).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub Option<IpAddr>);

impl ClientAddress {
    pub fn of(extensions: &axum::http::Extensions) -> Self {
        Self(
            extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0.ip()),
        )
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self::of(&parts.extensions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn an_address_past_its_unknown_tokens_waits_for_the_window_to_end() {
        let guesses = Guesses::default();
        let t0 = Instant::now();
        for n in 1..MOST_UNKNOWN {
            assert!(!guesses.unknown(ip(1), t0), "{n}");
            assert_eq!(guesses.refused(ip(1), t0), None);
        }
        assert!(guesses.unknown(ip(1), t0), "the limit is reached");
        let later = t0 + Duration::from_secs(15);
        assert_eq!(guesses.refused(ip(1), later), Some(Duration::from_secs(45)));
        assert_eq!(guesses.refused(ip(2), later), None, "others may try");
        let next_window = t0 + WINDOW;
        assert_eq!(guesses.refused(ip(1), next_window), None);
        assert!(!guesses.unknown(ip(1), next_window), "counted afresh");
    }

    #[test]
    fn the_addresses_remembered_are_bounded() {
        let guesses = Guesses::default();
        let t0 = Instant::now();
        for n in 0..(MOST_ADDRESSES + 5) {
            let address = IpAddr::from(std::net::Ipv6Addr::from(n as u128));
            guesses.unknown(address, t0 + Duration::from_millis(n as u64));
        }
        let remembered = guesses.by_address.lock().unwrap().len();
        assert_eq!(remembered, MOST_ADDRESSES);
    }
}
