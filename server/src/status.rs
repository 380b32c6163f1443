//! The status HTTP endpoint (`--status-addr`), on axum:
//!
//! - `GET /metrics` (and `/`): every metric of the node in the Prometheus text
//!   format: the store's (raftstore's counters, gauges and histograms, the Kv
//!   requests, the transport), RocksDB's figures per engine and column family
//!   (`shoal_rocksdb_*`), and the standard process metrics (`process_*`).
//! - `GET /health`: 200 while the process runs (liveness).
//! - `GET /ready`: 200 once the node has joined its cluster, loaded its regions and
//!   serves Kv, Admin and Raft; 503 before that (`starting`) and once it begins
//!   shutting down (`draining`). For load balancers and orchestrators.
//! - `GET /fail/NAME?ACTIONS`: arms a failpoint, only in a build with the
//!   `failpoints` feature (tests and the chaos suite).
//!
//! It starts before the node joins or loads anything, so that `/health` answers
//! during a long start. It serves operators and scrapers, never the data path; a
//! scrape reads the engines' properties and sizes on a blocking thread.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use shoal_engine::rocks::{EngineStats, Engines};
use shoal_raftstore::RaftStore;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Where the node is in its life, as `/ready` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Readiness {
    /// Joining, bootstrapping or loading regions.
    Starting = 0,
    /// Serving Kv, Admin and Raft.
    Ready = 1,
    /// Shutting down.
    Draining = 2,
}

/// What the endpoint serves from: set by the node as it starts.
pub struct StatusState {
    readiness: AtomicU8,
    /// Process metrics (no store yet when the endpoint starts).
    process: Registry,
    /// The store and its engines, from when they run until the endpoint stops
    /// (taken out then, so that a connection still open cannot keep the store from
    /// stopping cleanly). The lock also serialises scrapes' gauge updates.
    store: Mutex<Option<(Arc<RaftStore>, Engines, EngineGauges)>>,
}

/// A running status endpoint.
pub struct StatusServer {
    /// What it serves from.
    pub state: Arc<StatusState>,
    /// The address it listens on.
    pub addr: std::net::SocketAddr,
    task: JoinHandle<()>,
}

