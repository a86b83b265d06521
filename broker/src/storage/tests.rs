//! Tests of the whole store: round trips, a model-based test, recovery, fault injection, disk
//! space and retention.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;
use smq_protocol::record_batch::{encode, BatchView, Message};

use super::*;

fn config(dir: &Path) -> StoreConfig {
    let mut config = StoreConfig::new(dir);
    config.segment_bytes = 64 * 1024;
    config.index_entries_per_file = 16;
    config.flush_interval_ms = 20;
    // These stores hold little: a machine's disk at 91% must not fail them (the watermark's own
    // tests set theirs on a small tmpfs).
    config.disk_usage_watermark_percent = 99;
    config
}

fn batch(topic: &str, queue: u32, bodies: &[&[u8]]) -> Vec<u8> {
    let messages: Vec<Message> = bodies.iter().map(|b| Message::from_body(*b)).collect();
    encode(topic, queue, &messages)
}

/// Appends `batch` and waits until it is durable, failing the test otherwise.
fn append_ok(store: &Store, batch: &[u8]) -> Appended {
    store.append(batch).unwrap().wait_durable().unwrap()
}

fn bodies_of(result: &ReadResult) -> Vec<(u64, Vec<u8>)> {
    result
        .batches
        .iter()
        .flat_map(|bytes| {
            let view = BatchView::parse(bytes).expect("stored batches are valid");
            let base = view.base_queue_offset();
            view.messages()
                .enumerate()
                .map(|(i, m)| (base + i as u64, m.body.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn appended_batches_read_back_with_offsets_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let first = append_ok(&store, &batch("orders", 0, &[b"a", b"b"]));
    let second = append_ok(&store, &batch("orders", 0, &[b"c"]));
    let other = append_ok(&store, &batch("orders", 1, &[b"x"]));
    assert_eq!(
        (
            first.base_queue_offset,
            second.base_queue_offset,
            other.base_queue_offset
        ),
        (0, 2, 0)
    );
    assert!(store.flushed_position() >= store.end_position());
    store.close().unwrap();

    let store = Store::open(config(dir.path())).unwrap();
    assert!(store.recovery_report().clean);
    let read = store.read("orders", 0, 1, 1 << 20).unwrap();
    assert_eq!(
        bodies_of(&read),
        vec![(0, b"a".to_vec()), (1, b"b".to_vec()), (2, b"c".to_vec())]
    );
    assert_eq!((read.earliest_offset, read.next_offset), (0, 3));
    assert_eq!(
        store.read("orders", 0, 3, 1 << 20).unwrap().batches.len(),
        0
    );
    assert!(matches!(
        store.read("orders", 0, 4, 1 << 20),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    let next = append_ok(&store, &batch("orders", 0, &[b"d"]));
    assert_eq!(next.base_queue_offset, 3);
}

#[test]
fn stored_batches_carry_the_brokers_stamp_and_a_valid_crc() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    store.begin_epoch(7, false).unwrap();
    append_ok(&store, &batch("t", 0, &[b"1", b"2"]));
    append_ok(&store, &batch("t", 0, &[b"3"]));
    let read = store.read("t", 0, 2, 1 << 20).unwrap();
    let view = BatchView::parse(&read.batches[0]).unwrap();
    assert_eq!((view.master_epoch(), view.base_queue_offset()), (7, 2));
    assert!(view.store_timestamp_ms() > 0);
}

#[test]
fn reads_stop_at_max_bytes_but_return_at_least_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    for _ in 0..10 {
        append_ok(&store, &batch("t", 0, &[&[7u8; 1000]]));
    }
    assert_eq!(store.read("t", 0, 0, 1).unwrap().batches.len(), 1);
    let some = store.read("t", 0, 0, 3500).unwrap();
    assert!(
        (2..=3).contains(&some.batches.len()),
        "{}",
        some.batches.len()
    );
    assert_eq!(store.read("t", 0, 0, 1 << 20).unwrap().batches.len(), 10);
}

#[test]
fn invalid_input_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let mut corrupt = batch("t", 0, &[b"hello"]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert!(matches!(
        store.append(&corrupt),
        Err(StorageError::InvalidBatch(_))
    ));
    assert!(matches!(
        store.append(&batch("../etc", 0, &[b"x"])),
        Err(StorageError::InvalidTopicName { .. })
    ));
    let big = batch("t", 0, &[&vec![1u8; 70 * 1024]]);
    assert!(matches!(
        store.append(&big),
        Err(StorageError::BatchTooLarge { .. })
    ));
    assert_eq!(store.end_position(), 0);
    append_ok(&store, &batch("t", 0, &[b"fine"]));
}

#[test]
fn a_second_store_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _store = Store::open(config(dir.path())).unwrap();
    assert!(matches!(
        Store::open(config(dir.path())),
        Err(StorageError::Locked { .. })
    ));
}

#[test]
fn concurrent_sync_appends_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    std::thread::scope(|scope| {
        for queue in 0..16 {
            let store = &store;
            scope.spawn(move || {
                for _ in 0..50 {
                    append_ok(store, &batch("t", queue, &[&[1u8; 512]]));
                }
            });
        }
    });
    assert!(
        store.flush_count() < 16 * 50,
        "{} fsyncs for 800 appends",
        store.flush_count()
    );
    for queue in 0..16 {
        assert_eq!(store.queue_offsets("t", queue), (0, 50));
    }
}

// ---------------------------------------------------------------- model-based

#[derive(Debug, Clone)]
enum Op {
    Append {
        topic: usize,
        queue: u32,
        messages: usize,
        body_bytes: usize,
    },
    Read {
        topic: usize,
        queue: u32,
        offset_seed: u64,
        max_bytes: usize,
    },
    Reopen,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2usize, 0..3u32, 1..6usize, 0..3000usize)
            .prop_map(|(topic, queue, messages, body_bytes)| Op::Append { topic, queue, messages, body_bytes }),
        3 => (0..2usize, 0..3u32, any::<u64>(), 1..20_000usize)
            .prop_map(|(topic, queue, offset_seed, max_bytes)| Op::Read { topic, queue, offset_seed, max_bytes }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random appends, reads, clean reopenings and crashes applied to the store and to a `Vec`
    /// per queue: every read must agree with the model.
    #[test]
    fn store_agrees_with_a_simple_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let topics = ["alpha", "beta"];
        let mut model: HashMap<(usize, u32), Vec<Vec<u8>>> = HashMap::new();
        let mut store = Some(Store::open(config(dir.path())).unwrap());
        let mut counter = 0u64;
        for op in ops {
            match op {
                Op::Append { topic, queue, messages, body_bytes } => {
                    let bodies: Vec<Vec<u8>> = (0..messages)
                        .map(|_| { counter += 1; let mut b = counter.to_be_bytes().to_vec(); b.resize(body_bytes.max(8), counter as u8); b })
                        .collect();
                    let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
                    let appended = append_ok(store.as_ref().unwrap(), &batch(topics[topic], queue, &refs));
                    let expected = model.entry((topic, queue)).or_default();
                    prop_assert_eq!(appended.base_queue_offset, expected.len() as u64);
                    expected.extend(bodies);
                }
                Op::Read { topic, queue, offset_seed, max_bytes } => {
                    let expected = model.get(&(topic, queue)).cloned().unwrap_or_default();
                    let offset = offset_seed % (expected.len() as u64 + 1);
                    let read = store.as_ref().unwrap().read(topics[topic], queue, offset, max_bytes).unwrap();
                    prop_assert_eq!(read.next_offset, expected.len() as u64);
                    let got = bodies_of(&read);
                    if offset < expected.len() as u64 {
                        prop_assert!(!got.is_empty());
                        prop_assert!(got[0].0 <= offset);
                    }
                    for (queue_offset, body) in got {
                        prop_assert_eq!(&body, &expected[queue_offset as usize]);
                    }
                }
                Op::Reopen => {
                    store.take().unwrap().close().unwrap();
                    store = Some(Store::open(config(dir.path())).unwrap());
                }
                Op::Crash => {
                    store.take().unwrap().crash();
                    store = Some(Store::open(config(dir.path())).unwrap());
                    prop_assert!(!store.as_ref().unwrap().recovery_report().clean);
                }
            }
        }
    }
}

#[test]
fn under_sync_flush_readers_see_a_batch_only_once_it_is_fsynced() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    append_ok(&store, &batch("t", 0, &[b"durable"]));
    store.faults().sync_delay_ms.store(300, Ordering::Release);
    let receipt = store.append(&batch("t", 0, &[b"not yet"])).unwrap();
    let read = store.read("t", 0, 0, usize::MAX).unwrap();
    assert_eq!(bodies_of(&read), vec![(0, b"durable".to_vec())]);
    assert_eq!(
        read.next_offset, 1,
        "the queue ends where the fsynced part ends"
    );
    assert_eq!(store.queue_offsets("t", 0), (0, 1));
    assert!(store
        .read("t", 0, 1, usize::MAX)
        .unwrap()
        .batches
        .is_empty());
    receipt.wait_durable().unwrap();
    let read = store.read("t", 0, 1, usize::MAX).unwrap();
    assert_eq!(bodies_of(&read), vec![(1, b"not yet".to_vec())]);
    assert_eq!(store.queue_offsets("t", 0), (0, 2));
}

