//! The brokers the NameServer has heard from, each with the deadline of its next heartbeat, and
//! the routes, cluster view and topic list computed from the live ones. Pure: no clock, no IO;
//! the caller passes the time (milliseconds on a monotonic clock) to every call.
//!
//! A broker is known by its identity (cluster, group, name), not by the address it reports, and
//! while it is live no heartbeat of another identity can take its address, none can move it to
//! another address, and none demotes it from master: a heartbeat changes only its own broker.
//!
//! Each group's highest master epoch is kept (after its brokers expired too): a master claiming
//! a higher epoch replaces the group's master even while the old one is live (a promotion takes
//! effect so), and a master heartbeat with a lower epoch, or the same epoch as another broker's
//! claim, is refused as stale with the group's epoch and master, so that the old master learns
//! it was superseded. Brokers that send no epoch keep the older rule: a live master stays until
//! it stops heartbeating. While the NameServer warms up, a master's claim of an epoch it has not
//! begun waits (see [`Registry::warm_up_until`]).

use std::collections::{BTreeMap, BTreeSet};

use smq_protocol::limits::MAX_GROUPS_PER_ROUTE;
use smq_protocol::nameserver_api::{
    BrokerInfo, ClusterView, ConsumerOffset, DownGroup, GroupEpoch, GroupRoute, Heartbeat,
    HeartbeatReply, MissingGroup, TopicList, TopicQueues, TopicRoute, TopicSummary,
};
use smq_protocol::Role;

/// Why a heartbeat is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "address {addr} belongs to live broker {owner}; the heartbeat of {claimant} claiming it \
         is refused. Give each broker its own --advertise address, or wait {expires_in_ms} ms \
         for {owner} to expire if it is gone"
    )]
    AddressTaken {
        addr: String,
        owner: String,
        claimant: String,
        expires_in_ms: u64,
    },
    #[error(
        "broker {broker} is live at {addr}; a heartbeat naming it from {claimed_addr} is refused. \
         Give each broker its own --broker-name, or wait {expires_in_ms} ms for it to expire if \
         it moved"
    )]
    IdentityElsewhere {
        broker: String,
        addr: String,
        claimed_addr: String,
        expires_in_ms: u64,
    },
    #[error(
        "broker {broker} is the live master of its group; a heartbeat saying it is a slave is \
         refused: a master leaves that role only by stopping (its entry expires in \
         {expires_in_ms} ms)"
    )]
    MasterDemoted { broker: String, expires_in_ms: u64 },
    #[error(
        "broker group {cluster}/{group} already has a live master at {master}; the heartbeat of a \
         second master ({addr}) is refused. Stop one of them, or wait {expires_in_ms} ms for {master} \
         to expire if it is gone"
    )]
    SecondMaster {
        cluster: String,
        group: String,
        master: String,
        addr: String,
        expires_in_ms: u64,
    },
    #[error(
        "broker {broker} claims master epoch {epoch}, but group {cluster}/{group} is at epoch \
         {group_epoch} (master {}): a newer master superseded it; it must take no writes and \
         follow the group's master",
        master_addr.as_deref().unwrap_or("not live")
    )]
    StaleEpoch {
        broker: String,
        cluster: String,
        group: String,
        epoch: u32,
        group_epoch: u32,
        master_addr: Option<String>,
    },
    #[error(
        "broker {broker} claims master epoch {epoch} of group {cluster}/{group}, but this \
         NameServer is warming up: another master of the group may be writing in that epoch and \
         not have reported it yet, so a claim is decided only once every broker had a heartbeat \
         timeout to register; take no writes and retry in {retry_after_ms} ms"
    )]
    WarmingUp {
        broker: String,
        cluster: String,
        group: String,
        epoch: u32,
        retry_after_ms: u64,
    },
}

/// A broker's last heartbeat and when it came.
#[derive(Debug, Clone)]
struct Entry {
    heartbeat: Heartbeat,
    last_heartbeat_ms: u64,
}

/// A broker's identity: cluster, group and name (its address when it sends none).
type Identity = (String, String, String);

fn identity(heartbeat: &Heartbeat) -> Identity {
    (
        heartbeat.cluster.clone(),
        heartbeat.group.clone(),
        heartbeat.broker_name().to_owned(),
    )
}

/// `cluster/group/name`, for messages.
fn describe(heartbeat: &Heartbeat) -> String {
    format!(
        "{}/{}/{}",
        heartbeat.cluster,
        heartbeat.group,
        heartbeat.broker_name()
    )
}

/// Every broker the NameServer knows, by identity. A broker is live until
/// `last heartbeat + heartbeat_timeout_ms`; every answer counts live brokers only, whether or not
/// [`Registry::expire`] has run since.
#[derive(Debug)]
pub struct Registry {
    heartbeat_timeout_ms: u64,
    brokers: BTreeMap<Identity, Entry>,
    /// When the last heartbeat came that found no live broker: a NameServer that starts hearing
    /// from brokers is taking over (a start, a failover), and the others may follow for up to a
    /// heartbeat timeout.
    first_heartbeat_ms: Option<u64>,
    /// Each group's topics as its newest member (highest data version) last reported them,
    /// kept after every member expired: routes name a group that is down with its queues, so
    /// that clients hash keys over them too (a key keeps its queue while groups come and go).
    last_topics: BTreeMap<(String, String), LastTopics>,
    /// Each group's highest master epoch and its master's last report, kept after expiry.
    epochs: BTreeMap<(String, String), KnownEpoch>,
    /// Until when this NameServer warms up ([`Registry::warm_up_until`]): master claims wait.
    warm_up_end_ms: u64,
}

/// A group's highest master epoch, who claimed it, and that master's last report.
#[derive(Debug, Clone)]
struct KnownEpoch {
    epoch: u32,
    /// The master that claimed it; `None` while only slaves reported it.
    claimer: Option<Identity>,
    master_addr: Option<String>,
    master_log_end: Option<u64>,
    acknowledged_position: Option<u64>,
}

/// A group's topics as last reported.
#[derive(Debug)]
struct LastTopics {
    data_version: u64,
    topics: Vec<TopicQueues>,
}

/// The live brokers of one group: its master, if live, and the member whose topic configuration
/// counts (the highest data version; the master on a tie).
struct Group<'a> {
    master: Option<&'a Entry>,
    slaves: Vec<&'a Entry>,
    newest: &'a Entry,
}

impl<'a> Group<'a> {
    fn topic(&self, name: &str) -> Option<&'a TopicQueues> {
        self.newest.heartbeat.topics.iter().find(|t| t.name == name)
    }
}

impl Registry {
    pub fn new(heartbeat_timeout_ms: u64) -> Registry {
        Registry {
            heartbeat_timeout_ms,
            brokers: BTreeMap::new(),
            first_heartbeat_ms: None,
            last_topics: BTreeMap::new(),
            epochs: BTreeMap::new(),
            warm_up_end_ms: 0,
        }
    }

