//! `smq dev`: a whole cluster on loopback in one command (an embedded DNS server answering
//! `_smq-ns._tcp.smq.test`, two NameServers, two broker groups), with the failovers the design
//! promises one command away (`smq dev failover`, `smq dev kill-master GROUP`), stopped in order
//! on Ctrl-C or SIGTERM.

mod children;
mod control;
mod disk;
mod layout;
mod probe;

use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use smq_client::discovery::dev_dns::{DevDns, SrvRecord};
use smq_client::protocol::Role;

use children::{find_binary, Server};
use control::{Progress, Request};
use layout::{BrokerPorts, Ports, CLUSTER, GROUPS, SRV_NAME, SRV_TTL_SECS, ZONE};

/// Segments of 64 MiB: two are reserved on disk per broker ahead of need, 1 GiB ones would take
/// 8 GiB for a try-out.
const SEGMENT_BYTES: u64 = 64 << 20;

/// How long a server may take to become healthy, and a NameServer to see every broker.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the NameServers check the SRV record (their fencing).
const FENCING_INTERVAL_MS: u64 = 500;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct DevArgs {
    #[command(subcommand)]
    action: Option<DevAction>,
    /// Where the brokers keep their data and every server its log [default: a fresh temporary
    /// directory, removed on exit; with --keep, $TMPDIR/smq-dev-<DNS port>, kept].
    #[arg(long, env = "SMQ_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Reuse the data directory's topics and messages from an earlier run, and keep them on
    /// exit.
    #[arg(long, env = "SMQ_KEEP")]
    keep: bool,
    /// Move every port: DNS on it, the control port +1, NameServers +2 and +3, broker group i's
    /// master +10+10i (its HTTP one above) [default: DNS 15353, NameServers 9876 and 9877,
    /// brokers 10911 and 10921].
    #[arg(long, env = "SMQ_BASE_PORT", global = true)]
    base_port: Option<u16>,
}

#[derive(Subcommand, Debug)]
enum DevAction {
    /// In a running `smq dev`: kill NameServer ns1 and repoint the SRV record to ns2, printing
    /// the timings.
    Failover,
    /// In a running `smq dev`: kill GROUP's master (SIGKILL, as a crash) and print how long
    /// until the NameServer drops it.
    KillMaster {
        /// broker-a or broker-b.
        group: String,
    },
    /// Print the `export` line that points smq at `smq dev` (eval "$(smq dev env)").
    Env,
}

/// `smq dev` and its actions.
pub(crate) async fn run(args: DevArgs) -> anyhow::Result<()> {
    let ports = Ports::new(args.base_port)?;
    let control = Ports::local(ports.control);
    match args.action {
        Some(DevAction::Failover) => control::send(control, &Request::Failover).await,
        Some(DevAction::KillMaster { group }) => {
            control::send(control, &Request::KillMaster(group)).await
        }
        Some(DevAction::Env) => {
            println!("{}", export_line(&ports));
            Ok(())
        }
        None => run_cluster(ports, args.data_dir, args.keep).await,
    }
}

/// What a shell exports to use `smq dev`.
fn export_line(ports: &Ports) -> String {
    format!(
        "export SMQ_SRV={} SMQ_DNS_SERVER=127.0.0.1:{}",
        SRV_NAME.trim_end_matches('.'),
        ports.dns
    )
}

/// The data directory and whether to remove it on exit.
fn data_dir(ports: &Ports, given: Option<PathBuf>, keep: bool) -> anyhow::Result<(PathBuf, bool)> {
    let (dir, remove) = match given {
        Some(dir) => (dir, false),
        None if keep => (
            std::env::temp_dir().join(format!("smq-dev-{}", ports.dns)),
            false,
        ),
        None => {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let name = format!("smq-dev-{}-{stamp}", std::process::id());
            (std::env::temp_dir().join(name), true)
        }
    };
    let holds_data = std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some());
    if holds_data && !keep {
        bail!(
            "{} already holds data: add --keep to reuse it, or give another --data-dir",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir.join("logs"))
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    Ok((dir, remove))
}

/// The servers of a running `smq dev`.
struct Cluster {
    /// ns1 and ns2.
    nameservers: Vec<Server>,
    /// The master of each of [`GROUPS`], in that order.
    masters: Vec<Server>,
    /// The slave of each of [`GROUPS`], in that order.
    slaves: Vec<Server>,
    /// Which NameServer the SRV record names (0 or 1).
    named: usize,
}

/// Everything a control request needs.
struct Dev {
    ports: Ports,
    dns: DevDns,
    cluster: Mutex<Cluster>,
}

