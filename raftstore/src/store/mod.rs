//! [`RaftStore`]: one store. `mod.rs` starts and stops everything (pollers, log
//! writer, apply workers, region worker, read pool, ticker) and loads the peers;
//! `door.rs` takes requests; `admin.rs` holds the admin API's split and merge;
//! `context.rs` is what the pollers share; `load.rs` reads the regions at start-up; `bootstrap.rs` writes a new cluster's first state;
//! `ids.rs` allocates region and peer ids.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use shoal_engine::rocks::Engines;
use shoal_engine::{KvEngine, LogEngine};
use shoal_router::{create_system, BatchSystem, Ticker, TickerThread};

use crate::config::Config;
use crate::error::StartError;
use crate::fsm::{PeerFsm, RaftPoller, StoreFsm, StoreRouter};
use crate::metrics::StoreMetrics;
use crate::msg::{PeerMsg, PeerTick};
use crate::operation;
use crate::operation::life;
use crate::operation::snapshot::recv::SnapReceiver;
use crate::raft::apply::ApplyMsg;
use crate::raft::entry_cache::StoreCacheBudget;
use crate::store::bootstrap::INIT_INDEX;
use crate::transport::Transport;
use crate::worker::apply::ApplyWorker;
use crate::worker::log_gc::{LogGcTask, LogGcWorker};
use crate::worker::log_writer::{LogWriter, WriteTask};
use crate::worker::read_pool::ReadPool;
use crate::worker::region::{Limits, RegionEvent, RegionTask, RegionWorker};
use crate::worker::snap_gen::{SnapTask, SnapWorker};

mod admin;
pub(crate) mod bootstrap;
pub(crate) mod context;
mod door;
pub(crate) mod ids;
pub(crate) mod liveness;
mod load;
mod membership;
pub(crate) mod ranges;

use context::StoreContext;
use ids::IdAllocator;
use liveness::StoreLiveness;
use ranges::RegionRanges;

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
    ids: Arc<IdAllocator>,
    /// Messages a region's mailbox may hold before client requests are refused.
    max_mailbox: usize,
}

/// The workers' queues, once their threads run.
struct Queues {
    writer: Sender<WriteTask>,
    apply: Vec<Sender<ApplyMsg>>,
    region_worker: Sender<RegionTask>,
    log_gc: Sender<LogGcTask>,
    read_pool: ReadPool,
    snap_tasks: Option<Sender<SnapTask>>,
    snap_removals: Sender<std::path::PathBuf>,
}

/// What a store is built from while it starts.
struct Parts {
    store_id: u64,
    router: StoreRouter,
    metrics: Arc<StoreMetrics>,
    ids: Arc<IdAllocator>,
    threads: Vec<JoinHandle<()>>,
}

