//! A real bind9 `named` for the DNS tests: one primary zone on 127.0.0.1 and an ephemeral port,
//! changed with `nsupdate` (TSIG-signed dynamic updates) the way an operator repoints the
//! NameServer's SRV record (proto-spec.md §9.3). Debian packages `bind9` and `bind9-dnsutils`;
//! `scripts/test.sh` installs them when it can. A test calls [`unavailable`] first: without them
//! it is skipped and listed under `scripts/test.sh`, failed under a plain `cargo test`. named
//! runs as any user (an unprivileged port, everything in a temporary directory).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Name of the TSIG key that may update the zone.
const KEY_NAME: &str = "smq-test-update";
/// Its secret (HMAC-SHA256, 32 bytes). A test server on loopback: the key is not a secret, it
/// only makes the updates go through the same TSIG path as in production.
const KEY_SECRET: &str = "UOM7Q6vvXxTjFApyfQUwvmd08LIU0lOEZTk2+X1Gnfw=";
/// The zone's default TTL (`$TTL`) and the TTL of records written by [`Bind9::set_a`].
pub const DEFAULT_TTL: u32 = 5;

/// A `named -g` process serving one zone, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Bind9 {
    child: Option<Child>,
    /// Where it answers, over UDP and TCP.
    pub addr: SocketAddr,
    /// The zone's origin, with a final dot (`smq.test.`).
    pub zone: String,
    dir: tempfile::TempDir,
}