#[test]
fn under_async_flush_readers_see_a_batch_as_soon_as_it_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.flush = FlushMode::Async;
    config.flush_interval_ms = 60_000;
    let store = Store::open(config).unwrap();
    store.append(&batch("t", 0, &[b"m"])).unwrap();
    assert!(store.flushed_position() < store.end_position());
    assert_eq!(
        bodies_of(&store.read("t", 0, 0, usize::MAX).unwrap()).len(),
        1
    );
}

#[test]
fn a_topic_deleted_and_created_again_starts_empty_even_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.flush = FlushMode::Async;
    config.flush_interval_ms = 60_000;
    let store = Store::open(config.clone()).unwrap();
    for i in 0..5u8 {
        store.append(&batch("t", 0, &[&[i; 100]])).unwrap();
    }
    store.append(&batch("other", 0, &[b"kept"])).unwrap();
    store.delete_topic("t").unwrap();
    assert_eq!(store.queue_offsets("t", 0), (0, 0));
    let again = store.append(&batch("t", 0, &[b"new"])).unwrap().appended;
    assert_eq!(again.base_queue_offset, 0);
    store.crash();
    // Recovery scans from the checkpoint the deletion wrote: the old batches stay behind it.
    let store = Store::open(config).unwrap();
    assert_eq!(
        bodies_of(&store.read("t", 0, 0, usize::MAX).unwrap()),
        vec![(0, b"new".to_vec())]
    );
    assert_eq!(store.queue_offsets("other", 0), (0, 1));
    drop(store);
}

#[test]
fn indexes_of_topics_the_broker_no_longer_has_are_deleted_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    append_ok(&store, &batch("gone", 0, &[b"old"]));
    append_ok(&store, &batch("kept", 0, &[b"m"]));
    store.forget_topics_except(&["kept"]).unwrap();
    assert!(!dir.path().join("index/gone").exists());
    assert_eq!(store.queue_offsets("gone", 0), (0, 0));
    assert_eq!(store.queue_offsets("kept", 0), (0, 1));
}

// ---------------------------------------------------------------- recovery

/// Appends `synced` batches with sync flush (and a checkpoint), then one with async flush that
/// is not flushed, then "kills" the store. Returns the position of the unsynced batch.
fn crash_with_an_unflushed_tail(dir: &Path) -> u64 {
    let store = Store::open(config(dir)).unwrap();
    for i in 0..5u8 {
        append_ok(&store, &batch("t", 0, &[&[i; 300]]));
    }
    store.crash();
    let mut async_config = config(dir);
    async_config.flush = FlushMode::Async;
    async_config.flush_interval_ms = 60_000;
    let store = Store::open(async_config).unwrap();
    let last = append_ok(&store, &batch("t", 0, &[&[9; 300]]));
    store.crash();
    last.position
}

/// Runs `f` with tracing output captured, and returns its result and what was logged.
fn with_captured_log<T>(f: impl FnOnce() -> T) -> (T, String) {
    let _alone = super::power_loss_tests::NOT_BESIDE_THE_SIMULATION.lock();
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let log = String::from_utf8_lossy(&buffer.0.lock().unwrap()).into_owned();
    (result, log)
}

fn segment_file(dir: &Path) -> std::path::PathBuf {
    dir.join("commitlog").join("00000000000000000000")
}

fn patch_file(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, at).unwrap();
}

#[test]
fn garbage_past_the_last_batch_is_truncated_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let last = crash_with_an_unflushed_tail(dir.path());
    let store = Store::open(config(dir.path())).unwrap();
    let end = store.end_position();
    drop(store);
    // A killed store leaves its abort file; garbage lands right after the last batch.
    let store = Store::open(config(dir.path())).unwrap();
    store.crash();
    patch_file(
        &segment_file(dir.path()),
        end,
        b"\x00\x00\x01\x00garbage garbage",
    );
    let store = Store::open(config(dir.path())).unwrap();
    let report = store.recovery_report().clone();
    let truncation = report.truncated.expect("garbage is truncated");
    assert_eq!(truncation.from_position, end);
    assert_eq!(truncation.bytes, 19);
    assert_eq!(store.end_position(), end);
    assert_eq!(store.queue_offsets("t", 0), (0, 6));
    assert!(last < end);
    let next = append_ok(&store, &batch("t", 0, &[b"after"]));
    assert_eq!((next.position, next.base_queue_offset), (end, 6));
}

#[test]
fn a_flipped_byte_in_the_unflushed_last_batch_is_truncated_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let last = crash_with_an_unflushed_tail(dir.path());
    patch_file(&segment_file(dir.path()), last + 200, b"\xff");
    let (store, log) = with_captured_log(|| Store::open(config(dir.path())).unwrap());
    assert!(
        log.contains(&format!("from_position={last}")) && log.contains("batches=1"),
        "{log}"
    );
    let truncation = store
        .recovery_report()
        .truncated
        .clone()
        .expect("torn batch is truncated");
    assert_eq!(truncation.from_position, last);
    assert_eq!(truncation.batches, 1);
    assert!(truncation.reason.contains("CRC"), "{}", truncation.reason);
    assert_eq!(store.queue_offsets("t", 0), (0, 5));
    assert_eq!(store.end_position(), last);
    assert_eq!(bodies_of(&store.read("t", 0, 0, 1 << 20).unwrap()).len(), 5);
}

