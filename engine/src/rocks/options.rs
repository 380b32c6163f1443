//! RocksDB tuning for both engines, chosen on purpose. Each setting says why.
//!
//! The log engine (`raft/`) is append-mostly: entries are written once, read back
//! soon (by followers that lag, or apply after a restart) and deleted by log GC in
//! whole prefixes. The kv engine (`kv/`) is an ordinary point-read/scan workload.

use rocksdb::{BlockBasedOptions, Cache, DBCompressionType, Options, WriteOptions};

/// Memtable size of the log engine. Small on purpose: the memtable is a skiplist,
/// and on the write path (one insert per entry, under the log writer's fsync loop)
/// its depth costs cache misses. Measured with `shoal bench` (3 nodes, 2 cores, put
/// with 64 clients): 64 MiB gave 7.1 K ops/s with ~16% of a node's CPU in
/// `FindSpliceForLevel`; 8 MiB gives 8.9 K ops/s with ~10%.
const LOG_WRITE_BUFFER: usize = 8 << 20;
/// Memtable size of each kv column family; small for the same reason (apply inserts
/// every write into it).
const KV_WRITE_BUFFER: usize = 8 << 20;
/// Block cache shared by the kv engine's column families. Modest by default: tests
/// open several stores in one process.
const KV_BLOCK_CACHE: usize = 64 << 20;

fn common(opts: &mut Options) {
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // Two background jobs match the two cores of the development machines: flushes
    // and compactions must not starve the pollers.
    opts.set_max_background_jobs(2);
    // Let RocksDB size the levels from the data, which keeps space amplification low
    // for a database whose size we do not know in advance.
    opts.set_level_compaction_dynamic_level_bytes(true);
    // Spread background writes' page-cache flushing instead of stalling in bursts.
    opts.set_bytes_per_sync(1 << 20);
    // Keep the info log small; an operator reads tracing output, not LOG files.
    opts.set_keep_log_file_num(4);
    opts.set_max_log_file_size(16 << 20);
}

/// Options of the log engine's database.
pub(crate) fn log_db_options() -> Options {
    let mut opts = Options::default();
    common(&mut opts);
    opts.set_write_buffer_size(LOG_WRITE_BUFFER);
    opts.set_max_write_buffer_number(4);
    // Entries are mostly small and short-lived; compressing them costs CPU on the hot
    // path (flush) for data that is usually deleted soon after.
    opts.set_compression_type(DBCompressionType::None);
    // The WAL is the log engine's durability: the sync of each write is what makes a
    // Raft ready persisted. Incremental syncs of the WAL keep each fsync short.
    opts.set_wal_bytes_per_sync(512 << 10);
    opts
}

/// Write options of the log engine: every write is synced (one fsync per batch).
pub(crate) fn log_write_options() -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    wo
}

/// Write options for log GC and other writes whose loss after a crash is harmless.
pub(crate) fn unsynced_write_options() -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.set_sync(false);
    wo
}

/// Options of the kv engine's database.
pub(crate) fn kv_db_options() -> Options {
    let mut opts = Options::default();
    common(&mut opts);
    opts
}

/// Options of one kv column family. `cache` is shared by all of them.
pub(crate) fn kv_cf_options(cache: &Cache) -> Options {
    let mut opts = Options::default();
    opts.set_write_buffer_size(KV_WRITE_BUFFER);
    opts.set_level_compaction_dynamic_level_bytes(true);
    // lz4 is cheap enough for the upper levels; the bottommost level holds ~90% of
    // the data and is where compression pays off most.
    opts.set_compression_type(DBCompressionType::Lz4);
    opts.set_bottommost_compression_type(DBCompressionType::Lz4);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    // A bloom filter spares a disk read for most gets of absent keys (CAS with
    // expected-absent, reads of deleted keys).
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    opts.set_block_based_table_factory(&table);
    opts
}

/// The kv engine's shared block cache.
pub(crate) fn kv_block_cache() -> Cache {
    Cache::new_lru_cache(KV_BLOCK_CACHE)
}

/// Write options of the kv engine: not synced. Apply writes data and apply state in
/// one batch, so a crash loses a suffix of applied entries consistently, and apply
/// replays them from the log, which is synced.
pub(crate) fn kv_write_options() -> WriteOptions {
    unsynced_write_options()
}
