//! The admin API's region commands: split and merge. Each checks the request
//! before anything reaches Raft, builds the command with the operation's own
//! helpers (`operation/split.rs`, `operation/merge/`) and proposes it through the
//! region's leader like any write.

use std::time::{Duration, Instant};

use shoal_proto::metapb::{Region, RegionEpoch};
use shoal_proto::raft_cmdpb::{admin_request, PrepareMergeRequest};
use shoal_proto::raft_serverpb::PeerState;
use shoal_proto::RegionExt;

use super::RaftStore;
use crate::error::CmdError;
use crate::operation::command::{admin_cmd, check_epoch};
use crate::operation::merge::check_merge;
use crate::operation::split::{build_batch_split, check_split_keys, check_split_request};
use crate::worker::region::local_state;

/// How long [`RaftStore::merge`] waits for the outcome.
const MERGE_WAIT: Duration = Duration::from_secs(30);

impl RaftStore {
    /// Splits region `region_id` (whose epoch the caller saw as `epoch`) at `keys`.
    /// Must be asked of the region's leader. Returns every region now covering the
    /// parent's old range, in key order.
    pub async fn split(
        &self,
        region_id: u64,
        epoch: Option<RegionEpoch>,
        keys: Vec<Vec<u8>>,
    ) -> Result<Vec<Region>, CmdError> {
        // Bad input first, before any look-up: the limits hold whatever the region.
        check_split_request(&keys)?;
        let region = self.peer_info(region_id).await?.region.unwrap_or_default();
        // A stale epoch first: the keys may be outside only because the caller's
        // view is old, and EpochNotMatch tells it to refresh and retry.
        check_epoch(&region, epoch.as_ref(), true)?;
        check_split_keys(&region, &keys)?;
        let ids = self
            .alloc_ids(keys.len() * (1 + region.peers.len()))
            .await?;
        let split = build_batch_split(&region, &keys, &ids);
        let request = admin_cmd(
            &region,
            self.store_id(),
            epoch,
            admin_request::Cmd::Split(split),
        );
        let mut responses = self.write(request).await?;
        Ok(responses.pop().map(|r| r.regions).unwrap_or_default())
    }

    /// Merges region `source_id` into its neighbour `target_id`; must be asked of the
    /// source's leader, and both regions need peers on the same stores (this one
    /// included). Waits (up to 30 s) for the outcome: the merged target, or an
    /// error saying the merge was rolled back or is still going on.
    pub async fn merge(&self, source_id: u64, target_id: u64) -> Result<Region, CmdError> {
        let source = self.peer_info(source_id).await?.region.unwrap_or_default();
        let target = match self.peer_info(target_id).await {
            Ok(info) => info.region.unwrap_or_default(),
            Err(CmdError::Region(_)) => {
                return Err(CmdError::Invalid(format!(
                    "region {target_id} has no peer on store {}: merge needs both regions on \
                     the same stores",
                    self.store_id()
                )))
            }
            Err(e) => return Err(e),
        };
        for id in [source_id, target_id] {
            if self.kv_state(id).await == Some(PeerState::Merging) {
                return Err(CmdError::Invalid(format!(
                    "region {id} has a merge in progress"
                )));
            }
        }
        let prepared = self.prepare_merge(&source, target).await?;
        self.wait_merged(&source, &prepared, target_id).await
    }

    /// Waits until the target covers the source (merged), the source's version
    /// moved past the prepare (rolled back), or [`MERGE_WAIT`] passed.
    async fn wait_merged(
        &self,
        source: &Region,
        prepared: &Region,
        target_id: u64,
    ) -> Result<Region, CmdError> {
        let source_id = source.id;
        let prepared_version = prepared.region_epoch.unwrap_or_default().version;
        let deadline = Instant::now() + MERGE_WAIT;
        loop {
            if let Ok(info) = self.peer_info(target_id).await {
                let now = info.region.unwrap_or_default();
                if now.covers(source) {
                    return Ok(now);
                }
            }
            if let Ok(info) = self.peer_info(source_id).await {
                let version = info.region.and_then(|r| r.region_epoch).unwrap_or_default();
                if version.version > prepared_version {
                    return Err(CmdError::Invalid(format!(
                        "the merge of region {source_id} into {target_id} was rolled back: \
                         the target changed (split or merge) before the commit"
                    )));
                }
            }
            if Instant::now() >= deadline {
                return Err(CmdError::Undetermined(format!(
                    "the merge of region {source_id} into {target_id} is prepared but not \
                     committed after 30 s; it goes on in the background"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The state this store's kv records for `region_id`, read off the async
    /// runtime's threads.
    async fn kv_state(&self, region_id: u64) -> Option<PeerState> {
        let kv = self.kv()?;
        tokio::task::spawn_blocking(move || local_state(&kv, region_id))
            .await
            .ok()
            .flatten()
    }

    /// Proposes `PrepareMerge` of `source` (as seen) into `target` as
    /// given, and returns the frozen source once the prepare is applied here.
    /// [`RaftStore::merge`] is the whole merge; tests use this step alone to
    /// prepare against a stale target.
    pub async fn prepare_merge(&self, source: &Region, target: Region) -> Result<Region, CmdError> {
        check_merge(source, &target)?;
        let prepare = PrepareMergeRequest {
            min_index: 0,
            target: Some(target),
        };
        let request = admin_cmd(
            source,
            self.store_id(),
            source.region_epoch,
            admin_request::Cmd::PrepareMerge(prepare),
        );
        let mut responses = self.write(request).await?;
        Ok(responses
            .pop()
            .and_then(|r| r.regions.into_iter().next())
            .unwrap_or_default())
    }
}
