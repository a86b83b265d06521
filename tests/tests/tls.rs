//! TLS through the real binaries, with a CA and certificates made for the test: produce and
//! consume over TLS, a slave copying its master over TLS, a broker heartbeating to an HTTPS
//! NameServer and clients finding routes there; a client that does not trust the CA, a
//! plaintext client on a TLS port and a client without the certificate a broker requires are
//! each refused with a message that says what to do, and the broker keeps serving the others.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use smq_tests::{ok, run_with_stdin, wait_for, Broker, NameServer};
use smq_tls::testing::TestPki;

/// Segments are reserved on disk whole (and one ahead): small ones, for a busy machine.
const SEGMENT_BYTES: &str = "16777216";
const CLUSTER_SECRET: &str = "the-cluster-secret";

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A broker serving TLS with the test PKI's server certificate, and `extra` flags.
fn tls_broker(pki: &TestPki, extra: &[&str]) -> Broker {
    let args = [
        "--tls-cert",
        path(&pki.cert),
        "--tls-key",
        path(&pki.key),
        "--segment-bytes",
        SEGMENT_BYTES,
    ];
    Broker::start(&[&args[..], extra].concat())
}

/// The CLI pointed at `broker`, trusting `ca` (or talking plaintext without one).
fn smq(broker: &Broker, ca: Option<&Path>) -> Command {
    let mut command = broker.smq();
    command.env_remove("SMQ_TLS_CA");
    if let Some(ca) = ca {
        command.arg("--tls-ca").arg(ca);
    }
    command
}

fn consume(command: &mut Command, count: usize) -> Vec<String> {
    let output = ok(command
        .args([
            "consume", "orders", "--group", "audit", "--from", "earliest",
        ])
        .args(["--count", &count.to_string(), "--idle-timeout", "10"])
        .output()
        .unwrap());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A test PKI in a new directory, a TLS broker with `extra` flags, and topic `orders` with
/// `queues` queues created over TLS.
fn pki_and_broker(queues: &str, extra: &[&str]) -> (tempfile::TempDir, TestPki, Broker) {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let broker = tls_broker(&pki, extra);
    ok(smq(&broker, Some(&pki.ca))
        .args(["topic", "create", "orders", "--queues", queues])
        .output()
        .unwrap());
    (dir, pki, broker)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn produce_and_consume_over_tls_with_a_generated_ca() {
    let (_dir, pki, broker) = pki_and_broker("2", &[]);
    let lines: Vec<String> = (0..500).map(|i| format!("message {i}")).collect();
    ok(run_with_stdin(
        smq(&broker, Some(&pki.ca)).args(["produce", "orders"]),
        (lines.join("\n") + "\n").as_bytes(),
    ));
    let mut got = consume(&mut smq(&broker, Some(&pki.ca)), lines.len());
    got.sort();
    let mut expected = lines;
    expected.sort();
    assert_eq!(got, expected);
}

#[test]
fn clients_that_cannot_talk_tls_are_refused_clearly_and_the_broker_serves_the_others() {
    let (_dir, pki, broker) = pki_and_broker("1", &[]);

    // A client trusting another CA: the certificate is not trusted, and it says which flag.
    let untrusting = run_with_stdin(
        smq(&broker, Some(&pki.other_ca)).args(["produce", "orders"]),
        b"never stored\n",
    );
    assert!(!untrusting.status.success());
    let message = stderr(&untrusting);
    assert!(message.contains("not trusted"), "{message}");
    assert!(message.contains("--tls-ca"), "{message}");

    // A plaintext client: the broker answers in smq's protocol that it speaks TLS only.
    let plaintext = smq(&broker, None).args(["topic", "list"]).output().unwrap();
    assert!(!plaintext.status.success());
    let message = stderr(&plaintext);
    assert!(message.contains("speaks TLS only"), "{message}");

    // Both were logged, and a client with the CA is served as before.
    ok(run_with_stdin(
        smq(&broker, Some(&pki.ca)).args(["produce", "orders"]),
        b"stored\n",
    ));
    assert_eq!(consume(&mut smq(&broker, Some(&pki.ca)), 1), ["stored"]);
    let log = broker.log_lines();
    assert!(
        log.iter()
            .any(|line| line.contains("plaintext client on the TLS port")),
        "{log:#?}"
    );
}

#[test]
fn a_broker_requiring_client_certificates_admits_only_clients_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let broker = tls_broker(&pki, &["--tls-client-ca", path(&pki.ca)]);
    let without = smq(&broker, Some(&pki.ca))
        .args(["topic", "list"])
        .output()
        .unwrap();
    assert!(!without.status.success());
    let message = stderr(&without);
    assert!(message.to_lowercase().contains("certificate"), "{message}");
    ok(smq(&broker, Some(&pki.ca))
        .arg("--tls-cert")
        .arg(&pki.client_cert)
        .arg("--tls-key")
        .arg(&pki.client_key)
        .args(["topic", "create", "orders", "--queues", "1"])
        .output()
        .unwrap());
}

#[test]
fn a_slave_copies_its_master_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let secret = dir.path().join("replication.secret");
    std::fs::write(&secret, "replication\n").unwrap();
    let master = tls_broker(&pki, &["--replication-secret-file", path(&secret)]);
    ok(smq(&master, Some(&pki.ca))
        .args(["topic", "create", "orders", "--queues", "1"])
        .output()
        .unwrap());
    ok(run_with_stdin(
        smq(&master, Some(&pki.ca)).args(["produce", "orders"]),
        b"replicated\n",
    ));
    let master_addr = master.addr.to_string();
    let slave = |tls_ca: &[&str]| {
        let args = [
            "--role",
            "slave",
            "--master",
            &master_addr,
            "--replication-secret-file",
            path(&secret),
            "--segment-bytes",
            SEGMENT_BYTES,
        ];
        Broker::start(&[&args[..], tls_ca].concat())
    };
    // The slave calls its master over TLS (--tls-ca) and serves plaintext itself.
    let slave_with_ca = slave(&["--tls-ca", path(&pki.ca)]);
    wait_for("the slave to catch up", Duration::from_secs(15), || {
        (slave_with_ca.metric("smq_replication_connected") == Some(1.0)
            && slave_with_ca.metric("smq_replication_lag_bytes") == Some(0.0))
        .then_some(())
    });
    let listed = ok(smq(&slave_with_ca, None)
        .args(["topic", "describe", "orders"])
        .output()
        .unwrap());
    let described = String::from_utf8_lossy(&listed.stdout);
    assert!(described.contains("orders"), "{described}");

    // A slave without the CA does not get in, and says why.
    let plain = slave(&[]);
    wait_for(
        "the refusal in the slave's log",
        Duration::from_secs(10),
        || {
            plain
                .log_lines()
                .iter()
                .any(|line| line.contains("speaks TLS only"))
                .then_some(())
        },
    );
    assert_eq!(plain.metric("smq_replication_connected"), Some(0.0));
}

