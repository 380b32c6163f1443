//! [`RaftStore`]: starts and stops everything of one store (pollers, log writer,
//! apply workers, ticker), loads its peers, and is the door for requests.

use std::sync::Arc;
use std::thread::JoinHandle;

use shoal_engine::keys::{apply_state_key, decode_region_meta_key, region_meta_range};
use shoal_engine::rocks::Engines;
use shoal_engine::{Cf, KvRead, LogEngine};
use shoal_proto::adminpb::{ChecksumResponse, RegionInfo, StoreCounters};
use shoal_proto::metapb::{Region, RegionEpoch};
use shoal_proto::raft_cmdpb::{
    admin_request, PrepareMergeRequest, RaftCmdRequest, RaftRequestHeader,
};
use shoal_proto::raft_serverpb::{PeerState, RaftApplyState, RaftMessage, RegionLocalState};
use shoal_proto::Message;
use shoal_router::{create_system, BatchSystem, Ticker, TickerThread};
use tokio::sync::oneshot;

use crate::apply;
use crate::cmd::admin_cmd;
use crate::config::Config;
use crate::fsm::{PeerFsm, StoreFsm, StoreRouter};
use crate::log_writer::{self, LogWriter};
use crate::metrics::StoreMetrics;
use crate::msg::{
    CmdError, Command, PeerMsg, PeerTick, ReadKind, ReadOutput, ReadRequest, StoreMsg, WriteResult,
};
use crate::poll::{RaftPoller, StoreContext};
use crate::read_pool::ReadPool;
use crate::storage::INIT_INDEX;
use crate::transport::Transport;
use crate::{merge, split, split_check};

/// Who drives the Raft ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TickMode {
    /// A ticker thread, every `raft_tick_interval`.
    Timer,
    /// The caller, through [`RaftStore::tick`] (tests).
    Manual,
}

/// A running store.
pub struct RaftStore {
    store_id: u64,
    router: StoreRouter,
    system: BatchSystem<PeerFsm, StoreFsm>,
    ticker: Ticker<PeerTick>,
    ticker_thread: Option<TickerThread>,
    ctx: Option<Arc<StoreContext>>,
    threads: Vec<JoinHandle<()>>,
    metrics: Arc<StoreMetrics>,
    ids: Arc<split::IdAllocator>,
    /// Messages a region's mailbox may hold before client requests are refused.
    max_mailbox: usize,
}

/// Everything persisted about one region in `kv/` meta.
fn load_regions(kv: &impl KvRead) -> Result<Vec<(RegionLocalState, RaftApplyState)>, String> {
    let (start, end) = region_meta_range();
    let mut states = Vec::new();
    let mut err = None;
    kv.for_each(Cf::Meta, &start, &end, &mut |k, v| {
        if let Some((_, true)) = decode_region_meta_key(k) {
            match RegionLocalState::decode(v) {
                Ok(s) => states.push(s),
                Err(e) => {
                    err = Some(format!("region state record: {e}"));
                    return false;
                }
            }
        }
        true
    })
    .map_err(|e| e.to_string())?;
    if let Some(e) = err {
        return Err(e);
    }
    let mut out = Vec::new();
    for s in states {
        // Tombstones (merged away) stay down; a frozen merge source comes back
        // frozen and its leader drives the merge on.
        if s.state != PeerState::Normal as i32 && s.state != PeerState::Merging as i32 {
            continue;
        }
        let id = s.region.as_ref().map_or(0, |r| r.id);
        let apply = kv
            .get(Cf::Meta, &apply_state_key(id))
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("region {id} has no apply state"))?;
        let apply = RaftApplyState::decode(apply.as_slice())
            .map_err(|e| format!("region {id} apply state: {e}"))?;
        out.push((s, apply));
    }
    Ok(out)
}

