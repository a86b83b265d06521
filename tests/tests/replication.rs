//! Master–slave replication through the real binaries: a slave's log is the master's byte for
//! byte; under synchronous replication every acknowledged message survives the loss of the
//! master's whole data directory; a peer that is not a configured slave cannot make the master
//! acknowledge anything.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use smq_client::protocol::frame::decode_response;
use smq_client::protocol::replication::{
    ReplicaFetch, ReplicaHello, ReplicaRequest, ReplicaResponse, REPLICA_FETCH, REPLICA_HELLO,
};
use smq_client::protocol::request::HandshakeRequest;
use smq_client::protocol::{ApiKey, ErrorCode, Request, Response};
use smq_client::{Admin, ClientConfig, Consumer, Message, Producer, StartFrom};
use smq_tests::{wait_for, Broker};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Writes a replication secret file in `dir`.
fn secret_file(dir: &Path, secret: &str) -> PathBuf {
    let path = dir.join(format!("secret-{secret}"));
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    path
}

fn start_master(secret: &Path, data_dir: &Path, extra: &[&str]) -> Broker {
    let mut args = vec!["--replication-secret-file", secret.to_str().unwrap()];
    args.extend_from_slice(extra);
    Broker::start_in(data_dir, &args)
}

fn start_slave(master: &Broker, secret: &Path, data_dir: &Path, extra: &[&str]) -> Broker {
    let master_addr = master.addr.to_string();
    let mut args = vec![
        "--role",
        "slave",
        "--master",
        &master_addr,
        "--replication-secret-file",
        secret.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Broker::start_in(data_dir, &args)
}

fn body(key: usize, sequence: usize) -> Vec<u8> {
    format!(
        "key-{key}|seq-{sequence:06}|{}",
        "r".repeat((key * 17 + sequence) % 300)
    )
    .into_bytes()
}

/// One line of the broker's /metrics, as a number.
fn metric(broker: &Broker, name: &str) -> Option<f64> {
    let reply = smq_tests::http::request_blocking(broker.http_addr, "GET", "/metrics", None);
    reply
        .body
        .lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

/// The segment files of a data directory, by name.
fn segments(data_dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(data_dir.join("commitlog"))
        .unwrap()
        .map(|entry| entry.unwrap())
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn after_catching_up_a_slaves_segments_are_byte_identical_to_its_masters() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), "copy");
    // Small segments, so that the log rolls many times (roll markers included); catch-up paced
    // at 2 MB/s, so that the lag can be watched.
    let master = start_master(
        &secret,
        &dir.path().join("master"),
        &[
            "--flush",
            "async",
            "--segment-bytes",
            "1048576",
            "--replication-max-bytes-per-sec",
            "2000000",
        ],
    );
    let config = ClientConfig::new(master.addr.to_string());
    let total = 30_000;
    runtime().block_on(async {
        Admin::connect(config.clone())
            .await
            .unwrap()
            .create_topic("copied", 3)
            .await
            .unwrap();
        let producer = Producer::connect(config).await.unwrap();
        let mut pending = Vec::new();
        for sequence in 0..total {
            let message = Message::from_body(body(sequence % 7, sequence));
            pending.push(producer.start_send("copied", message).await.unwrap());
        }
        for delivery in pending {
            delivery.wait().await.unwrap();
        }
    });
    let slave = start_slave(
        &master,
        &secret,
        &dir.path().join("slave"),
        &["--segment-bytes", "1048576", "--flush", "async"],
    );
    let lag_seen = wait_for(
        "the slave reports its lag while it catches up",
        Duration::from_secs(30),
        || metric(&slave, "smq_replication_lag_bytes").filter(|lag| *lag > 0.0),
    );
    wait_for("the slave catches up", Duration::from_secs(60), || {
        metric(&slave, "smq_replication_lag_bytes").filter(|lag| *lag == 0.0)
    });
    assert!(lag_seen > 0.0);
    // Stopping both cleanly flushes them; the slave first, so that it holds no more than the master.
    slave.stop();
    master.stop();
    let master_segments = segments(&dir.path().join("master"));
    let slave_segments = segments(&dir.path().join("slave"));
    let with_data: Vec<&String> = master_segments
        .iter()
        .filter(|(_, bytes)| bytes.iter().any(|b| *b != 0))
        .map(|(name, _)| name)
        .collect();
    assert!(with_data.len() > 3, "the log rolled: {with_data:?}");
    for name in with_data {
        let slave_bytes = slave_segments
            .get(name)
            .unwrap_or_else(|| panic!("the slave lacks segment {name}"));
        assert!(
            master_segments[name] == *slave_bytes,
            "segment {name} differs between master and slave"
        );
    }
}
