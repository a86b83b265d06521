//! The consumer: reads every queue of a topic from an offset with long-poll fetches (one fetch
//! per queue in flight on one connection, the next one sent while the caller handles the last),
//! yields messages with their queue and offset, and commits a group's offsets on the broker.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use tokio::task::JoinSet;

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::protocol::limits::MAX_BATCH_BYTES_DEFAULT;
use crate::protocol::record_batch::{self, BatchView};
use crate::protocol::request::{CommitOffsetRequest, FetchOffsetRequest, FetchRequest};
use crate::protocol::response::FetchResponse;
use crate::protocol::{ApiKey, Request, Response};
use crate::ClientConfig;

/// Where a consumer starts reading a queue for which its group has no committed offset.
///
/// ```
/// use smq_client::StartFrom;
/// assert_eq!("earliest".parse::<StartFrom>().unwrap(), StartFrom::Earliest);
/// assert!("middle".parse::<StartFrom>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// The oldest message still stored.
    #[default]
    Earliest,
    /// The next message produced after the consumer started.
    Latest,
}

impl std::str::FromStr for StartFrom {
    type Err = Error;

    fn from_str(text: &str) -> Result<StartFrom> {
        match text {
            "earliest" => Ok(StartFrom::Earliest),
            "latest" => Ok(StartFrom::Latest),
            other => Err(Error::InvalidArgument(format!(
                "start position `{other}`: use earliest or latest"
            ))),
        }
    }
}

/// One message read from a queue. Key, body and header values share the fetched bytes: reading
/// copies nothing.
///
/// ```
/// use smq_client::ConsumedMessage;
/// let message = ConsumedMessage {
///     queue_id: 0,
///     offset: 41,
///     timestamp_ms: 1_700_000_000_000,
///     key: "k".into(),
///     tag: String::new(),
///     headers: Vec::new(),
///     body: "hello".into(),
/// };
/// assert_eq!(&message.body[..], b"hello");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedMessage {
    pub queue_id: u32,
    /// The message's queue offset; the next one to read is `offset + 1`.
    pub offset: u64,
    pub timestamp_ms: u64,
    /// Empty when the message has no key.
    pub key: Bytes,
    pub tag: String,
    pub headers: Vec<(String, Bytes)>,
    pub body: Bytes,
}

/// Cuts the messages at or above `from_offset` out of the batches of a Fetch response, checking
/// each batch (CRC included), and returns the offset after the last message of the last batch.
/// The first batch may start below `from_offset` (a fetch returns whole batches): its earlier
/// messages are skipped.
pub fn messages_from_batches(
    queue_id: u32,
    batches: &Bytes,
    from_offset: u64,
    out: &mut Vec<ConsumedMessage>,
) -> std::result::Result<u64, String> {
    let mut next_offset = from_offset;
    let mut at = 0;
    while at < batches.len() {
        let total = record_batch::total_len(&batches[at..])
            .filter(|total| at + total <= batches.len())
            .ok_or_else(|| format!("batch at byte {at} runs past the end of the response"))?;
        let bytes = &batches[at..at + total];
        let view = BatchView::parse_with_limit(bytes, MAX_BATCH_BYTES_DEFAULT)
            .map_err(|error| format!("batch at byte {at}: {error}"))?;
        if view.queue_id() != queue_id {
            return Err(format!(
                "batch at byte {at} belongs to queue {}, not {queue_id}",
                view.queue_id()
            ));
        }
        for (index, message) in view.messages().enumerate() {
            let offset = view.base_queue_offset() + index as u64;
            if offset < from_offset {
                continue;
            }
            out.push(ConsumedMessage {
                queue_id,
                offset,
                timestamp_ms: message.timestamp_ms,
                key: batches.slice_ref(message.key),
                tag: message.tag.to_owned(),
                headers: message
                    .headers
                    .iter()
                    .map(|(name, value)| ((*name).to_owned(), batches.slice_ref(value)))
                    .collect(),
                body: batches.slice_ref(message.body),
            });
        }
        next_offset = next_offset.max(view.next_queue_offset());
        at += total;
    }
    Ok(next_offset)
}

/// Reads a topic's queues.
///
/// Each queue is read from its group's committed offset, or where [`StartFrom`] says. Messages
/// of one queue come in offset order; queues are interleaved. [`Consumer::commit`] stores, for
/// each queue, the offset after the last message returned by [`Consumer::poll`].
///
/// ```no_run
/// # async fn example() -> smq_client::Result<()> {
/// use smq_client::{ClientConfig, Consumer, StartFrom};
///
/// let config = ClientConfig::new("127.0.0.1:10911");
/// let mut consumer = Consumer::connect(config, "orders", Some("billing"), StartFrom::Earliest).await?;
/// loop {
///     for message in consumer.poll(1000).await? {
///         println!("{}:{} {:?}", message.queue_id, message.offset, message.body);
///     }
///     consumer.commit().await?;
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Consumer {
    connection: Connection,
    topic: String,
    group: Option<String>,
    fetch_max_bytes: u32,
    fetch_max_wait_ms: u32,
    /// Per queue: the offset after the last message returned to the caller.
    positions: BTreeMap<u32, u64>,
    /// Per queue: the offset last committed.
    committed: BTreeMap<u32, u64>,
    /// Per queue: where the next fetch starts (past what is buffered).
    fetch_offsets: BTreeMap<u32, u64>,
    fetches: JoinSet<(u32, u64, Result<Response>)>,
    buffered: VecDeque<ConsumedMessage>,
}

