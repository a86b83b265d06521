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

mod accumulator;
mod fault_avoidance;
mod partitioner;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::connection::{Connection, ConnectionOptions, OnConnection, PendingResponse, PerBroker};
use crate::error::{Error, Result};
use crate::protocol::limits::{MAX_BATCH_BYTES_DEFAULT, MAX_TOPIC_NAME_BYTES};
use crate::protocol::record_batch::Message;
use crate::protocol::request::{Acks, ProduceRequest};
use crate::protocol::{ErrorCode, Request, Response};
use crate::routing::{QueueRoute, RouteCache, TopicRoutes};
use crate::ClientConfig;

use accumulator::{Accumulator, ReadyBatch};
use fault_avoidance::Unreachable;
use partitioner::RoundRobin;
pub use partitioner::{fnv1a_32, queue_for_key};

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
/// message with a key goes to queue `fnv1a_32(key) % queue_count` of that list, so all messages
/// of one key keep their order in one queue while the routes stay the same; messages without a
/// key go round robin, past the queues of a broker the producer just failed to reach (for a few
/// seconds, or until the routes drop it): when one group's master dies, messages without a key go
/// on to the other groups at once. Messages wait at
/// most `linger_ms` to fill a batch of `batch_bytes`; at most `max_in_flight_requests` batches
/// wait for their acknowledgement at a time, and at most `buffer_bytes` of messages are held.
/// Clones share the producer.
///
/// Batches of one queue are sent in order on one connection; the producer does not retry a
/// failed batch by itself (each message gets the [`Error`], which says whether a retry helps),
/// so the order within a queue holds as long as the broker appends a connection's requests in
/// the order they arrive. A retryable failure makes the producer ask for the topic's routes
/// again, and a connection that ended is opened again on the next send.
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

#[derive(Debug)]
struct Inner {
    routes: Arc<RouteCache>,
    /// One lane per broker, opened on first use and again once its connection ended.
    lanes: PerBroker<Arc<Lane>>,
    settings: LaneSettings,
    /// Bytes of messages accepted and not yet acknowledged may not pass `buffer_bytes`.
    buffer: Arc<Semaphore>,
    buffer_bytes: u32,
    round_robin: RoundRobin,
    /// Brokers just found unreachable, avoided by messages without a key.
    unreachable: Arc<Unreachable>,
}

/// How every lane connects and batches.
#[derive(Debug)]
struct LaneSettings {
    connection: ConnectionOptions,
    batch_bytes: usize,
    linger: Duration,
    acks: Acks,
    ack_timeout_ms: u32,
}

