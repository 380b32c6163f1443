//! Engine errors. Every failure is returned, never panicked on.

use std::path::PathBuf;

/// What went wrong in a storage engine call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The requested log index lies below the region's first index: it was
    /// truncated by log GC. Raft must send a snapshot instead.
    #[error("region {region_id}: log index {index} is compacted (first index is {first_index})")]
    Compacted {
        region_id: u64,
        index: u64,
        first_index: u64,
    },
    /// The requested log index lies beyond the region's last index.
    #[error("region {region_id}: log index {index} is unavailable (last index is {last_index})")]
    Unavailable {
        region_id: u64,
        index: u64,
        last_index: u64,
    },
    /// The region has no log (or no state) in this engine.
    #[error("region {region_id} not found in the log engine")]
    RegionNotFound { region_id: u64 },
    /// A stored record cannot be decoded, or the log has a hole.
    #[error("corruption: {0}")]
    Corruption(String),
    /// The caller broke a documented precondition (unsorted SST keys, say).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The data directory is held by another process.
    #[error("data directory {} is in use by another process ({detail})", path.display())]
    Locked { path: PathBuf, detail: String },
    /// An error from the underlying store (I/O, RocksDB).
    #[error("storage error: {0}")]
    Storage(String),
    /// The disk is full: the write did not happen, and may succeed once space
    /// returns.
    #[error("no space left on the device: {0}")]
    NoSpace(String),
}

impl Error {
    /// Whether the error means the disk or data is unusable, as opposed to a
    /// request for something that is simply not there.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::Corruption(_) | Error::Storage(_) | Error::Locked { .. }
        )
    }
}

/// The engine's result type.
pub type Result<T> = std::result::Result<T, Error>;