impl Consumer {
    /// Connects, learns the topic's queues, and starts reading every one of them: from `group`'s
    /// committed offsets where it has one, else from `from`.
    pub async fn connect(
        config: ClientConfig,
        topic: &str,
        group: Option<&str>,
        from: StartFrom,
    ) -> Result<Consumer> {
        config.validate()?;
        let connection = Connection::connect(config.connection_options()).await?;
        let queues = crate::admin::describe_topic(&connection, topic)
            .await?
            .queues;
        let mut consumer = Consumer {
            connection,
            topic: topic.to_owned(),
            group: group.map(str::to_owned),
            fetch_max_bytes: config.fetch_max_bytes,
            fetch_max_wait_ms: config.fetch_max_wait_ms,
            positions: BTreeMap::new(),
            committed: BTreeMap::new(),
            fetch_offsets: BTreeMap::new(),
            fetches: JoinSet::new(),
            buffered: VecDeque::new(),
        };
        let committed = consumer.fetch_committed(&queues).await?;
        for queue in &queues {
            let offset = match committed.get(&queue.queue_id) {
                Some(offset) => *offset,
                None => match from {
                    StartFrom::Earliest => queue.log_start_offset,
                    StartFrom::Latest => queue.high_watermark,
                },
            };
            consumer.seek(queue.queue_id, offset);
        }
        consumer.committed = committed;
        Ok(consumer)
    }

    /// The group's committed offsets of these queues (none without a group), asked all at once.
    async fn fetch_committed(
        &self,
        queues: &[crate::protocol::response::QueueMetadata],
    ) -> Result<BTreeMap<u32, u64>> {
        let mut committed = BTreeMap::new();
        let Some(group) = &self.group else {
            return Ok(committed);
        };
        let mut pending = Vec::with_capacity(queues.len());
        for queue in queues {
            let request = Request::FetchOffset(FetchOffsetRequest {
                group: group.clone(),
                topic: self.topic.clone(),
                queue_id: queue.queue_id,
            });
            pending.push((queue.queue_id, self.connection.submit(request).await?));
        }
        for (queue_id, response) in pending {
            match response.wait().await? {
                Response::FetchOffset(fetched) => {
                    if let Some(offset) = fetched.offset {
                        committed.insert(queue_id, offset);
                    }
                }
                _ => return Err(self.connection.unexpected(ApiKey::FetchOffset)),
            }
        }
        Ok(committed)
    }

    /// Reads `queue_id` from `offset` on: messages of that queue buffered or being fetched are
    /// dropped.
    pub fn seek(&mut self, queue_id: u32, offset: u64) {
        self.buffered.retain(|message| message.queue_id != queue_id);
        self.positions.insert(queue_id, offset);
        self.fetch_offsets.insert(queue_id, offset);
        self.start_fetch(queue_id, offset);
    }

    fn start_fetch(&mut self, queue_id: u32, offset: u64) {
        let connection = self.connection.clone();
        let request = Request::Fetch(FetchRequest {
            topic: self.topic.clone(),
            queue_id,
            offset,
            max_bytes: self.fetch_max_bytes,
            max_wait_ms: self.fetch_max_wait_ms,
        });
        self.fetches
            .spawn(async move { (queue_id, offset, connection.request(request).await) });
    }

    /// The next messages, at most `max_messages`: the ones already fetched, or else those of
    /// the next fetch answered. Waits at most about `fetch_max_wait_ms` and may return none.
    pub async fn poll(&mut self, max_messages: usize) -> Result<Vec<ConsumedMessage>> {
        if self.buffered.is_empty() {
            self.fetch_more().await?;
        }
        let count = max_messages.min(self.buffered.len());
        let messages: Vec<ConsumedMessage> = self.buffered.drain(..count).collect();
        for message in &messages {
            self.positions.insert(message.queue_id, message.offset + 1);
        }
        Ok(messages)
    }

