//! A full disk (simulated by the `log_engine_write` failpoint returning ENOSPC, armed
//! and disarmed through the node's status endpoint): the node refuses writes with
//! an error that says so, keeps serving reads, never exits, loses nothing, and
//! takes writes again once space returns. Needs a `shoal` built with the
//! `failpoints` feature (`make test` builds it).
#![cfg(feature = "failpoints")]

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{connect, free_port, NodeProc};

/// `GET path` on `node`'s status address `addr`; the response. A failure names the
/// node's state and the end of its log (a flaky run once lost its connection here).
fn http_get(node: &mut NodeProc, addr: &str, path: &str) -> String {
    let get = || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect(addr)?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        // The endpoint keeps HTTP/1.1 connections open unless told otherwise.
        write!(
            s,
            "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    };
    get().unwrap_or_else(|e| {
        let state = node.child.as_mut().map(|c| c.try_wait());
        let log = std::fs::read_to_string(&node.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!(
            "GET {path} on {addr}: {e}; node: {state:?}; its log ends:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_serves_reads_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let status = format!("127.0.0.1:{}", free_port());
    let args = ["--store-id", "1", "--addr", &addr, "--status-addr", &status];
    let mut args: Vec<String> = args.into_iter().map(String::from).collect();
    args.push("--data-dir".into());
    args.push(dir.path().join("store1").display().to_string());
    let mut node = NodeProc::start(args, dir.path().join("node.log"));
    let client = connect(vec![addr.clone()]).await;
    client.put(b"k", b"before").await.unwrap();

    assert!(
        http_get(&mut node, &status, "/fail/log_engine_write?return(nospace)").contains("armed")
    );
    // The first write finds the disk full (its outcome is unknown to the client:
    // it waits in the log writer, which retries it); after that, writes are refused
    // with an error that names the cause.
    let first = client.put(b"k", b"during").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        match client.put(b"k2", b"refused").await {
            Err(e) if e.to_string().contains("disk is full") => break e,
            other => assert!(Instant::now() < deadline, "not refused: {other:?}"),
        }
    };
    assert!(refused.is_retryable(), "{refused}");
    assert!(http_get(&mut node, &status, "/metrics").contains("shoal_disk_full{store=\"1\"} 1"));
    // Reads are served meanwhile (the first write was not persisted, so not
    // committed: the read sees the value before it).
    assert_eq!(client.get(b"k").await.unwrap(), Some(b"before".to_vec()));
    assert!(
        node.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the node is still up"
    );

    // Space returns: the waiting write goes through, new writes are taken.
    assert!(http_get(&mut node, &status, "/fail/log_engine_write").contains("disarmed"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = client.put(b"k3", b"after").await {
        assert!(Instant::now() < deadline, "writes did not resume: {e}");
    }
    assert!(http_get(&mut node, &status, "/metrics").contains("shoal_disk_full{store=\"1\"} 0"));
    assert_eq!(client.get(b"k3").await.unwrap(), Some(b"after".to_vec()));
    // The write that met the full disk was kept, not lost: applied or refused
    // outright, never half.
    let k = client.get(b"k").await.unwrap();
    match first {
        Ok(()) => assert_eq!(k, Some(b"during".to_vec())),
        Err(e) => assert!(
            k == Some(b"during".to_vec())
                || (!e.is_undetermined() && k == Some(b"before".to_vec())),
            "{e}: {k:?}"
        ),
    }
    assert_eq!(
        client.get(b"k2").await.unwrap(),
        None,
        "refused writes did not happen"
    );
    assert!(
        node.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the node is still up"
    );
}
