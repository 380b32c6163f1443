//! Region-level helpers of the test cluster: splitting through the leader, and the
//! checks run after every reshaping: the regions are a gap-free, non-overlapping
//! cover of the key space on every store, and replicas of each region hold
//! identical data (compared by checksum at the same applied index).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use shoal_proto::metapb::Region;
use shoal_raftstore::{CmdError, TickMode};

use super::Cluster;

impl Cluster {
    /// Runs an admin call on every store in turn until one succeeds, retrying
    /// leadership and epoch races until `timeout`; `Invalid` ends it at once. With
    /// manual ticks, every store is ticked while an attempt runs, as a node's timer
    /// would: a merge's steps, and followers learning a commit (it rides on the
    /// next append or heartbeat), wait for ticks.
    fn retry_admin<T, F, Fut>(
        &self,
        timeout: Duration,
        per_try: Duration,
        call: F,
    ) -> Result<T, CmdError>
    where
        T: Send + 'static,
        F: Fn(std::sync::Arc<shoal_raftstore::RaftStore>) -> Fut,
        Fut: std::future::Future<Output = Result<T, CmdError>> + Send + 'static,
    {
        let deadline = Instant::now() + timeout;
        loop {
            let mut last = None;
            for id in self.store_ids() {
                let attempt = call(self.store(id));
                let handle = self
                    .rt
                    .spawn(async move { tokio::time::timeout(per_try, attempt).await });
                let outcome = loop {
                    if handle.is_finished() {
                        break self.rt.block_on(handle).expect("the admin call panicked");
                    }
                    if self.tick_mode == TickMode::Manual {
                        self.tick_all();
                    }
                    std::thread::sleep(Duration::from_millis(5));
                };
                match outcome {
                    Ok(Ok(v)) => return Ok(v),
                    Ok(Err(e @ CmdError::Invalid(_))) => return Err(e),
                    Ok(Err(e)) => last = Some(e),
                    Err(_) => last = Some(CmdError::Dropped("timed out".into())),
                }
            }
            if Instant::now() >= deadline {
                return Err(last.unwrap_or(CmdError::Dropped("no store".into())));
            }
            if self.tick_mode == TickMode::Manual {
                self.tick_all();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Splits the region holding `key` at `key` through its leader. Returns the
    /// resulting regions.
    pub fn split(&self, key: &[u8], timeout: Duration) -> Result<Vec<Region>, CmdError> {
        self.retry_admin(timeout, Duration::from_secs(3), |store| {
            let region = self.region_for(key);
            let key = key.to_vec();
            async move { store.split(region.id, region.region_epoch, vec![key]).await }
        })
    }

    /// Merges `source` into `target` through the source's leader. Returns the
    /// merged target.
    pub fn merge(&self, source: u64, target: u64, timeout: Duration) -> Result<Region, CmdError> {
        self.retry_admin(timeout, Duration::from_secs(35), |store| async move {
            store.merge(source, target).await
        })
    }

    /// Prepares the merge of `source` into `target` through store `id` (the source's
    /// leader), retrying while it is refused as busy (a source replica has not
    /// acknowledged an entry yet).
    pub fn prepare_merge(
        &self,
        id: u64,
        source: &Region,
        target: &Region,
        timeout: Duration,
    ) -> Result<Region, CmdError> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self
                .rt
                .block_on(self.store(id).prepare_merge(source, target.clone()));
            match r {
                Err(CmdError::Region(e))
                    if matches!(
                        e.kind,
                        Some(shoal_proto::errorpb::region_error::Kind::ServerIsBusy(_))
                    ) && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    /// The regions store `id` has peers for, in key order.
    pub fn regions_of(&self, id: u64) -> Vec<Region> {
        self.rt
            .block_on(self.store(id).regions())
            .into_iter()
            .filter_map(|i| i.region)
            .collect()
    }

    /// Waits (ticking when manual) until every store has exactly `n` regions that cover the key space
    /// without gaps or overlaps, and all stores agree on them.
    pub fn wait_cover(&self, n: usize, timeout: Duration) -> Vec<Region> {
        let deadline = Instant::now() + timeout;
        loop {
            let views: Vec<Vec<Region>> = self
                .store_ids()
                .iter()
                .map(|&id| self.regions_of(id))
                .collect();
            let problem = views.iter().find_map(|v| cover_problem(v, n)).or_else(|| {
                let first = &views[0];
                views
                    .iter()
                    .any(|v| v != first)
                    .then(|| "stores disagree on the regions".to_string())
            });
            match problem {
                None => return views[0].clone(),
                Some(p) => assert!(Instant::now() < deadline, "{p}: {views:#?}"),
            }
            if self.tick_mode == TickMode::Manual {
                self.tick_all();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until, for every region, all replicas reach the same applied index, and
    /// checks that their checksums are then equal.
    pub fn check_replicas_agree(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let ids: Vec<u64> = self
            .regions_of(self.store_ids()[0])
            .iter()
            .map(|r| r.id)
            .collect();
        for region_id in ids {
            loop {
                let mut sums = BTreeMap::new();
                for id in self.store_ids() {
                    let c = self
                        .rt
                        .block_on(self.store(id).checksum(region_id))
                        .unwrap_or_else(|e| {
                            panic!("checksum of region {region_id} on store {id}: {e}")
                        });
                    sums.insert(id, (c.applied_index, c.checksum, c.keys));
                }
                let indexes: std::collections::BTreeSet<u64> = sums.values().map(|s| s.0).collect();
                if indexes.len() == 1 {
                    let digests: std::collections::BTreeSet<(u64, u64)> =
                        sums.values().map(|s| (s.1, s.2)).collect();
                    assert_eq!(
                        digests.len(),
                        1,
                        "region {region_id}: replicas differ: {sums:?}"
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "region {region_id}: replicas never reached the same applied index: {sums:?}"
                );
                if self.tick_mode == TickMode::Manual {
                    self.tick_all();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Why `regions` is not a cover of the key space by `n` regions, if it is not.
fn cover_problem(regions: &[Region], n: usize) -> Option<String> {
    if regions.len() != n {
        return Some(format!("{} regions, expected {n}", regions.len()));
    }
    let mut expect_start: &[u8] = b"";
    for (i, r) in regions.iter().enumerate() {
        if r.start_key != expect_start {
            return Some(format!(
                "region {} starts at {:?}, expected {:?}",
                r.id, r.start_key, expect_start
            ));
        }
        let last = i + 1 == regions.len();
        if r.end_key.is_empty() != last {
            return Some(format!("region {} has end {:?}", r.id, r.end_key));
        }
        expect_start = &r.end_key;
    }
    None
}
