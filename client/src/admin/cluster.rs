//! Topic administration over the whole cluster, through the NameServer: create a topic on every
//! master (or those of some broker groups), delete it wherever it is, wait until the NameServer
//! routes it, and count the messages each queue stores.

use std::fmt;
use std::time::{Duration, Instant};

use super::{describe_topic_in_group, Admin};
use crate::connection::Connection;
use crate::error::Error;
use crate::nameserver_api::{BrokerInfo, TopicRoute};
use crate::nameserver_client::{NameServerClient, NameServerError};
use crate::protocol::{ErrorCode, Role};
use crate::ClientConfig;

/// How often [`Admin::wait_until_routed`] asks the NameServer again.
const ROUTE_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Why a cluster-wide [`Admin`] operation failed. Each variant says which broker group (and
/// broker) is concerned and what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The operation needs the NameServer and the config names none.
    #[error(
        "this needs the NameServer: set ClientConfig::nameserver (in the CLI --nameserver URL or \
         --srv NAME)"
    )]
    NoNameServer,
    /// The NameServer could not be asked, or refused (its error says which).
    #[error(transparent)]
    NameServer(#[from] NameServerError),
    /// The NameServer knows no live master at all.
    #[error(
        "the NameServer knows no live master: start brokers with --nameserver or --srv pointing \
         at it (see `smq cluster`)"
    )]
    NoMaster,
    /// A broker group that was asked for has no live master.
    #[error(
        "broker group `{group}` has no live master the NameServer knows of (see `smq cluster`)"
    )]
    GroupWithoutMaster { group: String },
    /// No master had the topic to delete.
    #[error("no broker group has topic `{topic}`")]
    NoGroupHasTopic { topic: String },
    /// Some masters failed: `done` lists the groups where the operation took effect (it is not
    /// undone there), `failed` each other group with its broker and error.
    #[error("failed in {} group(s): {}", .failed.len(), GroupFailure::list(.failed))]
    Partial {
        done: Vec<String>,
        failed: Vec<GroupFailure>,
    },
    /// The NameServer did not route the topic to every group within the time allowed.
    #[error(
        "the NameServer does not route topic {topic} to group(s) {} after {} ms",
        .missing.join(","),
        .waited.as_millis()
    )]
    NotRouted {
        topic: String,
        missing: Vec<String>,
        waited: Duration,
    },
    /// A broker could not be reached or refused the request.
    #[error(transparent)]
    Broker(#[from] Error),
}

/// One broker group where a cluster-wide operation failed.
#[derive(Debug, Clone)]
pub struct GroupFailure {
    pub group: String,
    /// The group's master, where the request went.
    pub broker: String,
    pub error: Error,
}

impl GroupFailure {
    fn list(failures: &[GroupFailure]) -> String {
        let described: Vec<String> = failures.iter().map(ToString::to_string).collect();
        described.join("; ")
    }
}

impl fmt::Display for GroupFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group {} ({}): {}", self.group, self.broker, self.error)
    }
}

/// The messages one queue of a topic stores (its latest offset minus its earliest) on one
/// broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStored {
    pub group: String,
    pub broker: String,
    pub queue_id: u32,
    pub messages: u64,
}

/// What a cluster-wide topic change does on each master.
#[derive(Clone, Copy)]
enum TopicChange {
    Create { queue_count: u32 },
    Delete,
}

impl Admin {
    /// Connects to the one broker at `broker` with `config`'s credential, TLS and timeouts
    /// (whatever `config.broker` and `config.nameserver` say).
    pub async fn connect_to(config: &ClientConfig, broker: &str) -> Result<Admin, Error> {
        config.validate()?;
        Ok(Admin {
            connection: Connection::connect(config.connection_options().to(broker)).await?,
        })
    }