#[test]
fn corruption_below_the_flushed_position_is_an_error_not_a_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    for i in 0..5u8 {
        append_ok(&store, &batch("t", 0, &[&[i; 300]]));
    }
    let flushed = store.flushed_position();
    store.crash();
    // Recovery trusts nothing below the checkpoint... but checks a batch that a valid batch
    // follows: flip a byte in the second batch and make recovery scan from the start.
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    patch_file(&segment_file(dir.path()), 400, b"\xff");
    let error = Store::open(config(dir.path()))
        .err()
        .expect("middle corruption is refused");
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
    assert!(
        error.to_string().contains("a valid batch follows"),
        "{error}"
    );
    assert!(std::fs::metadata(segment_file(dir.path())).is_ok());
    assert!(flushed > 400);
}

#[test]
fn indexes_are_rebuilt_from_the_log_when_lost() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    for i in 0..40u32 {
        append_ok(&store, &batch("t", i % 2, &[b"m"]));
    }
    store.crash();
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(store.recovery_report().batches_indexed, 40);
    assert_eq!(store.queue_offsets("t", 0), (0, 20));
    assert_eq!(
        bodies_of(&store.read("t", 1, 0, 1 << 20).unwrap()).len(),
        20
    );
}

#[test]
fn a_later_index_page_on_disk_without_an_earlier_one_is_not_taken_for_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.index_entries_per_file = 512; // 12 KiB: three pages of 170 entries
    config.flush = FlushMode::Async;
    config.flush_interval_ms = 60_000;
    let store = Store::open(config.clone()).unwrap();
    let append = |i: u32| {
        store
            .append(&batch("t", 0, &[format!("m{i}").as_bytes()]))
            .unwrap();
    };
    (0..10).for_each(append);
    store.flush().unwrap();
    store.write_checkpoint().unwrap(); // the index's first 10 entries are on disk
    (10..341).for_each(append);
    store.flush().unwrap(); // the log is on disk, the index's later entries are not
    store.crash();
    // A power loss: the index's first page as last synced, its second page written back.
    let index = dir.path().join("index/t/0/00000000000000000000");
    patch_file(&index, 10 * 24, &[0; 4096 - 10 * 24]);
    let store = Store::open(config.clone()).unwrap();
    assert_eq!(store.queue_offsets("t", 0), (0, 341));
    let bodies: Vec<Vec<u8>> = bodies_of(&store.read("t", 0, 0, usize::MAX).unwrap())
        .into_iter()
        .map(|(_, body)| body)
        .collect();
    let expected: Vec<Vec<u8>> = (0..341).map(|i| format!("m{i}").into_bytes()).collect();
    assert_eq!(bodies, expected);
    store.close().unwrap();
    let store = Store::open(config).unwrap();
    assert_eq!(store.queue_offsets("t", 0), (0, 341));
}

#[test]
fn zeros_below_the_flushed_position_are_corruption_not_the_end_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let positions: Vec<u64> = (0..5u8)
        .map(|i| append_ok(&store, &batch("t", 0, &[&[i; 300]])).position)
        .collect();
    let flushed = store.flushed_position();
    store.crash();
    // The indexes' part of the checkpoint lags the log's, so recovery scans from there, and a
    // power loss left zeros in the middle of what the checkpoint says was flushed.
    let checkpoint = checkpoint::Checkpoint {
        flushed_position: flushed,
        index_flushed_position: positions[1],
    };
    checkpoint
        .write(&dir.path().join(file_names::CHECKPOINT_FILE))
        .unwrap();
    patch_file(&segment_file(dir.path()), positions[2], &[0; 4]);
    let error = Store::open(config(dir.path()))
        .err()
        .expect("zeros below the flushed position are refused");
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains("zeros where a batch"), "{error}");
    let segment = std::fs::read(segment_file(dir.path())).unwrap();
    let at = positions[3] as usize;
    assert_ne!(
        segment[at..at + 4],
        [0; 4],
        "nothing after the zeros was truncated"
    );
}

#[test]
fn after_a_crash_the_log_goes_on_in_its_segment_not_in_the_one_made_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    append_ok(&store, &batch("t", 0, &[b"before"]));
    wait_for(|| store.preparer_is_idle().then_some(()));
    assert!(dir.path().join("commitlog/00000000000000065536").exists());
    let end = store.end_position();
    store.crash();
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(store.end_position(), end);
    let next = append_ok(&store, &batch("t", 0, &[b"after"]));
    assert_eq!((next.position, next.base_queue_offset), (end, 1));
}

#[test]
fn a_roll_marker_ends_each_full_segment_and_recovery_follows_it_even_when_lost() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let appended: Vec<Appended> = (0..10u8)
        .map(|i| append_ok(&store, &batch("t", 0, &[&[i; 10_000]])))
        .collect();
    let rolled_after = appended
        .windows(2)
        .find(|pair| pair[1].position == 65536)
        .map(|pair| pair[0])
        .expect("the log rolled at 64 KiB");
    let marker = rolled_after.position + u64::from(rolled_after.size);
    store.crash();
    let segment = std::fs::read(segment_file(dir.path())).unwrap();
    assert_eq!(segment[marker as usize..marker as usize + 4], [0xff; 4]);
    // Scan from the start, with the marker's page lost but the next segment's on disk.
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    patch_file(&segment_file(dir.path()), marker, &[0; 4]);
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(store.queue_offsets("t", 0), (0, 10));
    assert_eq!(
        bodies_of(&store.read("t", 0, 0, usize::MAX).unwrap()).len(),
        10
    );
}

/// Appends 5 batches, flushed and recorded in the checkpoint, then 3 more not flushed, and stops
/// as a power loss would find it. Returns the positions of the 8 batches.
fn power_loss_with_an_unflushed_tail(config: &StoreConfig) -> Vec<u64> {
    let dir = &config.data_dir;
    let mut async_config = config.clone();
    async_config.flush = FlushMode::Async;
    async_config.flush_interval_ms = 60_000;
    let store = Store::open(async_config).unwrap();
    let mut positions: Vec<u64> = (0..5u8)
        .map(|i| {
            store
                .append(&batch("t", 0, &[&[i; 300]]))
                .unwrap()
                .appended
                .position
        })
        .collect();
    store.flush().unwrap();
    let flushed = store.flushed_position();
    positions.extend((5..8u8).map(|i| {
        store
            .append(&batch("t", 0, &[&[i; 300]]))
            .unwrap()
            .appended
            .position
    }));
    store.crash();
    let checkpoint = checkpoint::Checkpoint {
        flushed_position: flushed,
        index_flushed_position: flushed,
    };
    checkpoint
        .write(&dir.join(file_names::CHECKPOINT_FILE))
        .unwrap();
    positions
}

#[test]
fn a_torn_unflushed_batch_is_cut_even_when_valid_ones_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    let positions = power_loss_with_an_unflushed_tail(&config(dir.path()));
    // The first unflushed batch's page did not reach the disk whole; the next ones' did.
    patch_file(&segment_file(dir.path()), positions[5] + 100, b"\xff\xff");
    let (store, log) = with_captured_log(|| Store::open(config(dir.path())).unwrap());
    assert!(log.contains("truncated the torn tail"), "{log}");
    assert_eq!(store.end_position(), positions[5]);
    assert_eq!(store.queue_offsets("t", 0), (0, 5));
    assert_eq!(
        bodies_of(&store.read("t", 0, 0, usize::MAX).unwrap()).len(),
        5
    );
    let next = append_ok(&store, &batch("t", 0, &[b"after"]));
    assert_eq!((next.position, next.base_queue_offset), (positions[5], 5));
    drop(store);
    let segment = std::fs::read(segment_file(dir.path())).unwrap();
    let stale = positions[6] as usize;
    assert_eq!(
        segment[stale + 8..stale + 64],
        [0; 56],
        "the stale batches are gone"
    );
}

