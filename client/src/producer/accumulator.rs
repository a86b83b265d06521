//! Collects messages into one open batch per topic-queue and says when a batch is ready: when
//! it reached the batch size, or when its first message waited the linger time. Pure: the time
//! is passed in, nothing is sent from here.
//!
//! With many queues (10,000 on a broker) thousands of batches are open at once, so nothing here
//! looks at every open batch: the linger deadlines wait in the order the batches opened (the
//! linger is the same for all), and only the expired ones are taken.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::record_batch::{BatchBuilder, Message};

/// A batch ready to send, with what each of its messages waits on, in message order.
#[derive(Debug)]
pub(crate) struct ReadyBatch<T> {
    pub(crate) topic: Arc<str>,
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
    /// Which opening of its topic-queue this is: a deadline of an earlier batch of the same
    /// topic-queue (sent when it filled) is passed by.
    serial: u64,
}

/// When an open batch must go even if it is not full: its first message's arrival plus linger.
#[derive(Debug)]
struct Deadline {
    at: Instant,
    topic: Arc<str>,
    queue_id: u32,
    serial: u64,
}

/// Open batches by topic, then queue.
#[derive(Debug)]
pub(crate) struct Accumulator<T> {
    batch_bytes: usize,
    linger: Duration,
    open: HashMap<Arc<str>, HashMap<u32, OpenBatch<T>>>,
    /// One per batch opened, in the order they opened, so earliest first (time goes forward
    /// and the linger is the same for every batch); those of batches sent since are dropped as
    /// they come to the front.
    deadlines: VecDeque<Deadline>,
    /// Batches opened so far.
    opened: u64,
    /// Bytes of the batch sent last: what a new batch reserves (see `first_capacity`).
    last_batch_bytes: usize,
    /// Messages of the batch sent last: what a new batch's waiters reserve, so that a batch of
    /// a few messages (many queues) does not grow its list message by message.
    last_batch_messages: usize,
}

impl<T> Accumulator<T> {
    /// Batches are sent once they hold `batch_bytes` (or would pass it with the next message),
    /// or `linger` after their first message.
    pub(crate) fn new(batch_bytes: usize, linger: Duration) -> Accumulator<T> {
        Accumulator {
            batch_bytes,
            linger,
            open: HashMap::new(),
            deadlines: VecDeque::new(),
            opened: 0,
            last_batch_bytes: FIRST_CAPACITY_BYTES,
            last_batch_messages: 0,
        }
    }

    /// Adds `message` to the open batch of its topic-queue and pushes onto `ready` whatever
    /// batches must go now: the open one if the message does not fit in it any more, and the
    /// new one if it is full. A message larger than `batch_bytes` travels alone. The topic is
    /// shared, not copied, by the batch, its deadline and what is sent.
    pub(crate) fn append(
        &mut self,
        topic: &Arc<str>,
        queue_id: u32,
        message: &Message,
        waiter: T,
        now: Instant,
        ready: &mut Vec<ReadyBatch<T>>,
    ) {
        let queues = match self.open.get_mut(&**topic) {
            Some(queues) => queues,
            None => self.open.entry(topic.clone()).or_default(),
        };
        let message_bytes = message.encoded_len();
        if let Some(open) = queues.get(&queue_id) {
            if open.builder.len() + message_bytes > self.batch_bytes {
                let open = queues.remove(&queue_id).expect("just seen");
                (self.last_batch_bytes, self.last_batch_messages) = sizes(&open);
                ready.push(seal(topic.clone(), queue_id, open));
            }
        }
        let open = queues.entry(queue_id).or_insert_with(|| {
            self.opened += 1;
            self.deadlines.push_back(Deadline {
                at: now + self.linger,
                topic: topic.clone(),
                queue_id,
                serial: self.opened,
            });
            OpenBatch {
                builder: BatchBuilder::with_capacity(
                    topic,
                    queue_id,
                    first_capacity(self.last_batch_bytes, self.batch_bytes, message_bytes),
                ),
                waiters: Vec::with_capacity(self.last_batch_messages),
                opened: now,
                serial: self.opened,
            }
        });
        open.builder.push(message);
        open.waiters.push(waiter);
        if open.builder.len() >= self.batch_bytes {
            let open = queues.remove(&queue_id).expect("just filled");
            (self.last_batch_bytes, self.last_batch_messages) = sizes(&open);
            ready.push(seal(topic.clone(), queue_id, open));
        }
    }

    /// The earliest time an open batch must go, if any batch is open.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        self.drop_passed_deadlines();
        self.deadlines.front().map(|deadline| deadline.at)
    }

    /// Pushes onto `ready` every open batch whose linger time is over at `now`, in the order
    /// they opened.
    pub(crate) fn take_expired(&mut self, now: Instant, ready: &mut Vec<ReadyBatch<T>>) {
        self.take_while(ready, |at| at <= now);
    }

    /// Pushes onto `ready` every open batch (flush, close), in the order they opened.
    pub(crate) fn take_all(&mut self, ready: &mut Vec<ReadyBatch<T>>) {
        self.take_while(ready, |_| true);
    }

    /// Seals the open batches of the deadlines at the front while `due` says so.
    fn take_while(&mut self, ready: &mut Vec<ReadyBatch<T>>, due: impl Fn(Instant) -> bool) {
        while let Some(deadline) = self.deadlines.front() {
            if !due(deadline.at) {
                break;
            }
            let deadline = self.deadlines.pop_front().expect("just seen");
            let Some(queues) = self.open.get_mut(&deadline.topic) else {
                continue;
            };
            if queues
                .get(&deadline.queue_id)
                .is_some_and(|open| open.serial == deadline.serial)
            {
                let open = queues.remove(&deadline.queue_id).expect("just seen");
                (self.last_batch_bytes, self.last_batch_messages) = sizes(&open);
                ready.push(seal(deadline.topic, deadline.queue_id, open));
            }
        }
    }

    /// Drops the deadlines at the front that belong to batches sent already (they filled).
    fn drop_passed_deadlines(&mut self) {
        while let Some(deadline) = self.deadlines.front() {
            let still_open = self
                .open
                .get(&deadline.topic)
                .and_then(|queues| queues.get(&deadline.queue_id))
                .is_some_and(|open| open.serial == deadline.serial);
            if still_open {
                break;
            }
            self.deadlines.pop_front();
        }
    }
}

