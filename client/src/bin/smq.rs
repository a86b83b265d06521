//! `smq`, the command line client: topics, produce from stdin, consume to stdout, and a load
//! generator (in `smq/bench.rs`). It parses flags, calls the library and prints; every flag can
//! also come from an `SMQ_<FLAG>` environment variable.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use smq_client::discovery::{Discovery, DiscoveryMode, DiscoveryOptions};
use smq_client::nameserver_api::Role;
use smq_client::nameserver_client::{NameServerClient, NameServerError};
use smq_client::protocol::response::TopicMetadata;
use smq_client::protocol::ErrorCode;
use smq_client::{
    Acks, Admin, ClientConfig, Consumer, Error, Message, PendingDelivery, Producer, StartFrom,
};
use tokio::io::{AsyncBufReadExt, BufReader};

#[path = "smq/bench.rs"]
mod bench;
use bench::{bench, BenchCommand};
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
#[command(
    name = "smq",
    version,
    about = "smq's command line client: topics, produce, consume, bench, cluster"
)]
struct Cli {
    /// Broker to talk to directly, host:port.
    #[arg(
        long,
        env = "SMQ_BROKER",
        default_value = "127.0.0.1:10911",
        global = true
    )]
    broker: String,
    /// How long a request may wait for the broker's answer.
    #[arg(
        long,
        env = "SMQ_REQUEST_TIMEOUT_MS",
        default_value_t = 30_000,
        global = true
    )]
    request_timeout_ms: u64,
    /// NameServers to ask, URL[,URL] (host:port or http://host:port): every command then finds
    /// the brokers through the NameServer's routes instead of talking to --broker.
    #[arg(long, env = "SMQ_NAMESERVER", global = true)]
    nameserver: Option<String>,
    /// SRV record naming the NameServers, e.g. _smq-ns._tcp.example.com (ignored with
    /// --nameserver).
    #[arg(long, env = "SMQ_SRV", global = true)]
    srv: Option<String>,
    /// DNS server to ask about --srv, IP:PORT [default: the servers in /etc/resolv.conf].
    #[arg(long, env = "SMQ_DNS_SERVER", global = true)]
    dns_server: Option<SocketAddr>,
    /// How long to wait for a NameServer that can answer (one down, fenced or warming up during
    /// a failover is asked again, re-resolving --srv between tries); 0 asks once.
    #[arg(
        long,
        env = "SMQ_ROUTE_WAIT_MS",
        default_value_t = smq_client::nameserver_client::ROUTE_WAIT_MS_DEFAULT,
        global = true
    )]
    route_wait_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Send one message per line of standard input; exits 0 only when all are acknowledged.
    Produce(ProduceArgs),
    /// Print one message body per line on standard output, committing the group's offsets.
    Consume(ConsumeArgs),
    /// Load generator: produce, consume, or both with end-to-end latency.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Every live broker as the NameServer sees it: cluster, group, role, address, last
    /// heartbeat, replication lag (needs --nameserver or --srv).
    Cluster,
}

