//! The JSON the NameServer speaks over HTTP (proto-spec.md §8): what brokers report in their
//! heartbeats, route answers, the cluster view, the topic list and errors. The NameServer, the
//! broker and the client all use these types, so the contract has one definition.

use serde::{Deserialize, Serialize};

use crate::limits::{
    MAX_ADDR_BYTES, MAX_GROUPS_PER_ROUTE, MAX_QUEUES_PER_TOPIC, MAX_SLAVES_PER_GROUP,
    MAX_TOPICS_PER_BROKER, MAX_TOPIC_NAME_BYTES,
};
use crate::role::Role;

/// Where brokers POST their [`Heartbeat`].
pub const HEARTBEAT_PATH: &str = "/v1/brokers/heartbeat";
/// Where a topic's [`TopicRoute`] is: `ROUTES_PATH_PREFIX` + topic name.
pub const ROUTES_PATH_PREFIX: &str = "/v1/routes/";
/// Where the [`ClusterView`] is.
pub const CLUSTER_PATH: &str = "/v1/cluster";
/// Where the [`TopicList`] is.
pub const TOPICS_PATH: &str = "/v1/topics";

/// How often a broker heartbeats unless the NameServer's reply says otherwise.
pub const HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 2_000;
/// How long the NameServer keeps a broker that stopped heartbeating.
pub const HEARTBEAT_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// The path of a topic's route. Topic names are ASCII letters, digits, `.`, `_` and `-`, so they
/// need no escaping.
pub fn route_path(topic: &str) -> String {
    format!("{ROUTES_PATH_PREFIX}{topic}")
}

/// What a broker reports every heartbeat interval: everything the NameServer knows about it.
/// Each heartbeat replaces the previous one whole (no deltas), so a lost heartbeat loses nothing.
/// Unknown fields are ignored, so that a newer broker can report more to an older NameServer.
///
/// ```
/// use smq_protocol::nameserver_api::Heartbeat;
/// use smq_protocol::Role;
///
/// let json = r#"{"cluster":"c1","group":"g1","role":"master","addr":"10.0.0.1:10911",
///     "data_version":7,"log_end_offset":4096,"topics":[{"name":"orders","queues":4}]}"#;
/// let heartbeat: Heartbeat = serde_json::from_str(json).unwrap();
/// assert_eq!(heartbeat.role, Role::Master);
/// assert_eq!(heartbeat.log_end_position, 4096);
/// // The JSON keeps its field name.
/// assert!(serde_json::to_string(&heartbeat).unwrap().contains(r#""log_end_offset":4096"#));
/// assert_eq!(heartbeat.topics[0].queues, 4);
/// assert_eq!(heartbeat.http_addr, None);
/// assert!(heartbeat.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The broker's `--cluster`.
    pub cluster: String,
    /// The broker's `--group`: a master and its slaves share it.
    pub group: String,
    pub role: Role,
    /// The broker's name in its group (`--name`); with cluster and group it identifies the
    /// broker: a heartbeat replaces the previous one of the same identity only. Absent: the
    /// broker is named by its `addr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `host:port` that clients and slaves connect to (the broker's `--listen`, or what it
    /// advertises). No two live brokers may claim the same address.
    pub addr: String,
    /// `host:port` of the broker's HTTP admin endpoint (`--http`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<String>,
    /// Slaves: the master they copy from (`--master`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_addr: Option<String>,
    /// Bumped by the broker on every topic change; the group's route comes from its live broker
    /// with the highest data version (the master on a tie).
    pub data_version: u64,
    /// The log position where the broker's commit log ends (a byte position, proto-spec.md §1):
    /// a slave's lag is its master's end minus its own. JSON: `log_end_offset`.
    #[serde(rename = "log_end_offset")]
    pub log_end_position: u64,
    /// Every topic the broker serves.
    #[serde(default)]
    pub topics: Vec<TopicQueues>,
    /// Slaves: ms since the slave last held everything its master had (`None`: not yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_lag_ms: Option<u64>,
    /// Masters: the addresses of the slaves in sync with it now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_sync_slaves: Vec<String>,
    /// Every consumer group's committed offset on this broker, with what it needs for lag
    /// (`GET /v1/groups`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumer_offsets: Vec<ConsumerOffset>,
    /// Masters: the epoch it writes in (or, before it began one, the epoch it claims); slaves:
    /// the last epoch of its history. 0: not known (an older broker). The NameServer keeps each
    /// group's highest: a master claim above it replaces the group's master, one below it (or
    /// equal, from another broker) is refused `stale_epoch` (proto-spec.md §8.2).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub master_epoch: u32,
    /// Masters: the end of what this master acknowledged that a slave must hold for no
    /// acknowledged write to be lost: the highest position a slave acknowledged under
    /// synchronous replication, its log end under asynchronous replication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_position: Option<u64>,
    /// Masters: true while it has not begun the epoch it names (a claim: it writes nothing
    /// until a NameServer accepts it); absent or false once it writes in that epoch (a
    /// renewal). A NameServer warming up lets a renewal beat a claim of the same epoch
    /// (proto-spec.md §8.2). Older brokers send none: their heartbeats count as renewals.
    #[serde(default, skip_serializing_if = "is_false")]
    pub claim: bool,
    /// The groups of its cluster that the last NameServer to answer this broker knew
    /// ([`HeartbeatReply::groups`]). A NameServer that has just started or taken over learns
    /// from them which groups have not re-registered yet ([`TopicRoute::missing_groups`]).
    /// Absent when empty (the broker has had no answer yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known_groups: Vec<String>,
}