/// What a new batch reserves before the producer has sent one.
const FIRST_CAPACITY_BYTES: usize = 16 * 1024;

/// Bytes a new batch reserves: as many as the batch sent last held (within the batch size, and
/// room for its first message), growing by doubling past that. With many queues a batch often
/// holds a message or two, and reserving the whole 256 KiB for each cost more than the
/// messages; with few, batches fill, and growing each from a little would copy it several times.
fn first_capacity(last_batch_bytes: usize, batch_bytes: usize, message_bytes: usize) -> usize {
    last_batch_bytes.min(batch_bytes).max(message_bytes)
}

/// The bytes and messages of a batch sent now: what the next new batch reserves.
fn sizes<T>(sent: &OpenBatch<T>) -> (usize, usize) {
    (sent.builder.len(), sent.waiters.len())
}

fn seal<T>(topic: Arc<str>, queue_id: u32, open: OpenBatch<T>) -> ReadyBatch<T> {
    ReadyBatch {
        topic,
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
            accumulator.append(&Arc::from("t"), 0, &message(100), i, now, &mut ready);
        }
        assert!(ready.is_empty(), "three messages fit");
        accumulator.append(&Arc::from("t"), 0, &message(100), 3, now, &mut ready);
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
        accumulator.append(&Arc::from("t"), 1, &message(10), 0, now, &mut ready);
        accumulator.append(&Arc::from("t"), 1, &message(5000), 1, now, &mut ready);
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
        accumulator.append(&Arc::from("t"), 0, &message(10), 0, start, &mut ready);
        accumulator.append(
            &Arc::from("t"),
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

    /// A batch sent because it filled leaves its deadline behind: the next batch of the same
    /// queue goes at its own deadline, not at the earlier one.
    #[test]
    fn a_batch_sent_full_takes_its_deadline_with_it() {
        let start = Instant::now();
        let linger = Duration::from_millis(5);
        let one = message(100).encoded_len();
        let mut accumulator = Accumulator::new(72 + 1 + 2 * one, linger);
        let mut ready = Vec::new();
        accumulator.append(&Arc::from("t"), 0, &message(100), 0, start, &mut ready);
        accumulator.append(&Arc::from("u"), 0, &message(100), 1, start, &mut ready);
        accumulator.append(&Arc::from("t"), 0, &message(100), 2, start, &mut ready);
        assert_eq!(ready.len(), 1, "t/0 filled");
        let later = start + Duration::from_millis(3);
        accumulator.append(&Arc::from("t"), 0, &message(100), 3, later, &mut ready);
        assert_eq!(accumulator.next_deadline(), Some(start + linger), "u/0's");
        accumulator.take_expired(start + linger, &mut ready);
        assert_eq!(ready.len(), 2);
        assert_eq!(ready[1].waiters, [1], "u/0 only");
        assert_eq!(
            accumulator.next_deadline(),
            Some(later + linger),
            "the new t/0's"
        );
        accumulator.take_expired(later + linger, &mut ready);
        assert_eq!(ready[2].waiters, [3]);
        assert_eq!(accumulator.next_deadline(), None);
    }

    #[test]
    fn each_topic_queue_has_its_own_batch_and_take_all_empties_them() {
        let now = Instant::now();
        let mut accumulator = Accumulator::new(1 << 20, Duration::ZERO);
        let mut ready = Vec::new();
        accumulator.append(&Arc::from("a"), 0, &message(1), 0, now, &mut ready);
        accumulator.append(&Arc::from("a"), 1, &message(1), 1, now, &mut ready);
        accumulator.append(&Arc::from("b"), 0, &message(1), 2, now, &mut ready);
        accumulator.append(&Arc::from("a"), 0, &message(1), 3, now, &mut ready);
        assert!(
            ready.is_empty(),
            "linger 0 batches go when the producer takes expired ones"
        );
        accumulator.take_all(&mut ready);
        ready.sort_by(|x, y| (&x.topic, x.queue_id).cmp(&(&y.topic, y.queue_id)));
        let shape: Vec<(&str, u32, Vec<u32>)> = ready
            .iter()
            .map(|batch| (&*batch.topic, batch.queue_id, batch.waiters.clone()))
            .collect();
        assert_eq!(
            shape,
            [("a", 0, vec![0, 3]), ("a", 1, vec![1]), ("b", 0, vec![2])]
        );
        for batch in &ready {
            let view = BatchView::parse(&batch.batch).unwrap();
            assert_eq!(view.topic(), &*batch.topic);
            assert_eq!(view.queue_id(), batch.queue_id);
        }
        assert_eq!(accumulator.next_deadline(), None);
    }
}
