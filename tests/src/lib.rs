//! The harness of smq's multi-process tests: builds the real binaries once, starts brokers on
//! loopback in temporary directories and NameServers beside them, runs the `smq` CLI, and stops
//! every process it started.

pub mod bind9;
pub mod embedded_dns;
pub mod failover;
pub mod healthy;
pub mod hostile;
pub mod http;
pub mod keyed;
pub mod proxy;
pub mod raw;
pub mod skip;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Path of a workspace binary (`smq-broker`, `smq-nameserver`, `smq`), built on first use so that a test never runs
/// a stale binary.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root");
        // The whole workspace's binaries and tests, so that the features of the dependencies
        // come out as `cargo test --workspace` resolved them and this build reuses what it
        // built: naming the three packages alone rebuilt tokio, hyper, hickory, axum, rustls
        // and more in every CI run. Without the variables cargo sets for a running test: ring's
        // build script reruns when CARGO_MANIFEST_DIR changes, so inheriting the test's value
        // rebuilt ring, rustls and every crate over them (a minute), and the next `cargo test`
        // rebuilt them back.
        let mut cargo = Command::new(env!("CARGO"));
        for (variable, _) in std::env::vars_os() {
            if is_set_by_cargo_for_a_test(&variable) {
                cargo.env_remove(variable);
            }
        }
        let status = cargo
            .args([
                "build",
                "--profile",
                "test",
                "--workspace",
                "--bins",
                "--tests",
            ])
            .current_dir(workspace)
            .status()
            .expect("running cargo build for the binaries under test");
        assert!(
            status.success(),
            "building smq-broker, smq-nameserver and smq failed"
        );
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join("target"));
        target.join("debug")
    });
    dir.join(name)
}

/// Whether `variable` is one that cargo sets for the test it runs (the package's manifest, name
/// and version, the crate, the binaries), not one of the user's.
fn is_set_by_cargo_for_a_test(variable: &std::ffi::OsStr) -> bool {
    let variable = variable.to_string_lossy();
    variable == "OUT_DIR"
        || variable == "CARGO_PRIMARY_PACKAGE"
        || variable == "CARGO_TARGET_TMPDIR"
        || [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|prefix| variable.starts_with(prefix))
}

