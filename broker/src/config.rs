//! The broker's settings: flags, `SMQ_*` environment variables and a TOML file merged with that
//! precedence over the defaults; every size and duration carries its unit, a default and a bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use smq_protocol::limits::{
    FRAME_HEADROOM_BYTES, MAX_BATCH_BYTES_DEFAULT, MAX_MESSAGE_BYTES_DEFAULT,
};

use smq_client::credential::{self, Credential};
use smq_client::discovery::{DiscoveryError, DiscoveryMode};
use smq_protocol::Role;
use smq_settings::{FileError, Layered};
use smq_tls::{ClientTls, ServerTls};

use crate::auth::{PrincipalConfig, Principals};
use crate::metadata::offsets::OffsetLimits;
use crate::storage::{FlushMode, StoreConfig};

/// The variable holding the cluster secret itself (`--cluster-secret-file` names a file).
pub const CLUSTER_SECRET_ENV: &str = "SMQ_CLUSTER_SECRET";

/// Default `--data-dir`.
pub const DATA_DIR_DEFAULT: &str = "smq-data";

/// Default `--listen` address (client and, later, replication traffic).
pub const LISTEN_DEFAULT: &str = "127.0.0.1:10911";

/// When a master acknowledges a write relative to its slave (`--replication async|sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Replication {
    Async,
    Sync,
}

