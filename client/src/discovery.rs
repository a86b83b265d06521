//! Finds the NameServers: a fixed list (`--nameserver`), or the SRV record `--srv` names, looked
//! up through hickory (RFC 2782 order, an answer trusted until its TTL, re-resolution when a
//! NameServer stops answering, the last good answer kept while DNS is down). The only module of
//! the client that uses hickory.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};

#[cfg(any(test, feature = "dev-dns"))]
pub mod dev_dns;

/// The service label of the NameServer's SRV record: `_smq-ns._tcp.<domain>`.
pub const SRV_SERVICE_LABELS: &str = "_smq-ns._tcp";
/// The NameServer's port when a `--nameserver` address gives none.
pub const NAMESERVER_PORT_DEFAULT: u16 = 9876;

/// Where the NameServers are to be found.
///
/// ```
/// use smq_client::discovery::DiscoveryMode;
///
/// // `--nameserver` wins over `--srv`; an address without a port gets 9876.
/// let mode = DiscoveryMode::from_flags(Some("ns1,http://ns2:8080"), Some("_smq-ns._tcp.smq.test"), None);
/// let urls = vec!["http://ns1:9876".to_owned(), "http://ns2:8080".to_owned()];
/// assert_eq!(mode.unwrap(), Some(DiscoveryMode::Static(urls)));
/// let mode = DiscoveryMode::from_flags(None, Some("_smq-ns._tcp.smq.test"), None).unwrap();
/// assert!(matches!(mode, Some(DiscoveryMode::Srv { dns_server: None, .. })));
/// assert_eq!(DiscoveryMode::from_flags(None, None, None).unwrap(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryMode {
    /// `--nameserver URL[,URL]`: these base URLs, in this order; no DNS.
    Static(Vec<String>),
    /// `--srv NAME`: the SRV record NAME, asked of `dns_server` (`--dns-server`) or of the
    /// servers in /etc/resolv.conf.
    Srv {
        name: String,
        dns_server: Option<SocketAddr>,
    },
}

impl DiscoveryMode {
    /// The mode the discovery flags ask for: `--nameserver` wins over `--srv`; `None` when
    /// neither is given (a broker then runs standalone, a client needs `--broker`).
    pub fn from_flags(
        nameserver: Option<&str>,
        srv: Option<&str>,
        dns_server: Option<SocketAddr>,
    ) -> Result<Option<DiscoveryMode>, DiscoveryError> {
        match (nameserver, srv) {
            (Some(list), _) => Ok(Some(DiscoveryMode::Static(parse_nameserver_list(list)?))),
            (None, Some(name)) => Ok(Some(DiscoveryMode::Srv {
                name: name.to_owned(),
                dns_server,
            })),
            (None, None) => Ok(None),
        }
    }
}

/// Turns `--nameserver` (`host:port`, `host`, `http://host:port` or `https://host:port`,
/// comma-separated) into base URLs without a trailing slash; a bare `host:port` becomes
/// `http://`. The NameServer client calls every URL over TLS when it has a CA (`--tls-ca`).
pub fn parse_nameserver_list(list: &str) -> Result<Vec<String>, DiscoveryError> {
    let mut urls = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (scheme, rest) = match item.split_once("://") {
            Some((scheme @ ("http" | "https"), rest)) => (scheme, rest),
            Some((scheme, _)) => {
                return Err(DiscoveryError::BadAddress {
                    addr: item.to_owned(),
                    reason: format!("the scheme must be http or https, not {scheme:?}"),
                })
            }
            None => ("http", item),
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(DiscoveryError::BadAddress {
                addr: item.to_owned(),
                reason: "expected host:port or http://host:port, with no path".to_owned(),
            });
        }
        let has_port = match authority.rsplit_once(':') {
            // An IPv6 literal without brackets has colons but no port.
            Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
                port.parse::<u16>()
                    .map_err(|_| DiscoveryError::BadAddress {
                        addr: item.to_owned(),
                        reason: format!("{port:?} is not a port number"),
                    })?;
                true
            }
            _ => false,
        };
        urls.push(if has_port {
            format!("{scheme}://{authority}")
        } else {
            format!("{scheme}://{authority}:{NAMESERVER_PORT_DEFAULT}")
        });
    }
    if urls.is_empty() {
        return Err(DiscoveryError::Empty);
    }
    Ok(urls)
}

