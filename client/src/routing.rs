//! Routes: which broker holds each queue of a topic.
//!
//! A [`RouteCache`] asks the NameServer (`GET /v1/routes/{topic}`), or with `--broker` that one
//! broker, the first time a topic is used, and keeps the answer. That first lookup waits up to
//! `route_wait_ms` for a NameServer that can answer (one that is down, fenced or warming up
//! during a failover is retried, re-resolving DNS in between). It asks again in the background
//! every `route_refresh_ms` and at once after a routing error ([`RouteCache::invalidate`]), and
//! goes on handing out the last answer while no NameServer answers: only the first use of a
//! topic waits for the NameServer, which is never on the data path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::connection::{Connection, ConnectionOptions};
use crate::error::{Error, Result};
use crate::nameserver_api::{ApiErrorCode, TopicRoute};
use crate::nameserver_client::{NameServerClient, NameServerError};

/// How long a failed refresh waits before the next try (at most the refresh interval).
const RETRY_AFTER_FAILED_REFRESH: Duration = Duration::from_secs(1);

/// One queue of a topic and the broker that serves it.
///
/// ```
/// use smq_client::routing::QueueRoute;
///
/// let queue = QueueRoute { broker_group: "g1".into(), broker: "10.0.0.1:10911".into(), queue_id: 3 };
/// assert_eq!(queue.to_string(), "g1/3 at 10.0.0.1:10911");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueRoute {
    /// The broker group that holds the queue.
    pub broker_group: Arc<str>,
    /// `host:port` of the broker to talk to.
    pub broker: Arc<str>,
    /// The queue's number within its group.
    pub queue_id: u32,
}

impl std::fmt::Display for QueueRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} at {}",
            self.broker_group, self.queue_id, self.broker
        )
    }
}

/// A topic's queues as a client uses them, sorted by group, then queue.
///
/// ```
/// use smq_client::nameserver_api::{DownGroup, GroupRoute, TopicRoute};
/// use smq_client::routing::TopicRoutes;
///
/// let group = |name: &str, master: Option<&str>| GroupRoute {
///     cluster: "c1".into(),
///     group: name.into(),
///     master: master.map(str::to_owned),
///     slaves: vec!["10.0.0.9:10911".into()],
///     queues: 2,
///     readable: true,
///     writable: true,
///     topic_id: 0,
/// };
/// let route = TopicRoute {
///     topic: "orders".into(),
///     groups: vec![group("g1", Some("10.0.0.1:10911")), group("g2", None)],
///     warming_up: false,
///     down_groups: vec![DownGroup { cluster: "c1".into(), group: "g3".into(), queues: 2 }],
///     missing_groups: Vec::new(),
/// };
/// let routes = TopicRoutes::from_nameserver(&route);
/// // Producers write to groups with a live master; consumers read every group.
/// assert_eq!(routes.writable.len(), 2);
/// assert_eq!(routes.readable.len(), 4);
/// assert_eq!(&*routes.readable[2].broker, "10.0.0.9:10911");
/// // Keys hash over every group's queues, g3's too, though it is down.
/// assert_eq!(routes.all.len(), 6);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRoutes {
    pub topic: Arc<str>,
    /// Queues producers write: those of writable groups that have a live master, at the master.
    pub writable: Vec<QueueRoute>,
    /// Queues consumers read: those of readable groups, at the master, or at the first slave
    /// while the group has no master.
    pub readable: Vec<QueueRoute>,
    /// Every queue of every group that these routes, or earlier ones of this cache, named,
    /// writable now or not (at the master, else the first slave, else no broker: empty). A key
    /// hashes over this list, so that it keeps its queue while groups' masters die, return, are
    /// fenced or are missing from a NameServer that just took over.
    pub all: Vec<QueueRoute>,
    /// The NameServer that answered was warming up: groups may be missing.
    pub warming_up: bool,
}

impl TopicRoutes {
    /// The broker consumers read `queue` from and commit its offsets to: its group's master, or
    /// while the group has no live master its slave; `None` when no broker of it serves reads.
    pub fn reader_of(&self, broker_group: &str, queue_id: u32) -> Option<Arc<str>> {
        self.readable
            .iter()
            .find(|queue| &*queue.broker_group == broker_group && queue.queue_id == queue_id)
            .map(|queue| queue.broker.clone())
    }

