//! The producer: chooses each message's queue among the topic's routes (the queues of every
//! broker group with a live master), collects messages into batches per topic-queue (batch size,
//! linger), keeps several batches in flight on each broker's connection, and answers each message
//! with its queue and offset once the broker acknowledged it.
//!
//! Per broker, one lane: a connection and a background task that owns the open batches and
//! submits them in order, so that the batches of a queue reach the broker in the order their
//! messages were sent. While the maximum requests
//! are in flight it waits, messages pile up, and the next batches are larger: the producer
//! batches more as the load grows.
//!
//! A batch whose broker group cannot take it (the connection ended, no answer within the
//! attempt timeout, the broker cannot store) is sent again at once to another group's lane if
//! it holds messages without a key ([`resend`]), within the send timeout; its keyed messages
//! fail with an error naming the group.

mod accumulator;
mod fault_avoidance;
mod partitioner;
mod resend;

use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::connection::{Connection, ConnectionOptions, OnConnection, PendingResponse, PerBroker};
use crate::error::{Error, ProtocolViolation, Result};
use crate::protocol::limits::{is_valid_topic_name, MAX_BATCH_BYTES_DEFAULT, MAX_TOPIC_NAME_BYTES};
use crate::protocol::record_batch::Message;
use crate::protocol::request::{Acks, ProduceEntry, ProduceManyRequest, ProduceRequest};
use crate::protocol::response::ProduceResponse;
use crate::protocol::{ApiKey, Request, Response};
use crate::routing::{QueueRoute, RouteCache, TopicRoutes};
use crate::ClientConfig;

use accumulator::{Accumulator, ReadyBatch};
use fault_avoidance::Unreachable;
pub use partitioner::{fnv1a_32, queue_for_key, STICKY_QUEUE_BYTES_DEFAULT};
use partitioner::{RoundRobin, StickyQueues};
pub use resend::ProducerMetrics;
use resend::{GroupDown, ResendCounters};

/// Where an acknowledged message is stored.
///
/// ```no_run
/// # async fn example(producer: smq_client::Producer) -> smq_client::Result<()> {
/// use smq_client::Message;
/// let delivery = producer.send("orders", Message::from_body("hello")).await?;
/// println!("queue {} offset {}", delivery.queue_id, delivery.offset);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub queue_id: u32,
    /// The message's queue offset.
    pub offset: u64,
}

/// A message handed to the producer and not yet acknowledged: await [`PendingDelivery::wait`].
///
/// ```no_run
/// # async fn example(producer: smq_client::Producer) -> smq_client::Result<()> {
/// use smq_client::Message;
/// // Hand many messages over without waiting for each, then collect the acknowledgements.
/// let mut pending = Vec::new();
/// for i in 0..1000 {
///     pending.push(producer.start_send("orders", Message::from_body(format!("m{i}"))).await?);
/// }
/// for delivery in pending {
///     delivery.wait().await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PendingDelivery {
    receiver: oneshot::Receiver<Result<Delivery>>,
}

impl PendingDelivery {
    /// Waits for the broker's acknowledgement (or the error that replaced it).
    pub async fn wait(self) -> Result<Delivery> {
        self.receiver
            .await
            .unwrap_or(Err(Error::Closed("producer")))
    }
}

/// What the producer's task is asked to do.
enum Command {
    Send {
        topic: Arc<str>,
        /// A lane talks to one broker, which holds one group: the queue id is enough.
        queue_id: u32,
        message: Message,
        waiter: Waiter,
    },
    /// A batch another lane's broker group could not take, rebuilt for a queue of this one:
    /// submit it as it is.
    Resend(ReadyBatch<Waiter>),
    /// Send every open batch now; answer once they are submitted.
    Flush(oneshot::Sender<()>),
}

/// What a message waits on, and the buffer bytes it holds until then.
#[derive(Debug)]
struct Waiter {
    sender: oneshot::Sender<Result<Delivery>>,
    buffer_bytes: u32,
}

