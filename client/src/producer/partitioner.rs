//! Which queue of a topic a message goes to: a stable hash of its key, or round robin.

use std::sync::atomic::{AtomicU32, Ordering};

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
}