impl Bind9 {
    /// Starts `named` serving `zone` (e.g. `smq.test.`) with an SOA, an NS `ns` (A 127.0.0.1)
    /// and `records`, zone-file lines whose names may be relative to the zone, e.g.
    /// `"ns1 A 127.0.0.1"` or `"_smq-ns._tcp 2 SRV 0 0 9876 ns1"`. Returns once it answers.
    pub fn start(zone: &str, records: &[&str]) -> Bind9 {
        let named = program("named");
        program("nsupdate");
        let zone = format!("{}.", zone.trim_end_matches('.'));
        let dir = tempfile::tempdir().expect("temporary directory for named");
        let zone_file = dir.path().join("zone.db");
        let mut text = format!(
            "$ORIGIN {zone}\n$TTL {DEFAULT_TTL}\n\
             @ IN SOA ns.{zone} admin.{zone} ( 1 60 60 600 1 )\n\
             @ IN NS ns.{zone}\nns IN A 127.0.0.1\n"
        );
        for record in records {
            text.push_str(record);
            text.push('\n');
        }
        std::fs::write(&zone_file, text).expect("writing the zone file");
        std::fs::write(dir.path().join("update.key"), key_statement()).expect("writing the key");

        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let conf = write_conf(dir.path(), &zone, port, &zone_file);
            let log_path = dir.path().join(format!("named-{port}.log"));
            let log = std::fs::File::create(&log_path).expect("named's log file");
            let mut child = Command::new(&named)
                .arg("-g")
                .arg("-c")
                .arg(&conf)
                .args(["-n", "1"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", named.display()));
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            match wait_until_answering(&mut child, addr, &zone, &log_path) {
                Ok(()) => {
                    return Bind9 {
                        child: Some(child),
                        addr,
                        zone,
                        dir,
                    };
                }
                Err(log) => {
                    stop(&mut child);
                    // Someone took the port between our check and named's bind: try another.
                    if !port_taken(&log) {
                        panic!("named did not start serving {zone}; its log:\n{log}");
                    }
                    last_log = log;
                }
            }
        }
        panic!("named found no free port in 5 attempts; its last log:\n{last_log}");
    }

    /// Replaces the whole SRV set of `name` (relative to the zone, or with a final dot) with
    /// `targets` = (priority, weight, port, target host) in one UPDATE message (delete + add, so
    /// no resolver ever sees the name missing). No targets deletes the record.
    pub fn set_srv(&self, name: &str, ttl: u32, targets: &[(u16, u16, u16, &str)]) {
        let name = self.fqdn(name);
        let mut script = format!("update delete {name} SRV\n");
        for &(priority, weight, port, target) in targets {
            let target = self.fqdn(target);
            script.push_str(&format!(
                "update add {name} {ttl} IN SRV {priority} {weight} {port} {target}\n"
            ));
        }
        self.nsupdate(&script);
    }

    /// Makes `ip` the only A record of `host` (TTL [`DEFAULT_TTL`]), in one UPDATE message.
    pub fn set_a(&self, host: &str, ip: Ipv4Addr) {
        let host = self.fqdn(host);
        self.nsupdate(&format!(
            "update delete {host} A\nupdate add {host} {DEFAULT_TTL} IN A {ip}\n"
        ));
    }

    /// Sends `updates` (nsupdate `update ...` lines) as one TSIG-signed UPDATE message and
    /// panics, showing nsupdate's output and named's log, unless the server applied it.
    pub fn nsupdate(&self, updates: &str) {
        let script = format!(
            "server {} {}\nzone {}\n{updates}send\n",
            self.addr.ip(),
            self.addr.port(),
            self.zone
        );
        let mut child = Command::new(program("nsupdate"))
            .arg("-k")
            .arg(self.dir.path().join("update.key"))
            .args(["-t", "5"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting nsupdate");
        child
            .stdin
            .take()
            .expect("nsupdate stdin")
            .write_all(script.as_bytes())
            .expect("writing the nsupdate script");
        let output = child.wait_with_output().expect("waiting for nsupdate");
        assert!(
            output.status.success(),
            "nsupdate failed ({}):\n{}{}\nscript:\n{script}\nnamed's log:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
    }

    /// Everything named has logged so far.
    pub fn log(&self) -> String {
        let port = self.addr.port();
        std::fs::read_to_string(self.dir.path().join(format!("named-{port}.log")))
            .unwrap_or_default()
    }

    /// `name` as an absolute name: kept if it ends with a dot, else put under the zone.
    pub fn fqdn(&self, name: &str) -> String {
        if name.ends_with('.') {
            name.to_owned()
        } else {
            format!("{name}.{}", self.zone)
        }
    }
}

impl crate::failover::SrvControl for Bind9 {
    fn dns_server(&self) -> std::net::SocketAddr {
        self.addr
    }

    fn point(&self, name: &str, ttl: u32, targets: &[(u16, u16, &str)]) {
        let targets: Vec<(u16, u16, u16, &str)> = targets
            .iter()
            .map(|&(priority, port, host)| (priority, 0, port, host))
            .collect();
        self.set_srv(name, ttl, &targets);
    }
}

impl Drop for Bind9 {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child);
        }
    }
}

/// Polls with an SOA query until named answers authoritatively for `zone` at `addr`. On failure
/// (named exited, could not bind, or did not answer within 20 s) returns its log.
fn wait_until_answering(
    child: &mut Child,
    addr: SocketAddr,
    zone: &str,
    log_path: &Path,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let read_log = || std::fs::read_to_string(log_path).unwrap_or_default();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait on named") {
            return Err(format!("(named exited with {status})\n{}", read_log()));
        }
        if soa_answered(addr, zone) {
            return Ok(());
        }
        let log = read_log();
        if port_taken(&log) || Instant::now() > deadline {
            return Err(log);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether named's log says it could not bind its port: with the TCP port taken it logs
/// "creating TCP socket: address in use" and runs on (UDP only); with the UDP port taken it logs
/// "unable to listen on any configured interfaces" and exits.
fn port_taken(log: &str) -> bool {
    log.contains("address in use") || log.contains("unable to listen")
}

/// SIGTERM, then up to 10 s for named to exit (it takes about 1 s), then SIGKILL.
fn stop(child: &mut Child) {
    // SAFETY: plain syscall on a pid we own and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The bind9 programs the DNS tests run: `named` and its checkers and key generator (Debian's
/// `bind9`, with `bind9-utils`), `nsupdate` (`bind9-dnsutils`).
const PROGRAMS: [&str; 5] = [
    "named",
    "named-checkconf",
    "named-checkzone",
    "tsig-keygen",
    "nsupdate",
];

/// Whether the calling test cannot run because bind9 is not installed; if so it was reported
/// through [`crate::skip::cannot_run`] (the test then returns).
pub fn unavailable() -> bool {
    let missing: Vec<&str> = PROGRAMS
        .into_iter()
        .filter(|name| find(name).is_none())
        .collect();
    if missing.is_empty() {
        return false;
    }
    crate::skip::cannot_run(&format!(
        "it runs a real bind9, and {} not found: apt-get install bind9 bind9-dnsutils \
         (scripts/test.sh does when it runs as root or with passwordless sudo)",
        missing.join(", ")
    ));
    true
}

/// The path of `name` (in PATH, or in /usr/sbin and /sbin, which a non-login PATH may lack), or
/// a panic saying how to install it: `named`, `nsupdate`, `named-checkconf`, `tsig-keygen`...
pub fn program(name: &str) -> PathBuf {
    find(name).unwrap_or_else(|| {
        panic!(
            "`{name}` not found: the DNS tests run a real bind9; install it with \
             `apt-get install bind9 bind9-dnsutils` (scripts/test.sh does)"
        )
    })
}

fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn key_statement() -> String {
    format!(
        "key \"{KEY_NAME}\" {{\n    algorithm hmac-sha256;\n    secret \"{KEY_SECRET}\";\n}};\n"
    )
}

/// Writes named.conf for one primary zone on 127.0.0.1:`port`, everything in `dir`.
fn write_conf(dir: &Path, zone: &str, port: u16, zone_file: &Path) -> PathBuf {
    let d = dir.display();
    let conf = format!(
        "{key}\
         options {{\n\
         \x20   directory \"{d}\";\n\
         \x20   pid-file \"{d}/named.pid\";\n\
         \x20   session-keyfile \"{d}/session.key\";\n\
         \x20   managed-keys-directory \"{d}\";\n\
         \x20   listen-on port {port} {{ 127.0.0.1; }};\n\
         \x20   listen-on-v6 {{ none; }};\n\
         \x20   recursion no;\n\
         \x20   dnssec-validation no;\n\
         \x20   notify no;\n\
         }};\n\
         controls {{ }};\n\
         zone \"{zone}\" {{\n\
         \x20   type primary;\n\
         \x20   file \"{zone_file}\";\n\
         \x20   allow-update {{ key \"{KEY_NAME}\"; }};\n\
         }};\n",
        key = key_statement(),
        zone_file = zone_file.display(),
    );
    let path = dir.join("named.conf");
    std::fs::write(&path, conf).expect("writing named.conf");
    path
}

/// A port free on 127.0.0.1 for both UDP and TCP at this moment.
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a UDP port");
        let port = udp.local_addr().expect("local address").port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

/// Whether `server` gives an authoritative, successful answer to `zone SOA` (a raw DNS query
/// over UDP, so that the harness needs no DNS library).
fn soa_answered(server: SocketAddr, zone: &str) -> bool {
    let Ok(socket) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
    let id: u16 = (std::process::id() as u16) ^ 0x5a5a;
    let mut query = Vec::with_capacity(64);
    query.extend_from_slice(&id.to_be_bytes());
    query.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]); // no RD; one question
    for label in zone.trim_end_matches('.').split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 6, 0, 1]); // root, type SOA, class IN
    if socket.send_to(&query, server).is_err() {
        return false;
    }
    let mut reply = [0u8; 512];
    let Ok((n, _)) = socket.recv_from(&mut reply) else {
        return false;
    };
    n >= 12
        && reply[..2] == id.to_be_bytes()
        && reply[2] & 0x80 != 0 // a response
        && reply[2] & 0x04 != 0 // authoritative
        && reply[3] & 0x0f == 0 // NOERROR
        && u16::from_be_bytes([reply[6], reply[7]]) >= 1
}