/// Sends messages to a topic's brokers: single messages or many, batched and pipelined.
///
/// The topic's writable queues are those of every broker group with a live master, in group
/// order (see [`crate::routing`]); with [`ClientConfig::broker`] alone, those of that broker. A
/// message with a key goes to queue `fnv1a_32(key) % queue_count` of the topic's full queue list
/// (every group that has the topic, writable now or not), so all messages of one key keep their
/// order in one queue while groups come and go; messages without a key stay on one queue until
/// `sticky_queue_bytes` went there, then move to the next (round robin with 0), past the
/// queues of a broker the producer just failed to reach (for a few seconds, or until the routes
/// drop it): when one group's master dies, messages without a key go on to the other groups at
/// once. Messages wait at most `linger_ms` to fill a batch of `batch_bytes`; at most
/// `max_in_flight_requests` batches wait for their acknowledgement at a time, and at most
/// `buffer_bytes` of messages are held. Clones share the producer.
///
/// Batches of one queue are sent in order on one connection. A batch whose broker group cannot
/// take it (the connection ends, no answer comes within `attempt_timeout_ms`, or the broker
/// says it cannot store: fenced, flush or slave too slow, no slave in sync, not the master) is
/// sent again at once to another group, as long as `send_timeout_ms` has not run out since its
/// first message was accepted: its messages without a key are stored at least once (when the
/// failed attempt had stored them too, twice: [`Producer::metrics`] counts these). Its keyed
/// messages are never moved: they fail with [`Error::GroupUnavailable`], naming the group.
/// Other failures answer each message with the [`Error`], which says whether a retry helps. A
/// retryable failure makes the producer ask for the topic's routes again, and a connection that
/// ended is opened again on the next send.
///
/// ```no_run
/// # async fn example() -> smq_client::Result<()> {
/// use smq_client::{ClientConfig, Message, Producer};
///
/// let producer = Producer::connect(ClientConfig::new("127.0.0.1:10911")).await?;
/// let mut message = Message::from_body("order 17 paid");
/// message.key = b"customer-42".to_vec();
/// let delivery = producer.send("orders", message).await?;
/// println!("stored in queue {} at offset {}", delivery.queue_id, delivery.offset);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

/// What the producer's handles share; lanes' tasks and batches in flight hold it weakly, so it
/// (and with it every lane) goes when the last handle does.
#[derive(Debug)]
struct Inner {
    routes: Arc<RouteCache>,
    /// One lane per broker, opened on first use and again once its connection ended.
    lanes: PerBroker<Arc<Lane>>,
    settings: LaneSettings,
    /// Bytes of messages accepted and not yet acknowledged may not pass `buffer_bytes`.
    buffer: Semaphore,
    buffer_bytes: u32,
    round_robin: RoundRobin,
    /// With `sticky_queue_bytes`: the queue each topic's messages without a key stick to.
    sticky: Option<StickyQueues>,
    /// Brokers just found unreachable, avoided by messages without a key.
    unreachable: Unreachable,
    resent: ResendCounters,
}

/// How every lane connects and batches.
#[derive(Debug)]
struct LaneSettings {
    /// Its request timeout is the attempt timeout.
    connection: ConnectionOptions,
    batch_bytes: usize,
    linger: Duration,
    acks: Acks,
    ack_timeout_ms: u32,
    send_timeout: Duration,
}

/// One broker's connection and the task that batches and submits its messages.
#[derive(Debug)]
struct Lane {
    connection: Connection,
    commands: mpsc::Sender<Command>,
    /// Batches submitted and not yet answered.
    in_flight: watch::Receiver<usize>,
    /// The broker's group, from the first route that led here (for errors that name it).
    group: Arc<OnceLock<Arc<str>>>,
}

impl OnConnection for Lane {
    fn connection(&self) -> &Connection {
        &self.connection
    }
}

impl Producer {
    /// Starts a producer. With [`ClientConfig::nameserver`] it connects to each broker when it
    /// first sends there; with [`ClientConfig::broker`] alone it connects to that broker now.
    pub async fn connect(config: ClientConfig) -> Result<Producer> {
        config.validate()?;
        let buffer_bytes = u32::try_from(config.buffer_bytes).unwrap_or(u32::MAX);
        let mut connection = config.connection_options();
        connection.request_timeout = Duration::from_millis(config.attempt_timeout_ms);
        let producer = Producer {
            inner: Arc::new(Inner {
                routes: config.route_cache(),
                lanes: PerBroker::default(),
                settings: LaneSettings {
                    connection,
                    batch_bytes: config.batch_bytes.min(MAX_BATCH_BYTES_DEFAULT),
                    linger: Duration::from_millis(config.linger_ms),
                    acks: config.acks,
                    ack_timeout_ms: config.ack_timeout_ms,
                    send_timeout: Duration::from_millis(config.send_timeout_ms),
                },
                buffer: Semaphore::new(buffer_bytes as usize),
                buffer_bytes,
                round_robin: RoundRobin::default(),
                sticky: (config.sticky_queue_bytes > 0)
                    .then(|| StickyQueues::new(config.sticky_queue_bytes)),
                unreachable: Unreachable::default(),
                resent: ResendCounters::default(),
            }),
        };
        if config.nameserver.is_none() {
            producer.inner.lane(&config.broker).await?;
        }
        Ok(producer)
    }

    /// Sends one message and waits for its acknowledgement.
    pub async fn send(&self, topic: &str, message: Message) -> Result<Delivery> {
        self.start_send(topic, message).await?.wait().await
    }