smq_settings::layered! {
    /// Every setting as it may come from a flag, an environment variable or the TOML file, one
    /// field each: the flag `--foo-bar`, the variable `SMQ_FOO_BAR` and the TOML key `foo_bar`
    /// (`data_dir = "/var/lib/smq"`). All optional, so that the sources are layered
    /// ([`Layered::or`]) before [`BrokerConfig::from_settings`] fills the gaps with the defaults
    /// and checks the bounds. A new setting is a field here and its row in README.md's settings
    /// table (`every_setting_has_its_flag_variable_key_and_readme_row` checks both).
    #[derive(Debug, Clone, Default, PartialEq, Eq, clap::Parser, Deserialize)]
    #[command(
        name = "smq-broker",
        version,
        about = "smq's broker: serves producers and consumers over TCP, stores messages in a \
                 commit log",
        long_about = "smq's broker: serves producers and consumers over TCP, stores messages in a \
                      commit log. Every flag can also come from an environment variable SMQ_<FLAG> \
                      and from the TOML file given with --config; flags win over variables, \
                      variables over the file, the file over the defaults."
    )]
    #[serde(deny_unknown_fields)]
    pub struct Settings {
        /// TOML file with any of the settings below (keys as the flags, `_` for `-`).
        #[arg(long, env = "SMQ_CONFIG", value_name = "FILE")]
        #[serde(skip)]
        pub config: Option<PathBuf>,
        /// Address for client traffic [default: 127.0.0.1:10911].
        #[arg(long, env = "SMQ_LISTEN", value_name = "ADDR")]
        pub listen: Option<String>,
        /// host:port clients and slaves reach this broker at, as registered with the NameServer
        /// (needed when --listen is 0.0.0.0 or behind NAT) [default: the --listen address].
        #[arg(long, env = "SMQ_ADVERTISE", value_name = "HOST:PORT")]
        pub advertise: Option<String>,
        /// Directory of the commit log, indexes and metadata [default: smq-data].
        #[arg(long, env = "SMQ_DATA_DIR", value_name = "DIR")]
        pub data_dir: Option<PathBuf>,
        /// Cluster this broker belongs to [default: smq].
        #[arg(long, env = "SMQ_CLUSTER", value_name = "NAME")]
        pub cluster: Option<String>,
        /// Broker group (one master and its slaves) [default: broker-a].
        #[arg(long, env = "SMQ_GROUP", value_name = "NAME")]
        pub group: Option<String>,
        /// master or slave [default: master]: a slave copies its --master's log and serves reads.
        #[arg(long, env = "SMQ_ROLE", value_parser = role_parser())]
        pub role: Option<Role>,
        /// The master's address (slaves only).
        #[arg(long, env = "SMQ_MASTER", value_name = "ADDR")]
        pub master: Option<String>,
        /// This broker's name in its group, which identifies it to the NameServer with cluster and
        /// group [default: its advertised address].
        #[arg(long, env = "SMQ_BROKER_NAME", value_name = "NAME")]
        pub broker_name: Option<String>,
        /// File holding the cluster secret, sent with every heartbeat (Authorization: Bearer); the
        /// secret itself may come from SMQ_CLUSTER_SECRET instead.
        #[arg(long, env = "SMQ_CLUSTER_SECRET_FILE", value_name = "FILE")]
        pub cluster_secret_file: Option<PathBuf>,
        /// The cluster secret itself: from SMQ_CLUSTER_SECRET only (never a flag or the file).
        #[arg(skip)]
        #[serde(skip)]
        pub cluster_secret: Option<String>,
        /// The principal this broker authenticates as when it connects to its master (slaves),
        /// NAME:SECRET.
        #[arg(
            long,
            env = "SMQ_CREDENTIAL",
            value_name = "NAME:SECRET",
            hide_env_values = true
        )]
        pub credential: Option<String>,
        /// File holding NAME:SECRET, as --credential.
        #[arg(long, env = "SMQ_CREDENTIAL_FILE", value_name = "FILE")]
        pub credential_file: Option<PathBuf>,
        /// Who may connect and what each may do: `[[principals]]` tables of the TOML file only
        /// (name, secret or secret_sha256, produce/consume/admin topic lists, replicate). None:
        /// open.
        #[arg(skip)]
        pub principals: Option<Vec<PrincipalConfig>>,
        /// File holding the replication secret: a master admits only slaves that present it, so a
        /// master and its slaves need the same one; without it a master accepts no slave.
        #[arg(long, env = "SMQ_REPLICATION_SECRET_FILE", value_name = "FILE")]
        pub replication_secret_file: Option<PathBuf>,
        /// sync: acknowledge after fsync (group commit); async: once in the page cache [default:
        /// sync].
        #[arg(long, env = "SMQ_FLUSH", value_enum)]
        pub flush: Option<FlushMode>,
        /// Masters: sync acknowledges a write only once a slave holds it (fsynced there too under
        /// --flush sync), and consumers see only that; async does not wait [default: async].
        #[arg(long, env = "SMQ_REPLICATION", value_enum)]
        pub replication: Option<Replication>,
        /// Sync replication: a write no slave confirmed within this fails with REPLICATION_TIMEOUT
        /// (kept below the client's ack timeout, 5000 by default) [default: 3000].
        #[arg(long, env = "SMQ_REPLICATION_TIMEOUT_MS", value_name = "MS")]
        pub replication_timeout_ms: Option<u64>,
        /// A slave that has not caught up with the master for this long is out of sync; sync
        /// replication refuses writes (NO_SLAVE) while no slave is in sync [default: 10000].
        #[arg(long, env = "SMQ_REPLICA_LAG_TIME_MAX_MS", value_name = "MS")]
        pub replica_lag_time_max_ms: Option<u64>,
        /// Masters: most log bytes a second sent to each slave while it copies what the master
        /// held when it connected, so that a new or returning slave copying a long log leaves
        /// disk and cores to the producers (what is written after goes unpaced); 0 = no limit
        /// [default: 100000000].
        #[arg(long, env = "SMQ_REPLICATION_MAX_BYTES_PER_SEC", value_name = "BYTES")]
        pub replication_max_bytes_per_sec: Option<u64>,
        /// PEM certificate chain (leaf first) this broker serves TLS with on --listen and --http;
        /// with --tls-key. Without it both serve plaintext.
        #[arg(long, env = "SMQ_TLS_CERT", value_name = "PATH")]
        pub tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long, env = "SMQ_TLS_KEY", value_name = "PATH")]
        pub tls_key: Option<PathBuf>,
        /// PEM CA certificates: with it, only clients and slaves presenting a certificate signed by
        /// one of them connect (to --listen and --http).
        #[arg(long, env = "SMQ_TLS_CLIENT_CA", value_name = "PATH")]
        pub tls_client_ca: Option<PathBuf>,
        /// PEM CA certificates this broker trusts when it calls the NameServer (https:// URLs, and
        /// https for --srv targets) and, for a slave, its master over TLS; it then presents its own
        /// --tls-cert to servers that require client certificates.
        #[arg(long, env = "SMQ_TLS_CA", value_name = "PATH")]
        pub tls_ca: Option<PathBuf>,
        /// Address of the HTTP endpoint serving /healthz and /metrics [default: none].
        #[arg(long, env = "SMQ_HTTP", value_name = "ADDR")]
        pub http: Option<String>,
        /// NameServer URLs (or host:port), comma-separated, to register with [default: none].
        #[arg(long, env = "SMQ_NAMESERVER", value_name = "URL[,URL]")]
        pub nameserver: Option<String>,
        /// DNS SRV name of the NameServers, e.g. _smq-ns._tcp.example.com.
        #[arg(long, env = "SMQ_SRV", value_name = "NAME")]
        pub srv: Option<String>,
        /// DNS server to ask instead of /etc/resolv.conf.
        #[arg(long, env = "SMQ_DNS_SERVER", value_name = "IP:PORT")]
        pub dns_server: Option<SocketAddr>,
        /// tracing filter: error, warn, info, debug, trace, or directives like smq_broker=debug
        /// [default: info].
        #[arg(long, env = "SMQ_LOG_LEVEL", value_name = "LEVEL")]
        pub log_level: Option<String>,
        /// Threads that serve connections; 0 = one per core less one, at least one, so that the
        /// flusher, the preparer and the kernel's network work keep a core [default: 0].
        #[arg(long, env = "SMQ_WORKER_THREADS", value_name = "N")]
        pub worker_threads: Option<u32>,
        /// Most open client connections; more are closed at once [default: 10000].
        #[arg(long, env = "SMQ_MAX_CONNECTIONS", value_name = "N")]
        pub max_connections: Option<u32>,
        /// Most open connections from one IP address; more from it are closed at once [default:
        /// 10000].
        #[arg(long, env = "SMQ_MAX_CONNECTIONS_PER_IP", value_name = "N")]
        pub max_connections_per_ip: Option<u32>,
        /// A connection with no request and nothing in flight for this long is closed [default:
        /// 600000].
        #[arg(long, env = "SMQ_IDLE_TIMEOUT_MS", value_name = "MS")]
        pub idle_timeout_ms: Option<u64>,
        /// How long a client may take to handshake after connecting, to finish a frame it started
        /// sending, or to take a response being written to it; slower peers are closed [default:
        /// 30000].
        #[arg(long, env = "SMQ_PEER_TIMEOUT_MS", value_name = "MS")]
        pub peer_timeout_ms: Option<u64>,
        /// On SIGTERM, how long in-flight requests may take before connections are cut [default:
        /// 10000].
        #[arg(long, env = "SMQ_SHUTDOWN_TIMEOUT_MS", value_name = "MS")]
        pub shutdown_timeout_ms: Option<u64>,
        /// Longest a Fetch may wait for data, whatever it asks [default: 30000].
        #[arg(long, env = "SMQ_MAX_FETCH_WAIT_MS", value_name = "MS")]
        pub max_fetch_wait_ms: Option<u64>,
        /// Largest message accepted [default: 4194304].
        #[arg(long, env = "SMQ_MAX_MESSAGE_BYTES", value_name = "BYTES")]
        pub max_message_bytes: Option<u64>,
        /// Largest record batch accepted; the max frame is this plus 1 MiB [default: 16777216].
        #[arg(long, env = "SMQ_MAX_BATCH_BYTES", value_name = "BYTES")]
        pub max_batch_bytes: Option<u64>,
        /// Size of every commit-log segment file [default: 1073741824].
        #[arg(long, env = "SMQ_SEGMENT_BYTES", value_name = "BYTES")]
        pub segment_bytes: Option<u64>,
        /// async flush: how often the log is flushed; both: indexes and checkpoint [default: 500].
        #[arg(long, env = "SMQ_FLUSH_INTERVAL_MS", value_name = "MS")]
        pub flush_interval_ms: Option<u64>,
        /// An fsync slower than this fails the appends it covers [default: 5000].
        #[arg(long, env = "SMQ_FLUSH_TIMEOUT_MS", value_name = "MS")]
        pub flush_timeout_ms: Option<u64>,
        /// Segments older than this are deleted [default: 72].
        #[arg(long, env = "SMQ_RETENTION_HOURS", value_name = "HOURS")]
        pub retention_hours: Option<u64>,
        /// Oldest segments are deleted while the log is larger; 0 = no limit [default: 0].
        #[arg(long, env = "SMQ_RETENTION_BYTES", value_name = "BYTES")]
        pub retention_bytes: Option<u64>,
        /// How often retention (hours and bytes) is applied [default: 60000].
        #[arg(long, env = "SMQ_RETENTION_CHECK_INTERVAL_MS", value_name = "MS")]
        pub retention_check_interval_ms: Option<u64>,
        /// Appends fail while the disk is fuller than this [default: 90].
        #[arg(long, env = "SMQ_DISK_USAGE_WATERMARK_PERCENT", value_name = "PERCENT")]
        pub disk_usage_watermark_percent: Option<u8>,
        /// Queue-index files kept memory-mapped at most; the least recently used are unmapped
        /// at each flush and mapped again when used [default: 32768].
        #[arg(long, env = "SMQ_MAX_MAPPED_INDEX_FILES", value_name = "N")]
        pub max_mapped_index_files: Option<u64>,
        /// Consumer offsets are written to disk at most this often, and at shutdown [default:
        /// 1000].
        #[arg(long, env = "SMQ_OFFSETS_FLUSH_INTERVAL_MS", value_name = "MS")]
        pub offsets_flush_interval_ms: Option<u64>,
        /// Most consumer groups with committed offsets on this broker; a commit of another group is
        /// refused (OFFSETS_LIMIT_REACHED) [default: 10000].
        #[arg(long, env = "SMQ_MAX_CONSUMER_GROUPS", value_name = "N")]
        pub max_consumer_groups: Option<u64>,
        /// Most committed offsets (consumer group, topic, queue) on this broker; a commit of
        /// another is refused (OFFSETS_LIMIT_REACHED) [default: 1000000].
        #[arg(long, env = "SMQ_MAX_COMMITTED_OFFSETS", value_name = "N")]
        pub max_committed_offsets: Option<u64>,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the secret file {path}")]
    ReadSecret {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{setting} is {value}, outside {min}..={max}")]
    OutOfBounds {
        setting: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error("invalid storage setting")]
    Storage(#[from] crate::storage::StoreConfigError),
    #[error(transparent)]
    Tls(#[from] smq_tls::TlsError),
    #[error("bad discovery flags (--nameserver, --srv, --dns-server)")]
    Discovery(#[from] DiscoveryError),
    #[error("invalid setting: {0}")]
    Invalid(String),
}

/// The broker's configuration, complete and checked.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub listen: String,
    /// What the broker registers as its address; `None`: the address it listens on.
    pub advertise: Option<String>,
    pub cluster: String,
    pub group: String,
    pub role: Role,
    pub master: Option<String>,
    /// `--broker-name`; `None`: the NameServer names the broker by its address.
    pub broker_name: Option<String>,
    /// Sent with every heartbeat as `Authorization: Bearer`.
    pub cluster_secret: Option<String>,
    /// What this broker authenticates as to its master (slaves).
    pub credential: Option<Credential>,
    /// Who may connect and do what; empty: everyone, everything.
    pub principals: Arc<Principals>,
    /// The replication secret's bytes (the file's content without a final newline).
    pub replication_secret: Option<Vec<u8>>,
    pub replication: Replication,
    pub replication_timeout_ms: u64,
    pub replica_lag_time_max_ms: u64,
    /// Pace of a slave's copy of what the master held when it connected; 0: no limit.
    pub replication_max_bytes_per_sec: u64,
    /// `--tls-cert`, `--tls-key`, `--tls-client-ca`: TLS on `listen` and `http`; `None`: plain.
    pub tls: Option<ServerTls>,
    /// `--tls-ca` (and this broker's certificate, if it has one): TLS to the NameServer and to
    /// the master; `None`: plain.
    pub tls_ca: Option<ClientTls>,
    /// None: no HTTP endpoint.
    pub http: Option<String>,
    /// How to find the NameServers to register with (`--nameserver`, or `--srv` with
    /// `--dns-server`); `None`: standalone.
    pub discovery: Option<DiscoveryMode>,
    pub log_level: String,
    /// Threads of the runtime that serves connections (`--worker-threads`, 0 resolved).
    pub worker_threads: usize,
    pub max_connections: u32,
    pub max_connections_per_ip: u32,
    pub idle_timeout_ms: u64,
    pub peer_timeout_ms: u64,
    pub shutdown_timeout_ms: u64,
    pub max_fetch_wait_ms: u64,
    /// The storage engine's settings: `--data-dir`, `--flush`, the sizes, intervals and
    /// retention of the commit log, and the largest message and batch.
    pub store: StoreConfig,
    pub offsets_flush_interval_ms: u64,
    /// Bounds on the consumer offsets kept (`max_consumer_groups`, `max_committed_offsets`).
    pub offset_limits: OffsetLimits,
}

const WORKER_THREADS: Bounds = Bounds {
    default: 0,
    min: 0,
    max: 1024,
};
const MAX_CONNECTIONS: Bounds = Bounds {
    default: 10_000,
    min: 1,
    max: 1_000_000,
};
const IDLE_TIMEOUT_MS: Bounds = Bounds {
    default: 600_000,
    min: 100,
    max: 86_400_000,
};
const PEER_TIMEOUT_MS: Bounds = Bounds {
    default: 30_000,
    min: 100,
    max: 3_600_000,
};
const SHUTDOWN_TIMEOUT_MS: Bounds = Bounds {
    default: 10_000,
    min: 100,
    max: 600_000,
};
const MAX_FETCH_WAIT_MS: Bounds = Bounds {
    default: 30_000,
    min: 0,
    max: 600_000,
};
const MAX_BATCH_BYTES: Bounds = Bounds {
    default: MAX_BATCH_BYTES_DEFAULT as u64,
    min: 1024,
    max: 1 << 30,
};
const OFFSETS_FLUSH_INTERVAL_MS: Bounds = Bounds {
    default: 1_000,
    min: 10,
    max: 600_000,
};
const RETENTION_CHECK_INTERVAL_MS: Bounds = Bounds {
    default: 60_000,
    min: 10,
    max: 86_400_000,
};
const MAX_MAPPED_INDEX_FILES: Bounds = Bounds {
    default: crate::storage::MAX_MAPPED_INDEX_FILES_DEFAULT as u64,
    min: 16,
    max: 1_000_000,
};
const REPLICATION_TIMEOUT_MS: Bounds = Bounds {
    default: 3_000,
    min: 10,
    max: 600_000,
};
const REPLICA_LAG_TIME_MAX_MS: Bounds = Bounds {
    default: 10_000,
    min: 100,
    max: 600_000,
};
/// 100 MB/s: with it, a producer on a 2-core machine sharing one disk with master and slave kept
/// at least 70% of its throughput while an empty slave copied a 2 GiB log (BENCHMARKS.md);
/// unpaced, 49-59%.
const REPLICATION_MAX_BYTES_PER_SEC_DEFAULT: u64 = 100_000_000;
const MAX_CONSUMER_GROUPS: Bounds = Bounds {
    default: 10_000,
    min: 1,
    max: 1_000_000,
};
const MAX_COMMITTED_OFFSETS: Bounds = Bounds {
    default: 1_000_000,
    min: 1,
    max: 100_000_000,
};

/// `--advertise`: a `host:port` with a port that is a number.
fn checked_host_port(addr: String) -> Result<String, ConfigError> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(addr),
        _ => Err(ConfigError::Invalid(format!(
            "advertise `{addr}`: must be host:port, e.g. broker1.example.com:10911"
        ))),
    }
}

