//! The key bounds of SST files as RocksDB would ingest them, read before any of
//! their data reaches an engine (a received Raft snapshot is checked with it: a
//! file holding a key outside its region must not be ingested).
//!
//! RocksDB's C API has no SST reader, and what matters is what an ingest would
//! write over: point keys, deletions and range deletions alike. So the files are
//! ingested, as hard links (nothing is copied, the files are not changed), into a
//! scratch database of their own, its file metadata (each file's smallest and
//! largest key, range deletions included) is read, and the scratch database is
//! removed. What that costs: a database open and close and one ingest, which
//! reads each file's footer, index and first and last blocks, not its data.

use std::path::Path;

use rocksdb::{IngestExternalFileOptions, Options, DB};

use super::{open_error, storage};
use crate::{Error, Result};

/// The smallest and largest key (both inclusive) of the files at `paths`, one
/// pair per file RocksDB keeps of them. `scratch` must not exist or be a
/// directory this call may remove; it is removed on return.
pub(crate) fn sst_key_bounds(paths: &[&Path], scratch: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Error::Storage(format!("{what} {}: {e}", p.display()))
    };
    if scratch.exists() {
        std::fs::remove_dir_all(scratch).map_err(|e| io("cannot remove", scratch, e))?;
    }
    let bounds = (|| -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        // Nothing is written but the ingest: no compaction may merge the files
        // before their metadata is read.
        opts.set_disable_auto_compactions(true);
        let db = DB::open(&opts, scratch).map_err(|e| open_error(scratch, e))?;
        let mut links = Vec::with_capacity(paths.len());
        for (i, p) in paths.iter().enumerate() {
            let link = scratch.join(format!("ingest-{i}.sst"));
            std::fs::hard_link(p, &link).map_err(|e| io("cannot link", p, e))?;
            links.push(link);
        }
        if !links.is_empty() {
            let mut ingest = IngestExternalFileOptions::default();
            // The links are consumed; the files themselves stay as they are.
            ingest.set_move_files(true);
            db.ingest_external_file_opts(&ingest, links)
                .map_err(storage)?;
        }
        let files = db.live_files().map_err(storage)?;
        files
            .into_iter()
            .map(|f| match (f.start_key, f.end_key) {
                (Some(s), Some(e)) => Ok((s, e)),
                _ => Err(Error::Corruption(format!(
                    "an ingested SST file ({}) has no key bounds",
                    f.name
                ))),
            })
            .collect()
    })();
    let removed = std::fs::remove_dir_all(scratch).map_err(|e| io("cannot remove", scratch, e));
    let bounds = bounds?;
    removed?;
    Ok(bounds)
}

#[cfg(test)]
mod tests {
    use rocksdb::SstFileWriter;

    use super::*;

    /// What ingesting would write over, beyond the puts: a point deletion before
    /// them, a range deletion after them.
    #[test]
    fn deletions_count_in_the_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options::default();
        let path = dir.path().join("t.sst");
        let mut w = SstFileWriter::create(&opts);
        w.open(&path).unwrap();
        w.delete(b"za").unwrap();
        w.put(b"zm", b"v").unwrap();
        w.delete_range(b"zq", b"zz").unwrap();
        w.finish().unwrap();
        let scratch = dir.path().join("scratch");
        let bounds = sst_key_bounds(&[path.as_path()], &scratch).unwrap();
        assert_eq!(bounds, vec![(b"za".to_vec(), b"zz".to_vec())]);
        assert!(path.exists() && !scratch.exists());
    }
}