impl StatusServer {
    /// Stops serving, and lets go of the store and its engines.
    pub async fn stop(mut self) {
        self.state.store.lock().expect("status lock").take();
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StatusState {
    fn new() -> Self {
        let process = Registry::new();
        // The standard `process_*` metrics (CPU, resident memory, fds, threads).
        let _ = process.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        StatusState {
            readiness: AtomicU8::new(Readiness::Starting as u8),
            process,
            store: Mutex::new(None),
        }
    }

    /// The store runs: its metrics are served from now on, and RocksDB's figures
    /// of `engines` are added to its registry.
    pub fn set_store(&self, store: Arc<RaftStore>, engines: Engines) -> Result<(), String> {
        let gauges = EngineGauges::new(store.metrics().registry())
            .map_err(|e| format!("cannot register the engine metrics: {e}"))?;
        *self.store.lock().expect("status lock") = Some((store, engines, gauges));
        Ok(())
    }

    /// Sets what `/ready` answers.
    pub fn set_readiness(&self, r: Readiness) {
        self.readiness.store(r as u8, Ordering::Release);
    }

    /// What `/ready` answers now.
    pub fn readiness(&self) -> Readiness {
        match self.readiness.load(Ordering::Acquire) {
            1 => Readiness::Ready,
            2 => Readiness::Draining,
            _ => Readiness::Starting,
        }
    }

    /// Every metric in the Prometheus text format. Reads the engines' properties
    /// and the log engine's files: call it off the async runtime's threads.
    pub fn render(&self) -> String {
        let mut families = self.process.gather();
        if let Some((store, engines, gauges)) = &*self.store.lock().expect("status lock") {
            gauges.update(store, engines);
            families.extend(store.metrics().registry().gather());
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!("cannot encode the metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// RocksDB's figures and the store's sizes, as gauges set at each scrape.
struct EngineGauges {
    memtable: IntGaugeVec,
    sst: IntGaugeVec,
    pending_compaction: IntGaugeVec,
    stalls: IntCounterVec,
    write_stopped: IntGaugeVec,
    delayed_rate: IntGaugeVec,
    compactions: IntGaugeVec,
    log_disk: IntGauge,
    entry_cache: IntGauge,
    mailbox_backlog: IntGauge,
}

impl EngineGauges {
    fn new(r: &Registry) -> prometheus::Result<Self> {
        let vec = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntGaugeVec> {
            let v = IntGaugeVec::new(Opts::new(name, help), labels)?;
            r.register(Box::new(v.clone()))?;
            Ok(v)
        };
        let one = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            r.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let cf = &["engine", "cf"][..];
        let db = &["engine"][..];
        Ok(EngineGauges {
            memtable: vec(
                "shoal_rocksdb_memtable_bytes",
                "Bytes in RocksDB memtables, per engine and column family.",
                cf,
            )?,
            sst: vec(
                "shoal_rocksdb_sst_bytes",
                "Bytes of RocksDB SST files, per engine and column family.",
                cf,
            )?,
            pending_compaction: vec(
                "shoal_rocksdb_pending_compaction_bytes",
                "Bytes RocksDB estimates compaction has to rewrite.",
                cf,
            )?,
            stalls: {
                let v = IntCounterVec::new(
                    Opts::new(
                        "shoal_rocksdb_write_stalls_total",
                        "RocksDB write stalls (slowdowns and stops), per engine and column family.",
                    ),
                    cf,
                )?;
                r.register(Box::new(v.clone()))?;
                v
            },
            write_stopped: vec(
                "shoal_rocksdb_write_stopped",
                "Whether RocksDB stops writes now: 1 or 0.",
                db,
            )?,
            delayed_rate: vec(
                "shoal_rocksdb_delayed_write_rate_bytes",
                "The rate RocksDB delays writes to, in bytes per second (0: not delayed).",
                db,
            )?,
            compactions: vec(
                "shoal_rocksdb_running_compactions",
                "RocksDB compactions running now.",
                db,
            )?,
            log_disk: one(
                "shoal_log_engine_disk_bytes",
                "Bytes the Raft log engine (raft/) takes on disk.",
            )?,
            entry_cache: one(
                "shoal_entry_cache_bytes",
                "Bytes in the peers' Raft entry caches.",
            )?,
            mailbox_backlog: one(
                "shoal_mailbox_backlog",
                "Messages waiting in the regions' mailboxes for a poller.",
            )?,
        })
    }

    fn update(&self, store: &RaftStore, engines: &Engines) {
        for (name, stats) in [
            ("raft", engines.log.rocksdb_stats()),
            ("kv", engines.kv.rocksdb_stats()),
        ] {
            self.set(name, &stats);
        }
        let c = store.counters();
        self.log_disk.set(c.log_engine_disk_bytes as i64);
        self.entry_cache.set(c.entry_cache_bytes as i64);
        self.mailbox_backlog.set(store.mailbox_backlog() as i64);
    }

    fn set(&self, engine: &str, s: &EngineStats) {
        let n = |v: u64| v.min(i64::MAX as u64) as i64;
        for cf in &s.cfs {
            let l = [engine, cf.cf];
            self.memtable
                .with_label_values(&l)
                .set(n(cf.memtable_bytes));
            self.sst.with_label_values(&l).set(n(cf.sst_bytes));
            self.pending_compaction
                .with_label_values(&l)
                .set(n(cf.pending_compaction_bytes));
            // RocksDB counts since the engine opened: the counter catches up.
            let stalls = self.stalls.with_label_values(&l);
            stalls.inc_by(cf.write_stalls.saturating_sub(stalls.get()));
        }
        self.write_stopped
            .with_label_values(&[engine])
            .set(i64::from(s.write_stopped));
        self.delayed_rate
            .with_label_values(&[engine])
            .set(n(s.delayed_write_rate));
        self.compactions
            .with_label_values(&[engine])
            .set(n(s.running_compactions));
    }
}

/// Binds `addr` and serves until [`StatusServer::stop`].
pub async fn spawn(addr: &str) -> Result<StatusServer, String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on status address {addr}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("status address {addr}: {e}"))?;
    let state = Arc::new(StatusState::new());
    let app = routes(state.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the status endpoint stopped: {e}");
        }
    });
    Ok(StatusServer { state, addr, task })
}

fn routes(state: Arc<StatusState>) -> Router {
    let app = Router::new()
        .route("/", get(metrics))
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready));
    failpoint_routes(app)
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /health or /ready\n",
            )
        })
        .with_state(state)
}

