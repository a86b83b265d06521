//! The consumer: reads the queues of a topic, in every broker group its routes name, from an
//! offset with long-poll fetches (one fetch per queue in flight on its broker's connection, the
//! next one sent while the caller handles the last), yields messages with their broker group,
//! queue and offset, and commits a consumer group's offsets on the broker that holds each queue.
//! With a consumer group and a NameServer, it reads only the queues the NameServer gives this
//! member ([`crate::membership`]); otherwise every queue.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::JoinSet;

use crate::connection::{Connection, ConnectionPool};
use crate::error::{Error, ProtocolViolation, Result};
use crate::membership::{new_member_id, Membership};
use crate::protocol::limits::MAX_BATCH_BYTES_DEFAULT;
use crate::protocol::record_batch::{self, BatchView};
use crate::protocol::request::{CommitOffsetRequest, FetchOffsetRequest, FetchRequest};
use crate::protocol::response::FetchResponse;
use crate::protocol::{ApiKey, ErrorCode, Request, Response};
use crate::routing::{RouteCache, TopicRoutes};
use crate::ClientConfig;

/// How long a queue's fetch waits before it is sent again after it failed (and its topic's
/// routes are asked again, after a retryable error).
pub const FETCH_RETRY_DELAY: Duration = Duration::from_millis(200);
/// How long the consumer waits before applying routes again after a broker in them could not be
/// reached (the routes are asked for again at once).
pub const FOLLOW_RETRY_DELAY: Duration = Duration::from_secs(1);

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
///     broker_group: "g1".into(),
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
    /// The broker group that holds the queue.
    pub broker_group: Arc<str>,
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

/// What is wrong with the batches of a Fetch response ([`messages_from_batches`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchedBatchError {
    #[error("batch at byte {at} runs past the end of the response")]
    PastTheEnd { at: usize },
    #[error("batch at byte {at}: {reason}")]
    Invalid {
        at: usize,
        reason: record_batch::BatchError,
    },
    #[error("batch at byte {at} belongs to queue {found}, not {expected}")]
    OtherQueue {
        at: usize,
        found: u32,
        expected: u32,
    },
}

/// Cuts the messages at or above `from_offset` out of the batches of a Fetch response, checking
/// each batch (CRC included), and returns the offset after the last message of the last batch.
/// The first batch may start below `from_offset` (a fetch returns whole batches): its earlier
/// messages are skipped.
pub fn messages_from_batches(
    broker_group: &Arc<str>,
    queue_id: u32,
    batches: &Bytes,
    from_offset: u64,
    out: &mut Vec<ConsumedMessage>,
) -> std::result::Result<u64, FetchedBatchError> {
    let mut next_offset = from_offset;
    let mut at = 0;
    while at < batches.len() {
        let total = record_batch::total_len(&batches[at..])
            .filter(|total| at + total <= batches.len())
            .ok_or(FetchedBatchError::PastTheEnd { at })?;
        let bytes = &batches[at..at + total];
        let view = BatchView::parse_with_limit(bytes, MAX_BATCH_BYTES_DEFAULT)
            .map_err(|reason| FetchedBatchError::Invalid { at, reason })?;
        if view.queue_id() != queue_id {
            return Err(FetchedBatchError::OtherQueue {
                at,
                found: view.queue_id(),
                expected: queue_id,
            });
        }
        for (index, message) in view.messages().enumerate() {
            let offset = view.base_queue_offset() + index as u64;
            if offset < from_offset {
                continue;
            }
            out.push(ConsumedMessage {
                broker_group: broker_group.clone(),
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

/// A queue whose fetch offset the broker no longer (or not yet) holds, and where the consumer
/// moved it: below the earliest retained offset (retention deleted those messages) or past the
/// end, the fetch got `OFFSET_OUT_OF_RANGE`; or the topic was deleted and created again under
/// its name (the broker group's topic id changed), so the old offset means nothing in the new
/// topic. The queue is read on from the earliest or the latest offset, as [`StartFrom`] says.
/// Logged as a warning (target `smq_client::offset_reset`); [`Consumer::take_offset_resets`]
/// hands it to the caller too (the CLI prints it).
///
/// ```
/// use smq_client::consumer::{OffsetReset, QueueKey, ResetReason};
/// let reset = OffsetReset {
///     topic: "orders".into(),
///     queue: QueueKey { broker_group: "g1".into(), queue_id: 0 },
///     reason: ResetReason::OutOfRange,
///     old_offset: 10,
///     new_offset: 250,
///     earliest_offset: 250,
///     next_offset: 400,
/// };
/// assert_eq!(reset.skipped(), 240);
/// assert_eq!(
///     reset.to_string(),
///     "topic orders queue g1/0: offset 10 is out of range (earliest 250, next 400): \
///      moved to offset 250, 240 messages skipped"
/// );
/// let recreated = OffsetReset {
///     reason: ResetReason::TopicCreatedAgain { old_id: 3, new_id: 9 },
///     old_offset: 120,
///     new_offset: 0,
///     earliest_offset: 0,
///     next_offset: 40,
///     ..reset
/// };
/// assert_eq!(
///     recreated.to_string(),
///     "topic orders queue g1/0: the topic was deleted and created again (id 3, now 9): \
///      offset 120 was the old topic's; reading the new one from offset 0 (earliest 0, next 40)"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetReset {
    pub topic: String,
    pub queue: QueueKey,
    pub reason: ResetReason,
    /// The offset the fetch asked for.
    pub old_offset: u64,
    /// Where the queue is read from now.
    pub new_offset: u64,
    /// The queue's earliest retained offset, as the broker reported it.
    pub earliest_offset: u64,
    /// The queue's next offset (its end), as the broker reported it.
    pub next_offset: u64,
}

/// Why a queue moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// The fetch offset was below the earliest retained offset or past the end.
    OutOfRange,
    /// The topic was deleted and created again under its name (its id in the broker group
    /// changed from `old_id` to `new_id`): the old offset was the old topic's.
    TopicCreatedAgain { old_id: u64, new_id: u64 },
}

impl OffsetReset {
    /// Messages between the old and the new offset that this consumer will never read (none
    /// when it moved back, or to another topic: then the new topic's messages before
    /// `new_offset`, which `--from latest` passes over).
    pub fn skipped(&self) -> u64 {
        match self.reason {
            ResetReason::OutOfRange => self.new_offset.saturating_sub(self.old_offset),
            ResetReason::TopicCreatedAgain { .. } => {
                self.new_offset.saturating_sub(self.earliest_offset)
            }
        }
    }
}

impl std::fmt::Display for OffsetReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let ResetReason::TopicCreatedAgain { old_id, new_id } = self.reason {
            return write!(
                f,
                "topic {} queue {}: the topic was deleted and created again (id {old_id}, now {new_id}): offset {} was the old topic's; reading the new one from offset {} (earliest {}, next {})",
                self.topic,
                self.queue,
                self.old_offset,
                self.new_offset,
                self.earliest_offset,
                self.next_offset
            );
        }
        write!(
            f,
            "topic {} queue {}: offset {} is out of range (earliest {}, next {}): moved to offset {}, {} messages skipped",
            self.topic,
            self.queue,
            self.old_offset,
            self.earliest_offset,
            self.next_offset,
            self.new_offset,
            self.skipped()
        )
    }
}

/// One queue of a topic: its broker group and its number there.
///
/// ```
/// use smq_client::consumer::QueueKey;
/// let key = QueueKey { broker_group: "g1".into(), queue_id: 3 };
/// assert_eq!(key.to_string(), "g1/3");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueKey {
    pub broker_group: Arc<str>,
    pub queue_id: u32,
}

