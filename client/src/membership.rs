//! Reshaping where replicas live: membership changes and leader transfers (one
//! request each, to the region's leader), and the operators' procedures built on
//! them: moving a replica between stores and emptying a store. Each procedure
//! looks at the region first and skips what is already done, so it can be run
//! again after an interruption.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use shoal_proto::adminpb::{
    ChangePeerRequest, ListRegionsRequest, RegionInfo, StoreChange, TransferLeaderRequest,
};
use shoal_proto::metapb::{ChangeKind, Peer, PeerRole, Region, Store, StoreState};
use shoal_proto::RegionExt;

use crate::client::Client;
use crate::discovery::admin_client;
use crate::error::{Error, Result};
use crate::request::{Idempotence, RouteBy};

/// How long [`Client::move_replica`] waits for a new replica to catch up.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(300);

/// How long [`Client::move_replica`] waits for a region it finds in a joint
/// configuration to leave it (its leader does so on its own once the joint
/// entry is applied).
pub const JOINT_LEAVE_TIMEOUT: Duration = Duration::from_secs(60);

/// A new learner counts as caught up within this many entries of the leader's
/// applied index (as it was when the learner was added, or later).
const CAUGHT_UP_LAG: u64 = 0;

fn role_of(region: &Region, store: u64) -> Option<PeerRole> {
    region
        .peer_on_store(store)
        .map(|p| PeerRole::try_from(p.role).unwrap_or(PeerRole::Voter))
}

impl Client {
    /// Changes region `region_id`'s membership: each `(kind, store)` adds a voter
    /// or learner on the store (promoting or demoting a replica already there) or
    /// removes the store's replica; two or more go through a joint configuration.
    /// Sent to the leader with the region's epoch; not retried once its outcome is
    /// unknown ([`Error::Undetermined`]: look at the region to learn what happened).
    /// Returns the region after the change.
    pub async fn change_peer(
        &self,
        region_id: u64,
        changes: &[(ChangeKind, u64)],
    ) -> Result<Region> {
        let max_msg = self.inner.config.max_message_size;
        let changes: Vec<StoreChange> = changes
            .iter()
            .map(|(kind, store_id)| StoreChange {
                kind: *kind as i32,
                store_id: *store_id,
            })
            .collect();
        let done = self
            .inner
            .execute_with(
                "change_peer",
                RouteBy::Region(region_id),
                Idempotence::NotIdempotent,
                |channel, at| {
                    let req = ChangePeerRequest {
                        region_id,
                        region_epoch: at.region.region_epoch,
                        changes: changes.clone(),
                    };
                    async move { admin_client(channel, max_msg).change_peer(req).await }
                },
            )
            .await?;
        let region = done.resp.region.ok_or(Error::RegionNotFound {
            op: "change_peer",
            region_id,
        })?;
        self.inner.cache.write().insert(region.clone(), None);
        Ok(region)
    }

    /// Makes region `region_id`'s replica on `to_store` its leader; answers once it
    /// is elected. Returns the new leader.
    pub async fn transfer_leader(&self, region_id: u64, to_store: u64) -> Result<Peer> {
        let max_msg = self.inner.config.max_message_size;
        let done = self
            .inner
            .execute(
                "transfer_leader",
                RouteBy::Region(region_id),
                |channel, at| {
                    let already = at.peer.store_id == to_store;
                    let peer = at.peer;
                    let req = TransferLeaderRequest {
                        region_id,
                        to_store_id: to_store,
                    };
                    async move {
                        let mut resp = admin_client(channel, max_msg).transfer_leader(req).await;
                        // Asked of a store that turned out to be the target already.
                        if already {
                            if let Ok(r) = &mut resp {
                                r.get_mut().leader.get_or_insert(peer);
                            }
                        }
                        resp
                    }
                },
            )
            .await?;
        let leader = done.resp.leader.ok_or(Error::RegionNotFound {
            op: "transfer_leader",
            region_id,
        })?;
        self.inner.cache.write().set_leader(region_id, leader);
        Ok(leader)
    }

