//! smq's NameServer: keeps in memory what brokers report in their heartbeats, forgets a broker
//! that stops heartbeating, and answers route questions over HTTP/JSON. It holds no message data
//! and is never on the data path. [`router`] serves tests without a socket; [`start`] binds.

pub mod api;
pub mod auth;
pub mod consumer_groups;
pub mod fencing;
pub mod group_views;
pub mod metrics;
pub mod registry;
pub mod settings;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use smq_client::discovery::{Discovery, DiscoveryError, DiscoveryMode, DiscoveryOptions};
use smq_protocol::nameserver_api::{
    CLUSTER_PATH, CONSUMER_GROUPS_PATH, HEARTBEAT_PATH, HEARTBEAT_TIMEOUT_MS_DEFAULT, TOPICS_PATH,
};
use smq_tls::listener::{TlsListener, TlsPeer};
use smq_tls::ServerTls;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use auth::Guard;
use consumer_groups::ConsumerGroups;
use fencing::Fence;
use metrics::Metrics;
use registry::Registry;

/// Largest heartbeat body: room for about 30,000 topics.
pub const MAX_HEARTBEAT_BYTES: usize = 4 * 1024 * 1024;
/// Shortest allowed `heartbeat_timeout_ms`: below it, a GC pause or a busy broker drops out.
pub const HEARTBEAT_TIMEOUT_MS_MIN: u64 = 100;
/// Longest allowed `heartbeat_timeout_ms` (RocketMQ's 120 s is already a known pain).
pub const HEARTBEAT_TIMEOUT_MS_MAX: u64 = 600_000;
/// Default for how often `--srv` is looked up to decide fencing.
pub const FENCING_INTERVAL_MS_DEFAULT: u64 = 2_000;
/// Default listen address.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:9876";

/// Everything a NameServer needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to serve HTTP; port 0 picks a free port.
    pub listen: SocketAddr,
    /// `host:port` the SRV record names this NameServer by; defaults to the bound address.
    pub advertise: Option<String>,
    /// The SRV record to follow for fencing (`--srv`); `None` never fences.
    pub srv: Option<String>,
    /// DNS server for `srv` (`--dns-server`); `None` reads /etc/resolv.conf.
    pub dns_server: Option<SocketAddr>,
    /// A broker leaves the routes this long after its last heartbeat.
    pub heartbeat_timeout_ms: u64,
    /// How often `srv` is looked up.
    pub fencing_interval_ms: u64,
    /// Brokers must send it with their heartbeats (`SMQ_CLUSTER_SECRET`,
    /// `--cluster-secret-file`); `None`: any heartbeat is taken.
    pub cluster_secret: Option<String>,
    /// Reads and consumer-group member heartbeats must send it (or the cluster secret)
    /// (`SMQ_READ_TOKEN`, `--read-token-file`); `None`: they are open.
    pub read_token: Option<String>,
    /// HTTPS with this certificate and key (`--tls-cert`, `--tls-key`, `--tls-client-ca`);
    /// `None`: plain HTTP.
    pub tls: Option<ServerTls>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: LISTEN_DEFAULT.parse().expect("a valid default address"),
            advertise: None,
            srv: None,
            dns_server: None,
            heartbeat_timeout_ms: HEARTBEAT_TIMEOUT_MS_DEFAULT,
            fencing_interval_ms: FENCING_INTERVAL_MS_DEFAULT,
            cluster_secret: None,
            read_token: None,
            tls: None,
        }
    }
}

/// Why a NameServer could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr} (is another NameServer running? set --listen)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "heartbeat timeout {value} ms is out of bounds: it must be {HEARTBEAT_TIMEOUT_MS_MIN} to \
         {HEARTBEAT_TIMEOUT_MS_MAX} ms"
    )]
    HeartbeatTimeout { value: u64 },
    #[error("fencing interval must be at least 10 ms, not {value}")]
    FencingInterval { value: u64 },
    #[error("cannot follow the SRV record for fencing")]
    Discovery(#[from] DiscoveryError),
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
}

/// What the handlers share: the registry and the consumer groups, each behind one lock (every
/// operation is short and does no IO; when both are needed the registry is locked first), the
/// counters, the fence and the clock.
#[derive(Clone)]
pub struct AppState {
    registry: Arc<Mutex<Registry>>,
    consumer_groups: Arc<Mutex<ConsumerGroups>>,
    pub metrics: Arc<Metrics>,
    pub fence: Arc<Fence>,
    pub auth: Arc<Guard>,
    started: Instant,
}

impl AppState {
    pub fn new(heartbeat_timeout_ms: u64, fence: Fence, auth: Guard) -> AppState {
        AppState {
            registry: Arc::new(Mutex::new(Registry::new(heartbeat_timeout_ms))),
            consumer_groups: Arc::new(Mutex::new(ConsumerGroups::default())),
            metrics: Arc::new(Metrics::default()),
            fence: Arc::new(fence),
            auth: Arc::new(auth),
            started: Instant::now(),
        }
    }

    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        // Registry operations cannot leave it half-changed, so a poisoned lock is still usable.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn consumer_groups(&self) -> MutexGuard<'_, ConsumerGroups> {
        // Like the registry: no operation leaves it half-changed.
        self.consumer_groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Milliseconds since this state was made, on the monotonic clock: the registry's time.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// How much longer this NameServer is warming up, in ms (0 once warm): for one heartbeat
    /// timeout after it started, or after the SRV record came to name it, brokers may not have
    /// (re-)registered with it yet, so it cannot tell a topic that does not exist from one whose
    /// brokers have not reached it (proto-spec.md §8.3).
    pub fn warming_up_ms(&self) -> u64 {
        let serving_ms = self.fence.serving_for().as_millis() as u64;
        self.registry()
            .heartbeat_timeout_ms()
            .saturating_sub(serving_ms)
    }