    /// Sends messages and waits until every one is acknowledged; the deliveries are in the
    /// order of `messages`. Fails with the first error, though other messages may be stored.
    pub async fn send_batch(&self, topic: &str, messages: Vec<Message>) -> Result<Vec<Delivery>> {
        let mut pending = Vec::with_capacity(messages.len());
        for message in messages {
            pending.push(self.start_send(topic, message).await?);
        }
        self.flush().await?;
        let mut deliveries = Vec::with_capacity(pending.len());
        for delivery in pending {
            deliveries.push(delivery.wait().await?);
        }
        Ok(deliveries)
    }

    /// Hands `message` to the producer and returns once it is accepted: it waits only while the
    /// buffer is full, or the first time a topic (to learn its routes) or a broker (to connect)
    /// is used. Await the returned [`PendingDelivery`] for the acknowledgement.
    ///
    /// Fails at once when the topic does not exist or has no writable queue, the broker cannot
    /// be reached, the message is above the broker's limit, or a field is too long for its
    /// length field.
    pub async fn start_send(&self, topic: &str, message: Message) -> Result<PendingDelivery> {
        let inner = &self.inner;
        check_topic_name(topic)?;
        check_field_lengths(&message)?;
        let routes = inner.routes.get(topic).await?;
        let message_bytes = message.encoded_len();
        let (queue, lane) = if message.key.is_empty() {
            inner
                .unkeyed_lane(&routes, message_bytes, |_| false)
                .await?
                .ok_or_else(|| Error::NoRoute {
                    topic: topic.to_owned(),
                    reason: "no broker group with a live master takes writes to it".into(),
                })?
        } else {
            let queue = queue_of_key(&routes, topic, &message.key)?;
            (queue, inner.lane_of(queue, topic).await?)
        };
        let max_message_bytes = lane.connection.max_message_bytes();
        if message_bytes > max_message_bytes {
            return Err(Error::MessageTooLarge {
                bytes: message_bytes,
                limit_bytes: max_message_bytes,
            });
        }
        // A message larger than the whole buffer takes all of it, and waits until it is free.
        let buffer_bytes = (message_bytes as u32).min(inner.buffer_bytes);
        inner
            .buffer
            .acquire_many(buffer_bytes)
            .await
            .expect("the buffer semaphore is never closed")
            .forget();
        let (sender, receiver) = oneshot::channel();
        let command = Command::Send {
            topic: routes.topic.clone(),
            queue_id: queue.queue_id,
            message,
            waiter: Waiter {
                sender,
                buffer_bytes,
            },
        };
        if lane.commands.send(command).await.is_err() {
            inner.buffer.add_permits(buffer_bytes as usize);
            return Err(Error::Closed("producer"));
        }
        Ok(PendingDelivery { receiver })
    }

    /// Sends every open batch now, without waiting for linger, and waits until every batch
    /// sent so far is answered (including those sent again to another group meanwhile).
    pub async fn flush(&self) -> Result<()> {
        loop {
            let resent_before = self.inner.resent.batches();
            for lane in self.inner.lanes.all() {
                let (sender, receiver) = oneshot::channel();
                lane.commands
                    .send(Command::Flush(sender))
                    .await
                    .map_err(|_| Error::Closed("producer"))?;
                receiver.await.map_err(|_| Error::Closed("producer"))?;
                let mut in_flight = lane.in_flight.clone();
                in_flight
                    .wait_for(|count| *count == 0)
                    .await
                    .map_err(|_| Error::Closed("producer"))?;
            }
            // A batch resent meanwhile may sit in a lane already passed: go round again.
            if self.inner.resent.batches() == resent_before {
                return Ok(());
            }
        }
    }

    /// The number of writable queues of `topic` (over every broker group), asked the first time
    /// and remembered.
    pub async fn queue_count_of(&self, topic: &str) -> Result<u32> {
        check_topic_name(topic)?;
        Ok(self.inner.routes.get(topic).await?.writable.len() as u32)
    }

    /// What the producer sent again to another broker group since it started, and how many
    /// messages may therefore be stored twice.
    pub fn metrics(&self) -> ProducerMetrics {
        self.inner.resent.snapshot()
    }
}

impl Inner {
    /// The lane to `broker`, opening it when there is none or its connection ended.
    async fn lane(self: &Arc<Self>, broker: &str) -> Result<Arc<Lane>> {
        let open = || async { Ok(Arc::new(self.connect_lane(broker).await?)) };
        self.lanes.get_or_open(broker, open).await
    }

    /// The lane to `queue`'s broker; a broker that cannot be reached is avoided for a while and
    /// the topic's routes are asked again.
    async fn lane_of(self: &Arc<Self>, queue: &QueueRoute, topic: &str) -> Result<Arc<Lane>> {
        match self.lane(&queue.broker).await {
            Ok(lane) => {
                if lane.group.get().is_none() {
                    let _ = lane.group.set(queue.broker_group.clone());
                }
                Ok(lane)
            }
            Err(error) => {
                self.routes.invalidate(topic);
                self.unreachable.mark(&queue.broker, Instant::now());
                Err(error)
            }
        }
    }

