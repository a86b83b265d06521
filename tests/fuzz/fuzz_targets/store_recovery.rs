//! A data directory damaged in any way (bytes changed, ranges zeroed, files cut short or gone,
//! a crash marker left behind) is opened by the real `Store`: it refuses with an error or opens,
//! and then serves each queue's batches in order without panicking: a broker that panics at
//! start or on a read of a damaged file is down until someone edits files by hand. A batch
//! damaged below the checkpoint is served as it is (recovery re-checks only the tail past the
//! checkpoint, like Kafka); its CRC no longer matches and the consumer's check refuses it. What
//! the store serves that is valid belongs to the queue that was asked for.
#![no_main]

use std::path::{Path, PathBuf};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use smq_broker::storage::{FlushMode, Store, StoreConfig, SEGMENT_BYTES_MIN};
use smq_protocol::record_batch::{self, BatchView, Message};

const TOPICS: [&str; 3] = ["orders", "audit", "t"];

#[derive(Debug, Arbitrary)]
struct Input {
    batches: Vec<Batch>,
    damage: Vec<Damage>,
    /// Leave the crash marker, as a killed broker does, so that recovery scans the tail.
    unclean: bool,
}

#[derive(Debug, Arbitrary)]
struct Batch {
    topic: u8,
    queue: u8,
    messages: u8,
    body_bytes: u16,
}

#[derive(Debug, Arbitrary)]
enum Damage {
    SetByte { file: u8, at: u32, value: u8 },
    Zero { file: u8, at: u32, len: u16 },
    Truncate { file: u8, at: u32 },
    Remove { file: u8 },
}

fn config(dir: &Path) -> StoreConfig {
    let mut config = StoreConfig::new(dir);
    config.segment_bytes = SEGMENT_BYTES_MIN;
    config.index_entries_per_file = 16;
    config.flush = FlushMode::Async;
    config.disk_usage_watermark_percent = 100;
    config
}

/// Every regular file under `dir`, in a stable order, so that a file number names one file.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn damage(dir: &Path, damage: &[Damage]) {
    for change in damage {
        let files = files(dir);
        if files.is_empty() {
            return;
        }
        let pick = |file: &u8| &files[usize::from(*file) % files.len()];
        match change {
            Damage::SetByte { file, at, value } => {
                let mut bytes = std::fs::read(pick(file)).unwrap();
                if !bytes.is_empty() {
                    let at = *at as usize % bytes.len();
                    bytes[at] = *value;
                    std::fs::write(pick(file), bytes).unwrap();
                }
            }
            Damage::Zero { file, at, len } => {
                let mut bytes = std::fs::read(pick(file)).unwrap();
                if !bytes.is_empty() {
                    let at = *at as usize % bytes.len();
                    let end = (at + usize::from(*len)).min(bytes.len());
                    bytes[at..end].fill(0);
                    std::fs::write(pick(file), bytes).unwrap();
                }
            }
            Damage::Truncate { file, at } => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(pick(file))
                    .unwrap();
                let len = file.metadata().unwrap().len();
                file.set_len(u64::from(*at) % (len + 1)).unwrap();
            }
            Damage::Remove { file } => std::fs::remove_file(pick(file)).unwrap(),
        }
    }
}

fuzz_target!(|input: Input| {
    let shm = Path::new("/dev/shm");
    let parent = if shm.is_dir() { shm } else { Path::new(".") };
    let dir = tempfile::tempdir_in(parent).unwrap();
    let store = Store::open(config(dir.path())).expect("an empty directory opens");
    for batch in input.batches.iter().take(64) {
        let body = vec![b'x'; usize::from(batch.body_bytes) % 2048];
        let messages = vec![Message::from_body(body); usize::from(batch.messages % 8) + 1];
        let topic = TOPICS[usize::from(batch.topic) % TOPICS.len()];
        let encoded = record_batch::encode(topic, u32::from(batch.queue % 4), &messages);
        store
            .append(&encoded)
            .expect("an append to a healthy store");
    }
    store.close().expect("a clean close");
    if input.unclean {
        std::fs::write(dir.path().join("abort"), b"").unwrap();
    }
    damage(dir.path(), &input.damage);

    let Ok(store) = Store::open(config(dir.path())) else {
        return;
    };
    for (topic, queue) in store.queues() {
        let (earliest, next) = store.queue_offsets(&topic, queue);
        let mut offset = earliest;
        while offset < next {
            let Ok(read) = store.read(&topic, queue, offset, 64 * 1024) else {
                break;
            };
            if read.batches.is_empty() {
                break;
            }
            let before = offset;
            for bytes in &read.batches {
                if let Ok(view) = BatchView::parse(bytes) {
                    assert_eq!((view.topic(), view.queue_id()), (topic.as_str(), queue));
                    offset = offset.max(view.next_queue_offset());
                }
            }
            if offset == before {
                break; // a damaged batch: a consumer stops here with a CRC error
            }
        }
    }
    let _ = store.close();
});