#[test]
fn torn_pages_far_past_the_end_are_zeroed_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.segment_bytes = 64 * 1024 * 1024;
    let positions = power_loss_with_an_unflushed_tail(&config);
    // Pages of unflushed writes 40 MiB on, far past the largest batch (16 MiB).
    let far = 40 * 1024 * 1024;
    patch_file(
        &segment_file(dir.path()),
        far,
        b"\x00\x00\x01\x00stale page",
    );
    let store = Store::open(config).unwrap();
    let end = store.end_position();
    assert_eq!(end, positions[7] + (positions[7] - positions[6]));
    drop(store);
    let mut stale = [0u8; 14];
    std::os::unix::fs::FileExt::read_exact_at(
        &std::fs::File::open(segment_file(dir.path())).unwrap(),
        &mut stale,
        far,
    )
    .unwrap();
    assert_eq!(
        stale, [0; 14],
        "a stale page past the end is left for a later append to meet"
    );
}

/// Major (waited for the disk) and minor page faults the calling thread has taken.
fn faults_of_this_thread() -> (i64, i64) {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, &mut usage), 0);
        (usage.ru_majflt, usage.ru_minflt)
    }
}

/// Pages of `[offset, offset + len)` of `path` that are not in the page cache (mincore on a map
/// of the test's own, which faults nothing in).
fn pages_not_in_memory(path: &Path, offset: u64, len: u64) -> usize {
    let file = std::fs::File::open(path).unwrap();
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let page = 4096;
    let start = offset / page * page;
    let end = (offset + len).min(map.len() as u64);
    let pages = (end - start).div_ceil(page) as usize;
    let mut resident = vec![0u8; pages];
    // SAFETY: the range is inside the map and `resident` has a byte per page.
    let code = unsafe {
        libc::mincore(
            map.as_ptr().add(start as usize) as *mut libc::c_void,
            (end - start) as usize,
            resident.as_mut_ptr(),
        )
    };
    assert_eq!(code, 0);
    resident.iter().filter(|byte| **byte & 1 == 0).count()
}

#[test]
fn the_pages_ahead_of_the_writer_are_in_memory_before_it_reaches_them() {
    let _alone = super::power_loss_tests::NOT_BESIDE_THE_SIMULATION.lock();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    let segment_bytes = 16 * 1024 * 1024;
    config.segment_bytes = segment_bytes;
    config.index_entries_per_file = 131_072;
    config.flush = FlushMode::Async;
    config.flush_interval_ms = 60_000;
    let store = Store::open(config).unwrap();
    let batch = batch("t", 0, &[&[7u8; 1000]]);
    let index = dir.path().join("index/t/0/00000000000000000000");
    // 50 MB in bursts of 1 MB, each started once the preparer has caught up (on two cores a
    // writer that never pauses can starve it): three segments rolled into, each made and
    // read ahead, and 1.2 MB of index entries.
    let mut missing = Vec::new();
    let mut major_faults = 0;
    let mut minor_faults = Vec::new();
    for burst in 0..50 {
        store.append(&batch).unwrap();
        wait_for(|| store.preparer_is_idle().then_some(()));
        let end = store.end_position();
        let segment = dir.path().join(format!(
            "commitlog/{:020}",
            end / segment_bytes * segment_bytes
        ));
        // The rest of the segment (the preparer keeps 64 MiB ahead; the kernel's own readahead
        // after the writer's faults covers far less) and the next 32 KiB of index entries.
        let log_ahead = pages_not_in_memory(&segment, end % segment_bytes, segment_bytes);
        let (_, next_offset) = store.queue_offsets("t", 0);
        let index_ahead = pages_not_in_memory(&index, next_offset * 24, 32 * 1024);
        if log_ahead + index_ahead > 0 {
            missing.push((burst, log_ahead, index_ahead));
        }
        let before = faults_of_this_thread();
        for _ in 0..1000 {
            store.append(&batch).unwrap();
        }
        let after = faults_of_this_thread();
        major_faults += after.0 - before.0;
        minor_faults.push(after.1 - before.1);
    }
    assert!(store.end_position() > 3 * segment_bytes);
    assert_eq!(
        missing,
        Vec::new(),
        "(burst, log pages, index pages) not in memory ahead of the writer"
    );
    assert_eq!(major_faults, 0, "the append path waited for the disk");
    // The pages are mapped writable ahead too (a writer mapping them itself takes 60-260 faults
    // in each burst of 1 MB); a stray fault or two in 50 MB is allowed, not one per burst.
    assert!(
        minor_faults.iter().sum::<i64>() <= 25,
        "the append path took page faults (minor faults per burst of 1,000 appends): {minor_faults:?}"
    );
}

/// Bytes of disk a file takes (its allocated blocks), beside its length.
fn disk_bytes(path: &Path) -> (u64, u64) {
    let metadata = std::fs::metadata(path).unwrap();
    (
        std::os::unix::fs::MetadataExt::blocks(&metadata) * 512,
        metadata.len(),
    )
}

#[test]
fn an_index_file_takes_disk_only_as_it_fills() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.index_entries_per_file = 131_072;
    config.segment_bytes = 16 * 1024 * 1024;
    let index = dir.path().join("index/t/0/00000000000000000000");
    let store = Store::open(config.clone()).unwrap();
    append_ok(&store, &batch("t", 0, &[b"first"]));
    wait_for(|| store.preparer_is_idle().then_some(()));
    let (on_disk, len) = disk_bytes(&index);
    assert_eq!(len, 131_072 * 24, "mapped whole");
    assert!(
        on_disk <= 128 * 1024,
        "{on_disk} bytes on disk for one entry"
    );
    for _ in 0..10_000 {
        store.append(&batch("t", 0, &[b"m"])).unwrap();
    }
    store.flush().unwrap();
    let (on_disk, _) = disk_bytes(&index);
    assert!(
        (240_000..=240_000 + 256 * 1024).contains(&on_disk),
        "{on_disk} bytes on disk for 10,001 entries of 24 bytes"
    );
    store.crash();
    // Reopened after a crash, the index goes on reserving from where its entries end.
    let store = Store::open(config).unwrap();
    for _ in 0..10_000 {
        store.append(&batch("t", 0, &[b"m"])).unwrap();
    }
    store.flush().unwrap();
    assert_eq!(store.queue_offsets("t", 0), (0, 20_001));
    assert_eq!(
        bodies_of(&store.read("t", 0, 19_990, usize::MAX).unwrap()).len(),
        11
    );
    let (on_disk, _) = disk_bytes(&index);
    assert!(on_disk <= 480_000 + 256 * 1024, "{on_disk} bytes on disk");
}

// ---------------------------------------------------------------- fault injection