impl QueueKey {
    fn of(message: &ConsumedMessage) -> QueueKey {
        QueueKey {
            broker_group: message.broker_group.clone(),
            queue_id: message.queue_id,
        }
    }

    fn holds(&self, message: &ConsumedMessage) -> bool {
        self.queue_id == message.queue_id && self.broker_group == message.broker_group
    }
}

impl std::fmt::Display for QueueKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.broker_group, self.queue_id)
    }
}

/// Reads a topic's queues.
///
/// The queues are those of every readable broker group in the topic's routes (see
/// [`crate::routing`]), or those of [`ClientConfig::broker`] alone. With a consumer group and a
/// NameServer, the consumer is a member of the group and reads only the queues the NameServer
/// gives it, each owned by one member at a time ([`crate::membership`]). Each queue is read from
/// the consumer group's committed offset, or where [`StartFrom`] says. Messages of one queue come in offset
/// order; queues are interleaved. When the routes change (asked again in the background), the
/// consumer follows: a queue moves to its new broker, a new group's queues are read, and the
/// queues of a group no longer routed are left. While no NameServer answers it goes on with the
/// routes it has. [`Consumer::commit`] stores, for each queue, the offset after the last message
/// returned by [`Consumer::poll`]; `poll` also does so by itself every
/// [`ClientConfig::commit_interval_ms`]. [`Consumer::close`] stops fetching, commits and leaves
/// the consumer group, so that its queues move to the other members at once. A queue whose offset is out of the broker's range (below the
/// earliest retained message, or past the end) moves to the earliest or latest offset as
/// [`StartFrom`] says, with a warning ([`OffsetReset`]), and is read on from there.
///
/// ```no_run
/// # async fn example() -> smq_client::Result<()> {
/// use smq_client::{ClientConfig, Consumer, StartFrom};
///
/// let config = ClientConfig::new("127.0.0.1:10911");
/// let mut consumer = Consumer::connect(config, "orders", Some("billing"), StartFrom::Earliest).await?;
/// loop {
///     for message in consumer.poll(1000).await? {
///         println!("{}/{}:{} {:?}", message.broker_group, message.queue_id, message.offset, message.body);
///     }
///     consumer.commit().await?;
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Consumer {
    routes: Arc<RouteCache>,
    connections: Arc<ConnectionPool>,
    topic: String,
    consumer_group: Option<String>,
    /// With a consumer group and a NameServer: this member's place in the group.
    membership: Option<Membership>,
    /// The membership generation last applied.
    membership_generation: u64,
    /// The queues the membership lets this consumer read (unused without a membership).
    assigned: BTreeSet<QueueKey>,
    /// Revoked queues not released yet (their commit has not succeeded): the broker to commit
    /// on, if the queue was being read.
    releasing: BTreeMap<QueueKey, Option<Arc<str>>>,
    commit_interval: Duration,
    last_commit: Instant,
    from: StartFrom,
    fetch_max_bytes: u32,
    fetch_max_wait_ms: u32,
    /// The routes the queues below follow.
    applied: Option<Arc<TopicRoutes>>,
    /// Routes are not applied before this (after a failure to apply them).
    follow_again_at: tokio::time::Instant,
    /// What this consumer keeps of each queue it reads or has read and not released.
    queues: BTreeMap<QueueKey, QueueState>,
    /// Per broker group: the id of the topic its queues are read from, as its broker's Metadata
    /// said (0: not known, or a broker speaking protocol version 1). Fetches and commits carry
    /// it, so that a topic deleted and created again under the name is noticed, never read or
    /// committed to from the old topic's offsets.
    topic_ids: BTreeMap<Arc<str>, u64>,
    /// Fetches in flight: each answers with its queue, offset and topic id.
    fetches: JoinSet<(QueueKey, u64, u64, Result<Response>)>,
    buffered: VecDeque<ConsumedMessage>,
    /// Queues moved since the caller last took them.
    resets: Vec<OffsetReset>,
}

