//! The master's side of replication: it admits only slaves of its own cluster and group that
//! present the replication secret, serves them its log bytes from the position each asks for,
//! records what each acknowledged, and tells producers waiting under synchronous replication
//! when a slave holds their batch.
//!
//! A slave's fetch position acknowledges every byte below it (with `--flush sync` on the
//! master, only its fsynced position counts). A slave is **in sync** while it was caught up
//! (it asked for a position at or past the master's end when its previous fetch was answered)
//! within the last `replica_lag_time_max_ms`; synchronous replication refuses a produce at once
//! (`NO_SLAVE`) while no slave is in sync, rather than letting it time out.
//!
//! Under synchronous replication the master keeps the set of **holders**: the slaves that each
//! hold every acknowledged write (Kafka's in-sync replicas). A write is acknowledged, and
//! consumers see it, only once every holder has it, so any holder can be promoted without
//! losing an acknowledged write. A slave joins once it is in sync and holds everything
//! acknowledged; it leaves when it falls out of sync, but only after the smaller set is written
//! to the holders file (never the last one: then nothing is acknowledged until one is back). A
//! master that may have lost the unflushed tail of its log (it stopped uncleanly under
//! `--flush async`) lets no other slave join until one of the holders it remembers is in sync
//! again: only they may hold what it lost (proto-spec.md section 10.1).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use smq_protocol::credential::constant_time_eq;
use smq_protocol::replication::{
    ReplicaFetch, ReplicaFetchResponse, ReplicaHello, ReplicaHelloResponse, ReplicaMetadata,
    ReplicaMetadataResponse,
};
use tokio::sync::{watch, Notify};

use super::epochs::{reconcile, Log, Verdict};
use super::holders_file::{Holders, HoldersFileError};
use crate::config::{BrokerConfig, Replication};
use crate::handlers::{Answer, HandlerError, Reply};
use crate::state::Broker;
use crate::storage::{FlushMode, Store};
use smq_protocol::Role;

/// Largest log chunk sent in one ReplicaFetch answer, whatever the slave asks for.
pub const MAX_REPLICA_FETCH_BYTES: u32 = 4 * 1024 * 1024;
/// How often [`keep_holders`] looks for a holder that fell out of sync (it is woken at once
/// when one disconnects).
const HOLDERS_CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// How often the holders file is rewritten at most for a grown acknowledged position alone.
const HOLDERS_WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// What the master knows of one connected slave.
#[derive(Debug, Clone)]
pub struct SlaveView {
    pub addr: String,
    pub peer: SocketAddr,
    /// The slave holds the log below this (its last fetch position).
    pub acked_position: u64,
    /// ... and has fsynced it below this.
    pub acked_flushed: u64,
    /// The master's end when it last answered this slave.
    end_at_last_answer: u64,
    caught_up_at: Instant,
    /// In sync at the last check (for logging each change once).
    pub in_sync: bool,
    /// With `replication_max_bytes_per_sec`: the next answer waits until then.
    paced_until: Instant,
    /// The master's end when this slave connected: its copy of the log below is paced (what
    /// is written after it is sent as fast as the slave asks, so that a slave in sync is never
    /// held back, and the paced copy has an end).
    paced_below: u64,
}

impl SlaveView {
    fn is_in_sync(&self, now: Instant, lag_time_max: Duration) -> bool {
        now.duration_since(self.caught_up_at) < lag_time_max
    }

    /// What this slave acknowledged, as durably as the master counts it.
    fn acknowledged(&self, fsync_acks: bool) -> u64 {
        if fsync_acks {
            self.acked_flushed
        } else {
            self.acked_position
        }
    }
}

/// The slaves of this master, the holders among them, and the position they acknowledged.
pub struct Replicas {
    group: Mutex<Group>,
    next_session: AtomicU64,
    /// What the slaves hold (as durably as `fsync_acks` says): under synchronous replication,
    /// every holder; otherwise, any slave. Producers waiting for a slave watch it.
    acknowledged: watch::Sender<u64>,
    fsync_acks: bool,
    lag_time_max: Duration,
    /// `--replication sync`: acknowledgements wait for every holder.
    sync: bool,
    /// Wakes [`keep_holders`] when a holder may have to leave.
    holders_changed: Notify,
}