    /// A writable queue for messages without a key, in turn (or the topic's sticky queue, for a
    /// message of `message_bytes`), past `excluded` queues and the brokers just found
    /// unreachable (all of them, when nothing else is left and nothing is `excluded`), and its
    /// lane. Nothing is sent before a lane is open, so a broker that cannot be reached passes the
    /// turn to another queue, at most once per queue. `None` when no queue is left.
    async fn unkeyed_lane<'a>(
        self: &Arc<Self>,
        routes: &'a TopicRoutes,
        message_bytes: usize,
        excluded: impl Fn(&QueueRoute) -> bool,
    ) -> Result<Option<(&'a QueueRoute, Arc<Lane>)>> {
        let mut attempts = 0;
        loop {
            let Ok(count) = u32::try_from(routes.writable.len()) else {
                return Ok(None);
            };
            if count == 0 {
                return Ok(None);
            }
            let start = match &self.sticky {
                Some(sticky) => sticky.next(&routes.topic, count, message_bytes),
                None => self.round_robin.next(count),
            } as usize;
            let usable = |queue: &QueueRoute| !excluded(queue);
            let reachable =
                |queue: &QueueRoute| usable(queue) && !self.unreachable.avoids(&queue.broker);
            let chosen = choose_queue(&routes.writable, start, reachable);
            let Some(queue) = chosen.or_else(|| {
                let nothing_excluded = routes.writable.iter().all(usable);
                let any = |_: &QueueRoute| true;
                nothing_excluded
                    .then(|| choose_queue(&routes.writable, start, any))
                    .flatten()
            }) else {
                return Ok(None);
            };
            match self.lane_of(queue, &routes.topic).await {
                Ok(lane) => return Ok(Some((queue, lane))),
                Err(error) => {
                    attempts += 1;
                    if !error.is_retryable() || attempts >= routes.writable.len() {
                        return Err(error);
                    }
                }
            }
        }
    }

    /// Opens a lane: its connection, and its task. Boxed, because the task's batches may open
    /// lanes (when they are sent again elsewhere): a future cannot contain itself.
    fn connect_lane<'a>(self: &'a Arc<Self>, broker: &'a str) -> LaneOpening<'a> {
        Box::pin(self.open_lane(broker))
    }

    async fn open_lane(self: &Arc<Self>, broker: &str) -> Result<Lane> {
        let settings = &self.settings;
        let connection = Connection::connect(settings.connection.to(broker)).await?;
        let (commands, commands_rx) = mpsc::channel(1024);
        let (in_flight_tx, in_flight) = watch::channel(0usize);
        let group = Arc::new(OnceLock::new());
        let (answers, answers_rx) = mpsc::unbounded_channel();
        tokio::spawn(finish_answered_batches(answers_rx));
        let task = SendTask {
            broker: Arc::from(connection.broker()),
            connection: connection.clone(),
            group: group.clone(),
            accumulator: Accumulator::new(settings.batch_bytes, settings.linger),
            acks: settings.acks,
            ack_timeout_ms: settings.ack_timeout_ms,
            send_timeout: settings.send_timeout,
            in_flight: Arc::new(in_flight_tx),
            producer: Arc::downgrade(self),
            answers,
        };
        tokio::spawn(task.run(commands_rx));
        Ok(Lane {
            connection,
            commands,
            in_flight,
            group,
        })
    }

    /// Sends `unkeyed`, the waiters of the messages without a key of a batch whose group could
    /// not take it, in a batch rebuilt for another group's queue, while the send timeout lasts.
    /// Gives them back when there is nowhere to go.
    async fn resend(
        self: &Arc<Self>,
        failed: &Completion,
        unkeyed: Vec<Waiter>,
        error: &Error,
        down: GroupDown,
    ) -> Result<(), Vec<Waiter>> {
        if Instant::now() >= failed.deadline {
            return Err(unkeyed);
        }
        let Ok(routes) = self.routes.get(&failed.topic).await else {
            return Err(unkeyed);
        };
        let group = failed.group();
        let same_group =
            |queue: &QueueRoute| queue.broker_group == group || *queue.broker == *failed.broker;
        let Ok(Some((queue, lane))) = self.unkeyed_lane(&routes, 0, same_group).await else {
            return Err(unkeyed);
        };
        let batch = resend::unkeyed_for_queue(&failed.batch, queue.queue_id)
            .expect("the batch has messages without a key");
        self.resent.count(unkeyed.len(), down);
        tracing::debug!(
            topic = %failed.topic,
            from = %format!("{group}/{} at {}", failed.queue_id, failed.broker),
            to = %queue,
            messages = unkeyed.len(),
            maybe_stored = down.maybe_stored,
            %error,
            "sending a batch again to another broker group"
        );
        let resent = ReadyBatch {
            topic: failed.topic.clone(),
            queue_id: queue.queue_id,
            batch,
            waiters: unkeyed,
            opened: failed.opened,
        };
        if let Err(mpsc::error::SendError(Command::Resend(lost))) =
            lane.commands.send(Command::Resend(resent)).await
        {
            self.answer(lost.waiters, Err(Error::Closed("producer")), lost.queue_id);
        }
        Ok(())
    }

    /// Answers `waiters`, the messages of one batch in order, and gives their buffer bytes back.
    fn answer(&self, waiters: Vec<Waiter>, base_offset: Result<u64>, queue_id: u32) {
        let buffer_bytes = answer(waiters, base_offset, queue_id);
        self.buffer.add_permits(buffer_bytes);
    }
}

