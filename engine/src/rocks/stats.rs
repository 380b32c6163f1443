//! What RocksDB reports about an engine, for the node's metrics: memtable and SST
//! sizes, pending compaction bytes and write stalls per column family, and whether
//! writes are stopped or delayed. Read from RocksDB's properties (in memory, no
//! disk IO); each call reads them afresh.

use rocksdb::{ColumnFamily, DB};

/// One column family.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CfStats {
    /// The column family's name.
    pub cf: &'static str,
    /// Bytes in its memtables (active, immutable and pinned).
    pub memtable_bytes: u64,
    /// Bytes of its SST files.
    pub sst_bytes: u64,
    /// Bytes compaction estimates it has to rewrite to reach its target shape.
    pub pending_compaction_bytes: u64,
    /// Write stalls (slowdowns and stops) since the engine opened.
    pub write_stalls: u64,
}

/// One engine (database).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    /// Its column families.
    pub cfs: Vec<CfStats>,
    /// Whether writes are stopped now.
    pub write_stopped: bool,
    /// The rate writes are delayed to, in bytes per second (0: not delayed).
    pub delayed_write_rate: u64,
    /// Compactions running now.
    pub running_compactions: u64,
}

/// The write stalls in the text of `rocksdb.cf-write-stall-stats`, one line of
/// `name: count` pairs (`Write Stall (count): ..., total-delays: 3, total-stops: 1`):
/// delays plus stops since the engine opened.
fn stalls_in(text: &str) -> u64 {
    text.split([',', '\n'])
        .filter_map(|pair| {
            let (name, n) = pair.rsplit_once(':')?;
            let name = name.trim().rsplit(' ').next()?;
            matches!(name, "total-delays" | "total-stops")
                .then(|| n.trim().parse::<u64>().ok())
                .flatten()
        })
        .sum()
}

/// Reads the stats of `db`, whose column families are `cfs`: a name and a handle,
/// or no handle for the default column family of a database opened without any.
pub(crate) fn read(db: &DB, cfs: &[(&'static str, Option<&ColumnFamily>)]) -> EngineStats {
    let int = |name: &str| db.property_int_value(name).ok().flatten().unwrap_or(0);
    let cfs = cfs
        .iter()
        .map(|&(name, cf)| {
            let int = |p: &str| {
                match cf {
                    Some(cf) => db.property_int_value_cf(cf, p),
                    None => db.property_int_value(p),
                }
                .ok()
                .flatten()
                .unwrap_or(0)
            };
            let text = match cf {
                Some(cf) => db.property_value_cf(cf, "rocksdb.cf-write-stall-stats"),
                None => db.property_value("rocksdb.cf-write-stall-stats"),
            }
            .ok()
            .flatten()
            .unwrap_or_default();
            CfStats {
                cf: name,
                memtable_bytes: int("rocksdb.cur-size-all-mem-tables"),
                sst_bytes: int("rocksdb.total-sst-files-size"),
                pending_compaction_bytes: int("rocksdb.estimate-pending-compaction-bytes"),
                write_stalls: stalls_in(&text),
            }
        })
        .collect();
    EngineStats {
        cfs,
        write_stopped: int("rocksdb.is-write-stopped") != 0,
        delayed_write_rate: int("rocksdb.actual-delayed-write-rate"),
        running_compactions: int("rocksdb.num-running-compactions"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stall_count_is_read_from_the_write_stall_stats() {
        // As RocksDB's DumpCFStatsWriteStall prints it.
        let text = "Write Stall (count): l0-file-count-limit-delays: 2, \
                    l0-file-count-limit-stops: 1, memtable-limit-delays: 1, \
                    memtable-limit-stops: 0, total-delays: 3, total-stops: 1\n\
                    interval: 4 total count\n";
        assert_eq!(stalls_in(text), 4);
        assert_eq!(stalls_in(""), 0);
    }

    #[test]
    fn a_real_engine_reports_its_figures() {
        let dir = tempfile::tempdir().unwrap();
        let kv = crate::rocks::RocksKvEngine::open(dir.path()).unwrap();
        let s = kv.rocksdb_stats();
        assert_eq!(s.cfs.len(), 2, "{s:?}");
        assert!(s.cfs.iter().all(|c| c.memtable_bytes > 0), "{s:?}");
        let db = kv.db_for_tests();
        let text = db
            .property_value("rocksdb.cf-write-stall-stats")
            .unwrap()
            .unwrap();
        assert!(
            text.contains("total-stops"),
            "the property's format changed: {text}"
        );
    }
}