#[test]
fn a_broker_heartbeats_to_an_https_nameserver_and_clients_find_routes_there() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let secret = dir.path().join("cluster.secret");
    std::fs::write(&secret, format!("{CLUSTER_SECRET}\n")).unwrap();
    let nameserver = NameServer::start(&[
        "--tls-cert",
        path(&pki.cert),
        "--tls-key",
        path(&pki.key),
        "--cluster-secret-file",
        path(&secret),
    ]);
    let url = format!("https://{}", nameserver.addr);
    let broker = tls_broker(
        &pki,
        &[
            "--nameserver",
            &url,
            "--tls-ca",
            path(&pki.ca),
            "--cluster-secret-file",
            path(&secret),
        ],
    );
    let through_nameserver = |ca: &Path| {
        let mut command = nameserver.smq();
        command.env("SMQ_NAMESERVER", &url).arg("--tls-ca").arg(ca);
        command
    };
    let addr = broker.addr.to_string();
    wait_for(
        "the broker in the cluster view",
        Duration::from_secs(15),
        || {
            let output = through_nameserver(&pki.ca).arg("cluster").output().unwrap();
            String::from_utf8_lossy(&output.stdout)
                .contains(&addr)
                .then_some(())
        },
    );
    ok(through_nameserver(&pki.ca)
        .args(["topic", "create", "orders", "--queues", "2"])
        .output()
        .unwrap());
    ok(run_with_stdin(
        through_nameserver(&pki.ca).args(["produce", "orders"]),
        b"routed over tls\n",
    ));
    assert_eq!(
        consume(&mut through_nameserver(&pki.ca), 1),
        ["routed over tls"]
    );

    // Plain HTTP to the HTTPS port is told to use https; an untrusting client says why.
    let (status, body) = nameserver.get("/v1/cluster");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("HTTPS only"), "{body}");
    let untrusting = through_nameserver(&pki.other_ca)
        .args(["--route-wait-ms", "0", "cluster"])
        .output()
        .unwrap();
    assert!(!untrusting.status.success());
    let message = stderr(&untrusting);
    assert!(message.contains("not trusted"), "{message}");
}
