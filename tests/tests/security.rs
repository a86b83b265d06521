//! Who gets in, through the real binaries: a NameServer with a cluster secret takes heartbeats
//! only from brokers that send it, and no heartbeat changes another broker (its address, role
//! or group); a broker with principals serves only authenticated clients, each within its
//! permissions, refusing with a clear error; a slave replicates only as a principal allowed to.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};
use smq_tests::http::{blocking, request_as};
use smq_tests::{ok, run_with_stdin, wait_for, Broker, NameServer};

const CLUSTER_SECRET: &str = "the-cluster-secret";
/// Segments are reserved on disk whole (and one ahead): small ones, for a busy machine.
const SEGMENT_BYTES: &str = "16777216";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A NameServer with the cluster secret and a master of group g1 heartbeating to it, serving
/// topic `orders`, as the routes show.
fn cluster_with_one_master(dir: &Path) -> (NameServer, Broker) {
    let secret = write(dir, "cluster.secret", &format!("{CLUSTER_SECRET}\n"));
    let secret = secret.to_str().unwrap();
    let nameserver = NameServer::start(&[
        "--cluster-secret-file",
        secret,
        "--heartbeat-timeout-ms",
        "2000",
    ]);
    let url = nameserver.url();
    let master = Broker::start(&[
        "--nameserver",
        &url,
        "--cluster",
        "c1",
        "--group",
        "g1",
        "--cluster-secret-file",
        secret,
        "--segment-bytes",
        SEGMENT_BYTES,
    ]);
    ok(master
        .smq()
        .args(["topic", "create", "orders", "--queues", "2"])
        .output()
        .unwrap());
    let addr = master.addr.to_string();
    wait_for("the master in the routes", Duration::from_secs(10), || {
        (route_master(&nameserver).as_deref() == Some(addr.as_str())).then_some(())
    });
    (nameserver, master)
}

/// The master of `orders`' first group, as the NameServer routes it.
fn route_master(nameserver: &NameServer) -> Option<String> {
    let (status, body) = nameserver.get("/v1/routes/orders");
    if status != 200 {
        return None;
    }
    let route: Value = serde_json::from_str(&body).unwrap();
    route["groups"][0]["master"].as_str().map(str::to_owned)
}

/// (group, role, addr) of every live broker, as /v1/cluster lists them.
fn brokers(nameserver: &NameServer) -> Vec<(String, String, String)> {
    let (status, body) = nameserver.get("/v1/cluster");
    assert_eq!(status, 200, "{body}");
    let view: Value = serde_json::from_str(&body).unwrap();
    view["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let field = |name: &str| b[name].as_str().unwrap().to_owned();
            (field("group"), field("role"), field("addr"))
        })
        .collect()
}

fn heartbeat(group: &str, role: &str, addr: &str, name: Option<&str>) -> String {
    let mut body = json!({
        "cluster": "c1", "group": group, "role": role, "addr": addr,
        "data_version": 99, "log_end_offset": 0,
        "topics": [{"name": "orders", "queues": 64}]
    });
    if let Some(name) = name {
        body["name"] = json!(name);
    }
    body.to_string()
}

fn post(nameserver: &NameServer, body: &str, bearer: Option<&str>) -> (u16, String) {
    let reply = blocking(request_as(
        nameserver.addr,
        "POST",
        "/v1/brokers/heartbeat",
        Some(body),
        bearer,
    ));
    (reply.status, reply.body)
}