impl RaftStore {
    /// Starts store `store_id` over `engines` (already bootstrapped) and loads its peers.
    pub fn start(
        store_id: u64,
        cfg: Config,
        engines: Engines,
        transport: Arc<dyn Transport>,
        tick_mode: TickMode,
    ) -> Result<RaftStore, String> {
        cfg.validate()?;
        let metrics = Arc::new(StoreMetrics::default());
        let router_cfg = shoal_router::Config {
            pollers: cfg.pollers,
            max_batch_size: cfg.max_batch_size,
            ..shoal_router::Config::default()
        };
        let (router, mut system) = create_system(&router_cfg, Box::new(StoreFsm { store_id }))
            .map_err(|e| e.to_string())?;
        let log: Arc<dyn LogEngine> = engines.log.clone();
        let mut threads = Vec::new();
        let (writer_tx, writer_rx) = crossbeam_channel::unbounded();
        let writer = LogWriter {
            log: log.clone(),
            metrics: metrics.clone(),
            transport: transport.clone(),
        };
        let r = router.clone();
        threads.push(spawn(format!("shoal-log-writer-{store_id}"), move || {
            log_writer::run(writer_rx, writer, r)
        })?);
        let mut apply_txs = Vec::new();
        for i in 0..cfg.apply_workers {
            let (tx, rx) = crossbeam_channel::unbounded();
            let (kv, r, m) = (engines.kv.clone(), router.clone(), metrics.clone());
            let log = log.clone();
            threads.push(spawn(format!("shoal-apply-{store_id}-{i}"), move || {
                apply::run(rx, kv, log, r, m)
            })?);
            apply_txs.push(tx);
        }
        let ticker = Ticker::default();
        let ids = Arc::new(split::IdAllocator::open(engines.kv.clone(), store_id)?);
        let (check_tx, check_rx) = crossbeam_channel::unbounded();
        let limits = split_check::Limits {
            max_size: cfg.region_max_size,
            max_keys: cfg.region_max_keys,
        };
        let (kv, r) = (engines.kv.clone(), router.clone());
        threads.push(spawn(format!("shoal-split-check-{store_id}"), move || {
            split_check::run(check_rx, kv, r, limits)
        })?);
        let (read_pool, read_threads) = ReadPool::start(
            &format!("shoal-read-{store_id}"),
            cfg.read_pool_threads,
            cfg.read_pool_queue,
        )?;
        threads.extend(read_threads);
        let ctx = Arc::new(StoreContext {
            store_id,
            cfg: cfg.clone(),
            log: log.clone(),
            kv: engines.kv.clone(),
            metrics: metrics.clone(),
            transport,
            writer: writer_tx,
            apply: apply_txs,
            router: router.clone(),
            ticker: ticker.clone(),
            ids: ids.clone(),
            split_check: check_tx,
            read_pool,
        });
        for (state, apply_state) in load_regions(&engines.kv)? {
            let region = state.region.unwrap_or_default();
            let mut raft_state = match log.raft_state(region.id).map_err(|e| e.to_string())? {
                Some(s) => s,
                // A region split off just before a crash: its first ready never ran.
                None if apply_state.applied_index == INIT_INDEX => split::initial_raft_state(),
                None => {
                    return Err(format!(
                        "region {} has no raft state in the log engine",
                        region.id
                    ))
                }
            };
            // The commit index is persisted lazily; what was applied was committed.
            let hs = raft_state.hard_state.get_or_insert_with(Default::default);
            hs.commit = hs.commit.max(apply_state.applied_index);
            let merging = state
                .merge_state
                .filter(|_| state.state == PeerState::Merging as i32);
            split::start_peer(&ctx, region, raft_state, apply_state, merging, false)?;
        }
        let poll_ctx = ctx.clone();
        system
            .spawn(&format!("shoal-poll-{store_id}"), move |_| {
                RaftPoller::new(poll_ctx.clone())
            })
            .map_err(|e| e.to_string())?;
        let ticker_thread = match tick_mode {
            TickMode::Manual => None,
            TickMode::Timer => {
                let r = router.clone();
                Some(
                    ticker
                        .spawn(
                            &format!("shoal-tick-{store_id}"),
                            cfg.raft_tick_interval,
                            move |id, kind| r.send(id, PeerMsg::Tick(kind)).is_ok(),
                        )
                        .map_err(|e| e.to_string())?,
                )
            }
        };
        Ok(RaftStore {
            store_id,
            router,
            system,
            ticker,
            ticker_thread,
            ctx: Some(ctx),
            threads,
            metrics,
            ids,
            max_mailbox: cfg.max_pending_proposals,
        })
    }

