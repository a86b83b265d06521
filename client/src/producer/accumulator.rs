//! Collects messages into one open batch per topic-queue and says when a batch is ready: when
//! it reached the batch size, or when its first message waited the linger time. Pure: the time
//! is passed in, nothing is sent from here.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::protocol::record_batch::{BatchBuilder, Message};

/// A batch ready to send, with what each of its messages waits on, in message order.
#[derive(Debug)]
pub(crate) struct ReadyBatch<T> {
    pub(crate) topic: String,
    pub(crate) queue_id: u32,
    pub(crate) batch: Vec<u8>,
    pub(crate) waiters: Vec<T>,
    /// When its first message arrived: the send timeout counts from here.
    pub(crate) opened: Instant,
}

#[derive(Debug)]
struct OpenBatch<T> {
    builder: BatchBuilder,
    waiters: Vec<T>,
    /// When its first message arrived.
    opened: Instant,
    /// When the batch must go even if it is not full: its first message's arrival plus linger.
    deadline: Instant,
}

/// Open batches by topic, then queue.
#[derive(Debug)]
pub(crate) struct Accumulator<T> {
    batch_bytes: usize,
    linger: Duration,
    open: HashMap<String, HashMap<u32, OpenBatch<T>>>,
}

impl<T> Accumulator<T> {
    /// Batches are sent once they hold `batch_bytes` (or would pass it with the next message),
    /// or `linger` after their first message.
    pub(crate) fn new(batch_bytes: usize, linger: Duration) -> Accumulator<T> {
        Accumulator {
            batch_bytes,
            linger,
            open: HashMap::new(),
        }
    }

    /// Adds `message` to the open batch of its topic-queue and pushes onto `ready` whatever
    /// batches must go now: the open one if the message does not fit in it any more, and the
    /// new one if it is full. A message larger than `batch_bytes` travels alone.
    pub(crate) fn append(
        &mut self,
        topic: &str,
        queue_id: u32,
        message: &Message,
        waiter: T,
        now: Instant,
        ready: &mut Vec<ReadyBatch<T>>,
    ) {
        let queues = match self.open.get_mut(topic) {
            Some(queues) => queues,
            None => self.open.entry(topic.to_owned()).or_default(),
        };
        let message_bytes = message.encoded_len();
        if let Some(open) = queues.get(&queue_id) {
            if open.builder.len() + message_bytes > self.batch_bytes {
                let open = queues.remove(&queue_id).expect("just seen");
                ready.push(seal(topic, queue_id, open));
            }
        }
        let batch_bytes = self.batch_bytes;
        let open = queues.entry(queue_id).or_insert_with(|| OpenBatch {
            builder: BatchBuilder::with_capacity(topic, queue_id, batch_bytes.max(message_bytes)),
            waiters: Vec::new(),
            opened: now,
            deadline: now + self.linger,
        });
        open.builder.push(message);
        open.waiters.push(waiter);
        if open.builder.len() >= self.batch_bytes {
            let open = queues.remove(&queue_id).expect("just filled");
            ready.push(seal(topic, queue_id, open));
        }
    }

    /// The earliest time an open batch must go, if any batch is open.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.open
            .values()
            .flat_map(|queues| queues.values())
            .map(|open| open.deadline)
            .min()
    }

    /// Pushes onto `ready` every open batch whose linger time is over at `now`.
    pub(crate) fn take_expired(&mut self, now: Instant, ready: &mut Vec<ReadyBatch<T>>) {
        self.take_where(ready, |open| open.deadline <= now);
    }

    /// Pushes onto `ready` every open batch (flush, close).
    pub(crate) fn take_all(&mut self, ready: &mut Vec<ReadyBatch<T>>) {
        self.take_where(ready, |_| true);
    }

    fn take_where(
        &mut self,
        ready: &mut Vec<ReadyBatch<T>>,
        mut take: impl FnMut(&OpenBatch<T>) -> bool,
    ) {
        for (topic, queues) in &mut self.open {
            let mut due: Vec<u32> = queues
                .iter()
                .filter(|(_, open)| take(open))
                .map(|(queue_id, _)| *queue_id)
                .collect();
            due.sort_unstable();
            for queue_id in due {
                let open = queues.remove(&queue_id).expect("listed above");
                ready.push(seal(topic, queue_id, open));
            }
        }
        self.open.retain(|_, queues| !queues.is_empty());
    }
}

