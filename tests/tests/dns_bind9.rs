//! Discovery against a real bind9 (Debian's `named`, started by the harness), repointed with
//! `nsupdate` as an operator would (proto-spec.md §9.3), and the deploy/dns examples checked
//! with bind's own tools. Needs `apt-get install bind9 bind9-dnsutils` (scripts/test.sh installs
//! them when it can; without them these tests are listed as not run).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use smq_client::discovery::{Discovery, DiscoveryMode, DiscoveryOptions};
use smq_tests::bind9::{program, Bind9};

const NAME: &str = "_smq-ns._tcp.smq.test.";
const PORT1: u16 = 19_871;
const PORT2: u16 = 19_872;

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// bind9 serving smq.test. with ns1 and ns2 (both 127.0.0.1) and `srv` = the SRV record lines;
/// None when bind9 is not installed (the test was reported as not run, and returns).
fn bind9(srv: &[&str]) -> Option<Bind9> {
    if smq_tests::bind9::unavailable() {
        return None;
    }
    let mut records = vec!["ns1 A 127.0.0.1", "ns2 A 127.0.0.1"];
    records.extend_from_slice(srv);
    Some(Bind9::start("smq.test.", &records))
}

fn discovery(dns: &Bind9) -> Discovery {
    let mode = DiscoveryMode::Srv {
        name: NAME.to_owned(),
        dns_server: Some(dns.addr),
    };
    let options = DiscoveryOptions {
        dns_timeout: Duration::from_millis(500),
        ..DiscoveryOptions::default()
    };
    Discovery::new(mode, options).expect("discovery")
}

