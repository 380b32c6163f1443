//! The status HTTP endpoint (`--status-addr`): the store's counters as plain text,
//! in the Prometheus exposition format, at `GET /metrics` (and `/`).
//!
//! Deliberately tiny (one request per connection, no keep-alive): it serves
//! operators and scrapers, never the data path.

use std::sync::Arc;

use shoal_raftstore::RaftStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Binds `addr` and serves until the returned task is aborted.
pub async fn spawn(addr: &str, store: Arc<RaftStore>) -> Result<JoinHandle<()>, String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on status address {addr}: {e}"))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request.split_whitespace().nth(1).unwrap_or("/");
                let (status, body) = if path == "/" || path == "/metrics" {
                    ("200 OK", render(&store))
                } else if let Some(answer) = failpoint(path) {
                    answer
                } else {
                    ("404 Not Found", "not found: try /metrics\n".to_string())
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
            });
        }
    }))
}

/// `GET /fail/NAME?ACTIONS` arms failpoint NAME (the `fail` crate's syntax, e.g.
/// `return(nospace)`), `GET /fail/NAME` disarms it: only in a `shoal` built with the
/// `failpoints` feature (tests and the chaos suite), where it lets a test turn a
/// fault on and off in a running node.
#[cfg(feature = "failpoints")]
fn failpoint(path: &str) -> Option<(&'static str, String)> {
    let rest = path.strip_prefix("/fail/")?;
    let answer = match rest.split_once('?') {
        Some((name, actions)) => match fail::cfg(name, actions) {
            Ok(()) => ("200 OK", format!("{name} armed: {actions}\n")),
            Err(e) => ("400 Bad Request", format!("{name}: {e}\n")),
        },
        None => {
            fail::remove(rest);
            ("200 OK", format!("{rest} disarmed\n"))
        }
    };
    Some(answer)
}

#[cfg(not(feature = "failpoints"))]
fn failpoint(_path: &str) -> Option<(&'static str, String)> {
    None
}

/// The counters in the Prometheus text format.
pub fn render(store: &RaftStore) -> String {
    let c = store.counters();
    let store_id = store.store_id();
    let rows = [
        (
            "shoal_fsyncs_total",
            "counter",
            "Synced log engine writes.",
            c.fsyncs,
        ),
        (
            "shoal_regions_per_fsync_sum",
            "counter",
            "Sum over fsyncs of the regions each wrote.",
            c.regions_per_fsync_sum,
        ),
        (
            "shoal_entries_per_fsync_sum",
            "counter",
            "Sum over fsyncs of the entries each wrote.",
            c.entries_per_fsync_sum,
        ),
        (
            "shoal_raft_messages_sent_total",
            "counter",
            "Raft messages handed to the transport.",
            c.raft_messages_sent,
        ),
        (
            "shoal_transport_batches_sent_total",
            "counter",
            "Transport batches (one per remote store per round).",
            c.transport_batches_sent,
        ),
        (
            "shoal_proposals_total",
            "counter",
            "Commands proposed to Raft.",
            c.proposals,
        ),
        (
            "shoal_applied_entries_total",
            "counter",
            "Log entries applied.",
            c.applied_entries,
        ),
        (
            "shoal_reads_served_total",
            "counter",
            "Linearizable reads answered.",
            c.reads_served,
        ),
        (
            "shoal_log_entries_truncated_total",
            "counter",
            "Raft log entries deleted by log GC.",
            c.log_entries_truncated,
        ),
        (
            "shoal_log_reclaims_total",
            "counter",
            "Compactions of the log engine that gave truncated entries' space back.",
            c.log_reclaims,
        ),
        (
            "shoal_snapshots_generated_total",
            "counter",
            "Raft snapshots generated (as a leader).",
            c.snapshots_generated,
        ),
        (
            "shoal_snapshot_generated_bytes_total",
            "counter",
            "Bytes of the Raft snapshots generated.",
            c.snapshot_generated_bytes,
        ),
        (
            "shoal_snapshot_generate_millis_total",
            "counter",
            "Milliseconds spent generating Raft snapshots.",
            c.snapshot_generate_millis,
        ),
        (
            "shoal_snapshots_sent_total",
            "counter",
            "Raft snapshots sent to other stores.",
            c.snapshots_sent,
        ),
        (
            "shoal_snapshot_sent_bytes_total",
            "counter",
            "Bytes of the Raft snapshots sent.",
            c.snapshot_sent_bytes,
        ),
        (
            "shoal_snapshot_send_millis_total",
            "counter",
            "Milliseconds spent sending Raft snapshots.",
            c.snapshot_send_millis,
        ),
        (
            "shoal_snapshots_received_total",
            "counter",
            "Raft snapshots received whole and checked.",
            c.snapshots_received,
        ),
        (
            "shoal_snapshot_received_bytes_total",
            "counter",
            "Bytes of the Raft snapshots received.",
            c.snapshot_received_bytes,
        ),
        (
            "shoal_snapshot_receive_millis_total",
            "counter",
            "Milliseconds spent receiving Raft snapshots.",
            c.snapshot_receive_millis,
        ),
        (
            "shoal_snapshots_applied_total",
            "counter",
            "Raft snapshots applied (as a follower).",
            c.snapshots_applied,
        ),
        (
            "shoal_snapshot_apply_millis_total",
            "counter",
            "Milliseconds spent applying Raft snapshots.",
            c.snapshot_apply_millis,
        ),
        (
            "shoal_snapshot_failures_total",
            "counter",
            "Raft snapshots that failed to generate, send, receive or apply.",
            c.snapshot_failures,
        ),
        (
            "shoal_log_engine_disk_bytes",
            "gauge",
            "Bytes the Raft log engine (raft/) takes on disk.",
            c.log_engine_disk_bytes,
        ),
        (
            "shoal_entry_cache_bytes",
            "gauge",
            "Bytes in the peers' Raft entry caches.",
            c.entry_cache_bytes,
        ),
        (
            "shoal_regions",
            "gauge",
            "Peers on this store.",
            c.region_count,
        ),
        (
            "shoal_leaders",
            "gauge",
            "Peers on this store leading their region.",
            c.leader_count,
        ),
        (
            "shoal_disk_full",
            "gauge",
            "Whether the disk is full (writes refused, reads served): 1 or 0.",
            u64::from(
                store
                    .metrics()
                    .disk_full
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in rows {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{store=\"{store_id}\"}} {value}\n"
        ));
    }
    out
}
