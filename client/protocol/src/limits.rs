//! Every size limit of the protocol, in one place; each is enforced where bytes enter.

/// Largest message (key, tag, headers and body with their length fields) a broker accepts by
/// default: RocketMQ's 4 MiB.
pub const MAX_MESSAGE_BYTES_DEFAULT: usize = 4 * 1024 * 1024;

/// Longest topic name in bytes of UTF-8.
pub const MAX_TOPIC_NAME_BYTES: usize = 249;

/// Longest consumer group name in bytes of UTF-8, the same as a topic name's.
pub const MAX_GROUP_NAME_BYTES: usize = 249;

/// Largest record batch a producer may send and a broker accepts by default. A batch holds at
/// least one message, so this must stay at or above [`MAX_MESSAGE_BYTES_DEFAULT`].
pub const MAX_BATCH_BYTES_DEFAULT: usize = 16 * 1024 * 1024;

/// Room in a frame for everything that is not batch bytes: the frame header, topic and group
/// names (each at most 64 KiB as u16-length strings), offsets and counts.
pub const FRAME_HEADROOM_BYTES: usize = 1024 * 1024;

/// Largest value of a frame's length field (the bytes after it) that a peer accepts by default:
/// one largest batch, in a Produce request or a Fetch response, plus headroom. Checked as soon as
/// the 4 length bytes arrive, before any buffer is grown for the frame.
pub const MAX_FRAME_BYTES_DEFAULT: usize = MAX_BATCH_BYTES_DEFAULT + FRAME_HEADROOM_BYTES;

/// Most batch bytes a broker puts in one Fetch response, whatever `max_bytes` the consumer asks
/// for: one largest batch, so that every Fetch response fits in a default-sized frame.
pub const MAX_FETCH_BYTES_DEFAULT: usize = MAX_BATCH_BYTES_DEFAULT;

/// Most queues a topic may have on one broker group.
pub const MAX_QUEUES_PER_TOPIC: u32 = 1024;

/// Most topics one broker may report in a heartbeat.
pub const MAX_TOPICS_PER_BROKER: usize = 65_536;

/// Most broker groups a topic's route may list, and slaves one group may have: what a client
/// accepts from a NameServer before it allocates a route (at most 1,024 × 1,024 queues).
pub const MAX_GROUPS_PER_ROUTE: usize = 1024;
pub const MAX_SLAVES_PER_GROUP: usize = 64;

/// Longest `host:port` address, in bytes: a 253-byte DNS name, brackets, a colon and a port.
pub const MAX_ADDR_BYTES: usize = 261;

const _: () = assert!(MAX_MESSAGE_BYTES_DEFAULT <= MAX_BATCH_BYTES_DEFAULT);
const _: () = assert!(MAX_FRAME_BYTES_DEFAULT <= u32::MAX as usize);

/// The topic-name rule shared by broker, NameServer and clients: 1 to 249 ASCII letters, digits,
/// `.`, `_` or `-`, and neither `.` nor `..` (topic names become directory names on brokers).
pub fn is_valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOPIC_NAME_BYTES
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
