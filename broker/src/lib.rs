//! smq's broker: [`start`] opens the store and metadata of a data directory and serves the
//! binary protocol over TCP ([`server`], [`handlers`]) and an admin HTTP endpoint ([`http`]),
//! and with `--nameserver` or `--srv` heartbeats to the NameServer ([`registration`]); a
//! slave copies its master's log and metadata ([`replication`]).

pub mod auth;
pub mod config;
pub mod handlers;
pub mod http;
pub mod metadata;
pub mod metrics;
pub mod registration;
pub mod replication;
pub mod server;
pub mod state;
pub mod storage;
pub mod visibility;

#[cfg(test)]
mod fenced_tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use config::{BrokerConfig, Replication};
use metadata::offsets::{Offsets, OffsetsError};
use metadata::topics::{TopicError, Topics};
use replication::holders_file::{Holders, HoldersFileError};
use smq_client::nameserver_client::NameServerClient;
use smq_protocol::Role;
use state::Broker;
use storage::{StorageError, Store};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {what} {address} (is another broker running? set {flag})")]
    Bind {
        what: &'static str,
        address: String,
        flag: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the store")]
    Storage(#[from] StorageError),
    #[error("cannot read the topics")]
    Topics(#[from] TopicError),
    #[error("cannot read the consumer offsets")]
    Offsets(#[from] OffsetsError),
    #[error("cannot read what this master's slaves hold")]
    Holders(#[from] HoldersFileError),
    #[error("bad discovery flags (--nameserver, --srv, --dns-server)")]
    Discovery(#[from] smq_client::discovery::DiscoveryError),
    #[error("cannot read the address a listener is bound to")]
    LocalAddr(#[source] std::io::Error),
    #[error("a start-up task did not finish")]
    Task(#[from] tokio::task::JoinError),
}

#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    #[error("writing the consumer offsets at shutdown failed: {0}")]
    Offsets(StorageError),
    #[error("closing the store failed: {0}; recovery runs at the next start")]
    Store(StorageError),
    #[error(
        "requests were still running after the shutdown timeout; the store closes when they end"
    )]
    StillBusy,
    #[error("a broker task did not finish")]
    Task(#[from] tokio::task::JoinError),
}

/// A started broker: where it listens, and the handle that stops it.
pub struct RunningBroker {
    tcp_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    broker: Arc<Broker>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Opens the data directory (recovering the store if needed), binds the listeners and starts
/// serving. Port 0 in `listen` or `http` picks a free port; [`RunningBroker`] says which.
pub async fn start(config: BrokerConfig) -> Result<RunningBroker, StartError> {
    let discovery = registration::discovery(&config)?;
    match &discovery {
        None => tracing::info!("no --nameserver or --srv given: running standalone"),
        Some(discovery) => tracing::info!(
            mode = ?discovery.mode(),
            "registering with the NameServer"
        ),
    }
    let tcp = listen_with_backlog(&config.listen)
        .await
        .map_err(|source| StartError::Bind {
            what: "the broker address",
            address: config.listen.clone(),
            flag: "--listen",
            source,
        })?;
    let http = match &config.http {
        Some(address) => {
            Some(
                TcpListener::bind(address)
                    .await
                    .map_err(|source| StartError::Bind {
                        what: "the HTTP address",
                        address: address.clone(),
                        flag: "--http",
                        source,
                    })?,
            )
        }
        None => None,
    };
    let store_config = config.store.clone();
    let data_dir = config.store.data_dir.clone();
    let offset_limits = config.offset_limits;
    let (store, topics, offsets) = tokio::task::spawn_blocking(move || {
        let topics = Topics::open(&data_dir)?;
        let starts = topics
            .list()
            .map(|topic| (topic.name.clone(), topic.start_position))
            .collect();
        let store = Store::open_with_topic_starts(store_config, starts)?;
        let names: Vec<&str> = topics.list().map(|topic| topic.name.as_str()).collect();
        store.forget_topics_except(&names)?;
        let offsets = Offsets::open(&data_dir, offset_limits)?;
        Ok::<_, StartError>((store, topics, offsets))
    })
    .await??;
    let tcp_addr = tcp.local_addr().map_err(StartError::LocalAddr)?;
    let http_addr = match &http {
        Some(listener) => Some(listener.local_addr().map_err(StartError::LocalAddr)?),
        None => None,
    };
    let (stop, stopping) = watch::channel(false);
    // A master registered with a NameServer claims its epoch there first (below).
    let claims_epoch = discovery.is_some();
    let store = tokio::task::spawn_blocking({
        let role = config.role;
        move || take_role(store, role, claims_epoch)
    })
    .await??;
    let sync_master = config.role == Role::Master && config.replication == Replication::Sync;
    let (store, holders) = tokio::task::spawn_blocking({
        let config = config.clone();
        move || {
            if !sync_master {
                Holders::remove(&config.store.data_dir)?;
                return Ok((store, None));
            }
            let holders = replication::master::holders_at_start(&config, &store)?;
            store.require_replication(holders.0.acknowledged);
            Ok::<_, StartError>((store, Some(holders)))
        }
    })
    .await??;
    let broker = Arc::new(Broker::new(config, store, topics, offsets, stopping));
    // Before the server takes a slave's acknowledgement.
    let keeps_holders = holders.is_some();
    if let Some((holders, complete)) = holders {
        broker.replicas.restore(holders, complete);
    }
    let own_addr = broker
        .config
        .advertise
        .clone()
        .unwrap_or_else(|| tcp_addr.to_string());
    let _ = broker.own_addr.set(own_addr.clone());
    let nameserver = discovery.map(|discovery| {
        let mut client = NameServerClient::new(Arc::new(discovery));
        if let Some(tls) = &broker.config.tls_ca {
            client = client.with_tls(tls.clone());
        }
        match &broker.config.cluster_secret {
            Some(secret) => client.with_token(secret.as_str()),
            None => {
                tracing::warn!("no cluster secret (SMQ_CLUSTER_SECRET or --cluster-secret-file): a NameServer that requires one refuses this broker's heartbeats");
                client
            }
        }
    });
    if let Some(client) = &nameserver {
        if broker.config.role == Role::Master {
            replication::role_change::claim_at_start(&broker, client, tcp_addr, http_addr).await?;
        }
    }
    let mut tasks = vec![
        tokio::spawn(server::serve(tcp, broker.clone())),
        tokio::spawn(persist_offsets_periodically(broker.clone())),
    ];
    if keeps_holders {
        tasks.push(tokio::spawn(replication::master::keep_holders(
            broker.clone(),
        )));
    }
    match broker.role_now().role {
        Role::Master => tasks.push(tokio::spawn(watch_slaves(broker.clone()))),
        Role::Slave => tasks.push(tokio::spawn(replication::slave::run(
            broker.clone(),
            own_addr,
        ))),
    }
    if let Some(listener) = http {
        tasks.push(tokio::spawn(http::serve(listener, broker.clone())));
    }
    if !broker.config.principals.is_enabled() && !tcp_addr.ip().is_loopback() {
        tracing::warn!(listen = %tcp_addr, "no principals configured: anyone who reaches this address may produce, consume, and create and delete topics; list [[principals]] in the --config file");
    }
    if let Some(client) = nameserver {
        tasks.push(tokio::spawn(registration::run(
            broker.clone(),
            client,
            tcp_addr,
            http_addr,
        )));
    }
    // Plain addresses (or "off"), not Debug formats: scripts and tests read this line.
    let http_shown = http_addr.map_or_else(|| "off".to_owned(), |addr| addr.to_string());
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    tracing::info!(listen = %tcp_addr, http = %http_shown, data_dir = %broker.config.store.data_dir.display(), workers, "broker started");
    Ok(RunningBroker {
        tcp_addr,
        http_addr,
        broker,
        stop,
        tasks,
    })
}

/// A master begins the next epoch at its log's end (a promotion when the broker last ran as a
/// slave: the operator made it master), unless it claims it from a NameServer first; a slave
/// records that it is one.
fn take_role(store: Store, role: Role, claims_epoch: bool) -> Result<Store, StartError> {
    match role {
        Role::Master if claims_epoch => {}
        Role::Master => {
            let history = store.epoch_history();
            let epoch = history.last_epoch() + 1;
            store.begin_epoch(epoch, history.written_as_slave)?;
            tracing::info!(
                master_epoch = epoch,
                promoted = history.written_as_slave,
                start_position = store.end_position(),
                "began a master epoch"
            );
        }
        Role::Slave => store.mark_slave()?,
    }
    Ok(store)
}

impl RunningBroker {
    /// The bound address of the binary protocol.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// The bound address of the HTTP endpoint, if `--http` was given.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Stops accepting, lets in-flight requests finish (at most `shutdown_timeout_ms`), writes
    /// the consumer offsets, flushes and closes the store cleanly.
    pub async fn shutdown(self) -> Result<(), ShutdownError> {
        let RunningBroker {
            broker,
            stop,
            tasks,
            ..
        } = self;
        let _ = stop.send(true);
        for task in tasks {
            task.await?;
        }
        let broker = last_reference(broker).await?;
        tokio::task::spawn_blocking(move || {
            broker.offsets.persist().map_err(ShutdownError::Offsets)?;
            broker.store.close().map_err(ShutdownError::Store)
        })
        .await??;
        tracing::info!("broker stopped");
        Ok(())
    }
}

/// Waits briefly for tasks that were cancelled at the shutdown timeout to drop their reference.
async fn last_reference(mut broker: Arc<Broker>) -> Result<Broker, ShutdownError> {
    for _ in 0..100 {
        match Arc::try_unwrap(broker) {
            Ok(broker) => return Ok(broker),
            Err(shared) => broker = shared,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(ShutdownError::StillBusy)
}

/// Logs each slave falling out of sync and coming back, once a second, until shutdown or the
/// broker stops being a master.
pub(crate) async fn watch_slaves(broker: Arc<Broker>) {
    let mut shutdown = broker.shutdown.clone();
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = crate::state::shutting_down(&mut shutdown) => return,
            _ = interval.tick() => {}
        }
        if broker.role_now().role != Role::Master {
            return;
        }
        broker
            .replicas
            .log_sync_changes(broker.store.end_position());
    }
}

/// Writes changed consumer offsets every `offsets_flush_interval_ms` until shutdown.
async fn persist_offsets_periodically(broker: Arc<Broker>) {
    let mut shutdown = broker.shutdown.clone();
    let mut interval = tokio::time::interval(Duration::from_millis(
        broker.config.offsets_flush_interval_ms,
    ));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = crate::state::shutting_down(&mut shutdown) => return,
            _ = interval.tick() => {}
        }
        let writer = broker.clone();
        match tokio::task::spawn_blocking(move || writer.offsets.persist()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, "writing the consumer offsets failed; retried at the next interval")
            }
            Err(error) => tracing::error!(%error, "the consumer-offset writer panicked"),
        }
    }
}

/// Connections the kernel queues for the accept loop: a burst of clients connecting at once (a
/// fleet restarting) beyond the queue waits a second for a SYN retransmit.
const ACCEPT_BACKLOG: u32 = 4096;

/// Binds the broker's TCP address (the first it resolves to) with `ACCEPT_BACKLOG`.
async fn listen_with_backlog(address: &str) -> std::io::Result<TcpListener> {
    let mut last_error = None;
    for address in tokio::net::lookup_host(address).await? {
        let socket = match address {
            std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(address) {
            Ok(()) => return socket.listen(ACCEPT_BACKLOG),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        )
    }))
}
