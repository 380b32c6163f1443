//! `shoal playground`: a local cluster of real node processes for trying Shoal.
//!
//! Starts N `shoal node` processes (this same executable) on free 127.0.0.1 ports,
//! each with its data under one directory (a fresh temporary one unless `--dir` is
//! given), prints the endpoints and commands to try, and stops every node on Ctrl-C
//! or SIGTERM: SIGTERM first, SIGKILL for any still running after 10 s. If a node
//! exits by itself, the playground says so and stops the others.

use std::path::{Path, PathBuf};
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
    /// Also print a Prometheus scrape config for the nodes (and write it to
    /// DIR/prometheus.yml), to use with the Grafana dashboard in
    /// deploy/grafana/shoal.json.
    #[arg(long)]
    pub metrics: bool,
    /// Mutual TLS: make a CA, a certificate per node and a client certificate in
    /// DIR/certs, and start the nodes with TLS on (only clients with a certificate
    /// from that CA get in); prints the flags a client needs.
    #[arg(long)]
    pub tls: bool,
}

/// A Prometheus scrape config (as deploy/prometheus.yml) for nodes whose status
/// endpoints are `targets` (HOST:PORT).
pub fn scrape_config(targets: &[&str]) -> String {
    let mut s = String::from(
        "global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\nscrape_configs:\n  \
         - job_name: shoal\n    metrics_path: /metrics\n    static_configs:\n      \
         - targets:\n",
    );
    for t in targets {
        s.push_str(&format!("          - {t}\n"));
    }
    s
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

/// The addresses of one playground node.
struct NodeAddrs {
    id: u64,
    /// gRPC (Kv, Admin, Raft).
    addr: String,
    /// The status endpoint (`/metrics`).
    status: String,
}

/// Runs the playground until Ctrl-C. Returns the exit code.
pub async fn run(
    args: PlaygroundArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<i32, String> {
    args.validate()?;
    let (_temp, dir) = data_dir(&args)?;
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the shoal executable: {e}"))?;
    let nodes = (1..=args.nodes)
        .map(|id| {
            Ok(NodeAddrs {
                id,
                addr: format!("127.0.0.1:{}", free_port()?),
                status: format!("127.0.0.1:{}", free_port()?),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let certs = match args.tls {
        true => Some(make_certs(&dir, &nodes)?),
        false => None,
    };
    let mut children = start_nodes(&exe, &dir, &nodes, args.regions, certs.as_deref())?;
    print_welcome(&args, &dir, &nodes, certs.as_deref());
    let code = wait(&mut children, shutdown).await;
    stop_all(&mut children);
    println!("playground: every node stopped");
    Ok(code)
}

impl PlaygroundArgs {
    fn validate(&self) -> Result<(), String> {
        if !(1..=9).contains(&self.nodes) {
            return Err(format!("--nodes must be 1..=9, got {}", self.nodes));
        }
        if !(1..=65536).contains(&self.regions) {
            return Err(format!("--regions must be 1..=65536, got {}", self.regions));
        }
        Ok(())
    }
}

/// The directory for the nodes' data and logs, created: `--dir`, or a new temporary
/// one (returned too: dropping it removes the directory).
fn data_dir(args: &PlaygroundArgs) -> Result<(Option<tempfile::TempDir>, PathBuf), String> {
    let (temp, dir) = match &args.dir {
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
    Ok((temp, dir))
}

/// Makes `dir/certs`: a CA (`ca.pem`), a store certificate per node
/// (`store-ID.pem`, `.key`) and the client certificate `client-playground.pem`
/// (`.key`), all for 127.0.0.1 and localhost. Returns the directory.
fn make_certs(dir: &Path, nodes: &[NodeAddrs]) -> Result<PathBuf, String> {
    use crate::security::cert::{ca_in, write_issued, Role, Validity};
    let certs = dir.join("certs");
    let (ca, _) = ca_in(&certs, 3650)?;
    let hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    for node in nodes {
        let role = Role::Store {
            id: node.id,
            hosts: hosts.clone(),
        };
        write_issued(
            &certs,
            &format!("store-{}", node.id),
            &ca.issue(&role, Validity::days(365))?,
        )?;
    }
    let client = Role::Client {
        cn: "playground".into(),
    };
    write_issued(
        &certs,
        "client-playground",
        &ca.issue(&client, Validity::days(365))?,
    )?;
    Ok(certs)
}

/// The flags of a client with the playground's client certificate in `certs`.
fn client_tls_flags(certs: &Path) -> String {
    let c = certs.display();
    format!(
        "--ca-path {c}/ca.pem --cert-path {c}/client-playground.pem --key-path {c}/client-playground.key"
    )
}

/// Starts a `shoal node` process per node, logging to `store-ID.log` in `dir`, with
/// TLS when `certs` holds the certificates. If one cannot start, the ones already
/// started are stopped.
fn start_nodes(
    exe: &Path,
    dir: &Path,
    nodes: &[NodeAddrs],
    regions: usize,
    certs: Option<&Path>,
) -> Result<Vec<(u64, Child)>, String> {
    let cluster: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}={}", n.id, n.addr))
        .collect();
    let cluster = cluster.join(",");
    let mut children: Vec<(u64, Child)> = Vec::new();
    for node in nodes {
        let id = node.id;
        let log = std::fs::File::create(dir.join(format!("store-{id}.log")))
            .map_err(|e| format!("cannot create a log file in {}: {e}", dir.display()))?;
        let mut cmd = Command::new(exe);
        cmd.arg("node");
        if let Some(certs) = certs {
            cmd.arg("--ca-path")
                .arg(certs.join("ca.pem"))
                .arg("--cert-path")
                .arg(certs.join(format!("store-{id}.pem")))
                .arg("--key-path")
                .arg(certs.join(format!("store-{id}.key")));
        }
        let spawned = cmd
            .args([
                "--store-id",
                &id.to_string(),
                "--addr",
                &node.addr,
                "--status-addr",
                &node.status,
            ])
            .arg("--data-dir")
            .arg(dir.join(format!("store-{id}")))
            .args([
                "--initial-cluster",
                &cluster,
                "--initial-regions",
                &regions.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn();
        match spawned {
            Ok(c) => children.push((id, c)),
            Err(e) => {
                stop_all(&mut children);
                return Err(format!("cannot start node {id}: {e}"));
            }
        }
    }
    Ok(children)
}

/// The endpoints and commands to try.
fn print_welcome(args: &PlaygroundArgs, dir: &Path, nodes: &[NodeAddrs], certs: Option<&Path>) {
    let endpoints: Vec<&str> = nodes.iter().map(|n| n.addr.as_str()).collect();
    let mut endpoints = endpoints.join(",");
    println!(
        "Shoal playground: {} nodes, {} regions, data and logs in {}",
        args.nodes,
        args.regions,
        dir.display()
    );
    for NodeAddrs { id, addr, status } in nodes {
        println!("  node {id}: gRPC {addr}, metrics http://{status}/metrics");
    }
    if let Some(certs) = certs {
        println!(
            "TLS is on: certificates in {} (a CA, one store certificate per node, the client certificate client-playground.pem); every client needs the three flags below, or SHOAL_CA_PATH, SHOAL_CERT_PATH and SHOAL_KEY_PATH.",
            certs.display()
        );
        endpoints = format!("{endpoints} {}", client_tls_flags(certs));
    }
    println!("Try:");
    println!("  shoal kv put hello world --endpoints {endpoints}");
    println!("  shoal kv get hello --endpoints {endpoints}");
    println!("  shoal admin regions --endpoints {endpoints}");
    println!("  shoal admin split hello --endpoints {endpoints}");
    println!("  shoal admin merge SOURCE_ID TARGET_ID --endpoints {endpoints}");
    if args.metrics {
        let targets: Vec<&str> = nodes.iter().map(|n| n.status.as_str()).collect();
        let config = scrape_config(&targets);
        let path = dir.join("prometheus.yml");
        match std::fs::write(&path, &config) {
            Ok(()) => println!("Prometheus scrape config (also in {}):", path.display()),
            Err(e) => println!(
                "Prometheus scrape config (cannot write {}: {e}):",
                path.display()
            ),
        }
        print!("{config}");
        println!(
            "Run `prometheus --config.file={}`, add it as a Grafana data source and import \
             deploy/grafana/shoal.json.",
            path.display()
        );
    }
    println!("Press Ctrl-C to stop every node.");
}

/// Waits for `shutdown` (exit code 0) or for a node to exit by itself (1).
async fn wait(
    children: &mut [(u64, Child)],
    shutdown: impl std::future::Future<Output = ()>,
) -> i32 {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return 0,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if let Some((id, status)) = children.iter_mut().find_map(|(id, c)| c.try_wait().ok().flatten().map(|s| (*id, s))) {
                    eprintln!("playground: node {id} exited ({status}); see store-{id}.log; stopping the others");
                    return 1;
                }
            }
        }
    }
}