/// Timings of discovery; the defaults suit clients and brokers.
///
/// ```
/// use std::time::Duration;
/// use smq_client::discovery::{Discovery, DiscoveryMode, DiscoveryOptions};
///
/// let options = DiscoveryOptions { failed_for: Duration::from_secs(5), ..DiscoveryOptions::default() };
/// assert_eq!(options.ttl_max, Duration::from_secs(300));
/// let mode = DiscoveryMode::Static(vec!["http://10.0.0.1:9876".into()]);
/// let discovery = Discovery::new(mode, options).unwrap();
/// assert!(matches!(discovery.mode(), DiscoveryMode::Static(urls) if urls.len() == 1));
/// ```
#[derive(Debug, Clone)]
pub struct DiscoveryOptions {
    /// How long one DNS query may take before it is retried once.
    pub dns_timeout: Duration,
    /// An answer is trusted for its TTL, but never longer than this.
    pub ttl_max: Duration,
    /// Nor less than this, so that a TTL of 0 does not turn every call into a query.
    pub ttl_min: Duration,
    /// While DNS fails, the last good answer is served and DNS is asked again after this.
    pub retry_after_dns_failure: Duration,
    /// A NameServer passed to [`Discovery::mark_failed`] goes to the end of the list for this long.
    pub failed_for: Duration,
}

impl Default for DiscoveryOptions {
    fn default() -> DiscoveryOptions {
        DiscoveryOptions {
            dns_timeout: Duration::from_secs(2),
            ttl_max: Duration::from_secs(300),
            ttl_min: Duration::from_millis(200),
            retry_after_dns_failure: Duration::from_secs(1),
            failed_for: Duration::from_secs(30),
        }
    }
}

/// What can go wrong in discovery; each message says what to check.
///
/// ```
/// use smq_client::discovery::{parse_nameserver_list, DiscoveryError};
///
/// let error = parse_nameserver_list("ftp://ns1:9876").unwrap_err();
/// assert!(matches!(error, DiscoveryError::BadAddress { .. }));
/// assert!(error.to_string().contains("must be http"));
/// assert_eq!(parse_nameserver_list("ns1:9876,https://ns2").unwrap(), ["http://ns1:9876", "https://ns2:9876"]);
/// assert!(matches!(parse_nameserver_list(" , "), Err(DiscoveryError::Empty)));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("invalid NameServer address {addr:?}: {reason}")]
    BadAddress { addr: String, reason: String },
    #[error("--nameserver names no NameServer")]
    Empty,
    #[error("there is no SRV record to look up: discovery was given --nameserver, not --srv")]
    NotSrv,
    #[error("cannot set up a DNS resolver ({what})")]
    Resolver {
        what: String,
        #[source]
        source: Box<NetError>,
    },
    #[error(
        "DNS has no SRV record {name}: publish one (`{name} SRV 0 0 {NAMESERVER_PORT_DEFAULT} <host>.`) \
         or pass --nameserver"
    )]
    NoRecord {
        name: String,
        #[source]
        source: Box<NetError>,
    },
    #[error("the SRV record {name} says the NameServer is decidedly not available (target \".\")")]
    NotAvailable { name: String },
    #[error("DNS lookup of {name} failed: {source}; is the DNS server ({server}) reachable?")]
    Dns {
        name: String,
        server: String,
        #[source]
        source: Box<NetError>,
    },
    #[error("no target of the SRV record {name} ({targets}) has an address record")]
    NoAddress { name: String, targets: String },
}