    /// The routes in a NameServer's answer.
    pub fn from_nameserver(route: &TopicRoute) -> TopicRoutes {
        let mut writable = Vec::new();
        let mut readable = Vec::new();
        let mut all = Vec::new();
        for group in &route.groups {
            let name: Arc<str> = Arc::from(group.group.as_str());
            let queues = |broker: &str| {
                let broker: Arc<str> = Arc::from(broker);
                let name = name.clone();
                (0..group.queues).map(move |queue_id| QueueRoute {
                    broker_group: name.clone(),
                    broker: broker.clone(),
                    queue_id,
                })
            };
            if let (true, Some(master)) = (group.writable, &group.master) {
                writable.extend(queues(master));
            }
            let reader = group
                .master
                .as_deref()
                .or(group.slaves.first().map(|s| &s[..]));
            if let (true, Some(reader)) = (group.readable, reader) {
                readable.extend(queues(reader));
            }
            all.extend(queues(reader.unwrap_or("")));
        }
        // Groups with no live broker: no one to talk to, but keys hash over their queues too.
        for down in &route.down_groups {
            let name: Arc<str> = Arc::from(down.group.as_str());
            let nobody: Arc<str> = Arc::from("");
            all.extend((0..down.queues).map(|queue_id| QueueRoute {
                broker_group: name.clone(),
                broker: nobody.clone(),
                queue_id,
            }));
        }
        writable.sort();
        readable.sort();
        all.sort();
        TopicRoutes {
            topic: Arc::from(route.topic.as_str()),
            writable,
            readable,
            all,
            warming_up: route.warming_up,
        }
    }

    /// These routes, fetched to replace `cached`: while the NameServer that gave them is warming
    /// up (it just started or took over, and some groups' brokers may not have re-registered
    /// with it yet), the groups of `cached` they lack are kept as they were, so that a
    /// NameServer failover never shrinks a client's routes (and never moves a key's queue).
    /// Whatever the NameServer's state, `all` keeps every group `cached` had (a key never moves).
    pub fn keeping_groups_of(mut self, cached: &TopicRoutes) -> TopicRoutes {
        let named: std::collections::BTreeSet<Arc<str>> = self
            .all
            .iter()
            .map(|queue| queue.broker_group.clone())
            .collect();
        let unnamed = |queue: &&QueueRoute| !named.contains(&queue.broker_group);
        self.all.extend(cached.all.iter().filter(unnamed).cloned());
        self.all.sort();
        if !self.warming_up {
            return self;
        }
        let present: std::collections::BTreeSet<Arc<str>> = self
            .writable
            .iter()
            .chain(&self.readable)
            .map(|queue| queue.broker_group.clone())
            .collect();
        let missing = |queue: &&QueueRoute| !present.contains(&queue.broker_group);
        self.writable
            .extend(cached.writable.iter().filter(missing).cloned());
        self.readable
            .extend(cached.readable.iter().filter(missing).cloned());
        self.writable.sort();
        self.readable.sort();
        // As complete as what was cached.
        self.warming_up = cached.warming_up;
        self
    }

    /// One broker's queues of the topic: all of them written and read there.
    fn single_broker(topic: &str, group: &str, broker: &str, queue_count: u32) -> TopicRoutes {
        let (group, broker): (Arc<str>, Arc<str>) = (Arc::from(group), Arc::from(broker));
        let queues: Vec<QueueRoute> = (0..queue_count)
            .map(|queue_id| QueueRoute {
                broker_group: group.clone(),
                broker: broker.clone(),
                queue_id,
            })
            .collect();
        TopicRoutes {
            topic: Arc::from(topic),
            writable: queues.clone(),
            readable: queues.clone(),
            all: queues,
            warming_up: false,
        }
    }
}

/// Where routes come from.
#[derive(Debug, Clone)]
pub enum RouteSource {
    /// One broker (`--broker`): the topic's queues are the ones it holds.
    Broker(String),
    /// The NameServers a [`NameServerClient`] finds (`--nameserver`, `--srv`).
    NameServer(NameServerClient),
}

/// Each topic's routes, fetched once and refreshed in the background. Shared by the producer or
/// consumer that made it.
#[derive(Debug)]
pub struct RouteCache {
    source: RouteSource,
    /// For [`RouteSource::Broker`]: how to connect to the broker.
    connection: ConnectionOptions,
    refresh_every: Duration,
    /// How long a topic's first lookup waits for a NameServer.
    first_wait: Duration,
    topics: Mutex<HashMap<String, Cached>>,
}

