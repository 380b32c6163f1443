//! The admin API's membership commands: [`RaftStore::change_peer`] (by store: the
//! peers' ids are found or allocated here) and [`RaftStore::transfer_leader`]. Both
//! are asked of the region's leader and wait for their effect there.

use std::time::{Duration, Instant};

use shoal_proto::metapb::{ChangeKind, Peer, PeerChange, PeerRole, Region, RegionEpoch};
use shoal_proto::raft_cmdpb::{admin_request, ChangePeerRequest};
use shoal_proto::RegionExt;
use tokio::sync::oneshot;

use super::RaftStore;
use crate::error::CmdError;
use crate::msg::PeerMsg;
use crate::operation::command::{admin_cmd, check_epoch};

/// How long [`RaftStore::change_peer`] waits for a joint configuration to be
/// left, and [`RaftStore::transfer_leader`] for the new leader.
const WAIT: Duration = Duration::from_secs(10);

impl RaftStore {
    /// Changes the membership of `region_id` (whose epoch the caller saw as
    /// `epoch`, when given): each `(kind, store)` adds a voter or a learner on the
    /// store (promoting or demoting the replica already there), or removes the
    /// store's replica. Two or more changes go through a joint configuration,
    /// which the leader leaves on its own; this answers once that is applied
    /// here, with the region as it is then.
    pub async fn change_peer(
        &self,
        region_id: u64,
        epoch: Option<RegionEpoch>,
        changes: Vec<(ChangeKind, u64)>,
    ) -> Result<Region, CmdError> {
        if changes.is_empty() {
            return Err(CmdError::Invalid("no membership change given".into()));
        }
        let region = self.peer_info(region_id).await?.region.unwrap_or_default();
        if let Some(e) = epoch.as_ref() {
            check_epoch(&region, Some(e), true)?;
        }
        let new = changes
            .iter()
            .filter(|(k, s)| *k != ChangeKind::Remove && region.peer_on_store(*s).is_none())
            .count();
        let mut ids = match new {
            0 => Vec::new(),
            n => self.alloc_ids(n).await?,
        }
        .into_iter();
        let mut peer_changes = Vec::with_capacity(changes.len());
        for (kind, store_id) in changes {
            let peer = match (region.peer_on_store(store_id), kind) {
                (Some(p), _) => *p,
                (None, ChangeKind::Remove) => {
                    return Err(CmdError::Invalid(format!(
                        "region {region_id} has no replica on store {store_id}"
                    )))
                }
                (None, _) => Peer {
                    id: ids.next().expect("an id per new peer"),
                    store_id,
                    role: PeerRole::Voter as i32,
                },
            };
            peer_changes.push(PeerChange {
                kind: kind as i32,
                peer: Some(peer),
            });
        }
        let request = admin_cmd(
            &region,
            self.store_id(),
            epoch.or(region.region_epoch),
            admin_request::Cmd::ChangePeer(ChangePeerRequest {
                changes: peer_changes,
            }),
        );
        let mut responses = self.write(request).await?;
        let changed = responses
            .pop()
            .and_then(|r| r.regions.into_iter().next())
            .unwrap_or_default();
        if !changed.is_joint() {
            return Ok(changed);
        }
        let entered = changed.region_epoch.unwrap_or_default().conf_ver;
        let left = self
            .watch_region(region_id, |info| {
                let now = info.region.clone().unwrap_or_default();
                let left =
                    !now.is_joint() && now.region_epoch.unwrap_or_default().conf_ver > entered;
                left.then_some(now)
            })
            .await;
        left.ok_or_else(|| {
            CmdError::Undetermined(format!(
                "region {region_id} entered the joint configuration but has not left it \
                 after {WAIT:?}; its leader leaves it in the background"
            ))
        })
    }

    /// What `seen` makes of this store's view of the region, polled until it
    /// says something, for [`WAIT`] at most.
    async fn watch_region<T>(
        &self,
        region_id: u64,
        seen: impl Fn(&shoal_proto::adminpb::RegionInfo) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = self
                .peer_info(region_id)
                .await
                .ok()
                .as_ref()
                .and_then(&seen)
            {
                return Some(v);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Makes the region's replica on `to_store` its leader; answers with the new
    /// leader once this store's replica sees it elected.
    pub async fn transfer_leader(&self, region_id: u64, to_store: u64) -> Result<Peer, CmdError> {
        let (tx, rx) = oneshot::channel();
        self.send_to_region(
            region_id,
            PeerMsg::TransferLeader {
                to_store,
                reply: tx,
            },
        )?;
        let target = rx
            .await
            .map_err(|_| CmdError::Undetermined("the store stopped before answering".into()))??;
        let elected = self
            .watch_region(region_id, |info| {
                info.leader
                    .is_some_and(|l| l.id == target.id)
                    .then_some(target)
            })
            .await;
        elected.ok_or_else(|| {
            CmdError::Undetermined(format!(
                "region {region_id}: store {to_store}'s replica was not elected within {WAIT:?}"
            ))
        })
    }
}
