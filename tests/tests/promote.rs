//! Switchover of a broker group through the real binaries (issue 16 point 7): `smq group
//! promote` makes a slave the master with the next epoch while producers go on; the old master
//! follows it, and, restarted, learns from the NameServer that it was superseded; a slave that
//! lacks acknowledged bytes is promoted only with `--force`; a master that can renew its lease
//! with neither the NameServer nor a slave stops acknowledging synchronously replicated writes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smq_client::nameserver_api::ClusterView;
use smq_client::protocol::Role;
use smq_client::{ClientConfig, Message, Producer};
use smq_tests::{runtime, slave_of, wait_for, Broker, NameServer};

fn secret_file(dir: &Path) -> PathBuf {
    let path = dir.join("replication-secret");
    std::fs::write(&path, "promote-secret\n").unwrap();
    path
}

/// The arguments every broker of the group gets: the NameServer, the group, the secret, small
/// segments, and `extra`.
fn group_args<'a>(nameserver: &'a str, secret: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--nameserver",
        nameserver,
        "--group",
        "g1",
        "--replication-secret-file",
        secret.to_str().unwrap(),
        "--segment-bytes",
        "16777216",
    ];
    args.extend_from_slice(extra);
    args
}

fn cluster(nameserver: &NameServer) -> ClusterView {
    let (status, body) = nameserver.get("/v1/cluster");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits until the NameServer lists `addr` in group g1 with `role` (and, for a slave, `master`).
fn wait_for_role(nameserver: &NameServer, addr: &str, role: Role, master: Option<&str>) {
    wait_for(
        &format!("{addr} as {role:?} of {master:?}"),
        Duration::from_secs(30),
        || {
            cluster(nameserver)
                .brokers
                .iter()
                .any(|b| {
                    b.addr == addr
                        && b.role == role
                        && (role == Role::Master || b.master_addr.as_deref() == master)
                })
                .then_some(())
        },
    );
}

/// Waits until the master at `addr` reports a slave in sync.
fn wait_for_in_sync(nameserver: &NameServer, master: &str) {
    wait_for("a slave in sync", Duration::from_secs(30), || {
        cluster(nameserver)
            .brokers
            .iter()
            .any(|b| b.role == Role::Slave && b.in_sync == Some(true))
            .then_some(())
            .filter(|_| {
                cluster(nameserver)
                    .brokers
                    .iter()
                    .any(|b| b.addr == master && b.role == Role::Master)
            })
    });
}

fn wait_for_log(broker: &Broker, what: &str, found: impl Fn(&str) -> bool) -> String {
    wait_for(what, Duration::from_secs(30), || {
        broker.log_lines().into_iter().find(|line| found(line))
    })
}

/// A master (sync or async replication as `replication` says) and its slave registered with a
/// NameServer whose heartbeat timeout is `timeout_ms`, and topic `t` of 4 queues.
struct Group {
    _dir: tempfile::TempDir,
    secret: PathBuf,
    nameserver: NameServer,
    master: Broker,
    slave: Broker,
}

fn start_group(replication: &str, timeout_ms: &str, extra: &[&str]) -> Group {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path());
    let nameserver = NameServer::start(&["--heartbeat-timeout-ms", timeout_ms]);
    let url = nameserver.url();
    let mut master_extra = vec!["--replication", replication];
    master_extra.extend_from_slice(extra);
    let master = Broker::start_in(
        &dir.path().join("master"),
        &group_args(&url, &secret, &master_extra),
    );
    let master_addr = master.addr.to_string();
    let mut slave_extra = slave_of(&master_addr);
    slave_extra.extend(["--replication", replication]);
    slave_extra.extend_from_slice(extra);
    let slave = Broker::start_in(
        &dir.path().join("slave"),
        &group_args(&url, &secret, &slave_extra),
    );
    wait_for_in_sync(&nameserver, &master_addr);
    smq_tests::succeeds(
        nameserver
            .smq()
            .args(["topic", "create", "t", "--queues", "4"]),
    );
    Group {
        _dir: dir,
        secret,
        nameserver,
        master,
        slave,
    }
}

