//! Storage append benchmark: 1 KiB messages in batches, async flush over at least 4 GiB and sync
//! flush with 1, 8 and 64 concurrent appenders, each beside the disk's own limits measured in the
//! same run (dd with conv=fdatasync, interleaved with the runs, and fsync latency).
//!
//! cargo bench -p smq-broker --bench storage_append [-- --quick] [--rounds N] [--dir DIR]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use smq_broker::storage::{FlushMode, Store, StoreConfig};
use smq_protocol::record_batch::{encode, Message};

const MESSAGE_BYTES: usize = 1024;
const MIB: f64 = 1024.0 * 1024.0;

struct Settings {
    dir: PathBuf,
    rounds: usize,
    async_bytes: u64,
    dd_mib: u64,
    sync_duration: Duration,
}

fn settings() -> Settings {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let quick = args.iter().any(|a| a == "--quick");
    let dir = value("--dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data"));
    Settings {
        dir,
        rounds: value("--rounds")
            .and_then(|r| r.parse().ok())
            .unwrap_or(if quick { 1 } else { 3 }),
        async_bytes: if quick { 256 << 20 } else { 4 << 30 },
        dd_mib: if quick { 256 } else { 2048 },
        sync_duration: Duration::from_secs(if quick { 1 } else { 5 }),
    }
}

/// MB/s of `dd if=/dev/zero bs=1M count=N conv=fdatasync`, timed here.
fn dd_mb_per_s(dir: &Path, mib: u64) -> f64 {
    let file = dir.join("dd.bin");
    let started = Instant::now();
    let status = Command::new("dd")
        .args([
            "if=/dev/zero",
            "bs=1M",
            &format!("count={mib}"),
            "conv=fdatasync",
        ])
        .arg(format!("of={}", file.display()))
        .stderr(std::process::Stdio::null())
        .status()
        .expect("running dd");
    assert!(status.success(), "dd failed");
    let seconds = started.elapsed().as_secs_f64();
    std::fs::remove_file(&file).unwrap();
    mib as f64 * MIB / 1e6 / seconds
}

/// p50 and p99 in microseconds of fdatasync after a 4 KiB append to a preallocated file.
fn fsync_latency_us(dir: &Path) -> (f64, f64) {
    use std::os::unix::fs::FileExt;
    let path = dir.join("fsync.bin");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    file.set_len(64 << 20).unwrap();
    file.sync_all().unwrap();
    let block = vec![7u8; 4096];
    let mut samples = Vec::new();
    for i in 0..2000u64 {
        file.write_all_at(&block, i * 4096).unwrap();
        let started = Instant::now();
        file.sync_data().unwrap();
        samples.push(started.elapsed().as_secs_f64() * 1e6);
    }
    std::fs::remove_file(&path).unwrap();
    (
        percentile(&mut samples, 50.0),
        percentile(&mut samples, 99.0),
    )
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// One batch of `count` 1 KiB messages of pseudo-random (incompressible) bytes.
fn batch(queue: u32, count: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64 ^ u64::from(queue);
    let messages: Vec<Message> = (0..count)
        .map(|_| {
            let body = (0..MESSAGE_BYTES / 8)
                .flat_map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state.to_le_bytes()
                })
                .collect::<Vec<u8>>();
            Message::from_body(body)
        })
        .collect();
    encode("bench", queue, &messages)
}

fn fresh_store(settings: &Settings, flush: FlushMode) -> Store {
    let dir = settings.dir.join("store");
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = StoreConfig::new(&dir);
    config.flush = flush;
    Store::open(config).expect("opening the bench store")
}

/// Appends `bytes` of 64-message batches with async flush; MB/s of message bytes including the
/// final flush on close.
fn run_async(settings: &Settings) -> f64 {
    let store = fresh_store(settings, FlushMode::Async);
    let batch = batch(0, 64);
    let per_batch = (64 * MESSAGE_BYTES) as u64;
    let started = Instant::now();
    let mut written = 0;
    while written < settings.async_bytes {
        store.append(&batch).unwrap().wait_durable().unwrap();
        written += per_batch;
    }
    store.close().unwrap();
    written as f64 / 1e6 / started.elapsed().as_secs_f64()
}

struct SyncResult {
    mb_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    appends_per_fsync: f64,
}