fn is_zero_u32(value: &u32) -> bool {
    *value == 0
}

/// A consumer group's committed offset of one queue, as the broker holding the queue reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerOffset {
    pub consumer_group: String,
    pub topic: String,
    pub queue_id: u32,
    /// The next offset the consumer group reads.
    pub offset: u64,
    /// The highest owner epoch a commit of this queue carried.
    pub owner_epoch: u64,
    /// The queue's visible end: the offset the next message will get.
    pub end_offset: u64,
    /// When the broker stored the oldest message the group has not consumed (ms since the Unix
    /// epoch); `None` when it consumed everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_unconsumed_ms: Option<u64>,
}

/// One topic as a broker serves it.
///
/// ```
/// use smq_protocol::nameserver_api::TopicQueues;
///
/// // A topic is readable and writable unless the broker says otherwise.
/// let topic: TopicQueues = serde_json::from_str(r#"{"name":"orders","queues":8}"#).unwrap();
/// assert!(topic.readable && topic.writable);
/// let json = r#"{"name":"orders","queues":8,"writable":false}"#;
/// let draining: TopicQueues = serde_json::from_str(json).unwrap();
/// assert!(draining.readable && !draining.writable);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicQueues {
    pub name: String,
    /// The topic's id in the group's topics.json: a topic deleted and created again under the
    /// name has a new one (proto-spec.md 5.4). Absent (0): not known (a broker before ids).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub id: u64,
    /// Number of queues, numbered `0..queues`.
    pub queues: u32,
    /// Consumers may read (RocketMQ's PERM_READ).
    #[serde(default = "yes")]
    pub readable: bool,
    /// Producers may write (RocketMQ's PERM_WRITE); cleared to drain a group before maintenance.
    #[serde(default = "yes")]
    pub writable: bool,
}

fn yes() -> bool {
    true
}

/// A field of a request that is present and well-typed but makes no sense.
///
/// ```
/// use smq_protocol::nameserver_api::Heartbeat;
///
/// let json = r#"{"cluster":"c1","group":"g1","role":"master","addr":"10.0.0.1",
///     "data_version":1,"log_end_offset":0}"#;
/// let heartbeat: Heartbeat = serde_json::from_str(json).unwrap();
/// let error = heartbeat.validate().unwrap_err();
/// assert_eq!(error.field, "addr");
/// assert!(error.to_string().starts_with("field `addr` must be host:port"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}` {reason}")]
pub struct FieldError {
    /// Path of the field, e.g. `group` or `topics[2].queues`.
    pub field: String,
    pub reason: String,
}

impl FieldError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Checks a topic name: 1 to 249 ASCII letters, digits, `.`, `_` or `-`, neither `.` nor `..`.
pub fn check_topic_name(name: &str) -> Result<(), String> {
    if crate::limits::is_valid_topic_name(name) {
        Ok(())
    } else {
        Err(format!(
            "must be 1 to {MAX_TOPIC_NAME_BYTES} ASCII letters, digits, '.', '_' or '-' (and not '.' or '..'), not {name:?}"
        ))
    }
}

fn check_addr(field: &str, addr: &str) -> Result<(), FieldError> {
    if addr.len() > MAX_ADDR_BYTES {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_ADDR_BYTES} bytes, not {}", addr.len()),
        ));
    }
    let port_ok = addr
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty())
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .is_some_and(|port| port != 0);
    if port_ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("must be host:port with a non-zero port, not {addr:?}"),
        ))
    }
}

/// Longest cluster or broker group name, in bytes.
pub const MAX_NAME_BYTES: usize = 249;

fn check_name(field: &str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() || value.len() > MAX_NAME_BYTES || value.chars().any(char::is_control) {
        Err(FieldError::new(
            field,
            format!(
                "must be 1 to {MAX_NAME_BYTES} bytes without control characters, not {value:?}"
            ),
        ))
    } else {
        Ok(())
    }
}

impl Heartbeat {
    /// The heartbeat of the broker at `addr` with `role` in `cluster`/`group`, at data version 1,
    /// unnamed, with nothing else to tell (no topics, no log, epoch 0): a start for tests and
    /// tools to change.
    ///
    /// ```
    /// use smq_protocol::nameserver_api::Heartbeat;
    /// use smq_protocol::Role;
    ///
    /// let heartbeat = Heartbeat::new("c1", "g1", Role::Master, "10.0.0.1:10911");
    /// assert_eq!(heartbeat.broker_name(), "10.0.0.1:10911");
    /// assert!(heartbeat.validate().is_ok());
    /// ```
    pub fn new(cluster: &str, group: &str, role: Role, addr: &str) -> Heartbeat {
        Heartbeat {
            cluster: cluster.to_owned(),
            group: group.to_owned(),
            role,
            name: None,
            addr: addr.to_owned(),
            http_addr: None,
            master_addr: None,
            data_version: 1,
            log_end_position: 0,
            topics: Vec::new(),
            replication_lag_ms: None,
            in_sync_slaves: Vec::new(),
            consumer_offsets: Vec::new(),
            master_epoch: 0,
            acknowledged_position: None,
            claim: false,
            known_groups: Vec::new(),
        }
    }

