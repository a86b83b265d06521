//! Registration with the NameServer: with `--nameserver` or `--srv`, a task sends a
//! [`Heartbeat`] (everything the NameServer knows about this broker: cluster, group, role,
//! addresses, topics with queue counts and permissions, data version, log end offset) right after
//! start, then every `heartbeat_interval_ms` the NameServer's reply asks for, and at once after a
//! topic is created or deleted and when the store fences its log (its topics then go unwritable). Each heartbeat replaces the last whole, so a lost one loses
//! nothing. It carries the broker's master epoch: an accepted heartbeat renews a master's write
//! lease, and one refused as stale makes it follow the group's newer master
//! ([`crate::replication::role_change`]).
//!
//! When no NameServer answers, the broker goes on serving clients and keeps trying, as a client's
//! first lookup does: after 50 ms, then pauses doubling up to 500 ms (never longer than the
//! heartbeat interval), discovery re-resolving the SRV record after each failure, so a repointed
//! record is followed within half a second and a new NameServer learns of the broker at once. It
//! logs one warning when an outage starts and one line when it ends, not one per attempt.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smq_client::discovery::{Discovery, DiscoveryError, DiscoveryOptions};
use smq_client::nameserver_client::{Backoff, NameServerClient};
use smq_protocol::nameserver_api::{
    ConsumerOffset, Heartbeat, TopicQueues, HEARTBEAT_INTERVAL_MS_DEFAULT,
};

use crate::config::BrokerConfig;
use crate::replication::role_change;
use crate::state::{shutting_down, Broker};
use smq_protocol::Role;

/// Shortest interval honoured from a reply, so that a misconfigured NameServer cannot make the
/// broker spin.
pub const MIN_HEARTBEAT_INTERVAL_MS: u64 = 100;

/// The discovery the flags ask for; `Ok(None)` when the broker runs standalone.
pub fn discovery(config: &BrokerConfig) -> Result<Option<Discovery>, DiscoveryError> {
    config
        .discovery
        .clone()
        .map(|mode| Discovery::new(mode, DiscoveryOptions::default()))
        .transpose()
}

/// What this broker tells the NameServer now.
pub fn heartbeat(broker: &Broker, addr: SocketAddr, http_addr: Option<SocketAddr>) -> Heartbeat {
    // --advertise names the broker as clients reach it; else the address it listens on.
    let addr = broker
        .config
        .advertise
        .clone()
        .unwrap_or_else(|| addr.to_string());
    let (data_version, topics) = broker.topic_configs();
    // A fenced log takes no writes until a restart: the NameServer's routes then show this
    // group's queues as not writable, and producers send elsewhere.
    // So does a master refusing writes (it lost what its slave holds, or was superseded).
    let now = broker.role_now();
    let fenced = broker.store.fenced_reason().is_some() || now.refusing_writes.is_some();
    let config = &broker.config;
    Heartbeat {
        cluster: config.cluster.clone(),
        group: config.group.clone(),
        role: now.role,
        name: config.broker_name.clone(),
        addr,
        http_addr: http_addr.map(|a| a.to_string()),
        master_addr: match now.role {
            Role::Slave => now.master.clone(),
            Role::Master => None,
        },
        data_version,
        log_end_position: broker.store.end_position(),
        replication_lag_ms: match now.role {
            Role::Slave => broker.slave_status.lag().ms,
            Role::Master => None,
        },
        in_sync_slaves: broker
            .replicas
            .slaves()
            .into_iter()
            .filter(|slave| slave.in_sync)
            .map(|slave| slave.addr)
            .collect(),
        topics: topics
            .into_iter()
            .map(|t| TopicQueues {
                name: t.name,
                id: t.id,
                queues: t.queues,
                readable: t.readable,
                writable: t.writable && !fenced,
            })
            .collect(),
        consumer_offsets: consumer_offsets(broker),
        master_epoch: role_change::claimed_epoch(broker),
        acknowledged_position: match now.role {
            Role::Master => Some(role_change::acknowledged_position(broker)),
            Role::Slave => None,
        },
        claim: now.role == Role::Master && broker.store.master_epoch() == 0,
        known_groups: broker
            .nameserver_groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
    }
}