/// The connected slaves and the holders, under one lock.
struct Group {
    slaves: BTreeMap<u64, SlaveView>,
    /// Under synchronous replication, the slaves (by address) that each hold every
    /// acknowledged write.
    holders: BTreeSet<String>,
    /// This master's log holds every acknowledged write (it is not waiting for a remembered
    /// holder after an unclean restart), so a slave that caught up with it may join.
    complete: bool,
    /// A slave joined the holders since the file was last written.
    joined: bool,
}

impl Group {
    /// A slave of this address is connected and in sync.
    fn in_sync(&self, addr: &str, now: Instant, lag_time_max: Duration) -> bool {
        self.slaves
            .values()
            .any(|slave| slave.addr == addr && slave.is_in_sync(now, lag_time_max))
    }

    /// What every holder holds (0 while one is not connected).
    fn held_by_every_holder(&self, fsync_acks: bool) -> u64 {
        self.holders
            .iter()
            .map(|addr| {
                self.slaves
                    .values()
                    .filter(|slave| &slave.addr == addr)
                    .map(|slave| slave.acknowledged(fsync_acks))
                    .max()
                    .unwrap_or(0)
            })
            .min()
            .unwrap_or(0)
    }
}

/// One admitted slave's connection; the slave is forgotten when it ends.
pub struct ReplicaSession {
    id: u64,
    broker: Arc<Broker>,
    /// When its hello was answered: what the slave sends afterwards is as of then or later.
    admitted_at: Instant,
}

impl Drop for ReplicaSession {
    fn drop(&mut self) {
        if let Some(slave) = self.broker.replicas.lock().slaves.remove(&self.id) {
            tracing::warn!(slave = %slave.addr, peer = %slave.peer, acked_position = slave.acked_position, "a slave disconnected");
            self.broker.replicas.holders_changed.notify_one();
        }
    }
}

impl Replicas {
    pub fn new(config: &BrokerConfig) -> Replicas {
        Replicas {
            group: Mutex::new(Group {
                slaves: BTreeMap::new(),
                holders: BTreeSet::new(),
                complete: true,
                joined: false,
            }),
            next_session: AtomicU64::new(1),
            acknowledged: watch::Sender::new(0),
            fsync_acks: config.store.flush == FlushMode::Sync,
            lag_time_max: Duration::from_millis(config.replica_lag_time_max_ms),
            sync: config.replication == Replication::Sync,
            holders_changed: Notify::new(),
        }
    }

    /// Takes up what the holders file of the last run says ([`holders_at_start`]).
    pub fn restore(&self, holders: Holders, complete: bool) {
        let mut group = self.lock();
        group.holders = holders.slaves;
        group.complete = complete;
        self.acknowledged.send_replace(holders.acknowledged);
    }

    fn lock(&self) -> MutexGuard<'_, Group> {
        self.group.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every connected slave, with whether it is in sync now.
    /// Under synchronous replication, in sync means a holder in sync: the slaves a promotion may
    /// pick without losing an acknowledged write.
    pub fn slaves(&self) -> Vec<SlaveView> {
        let now = Instant::now();
        let group = self.lock();
        group
            .slaves
            .values()
            .map(|slave| SlaveView {
                in_sync: self.counts(&group, slave, now),
                ..slave.clone()
            })
            .collect()
    }

    /// Whether `slave` counts as in sync for producers and operators now.
    fn counts(&self, group: &Group, slave: &SlaveView, now: Instant) -> bool {
        slave.is_in_sync(now, self.lag_time_max)
            && (!self.sync || group.holders.contains(&slave.addr))
    }

    /// Whether a write can be acknowledged by a slave now: a slave is in sync (under
    /// synchronous replication, a holder).
    pub fn any_in_sync(&self) -> bool {
        let now = Instant::now();
        let group = self.lock();
        if self.sync {
            group
                .holders
                .iter()
                .any(|addr| group.in_sync(addr, now, self.lag_time_max))
        } else {
            group
                .slaves
                .values()
                .any(|slave| slave.is_in_sync(now, self.lag_time_max))
        }
    }

    /// Raises the acknowledged position to `position` (it never goes down); true if it rose.
    fn advance(&self, position: u64) -> bool {
        self.acknowledged.send_if_modified(|acknowledged| {
            let advanced = position > *acknowledged;
            *acknowledged = (*acknowledged).max(position);
            advanced
        })
    }

    /// Waits until a slave acknowledged `end`; false when `timeout` passed first.
    pub async fn wait_acknowledged(&self, end: u64, timeout: Duration) -> bool {
        let mut acknowledged = self.acknowledged.subscribe();
        tokio::time::timeout(timeout, acknowledged.wait_for(|position| *position >= end))
            .await
            .is_ok_and(|result| result.is_ok())
    }