/// One broker's connection and the task that batches and submits its messages.
#[derive(Debug)]
struct Lane {
    connection: Connection,
    commands: mpsc::Sender<Command>,
    /// Batches submitted and not yet answered.
    in_flight: watch::Receiver<usize>,
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
        let producer = Producer {
            inner: Arc::new(Inner {
                routes: config.route_cache(),
                lanes: PerBroker::default(),
                settings: LaneSettings {
                    connection: config.connection_options(),
                    batch_bytes: config.batch_bytes.min(MAX_BATCH_BYTES_DEFAULT),
                    linger: Duration::from_millis(config.linger_ms),
                    acks: config.acks,
                    ack_timeout_ms: config.ack_timeout_ms,
                },
                buffer: Arc::new(Semaphore::new(buffer_bytes as usize)),
                buffer_bytes,
                round_robin: RoundRobin::default(),
                unreachable: Arc::default(),
            }),
        };
        if config.nameserver.is_none() {
            producer.lane(&config.broker).await?;
        }
        Ok(producer)
    }

    /// The lane to `broker`, opening it when there is none or its connection ended.
    async fn lane(&self, broker: &str) -> Result<Arc<Lane>> {
        let open = || async { Ok(Arc::new(self.connect_lane(broker).await?)) };
        self.inner.lanes.get_or_open(broker, open).await
    }

    async fn connect_lane(&self, broker: &str) -> Result<Lane> {
        let inner = &self.inner;
        let settings = &inner.settings;
        let connection = Connection::connect(settings.connection.to(broker)).await?;
        let (commands, commands_rx) = mpsc::channel(1024);
        let (in_flight_tx, in_flight) = watch::channel(0usize);
        let task = SendTask {
            connection: connection.clone(),
            accumulator: Accumulator::new(settings.batch_bytes, settings.linger),
            acks: settings.acks,
            ack_timeout_ms: settings.ack_timeout_ms,
            buffer: inner.buffer.clone(),
            in_flight: Arc::new(in_flight_tx),
            routes: inner.routes.clone(),
            unreachable: inner.unreachable.clone(),
        };
        tokio::spawn(task.run(commands_rx));
        Ok(Lane {
            connection,
            commands,
            in_flight,
        })
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
        // Nothing is sent before a lane is open, so a message without a key whose broker cannot
        // be reached goes to another queue, at most once per queue.
        let mut attempts = 0;
        let (queue, lane) = loop {
            let avoided = |queue: &QueueRoute| inner.unreachable.avoids(&queue.broker);
            let queue = if message.key.is_empty() {
                choose_queue(&routes.writable, &inner.round_robin, avoided).ok_or_else(|| {
                    Error::NoRoute {
                        topic: topic.to_owned(),
                        reason: "no broker group with a live master takes writes to it".into(),
                    }
                })?
            } else {
                queue_of_key(&routes, topic, &message.key)?
            };
            match self.lane(&queue.broker).await {
                Ok(lane) => break (queue, lane),
                Err(error) => {
                    inner.routes.invalidate(topic);
                    inner
                        .unreachable
                        .mark(&queue.broker, std::time::Instant::now());
                    attempts += 1;
                    let may_move = message.key.is_empty() && error.is_retryable();
                    if !may_move || attempts >= routes.writable.len() {
                        return Err(error);
                    }
                }
            }
        };
        let message_bytes = message.encoded_len();
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
    /// sent so far is answered.
    pub async fn flush(&self) -> Result<()> {
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
        Ok(())
    }

    /// The number of writable queues of `topic` (over every broker group), asked the first time
    /// and remembered.
    pub async fn queue_count_of(&self, topic: &str) -> Result<u32> {
        check_topic_name(topic)?;
        Ok(self.inner.routes.get(topic).await?.writable.len() as u32)
    }
}

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

/// The queue for a message without a key: the next in turn that is not `avoided` (the next in
/// turn if all are).
fn choose_queue<'a>(
    queues: &'a [QueueRoute],
    round_robin: &RoundRobin,
    avoided: impl Fn(&QueueRoute) -> bool,
) -> Option<&'a QueueRoute> {
    let count = u32::try_from(queues.len())
        .ok()
        .filter(|count| *count > 0)?;
    let start = round_robin.next(count) as usize;
    let in_turn = (0..queues.len()).map(|step| &queues[(start + step) % queues.len()]);
    in_turn
        .clone()
        .find(|queue| !avoided(queue))
        .or_else(|| in_turn.clone().next())
}