async fn run_cluster(ports: Ports, given_dir: Option<PathBuf>, keep: bool) -> anyhow::Result<()> {
    ports.check_free()?;
    let nameserver_bin = find_binary("smq-nameserver")?;
    let broker_bin = find_binary("smq-broker")?;
    let (dir, remove_dir) = data_dir(&ports, given_dir, keep)?;
    let disk = disk::Usage::of(&dir)?;
    if let Err(error) = disk.check(&dir) {
        if remove_dir {
            let _ = std::fs::remove_dir_all(&dir);
        }
        return Err(error);
    }

    let started = Instant::now();
    let dns = DevDns::start(Ports::local(ports.dns), ZONE).await?;
    for host in ["ns1", "ns2"] {
        dns.set_addrs(
            &format!("{host}.{ZONE}"),
            SRV_TTL_SECS,
            &[IpAddr::from([127, 0, 0, 1])],
        )
        .await?;
    }
    point_record(&dns, &ports, 0).await?;
    let control = tokio::net::TcpListener::bind(Ports::local(ports.control))
        .await
        .with_context(|| format!("cannot bind the control port {}", ports.control))?;
    let dev = Arc::new(Dev {
        ports: ports.clone(),
        dns,
        cluster: Mutex::new(Cluster {
            nameservers: Vec::new(),
            masters: Vec::new(),
            slaves: Vec::new(),
            named: 0,
        }),
    });

    let result = start_servers(&dev, &dir, &nameserver_bin, &broker_bin).await;
    if let Ok(()) = result {
        print_banner(&ports, &dir, disk, started.elapsed());
        serve_until_stopped(&dev, control).await;
    }
    stop_everything(dev, &dir, remove_dir).await;
    result
}

/// Names NameServer `index` (0: ns1, 1: ns2) in the SRV record.
async fn point_record(dns: &DevDns, ports: &Ports, index: usize) -> anyhow::Result<()> {
    let record = SrvRecord {
        priority: 0,
        weight: 0,
        port: ports.nameservers[index],
        target: format!("ns{}.{ZONE}", index + 1),
    };
    dns.set_srv(SRV_NAME, SRV_TTL_SECS, &[record]).await?;
    Ok(())
}

/// The discovery flags every server gets.
fn discovery_args(ports: &Ports) -> Vec<String> {
    vec![
        "--srv".into(),
        SRV_NAME.into(),
        "--dns-server".into(),
        Ports::local(ports.dns).to_string(),
    ]
}

/// Starts ns1, ns2 and the masters, each healthy before the next, and waits until ns1 lists
/// every master.
async fn start_servers(
    dev: &Dev,
    dir: &Path,
    nameserver_bin: &Path,
    broker_bin: &Path,
) -> anyhow::Result<()> {
    let ports = &dev.ports;
    // NameServers take heartbeats only from brokers with the cluster's secret; reads stay open.
    let cluster_secret = dir.join("cluster.secret");
    std::fs::write(&cluster_secret, format!("smq dev {}\n", random_hex()))
        .with_context(|| format!("cannot write {}", cluster_secret.display()))?;
    for (i, port) in ports.nameservers.iter().enumerate() {
        let name = format!("ns{}", i + 1);
        let mut args = discovery_args(ports);
        args.extend([
            "--cluster-secret-file".into(),
            cluster_secret.display().to_string(),
            "--listen".into(),
            Ports::local(*port).to_string(),
            "--fencing-interval-ms".into(),
            FENCING_INTERVAL_MS.to_string(),
        ]);
        let log = dir.join("logs").join(format!("{name}.log"));
        let server = Server::start(&name, nameserver_bin, &args, &log)?;
        dev.cluster.lock().unwrap().nameservers.push(server);
        wait_healthy(dev, |c| &mut c.nameservers[i], Ports::local(*port)).await?;
    }
    // Masters and slaves share one replication secret (a master admits no slave without it).
    let secret = dir.join("replication.secret");
    std::fs::write(&secret, "smq dev replication secret\n")
        .with_context(|| format!("cannot write {}", secret.display()))?;
    for (i, group) in GROUPS.iter().enumerate() {
        let (master, slave) = (ports.masters[i], ports.slaves[i]);
        let broker_args = |role: &str, broker: BrokerPorts| {
            let mut args = discovery_args(ports);
            args.extend([
                "--listen".into(),
                Ports::local(broker.listen).to_string(),
                "--http".into(),
                Ports::local(broker.http).to_string(),
                "--data-dir".into(),
                dir.join(format!("{group}-{role}")).display().to_string(),
                "--cluster".into(),
                CLUSTER.into(),
                "--group".into(),
                (*group).into(),
                "--role".into(),
                role.into(),
                "--segment-bytes".into(),
                SEGMENT_BYTES.to_string(),
                "--disk-usage-watermark-percent".into(),
                disk::WATERMARK_PERCENT.to_string(),
                "--replication-secret-file".into(),
                secret.display().to_string(),
                "--cluster-secret-file".into(),
                cluster_secret.display().to_string(),
            ]);
            args
        };
        let mut args = broker_args("master", master);
        args.extend(["--replication".into(), "async".into()]);
        let log = dir.join("logs").join(format!("{group}-master.log"));
        let server = Server::start(&format!("{group} master"), broker_bin, &args, &log)?;
        dev.cluster.lock().unwrap().masters.push(server);
        wait_healthy(dev, |c| &mut c.masters[i], Ports::local(master.http)).await?;
        let mut args = broker_args("slave", slave);
        args.extend(["--master".into(), Ports::local(master.listen).to_string()]);
        let log = dir.join("logs").join(format!("{group}-slave.log"));
        let server = Server::start(&format!("{group} slave"), broker_bin, &args, &log)?;
        dev.cluster.lock().unwrap().slaves.push(server);
        wait_healthy(dev, |c| &mut c.slaves[i], Ports::local(slave.http)).await?;
    }
    let ns1 = Ports::local(ports.nameservers[0]);
    let all_registered = probe::wait_until(
        START_TIMEOUT,
        || true,
        || async {
            probe::cluster(ns1)
                .await
                .is_ok_and(|view| view.brokers.len() == 2 * GROUPS.len())
        },
    )
    .await;
    if !all_registered {
        bail!(
            "ns1 did not list both masters and both slaves within {START_TIMEOUT:?}: see the logs in {}",
            dir.join("logs").display()
        );
    }
    Ok(())
}