#[test]
fn a_failed_fsync_fails_the_append_and_fences_the_log_which_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    append_ok(&store, &batch("t", 0, &[b"safe"]));
    store.faults().failing_syncs.store(1, Ordering::Release);
    let error = store
        .append(&batch("t", 0, &[b"lost"]))
        .unwrap()
        .wait_durable()
        .unwrap_err();
    assert!(matches!(error, StorageError::FlushFailed(_)), "{error}");
    assert!(error.to_string().contains("Input/output error"), "{error}");
    let refused = store
        .append(&batch("t", 0, &[b"later"]))
        .err()
        .expect("the log is fenced");
    assert!(matches!(refused, StorageError::Fenced { .. }), "{refused}");
    assert!(refused.to_string().contains("restart"), "{refused}");
    assert_eq!(
        bodies_of(&store.read("t", 0, 0, 1 << 20).unwrap())[0].1,
        b"safe"
    );
}

#[test]
fn an_fsync_slower_than_the_timeout_fails_the_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.flush_timeout_ms = 100;
    let store = Store::open(config).unwrap();
    store.faults().sync_delay_ms.store(400, Ordering::Release);
    let started = Instant::now();
    let error = store
        .append(&batch("t", 0, &[b"slow"]))
        .unwrap()
        .wait_durable()
        .unwrap_err();
    assert!(
        matches!(error, StorageError::FlushTimeout { timeout_ms: 100 }),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(390),
        "the watchdog answers before the fsync returns"
    );
    assert!(matches!(
        store.append(&batch("t", 0, &[b"x"])),
        Err(StorageError::Fenced { .. })
    ));
}

#[test]
fn a_slow_periodic_flush_fails_who_waits_behind_it_but_does_not_fence_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.flush = FlushMode::Async;
    config.flush_interval_ms = 20;
    config.flush_timeout_ms = 100;
    let store = Store::open(config).unwrap();
    store.faults().sync_delay_ms.store(1500, Ordering::Release);
    store.append(&batch("t", 0, &[b"backlog"])).unwrap();
    // The periodic flush of that append starts within 20 ms and takes 1,500. An explicit
    // flush asked meanwhile waits behind it, and gives up at its 100 ms timeout.
    wait_for(|| (store.faults().delayed_syncs_begun.load(Ordering::Acquire) > 0).then_some(()));
    let asked = Instant::now();
    let error = store.flush().unwrap_err();
    assert!(
        matches!(error, StorageError::FlushTimeout { timeout_ms: 100 }),
        "{error}"
    );
    assert!(
        asked.elapsed() < Duration::from_millis(1000),
        "answered at its timeout, not left to hang behind the slow flush: {:?}",
        asked.elapsed()
    );
    store.faults().sync_delay_ms.store(0, Ordering::Release);
    wait_for(|| (store.flushed_position() == store.end_position()).then_some(()));
    store
        .append(&batch("t", 0, &[b"after"]))
        .expect("a slow periodic flush nobody waited for does not fence the log");
}

/// The flushed position the checkpoint on disk records.
fn checkpointed(dir: &Path) -> u64 {
    super::checkpoint::Checkpoint::read(&dir.join("checkpoint"))
        .unwrap()
        .expect("a checkpoint")
        .flushed_position
}

/// Issue 13 point 6: only a failed sync of the log itself fences it. A checkpoint that cannot be
/// written (its temporary file's name taken by a directory here; ENOSPC or EIO on it alike)
/// fails that write only: sync appends go on, and the flusher writes it at a later interval,
/// once it can.
#[test]
fn a_checkpoint_that_cannot_be_written_fails_alone_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    append_ok(&store, &batch("t", 0, &[b"before"]));
    wait_for(|| (checkpointed(dir.path()) == store.end_position()).then_some(()));
    let blocker = dir.path().join("checkpoint.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let before = store.end_position();
    append_ok(&store, &batch("t", 0, &[b"while blocked"]));
    let error = store.write_checkpoint().unwrap_err();
    assert!(error.to_string().contains("checkpoint.tmp"), "{error}");
    assert_eq!(store.fenced_reason(), None);
    append_ok(&store, &batch("t", 0, &[b"still taken"]));
    assert_eq!(checkpointed(dir.path()), before);

    std::fs::remove_dir(&blocker).unwrap();
    wait_for(|| (checkpointed(dir.path()) == store.end_position()).then_some(()));
    store.crash();
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(bodies_of(&store.read("t", 0, 0, 1 << 20).unwrap()).len(), 3);
}

/// A small tmpfs mounted for one test, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// The mounted disk, or None when this test is skipped because mounting needs a privilege
    /// this process lacks (root, or CAP_SYS_ADMIN in a container), as `smq_tests::skip` reports.
    fn mount(size_mib: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("running mount (util-linux)");
        if output.status.success() {
            return Some(SmallDisk { dir });
        }
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        // Without the temporary path, so that both tests give the same reason.
        let said = String::from_utf8_lossy(&output.stderr)
            .replace(&dir.path().display().to_string(), "DIR")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let reason = format!(
            "it mounts a small tmpfs to fill a real disk, which needs root (uid {uid} here): {said}"
        );
        smq_tests::skip::cannot_run(&reason);
        None
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn enospc_while_rolling_reaches_the_appender_and_the_log_stays_readable() {
    let Some(disk) = SmallDisk::mount(8) else {
        return;
    };
    let data = disk.path().join("data");
    let mut config = config(&data);
    config.segment_bytes = 1024 * 1024;
    config.disk_usage_watermark_percent = 100;
    let store = Store::open(config).unwrap();
    // The active segment and the next one, made ahead, take 2 MiB: leave less than another.
    let ballast = disk.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; 5 * 1024 * 1024 + 512 * 1024]).unwrap();
    let body = vec![5u8; 100 * 1024];
    let mut acknowledged = 0u64;
    let error = loop {
        match store.append(&batch("t", 0, &[&body])) {
            Ok(receipt) => {
                receipt.wait_durable().unwrap();
                acknowledged += 1;
            }
            Err(error) => break error,
        }
        assert!(acknowledged < 100, "the disk never filled");
    };
    assert!(
        error.to_string().contains("No space left on device"),
        "{error}"
    );
    assert!(acknowledged >= 9);
    assert_eq!(
        bodies_of(&store.read("t", 0, 0, usize::MAX).unwrap()).len() as u64,
        acknowledged
    );
    std::fs::remove_file(&ballast).unwrap();
    store
        .append(&batch("t", 0, &[&body]))
        .expect("appends resume once space is freed")
        .wait_durable()
        .unwrap();
}

