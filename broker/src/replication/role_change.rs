//! A broker changing its role in its group while it runs: a master claims its epoch from the
//! NameServer before it takes writes, hands over to a slave (stops taking writes and waits
//! until the slave holds its whole log), and follows a newer master as its slave when it learns
//! it was superseded; a slave is promoted (it begins the next epoch and takes writes) or follows
//! the master the NameServer names. `smq group promote` drives a switchover through the admin
//! apis HandOver and Promote (proto-spec.md section 10.2).
//!
//! Every change of role goes through the broker's role watch: the request path reads it
//! (`NOT_MASTER`), the slave's task follows it, and a change that needs the slave's task to
//! have stopped writing takes `Broker::replica_writes` after changing the role.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smq_client::nameserver_client::{Backoff, NameServerClient, NameServerError};
use smq_protocol::nameserver_api::{ApiErrorCode, HeartbeatReply, HEARTBEAT_INTERVAL_MS_DEFAULT};
use smq_protocol::role_change::{
    HandOver, HandOverAction, HandOverResponse, Promote, PromoteResponse, RoleRequest, RoleResponse,
};

use super::holders_file::Holders;
use crate::config::Replication;
use crate::handlers::{Answer, HandlerError, Outcome, Reply};
use crate::registration;
use crate::state::Broker;
use crate::storage::{FlushMode, StorageError};
use crate::StartError;
use smq_protocol::Role;

/// How long a master waits at start for a NameServer to answer its claim before it takes
/// writes without one (a heartbeat interval: the NameServer may be down).
const CLAIM_WAIT: Duration = Duration::from_millis(HEARTBEAT_INTERVAL_MS_DEFAULT);
/// How often a handover looks at what its slave acknowledged.
const HAND_OVER_POLL: Duration = Duration::from_millis(5);
/// How long the log end must stay put after the slave holds it before a handover answers: a
/// produce that checked the role just before writes stopped appends within it.
const HAND_OVER_SETTLE: Duration = Duration::from_millis(50);

/// Handles a role-change request (the connection checked the admin permission).
pub fn handle(broker: &Arc<Broker>, request: RoleRequest) -> Reply {
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        match request {
            RoleRequest::HandOver(request) => hand_over(&broker, request).await,
            RoleRequest::Promote(request) => promote(&broker, request).await,
        }
    }))
}

/// The epoch a master claims: the one it writes in, or, before it began one, the next of its
/// history; for a slave, its history's last.
pub fn claimed_epoch(broker: &Broker) -> u32 {
    let history = broker.store.epoch_history();
    match (broker.role_now().role, broker.store.master_epoch()) {
        (Role::Master, 0) => history.last_epoch() + 1,
        (Role::Master, epoch) => epoch,
        (Role::Slave, _) => history.last_epoch(),
    }
}

/// The end of what this master acknowledged that a slave must hold for no acknowledged write to
/// be lost: what a slave acknowledged under synchronous replication, the log end otherwise.
pub fn acknowledged_position(broker: &Broker) -> u64 {
    match broker.config.replication {
        Replication::Sync => broker.store.replicated_position(),
        Replication::Async => broker.store.end_position(),
    }
}