/// `output` of a command that must have succeeded; panics with its status, stdout and stderr
/// otherwise.
pub fn ok(output: std::process::Output) -> std::process::Output {
    assert!(
        output.status.success(),
        "{} failed:\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The flags of a slave of the master at `master` (`--role slave --master ADDR`); add to them.
pub fn slave_of(master: &str) -> Vec<&str> {
    vec!["--role", "slave", "--master", master]
}

/// Runs `command`, which must succeed ([`ok`]); returns its output.
pub fn succeeds(command: &mut Command) -> std::process::Output {
    ok(command.output().expect("running the command"))
}

/// Runs `command` with `stdin` written to its standard input; returns its output.
pub fn run_with_stdin(command: &mut Command, stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the command");
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let output = child.wait_with_output().expect("waiting for the command");
    writer.join().expect("the stdin writer");
    output
}

/// Creates `topic` with `queues` queues on `config.broker` and connects a producer.
pub async fn topic_and_producer(
    config: &smq_client::ClientConfig,
    topic: &str,
    queues: u32,
) -> smq_client::Producer {
    let admin = smq_client::Admin::connect(config.clone()).await.unwrap();
    admin.create_topic(topic, queues).await.unwrap();
    smq_client::Producer::connect(config.clone()).await.unwrap()
}

/// A multi-threaded tokio runtime, for tests that drive the library from blocking code.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Polls `condition` until it returns Some, failing the test after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Segment size of the brokers [`Broker::start`] starts (their disk watermark is 99%), unless a
/// test passes its own `--segment-bytes` or a `--config` file.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

/// A broker process on loopback with its own data directory, killed when dropped.
pub struct Broker {
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    pub addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Broker {
    /// Starts `smq-broker` on ephemeral ports in a new temporary directory.
    pub fn start(extra_args: &[&str]) -> Broker {
        let temp = tempfile::tempdir().expect("temporary data directory");
        let data_dir = temp.path().join("data");
        let mut broker = Broker::start_in(&data_dir, extra_args);
        broker._temp = Some(temp);
        broker
    }

    /// Starts `smq-broker` on ephemeral ports with `data_dir` (kept after the broker stops);
    /// on 127.0.0.1 unless `extra_args` give a `--listen`.
    pub fn start_in(data_dir: &Path, extra_args: &[&str]) -> Broker {
        Broker::start_listening(data_dir, "127.0.0.1:0", extra_args)
    }

    /// Kills the broker (SIGKILL) and starts it again on its data directory and client address,
    /// as a supervisor restarts a crashed broker (its HTTP port is a new one).
    pub fn kill_and_restart(mut self, extra_args: &[&str]) -> Broker {
        let temp = self._temp.take();
        let (addr, data_dir) = (self.addr.to_string(), self.data_dir.clone());
        self.kill();
        let mut broker = Broker::start_listening(&data_dir, &addr, extra_args);
        broker._temp = temp;
        broker
    }

    /// Starts `smq-broker` listening on `listen` (a broker restarted where its peers know it)
    /// with `data_dir`, its HTTP endpoint on an ephemeral port.
    pub fn start_on(listen: &str, data_dir: &Path, extra_args: &[&str]) -> Broker {
        Broker::start_listening(data_dir, listen, extra_args)
    }

    fn start_listening(data_dir: &Path, listen: &str, extra_args: &[&str]) -> Broker {
        let mut command = Command::new(binary("smq-broker"));
        if !extra_args.contains(&"--listen") {
            command.args(["--listen", listen]);
        }
        command
            .args(["--http", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra_args);
        // A broker preallocates its active segment and the next: at the default 1 GiB the
        // suite's brokers would take many GiB of disk at once. 64 MiB, as `smq dev` uses. And
        // the disk watermark at 99%, not 90%: test brokers store little, and a test should not
        // fail because the machine's disk is 91% full. Unless the test chooses (the flag, or
        // its key in the --config file).
        let config_text = extra_args
            .iter()
            .position(|arg| *arg == "--config")
            .and_then(|i| extra_args.get(i + 1))
            .map(|path| std::fs::read_to_string(path).expect("the --config file"))
            .unwrap_or_default();
        let chooses = |flag: &str| {
            let key = flag.trim_start_matches("--").replace('-', "_");
            extra_args.contains(&flag)
                || config_text
                    .lines()
                    .any(|l| l.trim_start().starts_with(&key))
        };
        if !chooses("--segment-bytes") {
            command.args(["--segment-bytes", &SEGMENT_BYTES_DEFAULT.to_string()]);
        }
        if !chooses("--disk-usage-watermark-percent") {
            command.args(["--disk-usage-watermark-percent", "99"]);
        }
        let (child, log, (addr, http_addr)) = spawn_logged(command, "smq-broker", |line| {
            line.contains("broker started")
                .then(|| address_after(line, "listen=").zip(address_after(line, "http=")))
        });
        Broker {
            child: Some(child),
            log,
            addr,
            http_addr,
            data_dir: data_dir.to_owned(),
            _temp: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` (e.g. `libc::SIGSTOP`, `libc::SIGCONT`) to the broker's process.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: a plain syscall on a child process this helper started.
        assert_eq!(unsafe { libc::kill(self.pid() as libc::pid_t, signal) }, 0);
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) {
        terminate(self.child.take().expect("running"), "smq-broker");
    }

    /// Sends SIGKILL and waits for the process to go.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("waiting for the killed broker");
    }

    /// The `smq` CLI, pointed at this broker.
    pub fn smq(&self) -> Command {
        let mut command = Command::new(binary("smq"));
        command.env("SMQ_BROKER", self.addr.to_string());
        command
    }

    /// Every line the broker has logged so far, without colour codes.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// A metric without labels from the broker's /metrics, as a number.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let reply = http::request_blocking(self.http_addr, "GET", "/metrics", None);
        reply
            .body
            .lines()
            .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
    }

    /// CPU time (user + system) the broker process has used so far.
    pub fn cpu_time(&self) -> Duration {
        process_cpu_time(self.pid())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A NameServer process on loopback, killed when dropped.
pub struct NameServer {
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    pub addr: SocketAddr,
}

impl NameServer {
    /// Starts `smq-nameserver --listen 127.0.0.1:0` with `extra_args` (e.g.
    /// `--heartbeat-timeout-ms 1500`) and waits until it says where it listens.
    pub fn start(extra_args: &[&str]) -> NameServer {
        NameServer::start_on("127.0.0.1:0", extra_args)
    }

    /// Starts `smq-nameserver --listen listen` with `extra_args`.
    pub fn start_on(listen: &str, extra_args: &[&str]) -> NameServer {
        let mut command = Command::new(binary("smq-nameserver"));
        command.args(["--listen", listen]).args(extra_args);
        let (child, log, addr) = spawn_logged(command, "smq-nameserver", |line| {
            line.contains("NameServer listening")
                .then(|| address_after(line, "addr="))
        });
        NameServer {
            child: Some(child),
            log,
            addr,
        }
    }

    /// `http://ADDR`, for `--nameserver`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// GETs `path` (e.g. `/v1/cluster`): the status and the body.
    pub fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, "")
    }

    /// Sends one HTTP/1.1 request as curl would (`Connection: close`, a JSON body if not
    /// empty): the status and the body.
    pub fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let body = (!body.is_empty()).then_some(body);
        let reply = http::request_blocking(self.addr, method, path, body);
        (reply.status, reply.body)
    }

    /// A client configuration asking this NameServer, refreshing routes every `refresh_ms`.
    pub fn client_config(&self, refresh_ms: u64) -> smq_client::ClientConfig {
        use smq_client::discovery::{Discovery, DiscoveryMode, DiscoveryOptions};
        let mode = DiscoveryMode::Static(vec![self.url()]);
        let discovery = Discovery::new(mode, DiscoveryOptions::default()).expect("a static list");
        let client = smq_client::nameserver_client::NameServerClient::new(Arc::new(discovery));
        let mut config = smq_client::ClientConfig::with_nameserver(client);
        config.route_refresh_ms = refresh_ms;
        config
    }

    /// Runs `smq group promote GROUP ARGS...` (a switchover) against this NameServer and
    /// returns its output, whatever its status.
    pub fn promote(&self, group: &str, args: &[&str]) -> std::process::Output {
        self.smq()
            .args(["group", "promote", group])
            .args(args)
            .output()
            .expect("running smq group promote")
    }

    /// The `smq` CLI, pointed at this NameServer (and at no broker).
    pub fn smq(&self) -> Command {
        let mut command = Command::new(binary("smq"));
        command
            .env("SMQ_NAMESERVER", self.url())
            .env_remove("SMQ_BROKER");
        command
    }

    /// Every line the NameServer has logged so far, without colour codes.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) {
        terminate(self.child.take().expect("running"), "smq-nameserver");
    }
}

impl Drop for NameServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends SIGTERM to `child` and asserts a clean exit within 20 s.
fn terminate(mut child: Child, name: &str) {
    // SAFETY: plain syscall on a pid we own.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert!(
        status.success(),
        "{name} exited with {status} after SIGTERM"
    );
}

/// Starts `command` logging at info to a pipe, and waits until `found` makes something of a log
/// line (`Some(None)`: the line was the one, but unreadable); kills it and panics with its log
/// otherwise.
fn spawn_logged<T: Send + 'static>(
    mut command: Command,
    name: &'static str,
    found: impl Fn(&str) -> Option<Option<T>> + Send + 'static,
) -> (Child, Arc<Mutex<Vec<String>>>, T) {
    let mut child = command
        .env("SMQ_LOG_LEVEL", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    let stderr = child.stderr.take().expect("piped stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let Some(value) = read_log_until(stderr, log.clone(), name, found) else {
        let _ = child.kill();
        let _ = child.wait();
        let log = log.lock().unwrap().join("\n");
        panic!("{name} did not report its address; its log:\n{log}");
    };
    (child, log, value)
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    wait_for("process exit", timeout, || {
        child.try_wait().expect("try_wait")
    })
}

/// Collects a process's log lines into `log` (a thread keeps draining the pipe so that the
/// process never blocks on it) and returns what `found` makes of the first line it answers
/// Some for, within 30 s.
fn read_log_until<T: Send + 'static>(
    stderr: std::process::ChildStderr,
    log: Arc<Mutex<Vec<String>>>,
    who: &'static str,
    found: impl Fn(&str) -> Option<Option<T>> + Send + 'static,
) -> Option<T> {
    let (started, started_seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let line = strip_ansi(&line);
            if std::env::var_os("SMQ_TEST_SHOW_LOGS").is_some() {
                eprintln!("[{who}] {line}");
            }
            // Logged before it is reported, so that the line the caller waited for is in the
            // log once it returns.
            let value = found(&line);
            log.lock().unwrap().push(line);
            if let Some(value) = value {
                let _ = started.send(value);
            }
        }
    });
    started_seen
        .recv_timeout(Duration::from_secs(30))
        .ok()
        .flatten()
}

/// The socket address right after `marker` in a log line (`listen=127.0.0.1:1234 ...`).
fn address_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A log line without terminal colour codes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// CPU time (user + system) of a process, from /proc/PID/stat.
pub fn process_cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading /proc stat");
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split(' ')
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}
