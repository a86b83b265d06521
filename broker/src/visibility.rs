//! The long polls of batches appended but not yet visible to consumers (under `--flush sync` or
//! `--replication sync`), woken by whichever event makes them visible: on a master under
//! synchronous replication, the slave's acknowledgement as its replication connection reads
//! it, so that a consumer is answered without a hop through the produce's own task; otherwise
//! (and as a fallback) the produce's task once its batch is fsynced and acknowledged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::state::TopicState;

/// The queues with a batch not visible yet, by the log position where the batch ends.
#[derive(Default)]
pub struct PendingVisibility {
    by_end: Mutex<BTreeMap<u64, (Arc<TopicState>, u32)>>,
}

impl PendingVisibility {
    /// A batch of `queue` ending at log position `end` was appended and is not visible yet.
    pub fn add(&self, end: u64, topic: Arc<TopicState>, queue: u32) {
        self.lock().insert(end, (topic, queue));
    }

    /// The log is visible below `visible`: wakes the long polls of each queue with a batch there.
    /// Whoever advances the visible position calls this after advancing it, and whoever adds a
    /// batch calls it after adding, so that no batch is missed between the two. Returns whether
    /// it woke any queue.
    pub fn wake_visible(&self, visible: u64) -> bool {
        let ready = {
            let mut by_end = self.lock();
            match by_end.first_key_value() {
                Some((&end, _)) if end <= visible => {
                    let later = by_end.split_off(&visible.saturating_add(1));
                    std::mem::replace(&mut *by_end, later)
                }
                _ => return false,
            }
        };
        for (topic, queue) in ready.into_values() {
            topic.appended(queue).notify_waiters();
        }
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (Arc<TopicState>, u32)>> {
        self.by_end.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The long polls a request's appends made ready, woken once the request's own answer is handed
/// to its writer (or when this is dropped, whatever happens first). Woken after the answer,
/// the consumer's long poll is answered before the producer (woken while the batch was appended,
/// it was answered after it), the consumer being the hop on the end-to-end path (BENCHMARKS.md,
/// "Session 18: consumers woken after the produce's answer").
#[derive(Default)]
pub struct Wakes {
    queues: Vec<(Arc<TopicState>, u32)>,
}

impl Wakes {
    /// `queue` of `topic` has a new visible batch.
    pub fn add(&mut self, topic: &Arc<TopicState>, queue: u32) {
        self.queues.push((topic.clone(), queue));
    }

    /// Wakes the long polls of every queue added.
    pub fn wake(&mut self) {
        for (topic, queue) in self.queues.drain(..) {
            topic.appended(queue).notify_waiters();
        }
    }
}

impl Drop for Wakes {
    fn drop(&mut self) {
        self.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::topics::TopicConfig;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Waker};
    use tokio::sync::futures::Notified;

    fn topic(queues: u32) -> Arc<TopicState> {
        Arc::new(TopicState::new(&TopicConfig {
            name: "t".into(),
            id: 1,
            start_position: 0,
            queues,
            readable: true,
            writable: true,
        }))
    }

    /// Whether a long poll's wait (enabled before) has been woken.
    fn woken(waiter: &mut Pin<&mut Notified<'_>>) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        waiter.as_mut().poll(&mut cx).is_ready()
    }

    #[test]
    fn a_queue_is_woken_once_the_end_of_its_batch_is_visible_and_not_before() {
        let pending = PendingVisibility::default();
        let topic = topic(2);
        pending.add(100, topic.clone(), 0);
        pending.add(250, topic.clone(), 1);
        let first = topic.appended(0).notified();
        let second = topic.appended(1).notified();
        tokio::pin!(first, second);
        first.as_mut().enable();
        second.as_mut().enable();

        pending.wake_visible(99);
        assert!(!woken(&mut first) && !woken(&mut second));
        pending.wake_visible(100);
        assert!(woken(&mut first), "the batch ending at 100 is visible");
        assert!(!woken(&mut second), "the batch ending at 250 is not");
        pending.wake_visible(300);
        assert!(woken(&mut second));
        assert!(pending.lock().is_empty(), "woken batches are forgotten");
    }

    #[test]
    fn long_polls_added_to_wakes_wake_when_told_or_when_dropped_and_not_before() {
        let topic = topic(2);
        let told = topic.appended(0).notified();
        let dropped = topic.appended(1).notified();
        tokio::pin!(told, dropped);
        told.as_mut().enable();
        dropped.as_mut().enable();

        let mut wakes = Wakes::default();
        wakes.add(&topic, 0);
        assert!(!woken(&mut told), "not before the answer is handed on");
        wakes.wake();
        assert!(woken(&mut told));

        wakes.add(&topic, 1);
        assert!(!woken(&mut dropped));
        drop(wakes);
        assert!(woken(&mut dropped), "a dropped Wakes loses no wake-up");
    }
}
