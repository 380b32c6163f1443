//! Power loss around a split: the split's kv writes are synced before the new
//! regions' peers start, and a peer started by a split whose raft state already
//! sits in the log resumes from it. Simulated by rewinding one store's kv meta to
//! before the split (what a power loss did to an unsynced apply batch) and
//! restarting it: its hard state never goes backwards and nothing acknowledged is
//! lost.

mod common;

use std::time::Duration;

use common::Cluster;
use shoal_engine::keys::{apply_state_key, region_state_key};
use shoal_engine::{Cf, KvBatch, KvEngine, KvRead, LogEngine};
use shoal_raftstore::TickMode;

const T: Duration = Duration::from_secs(20);

fn key(i: u32) -> Vec<u8> {
    format!("k{i:04}").into_bytes()
}

#[test]
fn a_split_peer_resumes_from_its_logged_raft_state_after_its_split_is_forgotten() {
    let mut c = Cluster::start(3, 1, TickMode::Manual);
    c.wait_leader(1, T);
    for i in 0..20 {
        c.put(&key(i), b"before", T).unwrap();
    }
    // Store 3's kv meta for region 1 as it was before the split.
    let victim = 3;
    let kv = &c.engines[&victim].kv;
    let old_state = kv.get(Cf::Meta, &region_state_key(1)).unwrap().unwrap();
    let old_apply = kv.get(Cf::Meta, &apply_state_key(1)).unwrap().unwrap();

    let regions = c.split(&key(10), T).unwrap();
    let new_id = regions.iter().find(|r| r.start_key == key(10)).unwrap().id;
    c.wait_leader(new_id, T);
    // The new region lives: it elects, votes and appends on every store.
    for i in 10..20 {
        c.put(&key(i), b"after", T).unwrap();
    }
    c.wait_local(victim, &key(19), b"after", T);
    // The split was synced on every store before its peers started.
    for id in c.store_ids() {
        let syncs = c.store(id).metrics().admin_kv_syncs.get();
        assert!(
            syncs >= 1,
            "store {id} applied the split without syncing kv"
        );
    }
    let before = c.engines[&victim].log.raft_state(new_id).unwrap().unwrap();
    let hs_before = before.hard_state.unwrap();
    assert!(hs_before.term > 5 && before.last_index > 5, "{before:?}");

    // "Power loss": the apply batch of the split and everything after it never
    // reached the kv engine's disk; the synced log kept the new peer's state.
    c.stop_store(victim);
    {
        let engines = shoal_engine::rocks::Engines::open(c.dirs[&victim].path()).unwrap();
        let mut b = KvBatch::new();
        b.put(Cf::Meta, region_state_key(1), old_state);
        b.put(Cf::Meta, apply_state_key(1), old_apply);
        b.delete(Cf::Meta, region_state_key(new_id));
        b.delete(Cf::Meta, apply_state_key(new_id));
        engines.kv.write(&b).unwrap();
        engines.kv.sync().unwrap();
    }
    c.start_store(victim);

    // The store re-applies the split and restarts the new peer from its logged
    // state: it keeps up with the leader and never goes back in term or log.
    for i in 10..20 {
        c.put(&key(i), b"again", T).unwrap();
    }
    c.wait_local(victim, &key(19), b"again", T);
    let after = c.engines[&victim].log.raft_state(new_id).unwrap().unwrap();
    let hs_after = after.hard_state.unwrap();
    assert!(
        hs_after.term >= hs_before.term && after.last_index >= before.last_index,
        "the new peer went back from {before:?} to {after:?}"
    );
    // Nothing acknowledged is lost, on the restarted store either.
    c.check_acked();
    for i in 0..10 {
        c.wait_local(victim, &key(i), b"before", T);
    }
    c.check_replicas_agree(T);
}