async fn metrics(State(state): State<Arc<StatusState>>) -> axum::response::Response {
    match tokio::task::spawn_blocking(move || state.render()).await {
        Ok(body) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot render the metrics: {e}\n"),
        )
            .into_response(),
    }
}

async fn ready(State(state): State<Arc<StatusState>>) -> impl IntoResponse {
    match state.readiness() {
        Readiness::Ready => (StatusCode::OK, "ready\n"),
        Readiness::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
        Readiness::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
    }
}

/// `GET /fail/NAME?ACTIONS` arms failpoint NAME (the `fail` crate's syntax, e.g.
/// `return(nospace)`), `GET /fail/NAME` disarms it: only in a `shoal` built with the
/// `failpoints` feature (tests and the chaos suite), where it lets a test turn a
/// fault on and off in a running node.
#[cfg(feature = "failpoints")]
fn failpoint_routes(app: Router<Arc<StatusState>>) -> Router<Arc<StatusState>> {
    use axum::extract::{Path, RawQuery};
    app.route(
        "/fail/{*name}",
        get(
            |Path(name): Path<String>, RawQuery(actions): RawQuery| async move {
                match actions {
                    Some(actions) => match fail::cfg(&name, &actions) {
                        Ok(()) => (StatusCode::OK, format!("{name} armed: {actions}\n")),
                        Err(e) => (StatusCode::BAD_REQUEST, format!("{name}: {e}\n")),
                    },
                    None => {
                        fail::remove(&name);
                        (StatusCode::OK, format!("{name} disarmed\n"))
                    }
                }
            },
        ),
    )
}

#[cfg(not(feature = "failpoints"))]
fn failpoint_routes(app: Router<Arc<StatusState>>) -> Router<Arc<StatusState>> {
    app
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends `pieces` as one request, a pause between them; the whole answer.
    async fn ask(addr: std::net::SocketAddr, pieces: &[&str]) -> String {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        for piece in pieces {
            conn.write_all(piece.as_bytes()).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn health_ready_and_metrics_answer() {
        let server = spawn("127.0.0.1:0").await.unwrap();
        let addr = server.addr;
        // A head sent in pieces (as `write!` on an unbuffered socket does) is read
        // whole: the first piece alone was once answered as `GET /`.
        let a = ask(
            addr,
            &[
                "GET ",
                "/health",
                " HTTP/1.1\r\n",
                "host: x\r\nconnection: close\r\n\r\n",
            ],
        )
        .await;
        assert!(a.starts_with("HTTP/1.1 200"), "{a}");
        assert!(a.ends_with("ok\n"), "{a}");
        let get =
            |path: &str| format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        let a = ask(addr, &[&get("/ready")]).await;
        assert!(
            a.starts_with("HTTP/1.1 503") && a.ends_with("starting\n"),
            "{a}"
        );
        server.state.set_readiness(Readiness::Ready);
        let a = ask(addr, &[&get("/ready")]).await;
        assert!(
            a.starts_with("HTTP/1.1 200") && a.ends_with("ready\n"),
            "{a}"
        );
        server.state.set_readiness(Readiness::Draining);
        let a = ask(addr, &[&get("/ready")]).await;
        assert!(
            a.starts_with("HTTP/1.1 503") && a.ends_with("draining\n"),
            "{a}"
        );
        let a = ask(addr, &[&get("/metrics")]).await;
        assert!(a.contains("process_resident_memory_bytes"), "{a}");
        let a = ask(addr, &[&get("/nope")]).await;
        assert!(a.starts_with("HTTP/1.1 404"), "{a}");
        server.stop().await;
    }
}
