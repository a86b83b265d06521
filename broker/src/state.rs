//! What every connection shares: the store, the topics with their long-poll signals and
//! counters, the consumer offsets, the metrics and the shutdown signal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use tokio::sync::{watch, Notify};

use crate::config::BrokerConfig;
use crate::metadata::offsets::Offsets;
use crate::metadata::reconciliation::{Reconciliation, RECONCILE_WAIT};
use crate::metadata::topics::{TopicConfig, TopicError, Topics};
use crate::metrics::{Metrics, TopicCounters};
use crate::replication::lease::WriteLease;
use crate::replication::master::Replicas;
use crate::replication::slave::SlaveStatus;
use crate::storage::Store;
use crate::visibility::PendingVisibility;
use smq_protocol::Role;

/// One topic as the request path sees it: one incarnation of the name (a topic deleted and
/// created again is a new `TopicState`, with a new id).
pub struct TopicState {
    pub name: String,
    /// The topic's id in topics.json (0 for a topic created before ids).
    pub id: u64,
    pub queue_count: u32,
    /// One per queue, signalled after every append to it: long-polling fetches wait on it.
    appended: Box<[Notify]>,
    pub counters: TopicCounters,
    /// False once the topic is being deleted. Held shared by every request's use of the topic
    /// (an append, a read, a commit), so that none of them acts on the topic after its deletion
    /// began: a request that found the topic before a delete and create again of its name
    /// would otherwise write into, or read from, the new topic's queues.
    live: RwLock<bool>,
}

impl TopicState {
    pub(crate) fn new(config: &TopicConfig) -> TopicState {
        TopicState {
            name: config.name.clone(),
            id: config.id,
            queue_count: config.queues,
            appended: (0..config.queues).map(|_| Notify::new()).collect(),
            counters: TopicCounters::default(),
            live: RwLock::new(true),
        }
    }

    /// The signal of a queue below `queue_count`.
    pub fn appended(&self, queue: u32) -> &Notify {
        &self.appended[queue as usize]
    }

    /// Runs `work` (no waiting in it: it holds off the topic's deletion) unless the topic is
    /// deleted; then `UnknownTopic`.
    pub fn while_live<T>(&self, work: impl FnOnce() -> T) -> Result<T, TopicError> {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        if !*live {
            return Err(TopicError::NotFound(self.name.clone()));
        }
        Ok(work())
    }

    /// Ends this incarnation once the requests using it are done, and wakes its long polls
    /// (they answer `UNKNOWN_TOPIC`).
    fn end(&self) {
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = false;
        for appended in &self.appended {
            appended.notify_waiters();
        }
    }
}

/// What this broker is in its group now. It starts as its configuration says; a master stops
/// taking writes when it learns that a slave holds what it lost or that a newer master exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleNow {
    pub role: Role,
    /// A slave's master.
    pub master: Option<String>,
    /// Why this master takes no writes (answered `NOT_MASTER` with it); `None`: it takes them.
    pub refusing_writes: Option<String>,
}

pub struct Broker {
    pub config: BrokerConfig,
    /// Watched by the tasks that depend on it (replication, registration).
    pub role: watch::Sender<RoleNow>,
    pub store: Store,
    /// The file; changed only from blocking threads (it fsyncs).
    topics_file: Mutex<Topics>,
    /// What requests read: replaced entry by entry after the file changed. Hashed, not
    /// ordered: every produced batch looks its topic up, and in a B-tree of 1,000 names that
    /// took ten string comparisons (callgrind: 450 instructions a message over 10,000 queues).
    topics: RwLock<HashMap<String, Arc<TopicState>>>,
    pub offsets: Offsets,
    /// On a master: whether its offsets include those its slave took while it was away
    /// (FetchOffset waits for it).
    pub offsets_reconciliation: Reconciliation,
    pub metrics: Metrics,
    /// Becomes true when the broker starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Fired after a topic is created or deleted: registration heartbeats at once.
    pub topics_changed: Notify,
    /// Fired after every append: slaves waiting for the master's log wake on it.
    pub log_appended: Notify,
    /// The queues whose last batches consumers cannot see yet, woken when they can.
    pub pending_visibility: PendingVisibility,
    /// On a master: its slaves and what they acknowledged.
    pub replicas: Replicas,
    /// On a slave: how far behind its master it is.
    pub slave_status: SlaveStatus,
    /// Held by the slave's task while it changes the store (appends, cuts, metadata), so that
    /// a role change can wait until it stopped (`replication::role_change`).
    pub replica_writes: Mutex<()>,
    /// On a master registered with a NameServer: its single-writer lease.
    pub lease: WriteLease,
    /// The address slaves and clients reach this broker at (`--advertise`, else the bound
    /// address), once it is bound.
    pub own_addr: OnceLock<String>,
    /// The groups of this cluster that the last NameServer to answer a heartbeat knew: every
    /// heartbeat (also a role change's) sends them back, so that a NameServer taking over
    /// learns which groups have yet to re-register (proto-spec.md section 8.2).
    pub nameserver_groups: Mutex<Vec<String>>,
}

