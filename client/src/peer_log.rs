//! Warnings about one peer's bad input, at most one line per peer per interval: a peer that
//! sends garbage (or a wrong secret) in a loop gets one line per interval with a count, not a
//! line per request. Shared by the broker's server and the NameServer.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Peers remembered at most; beyond it the oldest entries are forgotten (so a flood of source
/// addresses costs bounded memory and at worst one more line each).
const MAX_PEERS: usize = 10_000;

/// One warning per peer (`K`: an address, with or without its port) per interval.
pub struct PeerLog<K> {
    interval: Duration,
    peers: Mutex<HashMap<K, Entry>>,
}

struct Entry {
    logged_at: Instant,
    /// Warnings not written since `logged_at`.
    suppressed: u64,
}

impl<K: Hash + Eq> PeerLog<K> {
    /// At most one warning per peer per `interval`.
    pub fn new(interval: Duration) -> PeerLog<K> {
        PeerLog {
            interval,
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// The interval between two warnings about one peer.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Whether to write a warning about `peer` now, and how many were left out before it
    /// (`Some(n)`: write it, mentioning the `n` left out; `None`: leave it out).
    pub fn admit(&self, peer: K) -> Option<u64> {
        self.admit_at(peer, Instant::now())
    }

    fn admit_at(&self, peer: K, now: Instant) -> Option<u64> {
        let interval = self.interval;
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = peers.get_mut(&peer) {
            if now.duration_since(entry.logged_at) < interval {
                entry.suppressed += 1;
                return None;
            }
            let suppressed = std::mem::take(&mut entry.suppressed);
            entry.logged_at = now;
            return Some(suppressed);
        }
        if peers.len() >= MAX_PEERS {
            peers.retain(|_, entry| now.duration_since(entry.logged_at) < interval);
        }
        peers.insert(
            peer,
            Entry {
                logged_at: now,
                suppressed: 0,
            },
        );
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    const INTERVAL: Duration = Duration::from_secs(10);

    #[test]
    fn one_line_per_peer_per_interval_with_the_count_left_out() {
        let log = PeerLog::new(INTERVAL);
        let (a, b): (SocketAddr, SocketAddr) =
            ("10.0.0.1:1".parse().unwrap(), "10.0.0.1:2".parse().unwrap());
        let start = Instant::now();
        assert_eq!(log.admit_at(a, start), Some(0));
        assert_eq!(log.admit_at(a, start + Duration::from_secs(1)), None);
        assert_eq!(log.admit_at(a, start + Duration::from_secs(2)), None);
        assert_eq!(
            log.admit_at(b, start + Duration::from_secs(2)),
            Some(0),
            "another peer"
        );
        assert_eq!(log.admit_at(a, start + INTERVAL), Some(2));
        assert_eq!(log.admit_at(a, start + INTERVAL), None);
    }
}