/// What a [`Consumer`] keeps of one queue. A queue no longer read (its route moved away) keeps
/// its position and commit until it is read again or released.
#[derive(Debug, Default)]
struct QueueState {
    /// While the queue is read: from where.
    reading: Option<Reading>,
    /// The offset after the last message returned to the caller.
    position: Option<u64>,
    /// The offset last committed.
    committed: Option<u64>,
    /// The broker that took it (or answered it, when reading began).
    committed_on: Option<Arc<str>>,
}

impl QueueState {
    fn is_empty(&self) -> bool {
        self.reading.is_none() && self.position.is_none() && self.committed.is_none()
    }

    /// Whether `offset` is to be committed on `broker`: it is not the last commit, or that
    /// went to another broker. A master's commits reach its slave only at its next offsets
    /// copy, so after the master's death the slave may lack the last one: the member commits
    /// it again there (and once more on the master when it is back).
    fn needs_commit(&self, offset: u64, broker: &Arc<str>) -> bool {
        self.committed != Some(offset) || self.committed_on.as_ref() != Some(broker)
    }

    fn committed_on(&mut self, offset: u64, broker: Arc<str>) {
        self.committed = Some(offset);
        self.committed_on = Some(broker);
    }
}

/// How a queue is read.
#[derive(Debug)]
struct Reading {
    /// The broker it is read from.
    broker: Arc<str>,
    /// Where the next fetch starts (past what is buffered).
    fetch_offset: u64,
}

impl Consumer {
    /// Learns the topic's routes, connects to its brokers, and starts reading every queue (with
    /// a consumer group and a NameServer: joins the group and reads the queues it is given): from
    /// `consumer_group`'s committed offsets where it has one, else from `from`. Fails when no
    /// broker of the routes can be reached; the queues of a broker that cannot be reached while
    /// others can are read once it can.
    pub async fn connect(
        config: ClientConfig,
        topic: &str,
        consumer_group: Option<&str>,
        from: StartFrom,
    ) -> Result<Consumer> {
        config.validate()?;
        if let (Some(consumer_group), Some(_)) = (consumer_group, &config.nameserver) {
            crate::nameserver_api::check_consumer_group_name(consumer_group).map_err(|error| {
                Error::InvalidArgument(format!("consumer group {consumer_group:?}: {error}"))
            })?;
        }
        let routes = config.route_cache();
        let current = routes.get(topic).await?;
        if current.readable.is_empty() {
            return Err(Error::NoRoute {
                topic: topic.to_owned(),
                reason: "no broker group serves reads of it".into(),
            });
        }
        let mut consumer = Consumer {
            routes,
            connections: Arc::new(ConnectionPool::new(config.connection_options())),
            topic: topic.to_owned(),
            consumer_group: consumer_group.map(str::to_owned),
            membership: match (consumer_group, &config.nameserver) {
                (Some(consumer_group), Some(nameserver)) => Some(Membership::join(
                    nameserver.clone(),
                    consumer_group,
                    topic,
                    new_member_id(&config.client_id),
                    config.session_timeout_ms,
                )),
                _ => None,
            },
            membership_generation: 0,
            assigned: BTreeSet::new(),
            releasing: BTreeMap::new(),
            commit_interval: Duration::from_millis(config.commit_interval_ms),
            last_commit: Instant::now(),
            from,
            fetch_max_bytes: config.fetch_max_bytes,
            fetch_max_wait_ms: config.fetch_max_wait_ms,
            applied: None,
            follow_again_at: tokio::time::Instant::now(),
            queues: BTreeMap::new(),
            topic_ids: BTreeMap::new(),
            fetches: JoinSet::new(),
            buffered: VecDeque::new(),
            resets: Vec::new(),
        };
        if let Err(error) = consumer.apply_routes(current).await {
            if !consumer
                .queues
                .values()
                .any(|queue| queue.reading.is_some())
            {
                return Err(error);
            }
            consumer.follow_later(&error);
        }
        Ok(consumer)
    }

    /// Logs that some queues of the routes cannot be read yet; they are tried again in a second,
    /// with routes asked for now: the broker may be a master that died and that the NameServer
    /// no longer lists (its group's queues are then read from its slave), and waiting for the
    /// periodic refresh (`route_refresh_ms`) would leave them unread that long.
    fn follow_later(&mut self, error: &Error) {
        tracing::warn!(topic = %self.topic, %error, "cannot read every queue of the routes yet");
        if error.is_retryable() {
            self.routes.refresh_now(&self.topic);
        }
        self.follow_again_at = tokio::time::Instant::now() + FOLLOW_RETRY_DELAY;
    }

    /// Whether this consumer reads `queue`: every queue, or with a membership those given to it.
    fn reads(&self, queue: &QueueKey) -> bool {
        self.membership.is_none() || self.assigned.contains(queue)
    }