/// A numeric setting's default and the range it must be in.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    default: u64,
    min: u64,
    max: u64,
}

/// `value` or the default, checked against the bounds.
fn bounded(
    setting: &'static str,
    value: Option<u64>,
    Bounds { default, min, max }: Bounds,
) -> Result<u64, ConfigError> {
    let value = value.unwrap_or(default);
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::OutOfBounds {
            setting,
            value,
            min,
            max,
        })
    }
}

/// `--worker-threads`: 0 becomes one per core less one (at least one). On a machine of two
/// cores shared with clients, one thread that serves every connection keeps a message's hops on
/// one core: waking a thread on the other core is what makes the end-to-end tail there
/// (BENCHMARKS.md, "Session 10: the tail is the runtime's cross-core wake-ups").
fn worker_threads(setting: usize) -> usize {
    if setting > 0 {
        return setting;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores.saturating_sub(1).max(1)
}

/// `--role`: the names of [`Role::ALL`] (listed in `--help`), parsed into a [`Role`].
fn role_parser() -> impl clap::builder::TypedValueParser<Value = Role> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Role::ALL.map(Role::as_str))
        .map(|name| name.parse::<Role>().expect("a possible value is a role"))
}

impl BrokerConfig {
    /// Defaults everywhere but the data directory, listening on `127.0.0.1:0` (tests).
    pub fn for_tests(data_dir: impl Into<PathBuf>) -> BrokerConfig {
        let mut config = BrokerConfig::from_settings(Settings {
            data_dir: Some(data_dir.into()),
            listen: Some("127.0.0.1:0".into()),
            ..Settings::default()
        })
        .expect("the defaults are valid");
        config.store.segment_bytes = 64 * 1024 * 1024;
        // Tests store little: they should not fail because the machine's disk is 91% full.
        config.store.disk_usage_watermark_percent = 99;
        config
    }