/// One SRV record's data.
///
/// ```
/// use smq_client::discovery::{rfc2782_order, SrvTarget};
///
/// let target = |priority, host: &str| SrvTarget { priority, weight: 10, port: 9876, host: host.into() };
/// let records = vec![target(20, "backup.smq.test"), target(10, "ns1.smq.test")];
/// // Lowest priority first; the random pick only orders records of equal priority.
/// let ordered = rfc2782_order(records, |n| n - 1);
/// let hosts: Vec<&str> = ordered.iter().map(|t| t.host.as_str()).collect();
/// assert_eq!(hosts, ["ns1.smq.test", "backup.smq.test"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvTarget {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// The target name without its final dot, e.g. `ns1.smq.test`.
    pub host: String,
}

/// An SRV target with the addresses its name resolved to.
///
/// ```
/// use smq_client::discovery::{ResolvedTarget, SrvTarget};
///
/// let target = ResolvedTarget {
///     srv: SrvTarget { priority: 0, weight: 0, port: 9876, host: "ns1.smq.test".into() },
///     addrs: vec!["10.0.0.1:9876".parse().unwrap()],
/// };
/// // Matched by name (whatever the case, with or without the final dot) or by address.
/// assert!(target.is("NS1.smq.test.:9876"));
/// assert!(target.is("10.0.0.1:9876"));
/// assert!(!target.is("ns1.smq.test:9877"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTarget {
    pub srv: SrvTarget,
    /// IPv4 first, each with the SRV port.
    pub addrs: Vec<SocketAddr>,
}

impl ResolvedTarget {
    /// True if this target is `host:port` (by name) or that socket address.
    pub fn is(&self, host_port: &str) -> bool {
        let by_name = host_port.rsplit_once(':').is_some_and(|(host, port)| {
            host.trim_end_matches('.')
                .eq_ignore_ascii_case(&self.srv.host)
                && port.parse() == Ok(self.srv.port)
        });
        by_name
            || host_port
                .parse::<SocketAddr>()
                .is_ok_and(|addr| self.addrs.contains(&addr))
    }
}

/// One SRV answer: its targets in RFC 2782 order, and how long it may be trusted.
///
/// ```
/// use std::time::Duration;
/// use smq_client::discovery::{ResolvedTarget, SrvAnswer, SrvTarget};
///
/// let srv = SrvTarget { priority: 0, weight: 0, port: 9876, host: "ns1.smq.test".into() };
/// let addrs = vec!["10.0.0.1:9876".parse().unwrap(), "[fd00::1]:9876".parse().unwrap()];
/// let answer = SrvAnswer { targets: vec![ResolvedTarget { srv, addrs }], ttl: Duration::from_secs(60) };
/// assert_eq!(answer.urls(), ["http://10.0.0.1:9876", "http://[fd00::1]:9876"]);
/// ```
#[derive(Debug, Clone)]
pub struct SrvAnswer {
    pub targets: Vec<ResolvedTarget>,
    /// The smallest TTL of the SRV records.
    pub ttl: Duration,
}

impl SrvAnswer {
    /// The NameServers' base URLs, in the targets' order (one per address).
    pub fn urls(&self) -> Vec<String> {
        self.targets
            .iter()
            .flat_map(|t| t.addrs.iter().map(|addr| format!("http://{addr}")))
            .collect()
    }
}