/// Every consumer group's committed offset here, with the queue's end and the store time of the
/// oldest message not consumed: what the NameServer computes lag from.
pub fn consumer_offsets(broker: &Broker) -> Vec<ConsumerOffset> {
    broker
        .offsets
        .all()
        .into_iter()
        .map(|stored| {
            let (_, end_offset) = broker.store.queue_offsets(&stored.topic, stored.queue);
            // As FetchOffset answers it: never past the visible end.
            let offset = stored.committed.offset.min(end_offset);
            let oldest_unconsumed_ms = (offset < end_offset)
                .then(|| {
                    broker
                        .store
                        .stored_at_ms(&stored.topic, stored.queue, offset)
                })
                .flatten();
            ConsumerOffset {
                consumer_group: stored.consumer_group,
                topic: stored.topic,
                queue_id: stored.queue,
                offset,
                owner_epoch: stored.committed.owner_epoch,
                end_offset,
                oldest_unconsumed_ms,
            }
        })
        .collect()
}

/// Heartbeats until the broker shuts down.
pub async fn run(
    broker: Arc<Broker>,
    client: NameServerClient,
    addr: SocketAddr,
    http_addr: Option<SocketAddr>,
) {
    let mut shutdown = broker.shutdown.clone();
    let mut interval = Duration::from_millis(HEARTBEAT_INTERVAL_MS_DEFAULT);
    let mut registered = false;
    let mut in_outage = false;
    let mut backoff = Backoff::default();
    // When the last heartbeat the NameServer accepted was sent, and its timeout then.
    let mut last_accepted: Option<(Instant, Duration)> = None;
    loop {
        // Read before the heartbeat is made: a fence after this heartbeats again at once.
        let fenced = broker.store.fenced_reason().is_some();
        let sent_at = Instant::now();
        rearm_if_possibly_expired(&broker, last_accepted, sent_at);
        let beat = heartbeat(&broker, addr, http_addr);
        let result = tokio::select! {
            _ = shutting_down(&mut shutdown) => return,
            result = client.heartbeat(&beat) => result,
        };
        match &result {
            Ok(reply) => {
                last_accepted = Some((sent_at, Duration::from_millis(reply.heartbeat_timeout_ms)));
                if !reply.groups.is_empty() {
                    *broker
                        .nameserver_groups
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = reply.groups.clone();
                }
                role_change::after_heartbeat(&broker, reply);
                if reply.slaves.as_ref().is_some_and(Vec::is_empty) {
                    broker
                        .offsets_reconciliation
                        .settle("the NameServer knows no live slave of this group");
                }
                interval = Duration::from_millis(
                    reply.heartbeat_interval_ms.max(MIN_HEARTBEAT_INTERVAL_MS),
                );
                if in_outage {
                    tracing::info!("a NameServer answers again: registered");
                } else if !registered {
                    tracing::info!(
                        heartbeat_interval_ms = reply.heartbeat_interval_ms,
                        heartbeat_timeout_ms = reply.heartbeat_timeout_ms,
                        "registered with the NameServer"
                    );
                }
                registered = true;
                in_outage = false;
            }
            Err(error) => {
                if let Some((group_epoch, master)) = role_change::stale(error) {
                    role_change::superseded(&broker, group_epoch, master).await;
                }
                if !in_outage {
                    tracing::warn!(%error, "heartbeat failed: still serving clients; retrying within half a second, re-resolving the NameServer");
                } else {
                    tracing::debug!(%error, "heartbeat failed again");
                }
                in_outage = true;
            }
        }
        let pause = match &result {
            Err(error) if error.is_retryable() => backoff.next_pause().min(interval),
            _ => {
                backoff.reset();
                interval
            }
        };
        tokio::select! {
            _ = shutting_down(&mut shutdown) => return,
            _ = tokio::time::sleep(pause) => {}
            _ = broker.topics_changed.notified() => {}
            // A fenced log takes no writes: the NameServer must stop routing them here now.
            _ = broker.store.fenced(), if !fenced => {}
        }
    }
}

