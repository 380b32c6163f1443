//! Conformance cases for [`KvEngine`] implementations.

use super::{temp_dir, Harness};
use crate::keys::data_key;
use crate::{Cf, KvBatch, KvEngine, KvRead};

fn put<K: KvEngine>(kv: &K, cf: Cf, key: &[u8], value: &[u8]) {
    let mut b = KvBatch::new();
    b.put(cf, key, value);
    kv.write(&b).expect("put");
}

fn keys_of(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<Vec<u8>> {
    pairs.iter().map(|(k, _)| k.clone()).collect()
}

/// An empty value is a value (not an absent key), and 1 MiB values round-trip.
pub fn empty_and_large_values<H: Harness>() {
    let dir = temp_dir();
    let kv = H::open_kv(dir.path());
    put(&kv, Cf::Default, b"zempty", b"");
    assert_eq!(kv.get(Cf::Default, b"zempty").unwrap(), Some(Vec::new()));
    assert_eq!(kv.get(Cf::Default, b"zabsent").unwrap(), None);
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    put(&kv, Cf::Default, b"zbig", &big);
    assert_eq!(kv.get(Cf::Default, b"zbig").unwrap(), Some(big.clone()));
    let scanned = kv.scan(Cf::Default, b"z", b"", 10).unwrap();
    assert_eq!(
        keys_of(&scanned),
        vec![b"zbig".to_vec(), b"zempty".to_vec()]
    );
    assert_eq!(scanned[0].1.len(), 1 << 20);
}

/// Scans return keys in byte order, honour `[start, end)` and the limit.
pub fn scan_order_and_limits<H: Harness>() {
    let dir = temp_dir();
    let kv = H::open_kv(dir.path());
    let mut b = KvBatch::new();
    // Inserted out of order, with byte values that sort differently as signed.
    for k in [&b"b"[..], b"a", b"\xff", b"ab", b"\x00", b"b\x00", b"c"] {
        b.put(Cf::Default, data_key(k), k.to_vec());
    }
    kv.write(&b).unwrap();
    let all = kv.scan(Cf::Default, &data_key(b""), b"", 100).unwrap();
    let want: Vec<Vec<u8>> = [&b"\x00"[..], b"a", b"ab", b"b", b"b\x00", b"c", b"\xff"]
        .iter()
        .map(|k| data_key(k))
        .collect();
    assert_eq!(keys_of(&all), want);
    let limited = kv.scan(Cf::Default, &data_key(b"a"), b"", 3).unwrap();
    assert_eq!(keys_of(&limited), want[1..4].to_vec());
    let bounded = kv
        .scan(Cf::Default, &data_key(b"ab"), &data_key(b"c"), 100)
        .unwrap();
    assert_eq!(keys_of(&bounded), want[2..5].to_vec());
    assert!(kv.scan(Cf::Default, b"z", b"", 0).unwrap().is_empty());
    // The other column family is separate.
    assert!(kv.scan(Cf::Meta, b"", b"", 100).unwrap().is_empty());
}

/// A batch over both column families lands whole, in order.
pub fn batch_is_atomic_across_column_families<H: Harness>() {
    let dir = temp_dir();
    let kv = H::open_kv(dir.path());
    put(&kv, Cf::Default, b"zk1", b"old");
    let mut b = KvBatch::new();
    b.put(Cf::Default, b"zk1", b"new");
    b.put(Cf::Default, b"zk2", b"v2");
    b.delete(Cf::Default, b"zk2");
    b.put(Cf::Meta, b"apply", b"7");
    assert_eq!(b.ops().len(), 4);
    kv.write(&b).unwrap();
    assert_eq!(kv.get(Cf::Default, b"zk1").unwrap(), Some(b"new".to_vec()));
    assert_eq!(
        kv.get(Cf::Default, b"zk2").unwrap(),
        None,
        "delete after put wins"
    );
    assert_eq!(kv.get(Cf::Meta, b"apply").unwrap(), Some(b"7".to_vec()));
    assert_eq!(kv.get(Cf::Default, b"apply").unwrap(), None);
}

/// `delete_range` removes `[start, end)` and nothing else.
pub fn delete_range_removes_only_the_range<H: Harness>() {
    let dir = temp_dir();
    let kv = H::open_kv(dir.path());
    for k in [b"za", b"zb", b"zc", b"zd"] {
        put(&kv, Cf::Default, k, b"v");
    }
    put(&kv, Cf::Meta, b"zb", b"meta");
    kv.delete_range(Cf::Default, b"zb", b"zd").unwrap();
    let left = kv.scan(Cf::Default, b"z", b"", 10).unwrap();
    assert_eq!(keys_of(&left), vec![b"za".to_vec(), b"zd".to_vec()]);
    assert_eq!(kv.get(Cf::Meta, b"zb").unwrap(), Some(b"meta".to_vec()));
}

/// A snapshot sees the engine as it was when taken, whatever is written later.
pub fn snapshot_isolation<H: Harness>() {
    let dir = temp_dir();
    let kv = H::open_kv(dir.path());
    put(&kv, Cf::Default, b"za", b"1");
    put(&kv, Cf::Default, b"zb", b"1");
    put(&kv, Cf::Meta, b"m", b"1");
    let snap = kv.snapshot();
    put(&kv, Cf::Default, b"za", b"2");
    put(&kv, Cf::Default, b"zc", b"2");
    put(&kv, Cf::Meta, b"m", b"2");
    kv.delete_range(Cf::Default, b"zb", b"zc").unwrap();
    // Readable from another thread, after the engine handle is gone.
    drop(kv);
    let seen = std::thread::spawn(move || {
        let pairs = snap.scan(Cf::Default, b"z", b"", 10).unwrap();
        let meta = snap.get(Cf::Meta, b"m").unwrap();
        (pairs, meta)
    })
    .join()
    .unwrap();
    assert_eq!(
        seen.0,
        vec![
            (b"za".to_vec(), b"1".to_vec()),
            (b"zb".to_vec(), b"1".to_vec())
        ]
    );
    assert_eq!(seen.1, Some(b"1".to_vec()));
}

/// SST files written by the engine ingest atomically and become readable.
pub fn sst_ingest<H: Harness>() {
    let dir = temp_dir();
    let kv = H::open_kv(&dir.path().join("kv"));
    put(&kv, Cf::Default, b"zalpha", b"mine");
    let sst = dir.path().join("chunk.sst");
    let mut pairs = (0..1000u32).map(|i| {
        (
            data_key(format!("k{i:05}").as_bytes()),
            i.to_be_bytes().to_vec(),
        )
    });
    assert_eq!(kv.write_sst(Cf::Default, &sst, &mut pairs).unwrap(), 1000);
    // Unsorted input is refused with an error, not a panic.
    let bad = dir.path().join("bad.sst");
    let mut unsorted = vec![(b"zb".to_vec(), vec![]), (b"za".to_vec(), vec![])].into_iter();
    assert!(kv.write_sst(Cf::Default, &bad, &mut unsorted).is_err());
    kv.ingest(Cf::Default, &[sst.as_path()]).unwrap();
    assert_eq!(
        kv.get(Cf::Default, &data_key(b"k00042")).unwrap(),
        Some(42u32.to_be_bytes().to_vec())
    );
    assert_eq!(
        kv.scan(Cf::Default, &data_key(b"k"), &data_key(b"l"), 5000)
            .unwrap()
            .len(),
        1000
    );
    assert_eq!(
        kv.get(Cf::Default, b"zalpha").unwrap(),
        Some(b"mine".to_vec())
    );
}

/// A range exported from a snapshot into SST files (split by size, checksummed) and
/// ingested into another engine holds exactly the range as of the snapshot.
pub fn exported_ssts_carry_a_range_as_of_a_snapshot<H: Harness>() {
    let dir = temp_dir();
    let from = H::open_kv(&dir.path().join("from"));
    let mut b = KvBatch::new();
    for i in 0..500u32 {
        b.put(
            Cf::Default,
            data_key(format!("k{i:05}").as_bytes()),
            vec![7u8; 100],
        );
    }
    b.put(Cf::Default, data_key(b"outside"), b"x".to_vec());
    from.write(&b).unwrap();
    let snap = from.snapshot();
    // Written after the snapshot: not exported.
    put(&from, Cf::Default, &data_key(b"k00010"), b"later");
    let (start, end) = (data_key(b"k"), data_key(b"l"));
    let out = dir.path().join("export");
    std::fs::create_dir_all(&out).unwrap();
    let files = from
        .export_ssts(&snap, Cf::Default, &start, &end, &out, 10_000)
        .unwrap();
    assert!(files.len() >= 5, "{} files", files.len());
    assert_eq!(files.iter().map(|f| f.keys).sum::<u64>(), 500);
    for f in &files {
        assert_eq!(crate::file_checksum(&f.path).unwrap(), f.checksum);
        assert_eq!(std::fs::metadata(&f.path).unwrap().len(), f.size);
    }
    let empty = from
        .export_ssts(
            &snap,
            Cf::Default,
            &data_key(b"m"),
            &data_key(b"n"),
            &out,
            10_000,
        )
        .unwrap();
    assert!(empty.is_empty());
    let to = H::open_kv(&dir.path().join("to"));
    let paths: Vec<&std::path::Path> = files.iter().map(|f| f.path.as_path()).collect();
    to.ingest(Cf::Default, &paths).unwrap();
    let got = to.scan(Cf::Default, &start, &end, 10_000).unwrap();
    assert_eq!(got.len(), 500);
    assert!(got.iter().all(|(_, v)| v == &vec![7u8; 100]));
    assert_eq!(to.get(Cf::Default, &data_key(b"outside")).unwrap(), None);
}

/// The key bounds of SST files are read without changing the engine or the
/// files (which ingest as before afterwards); a file that is not an SST is an
/// error.
pub fn sst_key_bounds_leave_engine_and_files_as_they_were<H: Harness>() {
    let dir = temp_dir();
    let kv = H::open_kv(&dir.path().join("kv"));
    let write = |name: &str, keys: &[&[u8]]| {
        let path = dir.path().join(name);
        let mut pairs = keys.iter().map(|k| (k.to_vec(), b"v".to_vec()));
        kv.write_sst(Cf::Default, &path, &mut pairs).unwrap();
        path
    };
    let low = write("low.sst", &[b"za", b"zb", b"zc"]);
    let high = write("high.sst", &[b"zx", b"zz"]);
    let sums = [
        crate::file_checksum(&low).unwrap(),
        crate::file_checksum(&high).unwrap(),
    ];
    let scratch = dir.path().join("scratch");
    let mut bounds = kv
        .sst_key_bounds(&[low.as_path(), high.as_path()], &scratch)
        .unwrap();
    bounds.sort();
    assert_eq!(
        bounds,
        vec![
            (b"za".to_vec(), b"zc".to_vec()),
            (b"zx".to_vec(), b"zz".to_vec())
        ]
    );
    assert!(!scratch.exists(), "the scratch directory is removed");
    assert_eq!(kv.get(Cf::Default, b"za").unwrap(), None);
    assert_eq!(crate::file_checksum(&low).unwrap(), sums[0]);
    assert_eq!(crate::file_checksum(&high).unwrap(), sums[1]);
    let garbage = dir.path().join("garbage.sst");
    std::fs::write(&garbage, b"not an sst file at all").unwrap();
    assert!(kv.sst_key_bounds(&[garbage.as_path()], &scratch).is_err());
    assert!(!scratch.exists());
    kv.ingest(Cf::Default, &[low.as_path()]).unwrap();
    assert_eq!(kv.get(Cf::Default, b"zb").unwrap(), Some(b"v".to_vec()));
}

/// Writes followed by `sync` are there after reopening.
pub fn synced_writes_survive_reopen<H: Harness>() {
    let dir = temp_dir();
    {
        let kv = H::open_kv(dir.path());
        let mut b = KvBatch::new();
        b.put(Cf::Default, b"zx", b"1");
        b.put(Cf::Meta, b"state", b"s");
        kv.write(&b).unwrap();
        kv.sync().unwrap();
    }
    let kv = H::open_kv(dir.path());
    assert_eq!(kv.get(Cf::Default, b"zx").unwrap(), Some(b"1".to_vec()));
    assert_eq!(kv.get(Cf::Meta, b"state").unwrap(), Some(b"s".to_vec()));
}