impl RaftStore {
    /// Starts store `store_id` over `engines` (already bootstrapped) and loads its peers.
    pub fn start(
        store_id: u64,
        cfg: Config,
        engines: Engines,
        transport: Arc<dyn Transport>,
        tick_mode: TickMode,
    ) -> Result<RaftStore, StartError> {
        cfg.validate()?;
        let router_cfg = shoal_router::Config {
            pollers: cfg.pollers,
            max_batch_size: cfg.max_batch_size,
            ..shoal_router::Config::default()
        };
        let (router, mut system) = create_system(&router_cfg, Box::new(StoreFsm { store_id }))?;
        let mut parts = Parts {
            store_id,
            router,
            metrics: Arc::new(StoreMetrics::new(store_id)),
            ids: Arc::new(IdAllocator::open(engines.kv.clone(), store_id)?),
            threads: Vec::new(),
        };
        let states = load::region_states(&engines.kv)?;
        operation::snapshot::recover::recover(
            &engines.kv,
            engines.log.as_ref(),
            &parts.metrics,
            cfg.snap_dir.as_deref(),
            &states,
        )?;
        let ranges = Arc::new(RegionRanges::default());
        ranges.add_tombstones(load::tombstones(&states, store_id));
        let queues = parts.start_workers(&cfg, &engines, &transport)?;
        let ticker = Ticker::default();
        let ctx = Arc::new(StoreContext {
            store_id,
            cfg: cfg.clone(),
            log: engines.log.clone(),
            kv: engines.kv.clone(),
            metrics: parts.metrics.clone(),
            transport,
            writer: queues.writer,
            apply: queues.apply,
            region_worker: queues.region_worker,
            log_gc: queues.log_gc,
            read_pool: queues.read_pool,
            router: parts.router.clone(),
            ticker: ticker.clone(),
            entry_cache: Arc::new(StoreCacheBudget::new(cfg.entry_cache_store_max_bytes)),
            ranges,
            snap_tasks: queues.snap_tasks,
            snap_removals: queues.snap_removals,
            receiving: Arc::default(),
            liveness: Arc::new(StoreLiveness::new(
                store_id,
                cfg.liveness_timeout(),
                cfg.wakes_per_round(),
            )),
            awake_leaders: Default::default(),
        });
        let loaded = load::load_regions(&engines.kv, engines.log.as_ref())?;
        // Each peer truncates its log again at start (deletions are not synced), up
        // to the truncated index read from `kv/`. That index was written by a synced
        // batch, but a crash between that batch's write and its sync leaves it only
        // in the page cache: sync before anything is deleted on its word.
        if loaded
            .iter()
            .any(|p| p.apply_state.truncated_index > INIT_INDEX)
        {
            engines.kv.sync()?;
        }
        for start in loaded {
            life::start_peer(&ctx, start, life::Start::Loaded)?;
        }
        for region_id in load::orphaned_logs(&engines.kv, engines.log.as_ref())? {
            let _ = ctx.log_gc.send(LogGcTask::RemoveOrphan { region_id });
        }
        let name = format!("shoal-poll-{store_id}");
        let poll_ctx = ctx.clone();
        system
            .spawn(&name, move |_| RaftPoller::new(poll_ctx.clone()))
            .map_err(|source| StartError::Thread { name, source })?;
        if cfg.dormant_regions {
            let every = cfg.raft_heartbeat_ticks.max(1) as u32;
            ticker.schedule_every(LIVENESS_TICK_ID, PeerTick::Liveness, every);
        }
        let ticker_thread = match tick_mode {
            TickMode::Timer => Some(parts.start_ticker(&ticker, &cfg, ctx.clone())?),
            TickMode::Manual => None,
        };
        Ok(RaftStore {
            store_id,
            router: parts.router,
            system,
            ticker,
            ticker_thread,
            ctx: Some(ctx),
            threads: parts.threads,
            metrics: parts.metrics,
            ids: parts.ids,
            max_mailbox: cfg.max_pending_proposals,
        })
    }
}

