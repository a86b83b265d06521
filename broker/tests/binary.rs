//! The `smq-broker` binary: it serves, stops cleanly with exit status 0 on SIGTERM, and a slave
//! missing what it needs refuses to start, saying what.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use common::{Client, DEADLINE};

/// Kills the broker if the test fails before it stopped by itself.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigterm_stops_the_binary_cleanly_with_status_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_smq-broker"))
        .args(["--listen", "127.0.0.1:0", "--flush", "async"])
        // It stores one message: a machine's nearly full disk should not fail it.
        .args(["--disk-usage-watermark-percent", "99"])
        .env("SMQ_DATA_DIR", dir.path())
        .env("SMQ_LOG_LEVEL", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut child = KillOnDrop(child);
    let (lines_tx, lines) = mpsc::channel();
    let deadline = Instant::now() + DEADLINE;
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let started = lines
        .iter()
        .take_while(|_| Instant::now() < deadline)
        .find(|line| line.contains("broker started"))
        .expect("the broker logs its address");
    let addr = started
        .split("listen=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("listen=ADDR")
        .parse()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = Client::connect(addr).await;
        client.create_topic("orders", 1).await;
        client.produce_ok("orders", 0, &[b"kept"]).await;
    });
    // SAFETY: kill only sends a signal to the child we started.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) }, 0);
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(stopping.elapsed() < DEADLINE, "still running after SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(
        rest.iter()
            .any(|line| line.contains("closed the store cleanly")),
        "{rest:#?}"
    );
    assert!(!dir.path().join("abort").exists(), "a clean shutdown");
}

#[test]
fn a_slave_without_its_master_or_the_replication_secret_refuses_to_start_saying_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_smq-broker"))
            .args(["--listen", "127.0.0.1:0", "--role", "slave"])
            .args(args)
            .env("SMQ_DATA_DIR", dir.path())
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = run(&[]);
    assert!(
        stderr.contains("--role slave needs --master ADDR"),
        "{stderr}"
    );
    let stderr = run(&["--master", "127.0.0.1:1"]);
    assert!(stderr.contains("--replication-secret-file"), "{stderr}");
}

#[test]
fn a_broker_on_a_taken_port_refuses_to_start_saying_the_cause_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_smq-broker"))
        .args(["--listen", &address, "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot bind") && stderr.contains(&address),
        "names what it could not bind: {stderr}"
    );
    assert!(
        stderr.contains("is another broker running? set --listen"),
        "says what to do: {stderr}"
    );
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "the operating system's reason, said once: {stderr}"
    );
}