    /// Logs each slave that fell out of sync or came back since the last call (one line each
    /// way); the master calls this periodically.
    pub fn log_sync_changes(&self, master_end: u64) {
        let now = Instant::now();
        let mut group = self.lock();
        let changed: Vec<(u64, bool)> = group
            .slaves
            .iter()
            .map(|(id, slave)| (*id, self.counts(&group, slave, now)))
            .filter(|(id, in_sync)| group.slaves[id].in_sync != *in_sync)
            .collect();
        for (id, in_sync) in changed {
            let slave = group.slaves.get_mut(&id).expect("listed above");
            slave.in_sync = in_sync;
            let lag_bytes = master_end.saturating_sub(slave.acked_position);
            if in_sync {
                tracing::info!(slave = %slave.addr, lag_bytes, "a slave is in sync again");
            } else {
                tracing::warn!(
                    slave = %slave.addr,
                    lag_bytes,
                    caught_up_ms_ago = now.duration_since(slave.caught_up_at).as_millis() as u64,
                    replica_lag_time_max_ms = self.lag_time_max.as_millis() as u64,
                    "a slave fell out of sync: synchronous replication refuses writes while no slave is in sync"
                );
            }
        }
    }
}

/// Admits a slave that names this master's cluster and group and presents its replication
/// secret; anyone else gets an error and the connection closes.
pub fn hello(
    broker: &Arc<Broker>,
    peer: SocketAddr,
    hello: &ReplicaHello,
) -> Result<(ReplicaSession, Answer), HandlerError> {
    let config = &broker.config;
    if broker.role_now().role != Role::Master {
        return Err(HandlerError::NotMaster {
            group: config.group.clone(),
        });
    }
    let refuse = |reason: String| {
        tracing::warn!(%peer, slave = %hello.slave_addr, "refused a replica: {reason}");
        Err(HandlerError::ReplicaRefused(reason))
    };
    let Some(secret) = &config.replication_secret else {
        return refuse("this master has no replication secret, so it accepts no slave: give master and slaves the same --replication-secret-file".into());
    };
    if !constant_time_eq(secret, &hello.secret) {
        return refuse("the slave's replication secret is not this master's: give master and slaves the same --replication-secret-file".into());
    }
    if hello.cluster != config.cluster || hello.group != config.group {
        return refuse(format!(
            "the slave belongs to {}/{}, this master to {}/{}",
            hello.cluster, hello.group, config.cluster, config.group
        ));
    }
    if hello.segment_bytes != config.store.segment_bytes {
        return refuse(format!(
            "the slave's segment_bytes is {}, this master's {}: positions would not match; give both the same --segment-bytes",
            hello.segment_bytes, config.store.segment_bytes
        ));
    }
    let store = &broker.store;
    let end = store.end_position();
    let start = store.log_start_position();
    let history = store.epoch_history();
    let verdict = reconcile(
        Log {
            epochs: &history.entries,
            end,
        },
        Log {
            epochs: &hello.epochs,
            end: hello.log_end,
        },
    );
    let truncate_to = match verdict {
        Verdict::Follow { truncate_to } => truncate_to,
        Verdict::MasterBehind {
            position,
            slave_end,
            epoch,
        } => {
            broker.refuse_writes(format!(
                "its slave {} holds {} bytes of epoch {epoch} from log position {position} on \
                 that this master lost (its log ends at {end}); acknowledged writes may be \
                 among them. Promote the slave (smq group promote {} --slave {}); this broker \
                 then rejoins as its slave",
                hello.slave_addr,
                slave_end - position,
                config.group,
                hello.slave_addr
            ));
            return Err(HandlerError::EpochConflict(format!(
                "this master's log ends at {end}, but the slave holds epoch {epoch} up to \
                 {slave_end}: it keeps its log, and the master takes no writes until the slave \
                 is promoted"
            )));
        }
        Verdict::MasterStale {
            position,
            slave_epoch,
            master_epoch,
        } => {
            broker.refuse_writes(format!(
                "its slave {} holds epoch {slave_epoch} from log position {position} on, newer \
                 than this master's epoch {master_epoch} there: another master superseded this \
                 one; restart this broker as a slave of the group's master",
                hello.slave_addr
            ));
            return Err(HandlerError::EpochConflict(format!(
                "the slave holds epoch {slave_epoch} from {position} on, newer than this \
                 master's {master_epoch}: this master is stale and takes no writes"
            )));
        }
    };
    let id = broker.replicas.next_session.fetch_add(1, Ordering::Relaxed);
    broker.replicas.lock().slaves.insert(
        id,
        SlaveView {
            addr: hello.slave_addr.clone(),
            peer,
            acked_position: truncate_to.min(end),
            acked_flushed: 0,
            end_at_last_answer: end,
            // Not in sync until it catches up.
            caught_up_at: Instant::now() - broker.replicas.lag_time_max,
            in_sync: false,
            paced_until: Instant::now(),
            paced_below: end,
        },
    );
    tracing::info!(slave = %hello.slave_addr, %peer, slave_log_end = hello.log_end, truncate_to, master_log_end = end, master_epoch = store.master_epoch(), "a slave connected");
    let answer = Answer::ReplicaHello(ReplicaHelloResponse {
        master_epoch: store.master_epoch(),
        fsync_acks: broker.replicas.fsync_acks,
        log_start: start,
        log_end: end,
        truncate_to,
        epochs: history.entries,
    });
    Ok((
        ReplicaSession {
            id,
            broker: broker.clone(),
            admitted_at: Instant::now(),
        },
        answer,
    ))
}