#[derive(Debug)]
struct Cached {
    routes: Arc<TopicRoutes>,
    next_refresh: Instant,
    refreshing: bool,
}

impl RouteCache {
    /// A cache asking `source`, refreshing each topic every `refresh_every`; a topic's first
    /// lookup waits up to `first_wait` for a NameServer that can answer.
    pub fn new(
        source: RouteSource,
        connection: ConnectionOptions,
        refresh_every: Duration,
        first_wait: Duration,
    ) -> Arc<RouteCache> {
        Arc::new(RouteCache {
            source,
            connection,
            refresh_every,
            first_wait,
            topics: Mutex::new(HashMap::new()),
        })
    }

    /// The topic's routes: the cached ones (starting a background refresh when they are due), or,
    /// the first time, the answer of the NameServer or broker.
    pub async fn get(self: &Arc<Self>, topic: &str) -> Result<Arc<TopicRoutes>> {
        if let Some(routes) = self.cached(topic) {
            return Ok(routes);
        }
        let routes = Arc::new(self.fetch(topic, self.first_wait).await?);
        self.store(topic, routes.clone());
        Ok(routes)
    }

    /// Says that sending to or reading from the topic failed in a way new routes may fix (a
    /// broker gone, not the master any more): the next [`RouteCache::get`] refreshes them.
    pub fn invalidate(&self, topic: &str) {
        if let Some(cached) = self.lock().get_mut(topic) {
            cached.next_refresh = Instant::now();
        }
    }