/// Orders SRV records as RFC 2782 says: ascending priority; within a priority, a weighted random
/// choice repeated until none is left. `random_below(n)` must return a uniform value in `0..n`.
/// Weighted targets are chosen in exact proportion to their weights; a weight-0 target is
/// chosen first with probability 1/(sum of weights + 1), as the RFC's `0..=sum` pick gives it.
/// A lone record with target `.` means "not available": the answer is empty.
pub fn rfc2782_order(
    mut records: Vec<SrvTarget>,
    mut random_below: impl FnMut(u32) -> u32,
) -> Vec<SrvTarget> {
    if records.len() == 1 && records[0].host.is_empty() {
        return Vec::new();
    }
    records.sort_by_key(|r| r.priority);
    let mut ordered = Vec::with_capacity(records.len());
    let mut rest = records.into_iter().peekable();
    while let Some(first) = rest.next() {
        let mut same = vec![first];
        while let Some(next) = rest.next_if(|r| r.priority == same[0].priority) {
            same.push(next);
        }
        // Weight-0 records first, so that a pick of 0 lands on one of them.
        same.sort_by_key(|r| r.weight != 0);
        while !same.is_empty() {
            let total: u32 = same.iter().map(|r| u32::from(r.weight)).sum();
            let has_zero = same[0].weight == 0;
            let pick = match (total, has_zero) {
                (0, _) => 0,
                (_, true) => random_below(total + 1),
                (_, false) => 1 + random_below(total),
            };
            let mut running = 0;
            let index = same
                .iter()
                .position(|r| {
                    running += u32::from(r.weight);
                    running >= pick
                })
                .unwrap_or(0);
            ordered.push(same.remove(index));
        }
    }
    ordered
}

/// A uniform value in `0..n` (n > 0) from the standard library's randomly keyed hasher: the
/// weighted choice needs no cryptographic quality, only a different seed per process and call.
fn random_below(n: u32) -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(n);
    (hasher.finish() % u64::from(n.max(1))) as u32
}

/// The cached SRV answer and the NameServers that stopped answering.
#[derive(Default)]
struct State {
    urls: Vec<String>,
    /// `None` until the first good answer.
    fresh_until: Option<Instant>,
    refresh_requested: bool,
    failed_until: HashMap<String, Instant>,
}

/// Finds the NameServers and keeps track of which one to ask. Cheap to share (`Arc`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use smq_client::discovery::{Discovery, DiscoveryMode, DiscoveryOptions};
///
/// let mode = DiscoveryMode::Static(vec!["http://ns1:9876".into(), "http://ns2:9876".into()]);
/// let discovery = Discovery::new(mode, DiscoveryOptions::default()).unwrap();
/// assert_eq!(discovery.resolve().await.unwrap()[0], "http://ns1:9876");
/// // A NameServer that stopped answering goes to the end of the list for a while.
/// discovery.mark_failed("http://ns1:9876");
/// assert_eq!(discovery.resolve().await.unwrap(), ["http://ns2:9876", "http://ns1:9876"]);
/// # }
/// ```
pub struct Discovery {
    mode: DiscoveryMode,
    resolver: Option<TokioResolver>,
    options: DiscoveryOptions,
    state: Mutex<State>,
    /// One DNS lookup at a time: callers arriving during a lookup wait for its answer.
    lookup: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// Sets discovery up; for SRV it builds the resolver (reading /etc/resolv.conf when no DNS
    /// server is given) but sends no query yet.
    pub fn new(
        mode: DiscoveryMode,
        options: DiscoveryOptions,
    ) -> Result<Discovery, DiscoveryError> {
        let mut state = State::default();
        let resolver = match &mode {
            DiscoveryMode::Static(urls) => {
                if urls.is_empty() {
                    return Err(DiscoveryError::Empty);
                }
                state.urls = urls.clone();
                None
            }
            DiscoveryMode::Srv { dns_server, .. } => Some(build_resolver(*dns_server, &options)?),
        };
        Ok(Discovery {
            mode,
            resolver,
            options,
            state: Mutex::new(state),
            lookup: tokio::sync::Mutex::new(()),
        })
    }

    pub fn mode(&self) -> &DiscoveryMode {
        &self.mode
    }

