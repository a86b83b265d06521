//! Crash test: a child process appends with sync flush while this test kills it with SIGKILL at
//! random moments, 20 times; after each kill, every append the child saw acknowledged must be
//! readable, CRC-valid and intact.
//!
//! The child is this same test binary, re-run with `SMQ_CRASH_CHILD_DIR` set so that only
//! `crash_child_appender` does anything.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use smq_broker::storage::{FlushMode, Store, StoreConfig};
use smq_protocol::record_batch::{encode, BatchView, Message};

const CHILD_DIR_VAR: &str = "SMQ_CRASH_CHILD_DIR";
const QUEUES: u32 = 4;
const KILLS: usize = 20;

fn store_config(dir: &Path) -> StoreConfig {
    let mut config = StoreConfig::new(dir);
    config.flush = FlushMode::Sync;
    config.segment_bytes = 1024 * 1024;
    config.index_entries_per_file = 256;
    config.flush_interval_ms = 50;
    // The test stores little: a machine's nearly full disk should not fail it.
    config.disk_usage_watermark_percent = 99;
    config
}

/// The body of the message at `offset` of `queue`: its size and bytes follow from both.
fn expected_body(queue: u32, offset: u64) -> Vec<u8> {
    let seed = u64::from(queue) << 40 | offset;
    let len = 16 + (seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52) as usize; // 16..4111 bytes
    let label = format!("q{queue}-o{offset}|");
    label.bytes().cycle().take(len).collect()
}

#[test]
fn crash_child_appender() {
    let Some(dir) = std::env::var_os(CHILD_DIR_VAR) else {
        return; // Not the child: nothing to do.
    };
    let store = Store::open(store_config(Path::new(&dir))).expect("child opens the store");
    std::thread::scope(|scope| {
        for queue in 0..QUEUES {
            let store = &store;
            scope.spawn(move || loop {
                let next = store.queue_offsets("crash", queue).1;
                let count = 1 + (next % 7);
                let messages: Vec<Message> = (next..next + count)
                    .map(|offset| Message::from_body(expected_body(queue, offset)))
                    .collect();
                let appended = store
                    .append(&encode("crash", queue, &messages))
                    .and_then(|receipt| receipt.wait_durable())
                    .expect("append");
                assert_eq!(appended.base_queue_offset, next, "one appender per queue");
                let mut stdout = std::io::stdout().lock();
                writeln!(
                    stdout,
                    "ack {queue} {} {}",
                    appended.base_queue_offset, appended.message_count
                )
                .unwrap();
                stdout.flush().unwrap();
            });
        }
    });
}

/// A small xorshift generator: the seed is printed so that a failing run can be replayed.
struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

#[test]
fn acknowledged_appends_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::env::var("SMQ_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed {seed} (set SMQ_CRASH_SEED to replay)");
    let mut random = Random(seed);
    // Highest acknowledged end offset per queue, over all rounds.
    let mut acknowledged: BTreeMap<u32, u64> = BTreeMap::new();
    for round in 0..KILLS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_appender",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_VAR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning the child appender");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (first_ack, first_ack_seen) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                let fields: Vec<&str> = line.split(' ').collect();
                if let ["ack", queue, base, count] = fields[..] {
                    acks.push((
                        queue.parse::<u32>().unwrap(),
                        base.parse::<u64>().unwrap(),
                        count.parse::<u64>().unwrap(),
                    ));
                    let _ = first_ack.send(());
                }
            }
            acks
        });
        // The random moment is counted from the first acknowledgement, so that a slow start of
        // the child (a busy machine) does not make the kill land before any append.
        first_ack_seen
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!("round {round}: the child acknowledged nothing within 30 s")
            });
        let kill_after = Duration::from_millis(random.below(400));
        let started = Instant::now();
        while started.elapsed() < kill_after {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the child appender exited by itself in round {round}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acks = reader.join().unwrap();
        for (queue, base, count) in acks {
            let end = acknowledged.entry(queue).or_default();
            *end = (*end).max(base + count);
        }

        let store = Store::open(store_config(dir.path())).expect("reopening after SIGKILL");
        assert!(
            !store.recovery_report().clean,
            "a killed store is recovered, not trusted"
        );
        for (&queue, &end) in &acknowledged {
            let mut offset = 0;
            while offset < end {
                let read = store.read("crash", queue, offset, 1 << 20).unwrap();
                assert!(
                    !read.batches.is_empty(),
                    "round {round}: queue {queue} offset {offset} of acknowledged {end} is missing"
                );
                for bytes in &read.batches {
                    let view = BatchView::parse(bytes)
                        .unwrap_or_else(|e| panic!("round {round}: stored batch invalid: {e}"));
                    assert_eq!(
                        view.base_queue_offset(),
                        offset,
                        "round {round}: queue {queue}"
                    );
                    for (i, message) in view.messages().enumerate() {
                        assert_eq!(
                            message.body,
                            expected_body(queue, offset + i as u64),
                            "round {round}: queue {queue} offset {}",
                            offset + i as u64
                        );
                    }
                    offset = view.next_queue_offset();
                }
            }
        }
        store.close().unwrap();
    }
    let total: u64 = acknowledged.values().sum();
    eprintln!("{total} acknowledged messages survived {KILLS} kills");
}
