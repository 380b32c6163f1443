//! The kv engine: the replicated state machine's data and per-region metadata.
//!
//! Contract:
//! - Two column families: [`Cf::Default`] holds user data (keys built with
//!   [`keys::data_key`](crate::keys::data_key)); [`Cf::Meta`] holds per-region state.
//! - [`KvEngine::write`] is atomic across both column families and **not synced**:
//!   apply writes the data and the region's apply state in one batch, so after a crash
//!   the two agree and apply resumes from the applied index found. Call
//!   [`KvEngine::sync`] before relying on a write surviving a crash (log GC does).
//! - A [`KvEngine::snapshot`] sees exactly the writes made before it was taken.
//! - Ranges are `[start, end)`; an empty `end` means no upper bound.

use std::path::Path;

use crate::Result;

/// A column family of the kv engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cf {
    /// User data.
    Default,
    /// Per-region and per-store state.
    Meta,
}

impl Cf {
    /// Every column family.
    pub const ALL: [Cf; 2] = [Cf::Default, Cf::Meta];

    /// The column family's name in storage.
    pub fn name(self) -> &'static str {
        match self {
            Cf::Default => "default",
            Cf::Meta => "meta",
        }
    }
}

/// One operation of a [`KvBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Sets a key.
    Put {
        cf: Cf,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Removes a key.
    Delete { cf: Cf, key: Vec<u8> },
    /// Removes every key in `[start, end)`.
    DeleteRange {
        cf: Cf,
        start: Vec<u8>,
        end: Vec<u8>,
    },
}

/// An atomic write over both column families, applied in order.
#[derive(Clone, Debug, Default)]
pub struct KvBatch {
    ops: Vec<KvOp>,
    bytes: usize,
}

impl KvBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value` in `cf`.
    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        let (key, value) = (key.into(), value.into());
        self.bytes += key.len() + value.len();
        self.ops.push(KvOp::Put { cf, key, value });
    }

    /// Removes `key` from `cf`.
    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) {
        let key = key.into();
        self.bytes += key.len();
        self.ops.push(KvOp::Delete { cf, key });
    }

    /// Removes every key of `cf` in `[start, end)`.
    pub fn delete_range(&mut self, cf: Cf, start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) {
        let (start, end) = (start.into(), end.into());
        self.bytes += start.len() + end.len();
        self.ops.push(KvOp::DeleteRange { cf, start, end });
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[KvOp] {
        &self.ops
    }

    /// Whether the batch does nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Approximate payload size in bytes.
    pub fn size(&self) -> usize {
        self.bytes
    }

    /// Empties the batch for reuse.
    pub fn clear(&mut self) {
        self.ops.clear();
        self.bytes = 0;
    }
}

/// Reads shared by the engine and its snapshots.
pub trait KvRead {
    /// The value of `key` in `cf`.
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Calls `f` on each pair of `cf` in `[start, end)` in key order until it returns false.
    fn for_each(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()>;

    /// Up to `limit` pairs of `cf` in `[start, end)`, in key order.
    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.for_each(cf, start, end, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            out.len() < limit
        })?;
        Ok(out)
    }
}

/// A consistent, point-in-time view of a kv engine. Owns what it needs, so it can be
/// sent to another thread (to stream a Raft snapshot, say).
pub trait KvSnapshot: KvRead + Send + Sync + 'static {}

/// The state machine store. See the module docs for the contract.
pub trait KvEngine: KvRead + Clone + Send + Sync + 'static {
    /// The engine's snapshot type.
    type Snapshot: KvSnapshot;

    /// Applies the batch atomically, without sync.
    fn write(&self, batch: &KvBatch) -> Result<()>;

    /// Removes every key of `cf` in `[start, end)`.
    fn delete_range(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<()>;

    /// A consistent view of the engine as of now.
    fn snapshot(&self) -> Self::Snapshot;

    /// Makes every write so far durable.
    fn sync(&self) -> Result<()>;

    /// Writes `pairs` (keys strictly ascending) as an SST file at `path`, ready to be
    /// ingested into `cf`. Returns the number of pairs written.
    fn write_sst(
        &self,
        cf: Cf,
        path: &Path,
        pairs: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>,
    ) -> Result<u64>;

    /// Writes the pairs of `cf` in `[start, end)` (an empty `end`: to the end) as of
    /// `snapshot` into SST files under `dir` (`0.sst`, `1.sst`, ...), each closed
    /// once it holds `max_file_bytes` of keys and values, and returns them in key
    /// order (none for an empty range). Memory stays bounded whatever the range
    /// holds: pairs go to the file as they are read.
    fn export_ssts(
        &self,
        snapshot: &Self::Snapshot,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        dir: &Path,
        max_file_bytes: u64,
    ) -> Result<Vec<SstFile>>;

    /// Ingests SST files written by [`KvEngine::write_sst`] into `cf`, atomically.
    fn ingest(&self, cf: Cf, paths: &[&Path]) -> Result<()>;

    /// The smallest and largest key (inclusive) of the SST files at `paths`, as
    /// ingesting them would write over (point keys, deletions and range deletions
    /// alike): at least one pair per file that holds anything. Nothing of this
    /// engine changes; `scratch` is a directory the call creates and removes (it
    /// must not hold anything else). A file that is not an SST is an error.
    fn sst_key_bounds(&self, paths: &[&Path], scratch: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;

    /// Approximate bytes stored in `cf` within `[start, end)`.
    fn approximate_size(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<u64>;
}

/// One SST file written by [`KvEngine::export_ssts`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SstFile {
    /// Where it is.
    pub path: std::path::PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// The pairs it holds.
    pub keys: u64,
    /// [`file_checksum`] of its bytes.
    pub checksum: u64,
}

/// A 64-bit FNV-1a digest of a file's bytes, to check a copied file against its
/// original (not against tampering).
pub fn file_checksum(path: &Path) -> Result<u64> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)
        .map_err(|e| crate::Error::Storage(format!("cannot open {}: {e}", path.display())))?;
    let mut hash = Fnv64::default();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| crate::Error::Storage(format!("cannot read {}: {e}", path.display())))?;
        if n == 0 {
            return Ok(hash.0);
        }
        hash.write(&buf[..n]);
    }
}

/// FNV-1a, 64 bits, fed in pieces.
pub struct Fnv64(pub u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    /// Adds `bytes` to the digest.
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