/// Every message of topic `t` stored at `addr`, per queue in offset order (checked to have no
/// gaps), once `expected` were read.
fn read_queues(addr: &str, expected: usize) -> BTreeMap<u32, Vec<String>> {
    smq_tests::healthy::read_queues(addr, "t", expected)
        .into_iter()
        .map(|(queue, bodies)| {
            let bodies = bodies
                .into_iter()
                .map(|body| String::from_utf8(body).unwrap());
            (queue, bodies.collect())
        })
        .collect()
}

/// `key-<k>|<seq>` bodies acknowledged, in the order each was acknowledged, with their queue.
type Acknowledged = Arc<Mutex<Vec<(u32, String, Instant)>>>;

/// Sends keyed messages (16 keys, round robin, one at a time, each again until acknowledged)
/// through the NameServer's routes until `stop`; records each acknowledged one, and returns the
/// errors of the sends that failed.
fn produce_keyed(
    nameserver: &NameServer,
    stop: Arc<AtomicBool>,
    acknowledged: Acknowledged,
) -> std::thread::JoinHandle<Vec<String>> {
    let mut config = nameserver.client_config(200);
    config.request_timeout_ms = 2_000;
    config.send_timeout_ms = 20_000;
    std::thread::spawn(move || {
        runtime().block_on(async {
            let producer = Producer::connect(config).await.unwrap();
            let mut failed = Vec::new();
            let mut seq = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("key-{}", seq % 16);
                let body = format!("{key}|{seq:06}");
                let message = Message {
                    key: key.into_bytes(),
                    ..Message::from_body(body.clone())
                };
                match producer.send("t", message).await {
                    Ok(delivery) => {
                        acknowledged
                            .lock()
                            .unwrap()
                            .push((delivery.queue_id, body, Instant::now()))
                    }
                    Err(error) => {
                        // The smq producer does not move a keyed message to another group:
                        // the application sends it again, as here (the same message, so the
                        // key's order holds).
                        failed.push(error.to_string());
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                }
                seq += 1;
            }
            failed
        })
    })
}

/// Asserts that `stored` holds every acknowledged message, each queue in the order the
/// messages were acknowledged (a key's messages keep their order), and nothing that was not
/// sent: a message stored twice (a retry whose first attempt was stored) is allowed, named.
fn assert_holds(
    stored: &BTreeMap<u32, Vec<String>>,
    acknowledged: &[(u32, String, Instant)],
    who: &str,
) {
    let mut expected: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for (queue, body, _) in acknowledged {
        expected.entry(*queue).or_default().push(body);
    }
    for (queue, bodies) in &expected {
        let held = stored.get(queue).map(Vec::as_slice).unwrap_or_default();
        // The acknowledged bodies appear in the queue in their order (a subsequence).
        let mut at = 0;
        for body in bodies {
            match held[at..].iter().position(|stored| stored == body) {
                Some(found) => at += found + 1,
                None => panic!(
                    "{who}: queue {queue} lacks acknowledged {body} (or holds it out of order)"
                ),
            }
        }
    }
    let all: BTreeSet<&str> = acknowledged
        .iter()
        .map(|(_, body, _)| body.as_str())
        .collect();
    let unacknowledged = stored
        .values()
        .flatten()
        .filter(|body| !all.contains(body.as_str()))
        .count();
    // Sends that failed or timed out may be stored; they are few.
    assert!(
        unacknowledged < 50,
        "{who}: {unacknowledged} unacknowledged messages stored"
    );
}