    /// The broker's name within its cluster and group: `name`, else `addr`.
    pub fn broker_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.addr)
    }

    /// Checks what serde cannot: names, addresses, queue counts, duplicate topics.
    pub fn validate(&self) -> Result<(), FieldError> {
        check_name("cluster", &self.cluster)?;
        check_name("group", &self.group)?;
        if let Some(name) = &self.name {
            check_name("name", name)?;
        }
        check_addr("addr", &self.addr)?;
        if let Some(http_addr) = &self.http_addr {
            check_addr("http_addr", http_addr)?;
        }
        match (&self.master_addr, self.role) {
            (Some(master_addr), Role::Slave) => check_addr("master_addr", master_addr)?,
            (Some(_), Role::Master) => {
                return Err(FieldError::new(
                    "master_addr",
                    "is for slaves; a master must not send it",
                ))
            }
            (None, _) => {}
        }
        if self.topics.len() > MAX_TOPICS_PER_BROKER {
            return Err(FieldError::new(
                "topics",
                format!(
                    "lists {} topics; a broker may have at most {MAX_TOPICS_PER_BROKER}",
                    self.topics.len()
                ),
            ));
        }
        if self.known_groups.len() > MAX_GROUPS_PER_ROUTE {
            return Err(FieldError::new(
                "known_groups",
                format!(
                    "lists {} groups; at most {MAX_GROUPS_PER_ROUTE}",
                    self.known_groups.len()
                ),
            ));
        }
        for (i, group) in self.known_groups.iter().enumerate() {
            check_name(&format!("known_groups[{i}]"), group)?;
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, topic) in self.topics.iter().enumerate() {
            check_topic_name(&topic.name)
                .map_err(|r| FieldError::new(format!("topics[{i}].name"), r))?;
            check_queue_count(&format!("topics[{i}].queues"), topic.queues)?;
            if !names.insert(topic.name.as_str()) {
                return Err(FieldError::new(
                    format!("topics[{i}].name"),
                    format!("repeats topic {:?}", topic.name),
                ));
            }
        }
        Ok(())
    }
}

fn check_queue_count(field: &str, queues: u32) -> Result<(), FieldError> {
    if (1..=MAX_QUEUES_PER_TOPIC).contains(&queues) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("must be 1 to {MAX_QUEUES_PER_TOPIC}, not {queues}"),
        ))
    }
}

impl TopicRoute {
    /// Checks what a client allocates from before it does: at most [`MAX_GROUPS_PER_ROUTE`]
    /// groups of at most [`MAX_QUEUES_PER_TOPIC`] queues and [`MAX_SLAVES_PER_GROUP`] slaves,
    /// names and addresses within bounds. A route failing this comes from a broken or hostile
    /// NameServer.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.groups.len() > MAX_GROUPS_PER_ROUTE {
            return Err(FieldError::new(
                "groups",
                format!(
                    "lists {} broker groups; at most {MAX_GROUPS_PER_ROUTE}",
                    self.groups.len()
                ),
            ));
        }
        for (i, group) in self.groups.iter().enumerate() {
            check_name(&format!("groups[{i}].cluster"), &group.cluster)?;
            check_name(&format!("groups[{i}].group"), &group.group)?;
            check_queue_count(&format!("groups[{i}].queues"), group.queues)?;
            if let Some(master) = &group.master {
                check_addr(&format!("groups[{i}].master"), master)?;
            }
            if group.slaves.len() > MAX_SLAVES_PER_GROUP {
                return Err(FieldError::new(
                    format!("groups[{i}].slaves"),
                    format!(
                        "lists {} slaves; at most {MAX_SLAVES_PER_GROUP}",
                        group.slaves.len()
                    ),
                ));
            }
            for (j, slave) in group.slaves.iter().enumerate() {
                check_addr(&format!("groups[{i}].slaves[{j}]"), slave)?;
            }
        }
        if self.groups.len() + self.down_groups.len() > MAX_GROUPS_PER_ROUTE {
            return Err(FieldError::new(
                "down_groups",
                format!(
                    "lists {} broker groups with `groups`; at most {MAX_GROUPS_PER_ROUTE}",
                    self.groups.len() + self.down_groups.len()
                ),
            ));
        }
        for (i, group) in self.down_groups.iter().enumerate() {
            check_name(&format!("down_groups[{i}].cluster"), &group.cluster)?;
            check_name(&format!("down_groups[{i}].group"), &group.group)?;
            check_queue_count(&format!("down_groups[{i}].queues"), group.queues)?;
        }
        if self.missing_groups.len() > MAX_GROUPS_PER_ROUTE {
            return Err(FieldError::new(
                "missing_groups",
                format!(
                    "lists {} broker groups; at most {MAX_GROUPS_PER_ROUTE}",
                    self.missing_groups.len()
                ),
            ));
        }
        for (i, group) in self.missing_groups.iter().enumerate() {
            check_name(&format!("missing_groups[{i}].cluster"), &group.cluster)?;
            check_name(&format!("missing_groups[{i}].group"), &group.group)?;
        }
        Ok(())
    }
}

