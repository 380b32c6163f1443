//! The status HTTP endpoint (`--status-addr`): the store's counters as plain text,
//! in the Prometheus exposition format, at `GET /metrics` (and `/`).
//!
//! Deliberately tiny (one request per connection, no keep-alive, the head read
//! whole before it is answered): it serves operators and scrapers, never the data
//! path.

use std::sync::Arc;

use shoal_raftstore::RaftStore;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
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
                let Some(path) = request_path(&mut conn).await else {
                    return;
                };
                let path = path.as_str();
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

/// Longest request head read, in bytes.
const MAX_HEAD: usize = 8192;

/// The path of the request on `conn`, once its whole head (up to the blank line) has
/// arrived: a client may send it in several pieces, and answering the first piece
/// would answer the wrong path and close the connection under the client's next
/// write. `None` for a head that is too long, malformed, or not complete within 5 s.
async fn request_path(conn: &mut (impl AsyncRead + Unpin)) -> Option<String> {
    let read = async {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        // The blank line ends the head (bare `\n` line ends accepted, as from `nc`).
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
            let n = conn.read(&mut buf).await.ok()?;
            if n == 0 || head.len() + n > MAX_HEAD {
                return None;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&head);
        head.split_whitespace().nth(1).map(String::from)
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), read)
        .await
        .ok()
        .flatten()
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
            "shoal_raft_message_bytes_sent_total",
            "counter",
            "Encoded bytes of the Raft messages sent to other stores.",
            c.raft_message_bytes_sent,
        ),
        (
            "shoal_proposals_total",
            "counter",
            "Commands proposed to Raft.",
            c.proposals,
        ),
        (
            "shoal_writes_merged_total",
            "counter",
            "Writes proposed in another write's Raft entry (N merged writes count N - 1).",
            c.writes_merged,
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_request_head_sent_in_pieces_is_read_whole() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move { request_path(&mut server).await });
        // `write!` on an unbuffered socket sends each formatted piece on its own.
        for piece in [
            "GET ",
            "/fail/x?return(nospace)",
            " HTTP/1.1\r\n",
            "host: x\r\n\r\n",
        ] {
            client.write_all(piece.as_bytes()).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(
            reader.await.unwrap().as_deref(),
            Some("/fail/x?return(nospace)")
        );
    }

    #[tokio::test]
    async fn a_head_that_never_ends_is_dropped() {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        client.write_all(&[b'a'; MAX_HEAD + 1]).await.unwrap();
        assert_eq!(request_path(&mut server).await, None);
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        drop(client);
        assert_eq!(request_path(&mut server).await, None);
        // Bare line ends, as `printf 'GET /metrics\n\n' | nc` sends.
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"GET /metrics\n\n").await.unwrap();
        assert_eq!(request_path(&mut server).await.as_deref(), Some("/metrics"));
    }
}