#[test]
fn appends_fail_above_the_disk_watermark_and_resume_below_it() {
    let Some(disk) = SmallDisk::mount(16) else {
        return;
    };
    let data = disk.path().join("data");
    let mut config = config(&data);
    config.disk_usage_watermark_percent = 50;
    let store = Store::open(config).unwrap();
    append_ok(&store, &batch("t", 0, &[b"before"]));
    let ballast = disk.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; 10 * 1024 * 1024]).unwrap();
    // Usage is re-read at most every 100 ms: appends until then still succeed.
    let mut accepted = 1;
    let error = wait_for(|| match store.append(&batch("t", 0, &[b"x"])) {
        Ok(_) => {
            accepted += 1;
            None
        }
        Err(error) => Some(error),
    });
    assert!(
        matches!(
            error,
            StorageError::DiskFull {
                watermark_percent: 50,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("50% watermark"), "{error}");
    assert_eq!(
        store.read("t", 0, 0, 1 << 20).unwrap().next_offset,
        accepted
    );
    std::fs::remove_file(&ballast).unwrap();
    wait_for(|| store.append(&batch("t", 0, &[b"after"])).ok())
        .wait_durable()
        .unwrap();
}

/// Polls `condition` until it returns Some, for at most five seconds.
fn wait_for<T>(mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(Instant::now() < deadline, "condition not met within 5 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------- retention

#[test]
fn segments_older_than_retention_are_deleted_and_indexes_follow() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    for _ in 0..20 {
        append_ok(&store, &batch("t", 0, &[&[3u8; 10_000]]));
    }
    let segments = std::fs::read_dir(dir.path().join("commitlog"))
        .unwrap()
        .count();
    assert!(segments >= 3);
    let now = SystemTime::now();
    assert_eq!(store.enforce_retention(now).unwrap().segments_deleted, 0);
    let old = now - Duration::from_secs(73 * 3600);
    let oldest = std::fs::File::options()
        .write(true)
        .open(segment_file(dir.path()))
        .unwrap();
    oldest.set_modified(old).unwrap();
    let report = store.enforce_retention(now).unwrap();
    assert_eq!(report.segments_deleted, 1);
    assert_eq!(report.log_start_position, 64 * 1024);
    let (earliest, next) = store.queue_offsets("t", 0);
    assert_eq!((earliest, next), (6, 20));
    assert!(matches!(
        store.read("t", 0, 0, 1000),
        Err(StorageError::OffsetOutOfRange { earliest: 6, .. })
    ));
    assert_eq!(
        bodies_of(&store.read("t", 0, 6, usize::MAX).unwrap()).len(),
        14
    );
}

#[test]
fn the_flusher_applies_retention_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.retention_bytes = 64 * 1024;
    config.retention_check_interval_ms = 20;
    let store = Store::open(config).unwrap();
    for _ in 0..20 {
        append_ok(&store, &batch("t", 0, &[&[3u8; 10_000]]));
    }
    // The log start moves before the segment's file is deleted: wait for both.
    wait_for(|| {
        (store.queue_offsets("t", 0).0 > 0 && !segment_file(dir.path()).exists()).then_some(())
    });
}

#[test]
fn the_oldest_segments_go_when_the_log_exceeds_its_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.retention_bytes = 2 * 64 * 1024;
    let store = Store::open(config).unwrap();
    for _ in 0..40 {
        append_ok(&store, &batch("t", 0, &[&[3u8; 10_000]]));
    }
    let report = store.enforce_retention(SystemTime::now()).unwrap();
    assert!(report.segments_deleted >= 4, "{report:?}");
    // Two kept, and the next one, made ahead of the writer.
    assert_eq!(
        std::fs::read_dir(dir.path().join("commitlog"))
            .unwrap()
            .count(),
        3
    );
    let read = store
        .read("t", 0, store.queue_offsets("t", 0).0, usize::MAX)
        .unwrap();
    assert_eq!(read.next_offset, 40);
    store.close().unwrap();
    let store = Store::open(StoreConfig {
        retention_bytes: 2 * 64 * 1024,
        ..self::config(dir.path())
    })
    .unwrap();
    assert_eq!(store.queue_offsets("t", 0).1, 40);
}

/// Copies `master`'s whole log into `replica` the way a slave does: chunk by chunk with
/// `read_log`, each batch appended verbatim at its position.
fn replicate_all(master: &Store, replica: &Store, max_bytes: usize) -> usize {
    let mut chunks = 0;
    loop {
        let chunk = master.read_log(replica.end_position(), max_bytes).unwrap();
        if chunk.bytes.is_empty() {
            return chunks;
        }
        chunks += 1;
        let mut at = 0;
        while at < chunk.bytes.len() {
            let len = 4 + u32::from_be_bytes(chunk.bytes[at..at + 4].try_into().unwrap()) as usize;
            replica
                .append_replicated(
                    chunk.position + at as u64,
                    &chunk.bytes[at..at + len],
                    false,
                )
                .unwrap()
                .wait_durable()
                .unwrap();
            at += len;
        }
    }
}

#[test]
fn a_replica_fed_by_read_log_holds_the_masters_segments_byte_for_byte() {
    let (master_dir, replica_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let master = Store::open(config(master_dir.path())).unwrap();
    let replica = Store::open(config(replica_dir.path())).unwrap();
    // Batches of uneven sizes over several 64 KiB segments, so that the log rolls with and
    // without room for a roll marker.
    for i in 0..400usize {
        let body = vec![b'a' + (i % 26) as u8; 100 + (i * 37) % 1500];
        append_ok(&master, &batch("t", (i % 3) as u32, &[&body]));
    }
    let chunks = replicate_all(&master, &replica, 8 * 1024);
    assert!(chunks > 10, "read in chunks: {chunks}");
    assert_eq!(replica.end_position(), master.end_position());
    for queue in 0..3 {
        let from_master = master.read("t", queue, 0, 1 << 24).unwrap();
        let from_replica = replica.read("t", queue, 0, 1 << 24).unwrap();
        assert!(
            bodies_of(&from_master) == bodies_of(&from_replica),
            "queue {queue} differs"
        );
        assert_eq!(from_master.next_offset, from_replica.next_offset);
    }
    master.close().unwrap();
    replica.close().unwrap();
    let files = |dir: &Path| -> Vec<(std::ffi::OsString, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(dir.join("commitlog"))
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.file_name(), std::fs::read(e.path()).unwrap()))
            .collect();
        files.sort();
        files
    };
    let master_files = files(master_dir.path());
    assert!(master_files.len() > 3);
    assert!(master_files == files(replica_dir.path()), "segments differ");
}

/// A master whose topic "t" was deleted and created again: five old batches of "t" and one
/// of "other", then the new "t" from the returned start position with two batches.
fn master_with_a_topic_created_again(dir: &Path) -> (Store, u64) {
    let master = Store::open(config(dir)).unwrap();
    for i in 0..5u8 {
        append_ok(&master, &batch("t", 0, &[&[b'o', i]]));
    }
    append_ok(&master, &batch("other", 0, &[b"kept"]));
    master.delete_topic("t").unwrap();
    let start = master.flush_to_end().unwrap();
    master.set_topic_start("t", start).unwrap();
    append_ok(&master, &batch("t", 0, &[b"new0"]));
    append_ok(&master, &batch("t", 0, &[b"new1"]));
    (master, start)
}

fn new_messages() -> Vec<(u64, Vec<u8>)> {
    vec![(0, b"new0".to_vec()), (1, b"new1".to_vec())]
}