/// A lane being opened.
type LaneOpening<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Lane>> + Send + 'a>>;

/// The writable queue a keyed message goes to: its key's hash over every queue of the topic,
/// writable now or not (`TopicRoutes::all`), so that a key keeps its queue while other groups
/// come and go; when that queue's group takes no writes now, a retryable error naming it, never
/// another queue (that would break the key's order).
fn queue_of_key<'a>(routes: &'a TopicRoutes, topic: &str, key: &[u8]) -> Result<&'a QueueRoute> {
    let no_route = |reason: String| Error::NoRoute {
        topic: topic.to_owned(),
        reason,
    };
    let count = u32::try_from(routes.all.len())
        .ok()
        .filter(|count| *count > 0)
        .ok_or_else(|| no_route("no broker group has it".into()))?;
    let index = queue_for_key(key, count).expect("a key") as usize;
    let queue = &routes.all[index];
    routes
        .writable
        .iter()
        .find(|writable| {
            writable.broker_group == queue.broker_group && writable.queue_id == queue.queue_id
        })
        .ok_or_else(|| {
            no_route(format!(
                "the key's queue {} of broker group {} takes no writes now (its master is down, \
                 fenced or not registered yet); a keyed message waits for its own queue rather \
                 than move and break the key's order: try again shortly",
                queue.queue_id, queue.broker_group
            ))
        })
}

/// The first queue from index `start` on that is `usable`, if any.
fn choose_queue(
    queues: &[QueueRoute],
    start: usize,
    usable: impl Fn(&QueueRoute) -> bool,
) -> Option<&QueueRoute> {
    (0..queues.len())
        .map(|step| &queues[(start + step) % queues.len()])
        .find(|queue| usable(queue))
}

/// The rule brokers and the NameServer apply (`limits::is_valid_topic_name`), checked before
/// anything is sent.
fn check_topic_name(topic: &str) -> Result<()> {
    if !is_valid_topic_name(topic) {
        return Err(Error::InvalidArgument(format!(
            "invalid topic name {topic:?} ({} bytes): a topic name has 1 to \
             {MAX_TOPIC_NAME_BYTES} ASCII letters, digits, '.', '_' or '-', and is not . or ..",
            topic.len()
        )));
    }
    Ok(())
}

/// Length fields of a message that a size check alone does not cover.
fn check_field_lengths(message: &Message) -> Result<()> {
    let too_long = |what: &str, bytes: usize| {
        Err(Error::InvalidArgument(format!(
            "{what} of {bytes} bytes: at most 65,535"
        )))
    };
    if message.tag.len() > usize::from(u16::MAX) {
        return too_long("tag", message.tag.len());
    }
    if message.headers.len() > usize::from(u16::MAX) {
        return too_long("header count", message.headers.len());
    }
    if let Some((name, _)) = message
        .headers
        .iter()
        .find(|(name, _)| name.len() > usize::from(u16::MAX))
    {
        return too_long("header name", name.len());
    }
    Ok(())
}

/// The producer's background task: owns the open batches and submits them in order.
struct SendTask {
    connection: Connection,
    /// The connection's broker, shared by the batches' completions.
    broker: Arc<str>,
    group: Arc<OnceLock<Arc<str>>>,
    accumulator: Accumulator<Waiter>,
    acks: Acks,
    ack_timeout_ms: u32,
    send_timeout: Duration,
    in_flight: Arc<watch::Sender<usize>>,
    producer: Weak<Inner>,
    /// The requests submitted (their batches in order), to the lane's task that finishes them
    /// as their answers come.
    answers: mpsc::UnboundedSender<(Vec<Completion>, PendingResponse)>,
}

/// Commands handled before the task looks at linger deadlines again.
const COMMANDS_PER_ROUND: usize = 4096;

