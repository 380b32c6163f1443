//! Raft snapshots between node processes: a stopped node comes back to a log its
//! leader truncated, and is rebuilt from a snapshot streamed at the configured rate,
//! although it is `kill -9`ed in the middle of receiving it and crashes (a
//! failpoint) in the middle of applying it. Every replica ends equal. Needs a
//! `shoal` built with the `failpoints` feature (`make test` builds it).
#![cfg(feature = "failpoints")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{connect, free_port};

/// Snapshots go at 4 MiB/s: the transfer below takes seconds, time enough to
/// kill the receiver in the middle of it.
const RATE: u64 = 4 << 20;
const T: Duration = Duration::from_secs(60);

struct Node {
    id: u64,
    addr: String,
    dir: PathBuf,
    cluster: String,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self, failpoints: Option<&str>) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
        cmd.args([
            "node",
            "--store-id",
            &self.id.to_string(),
            "--addr",
            &self.addr,
        ])
        .args(["--status-addr", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(&self.dir)
        .args(["--initial-cluster", &self.cluster])
        .args(["--raft-log-gc-tick-interval-ms", "200"])
        .args(["--raft-log-gc-threshold", "10"])
        .args(["--raft-log-gc-count-limit", "40"])
        .args(["--snap-max-bytes-per-sec", &RATE.to_string()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
        if let Some(f) = failpoints {
            cmd.env("FAILPOINTS", f);
        }
        self.child = Some(cmd.spawn().expect("start shoal node"));
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to end by itself.
    fn wait_exit(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let c = self.child.as_mut().expect("running");
        while c.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "node {} did not stop", self.id);
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = None;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Entries of `dir` whose name contains `part`.
fn entries_with(dir: &Path, part: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(part))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_a_truncated_log_is_rebuilt_from_a_snapshot_through_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let cluster: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect();
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| Node {
            id: i as u64 + 1,
            addr: addrs[i].clone(),
            dir: dir.path().join(format!("store{}", i + 1)),
            cluster: cluster.join(","),
            child: None,
        })
        .collect();
    for n in &mut nodes {
        n.start(None);
    }
    let client = connect(addrs.clone()).await;
    client.put(b"k0", b"seen").await.unwrap();
    let region = client.list_regions().await.unwrap().0[0]
        .region
        .clone()
        .unwrap()
        .id;
    let seen_by_3 = loop {
        match client.replica(&addrs[2], region).await {
            Ok(info) if info.applied_index > 5 => break info.last_log_index,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };

    // Node 3 stops; 24 MiB land and the log is truncated past what it has.
    nodes[2].kill();
    // Incompressible values: the snapshot's files are as large as the data.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..96u32 {
        let value: Vec<u8> = (0..(256 << 10) / 8)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect();
        client
            .put(format!("big{i:03}").as_bytes(), &value)
            .await
            .unwrap();
    }
    for i in 0..60u32 {
        client
            .put(format!("small{i:03}").as_bytes(), b"v")
            .await
            .unwrap();
    }
    let deadline = Instant::now() + T;
    for addr in &addrs[..2] {
        loop {
            let info = client.replica(addr, region).await.unwrap();
            if info.first_log_index > seen_by_3 + 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the log was not truncated: {info:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Back, it needs a snapshot; killed while receiving it.
    let snap_dir = nodes[2].dir.join("snap");
    nodes[2].start(None);
    let deadline = Instant::now() + T;
    let partial = loop {
        if let Some(tmp) = entries_with(&snap_dir, ".tmp").pop() {
            break tmp;
        }
        assert!(Instant::now() < deadline, "no snapshot transfer began");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    nodes[2].kill();
    assert!(
        snap_dir.join(&partial).exists(),
        "the kill left the transfer behind"
    );

    // Back again, it takes the snapshot whole and crashes while applying it.
    nodes[2].start(Some("snapshot_after_applying_state=panic"));
    nodes[2].wait_exit(T);
    assert!(
        !snap_dir.join(&partial).exists(),
        "the interrupted transfer's files were removed at start-up"
    );
    assert!(
        !entries_with(&snap_dir, "recv_").is_empty(),
        "the snapshot is kept"
    );

    // Restarted, it finishes applying from the kept files and catches up.
    nodes[2].start(None);
    client.put(b"after", b"yes").await.unwrap();
    let deadline = Instant::now() + T;
    let sums = loop {
        let mut sums = Vec::new();
        for addr in &addrs {
            if let Ok(c) = client.checksum(addr, region).await {
                sums.push((c.applied_index, c.checksum, c.keys));
            }
        }
        if sums.len() == 3 && sums.iter().all(|s| *s == sums[0]) {
            break sums;
        }
        assert!(Instant::now() < deadline, "replicas never agreed: {sums:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The cluster directory's records (3 stores, the next store id) are keys of
    // the last region too.
    assert_eq!(sums[0].2, 1 + 96 + 60 + 1 + 4, "every key on every replica");
    let info = client.replica(&addrs[2], region).await.unwrap();
    assert!(
        info.first_log_index > seen_by_3 + 1,
        "node 3 caught up from a snapshot, not from the log: {info:?}"
    );
    assert!(
        entries_with(&snap_dir, "recv_").is_empty(),
        "applied, the snapshot's files are gone"
    );

    // The leader sent at the configured rate: every snapshot it sent took at
    // least its bytes' worth of time.
    let mut sent = (0, 0, 0);
    for addr in &addrs[..2] {
        let c = client.status(addr).await.unwrap().counters.unwrap();
        sent.0 += c.snapshots_sent;
        sent.1 += c.snapshot_sent_bytes;
        sent.2 += c.snapshot_send_millis;
    }
    assert!(sent.0 >= 1 && sent.1 >= 24 << 20, "{sent:?}");
    let fastest = sent.1.saturating_sub(sent.0 * (1 << 20)) * 1000 / RATE;
    assert!(
        sent.2 >= fastest,
        "{} bytes in {} ms: faster than {RATE} bytes/s",
        sent.1,
        sent.2
    );
}
