//! The RocksDB implementations of [`LogEngine`](crate::LogEngine) and
//! [`KvEngine`](crate::KvEngine), and the data directory that holds both.
//!
//! Layout of a data directory: `raft/` (the log engine) and `kv/` (the kv engine);
//! raftstore keeps Raft snapshot files in `snap/` beside them. RocksDB's own `LOCK`
//! file in each engine keeps a second process out.

mod kv;
mod log;
mod options;
mod sst_bounds;
mod stats;

use std::path::Path;

pub use kv::{RocksKvEngine, RocksSnapshot};
pub use log::RocksLogEngine;
pub use stats::{CfStats, EngineStats};

use crate::{Error, Result};

/// Both engines of one store.
#[derive(Clone)]
pub struct Engines {
    /// The shared Raft log (`raft/`).
    pub log: std::sync::Arc<RocksLogEngine>,
    /// The state machine (`kv/`).
    pub kv: RocksKvEngine,
}

impl Engines {
    /// Opens (creating when missing) both engines under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            Error::Storage(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let log = RocksLogEngine::open(&data_dir.join("raft"))?;
        let kv = RocksKvEngine::open(&data_dir.join("kv"))?;
        Ok(Engines {
            log: std::sync::Arc::new(log),
            kv,
        })
    }
}

/// Turns a RocksDB error into ours, recognising a held lock.
pub(crate) fn open_error(path: &Path, e: rocksdb::Error) -> Error {
    let detail = e.into_string();
    if detail.contains("lock") || detail.contains("LOCK") {
        Error::Locked {
            path: path.to_path_buf(),
            detail,
        }
    } else {
        Error::Storage(format!("cannot open {}: {detail}", path.display()))
    }
}

/// Turns a RocksDB error into ours.
/// The error a failpoint injects: `return(nospace)` a full disk, plain `return` a
/// failed write or fsync.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
pub(crate) fn injected(point: &str, arg: Option<String>) -> Error {
    match arg.as_deref() {
        Some("nospace") => Error::NoSpace(format!("failpoint {point}: injected full disk")),
        _ => Error::Storage(format!("failpoint {point}: injected failure")),
    }
}

pub(crate) fn storage(e: rocksdb::Error) -> Error {
    let s = e.into_string();
    if s.starts_with("Corruption") {
        Error::Corruption(s)
    } else if s.contains("No space left on device") || s.contains("NoSpace") {
        Error::NoSpace(s)
    } else {
        Error::Storage(s)
    }
}