impl Broker {
    pub fn new(
        config: BrokerConfig,
        store: Store,
        topics: Topics,
        offsets: Offsets,
        shutdown: watch::Receiver<bool>,
    ) -> Broker {
        let states = topics
            .list()
            .map(|topic| (topic.name.clone(), Arc::new(TopicState::new(topic))))
            .collect();
        let role = RoleNow {
            role: config.role,
            master: config.master.clone(),
            refusing_writes: None,
        };
        // A master may be back from an outage during which consumers committed on its slave;
        // only the NameServer's routes send consumers to a slave.
        let offsets_reconciliation = if config.role == Role::Master && config.discovery.is_some() {
            Reconciliation::pending(RECONCILE_WAIT)
        } else {
            Reconciliation::settled()
        };
        Broker {
            offsets_reconciliation,
            role: watch::Sender::new(role),
            replicas: Replicas::new(&config),
            slave_status: SlaveStatus::default(),
            replica_writes: Mutex::new(()),
            lease: WriteLease::default(),
            own_addr: OnceLock::new(),
            nameserver_groups: Mutex::new(Vec::new()),
            config,
            store,
            topics_file: Mutex::new(topics),
            topics: RwLock::new(states),
            offsets,
            metrics: Metrics::default(),
            shutdown,
            topics_changed: Notify::new(),
            log_appended: Notify::new(),
            pending_visibility: PendingVisibility::default(),
        }
    }

    /// What this broker is in its group now.
    pub fn role_now(&self) -> RoleNow {
        self.role.borrow().clone()
    }

    /// From now on this master answers writes `NOT_MASTER` with `reason` (logged once, as an
    /// error: an operator has to act) and its heartbeats show its queues as not writable.
    pub fn refuse_writes(&self, reason: String) {
        self.role.send_if_modified(|now| {
            if now.refusing_writes.is_some() {
                return false;
            }
            tracing::error!(%reason, "this master takes no more writes");
            now.refusing_writes = Some(reason);
            true
        });
        self.topics_changed.notify_one();
    }

    pub fn topic(&self, name: &str) -> Option<Arc<TopicState>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Every topic, in name order.
    pub fn topics(&self) -> Vec<Arc<TopicState>> {
        let mut topics: Vec<Arc<TopicState>> = self
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        topics.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        topics
    }

    /// The topics as topics.json has them (with permissions), and its data version.
    pub fn topic_configs(&self) -> (u64, Vec<TopicConfig>) {
        let file = self.topics_file.lock().unwrap_or_else(|p| p.into_inner());
        (file.data_version(), file.list().cloned().collect())
    }

