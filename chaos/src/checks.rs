//! The checks on the cluster after a run (the history's checks are in
//! `linearizability.rs` and `set_check.rs`):
//! - **replicas agree**: every replica of every region reaches the same applied
//!   index and then has the same checksum (Admin `Checksum`);
//! - **regions cover the key space**: the regions (each as its newest replica
//!   knows it) cover the key space without gap or overlap, every store a region
//!   lists holds a replica of it, and no store holds one it was removed from;
//! - **no node exited** except those the nemesis killed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use shoal_client::tls::TlsConnector;
use shoal_client::{Client, ClientConfig, Region, TlsPaths};

/// One check's outcome.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The check.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What it found.
    pub detail: String,
}

impl Outcome {
    /// A passed or failed check.
    pub fn new(name: &str, passed: bool, detail: String) -> Outcome {
        Outcome {
            name: name.into(),
            passed,
            detail,
        }
    }
}

/// A client that asks only the store at `addr` (as far as discovery goes).
pub async fn store_client(addr: &str, tls: Option<&TlsPaths>) -> Result<Client, String> {
    let cfg = ClientConfig {
        request_timeout: Duration::from_secs(5),
        rpc_timeout: Duration::from_secs(2),
        tls: tls.cloned(),
        ..ClientConfig::default()
    };
    Client::connect(vec![addr.to_string()], cfg)
        .await
        .map_err(|e| format!("store {addr}: {e}"))
}

/// The regions store `addr` hosts, as it knows them: asked of that store alone
/// (the client's `list_regions` would fall back to another store's view).
async fn regions_of(addr: &str, tls: Option<&TlsPaths>) -> Result<Vec<Region>, String> {
    use shoal_proto::adminpb::{admin_client::AdminClient, ListRegionsRequest};
    let ask = async {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("{addr}: {e}"))?;
        let channel = match tls {
            Some(paths) => TlsConnector::new(paths)?.lazy_channel(endpoint),
            None => endpoint.connect_lazy(),
        };
        let mut admin = AdminClient::new(channel);
        admin
            .list_regions(ListRegionsRequest {})
            .await
            .map_err(|e| format!("{addr}: {e}"))
    };
    let infos = tokio::time::timeout(Duration::from_secs(5), ask)
        .await
        .map_err(|_| format!("{addr}: no answer in 5 s"))??
        .into_inner()
        .regions;
    let mut regions: Vec<Region> = infos.into_iter().filter_map(|i| i.region).collect();
    regions.sort_by(|a, b| a.start_key.cmp(&b.start_key));
    Ok(regions)
}

/// Why `regions` (sorted by start key) do not cover the key space exactly once.
pub fn cover_problem(regions: &[Region]) -> Option<String> {
    let Some(first) = regions.first() else {
        return Some("no regions".into());
    };
    if !first.start_key.is_empty() {
        return Some(format!(
            "the first region {} does not start at the empty key",
            first.id
        ));
    }
    for w in regions.windows(2) {
        if w[0].end_key.is_empty() || w[0].end_key != w[1].start_key {
            return Some(format!(
                "regions {} and {} leave a gap or overlap ({} .. {})",
                w[0].id,
                w[1].id,
                crate::history::to_hex(&w[0].end_key),
                crate::history::to_hex(&w[1].start_key)
            ));
        }
    }
    let last = regions.last().expect("non-empty");
    match last.end_key.is_empty() {
        true => None,
        false => Some(format!(
            "the last region {} does not reach the end",
            last.id
        )),
    }
}

/// Every region as its newest replica (highest version, then conf_ver) knows it,
/// from every store's list; and what each store lists.
fn newest_regions(lists: &BTreeMap<u64, Vec<Region>>) -> BTreeMap<u64, Region> {
    let mut newest: BTreeMap<u64, Region> = BTreeMap::new();
    let epoch = |r: &Region| {
        let e = r.region_epoch.unwrap_or_default();
        (e.version, e.conf_ver)
    };
    for r in lists.values().flatten() {
        if newest.get(&r.id).is_none_or(|n| epoch(r) > epoch(n)) {
            newest.insert(r.id, r.clone());
        }
    }
    newest
}