    /// Tells the registry that the NameServer warms up until `end_ms` (it started, or DNS came
    /// to name it, less than a heartbeat timeout before): its registrations may be incomplete.
    /// Until then a master's claim of an epoch it has not begun ([`Heartbeat::claim`]) is not
    /// decided but refused [`RegistryError::WarmingUp`] (the claimant retries), so that a master
    /// already writing in that epoch, or in a higher one, registers first: after a NameServer
    /// restart an old master restarting with the next epoch of its own history cannot take the
    /// group from the promoted master that writes in that same epoch. Heartbeats of masters that
    /// write in their epoch (renewals), claims of epoch 1 (a new group's first master) and
    /// slaves' heartbeats are decided at once.
    pub fn warm_up_until(&mut self, end_ms: u64) {
        self.warm_up_end_ms = end_ms;
    }

    pub fn heartbeat_timeout_ms(&self) -> u64 {
        self.heartbeat_timeout_ms
    }

    fn is_live(&self, entry: &Entry, now_ms: u64) -> bool {
        now_ms
            < entry
                .last_heartbeat_ms
                .saturating_add(self.heartbeat_timeout_ms)
    }

    fn expires_in_ms(&self, entry: &Entry, now_ms: u64) -> u64 {
        (entry.last_heartbeat_ms + self.heartbeat_timeout_ms).saturating_sub(now_ms)
    }

    fn live(&self, now_ms: u64) -> impl Iterator<Item = &Entry> {
        self.brokers
            .values()
            .filter(move |entry| self.is_live(entry, now_ms))
    }

    /// Records a (validated) heartbeat, replacing the previous one of the same identity. Returns
    /// the reply and whether the broker is new (it was unknown or had expired). Refused, changing
    /// nothing, when it would take another live broker's address or master role, move a live
    /// broker to another address, or demote a live master.
    pub fn heartbeat(
        &mut self,
        heartbeat: Heartbeat,
        now_ms: u64,
    ) -> Result<(HeartbeatReply, bool), RegistryError> {
        let id = identity(&heartbeat);
        let owner = self
            .live(now_ms)
            .find(|e| e.heartbeat.addr == heartbeat.addr && identity(&e.heartbeat) != id);
        if let Some(owner) = owner {
            return Err(RegistryError::AddressTaken {
                addr: heartbeat.addr.clone(),
                owner: describe(&owner.heartbeat),
                claimant: describe(&heartbeat),
                expires_in_ms: self.expires_in_ms(owner, now_ms),
            });
        }
        let previous = self.brokers.get(&id).filter(|e| self.is_live(e, now_ms));
        if let Some(previous) = previous {
            if previous.heartbeat.addr != heartbeat.addr {
                return Err(RegistryError::IdentityElsewhere {
                    broker: describe(&heartbeat),
                    addr: previous.heartbeat.addr.clone(),
                    claimed_addr: heartbeat.addr,
                    expires_in_ms: self.expires_in_ms(previous, now_ms),
                });
            }
            let superseded = self.superseded(&previous.heartbeat, &id);
            if previous.heartbeat.role == Role::Master
                && heartbeat.role == Role::Slave
                && !superseded
            {
                return Err(RegistryError::MasterDemoted {
                    broker: describe(&heartbeat),
                    expires_in_ms: self.expires_in_ms(previous, now_ms),
                });
            }
        }
        let group = (heartbeat.cluster.clone(), heartbeat.group.clone());
        let known = self.epochs.get(&group);
        if heartbeat.role == Role::Master && heartbeat.master_epoch > 0 {
            if let Some(known) = known {
                let claimed_by_another = known.claimer.as_ref().is_some_and(|c| *c != id);
                // A slave's history holds the epoch: a master began it and wrote in it, so a
                // master that has not begun it (a claim) is not that master.
                let begun_by_another =
                    claimed_by_another || (heartbeat.claim && known.claimer.is_none());
                if heartbeat.master_epoch < known.epoch
                    || (heartbeat.master_epoch == known.epoch && begun_by_another)
                {
                    return Err(RegistryError::StaleEpoch {
                        broker: describe(&heartbeat),
                        cluster: heartbeat.cluster,
                        group: heartbeat.group,
                        epoch: heartbeat.master_epoch,
                        group_epoch: known.epoch,
                        master_addr: self
                            .group_master(&group, now_ms)
                            .map(|m| m.heartbeat.addr.clone()),
                    });
                }
            }
            // Epoch 1 is a new group's first master: no promoted master writes in it, so it
            // need not wait (a cluster starting with its NameServer registers at once).
            if heartbeat.claim && heartbeat.master_epoch > 1 && now_ms < self.warm_up_end_ms {
                return Err(RegistryError::WarmingUp {
                    broker: describe(&heartbeat),
                    cluster: heartbeat.cluster,
                    group: heartbeat.group,
                    epoch: heartbeat.master_epoch,
                    retry_after_ms: self.warm_up_end_ms - now_ms,
                });
            }
        }
        let live_master = self.group_master(&group, now_ms);
        if let Some(master) = live_master {
            // A master with a higher epoch replaces one that reports epochs; two masters
            // without epochs cannot be told apart: the second is refused.
            let replaces = heartbeat.master_epoch > 0 && master.heartbeat.master_epoch > 0;
            if heartbeat.role == Role::Master && identity(&master.heartbeat) != id && !replaces {
                return Err(RegistryError::SecondMaster {
                    cluster: heartbeat.cluster,
                    group: heartbeat.group,
                    master: master.heartbeat.addr.clone(),
                    addr: heartbeat.addr,
                    expires_in_ms: self.expires_in_ms(master, now_ms),
                });
            }
        }
        self.record_epoch(&heartbeat, &id);
        // After the epoch it reports: a slave's higher epoch supersedes a stale master.
        let master_addr = match heartbeat.role {
            Role::Master => Some(heartbeat.addr.clone()),
            Role::Slave => self
                .group_master(&group, now_ms)
                .map(|m| m.heartbeat.addr.clone()),
        };
        let group_epoch = self.epochs.get(&group).map_or(0, |known| known.epoch);
        // A master back from an outage waits for a live slave's offsets (proto-spec.md §5.7).
        let slaves = (heartbeat.role == Role::Master).then(|| {
            self.live(now_ms)
                .filter(|e| {
                    e.heartbeat.role == Role::Slave
                        && e.heartbeat.cluster == group.0
                        && e.heartbeat.group == group.1
                })
                .map(|e| e.heartbeat.addr.clone())
                .collect()
        });
        if self.live(now_ms).next().is_none() {
            self.first_heartbeat_ms = Some(now_ms);
        }
        let is_new = self
            .brokers
            .get(&id)
            .is_none_or(|old| !self.is_live(old, now_ms));
        let last = self.last_topics.get(&group);
        if last.is_none_or(|last| last.data_version <= heartbeat.data_version) {
            let topics = LastTopics {
                data_version: heartbeat.data_version,
                topics: heartbeat.topics.clone(),
            };
            self.last_topics.insert(group, topics);
        }
        let cluster = heartbeat.cluster.clone();
        self.brokers.insert(
            id,
            Entry {
                heartbeat,
                last_heartbeat_ms: now_ms,
            },
        );
        let reply = HeartbeatReply {
            heartbeat_timeout_ms: self.heartbeat_timeout_ms,
            heartbeat_interval_ms: (self.heartbeat_timeout_ms / 5).max(1),
            master_addr,
            group_epoch,
            slaves,
            groups: self.groups_of_cluster(&cluster, now_ms),
        };
        Ok((reply, is_new))
    }

