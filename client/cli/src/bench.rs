//! `smq bench`: load generators (produce, consume, end to end, and a mixed workload of several
//! producers and consumers) with a progress line on stderr and a summary of throughput and
//! latency.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use smq_client::connection::{Connection, ConnectionOptions};
use smq_client::consumer::messages_from_batches;
use smq_client::nameserver_api::ApiErrorCode;
use smq_client::nameserver_client::NameServerClient;
use smq_client::protocol::request::FetchRequest;
use smq_client::protocol::{Request, Response};
use smq_client::routing::{QueueRoute, RouteCache, RouteSource};
use smq_client::Admin;
use smq_client::{
    ClientConfig, ConsumedMessage, Consumer, Error, Message, PendingDelivery, Producer, StartFrom,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::produce::{apply, ProducerArgs};
use crate::topic::create_on_masters;

#[derive(Subcommand, Debug)]
pub(super) enum BenchCommand {
    /// Produce as fast as acknowledgements allow (or at --rate).
    Produce(BenchArgs),
    /// Read a topic from its earliest offset.
    Consume(BenchArgs),
    /// A paced producer stamps each message; a consumer measures produce-to-receive latency.
    E2e(BenchArgs),
    /// Several producers sharing a fixed rate over many queues and several consumers splitting
    /// the queues (OpenMessaging Benchmark's workload shape): throughput sent and received, and
    /// produce-to-receive latency.
    Mixed(MixedArgs),
}

#[derive(Args, Debug)]
pub(super) struct BenchArgs {
    /// Topic to use; created with --queues if it does not exist (produce, e2e).
    #[arg(long, env = "SMQ_TOPIC", default_value = "bench")]
    topic: String,
    /// Queues of the topic when the bench creates it.
    #[arg(long, env = "SMQ_QUEUES", default_value_t = 8)]
    queues: u32,
    /// produce: spread the messages over this many topics, TOPIC-0 to TOPIC-(N-1), each created
    /// with --queues (many queues on one broker), in runs of 16 a topic; 1 = TOPIC itself.
    #[arg(long, env = "SMQ_TOPICS", default_value_t = 1)]
    topics: u32,
    /// Bytes of each message body.
    #[arg(long, env = "SMQ_MESSAGE_BYTES", default_value_t = 1024)]
    message_bytes: usize,
    /// Messages to send (or read); default 1,000,000, or all stored for consume.
    #[arg(long, env = "SMQ_COUNT")]
    count: Option<u64>,
    /// Run this many seconds instead of a count.
    #[arg(long, env = "SMQ_DURATION")]
    duration: Option<f64>,
    /// Messages per second to send; 0 = as fast as possible (e2e default 20,000).
    #[arg(long, env = "SMQ_RATE")]
    rate: Option<u64>,
    /// Print the summary as one line of JSON on stdout.
    #[arg(long, env = "SMQ_JSON")]
    json: bool,
    /// Threads of this process's async runtime: 1 runs producer, consumer and their
    /// connections on one thread (a message's hops stay on one core: the lowest latency), 0 =
    /// one per core (the most throughput) [default: 1 for e2e, 0 for produce and consume].
    #[arg(long, env = "SMQ_THREADS")]
    threads: Option<usize>,
    #[command(flatten)]
    producer: ProducerArgs,
}

#[derive(Args, Debug)]
pub(super) struct MixedArgs {
    /// Topic to use; created with --queues if it does not exist.
    #[arg(long, env = "SMQ_TOPIC", default_value = "mixed")]
    topic: String,
    /// Queues of the topic when the bench creates it.
    #[arg(long, env = "SMQ_QUEUES", default_value_t = 100)]
    queues: u32,
    /// Producers, each with its own connections, sharing --rate; 0 when another process sends.
    #[arg(long, env = "SMQ_PRODUCERS", default_value_t = 4)]
    producers: u32,
    /// Consumers in this process; consumer i reads the topic's queues i, i+T, i+2T, ... (T =
    /// --consumers-total); 0 when another process receives.
    #[arg(long, env = "SMQ_CONSUMERS", default_value_t = 4)]
    consumers: u32,
    /// With consumers in several processes: the number of this process's first consumer.
    #[arg(long, env = "SMQ_FIRST_CONSUMER", default_value_t = 0)]
    first_consumer: u32,
    /// With consumers in several processes: how many there are in all [default: --consumers].
    #[arg(long, env = "SMQ_CONSUMERS_TOTAL")]
    consumers_total: Option<u32>,
    /// Messages per second sent by all producers of this process together; 0 = as fast as
    /// possible.
    #[arg(long, env = "SMQ_RATE", default_value_t = 50_000)]
    rate: u64,
    /// Bytes of each message body (at least 8: the send time travels in it).
    #[arg(long, env = "SMQ_MESSAGE_BYTES", default_value_t = 1024)]
    message_bytes: usize,
    /// Seconds of sending; the consumers then receive what is still on its way (without
    /// producers: seconds of receiving).
    #[arg(long, env = "SMQ_DURATION", default_value_t = 30.0)]
    duration: f64,
    /// Print the summary as one line of JSON on stdout.
    #[arg(long, env = "SMQ_JSON")]
    json: bool,
    #[command(flatten)]
    producer: ProducerArgs,
}

/// Messages and bytes so far, shared with the progress line.
#[derive(Default)]
struct Counters {
    messages: AtomicU64,
    bytes: AtomicU64,
    done: AtomicBool,
}

impl Counters {
    fn add(&self, messages: u64, bytes: u64) {
        self.messages.fetch_add(messages, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Prints a progress line on stderr once a second, one part per counter, until the first
/// counter is `done`.
fn spawn_progress(counters: Vec<(&'static str, Arc<Counters>)>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let terminal = std::io::stderr().is_terminal();
        let mut last = vec![(0, 0); counters.len()];
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.tick().await;
        while !counters[0].1.done.load(Ordering::Relaxed) {
            ticker.tick().await;
            let mut parts = Vec::with_capacity(counters.len());
            for ((what, counters), (last_messages, last_bytes)) in counters.iter().zip(&mut last) {
                let messages = counters.messages.load(Ordering::Relaxed);
                let bytes = counters.bytes.load(Ordering::Relaxed);
                parts.push(format!(
                    "{what}: {:>10} msgs/s {:>8.1} MB/s, {messages} messages",
                    messages - *last_messages,
                    (bytes - *last_bytes) as f64 / 1e6,
                ));
                (*last_messages, *last_bytes) = (messages, bytes);
            }
            let line = format!(
                "[{:>4.0}s] {}",
                start.elapsed().as_secs_f64(),
                parts.join(" | ")
            );
            if terminal {
                eprint!("\r{line}  ");
            } else {
                eprintln!("{line}");
            }
        }
        if terminal {
            eprintln!();
        }
    })
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// When a bench stops: after a count of messages, or a duration.
#[derive(Clone, Copy)]
struct Limit {
    count: Option<u64>,
    deadline: Option<Instant>,
}

impl Limit {
    fn new(args: &BenchArgs, default_count: Option<u64>) -> Limit {
        let deadline = args
            .duration
            .map(|seconds| Instant::now() + Duration::from_secs_f64(seconds));
        let count = args.count.or(if deadline.is_none() {
            default_count
        } else {
            None
        });
        Limit { count, deadline }
    }

    fn reached(&self, messages: u64) -> bool {
        self.count.is_some_and(|count| messages >= count)
            || self
                .deadline
                .is_some_and(|deadline| Instant::now() >= deadline)
    }
}

impl BenchArgs {
    /// The topics `produce` spreads its messages over (`--topics`).
    fn produce_topics(&self) -> Vec<String> {
        match self.topics {
            0 | 1 => vec![self.topic.clone()],
            n => (0..n).map(|i| format!("{}-{i}", self.topic)).collect(),
        }
    }
}

impl BenchCommand {
    /// Threads the bench's runtime should have (`--threads`): 1 = the current thread only, 0 =
    /// one per core. Only `e2e` measures latency, so only it runs on one thread by default.
    pub(super) fn runtime_threads(&self) -> usize {
        match self {
            BenchCommand::Produce(args) | BenchCommand::Consume(args) => args.threads.unwrap_or(0),
            BenchCommand::E2e(args) => args.threads.unwrap_or(1),
            BenchCommand::Mixed(_) => 0,
        }
    }
}

pub(super) async fn bench(mut config: ClientConfig, command: BenchCommand) -> anyhow::Result<()> {
    let (mode, args) = match command {
        BenchCommand::Produce(args) => ("produce", args),
        BenchCommand::Consume(args) => ("consume", args),
        BenchCommand::E2e(args) => ("e2e", args),
        BenchCommand::Mixed(args) => return bench_mixed(config, args).await,
    };
    apply(&mut config, &args.producer);
    if mode == "e2e" {
        check_room_for_send_time(args.message_bytes)?;
    }
    if mode != "consume" {
        ensure_topics(&config, &args.produce_topics(), args.queues).await?;
    }
    // The producer and every topic's routes are ready before the clock starts, as the topics
    // are: over 1,000 topics, the first message of each waited for its route (a Metadata round
    // trip) inside the measured time, one topic after the other.
    let producer = match mode {
        "produce" => Some(producer_with_routes(config.clone(), &args.produce_topics()).await?),
        _ => None,
    };
    let counters = Arc::new(Counters::default());
    let progress = spawn_progress(vec![(mode, counters.clone())]);
    let start = Instant::now();
    let result = match (mode, producer) {
        ("produce", Some(producer)) => bench_produce(producer, &args, counters.clone()).await,
        ("consume", _) => bench_consume(config, &args, counters.clone()).await,
        _ => bench_e2e(config, &args, counters.clone()).await,
    };
    let elapsed = start.elapsed();
    counters.done.store(true, Ordering::Relaxed);
    progress.abort();
    let _ = progress.await;
    let histogram = result?;
    print_summary(mode, &counters, elapsed, &histogram, args.json);
    Ok(())
}

/// Creates each of `topics` that does not exist yet, with `queues` queues; one admin connection
/// for all of them when talking to a broker directly.
async fn ensure_topics(
    config: &ClientConfig,
    topics: &[String],
    queues: u32,
) -> anyhow::Result<()> {
    let admin = match &config.nameserver {
        Some(nameserver) => TopicAdmin::NameServer(nameserver),
        None => TopicAdmin::Broker(Admin::connect(config.clone()).await?),
    };
    for topic in topics {
        admin.ensure_topic(config, topic, queues).await?;
    }
    Ok(())
}

/// Where the benchmark learns whether a topic exists and creates it.
enum TopicAdmin<'a> {
    /// The NameServer's routes; a missing topic is created on every master.
    NameServer(&'a NameServerClient),
    /// The one broker named on the command line.
    Broker(Admin),
}

impl TopicAdmin<'_> {
    async fn ensure_topic(
        &self,
        config: &ClientConfig,
        topic: &str,
        queues: u32,
    ) -> anyhow::Result<()> {
        match self {
            TopicAdmin::NameServer(nameserver) => {
                let wait = Duration::from_millis(config.route_wait_ms);
                match nameserver.route_waiting(topic, wait).await {
                    Ok(_) => Ok(()),
                    Err(error) if error.code() == Some(ApiErrorCode::TopicNotFound) => {
                        create_on_masters(config, topic, queues, &[]).await
                    }
                    Err(error) => Err(error.into()),
                }
            }
            TopicAdmin::Broker(admin) => match admin.describe_topic(topic).await {
                Ok(_) => Ok(()),
                Err(Error::UnknownTopic { .. }) => {
                    admin.create_topic(topic, queues).await?;
                    eprintln!("created topic {topic} with {queues} queues");
                    Ok(())
                }
                Err(error) => Err(error.into()),
            },
        }
    }
}

/// A producer that knows the routes of every one of `topics` already.
async fn producer_with_routes(config: ClientConfig, topics: &[String]) -> anyhow::Result<Producer> {
    let producer = Producer::connect(config).await?;
    for topic in topics {
        producer.queue_count_of(topic).await?;
    }
    Ok(producer)
}

/// Sends messages within `limit` at `rate` (0 = unpaced), the body made by `body`; each
/// message's acknowledgement latency goes into the returned histogram (µs).
async fn run_producer(
    producer: &Producer,
    topics: &[String],
    message_bytes: usize,
    limit: Limit,
    rate: u64,
    body: impl Fn(&mut [u8]),
    counters: Option<Arc<Counters>>,
) -> anyhow::Result<(u64, Histogram<u64>)> {
    let (pending_tx, mut pending_rx) = mpsc::channel::<(Instant, PendingDelivery)>(1 << 16);
    let acks = tokio::spawn(async move {
        let mut histogram = new_histogram();
        while let Some((sent_at, pending)) = pending_rx.recv().await {
            pending.wait().await?;
            histogram.saturating_record(sent_at.elapsed().as_micros() as u64);
            if let Some(counters) = &counters {
                counters.add(1, message_bytes as u64);
            }
        }
        Ok::<_, Error>(histogram)
    });
    let template = vec![b'x'; message_bytes];
    let start = Instant::now();
    let mut sent = 0u64;
    'sending: while !limit.reached(sent) {
        let due = if rate == 0 {
            sent + 1024
        } else {
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            if due <= sent {
                tokio::time::sleep(Duration::from_micros(500)).await;
                continue;
            }
            due
        };
        while sent < due {
            if limit.count.is_some_and(|count| sent >= count) {
                break 'sending;
            }
            let mut payload = template.clone();
            body(&mut payload);
            let now = Instant::now();
            // Runs of 16 messages per topic: the producer's round robin over a topic's queues
            // (`--sticky-queue-bytes 0`) then reaches every queue of every topic.
            let topic = &topics[((sent / 16) % topics.len() as u64) as usize];
            let pending = producer
                .start_send(topic, Message::from_body(payload))
                .await?;
            sent += 1;
            if pending_tx.send((now, pending)).await.is_err() {
                break 'sending;
            }
        }
    }
    drop(pending_tx);
    producer.flush().await?;
    let histogram = acks.await.context("acknowledgement task")??;
    Ok((sent, histogram))
}

async fn bench_produce(
    producer: Producer,
    args: &BenchArgs,
    counters: Arc<Counters>,
) -> anyhow::Result<Histogram<u64>> {
    let limit = Limit::new(args, Some(1_000_000));
    let rate = args.rate.unwrap_or(0);
    let (_, histogram) = run_producer(
        &producer,
        &args.produce_topics(),
        args.message_bytes,
        limit,
        rate,
        |_| {},
        Some(counters),
    )
    .await?;
    Ok(histogram)
}

async fn bench_consume(
    mut config: ClientConfig,
    args: &BenchArgs,
    counters: Arc<Counters>,
) -> anyhow::Result<Histogram<u64>> {
    config.fetch_max_bytes = 16 * 1024 * 1024;
    config.fetch_max_wait_ms = 100;
    let stored = stored_messages(&config, &args.topic).await?;
    let limit = Limit::new(args, Some(stored));
    let mut consumer = Consumer::connect(config, &args.topic, None, StartFrom::Earliest).await?;
    // Latency here is how long each poll waited for its messages.
    let mut histogram = new_histogram();
    let mut received = 0u64;
    while !limit.reached(received) {
        let polled_at = Instant::now();
        let messages = consumer.poll(usize::MAX).await?;
        if messages.is_empty() {
            continue;
        }
        histogram.saturating_record(polled_at.elapsed().as_micros() as u64);
        let bytes: usize = messages.iter().map(|message| message.body.len()).sum();
        received += messages.len() as u64;
        counters.add(messages.len() as u64, bytes as u64);
    }
    Ok(histogram)
}

/// Messages stored in the topic: on `--broker`, or on every master its route names.
async fn stored_messages(config: &ClientConfig, topic: &str) -> anyhow::Result<u64> {
    let queues = Admin::stored_messages(config, topic).await?;
    Ok(queues.iter().map(|queue| queue.messages).sum())
}

async fn bench_e2e(
    config: ClientConfig,
    args: &BenchArgs,
    counters: Arc<Counters>,
) -> anyhow::Result<Histogram<u64>> {
    let mut consumer_config = config.clone();
    consumer_config.fetch_max_wait_ms = 100;
    let mut consumer =
        Consumer::connect(consumer_config, &args.topic, None, StartFrom::Latest).await?;
    let producer = Producer::connect(config).await?;
    let limit = Limit::new(args, None);
    let limit = if limit.count.is_none() && limit.deadline.is_none() {
        Limit {
            count: None,
            deadline: Some(Instant::now() + Duration::from_secs(10)),
        }
    } else {
        limit
    };
    let rate = args.rate.unwrap_or(20_000);
    let until = Arc::new(ReceiveUntil::all_sent());
    let receiving = until.clone();
    let consuming =
        tokio::spawn(async move { receive_stamped(&mut consumer, &receiving, &counters).await });
    let (count, _) = run_producer(
        &producer,
        std::slice::from_ref(&args.topic),
        args.message_bytes,
        limit,
        rate,
        stamp_send_time,
        None,
    )
    .await?;
    until.sent.store(count, Ordering::Relaxed);
    let (histogram, _) = consuming.await.context("consumer task")??;
    Ok(histogram)
}

/// The send time in the body of an end-to-end bench message: its first 8 bytes, nanoseconds
/// since the Unix epoch, big-endian. Wall-clock time, so that a consumer in another process
/// (or on another machine with a synchronized clock) can read it.
const SEND_TIME_BYTES: usize = 8;

fn check_room_for_send_time(message_bytes: usize) -> anyhow::Result<()> {
    if message_bytes < SEND_TIME_BYTES {
        bail!(
            "--message-bytes must be at least {SEND_TIME_BYTES}: the send time travels in the body"
        );
    }
    Ok(())
}

fn unix_time_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

/// Writes the send time into a message body (see [`SEND_TIME_BYTES`]).
fn stamp_send_time(payload: &mut [u8]) {
    payload[..SEND_TIME_BYTES].copy_from_slice(&unix_time_ns().to_be_bytes());
}

/// Microseconds from the send time in `body` to `now_ns`.
fn latency_us(body: &[u8], now_ns: u64) -> u64 {
    let sent_ns = u64::from_be_bytes(
        body[..SEND_TIME_BYTES]
            .try_into()
            .expect("a bench message holds its send time"),
    );
    now_ns.saturating_sub(sent_ns) / 1000
}

/// What a bench consumer reads: the library's [`Consumer`] (every queue of the topic) or
/// [`AssignedQueues`] (a share of them).
trait MessageSource {
    async fn next_messages(&mut self) -> anyhow::Result<Vec<ConsumedMessage>>;
}

impl MessageSource for Consumer {
    async fn next_messages(&mut self) -> anyhow::Result<Vec<ConsumedMessage>> {
        Ok(self.poll(usize::MAX).await?)
    }
}

/// When the consumers of an end-to-end bench stop: once they together received every message
/// sent (known when the producers are done), or at a deadline when another process sends.
struct ReceiveUntil {
    /// Messages sent; `u64::MAX` while unknown.
    sent: AtomicU64,
    deadline: Option<Instant>,
}

impl ReceiveUntil {
    fn all_sent() -> ReceiveUntil {
        ReceiveUntil {
            sent: AtomicU64::new(u64::MAX),
            deadline: None,
        }
    }
}

/// Reads stamped messages from `source` until `until` says stop, recording each one's latency
/// from its send time (µs) and counting it in `received`, which every consumer of the bench
/// shares; returns the latencies and when the last message arrived. Fails when no consumer
/// received anything for 10 s while messages are missing.
async fn receive_stamped(
    source: &mut impl MessageSource,
    until: &ReceiveUntil,
    received: &Counters,
) -> anyhow::Result<(Histogram<u64>, Option<Instant>)> {
    let mut histogram = new_histogram();
    let mut last_received_at = None;
    let mut seen = 0;
    let mut last_progress = Instant::now();
    loop {
        let total = received.messages.load(Ordering::Relaxed);
        if total != seen {
            (seen, last_progress) = (total, Instant::now());
        }
        let sent = until.sent.load(Ordering::Relaxed);
        if total >= sent || until.deadline.is_some_and(|at| Instant::now() >= at) {
            break;
        }
        if sent != u64::MAX && last_progress.elapsed() > Duration::from_secs(10) {
            bail!(
                "{} of {sent} messages did not arrive within 10 s",
                sent - total
            );
        }
        let messages = source.next_messages().await?;
        if messages.is_empty() {
            continue;
        }
        last_received_at = Some(Instant::now());
        let now_ns = unix_time_ns();
        let mut bytes = 0;
        for message in &messages {
            histogram.saturating_record(latency_us(&message.body, now_ns));
            bytes += message.body.len() as u64;
        }
        received.add(messages.len() as u64, bytes);
    }
    Ok((histogram, last_received_at))
}

/// A fixed share of a topic's queues, each read from where it ended when the reader was made,
/// with one long-poll fetch per queue in flight on the reader's own connections; no offsets are
/// committed. The library's [`Consumer`] reads every queue of a topic (consumers of a group do
/// not split the queues yet), so `bench mixed` assigns them itself.
struct AssignedQueues {
    topic: String,
    fetch_max_bytes: u32,
    fetch_max_wait_ms: u32,
    queues: Vec<AssignedQueue>,
    fetches: JoinSet<(usize, smq_client::Result<Response>)>,
}

struct AssignedQueue {
    route: QueueRoute,
    connection: Connection,
    next_offset: u64,
}

impl AssignedQueues {
    async fn connect(
        config: &ClientConfig,
        topic: &str,
        share: Vec<QueueRoute>,
    ) -> anyhow::Result<AssignedQueues> {
        // Every queue's fetch may be waiting at once.
        let options = connection_options(config, config.max_in_flight_requests.max(share.len()));
        let mut brokers = HashMap::new();
        let mut queues = Vec::with_capacity(share.len());
        for route in share {
            if !brokers.contains_key(&route.broker) {
                let connection = Connection::connect(ConnectionOptions {
                    broker: route.broker.to_string(),
                    ..options.clone()
                })
                .await?;
                let admin = Admin::connect_to(config, &route.broker).await?;
                let held = admin.describe_topic(topic).await?;
                brokers.insert(route.broker.clone(), (connection, held));
            }
            let (connection, held) = &brokers[&route.broker];
            let end = held.queues.iter().find(|q| q.queue_id == route.queue_id);
            queues.push(AssignedQueue {
                next_offset: end.map_or(0, |queue| queue.high_watermark),
                connection: connection.clone(),
                route,
            });
        }
        let mut reader = AssignedQueues {
            topic: topic.to_owned(),
            fetch_max_bytes: config.fetch_max_bytes,
            fetch_max_wait_ms: config.fetch_max_wait_ms,
            queues,
            fetches: JoinSet::new(),
        };
        for index in 0..reader.queues.len() {
            reader.start_fetch(index);
        }
        Ok(reader)
    }

    fn start_fetch(&mut self, index: usize) {
        let queue = &self.queues[index];
        let request = Request::Fetch(FetchRequest {
            topic: self.topic.clone(),
            queue_id: queue.route.queue_id,
            offset: queue.next_offset,
            max_bytes: self.fetch_max_bytes,
            max_wait_ms: self.fetch_max_wait_ms,
            topic_id: 0,
        });
        let connection = queue.connection.clone();
        self.fetches
            .spawn(async move { (index, connection.request(request).await) });
    }
}

impl MessageSource for AssignedQueues {
    async fn next_messages(&mut self) -> anyhow::Result<Vec<ConsumedMessage>> {
        let Some(joined) = self.fetches.join_next().await else {
            return Ok(Vec::new());
        };
        let (index, response) = joined.context("fetch task")?;
        let queue = &mut self.queues[index];
        let fetched = match response.with_context(|| format!("fetch of queue {}", queue.route))? {
            Response::Fetch(fetched) => fetched,
            _ => bail!(
                "fetch of queue {}: the broker answered another api",
                queue.route
            ),
        };
        let mut messages = Vec::new();
        queue.next_offset = messages_from_batches(
            &queue.route.broker_group,
            queue.route.queue_id,
            &fetched.batches,
            queue.next_offset,
            &mut messages,
        )
        .map_err(|reason| anyhow!("fetch of queue {}: {reason}", queue.route))?;
        self.start_fetch(index);
        Ok(messages)
    }
}

/// The library's connection options for `config`, with `max_in_flight_requests`.
fn connection_options(config: &ClientConfig, max_in_flight_requests: usize) -> ConnectionOptions {
    ConnectionOptions {
        broker: config.broker.clone(),
        client_id: config.client_id.clone(),
        credential: config.credential.clone(),
        tls: config.tls.clone(),
        request_timeout: Duration::from_millis(config.request_timeout_ms),
        max_in_flight_requests,
    }
}

/// The queues each consumer of this process reads: consumer i (numbered over every process)
/// reads the topic's queues i, i+T, i+2T, ... in route order (group, then queue number).
async fn queue_shares(
    config: &ClientConfig,
    args: &MixedArgs,
) -> anyhow::Result<Vec<Vec<QueueRoute>>> {
    let total = args.consumers_total.unwrap_or(args.consumers);
    if args.first_consumer + args.consumers > total {
        bail!(
            "consumers {}..{} of {total}: --first-consumer + --consumers is at most --consumers-total",
            args.first_consumer,
            args.first_consumer + args.consumers
        );
    }
    let source = match &config.nameserver {
        Some(client) => RouteSource::NameServer(client.clone()),
        None => RouteSource::Broker(config.broker.clone()),
    };
    let options = connection_options(config, config.max_in_flight_requests);
    let routes = RouteCache::new(
        source,
        options,
        Duration::from_millis(config.route_refresh_ms),
        Duration::from_millis(config.route_wait_ms),
    )
    .get(&args.topic)
    .await?;
    let queues = &routes.readable;
    if total as usize > queues.len() {
        bail!(
            "{total} consumers for {} queues of topic {}: each consumer needs a queue \
             (lower --consumers or create the topic with more --queues)",
            queues.len(),
            args.topic
        );
    }
    Ok((args.first_consumer..args.first_consumer + args.consumers)
        .map(|first| {
            queues
                .iter()
                .skip(first as usize)
                .step_by(total as usize)
                .cloned()
                .collect()
        })
        .collect())
}

/// The share of a total rate that producer `index` of `producers` sends.
fn rate_of(rate: u64, producers: u32, index: u32) -> u64 {
    let producers = u64::from(producers);
    rate / producers + u64::from(u64::from(index) < rate % producers)
}

async fn bench_mixed(mut config: ClientConfig, args: MixedArgs) -> anyhow::Result<()> {
    apply(&mut config, &args.producer);
    config.fetch_max_wait_ms = 100;
    if args.producers == 0 && args.consumers == 0 {
        bail!("nothing to run: --producers and --consumers are both 0");
    }
    check_room_for_send_time(args.message_bytes)?;
    if args.producers > 0 {
        ensure_topics(&config, std::slice::from_ref(&args.topic), args.queues).await?;
    }
    let duration = Duration::from_secs_f64(args.duration);
    let sent = Arc::new(Counters::default());
    let received = Arc::new(Counters::default());
    let until = Arc::new(ReceiveUntil {
        sent: AtomicU64::new(u64::MAX),
        deadline: (args.producers == 0).then(|| Instant::now() + duration),
    });
    // Consumers first, so that they read from where the queues end before anything is sent.
    let mut consumers = JoinSet::new();
    for share in queue_shares(&config, &args).await? {
        let mut reader = AssignedQueues::connect(&config, &args.topic, share).await?;
        let (until, received) = (until.clone(), received.clone());
        consumers.spawn(async move { receive_stamped(&mut reader, &until, &received).await });
    }
    let mut producers = Vec::new();
    for _ in 0..args.producers {
        producers.push(Producer::connect(config.clone()).await?);
    }
    let mut shown = Vec::new();
    if args.producers > 0 {
        shown.push(("sent", sent.clone()));
    }
    if args.consumers > 0 {
        shown.push(("received", received.clone()));
    }
    let progress = spawn_progress(shown);
    let start = Instant::now();
    let limit = Limit {
        count: None,
        deadline: Some(start + duration),
    };
    let mut sending = JoinSet::new();
    for (index, producer) in producers.into_iter().enumerate() {
        let rate = rate_of(args.rate, args.producers, index as u32);
        let (topic, message_bytes, sent) = (args.topic.clone(), args.message_bytes, sent.clone());
        sending.spawn(async move {
            let counters = Some(sent);
            run_producer(
                &producer,
                std::slice::from_ref(&topic),
                message_bytes,
                limit,
                rate,
                stamp_send_time,
                counters,
            )
            .await
        });
    }
    let mut sent_total = 0;
    let mut publish_latency = new_histogram();
    while let Some(joined) = sending.join_next().await {
        let (count, histogram) = joined.context("producer task")??;
        sent_total += count;
        publish_latency.add(&histogram).expect("same bounds");
    }
    let send_elapsed = start.elapsed();
    if args.producers > 0 {
        // Without producers here, the consumers receive until the deadline.
        until.sent.store(sent_total, Ordering::Relaxed);
    }
    let mut latency = new_histogram();
    // Received throughput is counted up to the last arrival, not to the end of the last long
    // poll; without producers, over the whole duration.
    let mut last_received_at = start;
    while let Some(joined) = consumers.join_next().await {
        let (histogram, last) = joined.context("consumer task")??;
        latency.add(&histogram).expect("same bounds");
        last_received_at = last_received_at.max(last.unwrap_or(start));
    }
    let receive_elapsed = match args.producers {
        0 => start.elapsed(),
        _ => last_received_at - start,
    };
    sent.done.store(true, Ordering::Relaxed);
    received.done.store(true, Ordering::Relaxed);
    progress.abort();
    let _ = progress.await;
    let summary = MixedSummary {
        args: &args,
        sent: Throughput::of(&sent, send_elapsed),
        received: Throughput::of(&received, receive_elapsed),
        latency: Quantiles::of(&latency),
        publish_latency: Quantiles::of(&publish_latency),
    };
    summary.print();
    Ok(())
}

/// Messages and bytes counted over some seconds.
struct Throughput {
    messages: u64,
    bytes: u64,
    seconds: f64,
    msgs_per_sec: f64,
    mb_per_sec: f64,
}

impl Throughput {
    fn of(counters: &Counters, elapsed: Duration) -> Throughput {
        let messages = counters.messages.load(Ordering::Relaxed);
        let bytes = counters.bytes.load(Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        Throughput {
            messages,
            bytes,
            seconds,
            msgs_per_sec: messages as f64 / seconds,
            mb_per_sec: bytes as f64 / 1e6 / seconds,
        }
    }

    fn text(&self) -> String {
        format!(
            "{} messages, {:.1} MB in {:.2} s: {:.0} msgs/s, {:.1} MB/s",
            self.messages,
            self.bytes as f64 / 1e6,
            self.seconds,
            self.msgs_per_sec,
            self.mb_per_sec
        )
    }
}

/// A latency histogram's quantiles, in ms.
struct Quantiles {
    p50: f64,
    p99: f64,
    p99_9: f64,
    p99_99: f64,
    max: f64,
}

impl Quantiles {
    fn of(histogram: &Histogram<u64>) -> Quantiles {
        let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
        Quantiles {
            p50: ms(0.5),
            p99: ms(0.99),
            p99_9: ms(0.999),
            p99_99: ms(0.9999),
            max: histogram.max() as f64 / 1000.0,
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "p50": self.p50,
            "p99": self.p99,
            "p99_9": self.p99_9,
            "p99_99": self.p99_99,
            "max": self.max,
        })
    }

    fn text(&self) -> String {
        format!(
            "p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, p99.99 {:.3} ms, max {:.3} ms",
            self.p50, self.p99, self.p99_9, self.p99_99, self.max
        )
    }
}

struct MixedSummary<'a> {
    args: &'a MixedArgs,
    sent: Throughput,
    received: Throughput,
    latency: Quantiles,
    publish_latency: Quantiles,
}

impl MixedSummary<'_> {
    /// The received side takes the field names of the other modes (`messages`, `msgs_per_sec`,
    /// `latency_ms`, ...); the sent side has them with `sent_` in front.
    fn print(&self) {
        let (args, sent, received) = (self.args, &self.sent, &self.received);
        if args.json {
            let summary = serde_json::json!({
                "mode": "mixed",
                "producers": args.producers,
                "consumers": args.consumers,
                "queues": args.queues,
                "rate": args.rate,
                "message_bytes": args.message_bytes,
                "sent": sent.messages,
                "sent_bytes": sent.bytes,
                "sent_seconds": sent.seconds,
                "sent_msgs_per_sec": sent.msgs_per_sec,
                "sent_mb_per_sec": sent.mb_per_sec,
                "received": received.messages,
                "messages": received.messages,
                "bytes": received.bytes,
                "seconds": received.seconds,
                "msgs_per_sec": received.msgs_per_sec,
                "mb_per_sec": received.mb_per_sec,
                "latency_ms": self.latency.json(),
                "publish_latency_ms": self.publish_latency.json(),
            });
            println!("{summary}");
            return;
        }
        println!(
            "mixed: {} producers ({} msgs/s asked), {} consumers, topic {}, {}-byte messages",
            args.producers, args.rate, args.consumers, args.topic, args.message_bytes
        );
        if args.producers > 0 {
            println!("sent {}", sent.text());
            println!(
                "latency (send to acknowledgement): {}",
                self.publish_latency.text()
            );
        }
        if args.consumers > 0 {
            println!("received {}", received.text());
            println!("latency (produce to receive): {}", self.latency.text());
        }
    }
}

fn print_summary(
    mode: &str,
    counters: &Counters,
    elapsed: Duration,
    histogram: &Histogram<u64>,
    json: bool,
) {
    let throughput = Throughput::of(counters, elapsed);
    let latency = Quantiles::of(histogram);
    if json {
        let summary = serde_json::json!({
            "mode": mode,
            "messages": throughput.messages,
            "bytes": throughput.bytes,
            "seconds": throughput.seconds,
            "msgs_per_sec": throughput.msgs_per_sec,
            "mb_per_sec": throughput.mb_per_sec,
            "latency_ms": latency.json(),
            "threads": tokio::runtime::Handle::current().metrics().num_workers(),
        });
        println!("{summary}");
    } else {
        let what = match mode {
            "produce" => "send to acknowledgement",
            "consume" => "wait per poll",
            _ => "produce to receive",
        };
        println!(
            "{mode}: {}\nlatency ({what}): {}",
            throughput.text(),
            latency.text()
        );
    }
}
