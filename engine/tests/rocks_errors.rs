//! RocksDB-specific failure cases: corrupt records and a data dir held twice come
//! back as errors, not panics.

use shoal_engine::keys::{entry_key, raft_state_key};
use shoal_engine::rocks::{Engines, RocksLogEngine};
use shoal_engine::{Error, LogBatch, LogEngine, LogEntry};

#[test]
fn corrupt_records_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = RocksLogEngine::open(dir.path()).unwrap();
        let mut b = LogBatch::new();
        let entries = (1..=3)
            .map(|index| LogEntry {
                index,
                term: 1,
                data: vec![1, 2, 3],
            })
            .collect();
        b.add(1, entries, None);
        log.write(&b).unwrap();
    }
    {
        // Damage the records behind the engine's back.
        let db = rocksdb::DB::open_default(dir.path()).unwrap();
        db.put(entry_key(1, 2), [0u8; 3]).unwrap();
        db.put(raft_state_key(1), [0xffu8; 7]).unwrap();
    }
    let log = RocksLogEngine::open(dir.path()).unwrap();
    let mut out = Vec::new();
    let err = log.fetch(1, 1, 4, None, &mut out).unwrap_err();
    assert!(matches!(err, Error::Corruption(_)), "{err}");
    assert!(err.is_fatal());
    assert!(matches!(log.term(1, 2), Err(Error::Corruption(_))));
    assert!(matches!(log.raft_state(1), Err(Error::Corruption(_))));
    // An intact entry still reads.
    assert_eq!(log.term(1, 3).unwrap(), 1);
}

#[test]
fn a_held_data_dir_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Engines::open(dir.path()).unwrap();
    let err = match Engines::open(dir.path()) {
        Ok(_) => panic!("a second open of a held data dir must fail"),
        Err(e) => e,
    };
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
}
