//! The broker's own metadata, kept in small files of its data directory that are replaced
//! atomically: topic configuration and consumer-group offsets.

pub mod offsets;
pub mod reconciliation;
pub mod topics;

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::storage::StorageError;

/// Why a metadata file could not be read.
enum ReadError {
    /// The file is there but does not parse; the reason says where.
    Invalid(String),
    Storage(StorageError),
}

/// Reads a metadata JSON file; a missing file is `T::default()` (nothing stored yet).
fn read_json<T: DeserializeOwned + Default>(path: &Path) -> Result<T, ReadError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|error| ReadError::Invalid(error.to_string()))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(error) => Err(ReadError::Storage(StorageError::Io {
            action: "reading",
            path: path.to_owned(),
            source: error,
        })),
    }
}