    /// Whether `master` (a master's heartbeat of identity `id`) is no longer its group's
    /// master by epoch: a higher epoch was claimed, or its epoch by another broker.
    fn superseded(&self, master: &Heartbeat, id: &Identity) -> bool {
        let group = (master.cluster.clone(), master.group.clone());
        self.epochs.get(&group).is_some_and(|known| {
            known.epoch > master.master_epoch
                || known.claimer.as_ref().is_some_and(|claimer| claimer != id)
        })
    }

    /// Raises the group's known epoch from an accepted heartbeat: a master's claim (with its
    /// report), or a slave's history naming a higher epoch than any claim heard.
    fn record_epoch(&mut self, heartbeat: &Heartbeat, id: &Identity) {
        if heartbeat.master_epoch == 0 {
            return;
        }
        let group = (heartbeat.cluster.clone(), heartbeat.group.clone());
        let known = self.epochs.get(&group);
        let known_epoch = known.map_or(0, |known| known.epoch);
        match heartbeat.role {
            Role::Master if heartbeat.master_epoch >= known_epoch => {
                let claim = KnownEpoch {
                    epoch: heartbeat.master_epoch,
                    claimer: Some(id.clone()),
                    master_addr: Some(heartbeat.addr.clone()),
                    master_log_end: Some(heartbeat.log_end_position),
                    acknowledged_position: heartbeat.acknowledged_position,
                };
                self.epochs.insert(group, claim);
            }
            Role::Slave if heartbeat.master_epoch > known_epoch => {
                let heard = KnownEpoch {
                    epoch: heartbeat.master_epoch,
                    claimer: None,
                    master_addr: None,
                    master_log_end: None,
                    acknowledged_position: None,
                };
                self.epochs.insert(group, heard);
            }
            _ => {}
        }
    }

    /// The group's live master: among its live brokers saying master and not superseded, the
    /// one with the highest epoch.
    fn group_master(&self, group: &(String, String), now_ms: u64) -> Option<&Entry> {
        self.live(now_ms)
            .filter(|e| {
                e.heartbeat.cluster == group.0
                    && e.heartbeat.group == group.1
                    && self.is_current_master(e)
            })
            .max_by_key(|e| e.heartbeat.master_epoch)
    }

    /// Whether `entry` is a master that no higher epoch (or its own epoch by another broker),
    /// from a master or a slave's history, superseded since: a superseded master still
    /// heartbeating until it learns so leaves the routes as soon as the NameServer knows.
    fn is_current_master(&self, entry: &Entry) -> bool {
        let heartbeat = &entry.heartbeat;
        heartbeat.role == Role::Master
            && (heartbeat.master_epoch == 0 || !self.superseded(heartbeat, &identity(heartbeat)))
    }

    /// Forgets the brokers whose deadline has passed and returns them (for logs and metrics).
    pub fn expire(&mut self, now_ms: u64) -> Vec<Heartbeat> {
        let timeout = self.heartbeat_timeout_ms;
        let (live, dead): (BTreeMap<_, _>, BTreeMap<_, _>) = std::mem::take(&mut self.brokers)
            .into_iter()
            .partition(|(_, e)| now_ms < e.last_heartbeat_ms.saturating_add(timeout));
        self.brokers = live;
        dead.into_values().map(|e| e.heartbeat).collect()
    }

    /// How much longer brokers may still be (re-)registering, in ms: a heartbeat timeout from
    /// the heartbeat that found no live broker; `heartbeat_timeout_ms` while none is live.
    pub fn taking_over_ms(&self, now_ms: u64) -> u64 {
        match self.first_heartbeat_ms {
            Some(first) if self.live(now_ms).next().is_some() => {
                (first + self.heartbeat_timeout_ms).saturating_sub(now_ms)
            }
            _ => self.heartbeat_timeout_ms,
        }
    }

    /// The groups of `cluster` this NameServer knows: every group that registered (live or down:
    /// `last_topics` keeps each), and while it warms up those its live brokers named
    /// ([`Heartbeat::known_groups`]).
    fn groups_of_cluster(&self, cluster: &str, now_ms: u64) -> Vec<String> {
        let mut groups: BTreeSet<&str> = self
            .last_topics
            .keys()
            .filter(|(c, _)| c == cluster)
            .map(|(_, group)| group.as_str())
            .collect();
        if now_ms < self.warm_up_end_ms {
            groups.extend(
                self.named_groups(now_ms)
                    .filter(|(c, _)| *c == cluster)
                    .map(|(_, group)| group),
            );
        }
        // A broker sends them back, and a heartbeat may name this many at most.
        groups
            .into_iter()
            .take(MAX_GROUPS_PER_ROUTE)
            .map(str::to_owned)
            .collect()
    }

    /// Every (cluster, group) that a live broker's heartbeat names as a group of its cluster.
    fn named_groups(&self, now_ms: u64) -> impl Iterator<Item = (&str, &str)> {
        self.live(now_ms).flat_map(|entry| {
            let heartbeat = &entry.heartbeat;
            heartbeat
                .known_groups
                .iter()
                .map(|group| (heartbeat.cluster.as_str(), group.as_str()))
        })
    }

    /// The groups that live brokers name ([`Heartbeat::known_groups`]) and that this NameServer
    /// does not know, live or down: while it warms up, routes may lack them
    /// ([`TopicRoute::missing_groups`]).
    pub fn missing_groups(&self, now_ms: u64) -> Vec<MissingGroup> {
        // Every group that registered, live or down.
        let registered: BTreeSet<(&str, &str)> = self
            .last_topics
            .keys()
            .map(|(c, g)| (c.as_str(), g.as_str()))
            .collect();
        let missing: BTreeSet<(&str, &str)> = self
            .named_groups(now_ms)
            .filter(|named| !registered.contains(named))
            .collect();
        // A client refuses a route that names more.
        missing
            .into_iter()
            .take(MAX_GROUPS_PER_ROUTE)
            .map(|(cluster, group)| MissingGroup {
                cluster: cluster.to_owned(),
                group: group.to_owned(),
            })
            .collect()
    }

