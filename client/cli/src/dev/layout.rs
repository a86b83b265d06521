//! Where each part of `smq dev` listens: PRODUCT.md's standard ports by default, or every port
//! moved together from `--base-port`.

use std::net::{SocketAddr, TcpListener, UdpSocket};

/// The DNS zone `smq dev` serves, and the SRV record naming its NameServers.
pub(crate) const ZONE: &str = "smq.test.";
/// The SRV record (PRODUCT.md: `_smq-ns._tcp.smq.test`).
pub(crate) const SRV_NAME: &str = "_smq-ns._tcp.smq.test.";
/// The record's TTL: how long a client may keep the old answer after a failover.
pub(crate) const SRV_TTL_SECS: u32 = 5;
/// The standard DNS port of `smq dev` (PRODUCT.md).
pub(crate) const DNS_PORT_DEFAULT: u16 = 15353;
/// The broker groups `smq dev` starts, one master each.
pub(crate) const GROUPS: [&str; 2] = ["broker-a", "broker-b"];
/// The cluster name the brokers register under.
pub(crate) const CLUSTER: &str = "dev";

/// One broker's two ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BrokerPorts {
    /// Client (and, later, replication) traffic.
    pub listen: u16,
    /// Admin HTTP: /healthz, /metrics.
    pub http: u16,
}

/// Every port `smq dev` takes, all on 127.0.0.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ports {
    /// The embedded DNS server (UDP and TCP).
    pub dns: u16,
    /// The control port `smq dev failover` and `smq dev kill-master` talk to.
    pub control: u16,
    /// ns1 (named by the SRV record at start) and ns2 (the standby).
    pub nameservers: [u16; 2],
    /// The master of each of [`GROUPS`].
    pub masters: [BrokerPorts; 2],
    /// The slave of each of [`GROUPS`].
    pub slaves: [BrokerPorts; 2],
}

impl Ports {
    /// PRODUCT.md's ports without `--base-port` (DNS 15353, NameServers 9876 and 9877, brokers
    /// 10911 and 10921 with HTTP one above), else `base`, `base+1`, ... as [`Ports::from_base`].
    pub fn new(base: Option<u16>) -> anyhow::Result<Ports> {
        match base {
            Some(base) => Ports::from_base(base),
            None => Ok(Ports {
                dns: DNS_PORT_DEFAULT,
                control: DNS_PORT_DEFAULT + 1,
                nameservers: [9876, 9877],
                masters: [
                    BrokerPorts {
                        listen: 10911,
                        http: 10912,
                    },
                    BrokerPorts {
                        listen: 10921,
                        http: 10922,
                    },
                ],
                slaves: [
                    BrokerPorts {
                        listen: 10913,
                        http: 10914,
                    },
                    BrokerPorts {
                        listen: 10923,
                        http: 10924,
                    },
                ],
            }),
        }
    }

    /// DNS on `base`, control `base+1`, NameServers `base+2` and `base+3`, group i's master
    /// on `base+10+10i` (HTTP one above), its slave on `base+12+10i` (HTTP one above).
    fn from_base(base: u16) -> anyhow::Result<Ports> {
        const SPAN: u16 = 30;
        if !(1024..=u16::MAX - SPAN).contains(&base) {
            anyhow::bail!(
                "--base-port {base} is out of range: smq dev takes {SPAN} ports from it, so it must \
                 be between 1024 and {}",
                u16::MAX - SPAN
            );
        }
        let broker = |i: u16, at: u16| BrokerPorts {
            listen: base + 10 + 10 * i + at,
            http: base + 11 + 10 * i + at,
        };
        Ok(Ports {
            dns: base,
            control: base + 1,
            nameservers: [base + 2, base + 3],
            masters: [broker(0, 0), broker(1, 0)],
            slaves: [broker(0, 2), broker(1, 2)],
        })
    }

    /// Each TCP port with what it is for (the DNS port is also UDP).
    pub fn named(&self) -> Vec<(u16, String)> {
        let mut ports = vec![
            (self.dns, "the DNS server".to_owned()),
            (self.control, "the control port".to_owned()),
        ];
        for (i, port) in self.nameservers.iter().enumerate() {
            ports.push((*port, format!("NameServer ns{}", i + 1)));
        }
        for (group, master) in GROUPS.iter().zip(&self.masters) {
            ports.push((master.listen, format!("the {group} master")));
            ports.push((master.http, format!("the {group} master's HTTP")));
        }
        for (group, slave) in GROUPS.iter().zip(&self.slaves) {
            ports.push((slave.listen, format!("the {group} slave")));
            ports.push((slave.http, format!("the {group} slave's HTTP")));
        }
        ports
    }

    /// A clear error naming the first port another process holds.
    pub fn check_free(&self) -> anyhow::Result<()> {
        for (port, what) in self.named() {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let taken = TcpListener::bind(addr).is_err()
                || (port == self.dns && UdpSocket::bind(addr).is_err());
            if taken {
                anyhow::bail!(
                    "port {port} ({what}) is taken on 127.0.0.1: is another smq dev running? \
                     stop it, or move every port with --base-port"
                );
            }
        }
        Ok(())
    }

    /// 127.0.0.1:`port`.
    pub fn local(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_port_moves_every_port_and_none_overlap() {
        let ports = Ports::new(Some(20000)).unwrap();
        let mut numbers: Vec<u16> = ports.named().into_iter().map(|(p, _)| p).collect();
        assert!(numbers.iter().all(|p| (20000..20030).contains(p)));
        numbers.sort();
        numbers.dedup();
        assert_eq!(numbers.len(), ports.named().len());
        let standard = Ports::new(None).unwrap();
        assert_eq!((standard.dns, standard.nameservers[0]), (15353, 9876));
    }

    #[test]
    fn base_port_out_of_range_is_refused() {
        let error = Ports::new(Some(65530)).unwrap_err().to_string();
        assert!(error.contains("--base-port 65530"), "{error}");
    }

    #[test]
    fn a_taken_port_is_named() {
        assert!(Ports::new(Some(0)).is_err(), "port 0 is no base");
        let holder = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = holder.local_addr().unwrap().port();
        if let Ok(ports) = Ports::new(Some(base)) {
            let error = ports.check_free().unwrap_err().to_string();
            assert!(
                error.contains(&format!("port {base} (the DNS server)")),
                "{error}"
            );
        }
    }
}