    /// [`RouteCache::invalidate`], and starts the refresh now, in the background, rather than at
    /// the next [`RouteCache::get`]: for a caller that tries again after a delay and wants the
    /// new routes by then.
    pub fn refresh_now(self: &Arc<Self>, topic: &str) {
        self.invalidate(topic);
        let _ = self.cached(topic);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cached(self: &Arc<Self>, topic: &str) -> Option<Arc<TopicRoutes>> {
        let mut topics = self.lock();
        let cached = topics.get_mut(topic)?;
        if !cached.refreshing && Instant::now() >= cached.next_refresh {
            cached.refreshing = true;
            tokio::spawn(self.clone().refresh(topic.to_owned()));
        }
        Some(cached.routes.clone())
    }

    fn store(&self, topic: &str, routes: Arc<TopicRoutes>) {
        self.lock().insert(
            topic.to_owned(),
            Cached {
                routes,
                next_refresh: Instant::now() + self.refresh_every,
                refreshing: false,
            },
        );
    }

    async fn refresh(self: Arc<Self>, topic: String) {
        let fetched = self.fetch(&topic, Duration::ZERO).await;
        let mut topics = self.lock();
        let Some(cached) = topics.get_mut(&topic) else {
            return;
        };
        cached.refreshing = false;
        match fetched {
            Ok(routes) => {
                let routes = routes.keeping_groups_of(&cached.routes);
                if *cached.routes != routes {
                    tracing::info!(%topic, "the topic's routes changed");
                    cached.routes = Arc::new(routes);
                }
                cached.next_refresh = Instant::now() + self.refresh_every;
            }
            Err(error) => {
                tracing::warn!(%topic, %error, "cannot refresh routes; going on with the cached ones");
                cached.next_refresh =
                    Instant::now() + self.refresh_every.min(RETRY_AFTER_FAILED_REFRESH);
            }
        }
    }

    /// The topic's routes, trying again for up to `wait` while no NameServer can answer.
    async fn fetch(&self, topic: &str, wait: Duration) -> Result<TopicRoutes> {
        match &self.source {
            RouteSource::Broker(broker) => self.fetch_from_broker(broker, topic).await,
            RouteSource::NameServer(client) => match client.route_waiting(topic, wait).await {
                Ok(route) => Ok(TopicRoutes::from_nameserver(&route)),
                Err(error) => Err(no_route(topic, error)),
            },
        }
    }

    async fn fetch_from_broker(&self, broker: &str, topic: &str) -> Result<TopicRoutes> {
        let connection = Connection::connect(self.connection.to(broker)).await?;
        let (group, held) = crate::admin::describe_topic_in_group(&connection, topic).await?;
        Ok(TopicRoutes::single_broker(
            topic,
            &group,
            broker,
            held.queues.len() as u32,
        ))
    }
}

/// The client's error for a NameServer that gave no route.
fn no_route(topic: &str, error: NameServerError) -> Error {
    // A 404 already says how to create the topic.
    let reason = match error.code() {
        Some(ApiErrorCode::TopicNotFound) => error.to_string(),
        _ => format!("{error} (and no route is cached)"),
    };
    Error::NoRoute {
        topic: topic.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nameserver_api::GroupRoute;

    fn group(name: &str, master: Option<&str>, readable: bool, writable: bool) -> GroupRoute {
        GroupRoute {
            cluster: "c".into(),
            group: name.into(),
            master: master.map(str::to_owned),
            slaves: Vec::new(),
            queues: 2,
            readable,
            writable,
            topic_id: 0,
        }
    }

    #[test]
    fn permissions_and_missing_masters_decide_where_clients_go() {
        let route = TopicRoute {
            topic: "t".into(),
            groups: vec![
                group("g1", Some("a:1"), true, true),
                group("g2", Some("b:1"), true, false),
                group("g3", Some("c:1"), false, true),
                group("g4", None, true, true),
            ],
            warming_up: false,
            down_groups: vec![crate::nameserver_api::DownGroup {
                cluster: "c".into(),
                group: "g5".into(),
                queues: 2,
            }],
            missing_groups: Vec::new(),
        };
        let routes = TopicRoutes::from_nameserver(&route);
        let every: Vec<String> = routes.all.iter().map(|q| q.to_string()).collect();
        assert_eq!(
            every.len(),
            10,
            "keys hash over every group's queues, down ones too: {every:?}"
        );
        assert_eq!(every[8], "g5/0 at ", "a group that is down has no broker");
        assert_eq!(
            every[6], "g4/0 at ",
            "a group without a live master has no broker"
        );
        let writers: Vec<String> = routes.writable.iter().map(|q| q.to_string()).collect();
        assert_eq!(
            writers,
            ["g1/0 at a:1", "g1/1 at a:1", "g3/0 at c:1", "g3/1 at c:1"]
        );
        let readers: Vec<String> = routes.readable.iter().map(|q| q.to_string()).collect();
        assert_eq!(
            readers,
            ["g1/0 at a:1", "g1/1 at a:1", "g2/0 at b:1", "g2/1 at b:1"]
        );
        assert_eq!(routes.reader_of("g2", 1).as_deref(), Some("b:1"));
        assert_eq!(routes.reader_of("g2", 2), None, "no such queue");
        assert_eq!(routes.reader_of("g3", 0), None, "not readable");
    }

    #[test]
    fn a_group_without_a_live_master_is_read_from_its_first_slave() {
        let mut slaves_only = group("g1", None, true, true);
        slaves_only.slaves = vec!["s:1".into(), "s:2".into()];
        let route = TopicRoute {
            topic: "t".into(),
            groups: vec![slaves_only],
            warming_up: false,
            down_groups: Vec::new(),
            missing_groups: Vec::new(),
        };
        let routes = TopicRoutes::from_nameserver(&route);
        assert!(routes.writable.is_empty());
        assert_eq!(routes.reader_of("g1", 1).as_deref(), Some("s:1"));
    }
}

#[cfg(test)]
mod failover_tests {
    use super::*;
    use crate::nameserver_api::GroupRoute;

    fn route(groups: &[&str], warming_up: bool) -> TopicRoutes {
        let groups = groups
            .iter()
            .map(|name| GroupRoute {
                cluster: "c".into(),
                group: (*name).into(),
                master: Some(format!("{name}:1")),
                slaves: Vec::new(),
                queues: 2,
                readable: true,
                writable: true,
                topic_id: 0,
            })
            .collect();
        TopicRoutes::from_nameserver(&TopicRoute {
            topic: "t".into(),
            groups,
            warming_up,
            down_groups: Vec::new(),
            missing_groups: Vec::new(),
        })
    }

    #[test]
    fn a_warming_up_nameserver_does_not_shrink_cached_routes() {
        let cached = route(&["g1", "g2"], false);
        let merged = route(&["g1"], true).keeping_groups_of(&cached);
        assert_eq!(merged, cached, "g2 has not re-registered yet: kept");
        let warm = route(&["g1"], false).keeping_groups_of(&cached);
        assert_eq!(
            warm.writable,
            route(&["g1"], false).writable,
            "a warm NameServer is believed"
        );
        assert_eq!(
            warm.all, cached.all,
            "but keys keep hashing over g2's queues too"
        );
        let grown = route(&["g1", "g3"], true).keeping_groups_of(&cached);
        assert_eq!(grown, route(&["g1", "g2", "g3"], false));
    }
}