    /// The NameServers' base URLs, best first: for SRV, in RFC 2782 order from an answer no older
    /// than its TTL (asking DNS again if it is), or the last good answer while DNS fails; those
    /// marked failed recently come last. An error only if DNS never answered.
    pub async fn resolve(&self) -> Result<Vec<String>, DiscoveryError> {
        if self.needs_lookup(Instant::now()) {
            let _one_at_a_time = self.lookup.lock().await;
            if self.needs_lookup(Instant::now()) {
                self.refresh().await?;
            }
        }
        Ok(self.ordered(Instant::now()))
    }

    /// Says that `url` stopped answering: it goes to the end of the list for
    /// `failed_for`, and the next [`Discovery::resolve`] asks DNS again.
    pub fn mark_failed(&self, url: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .failed_until
            .insert(url.to_owned(), Instant::now() + self.options.failed_for);
        state.refresh_requested = true;
    }

    /// Has the next [`Discovery::resolve`] ask DNS again (SRV mode), without marking any
    /// NameServer failed: between the tries of a caller waiting for a NameServer.
    pub fn refresh_soon(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.refresh_requested = true;
    }

    /// Asks DNS now, bypassing the cached answer (and leaving it alone): what the record says at
    /// this moment. Only for SRV mode; static mode has nothing to ask.
    pub async fn lookup_now(&self) -> Result<SrvAnswer, DiscoveryError> {
        match (&self.mode, &self.resolver) {
            (DiscoveryMode::Srv { name, dns_server }, Some(resolver)) => {
                lookup_srv(resolver, name, *dns_server).await
            }
            _ => Err(DiscoveryError::NotSrv),
        }
    }

    fn needs_lookup(&self, now: Instant) -> bool {
        if self.resolver.is_none() {
            return false;
        }
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.refresh_requested || state.fresh_until.is_none_or(|until| now >= until)
    }

