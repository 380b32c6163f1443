//! `shoal playground`: a local cluster of real node processes for trying Shoal.
//!
//! Starts N `shoal node` processes (this same executable) on free 127.0.0.1 ports,
//! each with its data under one directory (a fresh temporary one unless `--dir` is
//! given), prints the endpoints and commands to try, and stops every node on Ctrl-C
//! or SIGTERM: SIGTERM first, SIGKILL for any still running after 10 s. If a node
//! exits by itself, the playground says so and stops the others.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;

/// Options of `shoal playground`.
#[derive(Args, Debug)]
pub struct PlaygroundArgs {
    /// Number of nodes (1..=9).
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Regions to bootstrap, evenly splitting the key space (1..=65536).
    #[arg(long, default_value_t = 16)]
    pub regions: usize,
    /// Where the nodes keep their data and logs [default: a new temporary directory,
    /// removed when the playground stops].
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

fn stop_all(children: &mut [(u64, Child)]) {
    for (_, c) in children.iter() {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (id, c) in children.iter_mut() {
        while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(c.try_wait(), Ok(None)) {
            eprintln!("playground: node {id} did not stop in 10 s; killing it");
            let _ = c.kill();
        }
        let _ = c.wait();
    }
}

/// Runs the playground until Ctrl-C. Returns the exit code.
pub async fn run(
    args: PlaygroundArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<i32, String> {
    if !(1..=9).contains(&args.nodes) {
        return Err(format!("--nodes must be 1..=9, got {}", args.nodes));
    }
    if !(1..=65536).contains(&args.regions) {
        return Err(format!("--regions must be 1..=65536, got {}", args.regions));
    }
    let (_temp, dir) = match &args.dir {
        Some(d) => (None, d.clone()),
        None => {
            let t = tempfile::Builder::new()
                .prefix("shoal-playground-")
                .tempdir()
                .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the shoal executable: {e}"))?;
    let mut addrs = Vec::new();
    for id in 1..=args.nodes {
        addrs.push((
            id,
            format!("127.0.0.1:{}", free_port()?),
            format!("127.0.0.1:{}", free_port()?),
        ));
    }
    let cluster: Vec<String> = addrs.iter().map(|(id, a, _)| format!("{id}={a}")).collect();
    let cluster = cluster.join(",");
    let mut children: Vec<(u64, Child)> = Vec::new();
    for (id, addr, status) in &addrs {
        let data = dir.join(format!("store-{id}"));
        let log = std::fs::File::create(dir.join(format!("store-{id}.log")))
            .map_err(|e| format!("cannot create a log file in {}: {e}", dir.display()))?;
        let spawned = Command::new(&exe)
            .args([
                "node",
                "--store-id",
                &id.to_string(),
                "--addr",
                addr,
                "--status-addr",
                status,
            ])
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--initial-cluster",
                &cluster,
                "--initial-regions",
                &args.regions.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn();
        match spawned {
            Ok(c) => children.push((*id, c)),
            Err(e) => {
                stop_all(&mut children);
                return Err(format!("cannot start node {id}: {e}"));
            }
        }
    }
    let endpoints: Vec<&str> = addrs.iter().map(|(_, a, _)| a.as_str()).collect();
    let endpoints = endpoints.join(",");
    println!(
        "Shoal playground: {} nodes, {} regions, data and logs in {}",
        args.nodes,
        args.regions,
        dir.display()
    );
    for (id, addr, status) in &addrs {
        println!("  node {id}: gRPC {addr}, metrics http://{status}/metrics");
    }
    println!("Try:");
    println!("  shoal kv put hello world --endpoints {endpoints}");
    println!("  shoal kv get hello --endpoints {endpoints}");
    println!("  shoal admin regions --endpoints {endpoints}");
    println!("  shoal admin split hello --endpoints {endpoints}");
    println!("  shoal admin merge SOURCE_ID TARGET_ID --endpoints {endpoints}");
    println!("Press Ctrl-C to stop every node.");
    tokio::pin!(shutdown);
    let code = loop {
        tokio::select! {
            _ = &mut shutdown => break 0,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if let Some((id, status)) = children.iter_mut().find_map(|(id, c)| c.try_wait().ok().flatten().map(|s| (*id, s))) {
                    eprintln!("playground: node {id} exited ({status}); see store-{id}.log; stopping the others");
                    break 1;
                }
            }
        }
    };
    stop_all(&mut children);
    println!("playground: every node stopped");
    Ok(code)
}
