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

/// The write stalls counted in the text of `rocksdb.cfstats`, whose line reads
/// `Stalls(count): 0 level0_slowdown, 0 level0_slowdown_with_compaction, ...,
/// 0 memtable_slowdown, interval 0 total count`: every cause's count since the
/// engine opened, summed (the `_with_compaction` ones are a part of another cause,
/// and the `interval` figure counts since the last stats dump: both left out).
fn stalls_in(cfstats: &str) -> u64 {
    let Some(line) = cfstats
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("Stalls(count):"))
    else {
        return 0;
    };
    line.split(',')
        .filter_map(|part| {
            let (n, cause) = part.trim().split_once(' ')?;
            if cause.contains("with_compaction") || n == "interval" {
                return None;
            }
            n.parse::<u64>().ok()
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
                Some(cf) => db.property_value_cf(cf, "rocksdb.cfstats"),
                None => db.property_value("rocksdb.cfstats"),
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
    fn the_stall_count_is_read_from_cfstats() {
        let text = "** Compaction Stats [default] **\n\
                    Stalls(count): 2 level0_slowdown, 2 level0_slowdown_with_compaction, \
                    0 level0_numfiles, 0 level0_numfiles_with_compaction, 4 stop for \
                    pending_compaction_bytes, 0 slowdown for pending_compaction_bytes, 0 \
                    memtable_compaction, 1 memtable_slowdown, interval 5 total count\n";
        assert_eq!(stalls_in(text), 7);
        assert_eq!(stalls_in("nothing here"), 0);
    }
}