    async fn refresh(&self) -> Result<(), DiscoveryError> {
        let result = self.lookup_now().await;
        let now = Instant::now();
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *guard;
        state.refresh_requested = false;
        match result {
            Ok(answer) => {
                let ttl = answer.ttl.clamp(self.options.ttl_min, self.options.ttl_max);
                state.urls = answer.urls();
                state.fresh_until = Some(now + ttl);
                let urls = &state.urls;
                state.failed_until.retain(|url, _| urls.contains(url));
                Ok(())
            }
            Err(error) if state.fresh_until.is_some() => {
                tracing::warn!(%error, kept = ?state.urls, "DNS failed: keeping the last good NameServer list");
                state.fresh_until = Some(now + self.options.retry_after_dns_failure);
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    fn ordered(&self, now: Instant) -> Vec<String> {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *guard;
        state.failed_until.retain(|_, until| *until > now);
        let (mut good, failed): (Vec<String>, Vec<String>) = state
            .urls
            .iter()
            .cloned()
            .partition(|url| !state.failed_until.contains_key(url));
        good.extend(failed);
        good
    }
}

fn build_resolver(
    dns_server: Option<SocketAddr>,
    options: &DiscoveryOptions,
) -> Result<TokioResolver, DiscoveryError> {
    let mut builder = match dns_server {
        Some(server) => {
            let mut config = NameServerConfig::udp_and_tcp(server.ip());
            for connection in &mut config.connections {
                connection.port = server.port();
            }
            Resolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![config]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio().map_err(|source| DiscoveryError::Resolver {
            what: "reading /etc/resolv.conf".to_owned(),
            source: Box::new(source),
        })?,
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    // Discovery keeps its own copy of the answer (hickory has no serve-stale), so the resolver's
    // cache would only delay re-resolution, negative answers included.
    opts.cache_size = 0;
    opts.timeout = options.dns_timeout;
    opts.attempts = 1;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    if dns_server.is_some() {
        opts.use_hosts_file = ResolveHosts::Never;
    }
    builder.build().map_err(|source| DiscoveryError::Resolver {
        what: dns_server.map_or("system configuration".to_owned(), |s| s.to_string()),
        source: Box::new(source),
    })
}

async fn lookup_srv(
    resolver: &TokioResolver,
    name: &str,
    dns_server: Option<SocketAddr>,
) -> Result<SrvAnswer, DiscoveryError> {
    let server = || dns_server.map_or("from /etc/resolv.conf".to_owned(), |s| s.to_string());
    let lookup = resolver.srv_lookup(name).await.map_err(|source| {
        if source.is_no_records_found() || source.is_nx_domain() {
            DiscoveryError::NoRecord {
                name: name.to_owned(),
                source: Box::new(source),
            }
        } else {
            DiscoveryError::Dns {
                name: name.to_owned(),
                server: server(),
                source: Box::new(source),
            }
        }
    })?;
    let mut records = Vec::new();
    let mut ttl = u32::MAX;
    for record in lookup.answers() {
        if let RData::SRV(srv) = &record.data {
            ttl = ttl.min(record.ttl);
            records.push(SrvTarget {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                host: srv.target.to_string().trim_end_matches('.').to_owned(),
            });
        }
    }
    let ordered = rfc2782_order(records, random_below);
    if ordered.is_empty() {
        return Err(DiscoveryError::NotAvailable {
            name: name.to_owned(),
        });
    }
    let mut targets = Vec::with_capacity(ordered.len());
    for srv in ordered {
        // The server usually sends the target's addresses along (the additional section).
        let mut ips: Vec<IpAddr> = lookup
            .additionals()
            .iter()
            .filter(|r| {
                r.name
                    .to_string()
                    .trim_end_matches('.')
                    .eq_ignore_ascii_case(&srv.host)
            })
            .filter_map(|r| r.data.ip_addr())
            .collect();
        if ips.is_empty() {
            match resolver.lookup_ip(format!("{}.", srv.host)).await {
                Ok(found) => ips.extend(found.iter()),
                Err(error) => {
                    tracing::warn!(%error, target = %srv.host, "an SRV target of {name} has no address");
                }
            }
        }
        ips.sort_by_key(|ip| ip.is_ipv6());
        ips.dedup();
        if !ips.is_empty() {
            let addrs = ips
                .iter()
                .map(|ip| SocketAddr::new(*ip, srv.port))
                .collect();
            targets.push(ResolvedTarget { srv, addrs });
        }
    }
    if targets.is_empty() {
        return Err(DiscoveryError::NoAddress {
            name: name.to_owned(),
            targets: lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(srv) => Some(srv.target.to_string()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(SrvAnswer {
        targets,
        ttl: Duration::from_secs(u64::from(ttl)),
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::dev_dns::{DevDns, SrvRecord};
    use super::*;

    fn srv(priority: u16, weight: u16, host: &str) -> SrvTarget {
        SrvTarget {
            priority,
            weight,
            port: 9876,
            host: host.to_owned(),
        }
    }

    /// A small deterministic generator (64-bit LCG, high bits) for the weighted choice.
    fn lcg(seed: u64) -> impl FnMut(u32) -> u32 {
        let mut x = seed;
        move |n| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) % u64::from(n)) as u32
        }
    }

    fn hosts(v: &[SrvTarget]) -> Vec<&str> {
        v.iter().map(|t| t.host.as_str()).collect()
    }

    #[test]
    fn lower_priority_values_always_come_first() {
        let records = vec![srv(20, 100, "c"), srv(0, 0, "a"), srv(10, 5, "b")];
        for seed in 0..50 {
            assert_eq!(
                hosts(&rfc2782_order(records.clone(), lcg(seed))),
                ["a", "b", "c"]
            );
        }
    }

    #[test]
    fn first_choice_within_a_priority_follows_the_weights() {
        let records = vec![
            srv(0, 60, "heavy"),
            srv(0, 30, "light"),
            srv(0, 0, "zero"),
            srv(10, 100, "standby"),
        ];
        let mut random = lcg(7);
        let mut first: HashMap<String, u32> = HashMap::new();
        for _ in 0..10_000 {
            let order = rfc2782_order(records.clone(), &mut random);
            assert_eq!(order.len(), 4);
            assert_eq!(order[3].host, "standby");
            *first.entry(order[0].host.clone()).or_default() += 1;
        }
        // Expected: 60/91, 30/91 and 1/91 of 10,000.
        let count = |h: &str| first.get(h).copied().unwrap_or(0);
        assert!((6300..6900).contains(&count("heavy")), "{first:?}");
        assert!((3000..3600).contains(&count("light")), "{first:?}");
        assert!((40..200).contains(&count("zero")), "{first:?}");
        assert_eq!(count("standby"), 0);
    }

    #[test]
    fn equal_weights_are_chosen_equally_often() {
        // The RFC's literal 0..=sum pick would give 2/3 vs 1/3 here.
        let mut random = lcg(3);
        let mut a = 0;
        for _ in 0..10_000 {
            if rfc2782_order(vec![srv(0, 1, "a"), srv(0, 1, "b")], &mut random)[0].host == "a" {
                a += 1;
            }
        }
        assert!((4700..5300).contains(&a), "{a}");
    }

    #[test]
    fn a_lone_dot_target_means_not_available() {
        assert!(rfc2782_order(vec![srv(0, 0, "")], lcg(1)).is_empty());
    }

    #[test]
    fn nameserver_flag_accepts_addresses_and_urls() {
        assert_eq!(
            parse_nameserver_list("127.0.0.1:9876, http://ns2:80/ ,ns3,[::1]:9000").unwrap(),
            [
                "http://127.0.0.1:9876",
                "http://ns2:80",
                "http://ns3:9876",
                "http://[::1]:9000"
            ]
        );
        assert!(matches!(
            parse_nameserver_list(" , "),
            Err(DiscoveryError::Empty)
        ));
        assert!(parse_nameserver_list("ftp://x:1").is_err());
        assert_eq!(
            parse_nameserver_list("http://ns1:1,https://ns2:2,https://ns3").unwrap(),
            ["http://ns1:1", "https://ns2:2", "https://ns3:9876"]
        );
        assert!(parse_nameserver_list("x:notaport").is_err());
        assert!(parse_nameserver_list("http://x:1/path").is_err());
    }

    #[test]
    fn discovery_can_be_shared_between_tasks() {
        fn shared<T: Send + Sync + 'static>() {}
        shared::<Discovery>();
    }

    #[tokio::test]
    async fn static_list_puts_a_failed_nameserver_last() {
        let mode = DiscoveryMode::from_flags(Some("a:1,b:2"), Some("_ignored"), None)
            .unwrap()
            .unwrap();
        let d = Discovery::new(mode, DiscoveryOptions::default()).unwrap();
        assert_eq!(d.resolve().await.unwrap(), ["http://a:1", "http://b:2"]);
        d.mark_failed("http://a:1");
        assert_eq!(d.resolve().await.unwrap(), ["http://b:2", "http://a:1"]);
        assert!(matches!(d.lookup_now().await, Err(DiscoveryError::NotSrv)));
    }

    const NAME: &str = "_smq-ns._tcp.smq.test.";

    async fn dns() -> DevDns {
        let dns = DevDns::start((Ipv4Addr::LOCALHOST, 0).into(), "smq.test.")
            .await
            .unwrap();
        for host in ["ns1.smq.test.", "ns2.smq.test."] {
            dns.set_addrs(host, 60, &[Ipv4Addr::LOCALHOST.into()])
                .await
                .unwrap();
        }
        dns
    }

    fn record(priority: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight: 0,
            port,
            target: target.to_owned(),
        }
    }

    fn srv_discovery(dns: &DevDns) -> Discovery {
        let options = DiscoveryOptions {
            dns_timeout: Duration::from_millis(200),
            ..DiscoveryOptions::default()
        };
        let mode = DiscoveryMode::Srv {
            name: NAME.to_owned(),
            dns_server: Some(dns.addr()),
        };
        Discovery::new(mode, options).unwrap()
    }

    #[tokio::test]
    async fn srv_prefers_the_lower_priority_and_fails_over_when_told() {
        let dns = dns().await;
        let records = [
            record(10, 2002, "ns2.smq.test."),
            record(0, 2001, "ns1.smq.test."),
        ];
        dns.set_srv(NAME, 60, &records).await.unwrap();
        let d = srv_discovery(&dns);
        let both = ["http://127.0.0.1:2001", "http://127.0.0.1:2002"];
        assert_eq!(d.resolve().await.unwrap(), both);
        d.mark_failed("http://127.0.0.1:2001");
        assert_eq!(d.resolve().await.unwrap(), [both[1], both[0]]);

        let answer = d.lookup_now().await.unwrap();
        assert_eq!(answer.ttl, Duration::from_secs(60));
        assert!(answer.targets[0].is("ns1.smq.test:2001"));
        assert!(answer.targets[0].is("127.0.0.1:2001"));
        assert!(!answer.targets[0].is("127.0.0.1:2002"));
        dns.shutdown().await;
    }

    /// Publishes `name SRV 0 0 port target` with `ttl`.
    async fn point(dns: &DevDns, ttl: u32, port: u16, target: &str) {
        dns.set_srv(NAME, ttl, &[record(0, port, target)])
            .await
            .unwrap();
    }

    /// A DNS server whose record names ns1:2001 with `ttl`, and a discovery that has resolved it.
    async fn resolved(ttl: u32) -> (DevDns, Discovery) {
        let dns = dns().await;
        point(&dns, ttl, 2001, "ns1.smq.test.").await;
        let d = srv_discovery(&dns);
        assert_eq!(d.resolve().await.unwrap(), ["http://127.0.0.1:2001"]);
        (dns, d)
    }

    #[tokio::test]
    async fn srv_answer_is_re_resolved_when_its_ttl_runs_out() {
        let (dns, d) = resolved(1).await;
        let repointed = Instant::now();
        point(&dns, 1, 2002, "ns2.smq.test.").await;
        // Within the TTL the cached answer stands.
        assert_eq!(d.resolve().await.unwrap(), ["http://127.0.0.1:2001"]);
        while d.resolve().await.unwrap() != ["http://127.0.0.1:2002"] {
            assert!(
                repointed.elapsed() < Duration::from_secs(3),
                "repoint not seen"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(repointed.elapsed() >= Duration::from_millis(900));
        dns.shutdown().await;
    }

    #[tokio::test]
    async fn mark_failed_re_resolves_before_the_ttl() {
        let (dns, d) = resolved(300).await;
        point(&dns, 300, 2002, "ns2.smq.test.").await;
        assert_eq!(d.resolve().await.unwrap(), ["http://127.0.0.1:2001"]);
        d.mark_failed("http://127.0.0.1:2001");
        assert_eq!(d.resolve().await.unwrap(), ["http://127.0.0.1:2002"]);
        dns.shutdown().await;
    }

    #[tokio::test]
    async fn last_good_answer_is_kept_while_dns_is_down() {
        let (dns, d) = resolved(1).await;
        dns.shutdown().await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(matches!(
            d.lookup_now().await,
            Err(DiscoveryError::Dns { .. })
        ));
        assert_eq!(d.resolve().await.unwrap(), ["http://127.0.0.1:2001"]);
        d.mark_failed("http://127.0.0.1:2001");
        assert_eq!(d.resolve().await.unwrap(), ["http://127.0.0.1:2001"]);
    }

    #[tokio::test]
    async fn a_missing_record_is_an_error_naming_it() {
        let dns = dns().await;
        let d = srv_discovery(&dns);
        let error = d.resolve().await.unwrap_err();
        assert!(matches!(error, DiscoveryError::NoRecord { .. }), "{error}");
        assert!(error.to_string().contains(NAME), "{error}");
        dns.shutdown().await;
    }
}