    /// Reads the queues `routes` name (those it [`Consumer::reads`]): a known queue moves to its
    /// broker, a new one starts at this consumer's position, else the consumer group's committed
    /// offset, else `from`; a queue no longer named is left.
    async fn apply_routes(&mut self, routes: Arc<TopicRoutes>) -> Result<()> {
        let mut wanted = BTreeSet::new();
        let mut new_by_broker: BTreeMap<Arc<str>, Vec<QueueKey>> = BTreeMap::new();
        for queue in &routes.readable {
            let key = QueueKey {
                broker_group: queue.broker_group.clone(),
                queue_id: queue.queue_id,
            };
            if !self.reads(&key) {
                continue;
            }
            wanted.insert(key.clone());
            match self.reading_mut(&key) {
                Some(reading) => reading.broker = queue.broker.clone(),
                None => new_by_broker
                    .entry(queue.broker.clone())
                    .or_default()
                    .push(key),
            }
        }
        let gone: Vec<QueueKey> = self
            .queues
            .iter()
            .filter(|(key, queue)| queue.reading.is_some() && !wanted.contains(*key))
            .map(|(key, _)| key.clone())
            .collect();
        for key in gone {
            if self.reads(&key) {
                tracing::info!(topic = %self.topic, queue = %key, "queue no longer routed: not reading it");
            }
            self.stop_reading(&key);
        }
        // A broker that cannot be reached does not keep the others from being read.
        let mut first_error = None;
        for (broker, keys) in new_by_broker {
            if let Err(error) = self.start_reading(&broker, keys).await {
                first_error.get_or_insert(error);
            }
        }
        match first_error {
            None => {
                self.applied = Some(routes);
                Ok(())
            }
            Some(error) => Err(error),
        }
    }

    /// Starts reading `keys`, all held by `broker`.
    async fn start_reading(&mut self, broker: &Arc<str>, keys: Vec<QueueKey>) -> Result<()> {
        let connection = self.connections.get(broker).await?;
        let held = crate::admin::describe_topic(&connection, &self.topic).await?;
        if let Some(group) = keys.first().map(|key| key.broker_group.clone()) {
            if let Some(old_id) = self.learn_topic_id(&group, held.id) {
                tracing::warn!(
                    target: "smq_client::offset_reset",
                    topic = %self.topic,
                    broker_group = %group,
                    old_id,
                    new_id = held.id,
                    "the topic was deleted and created again: its queues in this broker group start again from the consumer group's offsets in the new topic, else from --from"
                );
            }
        }
        let committed = self.fetch_committed(&connection, &keys).await?;
        for key in keys {
            let stored = held.queues.iter().find(|q| q.queue_id == key.queue_id);
            let from_start = match (self.from, stored) {
                (StartFrom::Earliest, Some(queue)) => queue.log_start_offset,
                (StartFrom::Latest, Some(queue)) => queue.high_watermark,
                (_, None) => 0,
            };
            let queue = self.queues.entry(key.clone()).or_default();
            if let Some(offset) = committed.get(&key.queue_id) {
                queue.committed_on(*offset, broker.clone());
            }
            let offset = queue
                .position
                .or(committed.get(&key.queue_id).copied())
                .unwrap_or(from_start);
            queue.reading = Some(Reading {
                broker: broker.clone(),
                fetch_offset: offset,
            });
            self.seek(&key, offset);
        }
        Ok(())
    }

    /// Stops fetching `queue` and drops its messages not returned yet.
    fn stop_reading(&mut self, queue: &QueueKey) {
        if let Some(state) = self.queues.get_mut(queue) {
            state.reading = None;
            if state.is_empty() {
                self.queues.remove(queue);
            }
        }
        self.buffered.retain(|message| !queue.holds(message));
    }

    /// How `queue` is read, if it is.
    fn reading(&self, queue: &QueueKey) -> Option<&Reading> {
        self.queues.get(queue)?.reading.as_ref()
    }

    fn reading_mut(&mut self, queue: &QueueKey) -> Option<&mut Reading> {
        self.queues.get_mut(queue)?.reading.as_mut()
    }

    /// The broker `queue` is read from, if it is read.
    fn broker_of(&self, queue: &QueueKey) -> Option<Arc<str>> {
        self.reading(queue).map(|reading| reading.broker.clone())
    }

    /// The consumer group's committed offsets of these queues of `connection`'s broker (none
    /// without a consumer group), asked all at once.
    async fn fetch_committed(
        &self,
        connection: &Connection,
        keys: &[QueueKey],
    ) -> Result<BTreeMap<u32, u64>> {
        let mut committed = BTreeMap::new();
        let Some(group) = &self.consumer_group else {
            return Ok(committed);
        };
        let mut pending = Vec::with_capacity(keys.len());
        for key in keys {
            let request = Request::FetchOffset(FetchOffsetRequest {
                consumer_group: group.clone(),
                topic: self.topic.clone(),
                queue_id: key.queue_id,
            });
            pending.push((key.queue_id, connection.submit(request).await?));
        }
        for (queue_id, response) in pending {
            match response.wait().await? {
                Response::FetchOffset(fetched) => {
                    if let Some(offset) = fetched.offset {
                        committed.insert(queue_id, offset);
                    }
                }
                _ => return Err(connection.unexpected(ApiKey::FetchOffset)),
            }
        }
        Ok(committed)
    }

    /// Reads `queue` from `offset` on: messages of that queue buffered or being fetched are
    /// dropped. A queue this consumer does not read is ignored.
    pub fn seek(&mut self, queue: &QueueKey, offset: u64) {
        let Some(state) = self.queues.get_mut(queue) else {
            return;
        };
        let Some(reading) = &mut state.reading else {
            return;
        };
        reading.fetch_offset = offset;
        state.position = Some(offset);
        self.buffered.retain(|message| !queue.holds(message));
        self.start_fetch(queue.clone(), offset, Duration::ZERO);
    }