    /// Every region of the cluster with its leader's view, gathered from every
    /// store of `stores` that answers (a store lists only its own replicas), the
    /// newest view of each region kept. Also returns which stores answered.
    pub async fn cluster_regions(&self, stores: &[Store]) -> (Vec<RegionInfo>, Vec<u64>) {
        let mut best: HashMap<u64, RegionInfo> = HashMap::new();
        let mut answered = Vec::new();
        for s in stores {
            if s.state == StoreState::Removed as i32 {
                continue;
            }
            let Ok(channel) = self.inner.channel(&s.address) else {
                continue;
            };
            let mut admin = admin_client(channel, self.inner.config.max_message_size);
            let call = admin.list_regions(ListRegionsRequest {});
            let Ok(Ok(resp)) = tokio::time::timeout(self.inner.config.rpc_timeout, call).await
            else {
                continue;
            };
            answered.push(s.id);
            for info in resp.into_inner().regions {
                let Some(region) = info.region.as_ref() else {
                    continue;
                };
                let epoch = |i: &RegionInfo| {
                    let e = i
                        .region
                        .as_ref()
                        .and_then(|r| r.region_epoch)
                        .unwrap_or_default();
                    (e.version, e.conf_ver, i.leader.is_some())
                };
                let newer = best.get(&region.id).is_none_or(|b| epoch(&info) > epoch(b));
                if newer {
                    best.insert(region.id, info);
                }
            }
        }
        let mut out: Vec<RegionInfo> = best.into_values().collect();
        out.sort_by(|a, b| {
            let key = |i: &RegionInfo| i.region.as_ref().map(|r| r.start_key.clone());
            key(a).cmp(&key(b))
        });
        (out, answered)
    }