impl SendTask {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut ready = Vec::new();
        loop {
            let command = match self.accumulator.next_deadline() {
                Some(deadline) => {
                    tokio::select! {
                        command = commands.recv() => command,
                        () = tokio::time::sleep_until(deadline.into()) => {
                            self.accumulator.take_expired(Instant::now(), &mut ready);
                            self.submit_all(&mut ready).await;
                            continue;
                        }
                    }
                }
                None => commands.recv().await,
            };
            let Some(command) = command else {
                // Every producer handle is gone: send what is left, then stop.
                self.accumulator.take_all(&mut ready);
                self.submit_all(&mut ready).await;
                return;
            };
            let mut next = Some(command);
            let mut handled = 0;
            while let Some(command) = next.take() {
                self.handle(command, &mut ready).await;
                handled += 1;
                if handled < COMMANDS_PER_ROUND {
                    next = commands.try_recv().ok();
                }
            }
            self.accumulator.take_expired(Instant::now(), &mut ready);
            self.submit_all(&mut ready).await;
        }
    }

    async fn handle(&mut self, command: Command, ready: &mut Vec<ReadyBatch<Waiter>>) {
        match command {
            Command::Send {
                topic,
                queue_id,
                message,
                waiter,
            } => {
                let now = Instant::now();
                self.accumulator
                    .append(&topic, queue_id, &message, waiter, now, ready);
                self.submit_all(ready).await;
            }
            Command::Resend(batch) => {
                ready.push(batch);
                self.submit_all(ready).await;
            }
            Command::Flush(done) => {
                self.accumulator.take_all(ready);
                self.submit_all(ready).await;
                let _ = done.send(());
            }
        }
    }

    /// Submits the ready batches in order; waits while the maximum requests are in flight. A
    /// broker that speaks Produce v2 gets them in as few requests as its frame limit allows,
    /// one that does not a request per batch.
    async fn submit_all(&mut self, ready: &mut Vec<ReadyBatch<Waiter>>) {
        if ready.is_empty() {
            return;
        }
        if self.connection.api_version(ApiKey::Produce) < ProduceManyRequest::VERSION {
            for batch in ready.drain(..) {
                let (entry, completion) = self.attempt(batch);
                let request = Request::Produce(ProduceRequest {
                    topic: entry.topic,
                    queue_id: entry.queue_id,
                    acks: self.acks,
                    timeout_ms: self.ack_timeout_ms,
                    batch: entry.batch,
                });
                self.submit(request, vec![completion]).await;
            }
            return;
        }
        // Room for the frame's header and fields besides the entries.
        let max_entries_bytes = self.connection.max_frame_bytes().saturating_sub(64);
        let mut batches = ready.drain(..).peekable();
        while batches.peek().is_some() {
            let (mut entries, mut completions, mut bytes) = (Vec::new(), Vec::new(), 0);
            while let Some(batch) = batches.next_if(|batch| {
                entries.is_empty() || bytes + entry_bytes(batch) <= max_entries_bytes
            }) {
                bytes += entry_bytes(&batch);
                let (entry, completion) = self.attempt(batch);
                entries.push(entry);
                completions.push(completion);
            }
            let request = Request::ProduceMany(ProduceManyRequest {
                acks: self.acks,
                timeout_ms: self.ack_timeout_ms,
                entries,
            });
            self.submit(request, completions).await;
        }
    }

    /// A ready batch as a request's entry, and the attempt that waits for its answer.
    fn attempt(&self, batch: ReadyBatch<Waiter>) -> (ProduceEntry, Completion) {
        let batch_bytes = Bytes::from(batch.batch);
        let entry = ProduceEntry {
            topic: batch.topic.to_string(),
            queue_id: batch.queue_id,
            batch: batch_bytes.clone(),
        };
        let completion = Completion {
            broker: self.broker.clone(),
            group: self.group.clone(),
            topic: batch.topic,
            queue_id: batch.queue_id,
            batch: batch_bytes,
            opened: batch.opened,
            deadline: batch.opened + self.send_timeout,
            waiters: batch.waiters,
            in_flight: self.in_flight.clone(),
            producer: self.producer.clone(),
        };
        (entry, completion)
    }

    /// Submits `request`, which carries the batches of `completions` in their order.
    async fn submit(&mut self, request: Request, completions: Vec<Completion>) {
        self.in_flight
            .send_modify(|count| *count += completions.len());
        match self.connection.submit(request).await {
            Ok(pending) => {
                if let Err(unsent) = self.answers.send((completions, pending)) {
                    // The lane's answer task is gone only when the runtime shuts down.
                    let (completions, pending) = unsent.0;
                    tokio::spawn(finish_when_answered(completions, pending));
                }
            }
            Err(error) => {
                for completion in completions {
                    tokio::spawn(completion.failed(error.clone(), false));
                }
            }
        }
    }
}

/// What a ready batch adds to a Produce v2 request: topic, queue id and batch with their
/// lengths.
fn entry_bytes(batch: &ReadyBatch<Waiter>) -> usize {
    2 + batch.topic.len() + 4 + 4 + batch.batch.len()
}

