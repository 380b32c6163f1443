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
