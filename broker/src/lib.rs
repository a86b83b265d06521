//! smq's broker. Today: the storage engine ([`storage`]) and the broker's metadata files
//! ([`metadata`]); the TCP server, replication and registration come with issues 3–5.

pub mod metadata;
pub mod storage;
