//! What becomes of a batch its broker did not acknowledge: whether the failure says that the
//! broker's group cannot take writes now (so messages without a key go to another group at
//! once) and whether the failed attempt may have stored the batch anyway (a resend may then
//! duplicate it: at least once), the batch rebuilt for another queue, and the producer's count
//! of what it sent again. Pure: no IO, no clock.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Error;
use crate::protocol::record_batch::{BatchBuilder, BatchView};
use crate::protocol::ErrorCode;

/// A failed attempt whose broker group cannot take the batch now: the broker died or hung (the
/// connection ended, no answer within the attempt timeout) or said it cannot store (fenced log,
/// flush or slave too slow, no slave in sync, not the master, shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupDown {
    /// Whether the failed attempt may have stored the batch: sending it again may store its
    /// messages twice.
    pub(crate) maybe_stored: bool,
}

impl GroupDown {
    /// What `error` says of the broker group, if it says it cannot take writes now; `None` for
    /// the failures that another group would answer alike (bad input, unknown topic). `sent`:
    /// the request reached the connection (a failure before that stored nothing).
    pub(crate) fn of(error: &Error, sent: bool) -> Option<GroupDown> {
        let maybe_stored = match error {
            Error::Connect { .. } => false,
            Error::ConnectionClosed { .. } | Error::Timeout { .. } => sent,
            Error::Broker { .. } => match error.code()? {
                // Written to the master's log, not confirmed in time (or fenced while syncing).
                ErrorCode::FlushTimeout
                | ErrorCode::ReplicationTimeout
                | ErrorCode::StorageError => true,
                // Refused before anything was written.
                ErrorCode::NoSlave | ErrorCode::NotMaster | ErrorCode::BrokerShuttingDown => false,
                _ => return None,
            },
            _ => return None,
        };
        Some(GroupDown { maybe_stored })
    }
}

/// For each message of `batch`, in order, whether it has a key.
pub(crate) fn keyed_messages(batch: &[u8]) -> Vec<bool> {
    view(batch)
        .messages()
        .map(|message| !message.key.is_empty())
        .collect()
}

/// The messages of `batch` without a key, as a batch for `queue_id` (same topic, same
/// timestamps); `None` if every message has a key.
pub(crate) fn unkeyed_for_queue(batch: &[u8], queue_id: u32) -> Option<Vec<u8>> {
    let view = view(batch);
    let mut builder = BatchBuilder::with_capacity(view.topic(), queue_id, batch.len());
    for message in view.messages().filter(|message| message.key.is_empty()) {
        builder.push(&message.to_message());
    }
    (!builder.is_empty()).then(|| builder.finish())
}

/// A batch this producer built.
fn view(batch: &[u8]) -> BatchView<'_> {
    BatchView::parse_with_limit(batch, usize::MAX).expect("the producer built a valid batch")
}

/// What the producer sent again, since it started: [`crate::Producer::metrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerMetrics {
    /// Batches sent again to another broker group after theirs could not take them.
    pub batches_resent: u64,
    /// Messages in those batches.
    pub messages_resent: u64,
    /// Of those, the messages the failed attempt may have stored (the connection ended or no
    /// answer came in time after the batch was sent, the flush or the slave was too slow):
    /// each may be stored twice, once in each group. The others were refused unwritten.
    pub messages_maybe_duplicated: u64,
}

/// The counters behind [`ProducerMetrics`].
#[derive(Debug, Default)]
pub(crate) struct ResendCounters {
    batches: AtomicU64,
    messages: AtomicU64,
    maybe_duplicated: AtomicU64,
}

impl ResendCounters {
    pub(crate) fn count(&self, messages: usize, down: GroupDown) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.messages.fetch_add(messages as u64, Ordering::Relaxed);
        if down.maybe_stored {
            self.maybe_duplicated
                .fetch_add(messages as u64, Ordering::Relaxed);
        }
    }

    /// Batches resent so far.
    pub(crate) fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    pub(crate) fn snapshot(&self) -> ProducerMetrics {
        ProducerMetrics {
            batches_resent: self.batches(),
            messages_resent: self.messages.load(Ordering::Relaxed),
            messages_maybe_duplicated: self.maybe_duplicated.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record_batch::{self, Message};
    use crate::protocol::ApiKey;

    #[test]
    fn only_failures_of_the_group_resend_and_those_after_sending_may_duplicate() {
        let broker = |code| Error::broker(ApiKey::Produce, code, "x");
        let lost = Error::ConnectionClosed {
            broker: "b".into(),
            reason: "reset".into(),
        };
        let down = |maybe_stored| Some(GroupDown { maybe_stored });
        assert_eq!(GroupDown::of(&lost, true), down(true));
        assert_eq!(GroupDown::of(&lost, false), down(false), "never sent");
        assert_eq!(
            GroupDown::of(&broker(ErrorCode::NoSlave), true),
            down(false)
        );
        assert_eq!(
            GroupDown::of(&broker(ErrorCode::ReplicationTimeout), true),
            down(true)
        );
        for other in [ErrorCode::UnknownTopic, ErrorCode::CorruptBatch] {
            assert_eq!(GroupDown::of(&broker(other), true), None, "{other}");
        }
        let too_large = Error::MessageTooLarge {
            bytes: 2,
            limit_bytes: 1,
        };
        assert_eq!(GroupDown::of(&too_large, true), None);
    }

    #[test]
    fn a_rebuilt_batch_keeps_the_unkeyed_messages_for_the_new_queue() {
        let mut keyed = Message::from_body("keyed");
        keyed.key = b"k".to_vec();
        let mut tagged = Message::from_body("two");
        tagged.tag = "t".into();
        tagged.headers = vec![("h".into(), b"v".to_vec())];
        let messages = [Message::from_body("one"), keyed.clone(), tagged.clone()];
        let batch = record_batch::encode("orders", 3, &messages);
        assert_eq!(keyed_messages(&batch), [false, true, false]);
        let rebuilt = unkeyed_for_queue(&batch, 7).unwrap();
        let view = BatchView::parse(&rebuilt).unwrap();
        assert_eq!((view.topic(), view.queue_id()), ("orders", 7));
        let bodies: Vec<Message> = view.messages().map(|m| m.to_message()).collect();
        assert_eq!(bodies, [messages[0].clone(), tagged]);
        let only_keyed = record_batch::encode("orders", 3, &[keyed]);
        assert_eq!(unkeyed_for_queue(&only_keyed, 7), None);
    }
}
