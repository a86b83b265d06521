//! The broker's metadata files as it reads them at start (topics.json, consumer_offsets.json)
//! and as a slave takes them from its master: whatever is accepted names only valid topics with
//! a valid queue count, because topic names become directory names.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use smq_broker::metadata::offsets::{OffsetLimits, Offsets};
use smq_broker::metadata::topics::{Topics, MAX_QUEUES_PER_TOPIC};
use smq_protocol::limits::is_valid_topic_name;

/// One directory for the whole run, on tmpfs when there is one: every input rewrites its files.
fn data_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let parent = if shm.is_dir() { shm } else { Path::new(".") };
        tempfile::tempdir_in(parent).expect("a temporary directory")
    })
    .path()
}

fn check_topics(topics: &Topics) {
    for topic in topics.list() {
        assert!(
            is_valid_topic_name(&topic.name),
            "accepted topic {:?}",
            topic.name
        );
        assert!(
            (1..=MAX_QUEUES_PER_TOPIC).contains(&topic.queues),
            "accepted {} queues",
            topic.queues
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, json)) = data.split_first() else {
        return;
    };
    let dir = data_dir();
    let _ = std::fs::remove_file(dir.join("topics.json"));
    let _ = std::fs::remove_file(dir.join("consumer_offsets.json"));
    match which % 4 {
        0 => {
            std::fs::write(dir.join("topics.json"), json).unwrap();
            if let Ok(topics) = Topics::open(dir) {
                check_topics(&topics);
            }
        }
        1 => {
            let mut topics = Topics::open(dir).unwrap();
            if topics.replace_from_json(json).is_ok() {
                check_topics(&topics);
                check_topics(&Topics::open(dir).expect("what was accepted loads again"));
            } else {
                assert_eq!(
                    topics.list().count(),
                    0,
                    "a refused replacement changed the topics"
                );
            }
        }
        2 => {
            std::fs::write(dir.join("consumer_offsets.json"), json).unwrap();
            let _ = Offsets::open(dir, OffsetLimits::default());
        }
        _ => {
            let offsets = Offsets::open(dir, OffsetLimits::default()).unwrap();
            if offsets.replace_from_json(json).is_ok() {
                let stored = offsets.all();
                let reopened = Offsets::open(dir, OffsetLimits::default())
                    .expect("what was accepted loads again");
                assert_eq!(reopened.all(), stored);
            }
        }
    }
});