    /// Flags and environment (`flags`, as clap parsed them) over the TOML file they name, if any,
    /// over the defaults.
    pub fn load(flags: Settings) -> Result<BrokerConfig, ConfigError> {
        let file = match &flags.config {
            Some(path) => read_toml(path)?,
            None => Settings::default(),
        };
        let environment = Settings {
            cluster_secret: std::env::var(CLUSTER_SECRET_ENV).ok(),
            ..Settings::default()
        };
        BrokerConfig::from_settings(flags.or(environment).or(file))
    }

    /// Fills what `settings` lacks with the defaults and checks every bound.
    pub fn from_settings(settings: Settings) -> Result<BrokerConfig, ConfigError> {
        let max_batch_bytes =
            bounded("max_batch_bytes", settings.max_batch_bytes, MAX_BATCH_BYTES)?;
        let max_message_bytes = bounded(
            "max_message_bytes",
            settings.max_message_bytes,
            Bounds {
                default: MAX_MESSAGE_BYTES_DEFAULT as u64,
                min: 1,
                max: max_batch_bytes,
            },
        )?;
        let defaults = StoreConfig::new(DATA_DIR_DEFAULT);
        let store = StoreConfig {
            data_dir: settings.data_dir.unwrap_or(defaults.data_dir),
            flush: settings.flush.unwrap_or(defaults.flush),
            segment_bytes: settings.segment_bytes.unwrap_or(defaults.segment_bytes),
            flush_interval_ms: settings
                .flush_interval_ms
                .unwrap_or(defaults.flush_interval_ms),
            flush_timeout_ms: settings
                .flush_timeout_ms
                .unwrap_or(defaults.flush_timeout_ms),
            retention_hours: settings.retention_hours.unwrap_or(defaults.retention_hours),
            retention_bytes: settings.retention_bytes.unwrap_or(defaults.retention_bytes),
            retention_check_interval_ms: bounded(
                "retention_check_interval_ms",
                settings.retention_check_interval_ms,
                RETENTION_CHECK_INTERVAL_MS,
            )?,
            disk_usage_watermark_percent: settings
                .disk_usage_watermark_percent
                .unwrap_or(defaults.disk_usage_watermark_percent),
            max_message_bytes: max_message_bytes as usize,
            max_batch_bytes: max_batch_bytes as usize,
            max_mapped_index_files: bounded(
                "max_mapped_index_files",
                settings.max_mapped_index_files,
                MAX_MAPPED_INDEX_FILES,
            )? as usize,
            index_entries_per_file: defaults.index_entries_per_file,
        };
        store.validate()?;
        let tls = ServerTls::from_flags(
            settings.tls_cert.as_deref(),
            settings.tls_key.as_deref(),
            settings.tls_client_ca.as_deref(),
        )?;
        let tls_ca = ClientTls::from_flags(
            settings.tls_ca.as_deref(),
            settings.tls_cert.as_deref(),
            settings.tls_key.as_deref(),
        )?;
        let config = BrokerConfig {
            listen: settings.listen.unwrap_or_else(|| LISTEN_DEFAULT.to_owned()),
            advertise: settings.advertise.map(checked_host_port).transpose()?,
            cluster: settings.cluster.unwrap_or_else(|| "smq".to_owned()),
            group: settings.group.unwrap_or_else(|| "broker-a".to_owned()),
            role: settings.role.unwrap_or(Role::Master),
            master: settings.master,
            broker_name: settings.broker_name,
            cluster_secret: cluster_secret(settings.cluster_secret, settings.cluster_secret_file)?,
            credential: own_credential(settings.credential, settings.credential_file)?,
            principals: Arc::new(
                Principals::from_config(settings.principals.as_deref().unwrap_or_default())
                    .map_err(ConfigError::Invalid)?,
            ),
            replication_secret: settings
                .replication_secret_file
                .as_deref()
                .map(read_secret)
                .transpose()?,
            replication: settings.replication.unwrap_or(Replication::Async),
            replication_timeout_ms: bounded(
                "replication_timeout_ms",
                settings.replication_timeout_ms,
                REPLICATION_TIMEOUT_MS,
            )?,
            replica_lag_time_max_ms: bounded(
                "replica_lag_time_max_ms",
                settings.replica_lag_time_max_ms,
                REPLICA_LAG_TIME_MAX_MS,
            )?,
            replication_max_bytes_per_sec: settings
                .replication_max_bytes_per_sec
                .unwrap_or(REPLICATION_MAX_BYTES_PER_SEC_DEFAULT),
            tls,
            tls_ca,
            http: settings.http,
            discovery: DiscoveryMode::from_flags(
                settings.nameserver.as_deref(),
                settings.srv.as_deref(),
                settings.dns_server,
            )?,
            log_level: settings.log_level.unwrap_or_else(|| "info".to_owned()),
            worker_threads: worker_threads(bounded(
                "worker_threads",
                settings.worker_threads.map(u64::from),
                WORKER_THREADS,
            )? as usize),
            max_connections: bounded(
                "max_connections",
                settings.max_connections.map(u64::from),
                MAX_CONNECTIONS,
            )? as u32,
            max_connections_per_ip: bounded(
                "max_connections_per_ip",
                settings.max_connections_per_ip.map(u64::from),
                MAX_CONNECTIONS,
            )? as u32,
            idle_timeout_ms: bounded("idle_timeout_ms", settings.idle_timeout_ms, IDLE_TIMEOUT_MS)?,
            peer_timeout_ms: bounded("peer_timeout_ms", settings.peer_timeout_ms, PEER_TIMEOUT_MS)?,
            shutdown_timeout_ms: bounded(
                "shutdown_timeout_ms",
                settings.shutdown_timeout_ms,
                SHUTDOWN_TIMEOUT_MS,
            )?,
            max_fetch_wait_ms: bounded(
                "max_fetch_wait_ms",
                settings.max_fetch_wait_ms,
                MAX_FETCH_WAIT_MS,
            )?,
            store,
            offsets_flush_interval_ms: bounded(
                "offsets_flush_interval_ms",
                settings.offsets_flush_interval_ms,
                OFFSETS_FLUSH_INTERVAL_MS,
            )?,
            offset_limits: OffsetLimits {
                max_consumer_groups: bounded(
                    "max_consumer_groups",
                    settings.max_consumer_groups,
                    MAX_CONSUMER_GROUPS,
                )? as usize,
                max_committed_offsets: bounded(
                    "max_committed_offsets",
                    settings.max_committed_offsets,
                    MAX_COMMITTED_OFFSETS,
                )? as usize,
            },
        };
        config.check_replication()?;
        Ok(config)
    }