impl Parts {
    /// Starts the log writer, the apply workers, the region worker and the read
    /// pool; each reports to the peers through the router.
    fn start_workers(
        &mut self,
        cfg: &Config,
        engines: &Engines,
        transport: &Arc<dyn Transport>,
    ) -> Result<Queues, StartError> {
        let id = self.store_id;
        let log: Arc<dyn LogEngine> = engines.log.clone();
        let (writer, rx) = crossbeam_channel::unbounded();
        let r = self.router.clone();
        let log_writer = LogWriter {
            log: log.clone(),
            metrics: self.metrics.clone(),
            transport: transport.clone(),
            notify: move |region, number| {
                let _ = r.send(region, PeerMsg::Persisted { number });
            },
        };
        self.spawn(format!("shoal-log-writer-{id}"), move || log_writer.run(rx))?;
        let mut apply = Vec::new();
        for i in 0..cfg.apply_workers {
            let (tx, rx) = crossbeam_channel::unbounded();
            let r = self.router.clone();
            let worker = ApplyWorker {
                kv: engines.kv.clone(),
                log: log.clone(),
                metrics: self.metrics.clone(),
                report: move |region, res| {
                    let _ = r.send(region, PeerMsg::ApplyRes(res));
                },
            };
            self.spawn(format!("shoal-apply-{id}-{i}"), move || worker.run(rx))?;
            apply.push(tx);
        }
        let (region_worker, rx) = crossbeam_channel::unbounded();
        let r = self.router.clone();
        let worker = RegionWorker {
            kv: engines.kv.clone(),
            ids: self.ids.clone(),
            limits: Limits {
                max_size: cfg.region_max_size,
                max_keys: cfg.region_max_keys,
            },
            report: move |region, event| {
                let msg = match event {
                    RegionEvent::Measured(r) => PeerMsg::SplitCheckResult(r),
                    RegionEvent::RollBackMerge { commit } => PeerMsg::RollbackMerge { commit },
                };
                let _ = r.send(region, msg);
            },
        };
        self.spawn(format!("shoal-region-{id}"), move || worker.run(rx))?;
        let (log_gc, rx) = crossbeam_channel::unbounded();
        let worker = LogGcWorker {
            log: log.clone(),
            metrics: self.metrics.clone(),
        };
        self.spawn(format!("shoal-log-gc-{id}"), move || worker.run(rx))?;
        let (snap_tasks, snap_removals) = self.start_snap_worker(cfg, engines)?;
        let name = format!("shoal-read-{id}");
        let (read_pool, threads) =
            ReadPool::start(&name, cfg.read_pool_threads, cfg.read_pool_queue)?;
        self.threads.extend(threads);
        Ok(Queues {
            writer,
            apply,
            region_worker,
            log_gc,
            read_pool,
            snap_tasks,
            snap_removals,
        })
    }