/// 128 bits from the system's random source, in hex: a fresh cluster secret per `smq dev`.
fn random_hex() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // Loopback only, and the file is the secret's only copy: the time will do.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = nanos.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits until the server `pick` chooses answers /healthz on `http`; its log's tail if it dies
/// or takes too long.
async fn wait_healthy(
    dev: &Dev,
    pick: impl Fn(&mut Cluster) -> &mut Server,
    http: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let alive = || pick(&mut dev.cluster.lock().unwrap()).running();
    if probe::wait_until(START_TIMEOUT, alive, || probe::healthy(http)).await {
        return Ok(());
    }
    let mut cluster = dev.cluster.lock().unwrap();
    let server = pick(&mut cluster);
    bail!(
        "{} did not become healthy on http://{http}/healthz; the end of its log {}:\n{}",
        server.name,
        server.log.display(),
        server.log_tail()
    )
}

fn print_banner(ports: &Ports, dir: &Path, disk: disk::Usage, took: Duration) {
    let ns = |i: usize| Ports::local(ports.nameservers[i]);
    let master = |i: usize| ports.masters[i];
    println!(
        "smq dev is running (started in {:.1} s): DNS 127.0.0.1:{dns} answers {srv} -> ns1 (TTL {ttl} s)\n\
         \x20 ns1 http://{ns1} (named by the record), ns2 http://{ns2} (standby)\n\
         \x20 broker-a master 127.0.0.1:{a} (http 127.0.0.1:{ah}), broker-b master 127.0.0.1:{b} (http 127.0.0.1:{bh})\n\
         \x20 broker-a slave 127.0.0.1:{sa}, broker-b slave 127.0.0.1:{sb} (async replication)\n\
         \x20 data and logs in {dir} ({free} MiB free, {used}% used; the brokers refuse appends above {watermark}%)\n\
         \n\
         In another shell:\n\
         \x20 {export}\n\
         \x20 smq topic create orders --queues 4\n\
         \x20 seq 1 1000 | smq produce orders\n\
         \x20 smq consume orders --group g --idle-timeout 2\n\
         \x20 smq cluster\n\
         \x20 curl http://{ns1}/v1/routes/orders\n\
         \x20 curl http://127.0.0.1:{ah}/metrics\n\
         \x20 smq dev failover{base}          # kill ns1, repoint the record to ns2\n\
         \x20 smq dev kill-master broker-a{base}   # kill a master: unkeyed sends go on to broker-b\n\
         Ctrl-C stops everything.",
        took.as_secs_f64(),
        dns = ports.dns,
        srv = SRV_NAME.trim_end_matches('.'),
        ttl = SRV_TTL_SECS,
        ns1 = ns(0),
        ns2 = ns(1),
        a = master(0).listen,
        ah = master(0).http,
        b = master(1).listen,
        bh = master(1).http,
        sa = ports.slaves[0].listen,
        sb = ports.slaves[1].listen,
        dir = dir.display(),
        free = disk.free_bytes >> 20,
        used = disk.used_percent,
        watermark = disk::WATERMARK_PERCENT,
        export = export_line(ports),
        base = if ports.dns == layout::DNS_PORT_DEFAULT {
            String::new()
        } else {
            format!(" --base-port {}", ports.dns)
        },
    );
}