/// A counter from the NameServer's /metrics.
fn nameserver_counter(nameserver: &NameServer, name: &str) -> u64 {
    let (status, text) = nameserver.get("/metrics");
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

/// The real master's next heartbeats are accepted (at most a few heartbeat intervals), and none
/// is refused meanwhile: after the forged ones, it keeps its place heartbeat after heartbeat.
fn wait_for_the_masters_next_heartbeats(nameserver: &NameServer) {
    let accepted = nameserver_counter(nameserver, "smq_nameserver_heartbeats_received_total");
    let rejected = nameserver_counter(nameserver, "smq_nameserver_heartbeats_rejected_total");
    wait_for(
        "three more heartbeats of the master accepted",
        Duration::from_secs(10),
        || {
            (nameserver_counter(nameserver, "smq_nameserver_heartbeats_received_total")
                >= accepted + 3)
                .then_some(())
        },
    );
    assert_eq!(
        nameserver_counter(nameserver, "smq_nameserver_heartbeats_rejected_total"),
        rejected,
        "a heartbeat was refused after the forged ones"
    );
}

#[test]
fn a_heartbeat_without_the_cluster_secret_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (nameserver, master) = cluster_with_one_master(dir.path());
    let before = brokers(&nameserver);
    assert_eq!(before.len(), 1);
    let real = master.addr.to_string();
    // The attack the issue describes: demote the real master, then register an attacker's
    // address as the group's master; without the secret and with a wrong one.
    for bearer in [None, Some("wrong-secret"), Some("")] {
        let (status, body) = post(&nameserver, &heartbeat("g1", "slave", &real, None), bearer);
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("cluster secret"), "{body}");
        let (status, _) = post(
            &nameserver,
            &heartbeat("g1", "master", "127.0.0.1:1", None),
            bearer,
        );
        assert_eq!(status, 401);
        let (status, _) = post(
            &nameserver,
            &heartbeat("g2", "master", "127.0.0.1:2", None),
            bearer,
        );
        assert_eq!(status, 401);
    }
    assert_eq!(brokers(&nameserver), before);
    assert_eq!(route_master(&nameserver), Some(real.clone()));
    // Nine refusals from one peer: one line in the log.
    let refusals = nameserver
        .log_lines()
        .iter()
        .filter(|line| line.contains("(401)"))
        .count();
    assert_eq!(refusals, 1, "{:#?}", nameserver.log_lines());
    // Reads stay open without a read token; the real master keeps its routes as it goes on.
    wait_for_the_masters_next_heartbeats(&nameserver);
    assert_eq!(brokers(&nameserver), before);
    assert_eq!(route_master(&nameserver), Some(real));
}

#[test]
fn a_heartbeat_claiming_another_brokers_identity_role_or_address_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (nameserver, master) = cluster_with_one_master(dir.path());
    let before = brokers(&nameserver);
    let real = master.addr.to_string();
    let secret = Some(CLUSTER_SECRET);
    let claims = [
        // Another broker claiming the master's address: as a slave of its group, of another
        // group, or as a master of another group.
        heartbeat("g1", "slave", &real, Some("intruder")),
        heartbeat("g2", "slave", &real, Some("intruder")),
        heartbeat("g2", "master", &real, None),
        // The master's own identity (named by its address) saying it is a slave.
        heartbeat("g1", "slave", &real, None),
        // The master's identity at another address.
        heartbeat("g1", "master", "127.0.0.1:1", Some(&real)),
        // A second master for the group.
        heartbeat("g1", "master", "127.0.0.1:1", None),
    ];
    for claim in &claims {
        let (status, body) = post(&nameserver, claim, secret);
        assert_eq!(status, 409, "{claim}: {body}");
        assert_eq!(brokers(&nameserver), before, "after {claim}");
        assert_eq!(route_master(&nameserver).as_deref(), Some(real.as_str()));
    }
    assert!(
        nameserver
            .log_lines()
            .iter()
            .any(|line| line.contains("refused a heartbeat (409)")),
        "{:#?}",
        nameserver.log_lines()
    );
    // The real master keeps its routes heartbeat after heartbeat.
    wait_for_the_masters_next_heartbeats(&nameserver);
    assert_eq!(brokers(&nameserver), before);
    assert_eq!(route_master(&nameserver), Some(real));
}

#[test]
fn a_heartbeat_with_an_out_of_bounds_queue_count_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (nameserver, _master) = cluster_with_one_master(dir.path());
    let before = brokers(&nameserver);
    // Past the broker's limit of 1,024 queues, none, the largest u32, and past u32: each from an
    // authenticated peer, so that it is the bound that refuses it.
    for queues in ["1025", "0", "4294967295", "4294967296"] {
        let body = heartbeat("g2", "master", "127.0.0.1:2", None)
            .replace(r#""queues":64"#, &format!(r#""queues":{queues}"#));
        let (status, reply) = post(&nameserver, &body, Some(CLUSTER_SECRET));
        assert_eq!(status, 400, "queues {queues}: {reply}");
        let reply: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(
            reply["field"], "topics[0].queues",
            "queues {queues}: {reply}"
        );
        assert!(
            reply["error"]
                .as_str()
                .unwrap()
                .contains("topics[0].queues"),
            "queues {queues}: {reply}"
        );
    }
    assert_eq!(brokers(&nameserver), before, "nothing registered");
}

