//! The checks on the cluster after a run (the history's checks are in
//! `linearizability.rs` and `set_check.rs`):
//! - **replicas agree**: every replica of every region reaches the same applied
//!   index and then has the same checksum (Admin `Checksum`);
//! - **regions cover the key space** on every store, without gap or overlap;
//! - **no node exited** except those the nemesis killed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use shoal_client::{Client, ClientConfig, Region};

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
pub async fn store_client(addr: &str) -> Result<Client, String> {
    let cfg = ClientConfig {
        request_timeout: Duration::from_secs(5),
        rpc_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    };
    Client::connect(vec![addr.to_string()], cfg)
        .await
        .map_err(|e| format!("store {addr}: {e}"))
}

/// The regions store `addr` hosts, as it knows them: asked of that store alone
/// (the client's `list_regions` would fall back to another store's view).
async fn regions_of(addr: &str) -> Result<Vec<Region>, String> {
    use shoal_proto::adminpb::{admin_client::AdminClient, ListRegionsRequest};
    let ask = async {
        let mut admin = AdminClient::connect(format!("http://{addr}"))
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
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

/// Every store's regions cover the key space (retrying until `timeout`: a store
/// that just restarted may still be applying a split or merge).
pub async fn regions_cover(stores: &BTreeMap<u64, String>, timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    loop {
        let mut problems = Vec::new();
        let mut total = 0;
        for (id, addr) in stores {
            match regions_of(addr).await {
                Ok(r) => {
                    total += r.len();
                    if let Some(p) = cover_problem(&r) {
                        problems.push(format!("store {id}: {p}"));
                    }
                }
                Err(e) => problems.push(format!("store {id}: {e}")),
            }
        }
        if problems.is_empty() {
            let detail = format!("{} stores, {total} region replicas", stores.len());
            return Outcome::new("regions cover the key space", true, detail);
        }
        if Instant::now() >= deadline {
            return Outcome::new("regions cover the key space", false, problems.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every replica of every region reaches one applied index and then one digest.
pub async fn replicas_agree(stores: &BTreeMap<u64, String>, timeout: Duration) -> Outcome {
    let name = "replicas agree (checksums)";
    let mut ids = BTreeSet::new();
    let mut replicas: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for (store, addr) in stores {
        match regions_of(addr).await {
            Ok(regions) => {
                for r in regions {
                    ids.insert(r.id);
                    replicas.entry(r.id).or_default().insert(*store);
                }
            }
            Err(e) => return Outcome::new(name, false, e),
        }
    }
    // Every region is checked, past the first that disagrees (once the deadline
    // passed, each remaining one gets a single look): whether one replica or a
    // whole store fell behind tells different bugs apart.
    let deadline = Instant::now() + timeout;
    let mut checked = 0;
    let mut problems = Vec::new();
    for region in ids {
        let holders = &replicas[&region];
        match region_agrees(region, holders, stores, deadline).await {
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
    deadline: Instant,
) -> Result<(), String> {
    let mut holders = holders.clone();
    loop {
        let mut sums = BTreeMap::new();
        for store in holders.clone() {
            let addr = &stores[&store];
            let c = store_client(addr).await?;
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
                    let listed = regions_of(addr).await;
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
}
