//! `smq consume`: one message body per line on standard output, committing the consumer group's
//! offsets; a member of the consumer group when a NameServer coordinates it, leaving cleanly on
//! SIGINT and SIGTERM.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use smq_client::{ClientConfig, Consumer, StartFrom};

#[derive(ValueEnum, Clone, Copy, Debug)]
pub(crate) enum FromArg {
    Earliest,
    Latest,
}

#[derive(Args, Debug)]
pub(crate) struct ConsumeArgs {
    pub(crate) topic: String,
    /// Consumer group whose offsets are read and committed on the brokers. With --nameserver or
    /// --srv its members share the topic's queues: each queue is read by one member at a time.
    #[arg(long, env = "SMQ_GROUP")]
    pub(crate) group: String,
    /// How often what was printed is committed.
    #[arg(long, env = "SMQ_COMMIT_INTERVAL_MS", default_value_t = 1_000)]
    pub(crate) commit_interval_ms: u64,
    /// This member's queues go to the others this long after it stops heartbeating (killed);
    /// on Ctrl-C or SIGTERM it commits and leaves, and they move at once.
    #[arg(long, env = "SMQ_SESSION_TIMEOUT_MS", default_value_t = smq_client::nameserver_api::SESSION_TIMEOUT_MS_DEFAULT)]
    pub(crate) session_timeout_ms: u64,
    /// Where to start in queues the group has no offset for.
    #[arg(long, env = "SMQ_FROM", value_enum, default_value = "earliest")]
    pub(crate) from: FromArg,
    /// Stop after this many messages.
    #[arg(long, env = "SMQ_COUNT")]
    pub(crate) count: Option<u64>,
    /// Stop after this many seconds without a message.
    #[arg(long, env = "SMQ_IDLE_TIMEOUT")]
    pub(crate) idle_timeout: Option<f64>,
    /// text: each body on a line; json: one object a line with the message's broker group,
    /// queue, offset, timestamp, key, tag, headers and body (base64 when not UTF-8, flagged).
    #[arg(long, env = "SMQ_FORMAT", value_enum, default_value = "text")]
    pub(crate) format: crate::message_format::OutputFormat,
}

pub(crate) async fn consume(mut config: ClientConfig, args: ConsumeArgs) -> anyhow::Result<()> {
    let idle_timeout = args.idle_timeout.map(Duration::from_secs_f64);
    if let Some(idle) = idle_timeout {
        // Check for idleness at least this often.
        config.fetch_max_wait_ms = config.fetch_max_wait_ms.min(idle.as_millis().max(1) as u32);
    }
    config.commit_interval_ms = args.commit_interval_ms;
    config.session_timeout_ms = args.session_timeout_ms;
    let from = match args.from {
        FromArg::Earliest => StartFrom::Earliest,
        FromArg::Latest => StartFrom::Latest,
    };
    let mut consumer = Consumer::connect(config, &args.topic, Some(&args.group), from).await?;
    // From here on Ctrl-C and SIGTERM leave cleanly (before, while waiting for routes, they end
    // the process as usual: there is nothing to commit yet).
    let stop = stop_on_signals()?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut received = 0u64;
    let mut last_message = Instant::now();
    // The last retryable failure reported, so that a broker down for a while is said once.
    let mut failing: Option<String> = None;
    loop {
        if args.count.is_some_and(|count| received >= count) {
            break;
        }
        if idle_timeout.is_some_and(|idle| last_message.elapsed() >= idle) {
            break;
        }
        if stop.load(Ordering::Relaxed) {
            eprintln!(
                "smq consume: stopping: committing and leaving consumer group {}",
                args.group
            );
            break;
        }
        let want = args
            .count
            .map_or(usize::MAX, |count| (count - received) as usize);
        // Polls commit what was printed before them, every --commit-interval-ms.
        let polled = consumer.poll(want).await;
        for reset in consumer.take_offset_resets() {
            eprintln!("smq consume: {reset}");
        }
        let messages = match polled {
            Ok(messages) => {
                failing = None;
                messages
            }
            // The consumer tries the queue again by itself: say so once per kind of failure.
            Err(error) if error.is_retryable() => {
                let text = error.to_string();
                if failing.as_ref() != Some(&text) {
                    eprintln!("smq consume: {text}: retrying");
                    failing = Some(text);
                }
                Vec::new()
            }
            Err(error) => return Err(error.into()),
        };
        if !messages.is_empty() {
            last_message = Instant::now();
        }
        for message in &messages {
            args.format.write(&mut out, message)?;
        }
        if !messages.is_empty() {
            // One write per poll: a reader downstream sees each message as soon as it arrives.
            out.flush()?;
        }
        received += messages.len() as u64;
    }
    out.flush()?;
    // Stops fetching, commits what was printed, leaves: the queues move to the others at once.
    consumer.close().await?;
    eprintln!("received {received} messages from topic {}", args.topic);
    Ok(())
}

/// A flag set on Ctrl-C (SIGINT) or SIGTERM, so that `consume` stops between two polls and
/// leaves cleanly.
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    use tokio::signal::unix::{signal, SignalKind};
    let stop = Arc::new(AtomicBool::new(false));
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let flag = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        flag.store(true, Ordering::Relaxed);
    });
    Ok(stop)
}
