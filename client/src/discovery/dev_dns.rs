//! An embedded authoritative DNS server for one zone, held in memory, whose records can be
//! replaced while it runs: tests repoint `_smq-ns._tcp.<domain>` with it, and `smq dev` serves
//! its local cluster's record with it (feature `dev-dns`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use hickory_server::Server;

/// One SRV record: what [`DevDns::set_srv`] publishes.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use smq_client::discovery::dev_dns::{DevDns, SrvRecord};
/// use smq_client::discovery::{Discovery, DiscoveryMode, DiscoveryOptions};
///
/// let dns = DevDns::start("127.0.0.1:0".parse()?, "smq.test.").await?;
/// let record = SrvRecord { priority: 10, weight: 50, port: 9876, target: "ns1.smq.test.".into() };
/// dns.set_srv("_smq-ns._tcp.smq.test.", 60, &[record]).await?;
/// dns.set_addrs("ns1.smq.test.", 60, &["127.0.0.1".parse()?]).await?;
/// let mode = DiscoveryMode::Srv { name: "_smq-ns._tcp.smq.test.".into(), dns_server: Some(dns.addr()) };
/// let answer = Discovery::new(mode, DiscoveryOptions::default())?.lookup_now().await?;
/// assert_eq!((answer.targets[0].srv.priority, answer.targets[0].srv.weight), (10, 50));
/// assert_eq!(answer.ttl.as_secs(), 60);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// A name with A/AAAA records, e.g. `ns1.smq.test.`.
    pub target: String,
}

/// Errors of the embedded DNS server, each naming what it was doing.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use smq_client::discovery::dev_dns::{DevDns, DevDnsError};
///
/// let dns = DevDns::start("127.0.0.1:0".parse().unwrap(), "smq.test.").await.unwrap();
/// // A second server cannot take the same port.
/// let error = DevDns::start(dns.addr(), "smq.test.").await.err().unwrap();
/// assert!(matches!(error, DevDnsError::Bind { .. }));
/// assert!(error.to_string().contains("is another one running there?"));
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum DevDnsError {
    #[error("cannot bind the DNS server to {addr} (is another one running there?)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{name:?} is not a valid DNS name: {reason}")]
    BadName { name: String, reason: String },
    #[error("cannot create the zone {origin}: {reason}")]
    Zone { origin: String, reason: String },
}

/// A running DNS server, authoritative for one zone, on UDP and TCP of the same port. Dropping it
/// stops it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use smq_client::discovery::dev_dns::{DevDns, SrvRecord};
/// use smq_client::discovery::{Discovery, DiscoveryMode, DiscoveryOptions};
///
/// let dns = DevDns::start("127.0.0.1:0".parse()?, "smq.test.").await?;
/// let ns1 = SrvRecord { priority: 0, weight: 0, port: 9876, target: "ns1.smq.test.".into() };
/// dns.set_srv("_smq-ns._tcp.smq.test.", 60, &[ns1]).await?;
/// dns.set_addrs("ns1.smq.test.", 60, &["127.0.0.1".parse()?]).await?;
/// let mode = DiscoveryMode::Srv { name: "_smq-ns._tcp.smq.test.".into(), dns_server: Some(dns.addr()) };
/// let discovery = Discovery::new(mode, DiscoveryOptions::default())?;
/// assert_eq!(discovery.resolve().await?, ["http://127.0.0.1:9876"]);
/// dns.shutdown().await;
/// # Ok(()) }
/// ```
pub struct DevDns {
    addr: SocketAddr,
    zone: Arc<InMemoryZoneHandler<TokioRuntimeProvider>>,
    server: Server<Catalog>,
}

fn name(text: &str) -> Result<Name, DevDnsError> {
    Name::from_str(text).map_err(|error| DevDnsError::BadName {
        name: text.to_owned(),
        reason: error.to_string(),
    })
}

/// Binds UDP and TCP on one port. With port 0 the UDP socket picks the port, which TCP may
/// already use (another listener, an outgoing connection): then another port is tried.
async fn bind_udp_and_tcp(
    bind: SocketAddr,
) -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener, SocketAddr), DevDnsError> {
    let bind_error = |addr, source| DevDnsError::Bind { addr, source };
    let mut attempts_left = if bind.port() == 0 { 20 } else { 1 };
    loop {
        attempts_left -= 1;
        let udp = tokio::net::UdpSocket::bind(bind)
            .await
            .map_err(|e| bind_error(bind, e))?;
        let addr = udp.local_addr().map_err(|e| bind_error(bind, e))?;
        match tokio::net::TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp, addr)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempts_left > 0 => continue,
            Err(e) => return Err(bind_error(addr, e)),
        }
    }
}

