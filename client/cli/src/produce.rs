//! `smq produce`: one message per line of standard input, and the producer flags the benches
//! share.

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use smq_client::producer::STICKY_QUEUE_BYTES_DEFAULT;
use smq_client::{Acks, ClientConfig, Error, Message, PendingDelivery, Producer};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

#[derive(ValueEnum, Clone, Copy, Debug)]
pub(crate) enum AcksArg {
    /// In the broker's log (page cache).
    Written,
    /// Fsynced on the master.
    Flushed,
    /// On the slave too.
    Replicated,
}

impl From<AcksArg> for Acks {
    fn from(acks: AcksArg) -> Acks {
        match acks {
            AcksArg::Written => Acks::Written,
            AcksArg::Flushed => Acks::Flushed,
            AcksArg::Replicated => Acks::Replicated,
        }
    }
}

/// Producer settings shared by `produce` and the benches.
#[derive(Args, Debug, Clone)]
pub(crate) struct ProducerArgs {
    /// When the broker acknowledges a batch.
    #[arg(long, env = "SMQ_ACKS", value_enum, default_value = "written")]
    pub(crate) acks: AcksArg,
    /// How long a message may wait for its batch to fill.
    #[arg(long, env = "SMQ_LINGER_MS", default_value_t = 1)]
    pub(crate) linger_ms: u64,
    /// A batch is sent once it holds this many bytes.
    #[arg(long, env = "SMQ_BATCH_BYTES", default_value_t = 256 * 1024)]
    pub(crate) batch_bytes: usize,
    /// Messages without a key stick to one queue of their topic until this many bytes went
    /// there, then move on to the next; 0: each message to the next queue in turn.
    #[arg(long, env = "SMQ_STICKY_QUEUE_BYTES", default_value_t = STICKY_QUEUE_BYTES_DEFAULT)]
    pub(crate) sticky_queue_bytes: usize,
    /// Most requests in flight on the connection.
    #[arg(long, env = "SMQ_IN_FLIGHT", default_value_t = 32)]
    pub(crate) in_flight: usize,
    /// How long one attempt to send a batch waits for the broker; then messages without a key
    /// go to another broker group (above the broker's 5 s ack timeout).
    #[arg(long, env = "SMQ_ATTEMPT_TIMEOUT_MS", default_value_t = 10_000)]
    pub(crate) attempt_timeout_ms: u64,
    /// How long a message may take, every attempt included.
    #[arg(long, env = "SMQ_SEND_TIMEOUT_MS", default_value_t = 30_000)]
    pub(crate) send_timeout_ms: u64,
}

#[derive(Args, Debug)]
pub(crate) struct ProduceArgs {
    pub(crate) topic: String,
    /// Key of every message: all go to the queue this key hashes to, in order.
    #[arg(long, env = "SMQ_KEY")]
    pub(crate) key: Option<String>,
    #[command(flatten)]
    pub(crate) producer: ProducerArgs,
}

pub(crate) fn apply(config: &mut ClientConfig, producer: &ProducerArgs) {
    config.acks = producer.acks.into();
    config.linger_ms = producer.linger_ms;
    config.batch_bytes = producer.batch_bytes;
    config.sticky_queue_bytes = producer.sticky_queue_bytes;
    config.max_in_flight_requests = producer.in_flight;
    config.attempt_timeout_ms = producer.attempt_timeout_ms;
    config.send_timeout_ms = producer.send_timeout_ms;
}

/// Counts acknowledgements in the background; keeps the first error.
async fn count_acks(mut pending: mpsc::Receiver<PendingDelivery>) -> (u64, Option<Error>) {
    let mut acknowledged = 0;
    let mut first_error = None;
    while let Some(delivery) = pending.recv().await {
        match delivery.wait().await {
            Ok(_) => acknowledged += 1,
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    (acknowledged, first_error)
}

pub(crate) async fn produce(mut config: ClientConfig, args: ProduceArgs) -> anyhow::Result<()> {
    apply(&mut config, &args.producer);
    let producer = Producer::connect(config).await?;
    // Learn the topic first, so that a missing topic fails before stdin is read.
    producer.queue_count_of(&args.topic).await?;
    let (pending_tx, pending_rx) = mpsc::channel(64 * 1024);
    let counter = tokio::spawn(count_acks(pending_rx));
    let mut stdin = BufReader::with_capacity(1 << 20, tokio::io::stdin());
    let mut line = Vec::new();
    let mut sent = 0u64;
    let mut send_error = None;
    loop {
        line.clear();
        if stdin
            .read_until(b'\n', &mut line)
            .await
            .context("reading standard input")?
            == 0
        {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let mut message = Message::from_body(line.as_slice());
        if let Some(key) = &args.key {
            message.key = key.as_bytes().to_vec();
        }
        match producer.start_send(&args.topic, message).await {
            Ok(pending) => {
                sent += 1;
                if pending_tx.send(pending).await.is_err() {
                    break;
                }
            }
            Err(error) => {
                send_error = Some(anyhow::Error::new(error).context(format!("line {}", sent + 1)));
                break;
            }
        }
    }
    drop(pending_tx);
    producer.flush().await?;
    let (acknowledged, ack_error) = counter.await.context("acknowledgement counter")?;
    eprintln!(
        "sent {sent} messages to topic {}: {acknowledged} acknowledged",
        args.topic
    );
    let resent = producer.metrics();
    if resent.messages_resent > 0 {
        eprintln!(
            "{} messages sent again to another broker group after theirs failed; {} of them may \
             be stored twice",
            resent.messages_resent, resent.messages_maybe_duplicated
        );
    }
    if let Some(error) = send_error {
        return Err(error);
    }
    if let Some(error) = ack_error {
        bail!(
            "{} of {sent} messages not acknowledged: {error}",
            sent - acknowledged
        );
    }
    Ok(())
}