fn check_topic_name(topic: &str) -> Result<()> {
    if topic.is_empty() || topic.len() > MAX_TOPIC_NAME_BYTES {
        return Err(Error::InvalidArgument(format!(
            "topic name of {} bytes: a topic name has 1 to {MAX_TOPIC_NAME_BYTES} bytes",
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
    accumulator: Accumulator<Waiter>,
    acks: Acks,
    ack_timeout_ms: u32,
    buffer: Arc<Semaphore>,
    in_flight: Arc<watch::Sender<usize>>,
    /// Told when a batch fails in a way new routes may fix.
    routes: Arc<RouteCache>,
    /// Told when the broker cannot be reached.
    unreachable: Arc<Unreachable>,
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
                            self.accumulator.take_expired(std::time::Instant::now(), &mut ready);
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
            self.accumulator
                .take_expired(std::time::Instant::now(), &mut ready);
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
                let now = std::time::Instant::now();
                self.accumulator
                    .append(&topic, queue_id, &message, waiter, now, ready);
                self.submit_all(ready).await;
            }
            Command::Flush(done) => {
                self.accumulator.take_all(ready);
                self.submit_all(ready).await;
                let _ = done.send(());
            }
        }
    }

    /// Submits each ready batch in order; waits while the maximum requests are in flight.
    async fn submit_all(&mut self, ready: &mut Vec<ReadyBatch<Waiter>>) {
        for batch in ready.drain(..) {
            let topic = batch.topic.clone();
            let request = Request::Produce(ProduceRequest {
                topic: batch.topic,
                queue_id: batch.queue_id,
                acks: self.acks,
                timeout_ms: self.ack_timeout_ms,
                batch: Bytes::from(batch.batch),
            });
            let completion = Completion {
                broker: self.connection.broker().to_owned(),
                topic,
                queue_id: batch.queue_id,
                waiters: batch.waiters,
                buffer: self.buffer.clone(),
                in_flight: self.in_flight.clone(),
                routes: self.routes.clone(),
                unreachable: self.unreachable.clone(),
            };
            self.in_flight.send_modify(|count| *count += 1);
            match self.connection.submit(request).await {
                Ok(pending) => {
                    tokio::spawn(completion.finish_when_answered(pending));
                }
                Err(error) => completion.finish(Err(error)),
            }
        }
    }
}

/// What happens once a batch is answered: every message learns its fate, its buffer bytes are
/// given back, the batch no longer counts as in flight, and a retryable failure has the topic's
/// routes asked again.
struct Completion {
    broker: String,
    topic: String,
    queue_id: u32,
    waiters: Vec<Waiter>,
    buffer: Arc<Semaphore>,
    in_flight: Arc<watch::Sender<usize>>,
    routes: Arc<RouteCache>,
    unreachable: Arc<Unreachable>,
}

impl Completion {
    async fn finish_when_answered(self, pending: PendingResponse) {
        let result = match pending.wait().await {
            Ok(Response::Produce(produce))
                if produce.message_count as usize == self.waiters.len() =>
            {
                Ok(produce.base_queue_offset)
            }
            Ok(Response::Produce(produce)) => Err(Error::Protocol {
                what: "Produce response".into(),
                broker: self.broker.clone(),
                reason: format!(
                    "{} messages stored for a batch of {}",
                    produce.message_count,
                    self.waiters.len()
                ),
            }),
            Ok(_) => Err(Error::Protocol {
                what: "Produce response".into(),
                broker: self.broker.clone(),
                reason: "the response does not match the request's api".into(),
            }),
            Err(error) => Err(error),
        };
        self.finish(result);
    }

    fn finish(self, base_offset: Result<u64>) {
        if let Err(error) = &base_offset {
            if error.is_retryable() {
                self.routes.invalidate(&self.topic);
            }
            // A broker that cannot store (fenced log, full disk, fsync too slow, no slave in
            // sync under synchronous replication) is passed by like one that cannot be reached.
            let cannot_store = matches!(
                error.code(),
                Some(
                    ErrorCode::StorageError
                        | ErrorCode::FlushTimeout
                        | ErrorCode::NoSlave
                        | ErrorCode::ReplicationTimeout
                )
            );
            if cannot_store
                || matches!(
                    error,
                    Error::Connect { .. } | Error::ConnectionClosed { .. } | Error::Timeout { .. }
                )
            {
                self.unreachable
                    .mark(&self.broker, std::time::Instant::now());
            }
        }
        let mut buffer_bytes = 0usize;
        for (index, waiter) in self.waiters.into_iter().enumerate() {
            buffer_bytes += waiter.buffer_bytes as usize;
            let delivery = base_offset.clone().map(|base| Delivery {
                queue_id: self.queue_id,
                offset: base + index as u64,
            });
            let _ = waiter.sender.send(delivery);
        }
        self.buffer.add_permits(buffer_bytes);
        self.in_flight.send_modify(|count| *count -= 1);
    }
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

    #[test]
    fn messages_without_a_key_pass_an_avoided_broker_by() {
        let queues = queues();
        let round_robin = RoundRobin::default();
        let avoid_b = |queue: &QueueRoute| &*queue.broker == "b:1";
        let brokers: Vec<&str> = (0..8)
            .map(|_| &*choose_queue(&queues, &round_robin, avoid_b).unwrap().broker)
            .collect();
        assert!(brokers.iter().all(|broker| *broker == "a:1"), "{brokers:?}");
        let everything = |_: &QueueRoute| true;
        assert!(choose_queue(&queues, &round_robin, everything).is_some());
        assert!(choose_queue(&[], &round_robin, everything).is_none());
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
