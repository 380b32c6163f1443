//! Runs the engine conformance suite against the RocksDB implementations.

use std::path::Path;

use shoal_engine::conformance::Harness;
use shoal_engine::rocks::{RocksKvEngine, RocksLogEngine};

struct Rocks;

impl Harness for Rocks {
    type Log = RocksLogEngine;
    type Kv = RocksKvEngine;

    fn open_log(dir: &Path) -> RocksLogEngine {
        RocksLogEngine::open(dir).expect("open the log engine")
    }

    fn open_kv(dir: &Path) -> RocksKvEngine {
        RocksKvEngine::open(dir).expect("open the kv engine")
    }
}

shoal_engine::engine_conformance!(Rocks);
