//! Three real `shoal node` processes on 127.0.0.1: writes through the client, one
//! node killed with SIGKILL, writes go on, the node restarts, catches up, and holds
//! every acknowledged write.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_client::{Client, ClientConfig};
use shoal_engine::keys::data_key;
use shoal_engine::rocks::RocksKvEngine;
use shoal_engine::{Cf, KvRead};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Node {
    id: u64,
    addr: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self, cluster: &str) {
        let child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args([
                "node",
                "--store-id",
                &self.id.to_string(),
                "--addr",
                &self.addr,
            ])
            .args(["--status-addr", &format!("127.0.0.1:{}", free_port())])
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--initial-cluster", cluster, "--initial-regions", "4"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start shoal node");
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Puts `key` until the cluster acknowledges it. The client does not resend a write
/// whose outcome is unknown (it may have been applied, and a resend could land over
/// a newer value); here each key has this one writer, so an `Undetermined` answer
/// (a leader killed or replaced mid-write) is retried. Any other error panics.
async fn put_acked(client: &Client, key: &[u8], value: &[u8]) {
    loop {
        match client.put(key, value).await {
            Ok(()) => return,
            Err(e) if e.is_undetermined() => continue,
            Err(e) => panic!("put {key:?}: {e}"),
        }
    }
}

async fn put_all(client: &Client, prefix: &str, n: u32, acked: &mut Vec<(Vec<u8>, Vec<u8>)>) {
    for i in 0..n {
        // Spread keys over the four regions (split at 0x40, 0x80, 0xc0).
        let key = vec![(i * 37 % 256) as u8, b'-', prefix.as_bytes()[0], i as u8];
        let value = format!("{prefix}-{i}").into_bytes();
        put_acked(client, &key, &value).await;
        acked.push((key, value));
    }
}

fn applied_locally(dir: &Path, acked: &[(Vec<u8>, Vec<u8>)]) -> usize {
    let kv = RocksKvEngine::open(&dir.join("kv")).unwrap();
    acked
        .iter()
        .filter(|(k, v)| kv.get(Cf::Default, &data_key(k)).unwrap().as_ref() == Some(v))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_restarts_catches_up_and_keeps_every_acknowledged_write() {
    let base = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = (1..=3)
        .map(|id| Node {
            id,
            addr: format!("127.0.0.1:{}", free_port()),
            dir: base.path().join(format!("store{id}")),
            child: None,
        })
        .collect();
    let cluster: String = nodes
        .iter()
        .map(|n| format!("{}={}", n.id, n.addr))
        .collect::<Vec<_>>()
        .join(",");
    for n in &mut nodes {
        n.start(&cluster);
    }
    let endpoints: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let config = ClientConfig {
        request_timeout: Duration::from_secs(30),
        ..ClientConfig::default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        match Client::connect(endpoints.clone(), config.clone()).await {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cluster never came up: {e}"),
        }
    };
    let mut acked = Vec::new();
    put_all(&client, "a", 40, &mut acked).await;

    nodes[2].kill9();
    put_all(&client, "b", 40, &mut acked).await;

    nodes[2].start(&cluster);
    // Reads go through leaders; every acknowledged write must be there.
    for (k, v) in &acked {
        assert_eq!(client.get(k).await.unwrap().as_ref(), Some(v), "key {k:?}");
    }
    // Wait for the restarted store to apply what it missed, then check its own data.
    let status_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let applied = client
            .status(&nodes[2].addr)
            .await
            .ok()
            .and_then(|s| s.counters)
            .map_or(0, |c| c.applied_entries);
        if applied >= 40 {
            break;
        }
        assert!(
            Instant::now() < status_deadline,
            "store 3 applied only {applied} entries after restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for n in &mut nodes {
        n.stop();
    }
    assert_eq!(
        applied_locally(&nodes[2].dir, &acked),
        acked.len(),
        "store 3 caught up"
    );
}
