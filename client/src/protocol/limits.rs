//! Every size limit of the protocol, in one place; each is enforced where bytes enter.

/// Largest message (key, tag, headers and body with their length fields) a broker accepts by
/// default: RocketMQ's 4 MiB.
pub const MAX_MESSAGE_BYTES_DEFAULT: usize = 4 * 1024 * 1024;

/// Longest topic name in bytes of UTF-8.
pub const MAX_TOPIC_NAME_BYTES: usize = 249;
