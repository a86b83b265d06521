//! A consumer's membership in its consumer group, coordinated by the NameServer (proto-spec.md
//! §8.7): a task heartbeats every interval the NameServer asks for, reporting the queues this
//! member holds, and records the queues the reply gives it. Liveness does not depend on how
//! long the application takes between polls.
//!
//! The consumer applies what the task records: it reads a queue given to it with the queue's
//! owner epoch; a queue it holds that the NameServer no longer gives it is revoked: it stops
//! fetching it, commits what the application received, and only then [`Membership::release`]s
//! it, so that the next heartbeat stops listing it and the NameServer gives it to another member.
//! While no NameServer answers, the member keeps what it holds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::consumer::QueueKey;
use crate::nameserver_api::{MemberHeartbeat, OwnedQueue};
use crate::nameserver_client::NameServerClient;

/// What the heartbeat task and the consumer share.
#[derive(Debug, Default)]
struct Shared {
    /// The queues this member is responsible for, with their owner epochs: given by the
    /// NameServer and not yet released. Every heartbeat reports them.
    held: BTreeMap<QueueKey, u64>,
    /// The queues the last reply gave; `None` before the first reply.
    assigned: Option<BTreeSet<QueueKey>>,
    /// Bumped each time a reply is recorded.
    generation: u64,
}

/// What the consumer is to do now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Queues to read, with their owner epochs.
    pub read: BTreeMap<QueueKey, u64>,
    /// Queues to stop reading, commit and release.
    pub revoked: BTreeMap<QueueKey, u64>,
}

/// A member of a consumer group reading one topic.
#[derive(Debug)]
pub struct Membership {
    client: NameServerClient,
    consumer_group: String,
    topic: String,
    member_id: String,
    session_timeout_ms: u64,
    shared: Arc<Mutex<Shared>>,
    /// Fired after each recorded reply.
    changed: Arc<Notify>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Membership {
    /// Joins: starts the heartbeat task. The first heartbeat is sent at once.
    pub fn join(
        client: NameServerClient,
        consumer_group: &str,
        topic: &str,
        member_id: String,
        session_timeout_ms: u64,
    ) -> Membership {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let changed = Arc::new(Notify::new());
        let (stop, stopped) = watch::channel(false);
        let mut membership = Membership {
            client,
            consumer_group: consumer_group.to_owned(),
            topic: topic.to_owned(),
            member_id,
            session_timeout_ms,
            shared,
            changed,
            stop,
            task: None,
        };
        membership.task = Some(tokio::spawn(membership.heartbeats(stopped)));
        membership
    }

    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
        shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The heartbeat loop, as a future owning what it needs.
    fn heartbeats(
        &self,
        mut stopped: watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> {
        let client = self.client.clone();
        let shared = self.shared.clone();
        let changed = self.changed.clone();
        let consumer_group = self.consumer_group.clone();
        let topic = self.topic.clone();
        let member_id = self.member_id.clone();
        let session_timeout_ms = self.session_timeout_ms;
        async move {
            let mut interval = Duration::from_millis((session_timeout_ms / 5).clamp(50, 1_000));
            let mut failing = false;
            loop {
                let heartbeat = MemberHeartbeat {
                    member_id: member_id.clone(),
                    topic: topic.clone(),
                    session_timeout_ms,
                    owned: owned(&Membership::lock(&shared).held),
                    leave: false,
                };
                let result = tokio::select! {
                    _ = stopped.wait_for(|stop| *stop) => return,
                    result = client.member_heartbeat(&consumer_group, &heartbeat) => result,
                };
                match result {
                    Ok(reply) => {
                        if failing {
                            tracing::info!(%consumer_group, "a NameServer answers member heartbeats again");
                            failing = false;
                        }
                        interval = Duration::from_millis(reply.heartbeat_interval_ms.max(10));
                        let mut state = Membership::lock(&shared);
                        let mut assigned = BTreeSet::new();
                        for queue in reply.assigned {
                            let key = QueueKey {
                                broker_group: queue.broker_group.into(),
                                queue_id: queue.queue_id,
                            };
                            let epoch = state.held.entry(key.clone()).or_insert(0);
                            *epoch = (*epoch).max(queue.owner_epoch);
                            assigned.insert(key);
                        }
                        state.assigned = Some(assigned);
                        state.generation += 1;
                        drop(state);
                        changed.notify_waiters();
                    }
                    Err(error) => {
                        if !failing {
                            tracing::warn!(%consumer_group, %error, "no NameServer answers member heartbeats: keeping the queues held");
                            failing = true;
                        }
                    }
                }
                tokio::select! {
                    _ = stopped.wait_for(|stop| *stop) => return,
                    _ = tokio::time::sleep(interval) => {}
                }
            }
        }
    }

    /// The generation of the last reply recorded (0 before the first).
    pub fn generation(&self) -> u64 {
        Membership::lock(&self.shared).generation
    }

    /// Waits until the next reply is recorded or `timeout` passes.
    pub async fn changed(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.changed.notified()).await;
    }

    /// What to read and what to give up, as of the last reply (nothing before the first).
    pub fn assignment(&self) -> Assignment {
        let state = Membership::lock(&self.shared);
        let Some(assigned) = &state.assigned else {
            return Assignment::default();
        };
        let (read, revoked) = state
            .held
            .iter()
            .map(|(key, epoch)| (key.clone(), *epoch))
            .partition(|(key, _)| assigned.contains(key));
        Assignment { read, revoked }
    }

    /// The owner epoch this member holds `queue` with, if it holds it.
    pub fn epoch(&self, queue: &QueueKey) -> Option<u64> {
        Membership::lock(&self.shared).held.get(queue).copied()
    }

    /// Gives `queue` up: the next heartbeat no longer lists it.
    pub fn release(&self, queue: &QueueKey) {
        Membership::lock(&self.shared).held.remove(queue);
    }

    /// Stops heartbeating and tells the NameServer this member left (after the consumer
    /// committed): its queues go to the others at once.
    pub async fn leave(mut self) -> Result<(), crate::nameserver_client::NameServerError> {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let heartbeat = MemberHeartbeat {
            member_id: self.member_id.clone(),
            topic: self.topic.clone(),
            session_timeout_ms: self.session_timeout_ms,
            owned: Vec::new(),
            leave: true,
        };
        self.client
            .member_heartbeat(&self.consumer_group, &heartbeat)
            .await
            .map(|_| ())
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        // Without a leave, the member's queues move when its session expires.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn owned(held: &BTreeMap<QueueKey, u64>) -> Vec<OwnedQueue> {
    held.iter()
        .map(|(key, epoch)| OwnedQueue {
            broker_group: key.broker_group.to_string(),
            queue_id: key.queue_id,
            owner_epoch: *epoch,
        })
        .collect()
}

/// A member id unique to this process and consumer: `client_id-pid-nanos`.
pub fn new_member_id(client_id: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{client_id}-{}-{nanos:08x}", std::process::id())
}