/// The NameServer's answer to a heartbeat.
///
/// ```
/// use smq_protocol::nameserver_api::HeartbeatReply;
///
/// let json = r#"{"heartbeat_timeout_ms":10000,"heartbeat_interval_ms":2000,
///     "master_addr":"10.0.0.1:10911"}"#;
/// let reply: HeartbeatReply = serde_json::from_str(json).unwrap();
/// assert_eq!(reply.heartbeat_timeout_ms / reply.heartbeat_interval_ms, 5);
/// assert_eq!(reply.master_addr.as_deref(), Some("10.0.0.1:10911"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// The broker leaves the routes if no heartbeat comes within this.
    pub heartbeat_timeout_ms: u64,
    /// How often the NameServer would like heartbeats (a fifth of the timeout, so that four may be lost).
    pub heartbeat_interval_ms: u64,
    /// The live master of the broker's group, if any (a slave can check its `--master`).
    pub master_addr: Option<String>,
    /// The group's highest master epoch the NameServer knows (0: none yet).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub group_epoch: u32,
    /// Masters: the group's live slaves (`None` from a NameServer that does not say). A master
    /// back from an outage waits for one of them to hand over the consumer offsets it took
    /// meanwhile before it answers FetchOffset; with none live there is nothing to wait for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slaves: Option<Vec<String>>,
    /// The groups of the broker's cluster this NameServer knows: live, down, and while it warms
    /// up those other brokers named ([`Heartbeat::known_groups`], which the broker sends back).
    /// Absent from an older NameServer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// `GET /v1/routes/{topic}`: where a topic's queues are. RocketMQ's TopicRouteData, flattened:
/// one entry per broker group that serves the topic.
///
/// ```
/// use smq_protocol::nameserver_api::{route_path, TopicRoute};
///
/// assert_eq!(route_path("orders"), "/v1/routes/orders");
/// let json = r#"{"topic":"orders","groups":[
///     {"cluster":"c1","group":"g1","master":"10.0.0.1:10911","slaves":[],
///      "queues":4,"readable":true,"writable":true},
///     {"cluster":"c1","group":"g2","master":null,"slaves":["10.0.0.4:10911"],
///      "queues":4,"readable":true,"writable":true}]}"#;
/// let route: TopicRoute = serde_json::from_str(json).unwrap();
/// // Produce only to groups with a live master.
/// let masters: Vec<&str> = route.groups.iter().filter_map(|g| g.master.as_deref()).collect();
/// assert_eq!(masters, ["10.0.0.1:10911"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRoute {
    pub topic: String,
    /// Sorted by cluster, then group.
    pub groups: Vec<GroupRoute>,
    /// True while the answering NameServer is warming up (it started, or became the one the SRV
    /// record names, less than one heartbeat timeout ago): groups whose brokers have not
    /// re-registered yet are missing, so the list may be incomplete. Absent when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub warming_up: bool,
    /// Broker groups that served the topic and have no live broker now (every member stopped
    /// heartbeating to this NameServer), with the queue count they last reported; sorted by
    /// cluster, then group. Nothing can be sent there or read from there, but a key's queue is
    /// chosen over these queues too, so that a client started while a group is down maps each
    /// key to the queue it had. Absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub down_groups: Vec<DownGroup>,
    /// Only while the NameServer warms up: groups that its brokers' heartbeats name as groups of
    /// their cluster ([`Heartbeat::known_groups`]) and that have not registered with it yet, so
    /// `groups` and `down_groups` may lack them. A topic's first lookup asks again until this is
    /// empty (up to `route_wait_ms`), so that a client started during a NameServer failover hashes
    /// keys over every group. Absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_groups: Vec<MissingGroup>,
}

/// A broker group that heartbeats named and that has not registered with this NameServer yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingGroup {
    pub cluster: String,
    pub group: String,
}

/// A broker group with no live broker, as its members last reported a topic.
///
/// ```
/// use smq_protocol::nameserver_api::TopicRoute;
///
/// let json = r#"{"topic":"orders","groups":[],
///     "down_groups":[{"cluster":"c1","group":"g2","queues":4}]}"#;
/// let route: TopicRoute = serde_json::from_str(json).unwrap();
/// assert_eq!(route.down_groups[0].queues, 4);
/// route.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownGroup {
    pub cluster: String,
    pub group: String,
    /// The topic's queues in this group, numbered `0..queues`.
    pub queues: u32,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// One broker group's share of a topic.