/// At start, a master registered with a NameServer asks it, with its first heartbeat, whether
/// its group has a newer master: if so it follows that master as its slave (it has begun no
/// epoch and written nothing); else it begins the epoch it claimed. A NameServer warming up
/// answers the claim 503 `warming_up` (proto-spec.md §8.2): it asks again until the claim is
/// decided. When no NameServer answers within [`CLAIM_WAIT`] it begins its epoch anyway and
/// learns at a later heartbeat.
pub async fn claim_at_start(
    broker: &Arc<Broker>,
    client: &NameServerClient,
    addr: SocketAddr,
    http_addr: Option<SocketAddr>,
) -> Result<(), StartError> {
    if broker.store.epoch_history().written_as_slave {
        // It last ran as a slave: configured as a master, it takes over only from a group
        // without a live master (a restart-based switchover); a slave of a live master (an old
        // master that followed its successor, restarted as configured) stays its slave.
        let mut probe = registration::heartbeat(broker, addr, http_addr);
        probe.role = Role::Slave;
        probe.master_epoch = broker.store.epoch_history().last_epoch();
        probe.acknowledged_position = None;
        probe.claim = false;
        if let Ok(reply) = client.heartbeat(&probe).await {
            let own = broker.own_addr.get();
            if let Some(master) = reply.master_addr.filter(|master| Some(master) != own) {
                let why = format!(
                    "this broker last ran as a slave and group {} has a live master, {master}: \
                     it stays a slave (to make it the master, run smq group promote {} --slave \
                     {})",
                    broker.config.group,
                    broker.config.group,
                    own.map_or("THIS-BROKER", String::as_str)
                );
                demote(broker, Some(master), &why).await;
                return Ok(());
            }
        }
    }
    let mut deadline = Instant::now() + CLAIM_WAIT;
    let mut told_warming_up = false;
    let mut backoff = Backoff::default();
    loop {
        let beat = registration::heartbeat(broker, addr, http_addr);
        let epoch = beat.master_epoch;
        match client.heartbeat(&beat).await {
            Ok(reply) => {
                broker
                    .lease
                    .renew(Duration::from_millis(reply.heartbeat_timeout_ms));
                return begin_claimed_epoch(broker, epoch).await;
            }
            Err(error) => {
                if let Some((group_epoch, master)) = stale(&error) {
                    let why = format!(
                        "the NameServer says group {} is at master epoch {group_epoch} (master {}), \
                         above this broker's claim {epoch}: a slave was promoted while this broker \
                         was away",
                        broker.config.group,
                        master.as_deref().unwrap_or("not live")
                    );
                    demote(broker, master, &why).await;
                    return Ok(());
                }
                if error.is_warming_up() {
                    // A NameServer is up but decides claims only once its brokers had time to
                    // register (a master may be writing in this epoch): waiting for its answer
                    // is the point, so the deadline for an absent NameServer starts anew.
                    if !told_warming_up {
                        tracing::info!(%error, master_epoch = epoch, "the NameServer is warming up: this master waits for it to decide its epoch claim before taking writes");
                        told_warming_up = true;
                    }
                    deadline = Instant::now() + CLAIM_WAIT;
                }
                if error.is_retryable() && Instant::now() < deadline {
                    tokio::time::sleep(backoff.next_pause()).await;
                    continue;
                }
                tracing::warn!(%error, master_epoch = epoch, "could not check this group's master epoch with a NameServer: taking writes; if a slave was promoted meanwhile, this broker learns it at its next accepted heartbeat and follows it");
                return begin_claimed_epoch(broker, epoch).await;
            }
        }
    }
}

async fn begin_claimed_epoch(broker: &Arc<Broker>, epoch: u32) -> Result<(), StartError> {
    let writer = broker.clone();
    tokio::task::spawn_blocking(move || {
        let promoted = writer.store.epoch_history().written_as_slave;
        writer.store.begin_epoch(epoch, promoted)?;
        tracing::info!(
            master_epoch = epoch,
            promoted,
            start_position = writer.store.end_position(),
            "began a master epoch"
        );
        Ok::<_, StartError>(())
    })
    .await?
}

/// The group's epoch and master of a heartbeat refused as stale.
pub fn stale(error: &NameServerError) -> Option<(u32, Option<String>)> {
    match error {
        NameServerError::Api { error, .. } if error.code == ApiErrorCode::StaleEpoch => Some((
            error.group_epoch.unwrap_or_default(),
            error.master_addr.clone(),
        )),
        _ => None,
    }
}

/// After an accepted heartbeat: a master renews its lease; a slave whose master is not the
/// group's master the NameServer names (another slave was promoted) follows that one.
pub fn after_heartbeat(broker: &Arc<Broker>, reply: &HeartbeatReply) {
    let now = broker.role_now();
    match now.role {
        Role::Master => broker
            .lease
            .renew(Duration::from_millis(reply.heartbeat_timeout_ms)),
        Role::Slave => {
            let Some(master) = &reply.master_addr else {
                return;
            };
            if reply.group_epoch == 0 || now.master.as_ref() == Some(master) {
                return;
            }
            tracing::warn!(old_master = ?now.master, new_master = %master, group_epoch = reply.group_epoch, "the NameServer names another master of this group: following it");
            broker
                .role
                .send_modify(|now| now.master = Some(master.clone()));
            broker.topics_changed.notify_one();
        }
    }
}