    /// Starts the snapshot worker (generation only with a snapshot directory).
    fn start_snap_worker(
        &mut self,
        cfg: &Config,
        engines: &Engines,
    ) -> Result<(Option<Sender<SnapTask>>, Sender<std::path::PathBuf>), StartError> {
        let (tasks, rx) = crossbeam_channel::unbounded();
        let (removals, removed) = crossbeam_channel::unbounded();
        let root = cfg.snap_dir.clone();
        if let Some(dir) = &root {
            std::fs::create_dir_all(dir).map_err(|e| {
                StartError::Corrupt(format!(
                    "cannot create the snapshot directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        let r = self.router.clone();
        let worker = SnapWorker {
            kv: engines.kv.clone(),
            log: engines.log.clone(),
            metrics: self.metrics.clone(),
            root: root.clone().unwrap_or_default(),
            removals: removals.clone(),
            report: move |region, res| {
                let _ = r.send(region, PeerMsg::SnapshotGenerated(Box::new(res)));
            },
        };
        let id = self.store_id;
        self.spawn(format!("shoal-snap-{id}"), move || worker.run(rx, removed))?;
        Ok((root.map(|_| tasks), removals))
    }

    /// Starts the ticker thread (timer tick mode).
    fn start_ticker(
        &self,
        ticker: &Ticker<PeerTick>,
        cfg: &Config,
        ctx: Arc<StoreContext>,
    ) -> Result<TickerThread, StartError> {
        let name = format!("shoal-tick-{}", self.store_id);
        ticker
            .spawn(&name, cfg.raft_tick_interval, move |id, kind| {
                deliver_tick(&ctx, id, kind)
            })
            .map_err(|source| StartError::Thread { name, source })
    }

    fn spawn(&mut self, name: String, f: impl FnOnce() + Send + 'static) -> Result<(), StartError> {
        let handle = std::thread::Builder::new()
            .name(name.clone())
            .spawn(f)
            .map_err(|source| StartError::Thread { name, source })?;
        self.threads.push(handle);
        Ok(())
    }
}

impl RaftStore {
    /// This store's id.
    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    /// Advances the ticker one tick (manual tick mode).
    pub fn tick(&self) {
        let Some(ctx) = self.ctx.as_ref() else { return };
        self.ticker.advance(|id, kind| deliver_tick(ctx, id, kind));
    }

    /// Timer registrations the store's ticker holds (each awake peer has three,
    /// a dormant one none; the store's liveness round one).
    pub fn registered_ticks(&self) -> usize {
        self.ticker.len()
    }

    /// The store's live counters.
    pub fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }

    /// Messages waiting in the regions' mailboxes (visits every mailbox: for
    /// metrics, off the pollers).
    pub fn mailbox_backlog(&self) -> usize {
        self.router.backlog()
    }

    /// The store's counters, as the Admin API reports them (lists the log engine's
    /// files for its size: call it off the pollers).
    pub fn counters(&self) -> shoal_proto::adminpb::StoreCounters {
        let mut c = self.metrics.counters();
        if let Some(ctx) = &self.ctx {
            c.entry_cache_bytes = ctx.entry_cache.used.load(Ordering::Relaxed);
            match ctx.log.disk_size() {
                Ok(n) => c.log_engine_disk_bytes = n,
                Err(e) => tracing::warn!(store = self.store_id, "log engine size: {e}"),
            }
        }
        c
    }

    /// Starts receiving the snapshot whose first chunk carried `msg`: checked
    /// (its raft-rs bytes by the wire check, before anything parses them;
    /// addressed here, a snapshot, room for one more transfer, disk not full),
    /// with a directory of its own. Feed it the chunks' bytes, then hand it to
    /// [`RaftStore::snapshot_received`]. File IO: call it off the async runtime's
    /// threads.
    pub fn receive_snapshot(
        &self,
        msg: shoal_proto::raft_serverpb::RaftMessage,
    ) -> Result<SnapReceiver, String> {
        let ctx = self.ctx.as_ref().ok_or("the store is stopping")?;
        if let Err(e) = self.check_wire(&msg) {
            crate::warn_limited!(
                store = self.store_id,
                region = msg.region_id,
                "refusing a snapshot whose message its schema does not allow: {e}"
            );
            return Err(format!("the snapshot's raft message is refused: {e}"));
        }
        let to = msg.to_peer.as_ref().map_or(0, |p| p.store_id);
        if to != self.store_id {
            return Err(format!(
                "a snapshot for store {to} reached store {}",
                self.store_id
            ));
        }
        if self.metrics.disk_full.load(Ordering::Relaxed) {
            return Err("the disk is full".into());
        }
        let root = ctx
            .snap_root()
            .ok_or("this store has no snapshot directory")?;
        let max_bytes = ctx
            .cfg
            .region_max_size
            .saturating_mul(crate::operation::snapshot::recv::MAX_SNAPSHOT_REGION_SIZES);
        SnapReceiver::start(
            msg,
            root,
            ctx.receiving.clone(),
            self.metrics.clone(),
            max_bytes,
        )
    }

    /// A snapshot received whole: its files' keys are checked against its region
    /// (a file reaching outside refuses the snapshot and its files go), they are
    /// kept and its message goes to the region's peer (which a snapshot for a
    /// region this store lacks creates). Reads and syncs files: call it off the
    /// async runtime's threads.
    pub fn snapshot_received(&self, recv: SnapReceiver) -> Result<(), String> {
        let kv = self.kv().ok_or("the store is stopping")?;
        if let Err(e) = recv.check_keys(&kv) {
            crate::warn_limited!(
                store = self.store_id,
                region = recv.key().region_id,
                "refusing a received snapshot: {e}"
            );
            return Err(e);
        }
        let msg = recv.finish()?;
        self.on_raft_message(msg);
        Ok(())
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
        // The last handles on the workers' queues go with the context.
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

/// The ticker id of the store's own liveness tick (no region has id 0).
const LIVENESS_TICK_ID: u64 = 0;

/// Delivers one tick: a peer's through its mailbox; the store's liveness tick is
/// run here, on the ticker's thread (a few heartbeats, a table lookup).
fn deliver_tick(ctx: &StoreContext, id: u64, kind: PeerTick) -> bool {
    if id == LIVENESS_TICK_ID {
        liveness::on_tick(ctx);
        return true;
    }
    ctx.router.send(id, PeerMsg::Tick(kind)).is_ok()
}