    /// A slave needs its master's address and the replication secret; a master is not given
    /// a master.
    fn check_replication(&self) -> Result<(), ConfigError> {
        match self.role {
            Role::Slave if self.master.is_none() => Err(ConfigError::Invalid(
                "--role slave needs --master ADDR, the address of the master to copy".into(),
            )),
            Role::Slave if self.replication_secret.is_none() => Err(ConfigError::Invalid(
                "--role slave needs --replication-secret-file FILE, the same secret its master has"
                    .into(),
            )),
            Role::Master if self.master.is_some() => Err(ConfigError::Invalid(
                "--master is for slaves (--role slave); a master copies no one".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Largest frame length accepted: one largest batch plus room for the rest of the request.
    pub fn max_frame_bytes(&self) -> usize {
        self.store.max_batch_bytes + FRAME_HEADROOM_BYTES
    }
}

/// The cluster secret, from SMQ_CLUSTER_SECRET or the file `--cluster-secret-file` names (not
/// both).
fn cluster_secret(
    value: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<String>, ConfigError> {
    credential::secret_from(
        value,
        CLUSTER_SECRET_ENV,
        file.as_deref(),
        "--cluster-secret-file",
    )
    .map_err(|error| ConfigError::Invalid(error.to_string()))
}

/// This broker's own credential, from `--credential` / SMQ_CREDENTIAL or the file
/// `--credential-file` names (not both).
fn own_credential(
    value: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<Credential>, ConfigError> {
    let credential = match (value, file) {
        (Some(_), Some(_)) => Err(smq_client::Error::InvalidArgument(
            "the credential is given twice, by --credential and --credential-file: give one".into(),
        )),
        (Some(value), None) => credential::parse(&value, "--credential").map(Some),
        (None, Some(path)) => credential::from_file(&path).map(Some),
        (None, None) => Ok(None),
    };
    credential.map_err(|error| ConfigError::Invalid(error.to_string()))
}

/// The secret in `path`: its bytes without a final newline; an empty one is refused.
fn read_secret(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let mut secret = std::fs::read(path).map_err(|source| ConfigError::ReadSecret {
        path: path.to_owned(),
        source,
    })?;
    while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        secret.pop();
    }
    if secret.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "the secret file {} is empty",
            path.display()
        )));
    }
    Ok(secret)
}

fn read_toml(path: &Path) -> Result<Settings, FileError> {
    smq_settings::read_toml(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use smq_settings::check::{problems, settings_table, Flag};
    use smq_settings::variable_of;

    #[test]
    fn flag_beats_env_beats_toml_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("broker.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1111\"\ngroup = \"from-toml\"\ncluster = \"toml-cluster\"\n\
             max_connections = 7\n",
        )
        .unwrap();
        // Only this test reads these variables.
        std::env::set_var("SMQ_LISTEN", "127.0.0.1:2222");
        std::env::set_var("SMQ_GROUP", "from-env");
        let flags = Settings::try_parse_from([
            "smq-broker",
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:3333",
        ])
        .unwrap();
        std::env::remove_var("SMQ_LISTEN");
        std::env::remove_var("SMQ_GROUP");
        let config = BrokerConfig::load(flags).unwrap();
        assert_eq!(config.listen, "127.0.0.1:3333", "flag over env and file");
        assert_eq!(config.group, "from-env", "env over file");
        assert_eq!(config.cluster, "toml-cluster", "file over default");
        assert_eq!(config.max_connections, 7);
        assert_eq!(config.idle_timeout_ms, IDLE_TIMEOUT_MS.default, "default");
        assert_eq!(config.store.flush, FlushMode::Sync);
    }

    #[test]
    fn out_of_bounds_and_unknown_values_are_named() {
        let error = BrokerConfig::from_settings(Settings {
            idle_timeout_ms: Some(5),
            ..Settings::default()
        })
        .unwrap_err();
        assert!(
            error.to_string().contains("idle_timeout_ms is 5"),
            "{error}"
        );
    }

    #[test]
    fn worker_threads_zero_is_one_per_core_less_one_and_too_many_are_refused() {
        let with = |threads| {
            BrokerConfig::from_settings(Settings {
                worker_threads: Some(threads),
                ..Settings::default()
            })
        };
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(with(0).unwrap().worker_threads, (cores - 1).max(1));
        assert_eq!(with(5).unwrap().worker_threads, 5);
        let error = with(1025).unwrap_err().to_string();
        assert!(error.contains("worker_threads is 1025"), "{error}");
    }

    #[test]
    fn roles_and_modes_are_parsed_once_and_unknown_ones_are_named() {
        let flags = Settings::try_parse_from([
            "smq-broker",
            "--role=slave",
            "--flush=async",
            "--replication=sync",
        ])
        .unwrap();
        assert_eq!(flags.role, Some(Role::Slave));
        assert_eq!(flags.flush, Some(FlushMode::Async));
        assert_eq!(flags.replication, Some(Replication::Sync));
        let error = Settings::try_parse_from(["smq-broker", "--role", "leader"]).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("leader") && text.contains("master, slave"),
            "{text}"
        );
        let error = Settings::try_parse_from(["smq-broker", "--flush", "never"]).unwrap_err();
        assert!(error.to_string().contains("sync, async"), "{error}");

        let file: Settings =
            toml::from_str("role = \"slave\"\nflush = \"async\"\nreplication = \"sync\"\n")
                .unwrap();
        assert_eq!(
            (file.role, file.flush, file.replication),
            (
                Some(Role::Slave),
                Some(FlushMode::Async),
                Some(Replication::Sync)
            )
        );
        let error = toml::from_str::<Settings>("role = \"leader\"\n").unwrap_err();
        assert!(
            error.to_string().contains("`master`, `slave`") || error.to_string().contains("master"),
            "{error}"
        );
    }