/// A lane's task that finishes its submitted requests' batches as their answers come, in
/// whatever order they come; it ends once the lane's send task is gone and every batch is
/// finished. One task per lane rather than one per request: with batches of a few messages
/// (many queues), spawning a task per batch was a fifth of the producer's instructions.
async fn finish_answered_batches(
    mut submitted: mpsc::UnboundedReceiver<(Vec<Completion>, PendingResponse)>,
) {
    let mut waiting = FuturesUnordered::new();
    loop {
        tokio::select! {
            next = submitted.recv() => match next {
                Some((completions, pending)) => {
                    waiting.push(finish_when_answered(completions, pending))
                }
                None => break,
            },
            Some(()) = waiting.next(), if !waiting.is_empty() => {}
        }
    }
    while waiting.next().await.is_some() {}
}

/// Waits for the answer to a request carrying the batches of `completions` (in their order)
/// and finishes each with its result: where it landed, or its failure (sent again elsewhere
/// when that helps). The request gives up when the earliest of its batches' send timeouts
/// runs out.
async fn finish_when_answered(completions: Vec<Completion>, pending: PendingResponse) {
    let deadline = completions
        .iter()
        .map(|completion| completion.deadline)
        .min()
        .expect("a request carries a batch");
    let broker = completions[0].broker.clone();
    let mismatch = |reason: String| Error::Protocol {
        what: "Produce response".into(),
        broker: broker.to_string(),
        reason: ProtocolViolation::Mismatch(reason),
    };
    let results: Vec<Result<ProduceResponse>> = match pending.wait_until(deadline.into()).await {
        Ok(Response::Produce(produced)) if completions.len() == 1 => vec![Ok(produced)],
        Ok(Response::ProduceMany(produced)) if produced.results.len() == completions.len() => {
            produced
                .results
                .into_iter()
                .map(|result| {
                    result.map_err(|error| Error::from_response(ApiKey::Produce, &broker, error))
                })
                .collect()
        }
        Ok(Response::ProduceMany(produced)) => {
            let error = mismatch(format!(
                "{} results for a request of {} batches",
                produced.results.len(),
                completions.len()
            ));
            vec![Err(error); completions.len()]
        }
        Ok(_) => {
            let error = Error::wrong_api(ApiKey::Produce, &broker);
            vec![Err(error); completions.len()]
        }
        Err(error) => vec![Err(error); completions.len()],
    };
    for (completion, result) in completions.into_iter().zip(results) {
        completion.finish_answered(result).await;
    }
}

/// One attempt of a batch on a lane, until it is answered: then every message learns its
/// fate (or goes on in a batch sent again to another group), its buffer bytes are given back,
/// and the batch no longer counts as in flight on this lane.
struct Completion {
    broker: Arc<str>,
    group: Arc<OnceLock<Arc<str>>>,
    topic: Arc<str>,
    queue_id: u32,
    /// The batch as sent, kept to be rebuilt for another queue.
    batch: Bytes,
    /// When its first message arrived (the send timeout counts from here), and when that
    /// timeout runs out.
    opened: Instant,
    deadline: Instant,
    waiters: Vec<Waiter>,
    in_flight: Arc<watch::Sender<usize>>,
    producer: Weak<Inner>,
}

impl Completion {
    /// Finishes this batch with the broker's answer for it.
    async fn finish_answered(self, result: Result<ProduceResponse>) {
        let result = match result {
            Ok(produced) if produced.message_count as usize == self.waiters.len() => {
                Ok(produced.base_queue_offset)
            }
            Ok(produced) => Err(Error::Protocol {
                what: "Produce response".into(),
                broker: self.broker.to_string(),
                reason: ProtocolViolation::Mismatch(format!(
                    "{} messages stored for a batch of {}",
                    produced.message_count,
                    self.waiters.len()
                )),
            }),
            Err(error) => Err(error),
        };
        match result {
            Ok(base_offset) => self.finish(Ok(base_offset)),
            // Boxed: the failure path's future (routes, resend) is large, and inline it would
            // be copied into every batch's future on the common path.
            Err(error) => Box::pin(self.failed(error, true)).await,
        }
    }

    /// The attempt failed (`sent`: after the batch reached the connection). A retryable
    /// failure has the topic's routes asked again; when the group cannot take the batch, its
    /// broker is passed by for a while, the batch's messages without a key are sent again to
    /// another group, and its keyed messages fail with an error naming the group.
    async fn failed(self, error: Error, sent: bool) {
        let Some(producer) = self.producer.upgrade() else {
            return self.finish(Err(error));
        };
        if error.is_retryable() {
            producer.routes.invalidate(&self.topic);
        }
        let Some(down) = GroupDown::of(&error, sent) else {
            return self.finish(Err(error));
        };
        producer.unreachable.mark(&self.broker, Instant::now());
        let mut this = self;
        let (mut keyed, mut unkeyed) = (Vec::new(), Vec::new());
        let is_keyed = resend::keyed_messages(&this.batch);
        for (waiter, is_keyed) in this.waiters.drain(..).zip(is_keyed) {
            if is_keyed {
                keyed.push(waiter);
            } else {
                unkeyed.push(waiter);
            }
        }
        if !unkeyed.is_empty() {
            if let Err(left) = producer.resend(&this, unkeyed, &error, down).await {
                producer.answer(left, Err(error.clone()), this.queue_id);
            }
        }
        if !keyed.is_empty() {
            let error = Error::GroupUnavailable {
                topic: this.topic.to_string(),
                group: this.group().to_string(),
                queue_id: this.queue_id,
                cause: Box::new(error),
            };
            producer.answer(keyed, Err(error), this.queue_id);
        }
        // Every waiter is answered or handed on.
        this.finish(Ok(0));
    }

