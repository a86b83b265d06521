//! `smq consume`: one message body per line on standard output, committing the group's
//! offsets.

use std::io::Write;
use std::time::{Duration, Instant};

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
    /// Consumer group whose offsets are read and committed on the broker.
    #[arg(long, env = "SMQ_GROUP")]
    pub(crate) group: String,
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
    let from = match args.from {
        FromArg::Earliest => StartFrom::Earliest,
        FromArg::Latest => StartFrom::Latest,
    };
    let mut consumer = Consumer::connect(config, &args.topic, Some(&args.group), from).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut received = 0u64;
    let mut last_message = Instant::now();
    let mut last_commit = Instant::now();
    // The last retryable failure reported, so that a broker down for a while is said once.
    let mut failing: Option<String> = None;
    loop {
        if args.count.is_some_and(|count| received >= count) {
            break;
        }
        if idle_timeout.is_some_and(|idle| last_message.elapsed() >= idle) {
            break;
        }
        let want = args
            .count
            .map_or(usize::MAX, |count| (count - received) as usize);
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
        if last_commit.elapsed() >= Duration::from_secs(1) {
            match consumer.commit().await {
                Ok(()) => {}
                Err(error) if error.is_retryable() => {
                    eprintln!("smq consume: committing offsets failed: {error}: retrying");
                }
                Err(error) => return Err(error.into()),
            }
            last_commit = Instant::now();
        }
    }
    out.flush()?;
    consumer.commit().await?;
    eprintln!("received {received} messages from topic {}", args.topic);
    Ok(())
}