    /// Waits for the next fetch answer and buffers its messages.
    async fn fetch_more(&mut self) -> Result<()> {
        let Some(joined) = self.fetches.join_next().await else {
            return Ok(()); // no queue to read
        };
        let (queue_id, offset, response) = joined.map_err(|error| {
            Error::Closed(if error.is_panic() {
                "consumer fetch task (panicked)"
            } else {
                "consumer fetch task"
            })
        })?;
        if self.fetch_offsets.get(&queue_id) != Some(&offset) {
            return Ok(()); // answer to a fetch from before a seek
        }
        let response = match response {
            Ok(Response::Fetch(fetch)) => fetch,
            Ok(_) => {
                self.start_fetch(queue_id, offset);
                return Err(self.connection.unexpected(ApiKey::Fetch));
            }
            Err(error) => {
                self.start_fetch(queue_id, offset);
                return Err(error);
            }
        };
        let next = self.take_messages(queue_id, offset, &response);
        match next {
            Ok(next) => {
                self.fetch_offsets.insert(queue_id, next);
                self.start_fetch(queue_id, next);
                Ok(())
            }
            Err(reason) => {
                self.start_fetch(queue_id, offset);
                Err(Error::Protocol {
                    what: "Fetch response".into(),
                    broker: self.connection.broker().to_owned(),
                    reason,
                })
            }
        }
    }

    fn take_messages(
        &mut self,
        queue_id: u32,
        offset: u64,
        response: &FetchResponse,
    ) -> std::result::Result<u64, String> {
        let mut messages = Vec::new();
        let next = messages_from_batches(queue_id, &response.batches, offset, &mut messages)?;
        self.buffered.extend(messages);
        Ok(next)
    }

    /// Per queue, the offset after the last message [`Consumer::poll`] returned.
    pub fn positions(&self) -> &BTreeMap<u32, u64> {
        &self.positions
    }

    /// Stores the group's position of every queue that moved since the last commit. Without a
    /// group there is nothing to store.
    pub async fn commit(&mut self) -> Result<()> {
        let Some(group) = self.group.clone() else {
            return Ok(());
        };
        let moved: Vec<(u32, u64)> = self
            .positions
            .iter()
            .filter(|(queue_id, offset)| self.committed.get(queue_id) != Some(offset))
            .map(|(queue_id, offset)| (*queue_id, *offset))
            .collect();
        let mut pending = Vec::with_capacity(moved.len());
        for (queue_id, offset) in moved {
            let request = Request::CommitOffset(CommitOffsetRequest {
                group: group.clone(),
                topic: self.topic.clone(),
                queue_id,
                offset,
            });
            pending.push((queue_id, offset, self.connection.submit(request).await?));
        }
        for (queue_id, offset, response) in pending {
            match response.wait().await? {
                Response::CommitOffset => {
                    self.committed.insert(queue_id, offset);
                }
                _ => return Err(self.connection.unexpected(ApiKey::CommitOffset)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record_batch::{BrokerStamp, Message};

    /// A batch as the broker stores it: stamped with its base offset.
    fn stored_batch(queue_id: u32, base_offset: u64, bodies: &[&str]) -> Vec<u8> {
        let messages: Vec<Message> = bodies
            .iter()
            .map(|body| Message::from_body(*body))
            .collect();
        let batch = record_batch::encode("t", queue_id, &messages);
        let view = BatchView::parse(&batch).unwrap();
        let mut stamped = vec![0; batch.len()];
        view.copy_stamped(
            &mut stamped,
            BrokerStamp {
                master_epoch: 0,
                base_queue_offset: base_offset,
                store_timestamp_ms: 1,
            },
        );
        stamped
    }

    #[test]
    fn messages_below_the_requested_offset_in_the_first_batch_are_skipped() {
        let mut bytes = stored_batch(2, 10, &["a", "b", "c", "d"]);
        bytes.extend(stored_batch(2, 14, &["e", "f"]));
        let batches = Bytes::from(bytes);
        let mut out = Vec::new();
        let next = messages_from_batches(2, &batches, 12, &mut out).unwrap();
        let got: Vec<(u64, &[u8])> = out.iter().map(|m| (m.offset, &m.body[..])).collect();
        assert_eq!(got, [(12, &b"c"[..]), (13, b"d"), (14, b"e"), (15, b"f")]);
        assert!(out.iter().all(|m| m.queue_id == 2));
        assert_eq!(next, 16);
    }

    #[test]
    fn an_empty_fetch_keeps_the_offset() {
        let mut out = Vec::new();
        assert_eq!(messages_from_batches(0, &Bytes::new(), 7, &mut out), Ok(7));
        assert!(out.is_empty());
    }

    #[test]
    fn damaged_or_cut_batches_are_errors_not_messages() {
        let mut bytes = stored_batch(0, 0, &["hello"]);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let mut out = Vec::new();
        let error = messages_from_batches(0, &Bytes::from(bytes), 0, &mut out).unwrap_err();
        assert!(error.contains("CRC"), "{error}");
        let bytes = stored_batch(0, 0, &["hello"]);
        let cut = Bytes::copy_from_slice(&bytes[..bytes.len() - 2]);
        let error = messages_from_batches(0, &cut, 0, &mut out).unwrap_err();
        assert!(error.contains("runs past the end"), "{error}");
        assert!(out.is_empty());
    }

    #[test]
    fn a_batch_of_another_queue_is_refused() {
        let batches = Bytes::from(stored_batch(3, 0, &["x"]));
        let error = messages_from_batches(1, &batches, 0, &mut Vec::new()).unwrap_err();
        assert!(error.contains("queue 3"), "{error}");
    }
}