#[test]
fn with_a_read_token_reads_and_member_heartbeats_need_it() {
    let dir = tempfile::tempdir().unwrap();
    let token = write(dir.path(), "read.token", "the-read-token\n");
    let nameserver = NameServer::start(&["--read-token-file", token.to_str().unwrap()]);
    for path in [
        "/v1/cluster",
        "/v1/topics",
        "/v1/routes/orders",
        "/v1/groups",
    ] {
        let reply = blocking(request_as(nameserver.addr, "GET", path, None, None));
        assert_eq!(reply.status, 401, "{path}: {}", reply.body);
        let reply = blocking(request_as(
            nameserver.addr,
            "GET",
            path,
            None,
            Some("the-read-token"),
        ));
        assert_ne!(reply.status, 401, "{path}: {}", reply.body);
    }
    let member = r#"{"member_id": "m1", "topic": "orders", "session_timeout_ms": 10000}"#;
    let path = "/v1/groups/billing/heartbeat";
    let reply = blocking(request_as(
        nameserver.addr,
        "POST",
        path,
        Some(member),
        None,
    ));
    assert_eq!(reply.status, 401, "{}", reply.body);
    let reply = blocking(request_as(nameserver.addr, "GET", "/healthz", None, None));
    assert_eq!(reply.status, 200);
    // The CLI sends the token it is given.
    let cluster = |token: Option<&Path>| {
        let mut command = nameserver.smq();
        command.args(["cluster", "--route-wait-ms", "0"]);
        if let Some(token) = token {
            command.arg("--read-token-file").arg(token);
        }
        command.output().unwrap()
    };
    let refused = cluster(None);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("read token"),
        "{}",
        stderr(&refused)
    );
    ok(cluster(Some(&token)));
}

const PRINCIPALS: &str = r#"
[[principals]]
name = "ops"
secret = "ops-secret"
admin = ["*"]
produce = ["*"]
consume = ["*"]

[[principals]]
name = "app"
# sha256 of "app-secret"
secret_sha256 = "SHA"
produce = ["orders"]
consume = ["orders"]

[[principals]]
name = "reader"
secret = "reader-secret"
consume = ["orders"]

[[principals]]
name = "writer"
secret = "writer-secret"
produce = ["orders"]

[[principals]]
name = "replica"
secret = "replica-secret"
replicate = true
"#;

/// A broker config with the principals above (app's secret given as its hash).
fn principals_config(dir: &Path) -> PathBuf {
    let sha = sha256_hex("app-secret");
    write(dir, "broker.toml", &PRINCIPALS.replace("SHA", &sha))
}

fn sha256_hex(text: &str) -> String {
    let output = run_with_stdin(Command::new("sha256sum").arg("-"), text.as_bytes());
    String::from_utf8(ok(output).stdout).unwrap()[..64].to_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `smq` against `broker` as `credential` (`None`: anonymous).
fn smq_as(broker: &Broker, credential: Option<&str>) -> Command {
    let mut command = broker.smq();
    command.env_remove("SMQ_CREDENTIAL");
    if let Some(credential) = credential {
        command.env("SMQ_CREDENTIAL", credential);
    }
    command
}

/// Runs `args` as `credential` and asserts a refusal whose message contains each of `expected`.
fn refused(
    broker: &Broker,
    credential: Option<&str>,
    args: &[&str],
    stdin: &[u8],
    expected: &[&str],
) {
    let output = run_with_stdin(smq_as(broker, credential).args(args), stdin);
    let error = stderr(&output);
    assert!(
        !output.status.success(),
        "{args:?} as {credential:?} succeeded"
    );
    for expected in expected {
        assert!(
            error.contains(expected),
            "{args:?} as {credential:?}: {error}"
        );
    }
}

#[test]
fn a_client_is_refused_without_a_credential_with_a_wrong_one_or_without_the_permission() {
    let dir = tempfile::tempdir().unwrap();
    let config = principals_config(dir.path());
    let broker = Broker::start(&[
        "--config",
        config.to_str().unwrap(),
        "--segment-bytes",
        SEGMENT_BYTES,
    ]);
    let no_credential = "AUTHENTICATION_FAILED";
    let anonymous_or_wrong = [
        (None, "requires a credential"),
        (
            Some("ops:wrong"),
            "principal ops is unknown or its secret is wrong",
        ),
        (Some("nobody:ops-secret"), "principal nobody is unknown"),
    ];
    let create = ["topic", "create", "orders", "--queues", "2"];
    let delete = ["topic", "delete", "orders"];
    let produce = ["produce", "orders"];
    let consume = [
        "consume",
        "orders",
        "--group",
        "g",
        "--count",
        "1",
        "--idle-timeout",
        "2",
    ];
    for (credential, message) in anonymous_or_wrong {
        for args in [&create[..], &produce[..], &consume[..], &delete[..]] {
            refused(&broker, credential, args, b"m\n", &[no_credential, message]);
        }
    }
    refused(
        &broker,
        Some("app:app-secret"),
        &create,
        b"",
        &[
            "NOT_AUTHORIZED",
            "principal app may not administer (create or delete) topic orders",
        ],
    );
    ok(smq_as(&broker, Some("ops:ops-secret"))
        .args(create)
        .output()
        .unwrap());
    refused(
        &broker,
        Some("reader:reader-secret"),
        &produce,
        b"m\n",
        &[
            "NOT_AUTHORIZED",
            "principal reader may not produce to topic orders",
        ],
    );
    ok(run_with_stdin(
        smq_as(&broker, Some("app:app-secret")).args(produce),
        b"paid\n",
    ));
    refused(
        &broker,
        Some("writer:writer-secret"),
        &consume,
        b"",
        &[
            "NOT_AUTHORIZED",
            "principal writer may not consume from topic orders",
        ],
    );
    let consumed = ok(smq_as(&broker, Some("reader:reader-secret"))
        .args(consume)
        .output()
        .unwrap());
    assert_eq!(String::from_utf8_lossy(&consumed.stdout), "paid\n");
    refused(
        &broker,
        Some("app:app-secret"),
        &delete,
        b"",
        &["NOT_AUTHORIZED", "principal app may not administer"],
    );
    // The credential may come from a file too.
    let file = write(dir.path(), "ops.credential", "ops:ops-secret\n");
    ok(broker
        .smq()
        .env_remove("SMQ_CREDENTIAL")
        .arg("--credential-file")
        .arg(&file)
        .args(delete)
        .output()
        .unwrap());
    assert!(!broker
        .log_lines()
        .iter()
        .any(|line| line.contains("no principals configured")));
}

#[test]
fn a_broker_without_principals_listening_beyond_loopback_warns_that_it_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(
        &dir.path().join("data"),
        &["--listen", "0.0.0.0:0", "--segment-bytes", SEGMENT_BYTES],
    );
    assert!(
        broker
            .log_lines()
            .iter()
            .any(|line| line.contains("no principals configured")),
        "{:#?}",
        broker.log_lines()
    );
}