///
/// ```
/// use smq_protocol::nameserver_api::GroupRoute;
///
/// let group = GroupRoute {
///     cluster: "c1".into(),
///     group: "g2".into(),
///     master: None,
///     slaves: vec!["10.0.0.4:10911".into()],
///     queues: 4,
///     readable: true,
///     writable: true,
///     topic_id: 7,
/// };
/// // A group without a live master says so: consume from its slaves.
/// let json = serde_json::to_string(&group).unwrap();
/// assert!(json.contains(r#""master":null"#));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRoute {
    pub cluster: String,
    pub group: String,
    /// The master's `addr`; `null` while the group has no live master (produce to other groups,
    /// consume from the slaves).
    pub master: Option<String>,
    /// The live slaves' `addr`s, sorted.
    pub slaves: Vec<String>,
    /// The topic's queues in this group, numbered `0..queues`.
    pub queues: u32,
    pub readable: bool,
    pub writable: bool,
    /// The topic's id in this group (as its brokers' Metadata gives it): another id than a
    /// client saw before means the topic was deleted and created again. Absent (0): not known.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub topic_id: u64,
}

/// `GET /v1/cluster`: every live broker.
///
/// ```
/// use smq_protocol::nameserver_api::{ClusterView, CLUSTER_PATH};
/// use smq_protocol::Role;
///
/// assert_eq!(CLUSTER_PATH, "/v1/cluster");
/// let json = r#"{"brokers":[{"cluster":"c1","group":"g1","role":"slave",
///     "addr":"10.0.0.2:10911","http_addr":null,"master_addr":"10.0.0.1:10911",
///     "data_version":3,"log_end_offset":900,"topics":2,"last_heartbeat_ms_ago":150,
///     "expires_in_ms":9850,"replication_lag_bytes":100}]}"#;
/// let view: ClusterView = serde_json::from_str(json).unwrap();
/// let slaves = view.brokers.iter().filter(|b| b.role == Role::Slave).count();
/// assert_eq!(slaves, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// Sorted by cluster, group, role (master first), then address.
    pub brokers: Vec<BrokerInfo>,
    /// While the NameServer is warming up, how much longer (ms): brokers that have not
    /// re-registered yet are missing from `brokers`. Absent (0) once it is warm.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub warming_up_ms: u64,
    /// Per broker group the NameServer has heard of (kept after its brokers expired): its
    /// highest master epoch and what its master of that epoch last reported. Absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupEpoch>,
}

/// A broker group's highest master epoch and its master's last report (`GET /v1/cluster`):
/// what `smq group promote` checks a slave against when the master is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEpoch {
    pub cluster: String,
    pub group: String,
    /// The highest master epoch heard from the group (a master's, or a slave's history).
    pub epoch: u32,
    /// The broker that claimed it as master (`None`: only slaves have reported it).
    pub master_addr: Option<String>,
    /// Whether that master is live now.
    pub master_live: bool,
    /// The master's last `log_end_position` and `acknowledged_position`.
    pub master_log_end: Option<u64>,
    pub acknowledged_position: Option<u64>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// One live broker as the NameServer last heard of it.
///
/// ```
/// use smq_protocol::nameserver_api::BrokerInfo;
/// use smq_protocol::Role;
///
/// let json = r#"{"cluster":"c1","group":"g1","role":"slave","addr":"10.0.0.2:10911",
///     "http_addr":null,"master_addr":"10.0.0.1:10911","data_version":3,
///     "log_end_offset":900,"topics":2,"last_heartbeat_ms_ago":150,
///     "expires_in_ms":9850,"replication_lag_bytes":100}"#;
/// let broker: BrokerInfo = serde_json::from_str(json).unwrap();
/// assert_eq!(broker.role, Role::Slave);
/// assert_eq!(broker.master_addr.as_deref(), Some("10.0.0.1:10911"));
/// assert_eq!(broker.replication_lag_bytes, Some(100));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub cluster: String,
    pub group: String,
    /// The broker's name in its group (its `addr` when it sends none).
    #[serde(default)]
    pub name: String,
    pub role: Role,
    pub addr: String,
    pub http_addr: Option<String>,
    pub master_addr: Option<String>,
    pub data_version: u64,
    /// Where its commit log ended at its last heartbeat (a log position). JSON: `log_end_offset`.
    #[serde(rename = "log_end_offset")]
    pub log_end_position: u64,
    /// How many topics it serves.
    pub topics: u32,
    pub last_heartbeat_ms_ago: u64,
    /// It leaves the routes after this unless it heartbeats again.
    pub expires_in_ms: u64,
    /// Slaves with a live master: the master's `log_end_position` minus this slave's. Both come from
    /// heartbeats, so this is accurate to about one heartbeat interval of writes.
    pub replication_lag_bytes: Option<u64>,
    /// Slaves: ms since the slave last held everything its master had, from its heartbeat.
    #[serde(default)]
    pub replication_lag_ms: Option<u64>,
    /// Slaves with a live master: whether the master counts it in sync (caught up within the
    /// master's `replica_lag_time_max_ms`), from the master's heartbeat.
    #[serde(default)]
    pub in_sync: Option<bool>,
}