    /// This store's id.
    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    /// The router (to deliver raft messages, say).
    pub fn router(&self) -> &StoreRouter {
        &self.router
    }

    /// Advances the ticker one tick (manual tick mode).
    pub fn tick(&self) {
        let r = &self.router;
        self.ticker
            .advance(|id, kind| r.send(id, PeerMsg::Tick(kind)).is_ok());
    }

    /// Delivers a raft message from another store. A message for another store is
    /// dropped (and counted) here; the peer checks the rest (see `Peer::step`).
    pub fn on_raft_message(&self, msg: RaftMessage) {
        let to_store = msg.to_peer.as_ref().map_or(0, |p| p.store_id);
        if to_store != self.store_id {
            tracing::warn!(
                store = self.store_id,
                region = msg.region_id,
                to_store,
                "dropping a raft message addressed to another store"
            );
            StoreMetrics::add(&self.metrics.raft_messages_refused, 1);
            return;
        }
        let region_id = msg.region_id;
        if let Err(e) = self.router.send(region_id, PeerMsg::Raft(Box::new(msg))) {
            if let PeerMsg::Raft(m) = e.into_inner() {
                let _ = self.router.send_control(StoreMsg::Raft(m));
            }
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

    /// A request naming a peer on another store is refused (`StoreNotMatch`): the
    /// client's view of the cluster is wrong.
    fn check_header(&self, header: &RaftRequestHeader) -> Result<(), CmdError> {
        match header.peer {
            Some(p) if p.store_id != self.store_id => {
                Err(crate::cmd::store_not_match(p.store_id, self.store_id))
            }
            _ => Ok(()),
        }
    }

    /// Sends a client request to its region's mailbox, unless the mailbox already
    /// holds `max_pending_proposals` messages (`ServerIsBusy`: memory stays bounded
    /// when a region cannot keep up).
    fn send_request(&self, region_id: u64, msg: PeerMsg) -> Result<(), CmdError> {
        if let Some(mb) = self.router.mailbox(region_id) {
            if mb.len() >= self.max_mailbox {
                return Err(crate::cmd::server_busy(
                    region_id,
                    "too many requests queued for the region",
                ));
            }
        }
        self.send_to_region(region_id, msg)
    }

    /// A linearizable read through ReadIndex.
    pub async fn read(
        &self,
        header: RaftRequestHeader,
        kind: ReadKind,
    ) -> Result<ReadOutput, CmdError> {
        let region_id = header.region_id;
        self.check_header(&header)?;
        let (tx, rx) = oneshot::channel();
        self.send_request(
            region_id,
            PeerMsg::Read(ReadRequest {
                header,
                kind,
                reply: tx,
            }),
        )?;
        rx.await.unwrap_or_else(|_| {
            Err(CmdError::Dropped(
                "the store stopped before answering".into(),
            ))
        })
    }

    /// The region, its leader and size, as this store's peer knows them.
    pub async fn region_info(&self, region_id: u64) -> Result<RegionInfo, CmdError> {
        let (tx, rx) = oneshot::channel();
        self.send_to_region(region_id, PeerMsg::Info(tx))?;
        rx.await
            .map_err(|_| CmdError::Dropped("the store stopped before answering".into()))
    }

    /// Every region of this store.
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
        out
    }

    /// Tells every leader that `store_id` cannot be reached, so raft-rs stops
    /// pipelining appends to its peers until they answer again.
    pub fn report_unreachable(&self, store_id: u64) {
        self.router
            .broadcast(|| PeerMsg::StoreUnreachable(store_id));
    }

    /// Asks a region's peer to campaign now.
    pub fn campaign(&self, region_id: u64) -> Result<(), CmdError> {
        self.send_to_region(region_id, PeerMsg::Campaign)
    }

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
        split::check_split_request(&keys)?;
        let info = self.region_info(region_id).await?;
        let region = info.region.unwrap_or_default();
        // A stale epoch first: the keys may be outside only because the caller's
        // view is old, and EpochNotMatch tells it to refresh and retry.
        crate::cmd::check_epoch(&region, epoch.as_ref(), true)?;
        split::check_split_keys(&region, &keys)?;
        let ids = self.ids.alloc(keys.len() * (1 + region.peers.len()))?;
        let split = split::build_batch_split(&region, &keys, &ids);
        let request = admin_cmd(
            &region,
            self.store_id,
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
        let source = self
            .region_info(source_id)
            .await?
            .region
            .unwrap_or_default();
        let target = match self.region_info(target_id).await {
            Ok(info) => info.region.unwrap_or_default(),
            Err(CmdError::Region(_)) => {
                return Err(CmdError::Invalid(format!(
                    "region {target_id} has no peer on store {}: merge needs both regions on \
                     the same stores",
                    self.store_id
                )))
            }
            Err(e) => return Err(e),
        };
        if let Some(ctx) = &self.ctx {
            for id in [source_id, target_id] {
                if merge::is_merging(&ctx.kv, id) {
                    return Err(CmdError::Invalid(format!(
                        "region {id} has a merge in progress"
                    )));
                }
            }
        }
        let prepared = self.prepare_merge(&source, target.clone()).await?;
        let prepared_version = prepared.region_epoch.unwrap_or_default().version;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok(info) = self.region_info(target_id).await {
                let now = info.region.unwrap_or_default();
                if merge::covers(&now, &source) {
                    return Ok(now);
                }
            }
            if let Ok(info) = self.region_info(source_id).await {
                let version = info.region.and_then(|r| r.region_epoch).unwrap_or_default();
                if version.version > prepared_version {
                    return Err(CmdError::Invalid(format!(
                        "the merge of region {source_id} into {target_id} was rolled back: \
                         the target changed (split or merge) before the commit"
                    )));
                }
            }
            if std::time::Instant::now() >= deadline {
                return Err(CmdError::Undetermined(format!(
                    "the merge of region {source_id} into {target_id} is prepared but not \
                     committed after 30 s; it goes on in the background"
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Proposes `PrepareMerge` of `source` (as seen) into `target` as
    /// given, and returns the frozen source once the prepare is applied here.
    /// [`RaftStore::merge`] is the whole merge; tests use this step alone to
    /// prepare against a stale target.
    pub async fn prepare_merge(&self, source: &Region, target: Region) -> Result<Region, CmdError> {
        merge::check_merge(source, &target)?;
        let prepare = PrepareMergeRequest {
            min_index: 0,
            target: Some(target),
        };
        let request = admin_cmd(
            source,
            self.store_id,
            source.region_epoch,
            admin_request::Cmd::PrepareMerge(prepare),
        );
        let mut responses = self.write(request).await?;
        Ok(responses
            .pop()
            .and_then(|r| r.regions.into_iter().next())
            .unwrap_or_default())
    }

    /// A digest of this store's replica of `region_id`.
    pub async fn checksum(&self, region_id: u64) -> Result<ChecksumResponse, CmdError> {
        let (tx, rx) = oneshot::channel();
        self.send_to_region(region_id, PeerMsg::Checksum(tx))?;
        rx.await
            .map_err(|_| CmdError::Dropped("the store stopped before answering".into()))?
    }

    /// The store's live counters (tests read the ones not in [`StoreCounters`]).
    pub fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }

    /// The store's counters.
    pub fn counters(&self) -> StoreCounters {
        self.metrics.counters()
    }

    fn send_to_region(&self, region_id: u64, msg: PeerMsg) -> Result<(), CmdError> {
        self.router
            .send(region_id, msg)
            .map_err(|_| crate::cmd::region_not_found(region_id))
    }

    /// Stops every thread. Requests still pending are answered with an error.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(t) = self.ticker_thread.take() {
            t.stop();
        }
        let undelivered = self.system.shutdown();
        if !undelivered.is_empty() {
            tracing::debug!(
                store = self.store_id,
                count = undelivered.len(),
                "messages undelivered at shutdown"
            );
        }
        // The last handles on the writer's and apply workers' queues go with the context.
        self.ctx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for RaftStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, String> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .map_err(|e| format!("cannot start thread {name}: {e}"))
}