    /// How many brokers are live.
    pub fn live_count(&self, now_ms: u64) -> usize {
        self.live(now_ms).count()
    }

    /// The live groups, by (cluster, group).
    fn groups(&self, now_ms: u64) -> BTreeMap<(&str, &str), Group<'_>> {
        let mut members: BTreeMap<(&str, &str), Vec<&Entry>> = BTreeMap::new();
        for entry in self.live(now_ms) {
            let h = &entry.heartbeat;
            members
                .entry((h.cluster.as_str(), h.group.as_str()))
                .or_default()
                .push(entry);
        }
        members
            .into_iter()
            .map(|(key, entries)| {
                let master = entries
                    .iter()
                    .copied()
                    .filter(|e| self.is_current_master(e))
                    .max_by_key(|e| e.heartbeat.master_epoch);
                let mut slaves: Vec<&Entry> = entries
                    .iter()
                    .copied()
                    .filter(|e| e.heartbeat.role == Role::Slave)
                    .collect();
                slaves.sort_by(|a, b| a.heartbeat.addr.cmp(&b.heartbeat.addr));
                let newest = entries
                    .iter()
                    .copied()
                    .max_by_key(|e| (e.heartbeat.data_version, e.heartbeat.role == Role::Master))
                    .expect("a group has at least one member");
                (
                    key,
                    Group {
                        master,
                        slaves,
                        newest,
                    },
                )
            })
            .collect()
    }

    /// Where `topic`'s queues are, per group, and the groups that served it and have no live
    /// broker now; `None` if no group, live or down, serves it.
    pub fn route(&self, topic: &str, now_ms: u64) -> Option<TopicRoute> {
        let live = self.groups(now_ms);
        let mut down_groups: Vec<DownGroup> = self
            .last_topics
            .iter()
            .filter(|((cluster, group), _)| !live.contains_key(&(cluster.as_str(), group.as_str())))
            .filter_map(|((cluster, group), last)| {
                let config = last.topics.iter().find(|t| t.name == topic)?;
                Some(DownGroup {
                    cluster: cluster.clone(),
                    group: group.clone(),
                    queues: config.queues,
                })
            })
            .collect();
        let groups: Vec<GroupRoute> = live
            .into_iter()
            .filter_map(|((cluster, group), members)| {
                let config = members.topic(topic)?;
                Some(GroupRoute {
                    cluster: cluster.to_owned(),
                    group: group.to_owned(),
                    master: members.master.map(|m| m.heartbeat.addr.clone()),
                    slaves: members
                        .slaves
                        .iter()
                        .map(|s| s.heartbeat.addr.clone())
                        .collect(),
                    queues: config.queues,
                    readable: config.readable,
                    writable: config.writable,
                    topic_id: config.id,
                })
            })
            .collect();
        // A client refuses a route of more groups than this (MAX_GROUPS_PER_ROUTE).
        down_groups.truncate(MAX_GROUPS_PER_ROUTE.saturating_sub(groups.len()));
        (!groups.is_empty() || !down_groups.is_empty()).then(|| TopicRoute {
            topic: topic.to_owned(),
            groups,
            warming_up: false,
            down_groups,
            missing_groups: Vec::new(),
        })
    }

    /// The consumer offsets the live brokers report, each with its broker group: per broker
    /// group and queue, the newest any live broker of the group reports (a higher owner epoch,
    /// else a higher offset; the master's on a tie), so that a master back from an outage
    /// during which its slave took the group's commits shows no offset going back before it
    /// took them from the slave.
    pub fn consumer_offsets(&self, now_ms: u64) -> Vec<(String, ConsumerOffset)> {
        let mut offsets = Vec::new();
        for ((_, group), members) in self.groups(now_ms) {
            let mut newest: BTreeMap<(&str, &str, u32), &ConsumerOffset> = BTreeMap::new();
            let reporters = members
                .master
                .into_iter()
                .chain(members.slaves.iter().copied());
            for offset in reporters.flat_map(|e| &e.heartbeat.consumer_offsets) {
                let key = (
                    offset.consumer_group.as_str(),
                    offset.topic.as_str(),
                    offset.queue_id,
                );
                let order = |o: &ConsumerOffset| (o.owner_epoch, o.offset);
                newest
                    .entry(key)
                    .and_modify(|kept| {
                        if order(offset) > order(kept) {
                            *kept = offset;
                        }
                    })
                    .or_insert(offset);
            }
            offsets.extend(
                newest
                    .into_values()
                    .map(|offset| (group.to_owned(), offset.clone())),
            );
        }
        offsets
    }

    /// Every live broker: cluster, group, role (master first), then address.
    pub fn cluster(&self, now_ms: u64) -> ClusterView {
        let mut brokers = Vec::new();
        for members in self.groups(now_ms).into_values() {
            for entry in members.master.iter().chain(members.slaves.iter()) {
                let h = &entry.heartbeat;
                let replication_lag_bytes = match (h.role, members.master) {
                    (Role::Slave, Some(master)) => Some(
                        master
                            .heartbeat
                            .log_end_position
                            .saturating_sub(h.log_end_position),
                    ),
                    _ => None,
                };
                let in_sync = match (h.role, members.master) {
                    (Role::Slave, Some(master)) => {
                        Some(master.heartbeat.in_sync_slaves.contains(&h.addr))
                    }
                    _ => None,
                };
                brokers.push(BrokerInfo {
                    cluster: h.cluster.clone(),
                    group: h.group.clone(),
                    name: h.broker_name().to_owned(),
                    role: h.role,
                    addr: h.addr.clone(),
                    http_addr: h.http_addr.clone(),
                    master_addr: h.master_addr.clone(),
                    data_version: h.data_version,
                    log_end_position: h.log_end_position,
                    topics: h.topics.len() as u32,
                    last_heartbeat_ms_ago: now_ms.saturating_sub(entry.last_heartbeat_ms),
                    expires_in_ms: self.expires_in_ms(entry, now_ms),
                    replication_lag_bytes,
                    replication_lag_ms: h.replication_lag_ms,
                    in_sync,
                });
            }
        }
        let groups = self
            .epochs
            .iter()
            .map(|((cluster, group), known)| GroupEpoch {
                cluster: cluster.clone(),
                group: group.clone(),
                epoch: known.epoch,
                master_addr: known.master_addr.clone(),
                master_live: known.claimer.as_ref().is_some_and(|claimer| {
                    self.brokers.get(claimer).is_some_and(|e| {
                        self.is_live(e, now_ms) && e.heartbeat.role == Role::Master
                    })
                }),
                master_log_end: known.master_log_end,
                acknowledged_position: known.acknowledged_position,
            })
            .collect();
        ClusterView {
            brokers,
            warming_up_ms: 0,
            groups,
        }
    }

    /// Every topic some live group serves, with its queues summed over the groups.
    pub fn topics(&self, now_ms: u64) -> TopicList {
        let mut by_name: BTreeMap<&str, TopicSummary> = BTreeMap::new();
        for ((_, group), members) in self.groups(now_ms) {
            for topic in &members.newest.heartbeat.topics {
                let summary = by_name
                    .entry(topic.name.as_str())
                    .or_insert_with(|| TopicSummary {
                        name: topic.name.clone(),
                        queues: 0,
                        groups: Vec::new(),
                    });
                summary.queues = summary.queues.saturating_add(topic.queues);
                summary.groups.push(group.to_owned());
            }
        }
        let mut topics: Vec<TopicSummary> = by_name.into_values().collect();
        for topic in &mut topics {
            topic.groups.sort();
        }
        TopicList { topics }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT_MS: u64 = 10_000;

    fn broker(group: &str, role: Role, addr: &str, topics: &[(&str, u32)]) -> Heartbeat {
        Heartbeat {
            topics: topics
                .iter()
                .map(|&(name, queues)| TopicQueues {
                    name: name.into(),
                    id: 0,
                    queues,
                    readable: true,
                    writable: true,
                })
                .collect(),
            ..Heartbeat::new("c1", group, role, addr)
        }
    }

    fn registry_with_two_groups() -> Registry {
        let mut r = Registry::new(TIMEOUT_MS);
        r.heartbeat(broker("g1", Role::Master, "m1:1", &[("orders", 4)]), 0)
            .unwrap();
        r.heartbeat(broker("g1", Role::Slave, "s1:1", &[("orders", 4)]), 0)
            .unwrap();
        r.heartbeat(
            broker("g2", Role::Master, "m2:1", &[("orders", 2), ("audit", 1)]),
            0,
        )
        .unwrap();
        r
    }

    #[test]
    fn route_lists_each_group_with_its_master_slaves_and_queues() {
        let r = registry_with_two_groups();
        let route = r.route("orders", 1).unwrap();
        assert_eq!(route.groups.len(), 2);
        let g1 = &route.groups[0];
        assert_eq!((g1.group.as_str(), g1.queues), ("g1", 4));
        assert_eq!(g1.master.as_deref(), Some("m1:1"));
        assert_eq!(g1.slaves, ["s1:1"]);
        assert_eq!(route.groups[1].master.as_deref(), Some("m2:1"));
        assert_eq!(r.route("audit", 1).unwrap().groups.len(), 1);
        assert_eq!(r.route("nope", 1), None);
    }

    /// Issue 13 point 9: each group's route carries the topic's id there, so a client sees a
    /// topic deleted and created again under its name as another topic.
    #[test]
    fn a_route_names_each_groups_topic_id() {
        let mut r = Registry::new(TIMEOUT_MS);
        let mut heartbeat = broker("g1", Role::Master, "m1:1", &[("orders", 4)]);
        heartbeat.topics[0].id = 5;
        r.heartbeat(heartbeat.clone(), 0).unwrap();
        assert_eq!(r.route("orders", 1).unwrap().groups[0].topic_id, 5);
        heartbeat.topics[0].id = 9;
        heartbeat.data_version += 2;
        r.heartbeat(heartbeat, 2).unwrap();
        let route = r.route("orders", 3).unwrap();
        assert_eq!(route.groups[0].topic_id, 9);
        let json = serde_json::to_value(&route).unwrap();
        assert_eq!(json["groups"][0]["topic_id"], 9);
    }

    #[test]
    fn a_silent_broker_leaves_the_routes_exactly_at_its_deadline() {
        let mut r = registry_with_two_groups();
        // g1's master goes on heartbeating; its slave and g2 stop at 0.
        r.heartbeat(broker("g1", Role::Master, "m1:1", &[("orders", 4)]), 6_000)
            .unwrap();
        assert_eq!(r.live_count(TIMEOUT_MS - 1), 3);
        assert_eq!(r.route("orders", TIMEOUT_MS - 1).unwrap().groups.len(), 2);
        // At the deadline, before any expire() call, answers already leave them out.
        let route = r.route("orders", TIMEOUT_MS).unwrap();
        assert_eq!(route.groups.len(), 1);
        assert!(route.groups[0].slaves.is_empty());
        let down = |route: TopicRoute| -> Vec<(String, u32)> {
            route
                .down_groups
                .into_iter()
                .map(|g| (g.group, g.queues))
                .collect()
        };
        assert_eq!(
            down(route),
            [("g2".to_owned(), 2)],
            "g2 is down, its queues known"
        );
        let audit = r.route("audit", TIMEOUT_MS).unwrap();
        assert!(audit.groups.is_empty());
        assert_eq!(down(audit), [("g2".to_owned(), 1)]);
        assert_eq!(r.route("nope", TIMEOUT_MS), None);
        let mut expired: Vec<String> = r.expire(TIMEOUT_MS).into_iter().map(|h| h.addr).collect();
        expired.sort();
        assert_eq!(expired, ["m2:1", "s1:1"]);
        assert_eq!(r.live_count(TIMEOUT_MS), 1);
        assert!(r.expire(15_999).is_empty());
        assert_eq!(r.expire(16_000).len(), 1);
        // g2 returns: live again; g1, expired meanwhile, is down.
        r.heartbeat(broker("g2", Role::Master, "m2:1", &[("orders", 2)]), 17_000)
            .unwrap();
        let route = r.route("orders", 17_000).unwrap();
        assert_eq!(route.groups.len(), 1);
        assert_eq!(route.groups[0].group, "g2");
        assert_eq!(down(route), [("g1".to_owned(), 4)]);
    }

    #[test]
    fn a_route_never_lists_more_groups_than_a_client_accepts() {
        let mut r = Registry::new(TIMEOUT_MS);
        for g in 0..MAX_GROUPS_PER_ROUTE + 5 {
            let addr = format!("m{g}:1");
            r.heartbeat(
                broker(&format!("g{g}"), Role::Master, &addr, &[("t", 1)]),
                0,
            )
            .unwrap();
        }
        r.heartbeat(
            broker("live", Role::Master, "live:1", &[("t", 1)]),
            TIMEOUT_MS,
        )
        .unwrap();
        let route = r.route("t", TIMEOUT_MS).unwrap();
        assert_eq!(route.groups.len(), 1);
        assert_eq!(route.down_groups.len(), MAX_GROUPS_PER_ROUTE - 1);
        route.validate().unwrap();
    }

    #[test]
    fn a_group_without_a_live_master_keeps_its_slaves_in_the_route() {
        let mut r = Registry::new(TIMEOUT_MS);
        r.heartbeat(broker("g1", Role::Master, "m1:1", &[("orders", 4)]), 0)
            .unwrap();
        r.heartbeat(broker("g1", Role::Slave, "s1:1", &[("orders", 4)]), 5_000)
            .unwrap();
        let route = r.route("orders", 12_000).unwrap();
        assert_eq!(route.groups[0].master, None);
        assert_eq!(route.groups[0].slaves, ["s1:1"]);
    }

    #[test]
    fn a_second_master_in_a_group_is_refused_until_the_first_expires() {
        let mut r = registry_with_two_groups();
        let error = r
            .heartbeat(broker("g1", Role::Master, "m1b:1", &[]), 4_000)
            .unwrap_err();
        assert!(matches!(
            &error,
            RegistryError::SecondMaster { master, expires_in_ms: 6_000, .. } if master == "m1:1"
        ));
        assert!(r
            .heartbeat(broker("g1", Role::Master, "m1b:1", &[]), TIMEOUT_MS)
            .is_ok());
    }

    fn named(mut heartbeat: Heartbeat, name: &str) -> Heartbeat {
        heartbeat.name = Some(name.into());
        heartbeat
    }

    #[test]
    fn a_heartbeat_changes_only_its_own_broker() {
        let mut r = registry_with_two_groups();
        let before = (r.cluster(1), r.route("orders", 1));
        let refused = [
            // Another identity claiming the master's address, as a slave (a demotion) or in
            // another group.
            named(broker("g1", Role::Slave, "m1:1", &[]), "intruder"),
            named(broker("g2", Role::Slave, "m1:1", &[]), "intruder"),
            // The master's identity (named by its address) from another address.
            named(broker("g1", Role::Master, "evil:1", &[]), "m1:1"),
            // The master's identity and address, saying it is a slave.
            broker("g1", Role::Slave, "m1:1", &[]),
            // A second master for the group.
            broker("g1", Role::Master, "evil:1", &[]),
        ];
        for heartbeat in refused {
            let what = format!("{heartbeat:?}");
            assert!(r.heartbeat(heartbeat, 2).is_err(), "{what}");
        }
        assert_eq!((r.cluster(1), r.route("orders", 1)), before);
        // The real master goes on heartbeating; another slave may join under its own identity.
        r.heartbeat(broker("g1", Role::Master, "m1:1", &[("orders", 4)]), 3)
            .unwrap();
        r.heartbeat(named(broker("g1", Role::Slave, "s2:1", &[]), "s2"), 3)
            .unwrap();
        assert_eq!(
            r.route("orders", 4).unwrap().groups[0].master.as_deref(),
            Some("m1:1")
        );
        // Once the master expired, its identity may come back elsewhere, and as a slave.
        let later = 3 + TIMEOUT_MS;
        r.heartbeat(broker("g1", Role::Slave, "m1:1", &[]), later)
            .unwrap();
    }

    fn with_epoch(mut heartbeat: Heartbeat, epoch: u32) -> Heartbeat {
        heartbeat.master_epoch = epoch;
        heartbeat
    }

    #[test]
    fn a_higher_epoch_replaces_a_live_master_and_the_old_one_learns_it_is_stale() {
        let mut r = Registry::new(TIMEOUT_MS);
        let mut old = with_epoch(broker("g1", Role::Master, "m1:1", &[("orders", 4)]), 3);
        old.acknowledged_position = Some(700);
        old.log_end_position = 750;
        r.heartbeat(old.clone(), 0).unwrap();
        r.heartbeat(with_epoch(broker("g1", Role::Slave, "s1:1", &[]), 3), 0)
            .unwrap();
        let cluster = r.cluster(1);
        assert_eq!(cluster.groups.len(), 1);
        let known = &cluster.groups[0];
        assert_eq!((known.epoch, known.master_live), (3, true));
        assert_eq!(known.acknowledged_position, Some(700));
        assert_eq!(known.master_log_end, Some(750));
        // The slave is promoted: epoch 4 replaces the live master at once.
        let (reply, _) = r
            .heartbeat(
                with_epoch(broker("g1", Role::Master, "s1:1", &[("orders", 4)]), 4),
                100,
            )
            .unwrap();
        assert_eq!(reply.group_epoch, 4);
        let route = r.route("orders", 101).unwrap();
        assert_eq!(route.groups[0].master.as_deref(), Some("s1:1"));
        // The old master's next heartbeat is refused as stale, naming the new master.
        let error = r.heartbeat(old.clone(), 200).unwrap_err();
        assert_eq!(
            error,
            RegistryError::StaleEpoch {
                broker: "c1/g1/m1:1".into(),
                cluster: "c1".into(),
                group: "g1".into(),
                epoch: 3,
                group_epoch: 4,
                master_addr: Some("s1:1".into()),
            }
        );
        // So is a restart of it claiming the next epoch of its own history (the same number).
        assert!(matches!(
            r.heartbeat(with_epoch(old.clone(), 4), 300),
            Err(RegistryError::StaleEpoch { group_epoch: 4, .. })
        ));
        // It may come back as a slave of the new master while its old entry is still live.
        let (reply, _) = r
            .heartbeat(with_epoch(broker("g1", Role::Slave, "m1:1", &[]), 3), 400)
            .unwrap();
        assert_eq!(reply.master_addr.as_deref(), Some("s1:1"));
        assert_eq!(reply.group_epoch, 4);
        // The group's epoch outlives its brokers: a master claiming an old epoch later is
        // still refused, and the last report is kept.
        let later = 400 + 2 * TIMEOUT_MS;
        assert!(r.heartbeat(old, later).is_err());
        let cluster = r.cluster(later);
        assert_eq!(
            (cluster.groups[0].epoch, cluster.groups[0].master_live),
            (4, false)
        );
    }

    fn claiming(mut heartbeat: Heartbeat, epoch: u32) -> Heartbeat {
        heartbeat.master_epoch = epoch;
        heartbeat.claim = true;
        heartbeat
    }

    fn naming(mut heartbeat: Heartbeat, groups: &[&str]) -> Heartbeat {
        heartbeat.known_groups = groups.iter().map(|g| g.to_string()).collect();
        heartbeat
    }

    fn missing(group: &str) -> MissingGroup {
        MissingGroup {
            cluster: "c1".into(),
            group: group.into(),
        }
    }

    /// A NameServer that took over learns from the first heartbeat which groups the cluster
    /// has: one that has not re-registered is missing until it does; one known as down is not.
    #[test]
    fn groups_that_heartbeats_name_are_missing_until_they_register() {
        let mut r = Registry::new(TIMEOUT_MS);
        r.warm_up_until(TIMEOUT_MS);
        let g1 = broker("g1", Role::Master, "m1:1", &[("orders", 4)]);
        let (reply, _) = r.heartbeat(naming(g1, &["g1", "g2", "g3"]), 0).unwrap();
        assert_eq!(
            reply.groups,
            ["g1", "g2", "g3"],
            "what it heard named, while warming"
        );
        assert_eq!(r.missing_groups(0), [missing("g2"), missing("g3")]);
        let g2 = broker("g2", Role::Master, "m2:1", &[("orders", 4)]);
        r.heartbeat(naming(g2, &["g1", "g2"]), 100).unwrap();
        assert_eq!(r.missing_groups(100), [missing("g3")]);
        // g3 registers and goes down again: known as down (its queues are in routes), not
        // missing.
        let g3 = broker("g3", Role::Master, "m3:1", &[("orders", 2)]);
        r.heartbeat(g3, 200).unwrap();
        r.expire(200 + TIMEOUT_MS);
        let g1 = broker("g1", Role::Master, "m1:1", &[("orders", 4)]);
        r.heartbeat(naming(g1, &["g1", "g2", "g3"]), 200 + TIMEOUT_MS)
            .unwrap();
        assert!(r.missing_groups(200 + TIMEOUT_MS).is_empty());
    }

    /// Brokers that never had an answer name nothing (a cluster starting with its NameServer):
    /// no group is missing. After the warm-up a reply names only groups it knows itself.
    #[test]
    fn without_names_nothing_is_missing_and_after_the_warm_up_replies_name_known_groups_only() {
        let mut r = Registry::new(TIMEOUT_MS);
        r.warm_up_until(TIMEOUT_MS);
        r.heartbeat(broker("g1", Role::Master, "m1:1", &[("orders", 4)]), 0)
            .unwrap();
        assert!(r.missing_groups(0).is_empty());
        let named = naming(broker("g1", Role::Master, "m1:1", &[]), &["g1", "gone"]);
        let (reply, _) = r.heartbeat(named, TIMEOUT_MS).unwrap();
        assert_eq!(
            reply.groups,
            ["g1"],
            "a named group that never registered is dropped"
        );
    }

    fn route_master(r: &Registry, now_ms: u64) -> Option<String> {
        r.route("orders", now_ms)?.groups.first()?.master.clone()
    }

    /// Issue 16 point 7: after a NameServer restart, an old master restarting with the next
    /// epoch of its own history (4) reaches it before the promoted master writing in epoch 4.
    /// Its claim waits out the warm-up; the writing master registers meanwhile and keeps the
    /// group; the claimant learns it is stale.
    #[test]
    fn during_the_warm_up_a_claim_loses_to_the_master_writing_in_that_epoch() {
        let mut r = Registry::new(TIMEOUT_MS);
        r.warm_up_until(TIMEOUT_MS);
        let old = claiming(broker("g1", Role::Master, "m1:1", &[("orders", 4)]), 4);
        assert_eq!(
            r.heartbeat(old.clone(), 100).unwrap_err(),
            RegistryError::WarmingUp {
                broker: "c1/g1/m1:1".into(),
                cluster: "c1".into(),
                group: "g1".into(),
                epoch: 4,
                retry_after_ms: TIMEOUT_MS - 100,
            }
        );
        assert_eq!(r.route("orders", 101), None, "the claim is not recorded");
        assert!(matches!(
            r.heartbeat(old.clone(), 1_000),
            Err(RegistryError::WarmingUp { .. })
        ));
        // The promoted master, writing in epoch 4 (a renewal), is decided at once.
        let promoted = with_epoch(broker("g1", Role::Master, "s1:1", &[("orders", 4)]), 4);
        let (reply, _) = r.heartbeat(promoted.clone(), 2_000).unwrap();
        assert_eq!(reply.group_epoch, 4);
        assert_eq!(route_master(&r, 2_001).as_deref(), Some("s1:1"));
        // The claim of the same epoch is stale now, in the warm-up and after it.
        for now_ms in [3_000, TIMEOUT_MS + 1] {
            r.heartbeat(promoted.clone(), now_ms).unwrap();
            assert!(matches!(
                r.heartbeat(old.clone(), now_ms),
                Err(RegistryError::StaleEpoch { group_epoch: 4, ref master_addr, .. })
                    if master_addr.as_deref() == Some("s1:1")
            ));
        }
        assert_eq!(route_master(&r, TIMEOUT_MS + 2).as_deref(), Some("s1:1"));
    }

    #[test]
    fn during_the_warm_up_a_stale_claim_first_loses_to_a_higher_epoch_later() {
        let mut r = Registry::new(TIMEOUT_MS);
        r.warm_up_until(TIMEOUT_MS);
        let old = claiming(broker("g1", Role::Master, "m1:1", &[("orders", 4)]), 4);
        assert!(matches!(
            r.heartbeat(old.clone(), 100),
            Err(RegistryError::WarmingUp { .. })
        ));
        let newer = with_epoch(broker("g1", Role::Master, "s1:1", &[("orders", 4)]), 5);
        r.heartbeat(newer.clone(), TIMEOUT_MS - 1).unwrap();
        r.heartbeat(newer, TIMEOUT_MS + 500).unwrap();
        assert!(matches!(
            r.heartbeat(old, TIMEOUT_MS + 500),
            Err(RegistryError::StaleEpoch {
                epoch: 4,
                group_epoch: 5,
                ..
            })
        ));
        assert_eq!(route_master(&r, TIMEOUT_MS + 501).as_deref(), Some("s1:1"));
    }

    #[test]
    fn a_claim_nobody_contests_is_decided_when_the_warm_up_ends() {
        let mut r = Registry::new(TIMEOUT_MS);
        r.warm_up_until(TIMEOUT_MS);
        let master = claiming(broker("g1", Role::Master, "m1:1", &[("orders", 4)]), 2);
        assert!(r.heartbeat(master.clone(), TIMEOUT_MS - 1).is_err());
        let (reply, is_new) = r.heartbeat(master, TIMEOUT_MS).unwrap();
        assert_eq!((reply.group_epoch, is_new), (2, true));
        assert_eq!(route_master(&r, TIMEOUT_MS).as_deref(), Some("m1:1"));
        // A warm NameServer decides a claim at once (a master restarting alone).
        let other = claiming(broker("g2", Role::Master, "m2:1", &[("orders", 2)]), 3);
        assert!(r.heartbeat(other, TIMEOUT_MS + 1).is_ok());
        // A new group's first master (epoch 1) is decided at once even while warming up.
        r.warm_up_until(2 * TIMEOUT_MS);
        let first = claiming(broker("g3", Role::Master, "m3:1", &[("orders", 1)]), 1);
        assert!(r.heartbeat(first, TIMEOUT_MS + 2).is_ok());
    }

    #[test]
    fn a_live_master_without_a_newer_epoch_cannot_be_demoted_or_doubled() {
        let mut r = Registry::new(TIMEOUT_MS);
        r.heartbeat(with_epoch(broker("g1", Role::Master, "m1:1", &[]), 2), 0)
            .unwrap();
        assert!(matches!(
            r.heartbeat(with_epoch(broker("g1", Role::Slave, "m1:1", &[]), 2), 1),
            Err(RegistryError::MasterDemoted { .. })
        ));
        // The same epoch claimed by another broker is stale, not a second master.
        assert!(matches!(
            r.heartbeat(with_epoch(broker("g1", Role::Master, "x:1", &[]), 2), 1),
            Err(RegistryError::StaleEpoch { .. })
        ));
        // A master that sends no epoch keeps the old rule.
        assert!(matches!(
            r.heartbeat(broker("g1", Role::Master, "y:1", &[]), 1),
            Err(RegistryError::SecondMaster { .. })
        ));
    }

    #[test]
    fn the_newest_data_version_decides_a_groups_topics() {
        let mut r = Registry::new(TIMEOUT_MS);
        let mut master = broker("g1", Role::Master, "m1:1", &[("orders", 8)]);
        master.data_version = 5;
        r.heartbeat(master, 0).unwrap();
        // The slave has not copied the change yet: the master's 8 queues count.
        let mut slave = broker("g1", Role::Slave, "s1:1", &[("orders", 4), ("old", 1)]);
        slave.data_version = 4;
        let (reply, is_new) = r.heartbeat(slave, 0).unwrap();
        assert!(is_new);
        assert_eq!(reply.master_addr.as_deref(), Some("m1:1"));
        assert_eq!(reply.heartbeat_interval_ms, 2_000);
        assert_eq!(r.route("orders", 1).unwrap().groups[0].queues, 8);
        assert_eq!(r.route("old", 1), None);
        let topics = r.topics(1);
        assert_eq!(topics.topics.len(), 1);
        assert_eq!(topics.topics[0].name, "orders");
    }

    #[test]
    fn cluster_view_orders_brokers_and_computes_slave_lag() {
        let mut r = Registry::new(TIMEOUT_MS);
        let mut slave = broker("g1", Role::Slave, "s1:1", &[]);
        slave.log_end_position = 700;
        r.heartbeat(slave, 0).unwrap();
        let mut master = broker("g1", Role::Master, "m1:1", &[]);
        master.log_end_position = 1_000;
        r.heartbeat(master, 1_000).unwrap();
        let view = r.cluster(3_000);
        let addrs: Vec<&str> = view.brokers.iter().map(|b| b.addr.as_str()).collect();
        assert_eq!(addrs, ["m1:1", "s1:1"]);
        assert_eq!(view.brokers[0].replication_lag_bytes, None);
        assert_eq!(view.brokers[1].replication_lag_bytes, Some(300));
        assert_eq!(view.brokers[1].last_heartbeat_ms_ago, 3_000);
        assert_eq!(view.brokers[1].expires_in_ms, 7_000);
    }

    #[test]
    fn topic_list_sums_queues_over_groups() {
        let r = registry_with_two_groups();
        let list = r.topics(1);
        let names: Vec<&str> = list.topics.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["audit", "orders"]);
        assert_eq!(list.topics[1].queues, 6);
        assert_eq!(list.topics[1].groups, ["g1", "g2"]);
    }

    /// A slave's history names the epoch a master writes in: a claim of that very epoch (by
    /// a master that has not begun it) is stale even when that master has not registered yet
    /// (it cannot reach this NameServer), while the master itself renews in it.
    #[test]
    fn a_claim_of_an_epoch_a_slave_holds_is_stale_and_the_master_writing_in_it_renews() {
        let mut r = Registry::new(TIMEOUT_MS);
        r.warm_up_until(TIMEOUT_MS);
        let slave = with_epoch(broker("g1", Role::Slave, "s2:1", &[("orders", 4)]), 4);
        r.heartbeat(slave, 100).unwrap();
        let old = claiming(broker("g1", Role::Master, "m1:1", &[("orders", 4)]), 4);
        for now_ms in [200, TIMEOUT_MS + 1] {
            assert_eq!(
                r.heartbeat(old.clone(), now_ms).unwrap_err(),
                RegistryError::StaleEpoch {
                    broker: "c1/g1/m1:1".into(),
                    cluster: "c1".into(),
                    group: "g1".into(),
                    epoch: 4,
                    group_epoch: 4,
                    master_addr: None,
                },
                "at {now_ms} ms"
            );
        }
        assert_eq!(route_master(&r, TIMEOUT_MS + 2), None);
        // The master writing in epoch 4 renews, in the warm-up or after it.
        let current = with_epoch(broker("g1", Role::Master, "m2:1", &[("orders", 4)]), 4);
        let (reply, _) = r.heartbeat(current, TIMEOUT_MS + 3).unwrap();
        assert_eq!(reply.group_epoch, 4);
        assert_eq!(route_master(&r, TIMEOUT_MS + 4).as_deref(), Some("m2:1"));
        // A claim of the next epoch (a promotion) is decided as before.
        let promoted = claiming(broker("g1", Role::Master, "s2:1", &[("orders", 4)]), 5);
        assert_eq!(
            r.heartbeat(promoted, TIMEOUT_MS + 5).unwrap().0.group_epoch,
            5
        );
    }

    /// After a NameServer restart, a stale master that still writes (epoch 3) renews at once;
    /// a slave of the current master reporting epoch 4 takes it out of the routes before the
    /// current master registers.
    #[test]
    fn a_stale_master_leaves_the_routes_once_a_slave_reports_a_higher_epoch() {
        let mut r = Registry::new(TIMEOUT_MS);
        r.warm_up_until(TIMEOUT_MS);
        let stale = with_epoch(broker("g1", Role::Master, "m1:1", &[("orders", 4)]), 3);
        r.heartbeat(stale.clone(), 100).unwrap();
        assert_eq!(route_master(&r, 101).as_deref(), Some("m1:1"));
        let slave = with_epoch(broker("g1", Role::Slave, "s2:1", &[("orders", 4)]), 4);
        let (reply, _) = r.heartbeat(slave, 200).unwrap();
        assert_eq!((reply.master_addr, reply.group_epoch), (None, 4));
        assert_eq!(
            route_master(&r, 201),
            None,
            "the stale master is out of the routes"
        );
        assert!(matches!(
            r.heartbeat(stale, 300),
            Err(RegistryError::StaleEpoch {
                epoch: 3,
                group_epoch: 4,
                master_addr: None,
                ..
            })
        ));
        let current = with_epoch(broker("g1", Role::Master, "m2:1", &[("orders", 4)]), 4);
        r.heartbeat(current, 400).unwrap();
        assert_eq!(route_master(&r, 401).as_deref(), Some("m2:1"));
    }
}
