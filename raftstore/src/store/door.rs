//! The store's door: every request enters here and reaches its region's mailbox,
//! checked first (a request for another store is refused; a region whose mailbox
//! is full refuses new client requests with `ServerIsBusy`, so memory stays
//! bounded when a region cannot keep up). Answers come back on a oneshot channel.
//! Whatever is disk IO on the caller's side (a read's point lookup, RocksDB's size
//! estimate, the id allocator's synced write) runs here or on a blocking thread of
//! the async runtime, never on a poller.

use shoal_engine::keys::{data_end_key, data_key};
use shoal_engine::rocks::RocksKvEngine;
use shoal_engine::{Cf, KvEngine};
use shoal_proto::adminpb::{ChecksumResponse, RegionInfo};
use shoal_proto::raft_cmdpb::{RaftCmdRequest, RaftRequestHeader};
use shoal_proto::raft_serverpb::RaftMessage;
use tokio::sync::oneshot;

use super::RaftStore;
use crate::error::{region_not_found, server_busy, store_not_match, CmdError, WriteResult};
use crate::metrics::StoreMetrics;
use crate::msg::{Command, PeerMsg, ReadRequest, StoreMsg};
use crate::operation::read::{self, ReadKind, ReadOutput};
use crate::raft::wire::{self, WireError};

impl RaftStore {
    /// Delivers a raft message from another store. A message whose raft-rs bytes
    /// the wire check refuses (`raft/wire.rs`), or one for another store, is
    /// dropped (and counted) here, before anything parses it; the peer checks the
    /// rest.
    pub fn on_raft_message(&self, msg: RaftMessage) {
        // (A snapshot's message passed the same check when its receive began,
        // before any of its files was written.)
        if let Err(e) = self.check_wire(&msg) {
            crate::warn_limited!(
                store = self.store_id,
                region = msg.region_id,
                "dropping a raft message its schema does not allow: {e}"
            );
            return;
        }
        let to_store = msg.to_peer.as_ref().map_or(0, |p| p.store_id);
        if to_store != self.store_id {
            crate::warn_limited!(
                store = self.store_id,
                region = msg.region_id,
                to_store,
                "dropping a raft message addressed to another store"
            );
            StoreMetrics::add(&self.metrics.raft_messages_refused, 1);
            return;
        }
        if let Some((from, incarnation)) = super::liveness::as_heartbeat(&msg) {
            return self.on_store_heartbeat(from, incarnation);
        }
        let region_id = msg.region_id;
        if let Err(e) = self.router.send(region_id, PeerMsg::Raft(Box::new(msg))) {
            if let PeerMsg::Raft(m) = e.into_inner() {
                let _ = self.router.send_control(StoreMsg::Raft(m));
            }
        }
    }

    /// The wire check of a message's raft-rs bytes; a refusal is counted.
    pub(crate) fn check_wire(&self, msg: &RaftMessage) -> Result<(), WireError> {
        wire::check_message(&msg.message).inspect_err(|_| {
            StoreMetrics::add(&self.metrics.raft_messages_malformed, 1);
        })
    }

    /// Another store is alive (store liveness); if it restarted, the dormant
    /// regions it led here wake.
    fn on_store_heartbeat(&self, from: u64, incarnation: u64) {
        let Some(ctx) = self.ctx.as_deref() else {
            return;
        };
        ctx.metrics.store_heartbeats_received.inc();
        let (woken, back) = ctx.liveness.heard(from, incarnation);
        // Followers whose failover wakes were still queued: their peers find
        // the store up and watch it again (store/liveness.rs).
        for w in back {
            let _ = self.router.send(w.region, PeerMsg::Wake(w));
        }
        if woken > 0 {
            tracing::info!(
                store = self.store_id,
                restarted = from,
                regions = woken,
                "store liveness: a store restarted; waking the dormant regions it led"
            );
        }
    }

    /// Replicates and applies a write; answers once applied.
    pub async fn write(&self, request: RaftCmdRequest) -> WriteResult {
        let header = request.header.unwrap_or_default();
        self.check_header(&header)?;
        let (tx, rx) = oneshot::channel();
        let cmd = PeerMsg::Command(Command { request, reply: tx });
        self.send_request(header.region_id, cmd)?;
        rx.await.unwrap_or_else(|_| {
            Err(CmdError::Undetermined(
                "the store stopped before answering".into(),
            ))
        })
    }

    /// A linearizable read through ReadIndex: the region's leader confirms it and
    /// hands back a snapshot, which is read here (a get) or on the read pool (a scan).
    pub async fn read(
        &self,
        header: RaftRequestHeader,
        kind: ReadKind,
    ) -> Result<ReadOutput, CmdError> {
        let region_id = header.region_id;
        self.check_header(&header)?;
        let (tx, rx) = oneshot::channel();
        let key = kind.start_key().to_vec();
        let request = ReadRequest {
            header,
            key,
            reply: tx,
        };
        self.send_request(region_id, PeerMsg::Read(request))?;
        let snapshot = rx.await.unwrap_or_else(|_| Err(stopped()))?;
        let pool = &self.context()?.read_pool;
        read::execute(region_id, kind, snapshot, pool).await
    }