/// Serves control requests and, on a terminal, the status line, until Ctrl-C or SIGTERM.
async fn serve_until_stopped(dev: &Arc<Dev>, control: tokio::net::TcpListener) {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let sigterm = async move {
        match &mut terminate {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sigterm);
    let terminal = std::io::stderr().is_terminal();
    let mut status = Status::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = &mut sigterm => break,
            accepted = control.accept() => {
                if let Ok((stream, _)) = accepted {
                    let dev = dev.clone();
                    tokio::spawn(control::serve(stream, move |request, mut progress| async move {
                        let result = handle(&dev, request, &mut progress).await;
                        (progress, result)
                    }));
                }
            }
            _ = tick.tick(), if terminal => {
                let line = status.line(dev).await;
                eprint!("\r\x1b[K{line}");
            }
        }
    }
    if terminal {
        eprintln!();
    }
}

/// Messages in/out per second across the brokers, from their /metrics.
#[derive(Default)]
struct Status {
    last: Option<(Instant, u64, u64)>,
}

impl Status {
    async fn line(&mut self, dev: &Dev) -> String {
        let (mut up, mut total_in, mut total_out) = (0, 0, 0);
        for master in &dev.ports.masters {
            if let Some((messages_in, messages_out)) =
                probe::message_counts(Ports::local(master.http)).await
            {
                up += 1;
                total_in += messages_in;
                total_out += messages_out;
            }
        }
        let now = Instant::now();
        let rates = match self.last.replace((now, total_in, total_out)) {
            Some((then, last_in, last_out)) => {
                let secs = now.duration_since(then).as_secs_f64().max(0.001);
                (
                    total_in.saturating_sub(last_in) as f64 / secs,
                    total_out.saturating_sub(last_out) as f64 / secs,
                )
            }
            None => (0.0, 0.0),
        };
        let named = dev.cluster.lock().unwrap().named + 1;
        format!(
            "brokers up {up}/{} | record names ns{named} | in {:.0} msg/s, out {:.0} msg/s | Ctrl-C stops",
            GROUPS.len(),
            rates.0,
            rates.1
        )
    }
}

/// Runs one control request.
async fn handle<W: tokio::io::AsyncWrite + Unpin>(
    dev: &Dev,
    request: Request,
    progress: &mut Progress<W>,
) -> anyhow::Result<()> {
    match request {
        Request::Failover => failover(dev, progress).await,
        Request::KillMaster(group) => kill_master(dev, &group, progress).await,
    }
}