    /// Creates a topic in topics.json, with a new id, then makes it visible. Blocks on the disk.
    pub fn create_topic(&self, name: &str, queues: u32) -> Result<(), TopicError> {
        let mut file = self.topics_file.lock().unwrap_or_else(|p| p.into_inner());
        if file.get(name).is_some() {
            return Err(TopicError::AlreadyExists(name.to_owned()));
        }
        // The store may still hold queues of a topic of this name whose deletion failed half
        // way (topics.json changed, then the disk refused the rest): the new topic starts empty.
        self.store.delete_topic(name)?;
        // Where the new topic begins: every batch of an earlier topic of the name lies below,
        // durably, so that no replica or recovery indexes one into the new topic.
        let start_position = self.store.flush_to_end()?;
        let config = file.create(name, queues, start_position)?;
        self.store.set_topic_start(name, start_position)?;
        self.prepare_queue_indexes(name, queues);
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(config.name.clone(), Arc::new(TopicState::new(&config)));
        self.topics_changed.notify_one();
        Ok(())
    }

    /// Makes the indexes of a new topic's queues (which begin at offset 0) now, together,
    /// rather than by each queue's first batch on the thread that appends it; if the disk
    /// refuses, each first batch makes its own. Blocks on the disk.
    fn prepare_queue_indexes(&self, topic: &str, queues: u32) {
        if let Err(error) = self.store.prepare_queues(topic, queues) {
            tracing::warn!(topic, %error, "could not make the new topic's queue indexes: each queue's first batch makes its own");
        }
    }

    /// Removes a topic from topics.json, waits for the requests using it and refuses later
    /// ones, forgets its consumer offsets and deletes its queues' indexes; its batches stay in
    /// the log until retention removes them. Blocks on the disk.
    pub fn delete_topic(&self, name: &str) -> Result<(), TopicError> {
        let mut file = self.topics_file.lock().unwrap_or_else(|p| p.into_inner());
        file.delete(name)?;
        let removed = self
            .topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some(topic) = removed {
            topic.end();
        }
        self.offsets.remove_topic(name);
        self.store.delete_topic(name)?;
        self.topics_changed.notify_one();
        Ok(())
    }

    /// The topics as topics.json has them, and its version: what a master sends its slaves.
    pub fn topics_json(&self) -> (u64, Vec<u8>) {
        let file = self.topics_file.lock().unwrap_or_else(|p| p.into_inner());
        (file.data_version(), file.to_json())
    }

    /// Makes this slave's topics its master's (`json`, from [`Broker::topics_json`]): one
    /// atomic write of topics.json, then the topics gone lose their offsets and indexes, and
    /// only then do the new ones (a topic created again under a name among them) appear.
    /// Blocks on the disk.
    pub fn replace_topics(&self, json: &[u8]) -> Result<(), TopicError> {
        let mut file = self.topics_file.lock().unwrap_or_else(|p| p.into_inner());
        let changes = file.replace_from_json(json)?;
        {
            let mut states = self.topics.write().unwrap_or_else(|p| p.into_inner());
            for topic in &changes.removed {
                if let Some(state) = states.remove(&topic.name) {
                    state.end();
                }
            }
        }
        for topic in &changes.removed {
            tracing::info!(topic = %topic.name, "the master deleted a topic: deleting it here");
            self.offsets.remove_topic(&topic.name);
            self.store.delete_topic(&topic.name)?;
        }
        // After the deletions: batches of a deleted topic that this slave copies from now on
        // (it lags its master) stay out of the topic created again under the name.
        for topic in &changes.added {
            self.store
                .set_topic_start(&topic.name, topic.start_position)?;
            // A topic that begins inside this slave's log has every batch here, so its queues
            // begin at offset 0, as on the master.
            if topic.start_position >= self.store.log_start_position() {
                self.prepare_queue_indexes(&topic.name, topic.queues);
            }
        }
        {
            let mut states = self.topics.write().unwrap_or_else(|p| p.into_inner());
            for topic in &changes.added {
                states.insert(topic.name.clone(), Arc::new(TopicState::new(topic)));
            }
        }
        if !changes.removed.is_empty() || !changes.added.is_empty() {
            self.topics_changed.notify_one();
        }
        Ok(())
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// Returns once the broker is shutting down (or its shutdown signal is gone).
pub async fn shutting_down(receiver: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send: drop it here, before the caller awaits again.
    let _ = receiver.wait_for(|stopping| *stopping).await.is_ok();
}
