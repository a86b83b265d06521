//! `smq bench`: load generators (produce, consume, end to end) with a progress line on stderr
//! and a summary of throughput and latency.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use smq_client::nameserver_api::ApiErrorCode;
use smq_client::Admin;
use smq_client::{ClientConfig, Consumer, Error, Message, PendingDelivery, Producer, StartFrom};
use tokio::sync::mpsc;

use super::{apply, direct, stored_in, topic_on_masters, ProducerArgs, TopicCommand};

#[derive(Subcommand, Debug)]
pub(super) enum BenchCommand {
    /// Produce as fast as acknowledgements allow (or at --rate).
    Produce(BenchArgs),
    /// Read a topic from its earliest offset.
    Consume(BenchArgs),
    /// A paced producer stamps each message; a consumer measures produce-to-receive latency.
    E2e(BenchArgs),
}

#[derive(Args, Debug)]
pub(super) struct BenchArgs {
    /// Topic to use; created with --queues if it does not exist (produce, e2e).
    #[arg(long, env = "SMQ_TOPIC", default_value = "bench")]
    topic: String,
    /// Queues of the topic when the bench creates it.
    #[arg(long, env = "SMQ_QUEUES", default_value_t = 8)]
    queues: u32,
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

/// Prints a progress line on stderr once a second until `counters.done`.
fn spawn_progress(what: &'static str, counters: Arc<Counters>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let terminal = std::io::stderr().is_terminal();
        let (mut last_messages, mut last_bytes) = (0, 0);
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.tick().await;
        while !counters.done.load(Ordering::Relaxed) {
            ticker.tick().await;
            let messages = counters.messages.load(Ordering::Relaxed);
            let bytes = counters.bytes.load(Ordering::Relaxed);
            let line = format!(
                "[{:>4.0}s] {what}: {:>10} msgs/s {:>8.1} MB/s, {messages} messages",
                start.elapsed().as_secs_f64(),
                messages - last_messages,
                (bytes - last_bytes) as f64 / 1e6,
            );
            if terminal {
                eprint!("\r{line}  ");
            } else {
                eprintln!("{line}");
            }
            (last_messages, last_bytes) = (messages, bytes);
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

pub(super) async fn bench(mut config: ClientConfig, command: BenchCommand) -> anyhow::Result<()> {
    let (mode, args) = match command {
        BenchCommand::Produce(args) => ("produce", args),
        BenchCommand::Consume(args) => ("consume", args),
        BenchCommand::E2e(args) => ("e2e", args),
    };
    apply(&mut config, &args.producer);
    if mode != "consume" {
        ensure_topic(&config, &args.topic, args.queues).await?;
    }
    if args.message_bytes < 8 && mode == "e2e" {
        bail!("--message-bytes must be at least 8 for e2e: the send time travels in the body");
    }
    let counters = Arc::new(Counters::default());
    let progress = spawn_progress(mode, counters.clone());
    let start = Instant::now();
    let result = match mode {
        "produce" => bench_produce(config, &args, counters.clone()).await,
        "consume" => bench_consume(config, &args, counters.clone()).await,
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

async fn ensure_topic(config: &ClientConfig, topic: &str, queues: u32) -> anyhow::Result<()> {
    if let Some(client) = &config.nameserver {
        return match client.route(topic).await {
            Ok(_) => Ok(()),
            Err(error) if error.code() == Some(ApiErrorCode::TopicNotFound) => {
                let create = TopicCommand::Create {
                    name: topic.to_owned(),
                    queues,
                    groups: Vec::new(),
                };
                topic_on_masters(config, client, create).await
            }
            Err(error) => Err(error.into()),
        };
    }
    let admin = Admin::connect(config.clone()).await?;
    match admin.describe_topic(topic).await {
        Ok(_) => Ok(()),
        Err(Error::UnknownTopic { .. }) => {
            admin.create_topic(topic, queues).await?;
            eprintln!("created topic {topic} with {queues} queues");
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

/// Sends messages within `limit` at `rate` (0 = unpaced), the body made by `body`; each
/// message's acknowledgement latency goes into the returned histogram (µs).
async fn run_producer(
    producer: &Producer,
    args: &BenchArgs,
    limit: Limit,
    rate: u64,
    body: impl Fn(&mut Vec<u8>),
    counters: Option<Arc<Counters>>,
) -> anyhow::Result<(u64, Histogram<u64>)> {
    let (pending_tx, mut pending_rx) = mpsc::channel::<(Instant, PendingDelivery)>(1 << 16);
    let message_bytes = args.message_bytes as u64;
    let acks = tokio::spawn(async move {
        let mut histogram = new_histogram();
        while let Some((sent_at, pending)) = pending_rx.recv().await {
            pending.wait().await?;
            histogram.saturating_record(sent_at.elapsed().as_micros() as u64);
            if let Some(counters) = &counters {
                counters.add(1, message_bytes);
            }
        }
        Ok::<_, Error>(histogram)
    });
    let template = vec![b'x'; args.message_bytes];
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
            let pending = producer
                .start_send(&args.topic, Message::from_body(payload))
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
    config: ClientConfig,
    args: &BenchArgs,
    counters: Arc<Counters>,
) -> anyhow::Result<Histogram<u64>> {
    let producer = Producer::connect(config).await?;
    let limit = Limit::new(args, Some(1_000_000));
    let rate = args.rate.unwrap_or(0);
    let (_, histogram) = run_producer(&producer, args, limit, rate, |_| {}, Some(counters)).await?;
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
    let brokers: Vec<String> = match &config.nameserver {
        Some(client) => client
            .route(topic)
            .await?
            .groups
            .into_iter()
            .filter_map(|group| group.master)
            .collect(),
        None => vec![config.broker.clone()],
    };
    let mut stored = 0;
    for broker in brokers {
        let admin = Admin::connect(direct(config, &broker)).await?;
        stored += stored_in(&admin.describe_topic(topic).await?);
    }
    Ok(stored)
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
    let epoch = Instant::now();
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
    let stamp = move |payload: &mut Vec<u8>| {
        let sent_ns = epoch.elapsed().as_nanos() as u64;
        payload[..8].copy_from_slice(&sent_ns.to_be_bytes());
    };
    let sent = Arc::new(AtomicU64::new(u64::MAX));
    let sent_total = sent.clone();
    let consuming = tokio::spawn(async move {
        let mut histogram = new_histogram();
        let mut received = 0u64;
        let mut last_message = Instant::now();
        loop {
            let total = sent_total.load(Ordering::Relaxed);
            if received >= total {
                break;
            }
            if total != u64::MAX && last_message.elapsed() > Duration::from_secs(10) {
                return Err(anyhow::anyhow!(
                    "{} of {total} messages did not arrive within 10 s",
                    total - received
                ));
            }
            let messages = consumer.poll(usize::MAX).await?;
            let now_ns = epoch.elapsed().as_nanos() as u64;
            for message in &messages {
                let sent_ns = u64::from_be_bytes(message.body[..8].try_into().expect("8 bytes"));
                histogram.saturating_record(now_ns.saturating_sub(sent_ns) / 1000);
                counters.add(1, message.body.len() as u64);
            }
            if !messages.is_empty() {
                last_message = Instant::now();
            }
            received += messages.len() as u64;
        }
        Ok(histogram)
    });
    let (count, _) = run_producer(&producer, args, limit, rate, stamp, None).await?;
    sent.store(count, Ordering::Relaxed);
    consuming.await.context("consumer task")?
}

fn print_summary(
    mode: &str,
    counters: &Counters,
    elapsed: Duration,
    histogram: &Histogram<u64>,
    json: bool,
) {
    let messages = counters.messages.load(Ordering::Relaxed);
    let bytes = counters.bytes.load(Ordering::Relaxed);
    let seconds = elapsed.as_secs_f64();
    let msgs_per_sec = messages as f64 / seconds;
    let mb_per_sec = bytes as f64 / 1e6 / seconds;
    let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    let (p50, p99, p999, max) = (
        ms(0.5),
        ms(0.99),
        ms(0.999),
        histogram.max() as f64 / 1000.0,
    );
    if json {
        let summary = serde_json::json!({
            "mode": mode,
            "messages": messages,
            "bytes": bytes,
            "seconds": seconds,
            "msgs_per_sec": msgs_per_sec,
            "mb_per_sec": mb_per_sec,
            "latency_ms": { "p50": p50, "p99": p99, "p99_9": p999, "max": max },
        });
        println!("{summary}");
    } else {
        let latency = match mode {
            "produce" => "send to acknowledgement",
            "consume" => "wait per poll",
            _ => "produce to receive",
        };
        println!(
            "{mode}: {messages} messages, {:.1} MB in {seconds:.2} s: {msgs_per_sec:.0} msgs/s, {mb_per_sec:.1} MB/s\n\
             latency ({latency}): p50 {p50:.3} ms, p99 {p99:.3} ms, p99.9 {p999:.3} ms, max {max:.3} ms",
            bytes as f64 / 1e6
        );
    }
}
