//! `smq`, the command line client: topics, produce from stdin, consume to stdout, consumer
//! groups, a load generator, and the cluster view; one module per command. It parses flags, calls the library
//! and prints; every flag can also come from an `SMQ_<FLAG>` environment variable.

mod bench;
mod cluster;
mod consume;
mod dev;
mod group;
mod message_format;
mod produce;
mod topic;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use smq_client::credential::{self, Credential};
use smq_client::discovery::{Discovery, DiscoveryMode, DiscoveryOptions};
use smq_client::nameserver_client::{NameServerClient, NameServerError};
use smq_client::ClientConfig;
use smq_client::ClientTls;
use tracing_subscriber::EnvFilter;

use bench::{bench, BenchCommand};
use consume::{consume, ConsumeArgs};
use group::GroupCommand;
use produce::{produce, ProduceArgs};
use topic::TopicCommand;

#[derive(Parser, Debug)]
#[command(
    name = "smq",
    version,
    about = "smq's command line client: topics, produce, consume, consumer groups, bench, cluster"
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
    /// The principal to authenticate as to brokers that list principals, NAME:SECRET.
    #[arg(
        long,
        env = "SMQ_CREDENTIAL",
        hide_env_values = true,
        global = true,
        conflicts_with = "credential_file"
    )]
    credential: Option<String>,
    /// File holding NAME:SECRET, as --credential.
    #[arg(long, env = "SMQ_CREDENTIAL_FILE", global = true)]
    credential_file: Option<PathBuf>,
    /// File holding the NameServer's read token (sent as Authorization: Bearer); the token
    /// itself may come from SMQ_READ_TOKEN instead.
    #[arg(long, env = "SMQ_READ_TOKEN_FILE", global = true)]
    read_token_file: Option<PathBuf>,
    /// PEM CA certificates to trust: talk TLS to the brokers and the NameServers, whose
    /// certificates must be signed by one of them [default: plaintext].
    #[arg(long, env = "SMQ_TLS_CA", global = true, value_name = "PATH")]
    tls_ca: Option<PathBuf>,
    /// PEM certificate to present to servers that require client certificates, with --tls-key;
    /// used only with --tls-ca.
    #[arg(long, env = "SMQ_TLS_CERT", global = true, value_name = "PATH")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SMQ_TLS_KEY", global = true, value_name = "PATH")]
    tls_key: Option<PathBuf>,
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
    /// Print one message body per line on standard output, committing the consumer group's
    /// offsets; members of one consumer group share the topic's queues.
    Consume(ConsumeArgs),
    /// Consumer groups: members, queue owners, lag (needs --nameserver or --srv).
    #[command(subcommand)]
    Group(GroupCommand),
    /// Load generator: produce, consume, or both with end-to-end latency.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Every live broker as the NameServer sees it: cluster, group, role, address, last
    /// heartbeat, replication lag (needs --nameserver or --srv).
    Cluster(cluster::ClusterArgs),
    /// A whole cluster on loopback: DNS answering _smq-ns._tcp.smq.test, two NameServers, two
    /// broker groups; `smq dev failover` and `smq dev kill-master GROUP` from another shell.
    Dev(dev::DevArgs),
}

fn main() {
    let cli = Cli::parse();
    show_library_warnings();
    let threads = match &cli.command {
        Command::Bench(command) => command.runtime_threads(),
        _ => 0,
    };
    let result = runtime(threads)
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(cli)));
    if let Err(error) = result {
        eprintln!("smq: error: {}", smq_settings::error_chain(error.as_ref()));
        std::process::exit(1);
    }
}

/// The async runtime: `threads` 1 is the current thread alone, 0 one worker per core.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if threads > 1 {
        builder.worker_threads(threads);
    }
    builder.enable_all().build()
}

/// The filter of the library's tracing events on stderr when RUST_LOG is not set: its warnings
/// (a commit refused because another member owns the queue, routes that cannot be refreshed).
/// An offset reset is left out: `smq consume` says it itself, once, on its own line.
const LOG_FILTER_DEFAULT: &str = "warn,smq_client::offset_reset=off";

/// Installs a tracing subscriber writing to stderr, filtered by RUST_LOG (default
/// [`LOG_FILTER_DEFAULT`]), so that what the library logs reaches the user.
fn show_library_warnings() {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) => EnvFilter::try_new(&spec).unwrap_or_else(|error| {
            eprintln!("smq: ignoring RUST_LOG={spec:?} ({error}): using {LOG_FILTER_DEFAULT:?}");
            EnvFilter::new(LOG_FILTER_DEFAULT)
        }),
        Err(_) => EnvFilter::new(LOG_FILTER_DEFAULT),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .init();
}

/// TLS as --tls-ca (with --tls-cert and --tls-key) ask for, if at all.
fn client_tls(cli: &Cli) -> anyhow::Result<Option<ClientTls>> {
    Ok(ClientTls::from_flags(
        cli.tls_ca.as_deref(),
        cli.tls_cert.as_deref(),
        cli.tls_key.as_deref(),
    )?)
}

/// The NameServer client the discovery flags ask for, if any.
fn nameserver_client(
    cli: &Cli,
    tls: Option<&ClientTls>,
) -> anyhow::Result<Option<NameServerClient>> {
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
    let mut client = NameServerClient::new(Arc::new(discovery))
        .with_timeout(timeout)
        .with_wait_notice(Arc::new(say_waiting));
    let read_token = credential::secret_from(
        std::env::var(READ_TOKEN_ENV).ok(),
        READ_TOKEN_ENV,
        cli.read_token_file.as_deref(),
        "--read-token-file",
    )?;
    if let Some(token) = read_token {
        client = client.with_token(token);
    }
    if let Some(tls) = tls {
        client = client.with_tls(tls.clone());
    }
    Ok(Some(client))
}

/// The variable holding the NameServer's read token itself.
const READ_TOKEN_ENV: &str = "SMQ_READ_TOKEN";

/// The credential of --credential / SMQ_CREDENTIAL or --credential-file / SMQ_CREDENTIAL_FILE.
fn client_credential(cli: &Cli) -> anyhow::Result<Option<Credential>> {
    Ok(match (&cli.credential, &cli.credential_file) {
        (Some(text), _) => Some(credential::parse(text, "--credential")?),
        (None, Some(path)) => Some(credential::from_file(path)?),
        (None, None) => None,
    })
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
    if let Command::Dev(args) = cli.command {
        return dev::run(args).await;
    }
    let tls = client_tls(&cli)?;
    let nameserver = nameserver_client(&cli, tls.as_ref())?;
    // With a discovery flag, producers and consumers follow the NameServer's routes.
    let mut config = match &nameserver {
        Some(client) => ClientConfig::with_nameserver(client.clone()),
        None => ClientConfig::new(cli.broker.clone()),
    };
    config.request_timeout_ms = cli.request_timeout_ms;
    config.route_wait_ms = cli.route_wait_ms;
    config.client_id = "smq-cli".into();
    config.credential = client_credential(&cli)?;
    config.tls = tls;
    let wait = Duration::from_millis(cli.route_wait_ms);
    match cli.command {
        Command::Cluster(args) => cluster::run(nameserver.as_ref(), wait, args).await,
        Command::Topic(command) => topic::run(config, nameserver.as_ref(), wait, command).await,
        Command::Produce(args) => produce(config, args).await,
        Command::Consume(args) => consume(config, args).await,
        Command::Group(command) => group::run(config, nameserver.as_ref(), wait, command).await,
        Command::Bench(command) => bench(config, command).await,
        Command::Dev(_) => unreachable!("handled above"),
    }
}