fn seal<T>(topic: &str, queue_id: u32, open: OpenBatch<T>) -> ReadyBatch<T> {
    ReadyBatch {
        topic: topic.to_owned(),
        queue_id,
        batch: open.builder.finish(),
        waiters: open.waiters,
        opened: open.opened,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record_batch::BatchView;

    fn message(body_bytes: usize) -> Message {
        Message {
            body: vec![7; body_bytes],
            timestamp_ms: 1_700_000_000_000,
            ..Message::default()
        }
    }

    fn bodies(batch: &ReadyBatch<u32>) -> usize {
        BatchView::parse(&batch.batch).unwrap().messages().count()
    }

    #[test]
    fn batch_goes_when_the_next_message_would_pass_the_batch_size() {
        let now = Instant::now();
        let one = message(100).encoded_len();
        // Room for the header and exactly three messages.
        let mut accumulator = Accumulator::new(72 + 1 + 3 * one + one / 2, Duration::from_secs(60));
        let mut ready = Vec::new();
        for i in 0..3 {
            accumulator.append("t", 0, &message(100), i, now, &mut ready);
        }
        assert!(ready.is_empty(), "three messages fit");
        accumulator.append("t", 0, &message(100), 3, now, &mut ready);
        assert_eq!(
            ready.len(),
            1,
            "the fourth does not fit: the first three go"
        );
        assert_eq!(ready[0].waiters, [0, 1, 2]);
        assert_eq!(bodies(&ready[0]), 3);
        assert!(
            accumulator.next_deadline().is_some(),
            "the fourth waits in a new batch"
        );
    }

    #[test]
    fn batch_goes_at_once_when_full_and_a_large_message_travels_alone() {
        let now = Instant::now();
        let mut accumulator = Accumulator::new(1000, Duration::from_secs(60));
        let mut ready = Vec::new();
        accumulator.append("t", 1, &message(10), 0, now, &mut ready);
        accumulator.append("t", 1, &message(5000), 1, now, &mut ready);
        assert_eq!(ready.len(), 2);
        assert_eq!(ready[0].waiters, [0]);
        assert_eq!(ready[1].waiters, [1]);
        assert_eq!(ready[1].queue_id, 1);
        assert_eq!(accumulator.next_deadline(), None);
    }

    #[test]
    fn batch_goes_after_linger_from_its_first_message() {
        let start = Instant::now();
        let linger = Duration::from_millis(5);
        let mut accumulator = Accumulator::new(1 << 20, linger);
        let mut ready = Vec::new();
        accumulator.append("t", 0, &message(10), 0, start, &mut ready);
        accumulator.append(
            "t",
            0,
            &message(10),
            1,
            start + Duration::from_millis(4),
            &mut ready,
        );
        assert_eq!(accumulator.next_deadline(), Some(start + linger));
        accumulator.take_expired(start + Duration::from_millis(4), &mut ready);
        assert!(ready.is_empty(), "not yet");
        accumulator.take_expired(start + linger, &mut ready);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].waiters, [0, 1]);
        assert_eq!(accumulator.next_deadline(), None);
    }

    #[test]
    fn each_topic_queue_has_its_own_batch_and_take_all_empties_them() {
        let now = Instant::now();
        let mut accumulator = Accumulator::new(1 << 20, Duration::ZERO);
        let mut ready = Vec::new();
        accumulator.append("a", 0, &message(1), 0, now, &mut ready);
        accumulator.append("a", 1, &message(1), 1, now, &mut ready);
        accumulator.append("b", 0, &message(1), 2, now, &mut ready);
        accumulator.append("a", 0, &message(1), 3, now, &mut ready);
        assert!(
            ready.is_empty(),
            "linger 0 batches go when the producer takes expired ones"
        );
        accumulator.take_all(&mut ready);
        ready.sort_by(|x, y| (&x.topic, x.queue_id).cmp(&(&y.topic, y.queue_id)));
        let shape: Vec<(&str, u32, Vec<u32>)> = ready
            .iter()
            .map(|batch| (batch.topic.as_str(), batch.queue_id, batch.waiters.clone()))
            .collect();
        assert_eq!(
            shape,
            [("a", 0, vec![0, 3]), ("a", 1, vec![1]), ("b", 0, vec![2])]
        );
        for batch in &ready {
            let view = BatchView::parse(&batch.batch).unwrap();
            assert_eq!(view.topic(), batch.topic);
            assert_eq!(view.queue_id(), batch.queue_id);
        }
        assert_eq!(accumulator.next_deadline(), None);
    }
}
