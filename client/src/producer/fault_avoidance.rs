//! Brokers the producer just failed to reach, avoided for a while (RocketMQ's fault-tolerant
//! queue choice, simplified): messages without a key go to the other groups' queues until the
//! NameServer drops the broker from the routes or the pause ends and the broker is tried again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a broker that could not be reached is avoided.
pub(crate) const AVOID_FOR: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub(crate) struct Unreachable {
    until: Mutex<HashMap<Arc<str>, Instant>>,
    /// Whether `until` may hold a broker: while it does not, asking costs one atomic load.
    any: AtomicBool,
}

impl Unreachable {
    /// Avoids `broker` until `now + AVOID_FOR`.
    pub(crate) fn mark(&self, broker: &str, now: Instant) {
        let mut until = self.lock();
        until.insert(Arc::from(broker), now + AVOID_FOR);
        self.any.store(true, Ordering::Relaxed);
    }

    /// Whether `broker` is to be avoided now.
    pub(crate) fn avoids(&self, broker: &str) -> bool {
        self.any.load(Ordering::Relaxed) && self.avoids_at(broker, Instant::now())
    }

    /// Whether `broker` is to be avoided at `now`; forgets the pauses that ended.
    fn avoids_at(&self, broker: &str, now: Instant) -> bool {
        let mut until = self.lock();
        until.retain(|_, end| *end > now);
        self.any.store(!until.is_empty(), Ordering::Relaxed);
        until.contains_key(broker)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Instant>> {
        self.until.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_broker_is_avoided_for_the_pause_only() {
        let unreachable = Unreachable::default();
        let now = Instant::now();
        assert!(!unreachable.avoids("a:1"));
        unreachable.mark("a:1", now);
        assert!(unreachable.avoids("a:1"));
        assert!(unreachable.avoids_at("a:1", now + AVOID_FOR / 2));
        assert!(!unreachable.avoids("b:1"));
        assert!(!unreachable.avoids_at("a:1", now + AVOID_FOR));
        assert!(
            !unreachable.any.load(Ordering::Relaxed),
            "an ended pause is forgotten"
        );
    }
}