/// What is wrong with the stores' lists: the newest regions must cover the key
/// space exactly once, each store a region lists must hold it, and no store may
/// hold a region that no longer lists it.
pub fn placement_problems(lists: &BTreeMap<u64, Vec<Region>>) -> Vec<String> {
    let newest = newest_regions(lists);
    let mut regions: Vec<Region> = newest.values().cloned().collect();
    regions.sort_by(|a, b| a.start_key.cmp(&b.start_key));
    let mut problems: Vec<String> = cover_problem(&regions).into_iter().collect();
    for r in &regions {
        for p in &r.peers {
            let holds = lists
                .get(&p.store_id)
                .is_none_or(|l| l.iter().any(|x| x.id == r.id));
            if !holds {
                problems.push(format!(
                    "store {} lacks its replica of region {}",
                    p.store_id, r.id
                ));
            }
        }
    }
    for (store, list) in lists {
        for x in list {
            let listed = newest[&x.id].peers.iter().any(|p| p.store_id == *store);
            if !listed {
                problems.push(format!(
                    "store {store} still holds region {}, which no longer lists it",
                    x.id
                ));
            }
        }
    }
    problems
}

/// The regions cover the key space, and each store holds exactly the replicas
/// the regions list (retrying until `timeout`: a store that just restarted may
/// still be applying a split, a merge or a membership change, a removed replica
/// may not have heard of its removal yet).
pub async fn regions_cover(
    stores: &BTreeMap<u64, String>,
    tls: Option<&TlsPaths>,
    timeout: Duration,
) -> Outcome {
    let name = "regions cover the key space";
    let deadline = Instant::now() + timeout;
    loop {
        let mut problems = Vec::new();
        let mut lists = BTreeMap::new();
        for (id, addr) in stores {
            match regions_of(addr, tls).await {
                Ok(r) => {
                    lists.insert(*id, r);
                }
                Err(e) => problems.push(format!("store {id}: {e}")),
            }
        }
        problems.extend(placement_problems(&lists));
        if problems.is_empty() {
            let total: usize = lists.values().map(Vec::len).sum();
            let regions = newest_regions(&lists).len();
            let detail = format!(
                "{} stores, {regions} regions, {total} region replicas",
                stores.len()
            );
            return Outcome::new(name, true, detail);
        }
        if Instant::now() >= deadline {
            return Outcome::new(name, false, problems.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every replica of every region reaches one applied index and then one digest.
pub async fn replicas_agree(
    stores: &BTreeMap<u64, String>,
    tls: Option<&TlsPaths>,
    timeout: Duration,
) -> Outcome {
    let name = "replicas agree (checksums)";
    let mut ids = BTreeSet::new();
    let mut lists = BTreeMap::new();
    for (store, addr) in stores {
        match regions_of(addr, tls).await {
            Ok(regions) => {
                lists.insert(*store, regions);
            }
            Err(e) => return Outcome::new(name, false, e),
        }
    }
    // The replicas are the stores the newest view of the region lists.
    let mut replicas: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for r in newest_regions(&lists).values() {
        ids.insert(r.id);
        for p in &r.peers {
            if stores.contains_key(&p.store_id) {
                replicas.entry(r.id).or_default().insert(p.store_id);
            }
        }
    }
    // Every region is checked, past the first that disagrees (once the deadline
    // passed, each remaining one gets a single look): whether one replica or a
    // whole store fell behind tells different bugs apart.
    let deadline = Instant::now() + timeout;
    let mut checked = 0;
    let mut problems = Vec::new();
    for region in ids {
        let Some(holders) = replicas.get(&region) else {
            continue;
        };
        match region_agrees(region, holders, stores, tls, deadline).await {
            Ok(()) => checked += 1,
            Err(e) => problems.push(e),
        }
    }
    match problems.is_empty() {
        true => Outcome::new(name, true, format!("{checked} regions")),
        false => Outcome::new(
            name,
            false,
            format!(
                "{} of {} regions: {}",
                problems.len(),
                checked + problems.len(),
                problems.join("; ")
            ),
        ),
    }
}

async fn region_agrees(
    region: u64,
    holders: &BTreeSet<u64>,
    stores: &BTreeMap<u64, String>,
    tls: Option<&TlsPaths>,
    deadline: Instant,
) -> Result<(), String> {
    let mut holders = holders.clone();
    loop {
        let mut sums = BTreeMap::new();
        for store in holders.clone() {
            let addr = &stores[&store];
            let c = store_client(addr, tls).await?;
            match c.checksum(addr, region).await {
                Ok(s) => {
                    sums.insert(store, (s.applied_index, s.checksum, s.keys));
                }
                Err(e) => {
                    tracing::debug!("checksum of region {region} on store {store}: {e}");
                    // Merged away on that store since it was listed (a store that
                    // caught up late applies the merge during the check): its
                    // replica is gone, not behind.
                    // (A store too busy to list its regions is asked again
                    // at the next look.)
                    let listed = regions_of(addr, tls).await;
                    if listed.is_ok_and(|l| l.iter().all(|r| r.id != region)) {
                        holders.remove(&store);
                        continue;
                    }
                    sums.insert(store, (0, 0, 0));
                }
            }
        }
        if holders.is_empty() {
            return Ok(());
        }
        let indexes: BTreeSet<u64> = sums.values().map(|s| s.0).collect();
        if indexes.len() == 1 && !indexes.contains(&0) {
            let digests: BTreeSet<(u64, u64)> = sums.values().map(|s| (s.1, s.2)).collect();
            return match digests.len() {
                1 => Ok(()),
                _ => Err(format!(
                    "region {region}: replicas differ at one applied index: {sums:?}"
                )),
            };
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "region {region}: replicas never reached one applied index: {sums:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: u64, start: &[u8], end: &[u8]) -> Region {
        Region {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn covers_need_no_gap_no_overlap_and_both_ends() {
        assert!(cover_problem(&[r(1, b"", b"m"), r(2, b"m", b"")]).is_none());
        assert!(cover_problem(&[r(1, b"", b"m"), r(2, b"n", b"")])
            .unwrap()
            .contains("gap"));
        assert!(cover_problem(&[r(1, b"a", b"")])
            .unwrap()
            .contains("empty key"));
        assert!(cover_problem(&[r(1, b"", b"m")]).unwrap().contains("end"));
        assert!(cover_problem(&[]).is_some());
    }

    fn placed(id: u64, conf_ver: u64, stores: &[u64]) -> Region {
        Region {
            region_epoch: Some(shoal_client::RegionEpoch {
                conf_ver,
                version: 1,
            }),
            peers: stores
                .iter()
                .map(|&s| shoal_client::Peer {
                    id: id * 10 + s,
                    store_id: s,
                    role: 0,
                })
                .collect(),
            ..r(id, b"", b"")
        }
    }

    #[test]
    fn each_store_must_hold_what_the_newest_region_lists_and_nothing_else() {
        let lists = |v: Vec<(u64, Vec<Region>)>| v.into_iter().collect::<BTreeMap<_, _>>();
        // Moved from store 3 to store 4, everywhere.
        let moved = placed(1, 5, &[1, 2, 4]);
        let ok = lists(vec![
            (1, vec![moved.clone()]),
            (2, vec![moved.clone()]),
            (3, vec![]),
            (4, vec![moved.clone()]),
        ]);
        assert_eq!(placement_problems(&ok), Vec::<String>::new());
        // Store 3 kept its replica (never heard of its removal); store 4 lacks one.
        let stale = lists(vec![
            (1, vec![moved.clone()]),
            (2, vec![moved.clone()]),
            (3, vec![placed(1, 1, &[1, 2, 3])]),
            (4, vec![]),
        ]);
        let p = placement_problems(&stale);
        assert!(p.iter().any(|x| x.contains("store 4 lacks")), "{p:?}");
        assert!(p.iter().any(|x| x.contains("store 3 still holds")), "{p:?}");
    }
}