    /// The broker's group, as far as known.
    fn group(&self) -> Arc<str> {
        self.group.get().cloned().unwrap_or_else(|| Arc::from("?"))
    }

    /// Answers the waiters left and counts the attempt out of the lane's batches in flight.
    fn finish(self, base_offset: Result<u64>) {
        match self.producer.upgrade() {
            Some(producer) => producer.answer(self.waiters, base_offset, self.queue_id),
            // Nobody waits for buffer space any more.
            None => _ = answer(self.waiters, base_offset, self.queue_id),
        }
        self.in_flight.send_modify(|count| *count -= 1);
    }
}

/// Answers `waiters`, the messages of one batch in order; returns the buffer bytes they held.
fn answer(waiters: Vec<Waiter>, base_offset: Result<u64>, queue_id: u32) -> usize {
    let mut buffer_bytes = 0usize;
    for (index, waiter) in waiters.into_iter().enumerate() {
        buffer_bytes += waiter.buffer_bytes as usize;
        let delivery = base_offset.clone().map(|base| Delivery {
            queue_id,
            offset: base + index as u64,
        });
        let _ = waiter.sender.send(delivery);
    }
    buffer_bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues() -> Vec<QueueRoute> {
        ["a:1", "a:1", "b:1", "b:1"]
            .iter()
            .enumerate()
            .map(|(queue_id, broker)| QueueRoute {
                broker_group: Arc::from(&broker[..1]),
                broker: Arc::from(*broker),
                queue_id: queue_id as u32 % 2,
            })
            .collect()
    }

    /// The producer refuses what a broker would (a name that is a path, a space, too long)
    /// before sending anything, with the rule in the message.
    #[test]
    fn topic_names_follow_the_brokers_rule() {
        for good in ["orders", "a.b_c-1", &"t".repeat(MAX_TOPIC_NAME_BYTES)] {
            assert!(check_topic_name(good).is_ok(), "{good}");
        }
        let too_long = "t".repeat(MAX_TOPIC_NAME_BYTES + 1);
        for bad in ["", ".", "..", "../etc", "a b", "é", &too_long] {
            let error = check_topic_name(bad).unwrap_err().to_string();
            assert!(error.contains("ASCII letters, digits"), "{bad}: {error}");
        }
    }

    #[test]
    fn messages_without_a_key_pass_an_avoided_broker_by() {
        let queues = queues();
        let not_b = |queue: &QueueRoute| &*queue.broker != "b:1";
        let brokers: Vec<&str> = (0..8)
            .map(|start| &*choose_queue(&queues, start, not_b).unwrap().broker)
            .collect();
        assert!(brokers.iter().all(|broker| *broker == "a:1"), "{brokers:?}");
        let everything = |_: &QueueRoute| true;
        assert!(choose_queue(&queues, 3, everything).is_some());
        assert!(choose_queue(&[], 0, everything).is_none());
        assert!(choose_queue(&queues, 0, |_| false).is_none());
    }

    #[test]
    fn a_key_keeps_its_queue_when_its_group_or_another_stops_taking_writes() {
        let routes = |writable: &[&str]| TopicRoutes {
            topic: Arc::from("t"),
            writable: queues()
                .into_iter()
                .filter(|queue| writable.contains(&&*queue.broker_group))
                .collect(),
            readable: queues(),
            all: queues(),
            warming_up: false,
        };
        let key_in = |group: &str| {
            (0..100)
                .map(|i| format!("k{i}"))
                .find(|key| {
                    let queue = queue_for_key(key.as_bytes(), 4).unwrap() as usize;
                    &*queues()[queue].broker_group == group
                })
                .unwrap()
        };
        let (key_a, key_b) = (key_in("a"), key_in("b"));
        let both = routes(&["a", "b"]);
        let before = queue_of_key(&both, "t", key_a.as_bytes()).unwrap().clone();
        let only_a = routes(&["a"]);
        let after = queue_of_key(&only_a, "t", key_a.as_bytes()).unwrap();
        assert_eq!(*after, before, "group b stopping moves no key of group a");
        let error = queue_of_key(&only_a, "t", key_b.as_bytes()).unwrap_err();
        assert!(error.is_retryable(), "{error}");
        assert!(
            error.to_string().contains("broker group b takes no writes"),
            "{error}"
        );
    }
}