/// The must-show of issue 16 point 7: `smq group promote` while keyed messages are produced;
/// the keys resume on the new master; the old master follows it, and, killed and restarted as
/// a master, learns it was superseded and comes back as its slave; nothing acknowledged is lost,
/// on either broker, in order per queue.
#[test]
fn promote_while_producing_keyed_messages_loses_nothing_acknowledged() {
    let group = start_group("sync", "2000", &["--replication-timeout-ms", "2000"]);
    let (master_addr, slave_addr) = (group.master.addr.to_string(), group.slave.addr.to_string());
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged: Acknowledged = Arc::default();
    let producer = produce_keyed(&group.nameserver, stop.clone(), acknowledged.clone());
    wait_for(
        "200 acknowledged before the promotion",
        Duration::from_secs(30),
        || (acknowledged.lock().unwrap().len() >= 200).then_some(()),
    );

    let promoted = group.nameserver.promote("g1", &["--slave", &slave_addr]);
    let promoted_at = Instant::now();
    let stdout = String::from_utf8_lossy(&promoted.stdout);
    assert!(promoted.status.success(), "{promoted:?}");
    assert!(
        stdout.contains(&format!("promoted {slave_addr} to master of group g1")),
        "{stdout}"
    );
    assert!(stdout.contains("stopped taking writes"), "{stdout}");
    assert!(stdout.contains("follows the new master"), "{stdout}");
    wait_for_role(&group.nameserver, &slave_addr, Role::Master, None);
    wait_for_role(
        &group.nameserver,
        &master_addr,
        Role::Slave,
        Some(&slave_addr),
    );

    // Every key resumes on the new master.
    wait_for(
        "every key acknowledged after the promotion",
        Duration::from_secs(30),
        || {
            let keys: BTreeSet<String> = acknowledged
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, _, at)| *at > promoted_at)
                .map(|(_, body, _)| body.split('|').next().unwrap().to_owned())
                .collect();
            (keys.len() == 16).then_some(())
        },
    );
    stop.store(true, Ordering::Relaxed);
    let failed = producer.join().unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();
    // While the group has no master taking writes (the handover), keyed sends fail at once
    // with a retryable refusal ("takes no writes"), and only then.
    let unexpected: Vec<&String> = failed
        .iter()
        .filter(|error| !error.contains("takes no writes"))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{} of {} failures: {unexpected:?}",
        unexpected.len(),
        failed.len()
    );

    // The old master, killed and restarted as it was configured (a master), learns from the
    // NameServer that it was superseded and follows the new master.
    let url = group.nameserver.url();
    let restarted = group.master.kill_and_restart(&group_args(
        &url,
        &group.secret,
        &["--replication", "sync", "--replication-timeout-ms", "2000"],
    ));
    wait_for_log(
        &restarted,
        "the restarted master learning it was superseded",
        |line| line.contains("follows the group's master as its slave"),
    );
    wait_for_role(
        &group.nameserver,
        &master_addr,
        Role::Slave,
        Some(&slave_addr),
    );
    wait_for_in_sync(&group.nameserver, &slave_addr);

    let new_master_log = read_queues(&slave_addr, acknowledged.len());
    assert_holds(&new_master_log, &acknowledged, "the new master");
    let total: usize = new_master_log.values().map(Vec::len).sum();
    let old_master_log = read_queues(&master_addr, total);
    assert_eq!(
        old_master_log, new_master_log,
        "the old master, now a slave, holds the same"
    );
    drop(restarted);
}