impl DevDns {
    /// Serves the zone `origin` (e.g. `smq.test.`), empty but for its SOA, whose minimum (the
    /// negative-caching TTL) is 1 s so that a record added later is seen at once. `bind` may have
    /// port 0; [`DevDns::addr`] then says which port was taken.
    pub async fn start(bind: SocketAddr, origin: &str) -> Result<DevDns, DevDnsError> {
        let origin = name(origin)?;
        let soa = SOA::new(
            name(&format!("ns.{origin}"))?,
            name(&format!("admin.{origin}"))?,
            1,
            60,
            60,
            600,
            1,
        );
        let mut soa_set = RecordSet::with_ttl(origin.clone(), RecordType::SOA, 1);
        soa_set.insert(Record::from_rdata(origin.clone(), 1, RData::SOA(soa)), 0);
        let mut records = BTreeMap::new();
        records.insert(
            RrKey::new(LowerName::new(&origin), RecordType::SOA),
            soa_set,
        );
        let zone = InMemoryZoneHandler::<TokioRuntimeProvider>::new(
            origin.clone(),
            records,
            ZoneType::Primary,
            AxfrPolicy::Deny,
        )
        .map(Arc::new)
        .map_err(|reason| DevDnsError::Zone {
            origin: origin.to_string(),
            reason,
        })?;
        let mut catalog = Catalog::new();
        catalog.upsert(
            LowerName::new(&origin),
            vec![zone.clone() as Arc<dyn ZoneHandler>],
        );
        let (udp, tcp, addr) = bind_udp_and_tcp(bind).await?;
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64);
        Ok(DevDns { addr, zone, server })
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the whole SRV record set of `owner` (an empty `records` removes it): a repoint is
    /// atomic, never passing through "no record".
    pub async fn set_srv(
        &self,
        owner: &str,
        ttl: u32,
        records: &[SrvRecord],
    ) -> Result<(), DevDnsError> {
        let owner = name(owner)?;
        let mut set = RecordSet::with_ttl(owner.clone(), RecordType::SRV, ttl);
        for r in records {
            let srv = SRV::new(r.priority, r.weight, r.port, name(&r.target)?);
            set.insert(Record::from_rdata(owner.clone(), ttl, RData::SRV(srv)), 0);
        }
        self.replace(owner, RecordType::SRV, set).await;
        Ok(())
    }

    /// Replaces the address records of `owner` (A for IPv4, AAAA for IPv6).
    pub async fn set_addrs(
        &self,
        owner: &str,
        ttl: u32,
        ips: &[IpAddr],
    ) -> Result<(), DevDnsError> {
        let owner = name(owner)?;
        let mut v4 = RecordSet::with_ttl(owner.clone(), RecordType::A, ttl);
        let mut v6 = RecordSet::with_ttl(owner.clone(), RecordType::AAAA, ttl);
        for ip in ips {
            match ip {
                IpAddr::V4(ip) => {
                    v4.insert(Record::from_rdata(owner.clone(), ttl, RData::A(A(*ip))), 0)
                }
                IpAddr::V6(ip) => v6.insert(
                    Record::from_rdata(owner.clone(), ttl, RData::AAAA(AAAA(*ip))),
                    0,
                ),
            };
        }
        self.replace(owner.clone(), RecordType::A, v4).await;
        self.replace(owner, RecordType::AAAA, v6).await;
        Ok(())
    }

    async fn replace(&self, owner: Name, record_type: RecordType, set: RecordSet) {
        let key = RrKey::new(LowerName::new(&owner), record_type);
        let mut records = self.zone.records_mut().await;
        if set.is_empty() {
            records.remove(&key);
        } else {
            records.insert(key, Arc::new(set));
        }
    }

    /// Stops serving and frees the port (it can be bound again at once).
    pub async fn shutdown(mut self) {
        if let Err(error) = self.server.shutdown_gracefully().await {
            tracing::debug!(%error, "embedded DNS server stopped with an error");
        }
    }
}
