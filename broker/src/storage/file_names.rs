//! The one place where names of files in a data directory are made and parsed.

use std::path::{Path, PathBuf};

use super::error::{Result, StorageError};

pub const COMMIT_LOG_DIR: &str = "commitlog";
pub const INDEX_DIR: &str = "index";
pub const CHECKPOINT_FILE: &str = "checkpoint";
pub const EPOCHS_FILE: &str = "epochs";
pub const ABORT_FILE: &str = "abort";
pub const LOCK_FILE: &str = "LOCK";
/// Suffix of files being created; one left behind by a crash is deleted on open.
pub const TEMP_SUFFIX: &str = ".tmp";

/// A 20-digit zero-padded number, so that names sort like the numbers they carry.
pub fn offset_name(offset: u64) -> String {
    format!("{offset:020}")
}

/// The number a 20-digit file name carries, or None for any other name.
pub fn parse_offset_name(name: &str) -> Option<u64> {
    if name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()) {
        name.parse().ok()
    } else {
        None
    }
}

pub fn segment_path(data_dir: &Path, base_position: u64) -> PathBuf {
    data_dir
        .join(COMMIT_LOG_DIR)
        .join(offset_name(base_position))
}

pub fn queue_index_dir(data_dir: &Path, topic: &str, queue: u32) -> PathBuf {
    data_dir.join(INDEX_DIR).join(topic).join(queue.to_string())
}

pub fn index_file_path(queue_dir: &Path, first_queue_offset: u64) -> PathBuf {
    queue_dir.join(offset_name(first_queue_offset))
}

pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TEMP_SUFFIX);
    PathBuf::from(name)
}

/// Topic names become directory names, so they are limited to Kafka's safe alphabet (the rule
/// lives in the protocol's limits, shared with clients and the NameServer).
pub fn check_topic_name(name: &str) -> Result<()> {
    if smq_protocol::limits::is_valid_topic_name(name) {
        Ok(())
    } else {
        Err(StorageError::InvalidTopicName {
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_names_round_trip_and_sort() {
        assert_eq!(offset_name(1073741824), "00000000001073741824");
        assert_eq!(parse_offset_name("00000000001073741824"), Some(1073741824));
        assert_eq!(parse_offset_name("00000000001073741824.tmp"), None);
        assert!(offset_name(9) < offset_name(10));
    }

    #[test]
    fn topic_names_cannot_escape_the_data_directory() {
        for bad in ["", ".", "..", "a/b", "../x", "a b", "é"] {
            assert!(check_topic_name(bad).is_err(), "{bad:?}");
        }
        check_topic_name("orders.v2_EU-1").unwrap();
    }
}