    #[test]
    fn an_unreadable_secret_file_is_called_a_secret_file() {
        let error = BrokerConfig::from_settings(Settings {
            replication_secret_file: Some("/nonexistent/secret".into()),
            ..Settings::default()
        })
        .unwrap_err();
        let chain = smq_settings::error_chain(&error);
        assert!(
            chain.starts_with("cannot read the secret file /nonexistent/secret: "),
            "{chain}"
        );
        assert_eq!(
            chain.matches("No such file").count(),
            1,
            "said once: {chain}"
        );
    }

    #[test]
    fn unknown_toml_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("broker.toml");
        std::fs::write(&file, "listn = \"x\"\n").unwrap();
        let error = read_toml(&file).unwrap_err();
        assert!(error.to_string().contains("listn"), "{error}");
    }

    #[test]
    fn every_setting_has_its_flag_variable_key_and_readme_row() {
        use clap::CommandFactory;
        let flags: Vec<Flag> = Settings::command()
            .get_arguments()
            .filter_map(|arg| {
                Some(Flag {
                    field: arg.get_id().to_string(),
                    long: format!("--{}", arg.get_long()?),
                    variable: arg
                        .get_env()
                        .map(|name| name.to_string_lossy().into_owned()),
                })
            })
            .filter(|flag| flag.long != "--help" && flag.long != "--version")
            .collect();
        let readme = include_str!("../../README.md");
        let table = settings_table(readme, "## Broker").unwrap();
        let problems = problems::<Settings>(&flags, &table);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert_eq!(
            variable_of("cluster_secret"),
            CLUSTER_SECRET_ENV,
            "the variable-only setting is read from its variable"
        );
    }

    #[test]
    fn each_documented_default_is_the_default_in_help_readme_and_config() {
        let readme = include_str!("../../README.md");
        let (checked, problems) = smq_settings::documented_defaults!(
            Settings,
            readme,
            "## Broker",
            BrokerConfig::from_settings
        );
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert!(checked >= 25, "only {checked} defaults found in the help");
    }

    #[test]
    fn advertise_must_be_host_and_port() {
        let with = |advertise: &str| {
            BrokerConfig::from_settings(Settings {
                advertise: Some(advertise.into()),
                ..Settings::default()
            })
        };
        let config = with("broker1.example.com:10911").unwrap();
        assert_eq!(
            config.advertise.as_deref(),
            Some("broker1.example.com:10911")
        );
        for bad in ["broker1.example.com", ":10911", "host:port"] {
            let error = with(bad).unwrap_err().to_string();
            assert!(error.contains("must be host:port"), "{bad}: {error}");
        }
    }
}
