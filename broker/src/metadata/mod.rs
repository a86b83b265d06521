//! The broker's own metadata, kept in small files of its data directory that are replaced
//! atomically: topic configuration now, consumer offsets with the consumer-groups work.

pub mod topics;