#[tokio::test]
async fn discovery_follows_an_nsupdate_repoint_within_the_ttl() {
    let record = format!("_smq-ns._tcp 2 IN SRV 0 0 {PORT1} ns1");
    let Some(dns) = bind9(&[&record]) else {
        return;
    };
    let d = discovery(&dns);
    assert_eq!(d.resolve().await.unwrap(), [url(PORT1)]);
    let answer = d.lookup_now().await.unwrap();
    assert_eq!(answer.ttl, Duration::from_secs(2));
    assert!(answer.targets[0].is(&format!("ns1.smq.test:{PORT1}")));

    let repointed = Instant::now();
    dns.set_srv(NAME, 2, &[(0, 0, PORT2, "ns2")]);
    // nsupdate returns once named has applied the update: DNS says PORT2 now...
    let now = d.lookup_now().await.unwrap();
    assert_eq!(now.urls(), [url(PORT2)], "named's log:\n{}", dns.log());
    assert!(now.targets[0].is(&format!("ns2.smq.test:{PORT2}")));
    // ... and discovery, which trusts its answer for the 2 s TTL, follows within TTL + margin.
    // Never anything but the old or the new target: the delete and the add were one update.
    let deadline = Duration::from_secs(2) + Duration::from_secs(2);
    loop {
        let urls = d.resolve().await.unwrap();
        if urls == [url(PORT2)] {
            break;
        }
        assert_eq!(urls, [url(PORT1)], "neither the old nor the new target");
        assert!(
            repointed.elapsed() < deadline,
            "discovery still says {urls:?} {:?} after the repoint",
            repointed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("repoint seen by discovery after {:?}", repointed.elapsed());
}

#[tokio::test]
async fn discovery_orders_by_priority_and_puts_a_failed_target_last() {
    let records = [
        format!("_smq-ns._tcp 2 IN SRV 20 0 {PORT2} ns2"),
        format!("_smq-ns._tcp 2 IN SRV 10 0 {PORT1} ns1"),
    ];
    let Some(dns) = bind9(&[&records[0], &records[1]]) else {
        return;
    };
    let d = discovery(&dns);
    assert_eq!(d.resolve().await.unwrap(), [url(PORT1), url(PORT2)]);
    d.mark_failed(&url(PORT1));
    assert_eq!(d.resolve().await.unwrap(), [url(PORT2), url(PORT1)]);

    // The operator swaps the priorities in one update: a fresh client now prefers ns2 too.
    dns.set_srv(
        "_smq-ns._tcp",
        2,
        &[(10, 0, PORT2, "ns2"), (20, 0, PORT1, "ns1")],
    );
    assert_eq!(
        discovery(&dns).resolve().await.unwrap(),
        [url(PORT2), url(PORT1)]
    );
}

#[tokio::test]
async fn set_a_moves_a_target_to_another_address() {
    let record = format!("_smq-ns._tcp 2 IN SRV 0 0 {PORT1} ns1");
    let Some(dns) = bind9(&[&record]) else {
        return;
    };
    let d = discovery(&dns);
    assert_eq!(d.resolve().await.unwrap(), [url(PORT1)]);
    dns.set_a("ns1", Ipv4Addr::new(127, 0, 0, 2));
    let answer = d.lookup_now().await.unwrap();
    assert_eq!(
        answer.targets[0].addrs,
        [SocketAddr::from(([127, 0, 0, 2], PORT1))]
    );
}

#[tokio::test]
async fn removing_the_srv_record_is_reported_as_missing() {
    let record = format!("_smq-ns._tcp 2 IN SRV 0 0 {PORT1} ns1");
    let Some(dns) = bind9(&[&record]) else {
        return;
    };
    dns.set_srv(NAME, 2, &[]);
    let error = discovery(&dns).resolve().await.unwrap_err();
    assert!(error.to_string().contains(NAME), "{error}");
}

#[test]
fn through_bind9_a_producer_rides_through_an_nsupdate_repoint_without_a_failed_send() {
    let Some(dns) = bind9(&[]) else {
        return;
    };
    smq_tests::failover::a_producer_rides_through_a_repoint(&dns);
}

#[test]
fn through_bind9_fresh_smq_produce_processes_ride_through_an_nsupdate_repoint() {
    let Some(dns) = bind9(&[]) else {
        return;
    };
    smq_tests::failover::fresh_producers_ride_through_a_repoint(
        &dns,
        smq_tests::failover::Standby::Running,
    );
}

#[test]
fn through_bind9_fresh_smq_produce_processes_ride_through_a_repoint_to_a_cold_nameserver() {
    let Some(dns) = bind9(&[]) else {
        return;
    };
    smq_tests::failover::fresh_producers_ride_through_a_repoint(
        &dns,
        smq_tests::failover::Standby::StartedAfterTheRepoint,
    );
}

#[test]
fn through_bind9_a_fenced_nameserver_serves_within_200_ms_of_being_named() {
    let Some(dns) = bind9(&[]) else {
        return;
    };
    smq_tests::failover::a_fenced_nameserver_serves_as_soon_as_the_record_names_it(&dns);
}

/// deploy/dns/bind9: the zone loads with named-checkzone, and named.conf.smq (with its key file
/// and zone file paths moved into a temporary directory) passes named-checkconf -z.
#[test]
fn deploy_bind9_examples_are_valid() {
    if smq_tests::bind9::unavailable() {
        return;
    }
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/dns/bind9");
    let zone = examples.join("db.smq.example");
    run_ok(
        Command::new(program("named-checkzone"))
            .arg("smq.example.com")
            .arg(&zone),
    );

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let conf = std::fs::read_to_string(examples.join("named.conf.smq")).unwrap();
    assert!(conf.contains("/etc/bind/smq-update.key") && conf.contains("/var/lib/bind/"));
    let conf = conf
        .replace("/etc/bind/", &format!("{d}/"))
        .replace("/var/lib/bind/", &format!("{d}/"));
    std::fs::write(dir.path().join("named.conf"), conf).unwrap();
    std::fs::copy(&zone, dir.path().join("db.smq.example")).unwrap();
    let key =
        run_ok(Command::new(program("tsig-keygen")).args(["-a", "hmac-sha256", "smq-update"]));
    std::fs::write(dir.path().join("smq-update.key"), key).unwrap();
    run_ok(
        Command::new(program("named-checkconf"))
            .arg("-z")
            .arg(dir.path().join("named.conf")),
    );
}

/// Runs `command`, fails the test with its output unless it succeeds, and returns its stdout.
fn run_ok(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