/// `GET /v1/topics`: every topic some live broker serves.
///
/// ```
/// use smq_protocol::nameserver_api::{TopicList, TOPICS_PATH};
///
/// assert_eq!(TOPICS_PATH, "/v1/topics");
/// let json = r#"{"topics":[{"name":"audit","queues":2,"groups":["g1"]},
///     {"name":"orders","queues":8,"groups":["g1","g2"]}]}"#;
/// let list: TopicList = serde_json::from_str(json).unwrap();
/// let names: Vec<&str> = list.topics.iter().map(|t| t.name.as_str()).collect();
/// assert_eq!(names, ["audit", "orders"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicList {
    /// Sorted by name.
    pub topics: Vec<TopicSummary>,
}

/// One topic across the cluster.
///
/// ```
/// use smq_protocol::nameserver_api::TopicSummary;
///
/// let groups = vec!["g1".to_owned(), "g2".to_owned()];
/// let topic = TopicSummary { name: "orders".into(), queues: 8, groups };
/// let json = serde_json::to_value(&topic).unwrap();
/// assert_eq!(json["groups"][1], "g2");
/// assert_eq!(json["queues"], 8);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSummary {
    pub name: String,
    /// Queues summed over the groups.
    pub queues: u32,
    /// The groups that serve it, sorted.
    pub groups: Vec<String>,
}

/// `GET /healthz`.
///
/// ```
/// use smq_protocol::nameserver_api::Health;
///
/// let json = r#"{"status":"ok","fenced":true,"brokers_live":3}"#;
/// let health: Health = serde_json::from_str(json).unwrap();
/// // A fenced standby is healthy but refuses routes: re-resolve the SRV record.
/// assert_eq!(health.status, "ok");
/// assert!(health.fenced);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `"ok"` while the process serves HTTP.
    pub status: String,
    /// True while `--srv` names another NameServer: routes are refused with 503. Health stays 200
    /// so that a standby is not taken out of service (DNS must be able to point at it).
    pub fenced: bool,
    pub brokers_live: u32,
}

/// What kind of error an [`ApiError`] is, for programs; the `error` text is for people.
///
/// ```
/// use smq_protocol::nameserver_api::ApiErrorCode;
///
/// let code: ApiErrorCode = serde_json::from_str(r#""topic_not_found""#).unwrap();
/// assert_eq!(code, ApiErrorCode::TopicNotFound);
/// // A code from a newer NameServer still parses.
/// let code: ApiErrorCode = serde_json::from_str(r#""rate_limited""#).unwrap();
/// assert_eq!(code, ApiErrorCode::Unknown);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiErrorCode {
    /// 400: the request is malformed; `field` names what is wrong when it is one field.
    BadRequest,
    /// 401: the request lacks the credential the NameServer requires: the cluster secret for
    /// broker heartbeats, the read token (or the cluster secret) for the rest.
    Unauthorized,
    /// 404: no live broker serves the topic.
    TopicNotFound,
    /// 404: no such route.
    NotFound,
    /// 405: the route exists with another method.
    MethodNotAllowed,
    /// 409: the heartbeat would change another live broker (its address, its master role, its
    /// identity at another address, or a second master in a group); nothing changed.
    Conflict,
    /// 409: a master heartbeat whose epoch is below the group's (or equal to another broker's
    /// claim): a newer master superseded it. The body's `group_epoch` and `master_addr` say
    /// which; the broker stops taking writes and follows that master.
    StaleEpoch,
    /// 413: the body is too large.
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 503: DNS no longer names this NameServer: re-resolve the SRV record and ask the one it names.
    Fenced,
    /// 503: the topic is unknown, but the NameServer started (or became the one the SRV record
    /// names) less than one heartbeat timeout ago, so its brokers may not have re-registered
    /// yet: retry after `Retry-After` seconds.
    WarmingUp,
    /// A code this client does not know (a newer NameServer).
    #[serde(other)]
    Unknown,
}

/// Every error the NameServer returns, with a 4xx/5xx status.
///
/// ```
/// use smq_protocol::nameserver_api::{ApiError, ApiErrorCode};
///
/// let body = r#"{"error":"field `topics[0].queues` must be at least 1",
///     "code":"bad_request","field":"topics[0].queues"}"#;
/// let error: ApiError = serde_json::from_str(body).unwrap();
/// assert_eq!(error.code, ApiErrorCode::BadRequest);
/// assert_eq!(error.field.as_deref(), Some("topics[0].queues"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What is wrong and what to do, for people.
    pub error: String,
    pub code: ApiErrorCode,
    /// For 400s about one field: its path, e.g. `group` or `topics[0].queues`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// `stale_epoch` only: the group's epoch, and its master's address (if it has a live one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_epoch: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_addr: Option<String>,
}

/// Where the [`ConsumerGroupList`] is; a consumer group's [`ConsumerGroupView`] is under it
/// ([`consumer_group_path`]), and its members heartbeat to [`member_heartbeat_path`].
pub const CONSUMER_GROUPS_PATH: &str = "/v1/groups";

/// `GET /v1/groups/{consumer_group}`.
pub fn consumer_group_path(consumer_group: &str) -> String {
    format!("{CONSUMER_GROUPS_PATH}/{consumer_group}")
}

