//! Which queue of a topic a message goes to: a stable hash of its key, or for a message without
//! a key the topic's sticky queue (or round robin).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// FNV-1a, 32 bits: stable across builds, platforms and languages, so that every producer (in
/// any process or version) sends a key to the same queue while the queue count stays the same.
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in bytes {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The queue for `key` among `queue_count` queues; `None` for an empty key (no key).
///
/// ```
/// use smq_client::producer::queue_for_key;
///
/// let queue = queue_for_key(b"customer-42", 8).unwrap();
/// assert!(queue < 8);
/// assert_eq!(queue_for_key(b"customer-42", 8), Some(queue), "the same key, the same queue");
/// assert_eq!(queue_for_key(b"", 8), None);
/// ```
pub fn queue_for_key(key: &[u8], queue_count: u32) -> Option<u32> {
    assert!(queue_count > 0, "a topic has at least one queue");
    (!key.is_empty()).then(|| fnv1a_32(key) % queue_count)
}

/// Hands out queues in turn to messages without a key.
#[derive(Debug, Default)]
pub(crate) struct RoundRobin {
    next: AtomicU32,
}

impl RoundRobin {
    pub(crate) fn next(&self, queue_count: u32) -> u32 {
        self.next.fetch_add(1, Ordering::Relaxed) % queue_count
    }
}

/// The default `sticky_queue_bytes`: 16 KiB, Kafka's default `batch.size`, which its sticky
/// partitioner (since Kafka 2.4) uses as the bytes a partition gets before the next.
pub const STICKY_QUEUE_BYTES_DEFAULT: usize = 16 * 1024;

/// Keeps the messages without a key of each topic on one queue until `bytes` of them went
/// there, then moves the topic on to its next queue: Kafka's uniform sticky partitioner
/// (KIP-794). Over many queues a message at a time in turn leaves each queue's batch with a
/// message or two; sticking fills batches, and over time every queue gets the same share.
#[derive(Debug)]
pub(crate) struct StickyQueues {
    bytes: usize,
    /// Per topic: the queue (an index into its writable queues) and the bytes sent to it.
    topics: Mutex<HashMap<Arc<str>, (u32, usize)>>,
}

impl StickyQueues {
    pub(crate) fn new(bytes: usize) -> StickyQueues {
        StickyQueues {
            bytes,
            topics: Mutex::new(HashMap::new()),
        }
    }

    /// The queue (of `queue_count`) of `topic` a message of `message_bytes` goes to first.
    pub(crate) fn next(&self, topic: &Arc<str>, queue_count: u32, message_bytes: usize) -> u32 {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let (queue, bytes) = match topics.get_mut(topic) {
            Some(sticky) => sticky,
            None => topics.entry(topic.clone()).or_insert((0, 0)),
        };
        if *bytes >= self.bytes {
            *queue += 1;
            *bytes = 0;
        }
        *bytes += message_bytes;
        *queue % queue_count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_values() {
        // From the FNV reference test vectors.
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn one_key_always_goes_to_one_queue_and_keys_spread() {
        let mut used = [0u32; 8];
        for i in 0..1000 {
            let key = format!("key-{i}");
            let queue = queue_for_key(key.as_bytes(), 8).unwrap();
            assert_eq!(queue_for_key(key.as_bytes(), 8), Some(queue));
            used[queue as usize] += 1;
        }
        assert!(used.iter().all(|count| *count > 60), "{used:?}");
    }

    #[test]
    fn messages_without_key_go_round_robin() {
        let round_robin = RoundRobin::default();
        let queues: Vec<u32> = (0..7).map(|_| round_robin.next(3)).collect();
        assert_eq!(queues, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(queue_for_key(b"", 3), None);
    }

    #[test]
    fn messages_without_key_stick_to_a_queue_for_the_sticky_bytes_then_move_on() {
        let sticky = StickyQueues::new(300);
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let queues: Vec<u32> = (0..10).map(|_| sticky.next(&a, 3, 100)).collect();
        assert_eq!(queues, [0, 0, 0, 1, 1, 1, 2, 2, 2, 0]);
        assert_eq!(sticky.next(&b, 3, 1000), 0, "each topic its own");
        assert_eq!(
            sticky.next(&b, 3, 1),
            1,
            "a message above the bytes moves on after it"
        );
        assert_eq!(
            sticky.next(&a, 2, 100),
            1,
            "queue 3 of a topic now of 2 queues"
        );
    }
}