    /// Moves region `region_id`'s replica from store `from` to store `to`: a
    /// learner on `to`, caught up (from a snapshot); then, when `from` holds a
    /// voter, one joint change promoting the learner and demoting `from`; then
    /// `from`'s replica removed. A learner moves as a learner: the region's voters,
    /// and so its quorum, stay as they are. If `from` leads, the leadership goes to
    /// another voter first. A region found in a joint configuration (a move
    /// interrupted inside its joint change) is waited for until its leader has
    /// left it ([`JOINT_LEAVE_TIMEOUT`] at most), then the move goes on. `progress`
    /// hears each step. Works with `from` down (the joint configuration keeps a
    /// quorum when the others are up). Returns the region afterwards.
    pub async fn move_replica(
        &self,
        region_id: u64,
        from: u64,
        to: u64,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Region> {
        if from == to {
            return Err(Error::InvalidArgument(format!(
                "moving region {region_id}'s replica from store {from} to itself"
            )));
        }
        let info = self.settled_region(region_id, progress).await?;
        let region = info.region.clone().unwrap_or_default();
        let Some(moving) = role_of(&region, from) else {
            // Done already (a voter's move or a learner's), or nothing to move.
            return match role_of(&region, to) {
                Some(_) => Ok(region),
                None => Err(Error::InvalidArgument(format!(
                    "region {region_id} has no replica on store {from}"
                ))),
            };
        };
        // A learner on `from` with a voter on `to` is a voter's move past its joint
        // change (`from` demoted): only the removal is left.
        let as_learner =
            moving == PeerRole::Learner && role_of(&region, to) != Some(PeerRole::Voter);
        if info.leader.is_some_and(|l| l.store_id == from) {
            let other = region.peers.iter().find(|p| {
                p.store_id != from && p.store_id != to && p.role == PeerRole::Voter as i32
            });
            let Some(other) = other else {
                return Err(Error::InvalidArgument(format!(
                    "region {region_id}: store {from} leads and no other voter can take over"
                )));
            };
            progress(&format!(
                "region {region_id}: leadership from store {from} to store {}",
                other.store_id
            ));
            self.transfer_leader(region_id, other.store_id).await?;
        }
        if role_of(&region, to).is_none() {
            progress(&format!(
                "region {region_id}: adding a learner on store {to}"
            ));
            self.change_peer(region_id, &[(ChangeKind::AddLearner, to)])
                .await?;
        }
        let region = self.wait_caught_up(region_id, to, progress).await?;
        let mut changes = Vec::new();
        if !as_learner && role_of(&region, to) != Some(PeerRole::Voter) {
            changes.push((ChangeKind::AddVoter, to));
        }
        if role_of(&region, from) == Some(PeerRole::Voter) {
            changes.push((ChangeKind::AddLearner, from));
        }
        if !changes.is_empty() {
            progress(&format!(
                "region {region_id}: promoting store {to}, demoting store {from}"
            ));
            self.change_peer(region_id, &changes).await?;
        }
        progress(&format!(
            "region {region_id}: removing store {from}'s replica"
        ));
        self.change_peer(region_id, &[(ChangeKind::Remove, from)])
            .await
    }

    /// The region as its leader sees it, once it is in no joint configuration: a
    /// region still joint (a change interrupted after it entered one, e.g. an
    /// `Undetermined` answer) is looked at again until its leader has left it,
    /// which the leader does on its own; no change could be made meanwhile.
    async fn settled_region(
        &self,
        region_id: u64,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<RegionInfo> {
        let deadline = Instant::now() + JOINT_LEAVE_TIMEOUT;
        let mut told = false;
        loop {
            let info = self.region(region_id).await?;
            if !info.region.as_ref().is_some_and(|r| r.is_joint()) {
                return Ok(info);
            }
            if !told {
                progress(&format!(
                    "region {region_id} is in a joint configuration; waiting for its \
                     leader to leave it"
                ));
                told = true;
            }
            if Instant::now() >= deadline {
                return Err(Error::InvalidArgument(format!(
                    "region {region_id} is still in a joint configuration after \
                     {JOINT_LEAVE_TIMEOUT:?}: its leader has not left it"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until store `to`'s replica of the region has applied what the leader
    /// had applied when the wait began; returns the region as the leader sees it.
    async fn wait_caught_up(
        &self,
        region_id: u64,
        to: u64,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Region> {
        let target = self.region(region_id).await?.applied_index;
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        let mut reported = Instant::now();
        loop {
            // The store's address, once the answering node's directory copy has it.
            let (_, stores) = self.list_regions().await?;
            let addr = stores
                .iter()
                .find(|s| s.id == to && !s.address.is_empty())
                .map(|s| s.address.clone());
            let replica = match addr {
                Some(addr) => self.replica(&addr, region_id).await.ok(),
                None => None,
            };
            if let Some(replica) = replica {
                if replica.applied_index + CAUGHT_UP_LAG >= target {
                    let info = self.settled_region(region_id, progress).await?;
                    return Ok(info.region.unwrap_or_default());
                }
                if reported.elapsed() >= Duration::from_secs(2) {
                    progress(&format!(
                        "region {region_id}: store {to} applied {} of {target}",
                        replica.applied_index
                    ));
                    reported = Instant::now();
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::InvalidArgument(format!(
                    "region {region_id}: store {to}'s replica did not catch up within \
                     {CATCH_UP_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Client {
    /// Empties store `store_id` and marks it removed in the cluster directory
    /// (through a node's Admin service: `stores`, `set_store_state`): it is marked
    /// offline (no new replicas), then each region with a replica on it has that replica moved to
    /// the up store holding the fewest replicas among those without one of that
    /// region, then the store is marked removed. Re-running it resumes. `progress`
    /// hears each step.
    pub async fn remove_store(
        &self,
        store_id: u64,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<()> {
        let stores = self.stores().await?;
        let Some(store) = stores.iter().find(|s| s.id == store_id) else {
            return Err(Error::InvalidArgument(format!(
                "the cluster has no store {store_id}"
            )));
        };
        if store.state == StoreState::Removed as i32 {
            progress(&format!("store {store_id} is already removed"));
            return Ok(());
        }
        self.set_store_state(store_id, StoreState::Offline).await?;
        progress(&format!(
            "store {store_id} is offline: no new replicas go to it"
        ));
        let client = self;
        loop {
            let stores = self.stores().await?;
            let (regions, answered) = client.cluster_regions(&stores).await;
            // A region known only to stores that did not answer would be missed.
            let silent: Vec<u64> = stores
                .iter()
                .filter(|s| s.state == StoreState::Up as i32 && s.id != store_id)
                .map(|s| s.id)
                .filter(|id| !answered.contains(id))
                .collect();
            if !silent.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "stores {silent:?} did not list their regions: whether they hold a \
                     region that store {store_id} still has cannot be told; run this again \
                     once they answer (or remove them first)"
                )));
            }
            let on_store: Vec<Region> = regions
                .iter()
                .filter_map(|i| i.region.clone())
                .filter(|r| r.peer_on_store(store_id).is_some())
                .collect();
            if on_store.is_empty() {
                break;
            }
            let mut load: HashMap<u64, usize> = stores
                .iter()
                .filter(|s| s.state == StoreState::Up as i32 && s.id != store_id)
                .map(|s| (s.id, 0))
                .collect();
            for r in regions.iter().filter_map(|i| i.region.as_ref()) {
                for p in &r.peers {
                    if let Some(n) = load.get_mut(&p.store_id) {
                        *n += 1;
                    }
                }
            }
            let total = on_store.len();
            for (i, region) in on_store.into_iter().enumerate() {
                let target = load
                    .iter()
                    .filter(|(id, _)| region.peer_on_store(**id).is_none())
                    .min_by_key(|(id, n)| (**n, **id))
                    .map(|(id, _)| *id);
                let Some(target) = target else {
                    return Err(Error::InvalidArgument(format!(
                        "region {} has a replica on every up store but {store_id}: add a \
                         store (shoal node --join) before removing this one",
                        region.id
                    )));
                };
                progress(&format!(
                    "moving region {} from store {store_id} to store {target} ({}/{total})",
                    region.id,
                    i + 1
                ));
                client
                    .move_replica(region.id, store_id, target, progress)
                    .await?;
                *load.entry(target).or_default() += 1;
            }
        }
        self.set_store_state(store_id, StoreState::Removed).await?;
        progress(&format!(
            "store {store_id} holds no replica; marked removed"
        ));
        Ok(())
    }
}
