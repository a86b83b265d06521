//! Brokers the producer just failed to reach, avoided for a while (RocketMQ's fault-tolerant
//! queue choice, simplified): messages without a key go to the other groups' queues until the
//! NameServer drops the broker from the routes or the pause ends and the broker is tried again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a broker that could not be reached is avoided.
pub(crate) const AVOID_FOR: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub(crate) struct Unreachable {
    until: Mutex<HashMap<Arc<str>, Instant>>,
}

impl Unreachable {
    /// Avoids `broker` until `now + AVOID_FOR`.
    pub(crate) fn mark(&self, broker: &str, now: Instant) {
        let mut until = self.lock();
        until.retain(|_, end| *end > now);
        until.insert(Arc::from(broker), now + AVOID_FOR);
    }

    /// Whether `broker` is to be avoided at `now`.
    pub(crate) fn avoids(&self, broker: &str, now: Instant) -> bool {
        let until = self.lock();
        !until.is_empty() && until.get(broker).is_some_and(|end| *end > now)
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
        assert!(!unreachable.avoids("a:1", now));
        unreachable.mark("a:1", now);
        assert!(unreachable.avoids("a:1", now + AVOID_FOR / 2));
        assert!(!unreachable.avoids("b:1", now));
        assert!(!unreachable.avoids("a:1", now + AVOID_FOR));
    }
}