#[derive(Subcommand, Debug)]
enum TopicCommand {
    /// Create a topic with N queues on the broker (with --nameserver/--srv: on every master,
    /// or on the masters of --groups).
    Create {
        name: String,
        /// Number of queues (in each broker group).
        #[arg(long, env = "SMQ_QUEUES", default_value_t = 8)]
        queues: u32,
        /// Broker groups to create it in, G1,G2 (needs --nameserver or --srv) [default: all].
        #[arg(long, env = "SMQ_GROUPS", value_delimiter = ',')]
        groups: Vec<String>,
    },
    /// List every topic with its queue count and stored messages (with --nameserver/--srv:
    /// every topic in the cluster with its queues and broker groups).
    List,
    /// Show each queue of a topic with its earliest and latest offsets (with
    /// --nameserver/--srv: the topic's route, each broker group with its master and slaves).
    Describe { name: String },
    /// Delete a topic, its queues and its consumer offsets (with --nameserver/--srv: on every
    /// master that has it).
    Delete { name: String },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum AcksArg {
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
struct ProducerArgs {
    /// When the broker acknowledges a batch.
    #[arg(long, env = "SMQ_ACKS", value_enum, default_value = "written")]
    acks: AcksArg,
    /// How long a message may wait for its batch to fill.
    #[arg(long, env = "SMQ_LINGER_MS", default_value_t = 1)]
    linger_ms: u64,
    /// A batch is sent once it holds this many bytes.
    #[arg(long, env = "SMQ_BATCH_BYTES", default_value_t = 256 * 1024)]
    batch_bytes: usize,
    /// Most requests in flight on the connection.
    #[arg(long, env = "SMQ_IN_FLIGHT", default_value_t = 32)]
    in_flight: usize,
}

#[derive(Args, Debug)]
struct ProduceArgs {
    topic: String,
    /// Key of every message: all go to the queue this key hashes to, in order.
    #[arg(long, env = "SMQ_KEY")]
    key: Option<String>,
    #[command(flatten)]
    producer: ProducerArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum FromArg {
    Earliest,
    Latest,
}

#[derive(Args, Debug)]
struct ConsumeArgs {
    topic: String,
    /// Consumer group whose offsets are read and committed on the broker.
    #[arg(long, env = "SMQ_GROUP")]
    group: String,
    /// Where to start in queues the group has no offset for.
    #[arg(long, env = "SMQ_FROM", value_enum, default_value = "earliest")]
    from: FromArg,
    /// Stop after this many messages.
    #[arg(long, env = "SMQ_COUNT")]
    count: Option<u64>,
    /// Stop after this many seconds without a message.
    #[arg(long, env = "SMQ_IDLE_TIMEOUT")]
    idle_timeout: Option<f64>,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(error) = run(cli).await {
        eprintln!("smq: error: {error:#}");
        std::process::exit(1);
    }
}

/// The NameServer client the discovery flags ask for, if any.
fn nameserver_client(cli: &Cli) -> anyhow::Result<Option<NameServerClient>> {
    let Some(mode) = DiscoveryMode::from_flags(
        cli.nameserver.as_deref(),
        cli.srv.as_deref(),
        cli.dns_server,
    )?
    else {
        return Ok(None);
    };
    let discovery = Discovery::new(mode, DiscoveryOptions::default())?;
    let timeout = Duration::from_millis(cli.request_timeout_ms.min(10_000));
    Ok(Some(
        NameServerClient::new(Arc::new(discovery))
            .with_timeout(timeout)
            .with_wait_notice(Arc::new(say_waiting)),
    ))
}

/// Says once on stderr that smq is waiting for a NameServer, and why (after the first second).
fn say_waiting(what: &str, error: &NameServerError, wait: Duration) {
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        eprintln!(
            "smq: waiting for a NameServer to answer ({what}; up to {:.1} s, --route-wait-ms): {error}",
            wait.as_secs_f64()
        );
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let nameserver = nameserver_client(&cli)?;
    // With a discovery flag, producers and consumers follow the NameServer's routes.
    let mut config = match &nameserver {
        Some(client) => ClientConfig::with_nameserver(client.clone()),
        None => ClientConfig::new(cli.broker.clone()),
    };
    config.request_timeout_ms = cli.request_timeout_ms;
    config.route_wait_ms = cli.route_wait_ms;
    config.client_id = "smq-cli".into();
    let wait = Duration::from_millis(cli.route_wait_ms);
    match cli.command {
        Command::Cluster => match nameserver {
            Some(client) => cluster(&client, wait).await,
            None => bail!(
                "`smq cluster` asks the NameServer: set --nameserver URL or --srv NAME \
                 (or SMQ_NAMESERVER / SMQ_SRV)"
            ),
        },
        Command::Topic(TopicCommand::List) if nameserver.is_some() => {
            topic_list_from_nameserver(nameserver.as_ref().expect("checked"), wait).await
        }
        Command::Topic(TopicCommand::Describe { name }) if nameserver.is_some() => {
            topic_route_from_nameserver(nameserver.as_ref().expect("checked"), &name, wait).await
        }
        Command::Topic(command) if nameserver.is_some() => {
            topic_on_masters(&config, nameserver.as_ref().expect("checked"), command).await
        }
        Command::Topic(TopicCommand::Create { groups, .. }) if !groups.is_empty() => bail!(
            "--groups picks broker groups through the NameServer: set --nameserver URL or --srv NAME"
        ),
        Command::Topic(command) => topic(config, command).await,
        Command::Produce(args) => produce(config, args).await,
        Command::Consume(args) => consume(config, args).await,
        Command::Bench(command) => bench(config, command).await,
    }
}

fn apply(config: &mut ClientConfig, producer: &ProducerArgs) {
    config.acks = producer.acks.into();
    config.linger_ms = producer.linger_ms;
    config.batch_bytes = producer.batch_bytes;
    config.max_in_flight_requests = producer.in_flight;
}

async fn topic(config: ClientConfig, command: TopicCommand) -> anyhow::Result<()> {
    let admin = Admin::connect(config).await?;
    match command {
        TopicCommand::Create { name, queues, .. } => {
            admin.create_topic(&name, queues).await?;
            eprintln!("created topic {name} with {queues} queues");
        }
        TopicCommand::List => {
            let topics = admin.list_topics().await?;
            println!("{:<40} {:>7} {:>14}", "TOPIC", "QUEUES", "MESSAGES");
            for topic in topics {
                println!(
                    "{:<40} {:>7} {:>14}",
                    topic.name,
                    topic.queues.len(),
                    stored_in(&topic)
                );
            }
        }
        TopicCommand::Describe { name } => {
            let info = admin.broker_info().await?;
            let topic = admin.describe_topic(&name).await?;
            println!(
                "topic {} on broker {} (cluster {}, group {}, {:?})",
                topic.name,
                admin_broker(&info),
                info.cluster,
                info.group,
                info.role
            );
            println!(
                "{:>6} {:>14} {:>14} {:>14}",
                "QUEUE", "EARLIEST", "LATEST", "MESSAGES"
            );
            for queue in &topic.queues {
                println!(
                    "{:>6} {:>14} {:>14} {:>14}",
                    queue.queue_id,
                    queue.log_start_offset,
                    queue.high_watermark,
                    queue.high_watermark - queue.log_start_offset
                );
            }
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(&name).await?;
            eprintln!("deleted topic {name}");
        }
    }
    Ok(())
}

/// `smq cluster`: one line per live broker.
async fn cluster(client: &NameServerClient, wait: Duration) -> anyhow::Result<()> {
    let view = client
        .retrying("the cluster view", wait, || client.cluster())
        .await?;
    println!(
        "{:<16} {:<16} {:<7} {:<22} {:>15} {:>26}",
        "CLUSTER", "GROUP", "ROLE", "ADDRESS", "LAST HEARTBEAT", "REPLICATION LAG"
    );
    for broker in &view.brokers {
        let role = match broker.role {
            Role::Master => "master",
            Role::Slave => "slave",
        };
        let lag = match (broker.replication_lag_bytes, broker.in_sync) {
            (Some(bytes), Some(in_sync)) => {
                let seconds = broker
                    .replication_lag_ms
                    .map_or("-".to_owned(), |ms| format!("{:.1}s", ms as f64 / 1000.0));
                let state = if in_sync { "in sync" } else { "behind" };
                format!("{bytes} B {seconds} {state}")
            }
            (Some(bytes), None) => format!("{bytes} B"),
            _ => "-".to_owned(),
        };
        println!(
            "{:<16} {:<16} {:<7} {:<22} {:>15} {:>26}",
            broker.cluster,
            broker.group,
            role,
            broker.addr,
            format!("{:.1}s ago", broker.last_heartbeat_ms_ago as f64 / 1000.0),
            lag
        );
    }
    if view.brokers.is_empty() {
        eprintln!("no live broker: start one with --nameserver or --srv pointing here");
    }
    if view.warming_up_ms > 0 {
        eprintln!(
            "the NameServer is warming up for another {} ms: brokers that have not \
             (re-)registered with it yet are missing",
            view.warming_up_ms
        );
    }
    Ok(())
}

/// `smq topic create` and `delete` with a NameServer: on each master the cluster view lists (for
/// create, those of `--groups` if given), through the broker protocol. Create then waits until the
/// routes show the topic in every group it was created in (one heartbeat: brokers heartbeat at
/// once after a topic change).
async fn topic_on_masters(
    config: &ClientConfig,
    client: &NameServerClient,
    command: TopicCommand,
) -> anyhow::Result<()> {
    let (name, groups) = match &command {
        TopicCommand::Create { name, groups, .. } => (name.clone(), groups.clone()),
        TopicCommand::Delete { name } => (name.clone(), Vec::new()),
        TopicCommand::List | TopicCommand::Describe { .. } => unreachable!("read the NameServer"),
    };
    let masters = masters(client, &groups, Duration::from_millis(config.route_wait_ms)).await?;
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for master in &masters {
        let result = match (&command, Admin::connect(direct(config, &master.addr)).await) {
            (TopicCommand::Create { queues, .. }, Ok(admin)) => {
                admin.create_topic(&name, *queues).await
            }
            (_, Ok(admin)) => admin.delete_topic(&name).await,
            (_, Err(error)) => Err(error),
        };
        match result {
            Ok(()) => done.push(master.group.clone()),
            // Delete everywhere means: wherever it is.
            Err(error)
                if matches!(command, TopicCommand::Delete { .. })
                    && error.code() == Some(ErrorCode::UnknownTopic) => {}
            Err(error) => failed.push(format!("group {} ({}): {error}", master.group, master.addr)),
        }
    }
    match &command {
        TopicCommand::Create { queues, .. } if !done.is_empty() => {
            eprintln!(
                "created topic {name} with {queues} queues in group(s) {}",
                done.join(",")
            );
            wait_until_routed(client, &name, &done).await;
        }
        TopicCommand::Delete { .. } if !done.is_empty() => {
            eprintln!("deleted topic {name} in group(s) {}", done.join(","));
        }
        TopicCommand::Delete { .. } if failed.is_empty() => {
            bail!("no broker group has topic `{name}`")
        }
        _ => {}
    }
    if !failed.is_empty() {
        bail!("failed in {} group(s): {}", failed.len(), failed.join("; "));
    }
    Ok(())
}

/// `config` pointed at the one broker at `addr`, without the NameServer.
fn direct(config: &ClientConfig, addr: &str) -> ClientConfig {
    let mut direct = config.clone();
    direct.nameserver = None;
    direct.broker = addr.to_owned();
    direct
}

/// The live masters of the cluster, or of `groups` (each of which must have one). While the
/// NameServer is warming up, brokers that have not re-registered are missing from its view, so
/// this waits (up to `wait`) until it is warm, unless every group of `groups` is there already:
/// a topic is never created or deleted on only the groups that re-registered so far.
async fn masters(
    client: &NameServerClient,
    groups: &[String],
    wait: Duration,
) -> anyhow::Result<Vec<smq_client::nameserver_api::BrokerInfo>> {
    let complete_view = || async {
        let view = client.cluster().await?;
        let has_master = |group: &String| {
            view.brokers
                .iter()
                .any(|b| b.role == Role::Master && &b.group == group)
        };
        let named_all_there = !groups.is_empty() && groups.iter().all(has_master);
        if view.warming_up_ms > 0 && !named_all_there {
            return Err(NameServerError::WarmingUp {
                remaining_ms: view.warming_up_ms,
                reason: "brokers that have not re-registered with it yet are missing from its \
                         cluster view, and acting on the groups it knows now could miss some"
                    .to_owned(),
            });
        }
        Ok(view)
    };
    let masters: Vec<_> = client
        .retrying("every broker group", wait, complete_view)
        .await?
        .brokers
        .into_iter()
        .filter(|broker| broker.role == Role::Master)
        .filter(|broker| groups.is_empty() || groups.contains(&broker.group))
        .collect();
    if let Some(missing) = groups
        .iter()
        .find(|group| !masters.iter().any(|m| &m.group == *group))
    {
        bail!("broker group `{missing}` has no live master the NameServer knows of (see `smq cluster`)");
    }
    if masters.is_empty() {
        bail!(
            "the NameServer knows no live master: start brokers with --nameserver or --srv \
             pointing at it (see `smq cluster`)"
        );
    }
    Ok(masters)
}

/// Waits up to 10 s until the topic's route lists every group in `groups`; warns otherwise.
async fn wait_until_routed(client: &NameServerClient, topic: &str, groups: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(route) = client.route(topic).await {
            if groups
                .iter()
                .all(|group| route.groups.iter().any(|g| &g.group == group))
            {
                eprintln!(
                    "routes show topic {topic} in {} group(s)",
                    route.groups.len()
                );
                return;
            }
        }
        if Instant::now() >= deadline {
            eprintln!(
                "warning: the NameServer does not route topic {topic} to every group yet; \
                 check `smq topic describe {topic}`"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `smq topic list` with a NameServer: every topic in the cluster.
async fn topic_list_from_nameserver(
    client: &NameServerClient,
    wait: Duration,
) -> anyhow::Result<()> {
    let list = client
        .retrying("the topic list", wait, || client.topics())
        .await?;
    println!("{:<40} {:>7}  GROUPS", "TOPIC", "QUEUES");
    for topic in &list.topics {
        println!(
            "{:<40} {:>7}  {}",
            topic.name,
            topic.queues,
            topic.groups.join(",")
        );
    }
    Ok(())
}

/// `smq topic describe NAME` with a NameServer: the topic's route.
async fn topic_route_from_nameserver(
    client: &NameServerClient,
    name: &str,
    wait: Duration,
) -> anyhow::Result<()> {
    let route = client.route_waiting(name, wait).await?;
    println!(
        "topic {} in {} broker group(s)",
        route.topic,
        route.groups.len()
    );
    println!(
        "{:<16} {:<16} {:<22} {:>7} {:<5} SLAVES",
        "CLUSTER", "GROUP", "MASTER", "QUEUES", "PERM"
    );
    for group in &route.groups {
        let perm = format!(
            "{}{}",
            if group.readable { "r" } else { "-" },
            if group.writable { "w" } else { "-" }
        );
        let slaves = if group.slaves.is_empty() {
            "-".to_owned()
        } else {
            group.slaves.join(",")
        };
        println!(
            "{:<16} {:<16} {:<22} {:>7} {:<5} {}",
            group.cluster,
            group.group,
            group.master.as_deref().unwrap_or("(none)"),
            group.queues,
            perm,
            slaves
        );
    }
    Ok(())
}

fn admin_broker(info: &smq_client::admin::BrokerInfo) -> String {
    format!("{}/{}", info.cluster, info.group)
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

async fn produce(mut config: ClientConfig, args: ProduceArgs) -> anyhow::Result<()> {
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

async fn consume(mut config: ClientConfig, args: ConsumeArgs) -> anyhow::Result<()> {
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
            out.write_all(&message.body)?;
            out.write_all(b"\n")?;
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

/// Messages one broker stores of a topic, over its queues.
fn stored_in(topic: &TopicMetadata) -> u64 {
    topic
        .queues
        .iter()
        .map(|queue| queue.high_watermark - queue.log_start_offset)
        .sum()
}