/// A heartbeat of this master was refused as stale: it takes no more writes and follows the
/// group's master (or waits for one to be named).
pub async fn superseded(broker: &Arc<Broker>, group_epoch: u32, master: Option<String>) {
    if broker.role_now().role != Role::Master {
        return;
    }
    let why = format!(
        "the NameServer says group {} is at master epoch {group_epoch} (master {}), above this \
         master's epoch {}: another broker was promoted",
        broker.config.group,
        master.as_deref().unwrap_or("not live"),
        broker.store.master_epoch()
    );
    demote(broker, master, &why).await;
    spawn_slave(broker);
}

/// Makes this broker a slave of `master` (`None`: not known yet): writes are answered
/// `NOT_MASTER` from now on, and the next start is known to follow a slave's run. The caller
/// starts the slave's task (at start, the broker does).
async fn demote(broker: &Arc<Broker>, master: Option<String>, why: &str) {
    tracing::warn!(new_master = ?master, "{why}: this broker takes no more writes and follows the group's master as its slave; the tail of its log that the master does not have is dropped when it connects (proto-spec.md section 10.1)");
    broker.role.send_modify(|now| {
        now.role = Role::Slave;
        now.master = master;
        now.refusing_writes = None;
    });
    broker.topics_changed.notify_one();
    let writer = broker.clone();
    let marked = tokio::task::spawn_blocking(move || {
        writer.store.stop_requiring_replication();
        writer
            .pending_visibility
            .wake_visible(writer.store.visible_position());
        Holders::remove(&writer.config.store.data_dir)?;
        writer.store.mark_slave()
    })
    .await;
    match marked {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::error!(%error, "could not record in the epoch history that this broker is a slave now")
        }
        Err(error) => tracing::error!(%error, "recording the slave role panicked"),
    }
}

fn spawn_slave(broker: &Arc<Broker>) {
    let addr = broker
        .own_addr
        .get()
        .cloned()
        .unwrap_or_else(|| broker.config.listen.clone());
    tokio::spawn(super::slave::run(broker.clone(), addr));
}

/// HandOver: stop taking writes and answer once `slave_addr` holds the whole log; or resume
/// writes; or follow the promoted slave.
async fn hand_over(broker: &Arc<Broker>, request: HandOver) -> Outcome {
    let now = broker.role_now();
    if request.action == HandOverAction::Follow {
        if now.role == Role::Master {
            let why = format!(
                "handed over to {}, which is the group's master now",
                request.slave_addr
            );
            demote(broker, Some(request.slave_addr.clone()), &why).await;
            spawn_slave(broker);
        }
        return Ok(hand_over_answer(broker));
    }
    if now.role != Role::Master {
        return Err(HandlerError::NotMaster {
            group: broker.config.group.clone(),
        });
    }
    let reason = format!("handing over to its slave {}", request.slave_addr);
    if request.action == HandOverAction::Resume {
        let resumed = broker.role.send_if_modified(|now| {
            let ours = now
                .refusing_writes
                .as_ref()
                .is_some_and(|why| why.starts_with("handing over"));
            if ours {
                now.refusing_writes = None;
            }
            ours
        });
        if resumed {
            tracing::warn!("the handover was given up: taking writes again");
            broker.topics_changed.notify_one();
        }
        return Ok(hand_over_answer(broker));
    }
    if let Some(why) = now.refusing_writes {
        // Its slave holds more than it does, or it was superseded: nothing to wait for.
        tracing::warn!(%why, slave = %request.slave_addr, "a handover to a slave of a master that takes no writes: answering at once");
        return Ok(hand_over_answer(broker));
    }
    let started = Instant::now();
    broker
        .role
        .send_modify(|now| now.refusing_writes = Some(reason.clone()));
    broker.topics_changed.notify_one();
    tracing::warn!(slave = %request.slave_addr, "handing over: this master takes no more writes and waits until the slave holds its whole log");
    let deadline = started + Duration::from_millis(u64::from(request.timeout_ms));
    let fsync_acks = broker.config.store.flush == FlushMode::Sync;
    let mut settled_since: Option<(u64, Instant)> = None;
    loop {
        let end = broker.store.end_position();
        let acked = broker
            .replicas
            .slaves()
            .into_iter()
            .filter(|slave| slave.addr == request.slave_addr)
            .map(|slave| {
                if fsync_acks {
                    slave.acked_flushed
                } else {
                    slave.acked_position
                }
            })
            .max();
        if acked.is_some_and(|acked| acked >= end) {
            match settled_since {
                Some((settled_end, at)) if settled_end == end => {
                    if at.elapsed() >= HAND_OVER_SETTLE {
                        tracing::warn!(slave = %request.slave_addr, log_end = end, waited_ms = started.elapsed().as_millis() as u64, "handed over: the slave holds this master's whole log");
                        return Ok(hand_over_answer(broker));
                    }
                }
                _ => settled_since = Some((end, Instant::now())),
            }
        }
        if Instant::now() >= deadline {
            broker.role.send_if_modified(|now| {
                let ours = now.refusing_writes.as_deref() == Some(reason.as_str());
                if ours {
                    now.refusing_writes = None;
                }
                ours
            });
            broker.topics_changed.notify_one();
            return Err(HandlerError::HandOverTimeout {
                slave: request.slave_addr,
                acked,
                end,
                timeout_ms: request.timeout_ms,
            });
        }
        tokio::time::sleep(HAND_OVER_POLL).await;
    }
}