    /// How much longer consumer groups are warming up, in ms (0 once warm): while this
    /// NameServer warms up, and for one heartbeat timeout after it started hearing from brokers
    /// again (a standby that brokers and members fail over to). Members then keep the queues
    /// they report and no free queue is given out, so a failover moves no queue.
    pub fn consumer_groups_warming_up_ms(&self) -> u64 {
        let taking_over_ms = self.registry().taking_over_ms(self.now_ms());
        self.warming_up_ms().max(taking_over_ms)
    }

    /// Forgets the brokers that stopped heartbeating, logging each.
    pub fn expire(&self) {
        let now_ms = self.now_ms();
        let expired = self.registry().expire(now_ms);
        for broker in &expired {
            tracing::warn!(
                addr = %broker.addr,
                group = %broker.group,
                role = ?broker.role,
                "broker left the routes: no heartbeat within the heartbeat timeout"
            );
        }
        self.metrics.brokers_expired(expired.len());
        for (consumer_group, topic, member) in self.consumer_groups().expire(now_ms) {
            tracing::warn!(
                %consumer_group,
                %topic,
                %member,
                "consumer group member left: no heartbeat within its session timeout; its queues go to the others"
            );
        }
    }
}

/// The HTTP API (proto-spec.md §8) over `state`: broker heartbeats behind the cluster secret,
/// the rest but `/healthz` behind the read token (each only when configured).
pub fn router(state: AppState) -> Router {
    let brokers = Router::new()
        .route(HEARTBEAT_PATH, post(api::heartbeat))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::brokers));
    let readers = Router::new()
        .route("/v1/routes/{topic}", get(api::route))
        .route(CLUSTER_PATH, get(api::cluster))
        .route(TOPICS_PATH, get(api::topics))
        .route(CONSUMER_GROUPS_PATH, get(api::consumer_groups))
        .route("/v1/groups/{group}", get(api::consumer_group))
        .route("/v1/groups/{group}/heartbeat", post(api::member_heartbeat))
        .route("/metrics", get(api::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::readers));
    Router::new()
        .merge(brokers)
        .merge(readers)
        .route("/healthz", get(api::healthz))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_HEARTBEAT_BYTES))
        .with_state(state)
}

/// A started NameServer.
pub struct Running {
    addr: SocketAddr,
    state: AppState,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops accepting, finishes the requests in progress and stops the background tasks.
    pub async fn shutdown(self) -> Result<(), Error> {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        match self.server.await {
            Ok(result) => result.map_err(Error::Serve),
            Err(join) => Err(Error::Serve(std::io::Error::other(join))),
        }
    }
}

/// Binds `config.listen`, checks the SRV record once if `config.srv` is set, and serves until
/// [`Running::shutdown`].
pub async fn start(config: Config) -> Result<Running, Error> {
    if !(HEARTBEAT_TIMEOUT_MS_MIN..=HEARTBEAT_TIMEOUT_MS_MAX).contains(&config.heartbeat_timeout_ms)
    {
        return Err(Error::HeartbeatTimeout {
            value: config.heartbeat_timeout_ms,
        });
    }
    if config.fencing_interval_ms < 10 {
        return Err(Error::FencingInterval {
            value: config.fencing_interval_ms,
        });
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: config.listen,
        source,
    })?;
    let advertise = config.advertise.clone().unwrap_or_else(|| addr.to_string());
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    let fence = match &config.srv {
        None => Fence::disabled(advertise.clone()),
        Some(srv) => {
            if config.advertise.is_none() && addr.ip().is_unspecified() {
                tracing::warn!(%addr, "listening on an unspecified address: set --advertise to the host:port the SRV record names, or this NameServer will always be fenced");
            }
            let mode = DiscoveryMode::Srv {
                name: srv.clone(),
                dns_server: config.dns_server,
            };
            let discovery = Discovery::new(mode, DiscoveryOptions::default())?;
            Fence::following(srv.clone(), advertise.clone(), discovery)
        }
    };
    let guard = Guard::new(config.cluster_secret.clone(), config.read_token.clone());
    if !guard.has_cluster_secret() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "no cluster secret (SMQ_CLUSTER_SECRET or --cluster-secret-file): anyone who reaches this address can register a broker and steer producers to it");
    }
    let state = AppState::new(config.heartbeat_timeout_ms, fence, guard);

    if config.srv.is_some() {
        state.fence.check().await;
        tasks.push(tokio::spawn(fencing::run(
            state.fence.clone(),
            Duration::from_millis(config.fencing_interval_ms),
            shutdown_rx.clone(),
        )));
    }

    // Answers leave expired brokers out by themselves; this sweep frees them and logs it.
    let sweep_every = Duration::from_millis((config.heartbeat_timeout_ms / 4).max(25));
    let sweeper = state.clone();
    let mut stop = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(sweep_every) => sweeper.expire(),
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    }));

    let app = router(state.clone());
    let mut stop = shutdown_rx;
    let stopped = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let server = match config.tls.clone() {
        None => tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
        }),
        Some(tls) => tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<TlsPeer>();
            axum::serve(TlsListener::new(listener, tls), app)
                .with_graceful_shutdown(stopped)
                .await
        }),
    };
    tracing::info!(%addr, %advertise, srv = config.srv.as_deref(), heartbeat_timeout_ms = config.heartbeat_timeout_ms, cluster_secret = state.auth.has_cluster_secret(), read_token = state.auth.has_read_token(), tls = config.tls.is_some(), "NameServer listening");
    Ok(Running {
        addr,
        state,
        shutdown,
        server,
        tasks,
    })
}