#[test]
fn a_slave_replicates_only_as_a_principal_allowed_to() {
    let dir = tempfile::tempdir().unwrap();
    let config = principals_config(dir.path());
    let config = config.to_str().unwrap();
    let secret = write(dir.path(), "replication.secret", "replication\n");
    let secret = secret.to_str().unwrap();
    let small = ["--segment-bytes", SEGMENT_BYTES];
    let master_args = ["--config", config, "--replication-secret-file", secret];
    let master = Broker::start(&[&master_args[..], &small[..]].concat());
    ok(smq_as(&master, Some("ops:ops-secret"))
        .args(["topic", "create", "orders", "--queues", "1"])
        .output()
        .unwrap());
    ok(run_with_stdin(
        smq_as(&master, Some("app:app-secret")).args(["produce", "orders"]),
        b"replicated\n",
    ));
    let master_addr = master.addr.to_string();
    let slave = |credential: Option<&str>| {
        let mut args = vec![
            "--config",
            config,
            "--role",
            "slave",
            "--master",
            &master_addr,
            "--replication-secret-file",
            secret,
        ];
        args.extend(small);
        if let Some(credential) = credential {
            args.extend(["--credential", credential]);
        }
        let data = dir
            .path()
            .join(format!("slave-{}", credential.unwrap_or("none")));
        Broker::start_in(&data, &args)
    };
    for (credential, expected) in [
        (None, "requires a credential"),
        (Some("replica:wrong"), "principal replica is unknown"),
        (Some("app:app-secret"), "principal app may not replicate"),
    ] {
        let refused = slave(credential);
        wait_for(
            "the refusal in the slave's log",
            Duration::from_secs(10),
            || {
                refused
                    .log_lines()
                    .iter()
                    .any(|line| line.contains(expected))
                    .then_some(())
            },
        );
        assert_eq!(refused.metric("smq_replication_connected"), Some(0.0));
        let topics = std::fs::read_to_string(refused.data_dir.join("topics.json"));
        assert!(!topics.unwrap_or_default().contains("orders"));
    }
    let allowed = slave(Some("replica:replica-secret"));
    // The log's bytes and the topics travel apart: wait for both.
    wait_for("the slave to catch up", Duration::from_secs(10), || {
        let topics =
            std::fs::read_to_string(allowed.data_dir.join("topics.json")).unwrap_or_default();
        (allowed.metric("smq_replication_connected") == Some(1.0)
            && allowed.metric("smq_replication_lag_bytes") == Some(0.0)
            && topics.contains("orders"))
        .then_some(())
    });
}