/// A master none of whose heartbeats was accepted for longer than the NameServer's heartbeat
/// timeout (it was stopped, paused, or cut off from the NameServer) may have been dropped from
/// the routes: consumers then read its queues from its slave and committed there. Before this
/// heartbeat puts it back in the routes, FetchOffset waits again for the slave's offsets
/// (proto-spec.md §5.7, [`crate::metadata::reconciliation`]).
fn rearm_if_possibly_expired(
    broker: &Broker,
    last_accepted: Option<(Instant, Duration)>,
    now: Instant,
) {
    let Some((accepted_at, timeout)) = last_accepted else {
        return;
    };
    let away = now.saturating_duration_since(accepted_at);
    if away > timeout && broker.role_now().role == Role::Master {
        broker.offsets_reconciliation.rearm(&format!(
            "no heartbeat of this master was accepted for {} ms, longer than the NameServer's timeout ({} ms): consumers may have committed on its slave",
            away.as_millis(),
            timeout.as_millis()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smq_client::discovery::DiscoveryMode;

    #[test]
    fn no_flags_means_standalone_and_bad_flags_are_named() {
        use crate::config::Settings;
        use clap::Parser;

        let config = |flags: &[&str]| {
            let settings = Settings::try_parse_from([&["smq-broker"], flags].concat())?;
            Ok::<_, Box<dyn std::error::Error>>(BrokerConfig::from_settings(settings)?)
        };
        assert!(discovery(&config(&[]).unwrap()).unwrap().is_none());
        let found = config(&["--nameserver", "127.0.0.1:9876, ns2"]).unwrap();
        assert_eq!(
            discovery(&found).unwrap().unwrap().mode(),
            &DiscoveryMode::Static(vec![
                "http://127.0.0.1:9876".into(),
                "http://ns2:9876".into()
            ])
        );
        let srv = config(&[
            "--srv",
            "_smq-ns._tcp.smq.test",
            "--dns-server",
            "127.0.0.1:53",
        ]);
        assert_eq!(
            srv.unwrap().discovery,
            Some(DiscoveryMode::Srv {
                name: "_smq-ns._tcp.smq.test".into(),
                dns_server: Some("127.0.0.1:53".parse().unwrap()),
            })
        );
        for (flags, named) in [
            (["--dns-server", "not-an-address"], "not-an-address"),
            (["--nameserver", "ftp://ns1"], "ftp"),
        ] {
            // What main prints: the error and its causes.
            let error = smq_settings::error_chain(&*config(&flags).unwrap_err());
            assert!(error.contains(named), "{flags:?}: {error}");
        }
    }

    /// Every heartbeat, the role changes' claims and probes too, names the groups the last
    /// NameServer knew: one without them would tell a NameServer taking over that none are
    /// missing.
    #[tokio::test]
    async fn every_heartbeat_names_the_groups_the_last_nameserver_knew() {
        let dir = tempfile::tempdir().unwrap();
        let running = crate::start(BrokerConfig::for_tests(dir.path()))
            .await
            .unwrap();
        let addr = running.tcp_addr();
        assert!(heartbeat(&running.broker, addr, None)
            .known_groups
            .is_empty());
        *running.broker.nameserver_groups.lock().unwrap() = vec!["g1".into(), "g2".into()];
        assert_eq!(
            heartbeat(&running.broker, addr, None).known_groups,
            ["g1", "g2"]
        );
    }
}