fn hand_over_answer(broker: &Broker) -> Answer {
    Answer::Role(RoleResponse::HandOver(HandOverResponse {
        log_end: broker.store.end_position(),
        master_epoch: broker.store.master_epoch(),
    }))
}

/// Promote: this slave becomes the group's master with the next epoch, unless it holds less
/// than `min_log_end` and the request does not force it.
async fn promote(broker: &Arc<Broker>, request: Promote) -> Outcome {
    let now = broker.role_now();
    if now.role != Role::Slave {
        return Err(HandlerError::InvalidRequest(format!(
            "this broker is a master of group {} already",
            broker.config.group
        )));
    }
    let end = broker.store.end_position();
    if end < request.min_log_end && !request.force {
        return Err(HandlerError::InvalidRequest(format!(
            "this slave's log ends at {end}, {} bytes short of {}, which the group's master \
             acknowledged: promoting it would lose them. Let it catch up, promote another slave, \
             or force it (those bytes are lost)",
            request.min_log_end - end,
            request.min_log_end
        )));
    }
    let started = Instant::now();
    // The slave's task stops at this change; once `replica_writes` is taken, none of its
    // changes to the store comes after it.
    broker.role.send_modify(|now| {
        now.role = Role::Master;
        now.master = None;
        now.refusing_writes = Some("being promoted".into());
    });
    let writer = broker.clone();
    let begun = tokio::task::spawn_blocking(move || {
        let _stopped = writer
            .replica_writes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let epoch = (writer.store.epoch_history().last_epoch() + 1).max(request.min_epoch);
        writer.store.begin_epoch(epoch, true)?;
        if writer.config.replication == Replication::Sync {
            // What the promoted slave holds is what its group acknowledged (it was in sync, or
            // promotion was forced); its own slaves hold nothing of it yet.
            let end = writer.store.end_position();
            writer.store.require_replication(end);
            let holders = Holders {
                acknowledged: end,
                slaves: BTreeSet::new(),
            };
            writer.replicas.restore(holders, true);
        }
        Ok::<_, StorageError>((epoch, writer.store.end_position()))
    })
    .await
    .map_err(|error| HandlerError::Internal(error.to_string()))?;
    let (epoch, log_end) = match begun {
        Ok(begun) => begun,
        Err(error) => {
            // Its slave task has stopped: it stays a master that takes no writes (the old
            // master resumes; an operator looks at this broker's disk).
            let reason = format!("its promotion failed: {error}");
            tracing::error!(%reason, "this broker takes no writes");
            broker
                .role
                .send_modify(|now| now.refusing_writes = Some(reason.clone()));
            return Err(error.into());
        }
    };
    broker.role.send_modify(|now| now.refusing_writes = None);
    broker.topics_changed.notify_one();
    tokio::spawn(crate::watch_slaves(broker.clone()));
    if broker.config.replication == Replication::Sync {
        tokio::spawn(super::master::keep_holders(broker.clone()));
    }
    tracing::warn!(
        master_epoch = epoch,
        log_end,
        old_master = ?now.master,
        took_ms = started.elapsed().as_millis() as u64,
        "promoted: this broker is its group's master now and takes writes"
    );
    Ok(Answer::Role(RoleResponse::Promote(PromoteResponse {
        master_epoch: epoch,
        log_end,
    })))
}