/// `POST /v1/groups/{consumer_group}/heartbeat`: where members of a consumer group join,
/// heartbeat and leave.
pub fn member_heartbeat_path(consumer_group: &str) -> String {
    format!("{CONSUMER_GROUPS_PATH}/{consumer_group}/heartbeat")
}

/// Longest consumer group name, in bytes (the brokers' limit too).
pub const MAX_CONSUMER_GROUP_BYTES: usize = 249;
/// Shortest session timeout a member may ask for.
pub const SESSION_TIMEOUT_MS_MIN: u64 = 300;
/// Longest session timeout a member may ask for.
pub const SESSION_TIMEOUT_MS_MAX: u64 = 300_000;
/// Most queues a member heartbeat may list as held (a topic has at most 1,024 queues per broker
/// group).
pub const MAX_OWNED_QUEUES: usize = 65_536;
/// The session timeout members ask for by default.
pub const SESSION_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// One queue of a topic with its owner epoch: a queue a member holds or is given.
///
/// ```
/// use smq_protocol::nameserver_api::OwnedQueue;
///
/// let json = r#"{"broker_group":"g1","queue_id":3,"owner_epoch":7}"#;
/// let queue: OwnedQueue = serde_json::from_str(json).unwrap();
/// assert_eq!((queue.broker_group.as_str(), queue.queue_id, queue.owner_epoch), ("g1", 3, 7));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OwnedQueue {
    pub broker_group: String,
    pub queue_id: u32,
    /// Grows each time the queue changes owner; commits carry it (proto-spec.md §5.7).
    pub owner_epoch: u64,
}

/// What a member of a consumer group sends every heartbeat interval. The first heartbeat of a
/// member id joins; `leave` leaves at once. Each heartbeat replaces the last whole.
///
/// ```
/// use smq_protocol::nameserver_api::MemberHeartbeat;
///
/// let json = r#"{"member_id":"host-a-4711","topic":"clicks","session_timeout_ms":10000,
///     "owned":[{"broker_group":"g1","queue_id":0,"owner_epoch":3}]}"#;
/// let heartbeat: MemberHeartbeat = serde_json::from_str(json).unwrap();
/// assert!(!heartbeat.leave);
/// assert!(heartbeat.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberHeartbeat {
    /// Unique per member process (the client makes one: host, pid, a random part).
    pub member_id: String,
    /// The topic the member reads.
    pub topic: String,
    /// The member's queues go to others this long after its last heartbeat.
    pub session_timeout_ms: u64,
    /// The queues the member holds now (reads, or still finishes before it releases them),
    /// with the owner epochs it was given.
    #[serde(default)]
    pub owned: Vec<OwnedQueue>,
    /// The member stopped: it committed and released its queues; they move at once.
    #[serde(default)]
    pub leave: bool,
}

impl MemberHeartbeat {
    /// Checks what serde cannot: names and the session timeout.
    pub fn validate(&self) -> Result<(), FieldError> {
        check_name("member_id", &self.member_id)?;
        check_topic_name(&self.topic).map_err(|reason| FieldError::new("topic", reason))?;
        if !(SESSION_TIMEOUT_MS_MIN..=SESSION_TIMEOUT_MS_MAX).contains(&self.session_timeout_ms) {
            return Err(FieldError::new(
                "session_timeout_ms",
                format!(
                    "must be {SESSION_TIMEOUT_MS_MIN} to {SESSION_TIMEOUT_MS_MAX}, not {}",
                    self.session_timeout_ms
                ),
            ));
        }
        if self.owned.len() > MAX_OWNED_QUEUES {
            return Err(FieldError::new(
                "owned",
                format!(
                    "lists {} queues; a member holds at most {MAX_OWNED_QUEUES}",
                    self.owned.len()
                ),
            ));
        }
        for (i, queue) in self.owned.iter().enumerate() {
            check_name(&format!("owned[{i}].broker_group"), &queue.broker_group)?;
        }
        Ok(())
    }
}

/// Checks a consumer group name: 1 to 249 bytes without control characters or `/` (it is a
/// path segment of the HTTP API).
pub fn check_consumer_group_name(name: &str) -> Result<(), FieldError> {
    check_name("consumer_group", name)?;
    if name.contains('/') {
        return Err(FieldError::new("consumer_group", "must not contain `/`"));
    }
    Ok(())
}

/// The NameServer's answer to a [`MemberHeartbeat`]: the queues the member may read now. A queue
/// the member holds and that is not here is revoked: the member stops fetching it, commits what
/// the application received, and no longer lists it in `owned`; only then does the queue go to
/// another member.
///
/// ```
/// use smq_protocol::nameserver_api::MemberHeartbeatReply;
///
/// let json = r#"{"assigned":[{"broker_group":"g2","queue_id":1,"owner_epoch":4}],
///     "heartbeat_interval_ms":1000,"warming_up":false}"#;
/// let reply: MemberHeartbeatReply = serde_json::from_str(json).unwrap();
/// assert_eq!(reply.assigned[0].queue_id, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberHeartbeatReply {
    pub assigned: Vec<OwnedQueue>,
    /// When to heartbeat next.
    pub heartbeat_interval_ms: u64,
    /// The NameServer started or took over less than a heartbeat timeout ago: members keep the
    /// queues they hold, and no free queue is given out yet.
    pub warming_up: bool,
}