/// Records what the fetch acknowledges, then answers with the log from its position, holding
/// the request up to `max_wait_ms` while there is nothing new.
pub fn fetch(broker: &Arc<Broker>, session: &ReplicaSession, request: ReplicaFetch) -> Reply {
    if let Err(error) = acknowledge(broker, session, &request) {
        return Reply::Now(Err(error));
    }
    let broker = broker.clone();
    let id = session.id;
    Reply::Later(Box::pin(async move {
        let wait = Duration::from_millis(u64::from(request.max_wait_ms))
            .min(Duration::from_millis(broker.config.max_fetch_wait_ms));
        let mut max_bytes = request.max_bytes.clamp(1, MAX_REPLICA_FETCH_BYTES) as usize;
        // With a rate, the copy of what the master held when the slave connected is paced.
        let rate = broker.config.replication_max_bytes_per_sec;
        let paced_until = (rate > 0)
            .then(|| {
                let replicas = broker.replicas.lock();
                let slave = replicas.slaves.get(&id)?;
                (request.position < slave.paced_below).then_some(slave.paced_until)
            })
            .flatten();
        if let Some(until) = paced_until {
            // Chunks of a tenth of a second's worth, each sent no earlier than the rate allows.
            max_bytes = max_bytes.min((rate / 10).max(64 * 1024) as usize);
            tokio::time::sleep_until(until.into()).await;
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut shutdown = broker.shutdown.clone();
        loop {
            let appended = broker.log_appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            // Versions first: a topic change the log bytes depend on is never announced after them.
            let topics_version = broker.topic_configs().0;
            let offsets_version = broker.offsets.version();
            let chunk = broker.store.read_log(request.position, max_bytes)?;
            let waited_enough = tokio::time::Instant::now() >= deadline || *shutdown.borrow();
            if !chunk.bytes.is_empty() || waited_enough {
                let master_end = broker.store.end_position();
                if let Some(slave) = broker.replicas.lock().slaves.get_mut(&id) {
                    slave.end_at_last_answer = master_end;
                    if paced_until.is_some() {
                        let sending =
                            Duration::from_secs_f64(chunk.bytes.len() as f64 / rate as f64);
                        slave.paced_until = slave.paced_until.max(Instant::now()) + sending;
                    }
                }
                return Ok(Answer::ReplicaFetch(ReplicaFetchResponse {
                    master_end,
                    topics_version,
                    offsets_version,
                    position: chunk.position,
                    bytes: chunk.bytes,
                }));
            }
            tokio::select! {
                _ = &mut appended => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = crate::state::shutting_down(&mut shutdown) => {}
            }
        }
    }))
}

/// The slave holds the log below the fetch's position (fsynced below its flushed position).
fn acknowledge(
    broker: &Broker,
    session: &ReplicaSession,
    request: &ReplicaFetch,
) -> Result<(), HandlerError> {
    let end = broker.store.end_position();
    if request.position > end {
        // A slave ahead of its master has a divergent log: nothing it says counts.
        return Err(HandlerError::ReplicaAhead {
            position: request.position,
            end,
        });
    }
    let flushed = request.flushed_position.min(request.position);
    broker.lease.renew_by_slave();
    let replicas = &broker.replicas;
    let acknowledged = {
        let mut group = replicas.lock();
        let Some(slave) = group.slaves.get_mut(&session.id) else {
            return Err(HandlerError::Internal("the slave's session is gone".into()));
        };
        slave.acked_position = request.position;
        slave.acked_flushed = flushed;
        if request.position >= slave.end_at_last_answer {
            slave.caught_up_at = Instant::now();
        }
        if replicas.sync {
            let (addr, holds) = (slave.addr.clone(), slave.acknowledged(replicas.fsync_acks));
            let in_sync = group.in_sync(&addr, Instant::now(), replicas.lag_time_max);
            if in_sync && group.holders.contains(&addr) && !group.complete {
                group.complete = true;
                tracing::info!(slave = %addr, "a slave that holds every acknowledged write is in sync again: this master takes writes again");
            }
            let holds_all = holds >= *replicas.acknowledged.borrow();
            if in_sync && group.complete && holds_all && group.holders.insert(addr.clone()) {
                group.joined = true;
                tracing::info!(slave = %addr, "a slave holds every acknowledged write: acknowledgements wait for it from now on");
            }
            group.held_by_every_holder(replicas.fsync_acks)
        } else {
            slave.acknowledged(replicas.fsync_acks)
        }
    };
    publish_acknowledged(broker, acknowledged);
    Ok(())
}

/// The slaves hold the log below `position`: producers waiting for it are answered, and under
/// synchronous replication consumers may read it: their long polls are woken here, on the
/// task that read the acknowledgement (last, so that theirs is the task this one hands its core
/// to), not by the produce's task.
fn publish_acknowledged(broker: &Broker, position: u64) {
    broker.replicas.advance(position);
    if broker.config.replication == Replication::Sync {
        broker.store.replicated(position);
        broker
            .pending_visibility
            .wake_visible(broker.store.visible_position());
    }
}

/// What the holders file of the last run says, and whether this master's log holds every
/// write it acknowledged (else it waits for a remembered holder before taking writes). Without
/// a file, no slave acknowledged anything: readers see nothing until one does, unless this
/// broker has just been promoted (its log is the copy the old master's slaves held).
pub fn holders_at_start(
    config: &BrokerConfig,
    store: &Store,
) -> Result<(Holders, bool), HoldersFileError> {
    let end = store.end_position();
    let Some(mut holders) = Holders::read(&config.store.data_dir)? else {
        let promoted = store
            .epoch_history()
            .entries
            .last()
            .is_some_and(|entry| entry.promoted && entry.start == end);
        let acknowledged = if promoted {
            end
        } else {
            store.log_start_position()
        };
        return Ok((
            Holders {
                acknowledged,
                slaves: BTreeSet::new(),
            },
            true,
        ));
    };
    let complete = holders.slaves.is_empty()
        || config.store.flush == FlushMode::Sync
        || store.recovery_report().clean;
    if holders.acknowledged > end {
        tracing::warn!(
            acknowledged = holders.acknowledged,
            log_end = end,
            "this master's log ends before what its slaves acknowledged: it lost its tail"
        );
        holders.acknowledged = end;
        holders.write(&config.store.data_dir)?;
    }
    if !complete {
        tracing::warn!(
            holders = ?holders.slaves,
            "this master stopped uncleanly under --flush async: its log may have lost writes its \
             slaves acknowledged, so it takes writes only once one of these slaves is in sync \
             again (a slave holding more than this master makes it refuse writes: promote that \
             slave)"
        );
    }
    Ok((holders, complete))
}

/// Keeps the holders file up to date under synchronous replication: a holder that is no longer
/// in sync leaves the set once the smaller set is written (then acknowledgements stop waiting
/// for it), and joins and the acknowledged position are written at most once a second.
pub async fn keep_holders(broker: Arc<Broker>) {
    let replicas = &broker.replicas;
    let mut shutdown = broker.shutdown.clone();
    let mut written_at = Instant::now();
    let mut written = *replicas.acknowledged.borrow();
    loop {
        let stopping = tokio::select! {
            _ = crate::state::shutting_down(&mut shutdown) => true,
            _ = replicas.holders_changed.notified() => false,
            _ = tokio::time::sleep(HOLDERS_CHECK_INTERVAL) => false,
        };
        if broker.role_now().role != Role::Master {
            // Demoted: it follows a new master now, which keeps its own holders.
            return;
        }
        let (holders, leaving) = {
            let mut group = replicas.lock();
            let now = Instant::now();
            let leaving: Vec<String> = group
                .holders
                .iter()
                .filter(|addr| !group.in_sync(addr, now, replicas.lag_time_max))
                .cloned()
                .collect();
            // The last holders stay: nothing is acknowledged until one is back in sync.
            let leaving = if leaving.len() == group.holders.len() {
                Vec::new()
            } else {
                leaving
            };
            let acknowledged = *replicas.acknowledged.borrow();
            let due = stopping
                || !leaving.is_empty()
                || group.joined
                || (acknowledged != written && written_at.elapsed() >= HOLDERS_WRITE_INTERVAL);
            if !due {
                continue;
            }
            group.joined = false;
            let mut slaves = group.holders.clone();
            slaves.retain(|addr| !leaving.contains(addr));
            (
                Holders {
                    acknowledged,
                    slaves,
                },
                leaving,
            )
        };
        let writer = broker.clone();
        let to_write = holders.clone();
        let result =
            tokio::task::spawn_blocking(move || to_write.write(&writer.config.store.data_dir))
                .await
                .map_err(|error| error.to_string())
                .and_then(|result| result.map_err(|error| error.to_string()));
        if let Err(error) = result {
            tracing::error!(%error, "writing the holders file failed: acknowledgements keep waiting for every holder; retried");
            replicas.lock().joined = true;
            continue;
        }
        (written, written_at) = (holders.acknowledged, Instant::now());
        if stopping {
            return;
        }
        if !leaving.is_empty() {
            let acknowledged = {
                let mut group = replicas.lock();
                group.holders.retain(|addr| !leaving.contains(addr));
                group.held_by_every_holder(replicas.fsync_acks)
            };
            for slave in &leaving {
                tracing::warn!(%slave, holders = ?holders.slaves, "a slave out of sync no longer counts as holding every acknowledged write: acknowledgements stop waiting for it until it is in sync again");
            }
            publish_acknowledged(&broker, acknowledged);
        }
    }
}

/// The master's topics and consumer offsets, for a slave to copy, after taking the offsets the
/// slave committed while it could not reach this master that are newer than this master's
/// (of topics and queues it has), written to disk before the answer (the slave then no longer
/// holds them as its own to give): a master back from an outage never brings a consumer
/// group's offsets back. From then on this master answers FetchOffset, unless it armed that
/// wait after the slave was admitted ([`crate::metadata::reconciliation`]).
pub fn metadata(
    broker: &Arc<Broker>,
    session: &ReplicaSession,
    peer: SocketAddr,
    request: ReplicaMetadata,
) -> Reply {
    let admitted_at = session.admitted_at;
    if request.slave_offsets_json.is_empty() {
        broker
            .offsets_reconciliation
            .settle_for_slave_admitted_at(admitted_at, "a slave connected that took no offsets");
        return Reply::Now(Ok(metadata_answer(broker)));
    }
    crate::handlers::blocking(broker, move |broker| {
        take_slave_offsets(broker, peer, &request.slave_offsets_json)?;
        broker
            .offsets_reconciliation
            .settle_for_slave_admitted_at(admitted_at, "a slave handed over the offsets it took");
        Ok(metadata_answer(broker))
    })
}

/// Takes the slave's offsets that are newer than this master's and writes them to disk. Offsets
/// that do not parse are logged and left (the slave keeps them, and sends them again).
fn take_slave_offsets(broker: &Broker, peer: SocketAddr, json: &[u8]) -> Result<(), HandlerError> {
    // Not an offset of a topic deleted since and created again under its name (0: the slave
    // stored it before offsets kept their topic's id).
    let keep = |topic: &str, topic_id: u64, queue: u32| {
        broker.topic(topic).is_some_and(|state| {
            queue < state.queue_count && (topic_id == 0 || topic_id == state.id)
        })
    };
    match broker.offsets.take_newer_from_json(json, keep) {
        Ok(taken) => {
            tracing::info!(%peer, taken, "took the newer consumer offsets the slave committed while this master was unreachable")
        }
        Err(error) => {
            tracing::warn!(%peer, %error, "the slave's consumer offsets do not parse: not taken")
        }
    }
    broker.offsets.persist()?;
    Ok(())
}

fn metadata_answer(broker: &Broker) -> Answer {
    let (topics_version, topics_json) = broker.topics_json();
    let (offsets_version, offsets_json) = broker.offsets.to_json();
    Answer::ReplicaMetadata(ReplicaMetadataResponse {
        topics_version,
        offsets_version,
        topics_json: topics_json.into(),
        offsets_json: offsets_json.into(),
    })
}
