//! `smq-nameserver`: flags, environment and TOML file to a [`Config`], tracing, then serve until
//! SIGTERM or Ctrl-C. The only place errors become `anyhow`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use serde::Deserialize;
use smq_client::credential;
use smq_nameserver::{Config, FENCING_INTERVAL_MS_DEFAULT, LISTEN_DEFAULT};
use smq_protocol::nameserver_api::HEARTBEAT_TIMEOUT_MS_DEFAULT;
use smq_tls::ServerTls;

/// smq's NameServer: aggregates broker heartbeats and answers route questions over HTTP/JSON.
///
/// Each flag can also come from the environment (SMQ_<FLAG>) or from the TOML file given with
/// --config (keys named like the flags, with underscores: heartbeat_timeout_ms = 10000). Flags
/// and environment win over the file.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where to serve HTTP [default: 127.0.0.1:9876]
    #[arg(long, env = "SMQ_LISTEN")]
    listen: Option<SocketAddr>,
    /// The SRV record that should name this NameServer (e.g. _smq-ns._tcp.example.com.); while it
    /// names another, route requests get 503 so that clients re-resolve
    #[arg(long, env = "SMQ_SRV")]
    srv: Option<String>,
    /// The DNS server to ask about --srv, IP:PORT [default: the servers in /etc/resolv.conf]
    #[arg(long, env = "SMQ_DNS_SERVER")]
    dns_server: Option<SocketAddr>,
    /// host:port by which the SRV record names this NameServer [default: the listen address]
    #[arg(long, env = "SMQ_ADVERTISE")]
    advertise: Option<String>,
    /// A broker leaves the routes this long after its last heartbeat [default: 10000]
    #[arg(long, env = "SMQ_HEARTBEAT_TIMEOUT_MS")]
    heartbeat_timeout_ms: Option<u64>,
    /// How often --srv is looked up [default: 2000]
    #[arg(long, env = "SMQ_FENCING_INTERVAL_MS")]
    fencing_interval_ms: Option<u64>,
    /// File holding the cluster secret that broker heartbeats must carry (Authorization:
    /// Bearer); the secret itself may come from SMQ_CLUSTER_SECRET instead. Without one, any
    /// heartbeat is taken
    #[arg(long, env = "SMQ_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// File holding the read token that routes, cluster, topics, groups, member heartbeats and
    /// metrics then require (or the cluster secret); the token itself may come from
    /// SMQ_READ_TOKEN instead. Without one, those are open
    #[arg(long, env = "SMQ_READ_TOKEN_FILE")]
    read_token_file: Option<PathBuf>,
    /// PEM certificate chain (leaf first) to serve HTTPS with, with --tls-key [default: plain
    /// HTTP]
    #[arg(long, env = "SMQ_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, env = "SMQ_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificates: with it, only clients presenting a certificate signed by one of
    /// them connect
    #[arg(long, env = "SMQ_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// A TOML file with any of the settings above
    #[arg(long, env = "SMQ_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter: error, warn, info, debug, trace, or directives like smq_nameserver=debug
    /// [default: info]
    #[arg(long, env = "SMQ_LOG_LEVEL")]
    log_level: Option<String>,
}

/// The `--config` file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    srv: Option<String>,
    dns_server: Option<SocketAddr>,
    advertise: Option<String>,
    heartbeat_timeout_ms: Option<u64>,
    fencing_interval_ms: Option<u64>,
    cluster_secret_file: Option<PathBuf>,
    read_token_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    log_level: Option<String>,
}

fn read_file(path: &PathBuf) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text)
        .with_context(|| format!("{} is not a valid NameServer config", path.display()))
}

/// HTTPS as --tls-cert, --tls-key and --tls-client-ca ask for, if at all.
fn server_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
) -> anyhow::Result<Option<ServerTls>> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(ServerTls::from_files(
            &cert,
            &key,
            client_ca.as_deref(),
        )?)),
        (None, None) if client_ca.is_some() => {
            anyhow::bail!("--tls-client-ca needs --tls-cert and --tls-key")
        }
        (None, None) => Ok(None),
        _ => anyhow::bail!("--tls-cert and --tls-key go together: give both, or neither for HTTP"),
    }
}

/// A secret from the variable `variable` or the file `file` (not both).
fn secret_from(
    variable: &str,
    file: Option<PathBuf>,
    file_flag: &str,
) -> anyhow::Result<Option<String>> {
    Ok(credential::secret_from(
        std::env::var(variable).ok(),
        variable,
        file.as_deref(),
        file_flag,
    )?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => FileConfig::default(),
    };
    let log_level = args
        .log_level
        .or(file.log_level)
        .unwrap_or_else(|| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&log_level)
                .with_context(|| format!("invalid --log-level {log_level:?}"))?,
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = Config {
        listen: args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| LISTEN_DEFAULT.parse().expect("a valid default address")),
        advertise: args.advertise.or(file.advertise),
        srv: args.srv.or(file.srv),
        dns_server: args.dns_server.or(file.dns_server),
        heartbeat_timeout_ms: args
            .heartbeat_timeout_ms
            .or(file.heartbeat_timeout_ms)
            .unwrap_or(HEARTBEAT_TIMEOUT_MS_DEFAULT),
        fencing_interval_ms: args
            .fencing_interval_ms
            .or(file.fencing_interval_ms)
            .unwrap_or(FENCING_INTERVAL_MS_DEFAULT),
        cluster_secret: secret_from(
            "SMQ_CLUSTER_SECRET",
            args.cluster_secret_file.or(file.cluster_secret_file),
            "--cluster-secret-file",
        )?,
        read_token: secret_from(
            "SMQ_READ_TOKEN",
            args.read_token_file.or(file.read_token_file),
            "--read-token-file",
        )?,
        tls: server_tls(
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
            args.tls_client_ca.or(file.tls_client_ca),
        )?,
    };
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let running = smq_nameserver::start(config).await?;
    println!("smq-nameserver listening on {scheme}://{}", running.addr());

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    tokio::select! {
        _ = terminate.recv() => {}
        result = tokio::signal::ctrl_c() => result.context("cannot wait for Ctrl-C")?,
    }
    tracing::info!("stopping");
    running.shutdown().await?;
    Ok(())
}