/// Issue 13 point 9, a lagging replica: it copies the old topic's batches after it learned of
/// the new topic, byte for byte, but indexes none of them into the new one; neither does
/// recovery re-scanning them.
#[test]
fn a_replica_and_its_recovery_never_index_batches_of_an_earlier_topic_of_the_name() {
    let (master_dir, replica_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (master, start) = master_with_a_topic_created_again(master_dir.path());
    assert_eq!(
        bodies_of(&master.read("t", 0, 0, usize::MAX).unwrap()),
        new_messages()
    );
    let replica = Store::open(config(replica_dir.path())).unwrap();
    replica.set_topic_start("t", start).unwrap();
    replicate_all(&master, &replica, 1 << 20);
    assert_eq!(replica.end_position(), master.end_position());
    assert_eq!(
        bodies_of(&replica.read("t", 0, 0, usize::MAX).unwrap()),
        new_messages()
    );
    assert_eq!(replica.queue_offsets("other", 0), (0, 1));
    // Recovery with no checkpoint scans the whole log again.
    replica.crash();
    std::fs::remove_file(replica_dir.path().join(file_names::CHECKPOINT_FILE)).unwrap();
    let starts = HashMap::from([("t".to_owned(), start)]);
    let replica = Store::open_with_topic_starts(config(replica_dir.path()), starts).unwrap();
    assert!(!replica.recovery_report().clean);
    assert_eq!(
        bodies_of(&replica.read("t", 0, 0, usize::MAX).unwrap()),
        new_messages()
    );
    assert_eq!(replica.queue_offsets("other", 0), (0, 1));
    master.close().unwrap();
}

/// A replica that indexed the old topic's batches and stopped before it deleted their indexes
/// (a crash between topics.json and the indexes): the topic's start, known at open, drops them.
#[test]
fn indexes_of_an_earlier_topic_of_the_name_are_deleted_at_open() {
    let (master_dir, replica_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let master = Store::open(config(master_dir.path())).unwrap();
    for i in 0..5u8 {
        append_ok(&master, &batch("t", 0, &[&[b'o', i]]));
    }
    let replica = Store::open(config(replica_dir.path())).unwrap();
    replicate_all(&master, &replica, 1 << 20);
    assert_eq!(replica.queue_offsets("t", 0), (0, 5));
    replica.close().unwrap();
    master.delete_topic("t").unwrap();
    let start = master.flush_to_end().unwrap();
    master.set_topic_start("t", start).unwrap();
    append_ok(&master, &batch("t", 0, &[b"new0"]));
    append_ok(&master, &batch("t", 0, &[b"new1"]));

    let starts = HashMap::from([("t".to_owned(), start)]);
    let replica = Store::open_with_topic_starts(config(replica_dir.path()), starts).unwrap();
    assert_eq!(replica.queue_offsets("t", 0), (0, 0));
    replicate_all(&master, &replica, 1 << 20);
    assert_eq!(
        bodies_of(&replica.read("t", 0, 0, usize::MAX).unwrap()),
        new_messages()
    );
    master.close().unwrap();
}

#[test]
fn a_replica_restarted_at_its_masters_log_start_copies_from_there_and_reopens_there() {
    let (master_dir, replica_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut master_config = config(master_dir.path());
    master_config.retention_bytes = 2 * 64 * 1024;
    let master = Store::open(master_config).unwrap();
    let replica = Store::open(config(replica_dir.path())).unwrap();
    for i in 0..400usize {
        let body = vec![b'a' + (i % 26) as u8; 100 + (i * 37) % 1500];
        append_ok(&master, &batch("t", (i % 3) as u32, &[&body]));
    }
    master.enforce_retention(SystemTime::now()).unwrap();
    let start = master.log_start_position();
    assert!(start > 0, "retention deleted the first segments");
    replica.restart_empty_log_at(start).unwrap();
    replicate_all(&master, &replica, 8 * 1024);
    assert_eq!(replica.end_position(), master.end_position());
    let queues = |store: &Store| {
        (0..3)
            .map(|q| store.queue_offsets("t", q))
            .collect::<Vec<_>>()
    };
    let master_queues = queues(&master);
    assert!(master_queues.iter().all(|(earliest, _)| *earliest > 0));
    assert_eq!(queues(&replica), master_queues);
    assert!(
        replica
            .restart_empty_log_at(replica.end_position() + 1)
            .is_err(),
        "only an empty log restarts"
    );
    replica.close().unwrap();
    let replica = Store::open(config(replica_dir.path())).unwrap();
    assert_eq!(replica.log_start_position(), start);
    assert_eq!(replica.end_position(), master.end_position());
    assert_eq!(queues(&replica), master_queues);
    for queue in 0..3 {
        let earliest = master_queues[queue as usize].0;
        assert!(
            bodies_of(&master.read("t", queue, earliest, 1 << 24).unwrap())
                == bodies_of(&replica.read("t", queue, earliest, 1 << 24).unwrap()),
            "queue {queue} differs"
        );
    }
}

#[test]
fn a_replicated_batch_that_would_land_elsewhere_is_refused_and_nothing_is_written() {
    let (master_dir, replica_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let master = Store::open(config(master_dir.path())).unwrap();
    let replica = Store::open(config(replica_dir.path())).unwrap();
    append_ok(&master, &batch("t", 0, &[b"one"]));
    append_ok(&master, &batch("t", 0, &[b"two"]));
    let chunk = master.read_log(0, 1 << 20).unwrap();
    let first_len = 4 + u32::from_be_bytes(chunk.bytes[..4].try_into().unwrap()) as usize;
    let second = &chunk.bytes[first_len..];
    // The second batch, offered first: at its own position (the replica's log is empty) ...
    let error = replica
        .append_replicated(first_len as u64, second, false)
        .err()
        .unwrap();
    assert!(
        matches!(error, StorageError::ReplicaDiverged { .. }),
        "{error}"
    );
    // ... or at the replica's end, where its queue offset (1) does not follow (0).
    let error = replica.append_replicated(0, second, false).err().unwrap();
    assert!(
        matches!(error, StorageError::ReplicaDiverged { .. }),
        "{error}"
    );
    assert_eq!(replica.end_position(), 0);
    // A damaged batch fails its CRC.
    let mut damaged = chunk.bytes[..first_len].to_vec();
    *damaged.last_mut().unwrap() ^= 1;
    assert!(matches!(
        replica.append_replicated(0, &damaged, false),
        Err(StorageError::InvalidBatch(_))
    ));
    // Positions outside the master's log are refused by read_log.
    assert!(matches!(
        master.read_log(master.end_position() + 1, 1024),
        Err(StorageError::PositionOutOfRange { .. })
    ));
}

#[test]
fn under_required_replication_readers_see_only_what_a_slave_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.flush = FlushMode::Async;
    let store = Store::open(config).unwrap();
    append_ok(&store, &batch("t", 0, &[b"before"]));
    store.require_replication(store.end_position());
    let appended = append_ok(&store, &batch("t", 0, &[b"after"]));
    assert_eq!(
        store.queue_offsets("t", 0),
        (0, 1),
        "only what was there before"
    );
    store.replicated(appended.position + u64::from(appended.size) - 1);
    assert_eq!(
        store.queue_offsets("t", 0),
        (0, 1),
        "a part of a batch is not the batch"
    );
    store.replicated(u64::MAX);
    assert_eq!(
        store.queue_offsets("t", 0),
        (0, 2),
        "acknowledged, clamped to the end"
    );
    assert_eq!(bodies_of(&store.read("t", 0, 0, 1 << 20).unwrap()).len(), 2);
}

/// Found by the store_recovery fuzz target: a checkpoint past the end of the segments (a file
/// cut short or deleted) hit an assertion at open. It is corruption of acknowledged data: a
/// clear error naming the file, never a panic.
#[test]
fn a_segment_cut_short_below_the_checkpoint_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    for _ in 0..4 {
        append_ok(&store, &batch("t", 0, &[&[7u8; 2048]]));
    }
    store.close().unwrap();
    let log_dir = dir.path().join("commitlog");
    let mut segments: Vec<_> = std::fs::read_dir(&log_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    segments.sort();
    for later in &segments[1..] {
        std::fs::remove_file(later).unwrap();
    }
    let first = std::fs::OpenOptions::new()
        .write(true)
        .open(&segments[0])
        .unwrap();
    first.set_len(4096).unwrap();
    for clean in [true, false] {
        if !clean {
            std::fs::write(dir.path().join("abort"), b"").unwrap();
        }
        let error = Store::open(config(dir.path())).err().expect("refused");
        let message = error.to_string();
        assert!(matches!(error, StorageError::Corrupt { .. }), "{message}");
        assert!(message.contains("cut short or deleted"), "{message}");
    }
}

/// An idle broker wrote the same checkpoint (a temporary file, two fsyncs and a rename) every
/// flush interval, forever; it writes one only when a position moved.
#[test]
fn an_idle_store_does_not_rewrite_its_checkpoint() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let path = dir.path().join("checkpoint");
    let inode = || std::fs::metadata(&path).unwrap().ino();
    let before = inode();
    append_ok(&store, &batch("t", 0, &[b"news"]));
    let after_news = wait_for(|| (inode() != before).then(inode));
    // Ten flush intervals with nothing new: every one of them used to write it again.
    std::thread::sleep(Duration::from_millis(10 * 20));
    assert_eq!(inode(), after_news, "rewritten with nothing new");
    append_ok(&store, &batch("t", 0, &[b"more"]));
    wait_for(|| (inode() != after_news).then_some(()));
}

/// A replica's truncation: everything from a batch boundary on is gone (across segments, with
/// its index entries and the epochs that began there), the next append lands there, and a
/// reopened store agrees; a position inside a batch is refused, changing nothing.
#[test]
fn truncation_drops_the_tail_from_a_batch_boundary_across_segments_and_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    store.begin_epoch(1, false).unwrap();
    let body = vec![b'x'; 3000];
    let mut positions = Vec::new();
    for _ in 0..20 {
        positions.push(append_ok(&store, &batch("t", 0, &[&body])).position);
    }
    store.begin_epoch(2, true).unwrap();
    for _ in 0..40 {
        positions
            .push(append_ok(&store, &batch("t", (positions.len() % 2) as u32, &[&body])).position);
    }
    let end = store.end_position();
    assert!(end > 2 * 64 * 1024, "spans three segments");
    let error = store.truncate_to(positions[10] + 1).unwrap_err();
    assert!(
        matches!(error, StorageError::NotABatchBoundary { .. }),
        "{error}"
    );
    assert_eq!(store.end_position(), end);

    let to = positions[15];
    let dropped = store.truncate_to(to).unwrap();
    assert_eq!((dropped.from_position, dropped.to_position), (to, end));
    assert_eq!((dropped.batches, dropped.messages), (45, 45));
    assert_eq!(dropped.epochs, vec![1, 2]);
    assert_eq!(store.end_position(), to);
    assert_eq!(store.queue_offsets("t", 0), (0, 15));
    assert_eq!(store.queue_offsets("t", 1), (0, 0));
    let history = store.epoch_history();
    assert_eq!(
        history.entries.len(),
        1,
        "epoch 2 began past the cut: {history:?}"
    );
    assert_eq!(history.last_epoch(), 1);

    let again = append_ok(&store, &batch("t", 0, &[b"after"]));
    assert_eq!((again.position, again.base_queue_offset), (to, 15));
    store.close().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(store.end_position(), to + u64::from(again.size));
    assert_eq!(store.queue_offsets("t", 0), (0, 16));
    let read = store.read("t", 0, 15, 1 << 20).unwrap();
    assert_eq!(bodies_of(&read), vec![(15, b"after".to_vec())]);
    assert_eq!(store.epoch_history().last_epoch(), 1);
}

/// Memory maps of this process of files under `dir` (a line of /proc/self/maps each).
fn maps_under(dir: &Path) -> usize {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|line| line.contains(&dir))
        .count()
}