/// `GET /v1/groups`: every consumer group the NameServer knows, from live members and from the
/// offsets brokers report, one entry per (consumer group, topic).
///
/// ```
/// use smq_protocol::nameserver_api::ConsumerGroupList;
///
/// let json = r#"{"groups":[{"consumer_group":"billing","topic":"orders","members":2,
///     "queues":8,"lag_messages":120,"lag_seconds":3.5}]}"#;
/// let list: ConsumerGroupList = serde_json::from_str(json).unwrap();
/// assert_eq!(list.groups[0].lag_messages, 120);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumerGroupList {
    pub groups: Vec<ConsumerGroupSummary>,
}

/// One consumer group reading one topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumerGroupSummary {
    pub consumer_group: String,
    pub topic: String,
    /// Live members.
    pub members: u32,
    /// Queues of the topic.
    pub queues: u32,
    /// Messages not consumed yet, summed over the queues with a committed offset.
    pub lag_messages: u64,
    /// Age of the oldest message not consumed, over the queues (0 when none waits).
    pub lag_seconds: f64,
}

/// `GET /v1/groups/{consumer_group}`: its members, and per queue of each topic it reads: owner,
/// owner epoch, committed offset and lag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumerGroupView {
    pub consumer_group: String,
    pub topics: Vec<ConsumerGroupTopic>,
    /// While warming up, for how much longer members and brokers may be missing.
    pub warming_up_ms: u64,
}

/// One topic of a [`ConsumerGroupView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumerGroupTopic {
    pub topic: String,
    pub members: Vec<MemberView>,
    /// Every queue of the topic, and any queue a member holds or a broker reports an offset for.
    pub queues: Vec<QueueView>,
}

/// A live member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub member_id: String,
    pub session_timeout_ms: u64,
    /// Its queues go to others after this unless it heartbeats again.
    pub expires_in_ms: u64,
    /// The queues it holds (or was given since its last heartbeat).
    pub queues: Vec<OwnedQueue>,
}

/// One queue as the consumer group reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueView {
    pub broker_group: String,
    pub queue_id: u32,
    /// The member holding it, if any.
    pub owner: Option<String>,
    /// The highest owner epoch known (given out, or stored by the broker).
    pub owner_epoch: u64,
    /// From the broker's last heartbeat: the committed offset, if the group committed one.
    pub committed_offset: Option<u64>,
    /// From the broker's last heartbeat: the queue's end.
    pub end_offset: Option<u64>,
    /// `end_offset - committed_offset`.
    pub lag_messages: Option<u64>,
    /// Age of the oldest message not consumed, now; 0 when none waits.
    pub lag_seconds: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat() -> Heartbeat {
        Heartbeat {
            topics: vec![TopicQueues {
                name: "orders".into(),
                id: 3,
                queues: 4,
                readable: true,
                writable: true,
            }],
            ..Heartbeat::new("c1", "g1", Role::Master, "127.0.0.1:10911")
        }
    }

    #[test]
    fn heartbeat_json_round_trips_with_defaults_filled() {
        let text = r#"{"cluster":"c1","group":"g1","role":"master","addr":"127.0.0.1:10911",
            "data_version":1,"log_end_offset":0,"topics":[{"name":"orders","id":3,"queues":4}]}"#;
        let parsed: Heartbeat = serde_json::from_str(text).unwrap();
        assert_eq!(parsed, heartbeat());
        let again: Heartbeat =
            serde_json::from_str(&serde_json::to_string(&parsed).unwrap()).unwrap();
        assert_eq!(again, parsed);
    }

    #[test]
    fn heartbeat_validation_names_the_field() {
        let mut hb = heartbeat();
        hb.topics[0].queues = 0;
        assert_eq!(hb.validate().unwrap_err().field, "topics[0].queues");
        let mut hb = heartbeat();
        hb.addr = "127.0.0.1".into();
        assert_eq!(hb.validate().unwrap_err().field, "addr");
        let mut hb = heartbeat();
        hb.group = String::new();
        assert_eq!(hb.validate().unwrap_err().field, "group");
        let mut hb = heartbeat();
        hb.topics.push(hb.topics[0].clone());
        assert_eq!(hb.validate().unwrap_err().field, "topics[1].name");
        let mut hb = heartbeat();
        hb.master_addr = Some("127.0.0.1:10912".into());
        assert_eq!(hb.validate().unwrap_err().field, "master_addr");
        assert_eq!(heartbeat().validate(), Ok(()));
    }

    #[test]
    fn unknown_error_codes_from_newer_servers_still_parse() {
        let e: ApiError = serde_json::from_str(r#"{"error":"x","code":"something_new"}"#).unwrap();
        assert_eq!(e.code, ApiErrorCode::Unknown);
        assert_eq!(e.field, None);
    }

    #[test]
    fn topic_names_follow_the_broker_rules() {
        assert!(check_topic_name("orders-2024_v1.x").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(250)] {
            assert!(check_topic_name(bad).is_err(), "{bad:?}");
        }
    }
}