    /// The live masters the NameServer of `config` knows, of every broker group or of `groups`
    /// (each of which must have one). While the NameServer is warming up, brokers that have not
    /// re-registered are missing from its view, so this waits (up to `config.route_wait_ms`)
    /// until it is warm, unless every group of `groups` is there already: a topic is never
    /// created or deleted on only the groups that re-registered so far.
    pub async fn masters(
        config: &ClientConfig,
        groups: &[String],
    ) -> Result<Vec<BrokerInfo>, ClusterError> {
        let client = nameserver(config)?;
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
                    reason: "brokers that have not re-registered with it yet are missing from \
                             its cluster view, and acting on the groups it knows now could miss \
                             some"
                        .to_owned(),
                });
            }
            Ok(view)
        };
        let wait = Duration::from_millis(config.route_wait_ms);
        let masters: Vec<BrokerInfo> = client
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
            return Err(ClusterError::GroupWithoutMaster {
                group: missing.clone(),
            });
        }
        if masters.is_empty() {
            return Err(ClusterError::NoMaster);
        }
        Ok(masters)
    }

    /// Creates `topic` with `queue_count` queues on the master of every broker group, or of
    /// `groups` if it names any; returns the groups it was created in. Brokers tell the
    /// NameServer at once, and [`Admin::wait_until_routed`] waits until it routes the topic.
    ///
    /// ```no_run
    /// # async fn example(config: smq_client::ClientConfig) -> Result<(), smq_client::admin::ClusterError> {
    /// use std::time::Duration;
    /// use smq_client::Admin;
    ///
    /// let groups = Admin::create_topic_on_masters(&config, "orders", 8, &[]).await?;
    /// Admin::wait_until_routed(&config, "orders", &groups, Duration::from_secs(10)).await?;
    /// let stored: u64 = Admin::stored_messages(&config, "orders").await?.iter().map(|q| q.messages).sum();
    /// # Ok(()) }
    /// ```
    ///
    /// Fails with [`ClusterError::NoMaster`] or [`ClusterError::GroupWithoutMaster`] before
    /// creating anything, and with [`ClusterError::Partial`] when some masters refused (the
    /// others keep the topic).
    pub async fn create_topic_on_masters(
        config: &ClientConfig,
        topic: &str,
        queue_count: u32,
        groups: &[String],
    ) -> Result<Vec<String>, ClusterError> {
        let masters = Admin::masters(config, groups).await?;
        let change = TopicChange::Create { queue_count };
        let (done, failed) = change_on_masters(config, &masters, topic, change).await;
        if failed.is_empty() {
            Ok(done)
        } else {
            Err(ClusterError::Partial { done, failed })
        }
    }

    /// Deletes `topic`, its queues and its consumer offsets on every master that has it;
    /// returns the groups it was deleted in. [`ClusterError::NoGroupHasTopic`] when no master
    /// had it, [`ClusterError::Partial`] when some failed.
    pub async fn delete_topic_on_masters(
        config: &ClientConfig,
        topic: &str,
    ) -> Result<Vec<String>, ClusterError> {
        let masters = Admin::masters(config, &[]).await?;
        let (done, failed) = change_on_masters(config, &masters, topic, TopicChange::Delete).await;
        match (done.is_empty(), failed.is_empty()) {
            (_, false) => Err(ClusterError::Partial { done, failed }),
            (true, true) => Err(ClusterError::NoGroupHasTopic {
                topic: topic.to_owned(),
            }),
            (false, true) => Ok(done),
        }
    }

    /// Waits up to `timeout` until the NameServer's route of `topic` lists every group of
    /// `groups`, and returns that route; [`ClusterError::NotRouted`] names the groups still
    /// missing then.
    pub async fn wait_until_routed(
        config: &ClientConfig,
        topic: &str,
        groups: &[String],
        timeout: Duration,
    ) -> Result<TopicRoute, ClusterError> {
        let client = nameserver(config)?;
        let started = Instant::now();
        let mut missing = groups.to_vec();
        loop {
            if let Ok(route) = client.route(topic).await {
                missing = groups.to_vec();
                missing.retain(|group| !route.groups.iter().any(|g| &g.group == group));
                if missing.is_empty() {
                    return Ok(route);
                }
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(ClusterError::NotRouted {
                    topic: topic.to_owned(),
                    missing,
                    waited,
                });
            }
            tokio::time::sleep(ROUTE_POLL_INTERVAL.min(timeout - waited)).await;
        }
    }

    /// The messages each queue of `topic` stores, in route order: on the master of every group
    /// the NameServer routes it to (waiting up to `config.route_wait_ms` for a NameServer that
    /// can answer; a group without a live master is left out), or without a NameServer on
    /// `config.broker`.
    pub async fn stored_messages(
        config: &ClientConfig,
        topic: &str,
    ) -> Result<Vec<QueueStored>, ClusterError> {
        let brokers: Vec<String> = match &config.nameserver {
            Some(client) => client
                .route_waiting(topic, Duration::from_millis(config.route_wait_ms))
                .await?
                .groups
                .into_iter()
                .filter_map(|group| group.master)
                .collect(),
            None => vec![config.broker.clone()],
        };
        let mut stored = Vec::new();
        for broker in brokers {
            let admin = Admin::connect_to(config, &broker).await?;
            let (group, held) = describe_topic_in_group(&admin.connection, topic).await?;
            stored.extend(held.queues.iter().map(|queue| QueueStored {
                group: group.clone(),
                broker: broker.clone(),
                queue_id: queue.queue_id,
                messages: queue.stored_messages(),
            }));
        }
        Ok(stored)
    }
}

/// The NameServer client of `config`.
fn nameserver(config: &ClientConfig) -> Result<&NameServerClient, ClusterError> {
    config.nameserver.as_ref().ok_or(ClusterError::NoNameServer)
}

/// Applies `change` to `topic` on each of `masters`: the groups where it took effect, and those
/// where it failed. Deleting means "wherever it is": a master without the topic is neither.
async fn change_on_masters(
    config: &ClientConfig,
    masters: &[BrokerInfo],
    topic: &str,
    change: TopicChange,
) -> (Vec<String>, Vec<GroupFailure>) {
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for master in masters {
        let result = match (change, Admin::connect_to(config, &master.addr).await) {
            (TopicChange::Create { queue_count }, Ok(admin)) => {
                admin.create_topic(topic, queue_count).await
            }
            (TopicChange::Delete, Ok(admin)) => admin.delete_topic(topic).await,
            (_, Err(error)) => Err(error),
        };
        match result {
            Ok(()) => done.push(master.group.clone()),
            Err(error)
                if matches!(change, TopicChange::Delete)
                    && error.code() == Some(ErrorCode::UnknownTopic) => {}
            Err(error) => failed.push(GroupFailure {
                group: master.group.clone(),
                broker: master.addr.clone(),
                error,
            }),
        }
    }
    (done, failed)
}
