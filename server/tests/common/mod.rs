//! What the server tests share: free loopback ports, `shoal node` processes that are
//! killed when dropped, and running the `shoal` command.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Node processes, killed on drop.
pub struct Nodes(pub Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts one `shoal node` per address (store ids 1..), each with its data in
/// `dir/store{id}`, bootstrapping `regions` regions.
pub fn start_nodes(dir: &Path, addrs: &[String], regions: usize) -> Nodes {
    let cluster: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect();
    let children = addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            Command::new(env!("CARGO_BIN_EXE_shoal"))
                .args(["node", "--store-id", &(i + 1).to_string(), "--addr", addr])
                .args(["--status-addr", &format!("127.0.0.1:{}", free_port())])
                .arg("--data-dir")
                .arg(dir.join(format!("store{}", i + 1)))
                .args(["--initial-cluster", &cluster.join(",")])
                .args(["--initial-regions", &regions.to_string()])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start shoal node")
        })
        .collect();
    Nodes(children)
}

/// Runs `shoal ARGS` to completion.
pub fn shoal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run shoal")
}

/// A client of the cluster at `endpoints` (20 s per request), retrying the
/// connection until the nodes are up (at most 30 s).
pub async fn connect(endpoints: Vec<String>) -> shoal_client::Client {
    use std::time::{Duration, Instant};
    let config = shoal_client::ClientConfig {
        request_timeout: Duration::from_secs(20),
        ..shoal_client::ClientConfig::default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match shoal_client::Client::connect(endpoints.clone(), config.clone()).await {
            Ok(c) => return c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("cluster never came up: {e}"),
        }
    }
}

/// One `shoal node` process with its flags, killed on drop; it can be killed and
/// started again with other flags. Its log (stderr, `RUST_LOG=info`) goes to `log`.
pub struct NodeProc {
    pub args: Vec<String>,
    pub log: std::path::PathBuf,
    pub child: Option<Child>,
}

impl NodeProc {
    /// Starts `shoal node ARGS`.
    pub fn start(args: Vec<String>, log: std::path::PathBuf) -> NodeProc {
        let mut n = NodeProc {
            args,
            log,
            child: None,
        };
        n.restart();
        n
    }

    /// Starts the process again (after [`NodeProc::kill`]) with its flags.
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .arg("node")
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start shoal node");
        self.child = Some(child);
    }

    /// `kill -9`, and waits for the process to end.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The flags of node `id` of an initial cluster `cluster` (`ID=HOST:PORT,...`).
pub fn initial_node_args(
    dir: &Path,
    id: u64,
    addr: &str,
    cluster: &str,
    regions: usize,
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--store-id".into(),
        id.to_string(),
        "--addr".into(),
        addr.into(),
        "--status-addr".into(),
        format!("127.0.0.1:{}", free_port()),
        "--initial-cluster".into(),
        cluster.into(),
        "--initial-regions".into(),
        regions.to_string(),
    ];
    args.push("--data-dir".into());
    args.push(dir.join(format!("store{id}")).display().to_string());
    args
}

/// `n` nodes of a new cluster with `regions` regions, in `dir`.
pub fn start_cluster(dir: &Path, n: u64, regions: usize) -> (Vec<NodeProc>, Vec<String>) {
    start_cluster_with(dir, n, regions, |_| Vec::new())
}

/// As [`start_cluster`], node `id` also given the flags `extra(id)`.
pub fn start_cluster_with(
    dir: &Path,
    n: u64,
    regions: usize,
    extra: impl Fn(u64) -> Vec<String>,
) -> (Vec<NodeProc>, Vec<String>) {
    let addrs: Vec<String> = (0..n)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let cluster: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect();
    let nodes = (1..=n)
        .map(|id| {
            let mut args = initial_node_args(
                dir,
                id,
                &addrs[id as usize - 1],
                &cluster.join(","),
                regions,
            );
            args.extend(extra(id));
            NodeProc::start(args, dir.join(format!("store{id}.log")))
        })
        .collect();
    (nodes, addrs)
}

/// The status address (`--status-addr`) a node was started with.
pub fn status_addr(node: &NodeProc) -> String {
    let at = node.args.iter().position(|a| a == "--status-addr");
    node.args[at.expect("a status address") + 1].clone()
}

/// A node with an empty data directory joining the cluster at `seed`.
pub fn join_node(dir: &Path, name: &str, addr: &str, seed: &str) -> NodeProc {
    let args = vec![
        "--join".into(),
        seed.into(),
        "--addr".into(),
        addr.into(),
        "--status-addr".into(),
        format!("127.0.0.1:{}", free_port()),
        "--data-dir".into(),
        dir.join(name).display().to_string(),
    ];
    NodeProc::start(args, dir.join(format!("{name}.log")))
}

/// Waits until the directory lists store `id` at `addr`, up.
pub async fn wait_registered(dir: &shoal_client::Directory, id: u64, addr: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(Some(s)) = dir.store(id).await {
            if s.address == addr && s.state == shoal_proto::metapb::StoreState::Up as i32 {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "store {id} never registered at {addr}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The value of metric `name` whose labels include `labels` on the node's status
/// endpoint (0 when absent).
pub async fn metric(status: &str, name: &str, labels: &[&str]) -> f64 {
    let body = reqwest_lite(status, "/metrics").await;
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            let series = l.split(' ').next().unwrap_or("");
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name && labels.iter().all(|want| rest.contains(want))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// GET `path` from the HTTP server at `addr` (the node's status endpoint).
pub async fn reqwest_lite(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