    fn start_fetch(&mut self, key: QueueKey, offset: u64, delay: Duration) {
        let Some(broker) = self.broker_of(&key) else {
            return;
        };
        let connections = self.connections.clone();
        let topic_id = self.topic_id(&key);
        let request = Request::Fetch(FetchRequest {
            topic: self.topic.clone(),
            queue_id: key.queue_id,
            offset,
            max_bytes: self.fetch_max_bytes,
            max_wait_ms: self.fetch_max_wait_ms,
            topic_id,
        });
        self.fetches.spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let response = match connections.get(&broker).await {
                Ok(connection) => connection.request(request).await,
                Err(error) => Err(error),
            };
            (key, offset, topic_id, response)
        });
    }

    /// The topic id `queue`'s fetches and commits carry (0: any topic of the name).
    fn topic_id(&self, queue: &QueueKey) -> u64 {
        self.topic_ids
            .get(&queue.broker_group)
            .copied()
            .unwrap_or(0)
    }

    /// Records the topic id `group`'s broker gave; when it had given another, the topic was
    /// deleted and created again: the positions and commits of the group's queues were the old
    /// topic's and are dropped (the queues start again from the consumer group's offset in the
    /// new topic or from `from`). Returns the old id when it changed.
    fn learn_topic_id(&mut self, group: &Arc<str>, id: u64) -> Option<u64> {
        let old_id = self.topic_ids.insert(group.clone(), id)?;
        if old_id == id || old_id == 0 || id == 0 {
            return None;
        }
        for (_, queue) in self
            .queues
            .iter_mut()
            .filter(|(key, _)| key.broker_group == *group)
        {
            queue.position = None;
            queue.committed = None;
            queue.committed_on = None;
        }
        self.queues.retain(|_, queue| !queue.is_empty());
        Some(old_id)
    }

    /// The next messages, at most `max_messages`: the ones already fetched, or else those of
    /// the next fetch answered. Waits at most about `fetch_max_wait_ms` and may return none.
    /// First follows the membership (reads the queues given, commits and releases the ones
    /// revoked) and the routes, and commits what earlier polls returned if
    /// `commit_interval_ms` passed since the last commit.
    pub async fn poll(&mut self, max_messages: usize) -> Result<Vec<ConsumedMessage>> {
        self.follow_membership().await;
        self.follow_routes().await;
        if self.last_commit.elapsed() >= self.commit_interval {
            if let Err(error) = self.commit().await {
                tracing::warn!(topic = %self.topic, %error, "committing offsets failed: retrying at the next interval");
            }
        }
        if self.buffered.is_empty() {
            match &self.membership {
                Some(membership) if self.fetches.is_empty() => {
                    // Nothing to read yet: wait for the NameServer to give this member queues.
                    let wait = Duration::from_millis(u64::from(self.fetch_max_wait_ms));
                    membership.changed(wait).await;
                }
                _ => self.fetch_more().await?,
            }
        }
        let count = max_messages.min(self.buffered.len());
        let messages: Vec<ConsumedMessage> = self.buffered.drain(..count).collect();
        // Messages of one fetch come in a run: one position update per run, not per message.
        for (index, message) in messages.iter().enumerate() {
            let run_ends = messages.get(index + 1).is_none_or(|next| {
                next.queue_id != message.queue_id || next.broker_group != message.broker_group
            });
            if run_ends {
                let queue = self.queues.entry(QueueKey::of(message)).or_default();
                queue.position = Some(message.offset + 1);
            }
        }
        Ok(messages)
    }

    /// Applies the routes if they changed since last time (they are refreshed in the
    /// background); when a broker cannot be reached, they are applied again a second later.
    async fn follow_routes(&mut self) {
        if tokio::time::Instant::now() < self.follow_again_at {
            return;
        }
        let Ok(routes) = self.routes.get(&self.topic).await else {
            return;
        };
        if self
            .applied
            .as_ref()
            .is_some_and(|applied| Arc::ptr_eq(applied, &routes))
        {
            return;
        }
        if let Err(error) = self.apply_routes(routes).await {
            self.follow_later(&error);
        }
    }

    /// Waits for the next fetch answer and buffers its messages.
    async fn fetch_more(&mut self) -> Result<()> {
        let Some(joined) = self.fetches.join_next().await else {
            return Ok(()); // no queue to read
        };
        let (key, offset, topic_id, response) = joined.map_err(|error| {
            Error::Closed(if error.is_panic() {
                "consumer fetch task (panicked)"
            } else {
                "consumer fetch task"
            })
        })?;
        let fetching_here = self
            .reading(&key)
            .is_some_and(|reading| reading.fetch_offset == offset);
        if !fetching_here || self.topic_id(&key) != topic_id {
            return Ok(()); // answer to a fetch from before a seek, or of a queue left
        }
        let broker = self
            .broker_of(&key)
            .map_or(String::new(), |b| b.to_string());
        let response = match response {
            Ok(Response::Fetch(fetch)) => fetch,
            Ok(_) => {
                self.start_fetch(key, offset, FETCH_RETRY_DELAY);
                return Err(Error::wrong_api(ApiKey::Fetch, &broker));
            }
            Err(error) if error.code() == Some(ErrorCode::OffsetOutOfRange) => {
                return self.reset_out_of_range(key, offset).await;
            }
            Err(error) if error.code() == Some(ErrorCode::UnknownTopicId) => {
                return self.follow_topic_created_again(key, offset).await;
            }
            Err(error) => {
                if error.is_retryable() {
                    self.routes.refresh_now(&self.topic);
                }
                self.start_fetch(key, offset, FETCH_RETRY_DELAY);
                return Err(error);
            }
        };
        let next = self.take_messages(&key, offset, &response);
        match next {
            Ok(next) => {
                if let Some(reading) = self.reading_mut(&key) {
                    reading.fetch_offset = next;
                }
                self.start_fetch(key, next, Duration::ZERO);
                Ok(())
            }
            Err(reason) => {
                self.start_fetch(key, offset, FETCH_RETRY_DELAY);
                Err(Error::Protocol {
                    what: "Fetch response".into(),
                    broker,
                    reason: ProtocolViolation::Batch(reason),
                })
            }
        }
    }

    /// Moves a queue whose fetch at `offset` was out of range to the earliest or latest offset
    /// its broker holds now, as `from` says, and says so. When the broker cannot be asked, the
    /// fetch is tried again later.
    async fn reset_out_of_range(&mut self, key: QueueKey, offset: u64) -> Result<()> {
        let Some(broker) = self.broker_of(&key) else {
            return Ok(());
        };
        let (earliest_offset, next_offset) = match self.queue_range(&broker, key.queue_id).await {
            Ok(range) => range,
            Err(error) => {
                self.start_fetch(key, offset, FETCH_RETRY_DELAY);
                return Err(error);
            }
        };
        if (earliest_offset..=next_offset).contains(&offset) {
            // The queue changed between the fetch and the question: the offset is good now.
            self.start_fetch(key, offset, Duration::ZERO);
            return Ok(());
        }
        let new_offset = match self.from {
            StartFrom::Earliest => earliest_offset,
            StartFrom::Latest => next_offset,
        };
        let reset = OffsetReset {
            topic: self.topic.clone(),
            queue: key.clone(),
            reason: ResetReason::OutOfRange,
            old_offset: offset,
            new_offset,
            earliest_offset,
            next_offset,
        };
        self.report_reset(reset);
        // Messages of this queue already buffered are still returned; the position moves now
        // only if there are none, so that a commit stores an offset the broker holds.
        let buffered = self.buffered.iter().any(|message| key.holds(message));
        if let Some(queue) = self.queues.get_mut(&key) {
            if !buffered {
                queue.position = Some(new_offset);
            }
            if let Some(reading) = &mut queue.reading {
                reading.fetch_offset = new_offset;
            }
        }
        self.start_fetch(key, new_offset, Duration::ZERO);
        Ok(())
    }

    /// Logs a queue's move as a warning and keeps it for [`Consumer::take_offset_resets`].
    fn report_reset(&mut self, reset: OffsetReset) {
        // Its own target, so that a program that reports take_offset_resets() (smq consume)
        // can leave these out of its log.
        tracing::warn!(
            target: "smq_client::offset_reset",
            topic = %reset.topic,
            queue = %reset.queue,
            old_offset = reset.old_offset,
            new_offset = reset.new_offset,
            skipped = reset.skipped(),
            "{reset}"
        );
        self.resets.push(reset);
    }

    /// A fetch of `key` named a topic id its broker no longer has: the topic was deleted and
    /// created again. Learns the new id and moves every queue of the broker group read to the
    /// new topic's earliest or latest offset, as `from` says (never on from the old topic's
    /// offsets, which would skip the new topic's first messages), with a warning each; their
    /// old positions are never committed. When the broker cannot be asked, the fetch is tried
    /// again later.
    async fn follow_topic_created_again(&mut self, key: QueueKey, offset: u64) -> Result<()> {
        let Some(broker) = self.broker_of(&key) else {
            return Ok(());
        };
        let described = match self.connections.get(&broker).await {
            Ok(connection) => crate::admin::describe_topic(&connection, &self.topic).await,
            Err(error) => Err(error),
        };
        let held = match described {
            Ok(held) => held,
            Err(error) => {
                self.start_fetch(key, offset, FETCH_RETRY_DELAY);
                return Err(error);
            }
        };
        let group = key.broker_group.clone();
        let old_positions: Vec<(QueueKey, u64)> = self
            .queues
            .iter()
            .filter(|(queue, state)| queue.broker_group == group && state.reading.is_some())
            .map(|(queue, state)| (queue.clone(), state.position.unwrap_or(offset)))
            .collect();
        let Some(old_id) = self.learn_topic_id(&group, held.id) else {
            // Not a new id after all (the broker's answer changed meanwhile): fetch again.
            self.start_fetch(key, offset, FETCH_RETRY_DELAY);
            return Ok(());
        };
        for (queue, old_offset) in old_positions {
            let (earliest_offset, next_offset) = held
                .queues
                .iter()
                .find(|stored| stored.queue_id == queue.queue_id)
                .map_or((0, 0), |stored| {
                    (stored.log_start_offset, stored.high_watermark)
                });
            let new_offset = match self.from {
                StartFrom::Earliest => earliest_offset,
                StartFrom::Latest => next_offset,
            };
            self.report_reset(OffsetReset {
                topic: self.topic.clone(),
                queue: queue.clone(),
                reason: ResetReason::TopicCreatedAgain {
                    old_id,
                    new_id: held.id,
                },
                old_offset,
                new_offset,
                earliest_offset,
                next_offset,
            });
            self.seek(&queue, new_offset);
        }
        Ok(())
    }

    /// The earliest and next offsets of a queue on `broker`.
    async fn queue_range(&self, broker: &Arc<str>, queue_id: u32) -> Result<(u64, u64)> {
        let connection = self.connections.get(broker).await?;
        let held = crate::admin::describe_topic(&connection, &self.topic).await?;
        Ok(held
            .queues
            .iter()
            .find(|queue| queue.queue_id == queue_id)
            .map_or((0, 0), |queue| {
                (queue.log_start_offset, queue.high_watermark)
            }))
    }

    /// The queues moved since the last call because their offset was out of range (each was
    /// also logged as a warning).
    pub fn take_offset_resets(&mut self) -> Vec<OffsetReset> {
        std::mem::take(&mut self.resets)
    }

    fn take_messages(
        &mut self,
        key: &QueueKey,
        offset: u64,
        response: &FetchResponse,
    ) -> std::result::Result<u64, FetchedBatchError> {
        let mut messages = Vec::new();
        let next = messages_from_batches(
            &key.broker_group,
            key.queue_id,
            &response.batches,
            offset,
            &mut messages,
        )?;
        self.buffered.extend(messages);
        Ok(next)
    }

    /// Per queue, the offset after the last message [`Consumer::poll`] returned.
    pub fn positions(&self) -> BTreeMap<QueueKey, u64> {
        self.queues
            .iter()
            .filter_map(|(key, queue)| Some((key.clone(), queue.position?)))
            .collect()
    }

    /// Applies the membership's last reply: starts reading the queues given to this member,
    /// stops reading the revoked ones, commits what the application received of them and
    /// releases them (a revoked queue whose commit fails is tried again at the next poll).
    async fn follow_membership(&mut self) {
        let Some(membership) = &self.membership else {
            return;
        };
        let generation = membership.generation();
        if generation == self.membership_generation && self.releasing.is_empty() {
            return;
        }
        self.membership_generation = generation;
        let assignment = membership.assignment();
        for key in assignment.revoked.keys() {
            if !self.releasing.contains_key(key) {
                let broker = self.broker_of(key);
                self.releasing.insert(key.clone(), broker);
            }
        }
        self.assigned = assignment.read.into_keys().collect();
        if let Ok(routes) = self.routes.get(&self.topic).await {
            if let Err(error) = self.apply_routes(routes).await {
                self.follow_later(&error);
            }
        }
        self.release_revoked().await;
    }

    /// Commits and releases the revoked queues.
    async fn release_revoked(&mut self) {
        let routes = self.routes.get(&self.topic).await.ok();
        let releasing: Vec<(QueueKey, Option<Arc<str>>)> = self
            .releasing
            .iter()
            .map(|(key, broker)| (key.clone(), broker.clone()))
            .collect();
        for (key, read_from) in releasing {
            let state = self.queues.get(&key);
            let position = state.and_then(|state| state.position);
            let broker =
                read_from.map(|read_from| commit_broker(routes.as_deref(), &key, read_from));
            let pending = match (state, position, broker) {
                (Some(state), Some(offset), Some(broker))
                    if state.needs_commit(offset, &broker) =>
                {
                    Some((broker, offset))
                }
                _ => None,
            };
            if let Some((broker, offset)) = pending {
                match self.commit_one(&key, &broker, offset).await {
                    Ok(()) => {}
                    Err(error) if error.code() == Some(ErrorCode::StaleOwnerEpoch) => {}
                    Err(error) => {
                        tracing::warn!(topic = %self.topic, queue = %key, %error, "cannot commit a revoked queue yet: it is released once the commit succeeds");
                        continue;
                    }
                }
            }
            tracing::info!(topic = %self.topic, queue = %key, "released queue");
            self.release(&key);
        }
    }

    /// Forgets `queue` and tells the membership it is given up.
    fn release(&mut self, queue: &QueueKey) {
        self.stop_reading(queue);
        self.assigned.remove(queue);
        self.releasing.remove(queue);
        self.queues.remove(queue);
        if let Some(membership) = &self.membership {
            membership.release(queue);
        }
    }

    /// The owner epoch commits of `queue` carry: the membership's, else 0.
    fn owner_epoch(&self, queue: &QueueKey) -> u64 {
        self.membership
            .as_ref()
            .and_then(|membership| membership.epoch(queue))
            .unwrap_or(0)
    }

    /// Commits `offset` of `queue` on `broker` with this member's owner epoch.
    async fn commit_one(&mut self, queue: &QueueKey, broker: &Arc<str>, offset: u64) -> Result<()> {
        let Some(consumer_group) = self.consumer_group.clone() else {
            return Ok(());
        };
        let connection = self
            .connections
            .get(broker)
            .await
            .inspect_err(|error| self.commit_failed(error))?;
        let request = self.commit_request(consumer_group, queue, offset);
        match connection.request(request).await? {
            Response::CommitOffset => {
                let state = self.queues.entry(queue.clone()).or_default();
                state.committed_on(offset, broker.clone());
                Ok(())
            }
            _ => Err(connection.unexpected(ApiKey::CommitOffset)),
        }
    }

    /// The CommitOffset of `offset` of `queue`, with this member's owner epoch.
    fn commit_request(&self, consumer_group: String, queue: &QueueKey, offset: u64) -> Request {
        Request::CommitOffset(CommitOffsetRequest {
            consumer_group,
            topic: self.topic.clone(),
            queue_id: queue.queue_id,
            offset,
            owner_epoch: self.owner_epoch(queue),
            topic_id: self.topic_id(queue),
        })
    }

    /// A commit that could not reach its broker asks for routes now: the next commit goes where
    /// they say (a dead master's queues to its slave).
    fn commit_failed(&self, error: &Error) {
        if error.is_retryable() {
            self.routes.refresh_now(&self.topic);
        }
    }

    /// Stores the consumer group's position of every queue that moved since the last commit, on
    /// the broker that serves it in the newest routes (see [`commit_broker`]), with this
    /// member's owner epoch. A broker that cannot be reached holds back only its own queues'
    /// commits (the first error is returned after the others are stored). A queue whose commit
    /// is refused because another member owns it now (`STALE_OWNER_EPOCH`) is given up at once,
    /// with a warning. Without a consumer group there is nothing to store. A queue whose broker
    /// group has no live master is committed on its slave, which keeps the offset for the
    /// master (proto-spec.md §5.7); a slave that still reaches its master refuses it
    /// (`NOT_MASTER`), and the queue is committed again at the next interval.
    pub async fn commit(&mut self) -> Result<()> {
        self.last_commit = Instant::now();
        let Some(group) = self.consumer_group.clone() else {
            return Ok(());
        };
        let routes = self.routes.get(&self.topic).await.ok();
        let moved: Vec<(QueueKey, Arc<str>, u64)> = self
            .queues
            .iter()
            .filter_map(|(key, queue)| {
                let offset = queue.position?;
                let read_from = queue.reading.as_ref()?.broker.clone();
                let broker = commit_broker(routes.as_deref(), key, read_from);
                queue
                    .needs_commit(offset, &broker)
                    .then(|| (key.clone(), broker, offset))
            })
            .collect();
        let mut first_error = None;
        let mut pending = Vec::with_capacity(moved.len());
        for (key, broker, offset) in moved {
            let request = self.commit_request(group.clone(), &key, offset);
            let submitted = match self.connections.get(&broker).await {
                Ok(connection) => {
                    (connection.submit(request).await).map(|response| (connection, response))
                }
                Err(error) => Err(error),
            };
            match submitted {
                Ok((connection, response)) => {
                    pending.push((key, broker, offset, connection, response))
                }
                Err(error) => {
                    self.commit_failed(&error);
                    first_error.get_or_insert(error);
                }
            }
        }
        for (key, broker, offset, connection, response) in pending {
            match response.wait().await {
                Ok(Response::CommitOffset) => {
                    self.queues
                        .entry(key)
                        .or_default()
                        .committed_on(offset, broker);
                }
                Ok(_) => {
                    first_error.get_or_insert(connection.unexpected(ApiKey::CommitOffset));
                }
                // A slave that reaches its master again (the routes have not caught up with the
                // master's return yet), or a former master: the position stays uncommitted and
                // is committed at the next interval where the routes, asked for now, say.
                Err(error) if error.code() == Some(ErrorCode::NotMaster) => {
                    self.routes.refresh_now(&self.topic);
                }
                // The topic was deleted and created again: this position was the old topic's
                // and never counts in the new one; the queue's next fetch moves it there.
                Err(error) if error.code() == Some(ErrorCode::UnknownTopicId) => {
                    tracing::debug!(topic = %self.topic, queue = %key, %error, "not committing an offset of a deleted topic");
                }
                Err(error) if error.code() == Some(ErrorCode::StaleOwnerEpoch) => {
                    tracing::warn!(topic = %self.topic, queue = %key, %error, "another member owns this queue now: not reading it");
                    self.release(&key);
                }
                Err(error) => {
                    self.commit_failed(&error);
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Leaves cleanly: stops fetching (messages fetched and not returned are dropped: nothing
    /// past what the application received is committed), commits, and leaves the consumer
    /// group, whose other members take this member's queues at once. Returns the commit's
    /// error, if any (the member leaves anyway; its queues are then read again from the last
    /// commit).
    pub async fn close(mut self) -> Result<()> {
        self.fetches.abort_all();
        self.buffered.clear();
        let committed = self.commit().await;
        if let Some(membership) = self.membership.take() {
            let member = membership.member_id().to_owned();
            if let Err(error) = membership.leave().await {
                tracing::warn!(topic = %self.topic, %member, %error, "could not tell the NameServer this member left: its queues move when its session expires");
            }
        }
        committed
    }

    /// This consumer's member id in its consumer group, when the NameServer coordinates it.
    pub fn member_id(&self) -> Option<&str> {
        self.membership.as_ref().map(Membership::member_id)
    }
}

/// Where a queue's offset is committed: the broker that serves it in the newest `routes` (its
/// master, or while its group has no live master its slave), else the one it is `read_from`.
/// The two differ from a master's death or return until the next poll follows the routes, and
/// an application that stopped polling (or [`Consumer::close`]) must still commit where a
/// broker takes the commit, not on a dead master.
fn commit_broker(routes: Option<&TopicRoutes>, queue: &QueueKey, read_from: Arc<str>) -> Arc<str> {
    routes
        .and_then(|routes| routes.reader_of(&queue.broker_group, queue.queue_id))
        .unwrap_or(read_from)
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
        let next = messages_from_batches(&"g".into(), 2, &batches, 12, &mut out).unwrap();
        let got: Vec<(u64, &[u8])> = out.iter().map(|m| (m.offset, &m.body[..])).collect();
        assert_eq!(got, [(12, &b"c"[..]), (13, b"d"), (14, b"e"), (15, b"f")]);
        assert!(out.iter().all(|m| m.queue_id == 2));
        assert_eq!(next, 16);
    }

    #[test]
    fn an_empty_fetch_keeps_the_offset() {
        let mut out = Vec::new();
        assert_eq!(
            messages_from_batches(&"g".into(), 0, &Bytes::new(), 7, &mut out),
            Ok(7)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn damaged_or_cut_batches_are_errors_not_messages() {
        let mut bytes = stored_batch(0, 0, &["hello"]);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let mut out = Vec::new();
        let error =
            messages_from_batches(&"g".into(), 0, &Bytes::from(bytes), 0, &mut out).unwrap_err();
        assert!(
            matches!(error, FetchedBatchError::Invalid { at: 0, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("CRC"), "{error}");
        let bytes = stored_batch(0, 0, &["hello"]);
        let cut = Bytes::copy_from_slice(&bytes[..bytes.len() - 2]);
        let error = messages_from_batches(&"g".into(), 0, &cut, 0, &mut out).unwrap_err();
        assert_eq!(error, FetchedBatchError::PastTheEnd { at: 0 });
        assert!(out.is_empty());
    }

    #[test]
    fn a_batch_of_another_queue_is_refused() {
        let batches = Bytes::from(stored_batch(3, 0, &["x"]));
        let error =
            messages_from_batches(&"g".into(), 1, &batches, 0, &mut Vec::new()).unwrap_err();
        assert_eq!(
            error,
            FetchedBatchError::OtherQueue {
                at: 0,
                found: 3,
                expected: 1
            }
        );
    }
}
