//! `smq dev` through the real binaries: the local cluster is usable through its SRV record, its
//! NameServer failover and kill-master do not fail an unkeyed producer, and SIGINT leaves no
//! process and no port behind; README's first command is `smq dev`, its second what CI runs.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use smq_tests::{binary, ok, run_with_stdin, wait_for};

/// How many ports `smq dev --base-port B` takes from B.
const PORT_SPAN: u16 = 30;

/// A base port whose whole span is free now (TCP, and UDP for DNS).
fn free_base_port() -> u16 {
    let start = 20_000 + (std::process::id() % 400) as u16 * 50;
    (0..200)
        .map(|i| 20_000 + (start - 20_000 + i * 50) % 20_000)
        .find(|&base| {
            (base..base + PORT_SPAN).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok())
                && UdpSocket::bind(("127.0.0.1", base)).is_ok()
        })
        .expect("a free span of ports")
}

/// The pids whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let after_name = &stat[stat.rfind(')').unwrap_or(0) + 2..];
                after_name.split(' ').nth(1) == Some(&parent.to_string())
            })
        })
        .collect()
}

fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// A running `smq dev`, killed if the test fails before it stops it.
struct Dev {
    child: Child,
    base: u16,
    banner: String,
}

impl Dev {
    fn start() -> Dev {
        let base = free_base_port();
        let mut child = Command::new(binary("smq"))
            .args(["dev", "--base-port", &base.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting smq dev");
        let stdout = child.stdout.take().unwrap();
        let (lines, banner_lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let mut banner = String::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !banner.contains("Ctrl-C stops everything.") {
            let left = deadline.saturating_duration_since(Instant::now());
            match banner_lines.recv_timeout(left) {
                Ok(line) => banner.push_str(&(line + "\n")),
                Err(_) => {
                    let _ = child.kill();
                    panic!("smq dev did not say it was running; it printed:\n{banner}");
                }
            }
        }
        Dev {
            child,
            base,
            banner,
        }
    }

    /// `smq` pointed at this dev cluster through its SRV record, as the banner says.
    fn smq(&self) -> Command {
        let export = self
            .banner
            .lines()
            .find_map(|line| line.trim().strip_prefix("export "))
            .expect("the banner's export line");
        let mut command = Command::new(binary("smq"));
        command
            .env_remove("SMQ_BROKER")
            .env_remove("SMQ_NAMESERVER");
        for pair in export.split(' ') {
            let (key, value) = pair.split_once('=').expect("KEY=VALUE");
            command.env(key, value);
        }
        command
    }

    fn dev_action(&self, action: &[&str]) -> String {
        let mut command = Command::new(binary("smq"));
        command
            .arg("dev")
            .args(action)
            .args(["--base-port", &self.base.to_string()]);
        String::from_utf8(ok(run_with_stdin(&mut command, b"")).stdout).unwrap()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn smq_dev_serves_through_srv_survives_both_failovers_and_leaves_nothing_behind() {
    let mut dev = Dev::start();
    // Its brokers refuse appends only on a nearly full disk, not at a production broker's 90%.
    assert!(
        dev.banner.contains("the brokers refuse appends above 99%"),
        "{}",
        dev.banner
    );
    let servers = children_of(dev.child.id());
    assert_eq!(
        servers.len(),
        6,
        "two NameServers, two masters and their slaves: {servers:?}"
    );

    // Topics, produce, consume and the cluster view through the SRV record.
    ok(run_with_stdin(
        dev.smq()
            .args(["topic", "create", "orders", "--queues", "4"]),
        b"",
    ));
    let lines: String = (0..200).map(|i| format!("order-{i}\n")).collect();
    ok(run_with_stdin(
        dev.smq().args(["produce", "orders"]),
        lines.as_bytes(),
    ));
    let consumed = ok(run_with_stdin(
        dev.smq()
            .args(["consume", "orders", "--group", "g", "--count", "200"]),
        b"",
    ));
    let mut got: Vec<String> = String::from_utf8(consumed.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let mut want: Vec<String> = lines.lines().map(str::to_owned).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let cluster =
        String::from_utf8(ok(run_with_stdin(dev.smq().arg("cluster"), b"")).stdout).unwrap();
    for group in ["broker-a", "broker-b"] {
        for role in ["master", "slave"] {
            assert!(
                cluster
                    .lines()
                    .any(|l| l.contains(group) && l.contains(role)),
                "smq cluster should list {group}'s {role}:\n{cluster}"
            );
        }
    }

    // An unkeyed producer runs through the NameServer failover and the loss of a master.
    ok(run_with_stdin(
        dev.smq().args(["topic", "create", "load", "--queues", "4"]),
        b"",
    ));
    let mut producer = dev
        .smq()
        .args(["produce", "load"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = producer.stdin.take().unwrap();
    let (stop, stopped) = mpsc::channel::<()>();
    let feeder = std::thread::spawn(move || {
        let mut sent = 0u64;
        while stopped.try_recv().is_err() {
            writeln!(input, "load-{sent}").unwrap();
            input.flush().unwrap();
            sent += 1;
            // Often enough that the master's kill meets batches in flight.
            std::thread::sleep(Duration::from_millis(2));
        }
        sent
    });
    std::thread::sleep(Duration::from_millis(500));
    let failover = dev.dev_action(&["failover"]);
    assert!(failover.contains("now names ns2"), "{failover}");
    assert!(failover.contains("failover is complete"), "{failover}");
    let kill = dev.dev_action(&["kill-master", "broker-a"]);
    assert!(kill.contains("dropped it from the routes"), "{kill}");
    std::thread::sleep(Duration::from_millis(500));
    stop.send(()).unwrap();
    let sent = feeder.join().unwrap();
    let produced = producer.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&produced.stderr);
    assert!(
        produced.status.success(),
        "an unkeyed send failed during the failovers ({sent} written): {report}"
    );
    assert!(report.contains(&sent.to_string()), "{sent} sent? {report}");
    println!("smq produce through both failovers: {report}");
    let cluster =
        String::from_utf8(ok(run_with_stdin(dev.smq().arg("cluster"), b"")).stdout).unwrap();
    assert!(
        !cluster
            .lines()
            .any(|l| l.contains("broker-a") && l.contains("master")),
        "broker-a's master is gone:\n{cluster}"
    );
    assert!(
        cluster
            .lines()
            .any(|l| l.contains("broker-a") && l.contains("slave")),
        "broker-a's slave stays:\n{cluster}"
    );

    // SIGINT stops everything: no server left, every port free again.
    // SAFETY: a plain syscall on our own child.
    unsafe { libc::kill(dev.child.id() as i32, libc::SIGINT) };
    let status = wait_for("smq dev to stop", Duration::from_secs(60), || {
        dev.child.try_wait().unwrap()
    });
    assert!(status.success(), "smq dev exited with {status}");
    for pid in servers {
        assert!(!process_exists(pid), "server {pid} outlived smq dev");
    }
    // Nothing listens on them any more. (Not "each can be bound": the ports lie in the
    // ephemeral range, where another test's client connection may hold one as its own end.)
    for port in dev.base..dev.base + PORT_SPAN {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
            "port {port} still has a listener after smq dev stopped"
        );
    }
}

#[test]
fn smq_dev_names_a_taken_port() {
    let base = free_base_port();
    let _holder = TcpListener::bind(("127.0.0.1", base + 2)).unwrap();
    let output = run_with_stdin(
        Command::new(binary("smq")).args(["dev", "--base-port", &base.to_string()]),
        b"",
    );
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains(&format!("port {} (NameServer ns1) is taken", base + 2)),
        "{error}"
    );
}

/// README's first ```sh block (its two commands and their comments), read from the repository.
fn readme_first_block() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    readme
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```sh block in README.md")
        .to_owned()
}

/// The lines of `script` that are not blank and not comments.
fn commands(script: &str) -> Vec<&str> {
    script
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
}

#[test]
fn readme_first_command_is_smq_dev() {
    let block = readme_first_block();
    let first_command = commands(&block)[0];
    let last_step = first_command.rsplit("&&").next().unwrap().trim();
    assert_eq!(
        last_step, "cargo run --release -p smq-cli -- dev",
        "{first_command}"
    );
    // The environment README tells to export is the one `smq dev` prints.
    let env = ok(run_with_stdin(
        Command::new(binary("smq")).args(["dev", "env"]),
        b"",
    ));
    let export = String::from_utf8(env.stdout).unwrap();
    assert!(
        block.contains(export.trim()),
        "README's first block should show `{}`:\n{block}",
        export.trim()
    );
}

#[test]
fn readme_second_command_is_the_test_command_ci_runs() {
    let block = readme_first_block();
    let readme_commands = commands(&block);
    assert_eq!(readme_commands.len(), 2, "{block}");
    let test_command = readme_commands[1];
    let script =
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(test_command);
    assert!(
        script.is_file(),
        "README's test command is a script: {test_command}"
    );
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../.ci/run"))
        .expect(".ci/run");
    assert!(
        commands(&ci).contains(&test_command),
        ".ci/run should run README's test command:\n{ci}"
    );
}
