//! The embedded hickory DNS server (`smq_client::discovery::dev_dns`) on its own runtime, so
//! that tests written as plain blocking code can start it and repoint its records.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use smq_client::discovery::dev_dns::{DevDns, SrvRecord};

use crate::failover::{SrvControl, ZONE};

/// An authoritative server for [`ZONE`] on an ephemeral loopback port, with `ns1` and `ns2`
/// both at 127.0.0.1; stopped when dropped.
pub struct EmbeddedDns {
    dns: Option<DevDns>,
    runtime: tokio::runtime::Runtime,
}

impl EmbeddedDns {
    pub fn start() -> EmbeddedDns {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the DNS server");
        let dns = runtime.block_on(async {
            let dns = DevDns::start("127.0.0.1:0".parse().unwrap(), ZONE)
                .await
                .expect("starting the embedded DNS server");
            for host in ["ns1", "ns2"] {
                dns.set_addrs(
                    &format!("{host}.{ZONE}"),
                    60,
                    &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
                )
                .await
                .expect("address records");
            }
            dns
        });
        EmbeddedDns {
            dns: Some(dns),
            runtime,
        }
    }
}

impl SrvControl for EmbeddedDns {
    fn dns_server(&self) -> SocketAddr {
        self.dns.as_ref().expect("running").addr()
    }

    fn point(&self, name: &str, ttl: u32, targets: &[(u16, u16, &str)]) {
        let records: Vec<SrvRecord> = targets
            .iter()
            .map(|&(priority, port, host)| SrvRecord {
                priority,
                weight: 0,
                port,
                target: format!("{host}.{ZONE}"),
            })
            .collect();
        let dns = self.dns.as_ref().expect("running");
        self.runtime
            .block_on(dns.set_srv(name, ttl, &records))
            .expect("replacing the SRV record");
    }
}

impl Drop for EmbeddedDns {
    fn drop(&mut self) {
        if let Some(dns) = self.dns.take() {
            self.runtime.block_on(dns.shutdown());
        }
    }
}