/// Kills ns1, repoints the record to ns2, and reports when ns2 serves routes and knows every
/// live master.
async fn failover<W: tokio::io::AsyncWrite + Unpin>(
    dev: &Dev,
    progress: &mut Progress<W>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let at = || format!("+{:>5} ms", started.elapsed().as_millis());
    let masters_up = {
        let mut cluster = dev.cluster.lock().unwrap();
        if cluster.named != 0 {
            bail!("the record already names ns2 (ns1 is gone): restart smq dev to fail over again");
        }
        cluster.nameservers[0].kill();
        cluster
            .masters
            .iter_mut()
            .map(|m| m.running())
            .filter(|up| *up)
            .count()
    };
    progress
        .say(&format!("{} killed ns1 (SIGKILL)", at()))
        .await;
    point_record(&dev.dns, &dev.ports, 1).await?;
    dev.cluster.lock().unwrap().named = 1;
    progress
        .say(&format!(
            "{} {} now names ns2.{}:{} (clients re-resolve within the TTL, {SRV_TTL_SECS} s; \
             producers and consumers go on with their cached routes meanwhile)",
            at(),
            SRV_NAME.trim_end_matches('.'),
            ZONE.trim_end_matches('.'),
            dev.ports.nameservers[1]
        ))
        .await;
    let ns2 = Ports::local(dev.ports.nameservers[1]);
    let serving = probe::wait_until(START_TIMEOUT, || true, || probe::unfenced(ns2)).await;
    if !serving {
        bail!("ns2 is still fenced after {START_TIMEOUT:?}: see its log");
    }
    progress
        .say(&format!(
            "{} ns2 serves routes (its fencing check, every {FENCING_INTERVAL_MS} ms, saw the record)",
            at()
        ))
        .await;
    let listed = |warm: bool| async move {
        probe::cluster(ns2).await.is_ok_and(|view| {
            view.brokers.len() >= masters_up && (!warm || view.warming_up_ms == 0)
        })
    };
    if !probe::wait_until(START_TIMEOUT, || true, || listed(false)).await {
        bail!("ns2 did not see {masters_up} master(s) re-register within {START_TIMEOUT:?}");
    }
    progress
        .say(&format!(
            "{} ns2 lists all {masters_up} live master(s) (they re-register at their next heartbeat)",
            at()
        ))
        .await;
    if !probe::wait_until(START_TIMEOUT, || true, || listed(true)).await {
        bail!("ns2 did not finish warming up within {START_TIMEOUT:?}");
    }
    progress
        .say(&format!(
            "{} ns2 is warm (one heartbeat timeout after it was named, it answers \"no such topic\" \
             instead of \"retry\"): the failover is complete",
            at()
        ))
        .await;
    Ok(())
}

/// Kills `group`'s master and reports when the NameServer the record names drops it.
async fn kill_master<W: tokio::io::AsyncWrite + Unpin>(
    dev: &Dev,
    group: &str,
    progress: &mut Progress<W>,
) -> anyhow::Result<()> {
    let Some(index) = GROUPS.iter().position(|g| *g == group) else {
        bail!(
            "no group {group:?} in smq dev: it runs {}",
            GROUPS.join(" and ")
        );
    };
    let started = Instant::now();
    let at = || format!("+{:>5} ms", started.elapsed().as_millis());
    let named = {
        let mut cluster = dev.cluster.lock().unwrap();
        let master = &mut cluster.masters[index];
        if !master.running() {
            bail!("the {group} master is not running (killed already?)");
        }
        let pid = master.pid().unwrap_or_default();
        master.kill();
        (cluster.named, pid)
    };
    let (named, pid) = named;
    progress
        .say(&format!(
            "{} killed the {group} master (pid {pid}, SIGKILL): producers pass unkeyed messages to the other \
             group at once; keyed ones of its queues fail (retryable) until it is back",
            at()
        ))
        .await;
    let nameserver = Ports::local(dev.ports.nameservers[named]);
    let dropped = probe::wait_until(
        START_TIMEOUT,
        || true,
        || async {
            probe::cluster(nameserver).await.is_ok_and(|view| {
                !view
                    .brokers
                    .iter()
                    .any(|b| b.group == group && b.role == Role::Master)
            })
        },
    )
    .await;
    if !dropped {
        bail!(
            "ns{} still lists the {group} master after {START_TIMEOUT:?}",
            named + 1
        );
    }
    progress
        .say(&format!(
            "{} ns{} dropped it from the routes (no heartbeat within its heartbeat timeout); \
             its slave keeps serving the group's backlog to consumers; restart smq dev with \
             --keep to bring the master back with its data",
            at(),
            named + 1
        ))
        .await;
    Ok(())
}

/// Stops the masters, then the NameServers, then the DNS server, saying so; removes a fresh
/// temporary data directory.
async fn stop_everything(dev: Arc<Dev>, dir: &Path, remove_dir: bool) {
    eprintln!("smq dev: stopping the brokers, then the NameServers, then DNS");
    {
        let mut cluster = dev.cluster.lock().unwrap_or_else(|p| p.into_inner());
        let cluster = &mut *cluster;
        for server in cluster
            .masters
            .iter_mut()
            .chain(cluster.slaves.iter_mut())
            .chain(cluster.nameservers.iter_mut())
        {
            if !server.stop() {
                eprintln!(
                    "smq dev: {} did not stop cleanly (see {})",
                    server.name,
                    server.log.display()
                );
            }
        }
    }
    // A control request still running holds the DNS server; it stops with the process then.
    if let Ok(dev) = Arc::try_unwrap(dev) {
        dev.dns.shutdown().await;
    }
    if remove_dir {
        let _ = std::fs::remove_dir_all(dir);
        eprintln!("smq dev: stopped; removed {}", dir.display());
    } else {
        eprintln!("smq dev: stopped; data kept in {}", dir.display());
    }
}