/// Issue 14 point 4: index files cost a memory map each, and a process has `vm.max_map_count`
/// of them; beyond `max_mapped_index_files` the least recently used synced indexes are
/// unmapped at each flush, and mapped again, every entry readable, when their queue is used.
#[test]
fn idle_queues_index_files_are_unmapped_beyond_the_bound_and_mapped_again_when_used() {
    let dir = tempfile::tempdir().unwrap();
    let index_dir = dir.path().join("index");
    let bound = 16;
    let mut config = config(dir.path());
    config.max_mapped_index_files = bound;
    let queues = 64;
    let wait_for_bound = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while maps_under(&index_dir) > bound {
            assert!(
                Instant::now() < deadline,
                "{what}: {} index maps, bound {bound}",
                maps_under(&index_dir)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    {
        let store = Store::open(config.clone()).unwrap();
        for queue in 0..queues {
            append_ok(&store, &batch("t", queue, &[b"a"]));
        }
        wait_for_bound("after the first appends");
        // Every queue used again: each is mapped again, appended to and read whole.
        for queue in 0..queues {
            append_ok(&store, &batch("t", queue, &[b"b"]));
            let read = store.read("t", queue, 0, 1 << 20).unwrap();
            assert_eq!(
                bodies_of(&read),
                [(0, b"a".to_vec()), (1, b"b".to_vec())],
                "queue {queue}"
            );
        }
        wait_for_bound("after every queue was used again");
        assert_eq!(store.queue_offsets("t", 0), (0, 2));
        store.close().unwrap();
    }
    // Opening maps no index file for longer than it takes to count its entries.
    let store = Store::open(config).unwrap();
    assert_eq!(
        maps_under(&index_dir),
        0,
        "index files mapped after opening"
    );
    for queue in 0..queues {
        assert_eq!(store.queue_offsets("t", queue), (0, 2), "queue {queue}");
    }
    wait_for_bound("after asking every queue's offsets");
}

/// Every index file under `dir`, with its inode: a file made again would have another.
fn index_files_under(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let metadata = entry.metadata().unwrap();
            if metadata.is_dir() {
                dirs.push(entry.path());
            } else {
                files.push((entry.path(), metadata.ino()));
            }
        }
    }
    files.sort();
    files
}

/// Issue 14 point 2: a new topic's queue indexes are made together when it is created, so that
/// its first batches find them ready (no file made, no fsync, on the appending thread), and
/// they hold those batches from offset 0, across a reopen.
#[test]
fn a_new_topics_queues_are_ready_before_its_first_batches() {
    let dir = tempfile::tempdir().unwrap();
    let index_dir = dir.path().join("index");
    let store = Store::open(config(dir.path())).unwrap();
    let queues = 8;
    store.prepare_queues("t", queues).unwrap();
    let prepared = index_files_under(&index_dir);
    assert_eq!(prepared.len(), queues as usize, "{prepared:?}");
    for queue in 0..queues {
        append_ok(&store, &batch("t", queue, &[b"first"]));
    }
    assert_eq!(
        index_files_under(&index_dir),
        prepared,
        "the first batches made no index file"
    );
    // Asked again (a topic whose queues exist): nothing is made.
    store.prepare_queues("t", queues).unwrap();
    assert_eq!(index_files_under(&index_dir), prepared);
    store.close().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    for queue in 0..queues {
        let read = store.read("t", queue, 0, 1 << 20).unwrap();
        assert_eq!(bodies_of(&read), [(0, b"first".to_vec())], "queue {queue}");
    }
}