/// With the master gone, a slave that lacks bytes the master acknowledged (asynchronous
/// replication: the master acknowledged writes the slave never received) is not promoted; with
/// `--force` it is, and the output says how many bytes may be lost.
#[test]
fn promote_refuses_a_slave_behind_the_acknowledged_position_unless_forced() {
    let group = start_group("async", "1500", &[]);
    let (master_addr, slave_addr) = (group.master.addr.to_string(), group.slave.addr.to_string());
    wait_for("the slave holding topic t", Duration::from_secs(30), || {
        cluster(&group.nameserver)
            .brokers
            .iter()
            .any(|b| b.addr == slave_addr && b.topics == 1)
            .then_some(())
    });
    let slave_dir = group.slave.data_dir.clone();
    // The slave stops; the master acknowledges more alone; its heartbeats report it.
    group.slave.kill();
    // The master's last report, if it came after `since`.
    let master_end_since = |view: &ClusterView, since: Instant| {
        view.brokers
            .iter()
            .find(|b| b.addr == master_addr)
            .filter(|b| u128::from(b.last_heartbeat_ms_ago) < since.elapsed().as_millis())
            .map(|b| b.log_end_position)
    };
    runtime().block_on(async {
        let producer = Producer::connect(ClientConfig::new(master_addr.clone()))
            .await
            .unwrap();
        for n in 0..50 {
            producer
                .send("t", Message::from_body(format!("alone-{n}")))
                .await
                .unwrap();
        }
    });
    let sent = Instant::now();
    let acknowledged_end = wait_for(
        "the master's report of what it acknowledged",
        Duration::from_secs(30),
        || {
            let view = cluster(&group.nameserver);
            let end = master_end_since(&view, sent)?;
            let g1 = view.groups.iter().find(|g| g.group == "g1")?;
            (g1.acknowledged_position == Some(end)).then_some(end)
        },
    );
    let master_dir = group.master.data_dir.clone();
    group.master.kill();
    let url = group.nameserver.url();
    let slave = Broker::start_on(
        &slave_addr,
        &slave_dir,
        &group_args(&url, &group.secret, &slave_of(&master_addr)),
    );
    wait_for(
        "the master gone from the routes",
        Duration::from_secs(30),
        || {
            let view = cluster(&group.nameserver);
            let g1 = view.groups.iter().find(|g| g.group == "g1")?;
            (!g1.master_live && view.brokers.iter().any(|b| b.addr == slave_addr)).then_some(())
        },
    );
    let refused = group
        .nameserver
        .smq()
        .args(["group", "promote", "g1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{refused:?}");
    assert!(stderr.contains("bytes short of"), "{stderr}");
    assert!(stderr.contains("force"), "{stderr}");

    let forced = group
        .nameserver
        .smq()
        .args(["group", "promote", "g1", "--force"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&forced.stdout);
    assert!(forced.status.success(), "{forced:?}");
    let slave_end = cluster(&group.nameserver)
        .brokers
        .iter()
        .find(|b| b.addr == slave_addr)
        .map(|b| b.log_end_position)
        .unwrap();
    let lost = acknowledged_end - slave_end;
    assert!(lost > 0);
    assert!(
        stdout.contains(&format!("forced: {lost} acknowledged bytes")),
        "{stdout} (acknowledged end {acknowledged_end}, slave end {slave_end})"
    );
    wait_for_role(&group.nameserver, &slave_addr, Role::Master, None);
    runtime().block_on(async {
        let producer = Producer::connect(ClientConfig::new(slave_addr.clone()))
            .await
            .unwrap();
        producer
            .send("t", Message::from_body("after the promotion"))
            .await
            .unwrap();
    });
    // The old master comes back as it was configured: the NameServer refuses its claim as
    // stale, and it follows the new master, dropping the tail the new master never had.
    let old_master = Broker::start_on(
        &master_addr,
        &master_dir,
        &group_args(&url, &group.secret, &["--replication", "async"]),
    );
    wait_for_log(
        &old_master,
        "the old master learning it was superseded",
        |line| line.contains("a slave was promoted while this broker was away"),
    );
    let dropped = wait_for_log(&old_master, "the dropped tail", |line| {
        line.contains("dropped the tail of this slave's log")
    });
    assert!(
        dropped.contains(&format!("bytes={lost}")),
        "{dropped} (expected bytes={lost}: acknowledged end {acknowledged_end}, the promoted \
         slave's end {slave_end}; the old master's log: {:#?})",
        old_master.log_lines()
    );
    wait_for_role(
        &group.nameserver,
        &master_addr,
        Role::Slave,
        Some(&slave_addr),
    );
    drop(slave);
}

/// The single-writer lease: a master under synchronous replication whose NameServer is gone and
/// whose slave answers nothing (stopped, its connection still open, still counted in sync) stops
/// acknowledging writes once a lease period (the NameServer's heartbeat timeout) passed, with a
/// retryable error naming the group; when the slave answers again it acknowledges them again.
#[test]
fn a_master_that_cannot_renew_its_lease_stops_acknowledging_sync_writes() {
    let group = start_group(
        "sync",
        "1000",
        &[
            "--replica-lag-time-max-ms",
            "60000",
            "--replication-timeout-ms",
            "500",
        ],
    );
    let master_addr = group.master.addr.to_string();
    let send = |body: &str| {
        runtime().block_on(async {
            let mut config = ClientConfig::new(master_addr.clone());
            config.request_timeout_ms = 1_000;
            config.ack_timeout_ms = 400;
            config.attempt_timeout_ms = 1_000;
            config.send_timeout_ms = 1_500;
            let producer = Producer::connect(config).await.unwrap();
            producer
                .send("t", Message::from_body(body.to_owned()))
                .await
        })
    };
    send("before").unwrap();
    let pid = group.slave.pid() as libc::pid_t;
    // SAFETY: plain syscalls on a child process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    group.nameserver.stop();
    let refused = wait_for("the lease lapsing", Duration::from_secs(30), || {
        send("during")
            .err()
            .map(|error| error.to_string())
            .filter(|e| e.contains("lease"))
    });
    assert!(refused.contains("broker group g1"), "{refused}");
    assert!(refused.contains("write lease"), "{refused}");
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    wait_for("writes acknowledged again", Duration::from_secs(30), || {
        send("after").ok()
    });
    wait_for_log(&group.master, "the lease renewed", |line| {
        line.contains("the write lease is renewed")
    });
}

/// Epochs live in the NameServer's memory only. After a forced promotion (the old master was
/// down, so it never learned of it), the NameServer restarts and the old master restarts beside
/// it, claiming the next epoch of its own history: the number the promoted master writes in.
/// The NameServer, warming up, decides no claim before the promoted master renewed its epoch:
/// the promoted master keeps the group and what it acknowledged; the old master follows it.
#[test]
fn a_restarted_nameserver_lets_no_restarted_old_master_take_the_group() {
    let Group {
        _dir,
        secret,
        nameserver,
        master,
        slave,
    } = start_group("async", "3000", &[]);
    let (master_addr, slave_addr) = (master.addr.to_string(), slave.addr.to_string());
    wait_for("the slave holding topic t", Duration::from_secs(30), || {
        cluster(&nameserver)
            .brokers
            .iter()
            .any(|b| b.addr == slave_addr && b.topics == 1)
            .then_some(())
    });
    let master_dir = master.data_dir.clone();
    master.kill();
    wait_for(
        "the master gone from the routes",
        Duration::from_secs(30),
        || {
            let view = cluster(&nameserver);
            let g1 = view.groups.iter().find(|g| g.group == "g1")?;
            (!g1.master_live).then_some(())
        },
    );
    let forced = nameserver
        .smq()
        .args(["group", "promote", "g1", "--force"])
        .output()
        .unwrap();
    assert!(forced.status.success(), "{forced:?}");
    wait_for_role(&nameserver, &slave_addr, Role::Master, None);
    runtime().block_on(async {
        let producer = Producer::connect(ClientConfig::new(slave_addr.clone()))
            .await
            .unwrap();
        for n in 0..20 {
            producer
                .send("t", Message::from_body(format!("promoted-{n}")))
                .await
                .unwrap();
        }
    });
    let listen = nameserver.addr.to_string();
    nameserver.stop();
    let nameserver = NameServer::start_on(&listen, &["--heartbeat-timeout-ms", "3000"]);
    let url = nameserver.url();
    let old_master = Broker::start_on(
        &master_addr,
        &master_dir,
        &group_args(&url, &secret, &["--replication", "async"]),
    );
    wait_for_log(
        &old_master,
        "the old master learning it was superseded",
        |line| line.contains("a slave was promoted while this broker was away"),
    );
    wait_for_role(&nameserver, &master_addr, Role::Slave, Some(&slave_addr));
    wait_for_role(&nameserver, &slave_addr, Role::Master, None);
    assert!(
        !slave
            .log_lines()
            .iter()
            .any(|line| line.contains("another broker was promoted")),
        "the promoted master was never superseded"
    );
    let held: usize = read_queues(&slave_addr, 20).values().map(Vec::len).sum();
    assert_eq!(
        held, 20,
        "every acknowledged message is on the promoted master"
    );
}