    /// The region, its leader and size, as this store's peer knows them.
    pub async fn region_info(&self, region_id: u64) -> Result<RegionInfo, CmdError> {
        let info = self.peer_info(region_id).await?;
        Ok(self.with_sizes(vec![info]).await.pop().unwrap_or_default())
    }

    /// Every region of this store, in key order.
    pub async fn regions(&self) -> Vec<RegionInfo> {
        let mut rxs = Vec::new();
        self.router.broadcast(|| {
            let (tx, rx) = oneshot::channel();
            rxs.push(rx);
            PeerMsg::Info(tx)
        });
        let mut out = Vec::with_capacity(rxs.len());
        for rx in rxs {
            if let Ok(info) = rx.await {
                out.push(info);
            }
        }
        out.sort_by(|a, b| {
            let key = |i: &RegionInfo| i.region.as_ref().map(|r| r.start_key.clone());
            key(a).cmp(&key(b))
        });
        self.with_sizes(out).await
    }

    /// What the region's peer knows (no engine read: the size is the last split
    /// check's).
    pub(crate) async fn peer_info(&self, region_id: u64) -> Result<RegionInfo, CmdError> {
        let (tx, rx) = oneshot::channel();
        self.send_to_region(region_id, PeerMsg::Info(tx))?;
        rx.await.map_err(|_| stopped())
    }

    /// Raises each region's size to RocksDB's estimate of its SST files when that is
    /// larger (the split check counts memtables too, and the keys), off the async
    /// runtime's threads.
    async fn with_sizes(&self, infos: Vec<RegionInfo>) -> Vec<RegionInfo> {
        let Some(kv) = self.kv() else { return infos };
        let unsized_infos = infos.clone();
        let estimate = move || {
            let mut infos = infos;
            for info in &mut infos {
                let r = info.region.clone().unwrap_or_default();
                let (start, end) = (data_key(&r.start_key), data_end_key(&r.end_key));
                let sst = kv.approximate_size(Cf::Default, &start, &end);
                info.approximate_size = info.approximate_size.max(sst.unwrap_or_default());
            }
            infos
        };
        // Should the estimate fail (a panic in RocksDB's call), the regions are
        // still reported, with the split check's sizes.
        tokio::task::spawn_blocking(estimate)
            .await
            .unwrap_or(unsized_infos)
    }

    /// `n` fresh region and peer ids, allocated on a blocking thread (the
    /// allocator may sync).
    pub(crate) async fn alloc_ids(&self, n: usize) -> Result<Vec<u64>, CmdError> {
        let ids = self.ids.clone();
        tokio::task::spawn_blocking(move || ids.alloc(n))
            .await
            .map_err(|e| CmdError::Storage(format!("id allocation stopped: {e}")))?
    }

    /// Tells every leader that `store_id` cannot be reached, so raft-rs stops
    /// pipelining appends to its peers until they answer again.
    pub fn report_unreachable(&self, store_id: u64) {
        let Some(ctx) = self.ctx.as_deref() else {
            return;
        };
        let leaders: Vec<u64> = ctx.awake_leaders.lock().iter().copied().collect();
        for region_id in leaders {
            let _ = self
                .router
                .send(region_id, PeerMsg::StoreUnreachable(store_id));
        }
    }

    /// Asks a region's peer to campaign now.
    pub fn campaign(&self, region_id: u64) -> Result<(), CmdError> {
        self.send_to_region(region_id, PeerMsg::Campaign)
    }

    /// A digest of this store's replica of `region_id`.
    pub async fn checksum(&self, region_id: u64) -> Result<ChecksumResponse, CmdError> {
        let (tx, rx) = oneshot::channel();
        self.send_to_region(region_id, PeerMsg::Checksum(tx))?;
        rx.await.map_err(|_| stopped())?
    }

    /// The kv engine, while the store runs.
    pub(crate) fn kv(&self) -> Option<RocksKvEngine> {
        self.ctx.as_ref().map(|c| c.kv.clone())
    }

    fn context(&self) -> Result<&super::StoreContext, CmdError> {
        self.ctx.as_deref().ok_or_else(stopped)
    }

    /// A request naming a peer on another store is refused (`StoreNotMatch`): the
    /// client's view of the cluster is wrong.
    fn check_header(&self, header: &RaftRequestHeader) -> Result<(), CmdError> {
        match header.peer {
            Some(p) if p.store_id != self.store_id => {
                Err(store_not_match(p.store_id, self.store_id))
            }
            _ => Ok(()),
        }
    }

    /// Sends a client request to its region's mailbox, unless the mailbox already
    /// holds `max_pending_proposals` messages.
    fn send_request(&self, region_id: u64, msg: PeerMsg) -> Result<(), CmdError> {
        if let Some(mb) = self.router.mailbox(region_id) {
            if mb.len() >= self.max_mailbox {
                let why = "too many requests queued for the region";
                return Err(server_busy(region_id, why));
            }
        }
        self.send_to_region(region_id, msg)
    }

    pub(crate) fn send_to_region(&self, region_id: u64, msg: PeerMsg) -> Result<(), CmdError> {
        self.router
            .send(region_id, msg)
            .map_err(|_| region_not_found(region_id))
    }
}

fn stopped() -> CmdError {
    CmdError::Dropped("the store stopped before answering".into())
}