/// `appenders` threads each append 16-message batches with sync flush, one at a time, for the
/// configured duration.
fn run_sync(settings: &Settings, appenders: u32) -> SyncResult {
    let store = fresh_store(settings, FlushMode::Sync);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let mut latencies: Vec<f64> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..appenders)
            .map(|queue| {
                let (store, stop) = (&store, &stop);
                scope.spawn(move || {
                    let batch = batch(queue, 16);
                    let mut samples = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let begun = Instant::now();
                        store.append(&batch).unwrap().wait_durable().unwrap();
                        samples.push(begun.elapsed().as_secs_f64() * 1e6);
                    }
                    samples
                })
            })
            .collect();
        std::thread::sleep(settings.sync_duration);
        stop.store(true, Ordering::Relaxed);
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let appends = latencies.len() as f64;
    let fsyncs = store.flush_count().max(1) as f64;
    store.close().unwrap();
    SyncResult {
        mb_per_s: appends * (16 * MESSAGE_BYTES) as f64 / 1e6 / seconds,
        p50_us: percentile(&mut latencies, 50.0),
        p99_us: percentile(&mut latencies, 99.0),
        appends_per_fsync: appends / fsyncs,
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted[sorted.len() / 2]
}

fn range(values: &[f64]) -> String {
    let min = values.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = values.iter().cloned().fold(0.0, f64::max);
    format!("{min:.0}–{max:.0}")
}

fn main() {
    let settings = settings();
    std::fs::create_dir_all(&settings.dir).unwrap();
    println!(
        "# storage append benchmark ({} rounds, data in {})",
        settings.rounds,
        settings.dir.display()
    );
    let (fsync_p50, fsync_p99) = fsync_latency_us(&settings.dir);
    println!("disk fdatasync of a 4 KiB append: p50 {fsync_p50:.0} µs, p99 {fsync_p99:.0} µs");

    let mut dd = Vec::new();
    let mut asyncs = Vec::new();
    let mut syncs: Vec<(u32, Vec<SyncResult>)> = vec![(1, vec![]), (8, vec![]), (64, vec![])];
    for round in 1..=settings.rounds {
        let before = dd_mb_per_s(&settings.dir, settings.dd_mib);
        let async_mb = run_async(&settings);
        let middle = dd_mb_per_s(&settings.dir, settings.dd_mib);
        println!(
            "round {round}: dd {before:.0} MB/s | async {async_mb:.0} MB/s ({:.0}% of the dd beside it) | dd {middle:.0} MB/s",
            100.0 * async_mb / ((before + middle) / 2.0)
        );
        dd.extend([before, middle]);
        asyncs.push(async_mb);
        for (appenders, results) in &mut syncs {
            let result = run_sync(&settings, *appenders);
            println!(
                "round {round}: sync x{appenders}: {:.0} MB/s ({:.0}% of dd {middle:.0}), p50 {:.0} µs, p99 {:.0} µs, {:.1} appends per fsync",
                result.mb_per_s,
                100.0 * result.mb_per_s / middle,
                result.p50_us,
                result.p99_us,
                result.appends_per_fsync
            );
            results.push(result);
        }
    }
    let after = dd_mb_per_s(&settings.dir, settings.dd_mib);
    println!("final dd {after:.0} MB/s");
    dd.push(after);

    let dd_median = median(&dd);
    println!();
    println!("| measure | median | range | median / dd median |");
    println!("|---|---|---|---|");
    println!(
        "| dd {} MiB conv=fdatasync, MB/s | {dd_median:.0} | {} | 100% |",
        settings.dd_mib,
        range(&dd)
    );
    println!(
        "| async flush, 64 x 1 KiB per batch, {} MiB, MB/s | {:.0} | {} | {:.0}% |",
        settings.async_bytes >> 20,
        median(&asyncs),
        range(&asyncs),
        100.0 * median(&asyncs) / dd_median
    );
    for (appenders, results) in &syncs {
        let mb: Vec<f64> = results.iter().map(|r| r.mb_per_s).collect();
        let p99: Vec<f64> = results.iter().map(|r| r.p99_us).collect();
        let p50: Vec<f64> = results.iter().map(|r| r.p50_us).collect();
        println!(
            "| sync flush, {appenders} appenders, 16 x 1 KiB per batch, MB/s | {:.0} | {} | {:.0}% |",
            median(&mb),
            range(&mb),
            100.0 * median(&mb) / dd_median
        );
        println!(
            "| sync flush, {appenders} appenders: append p50 / p99 µs | {:.0} / {:.0} | p99 {} | p99 = {:.1}x fsync p99 |",
            median(&p50),
            median(&p99),
            range(&p99),
            median(&p99) / fsync_p99
        );
    }
    println!("| disk fdatasync 4 KiB p50 / p99 µs | {fsync_p50:.0} / {fsync_p99:.0} | | |");
    let _ = std::fs::remove_dir_all(settings.dir.join("store"));
}
