//! A cluster of real `shoal node` processes on 127.0.0.1, joined through the link
//! proxies (`proxy.rs`), for the runner and the nemesis to kill, pause, restart
//! and partition. Each node writes its log to `node-<id>.log` in the run directory
//! (appended across restarts). Only processes this cluster started are signalled,
//! by pid.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shoal_client::TlsPaths;

use crate::proxy::{LinkState, Proxy};

/// What a cluster is started with.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// The `shoal` binary.
    pub exe: PathBuf,
    /// Nodes (store ids 1..=n).
    pub nodes: u64,
    /// Initial regions.
    pub regions: usize,
    /// Raft tick of every node, in milliseconds.
    pub raft_tick_ms: u64,
    /// Where data, logs and config go.
    pub dir: PathBuf,
    /// Mutual TLS on every connection: `shoal cert` makes a CA, the stores'
    /// certificates and a client certificate in `dir/certs`.
    pub tls: bool,
}

/// One node process.
pub struct Node {
    /// Store id.
    pub id: u64,
    /// Its gRPC address (clients dial it directly).
    pub addr: String,
    data_dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// Started with failpoints: its exit is the nemesis's doing.
    armed: bool,
}

/// Why a node process ended that the runner did not end.
#[derive(Clone, Debug)]
pub struct Exit {
    /// Store id.
    pub id: u64,
    /// Its exit status, as the OS said it.
    pub status: String,
}

/// The running cluster.
pub struct Cluster {
    spec: ClusterSpec,
    nodes: BTreeMap<u64, Node>,
    /// The proxy of each directed link `(from, to)`.
    links: BTreeMap<(u64, u64), Proxy>,
    /// Nodes that exited without the runner asking.
    exits: Vec<Exit>,
}

/// Ports reserved on 127.0.0.1 for the nodes while a cluster is set up: each stays
/// bound until the nodes start. They are taken below Linux's ephemeral range
/// (32768..): a killed node's port must still be free when it restarts, and an
/// outgoing connection (a proxy's, a client's) takes its local port from that
/// range.
#[derive(Default)]
struct Reserved(Vec<std::net::TcpListener>);

impl Reserved {
    /// A free address, held until [`Reserved`] is dropped.
    fn addr(&mut self) -> std::io::Result<String> {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        for _ in 0..200 {
            let port: u16 = rng.gen_range(12_000..32_000);
            if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                let addr = l.local_addr()?.to_string();
                self.0.push(l);
                return Ok(addr);
            }
        }
        Err(std::io::Error::other(
            "no free port in 12000..32000 on 127.0.0.1",
        ))
    }
}

impl Cluster {
    /// Starts the proxies and every node.
    pub async fn start(spec: ClusterSpec) -> std::io::Result<Cluster> {
        std::fs::create_dir_all(&spec.dir)?;
        let ids: Vec<u64> = (1..=spec.nodes).collect();
        let mut reserved = Reserved::default();
        let mut addrs = BTreeMap::new();
        for &id in &ids {
            addrs.insert(id, reserved.addr()?);
        }
        let mut links = BTreeMap::new();
        for &from in &ids {
            for &to in ids.iter().filter(|&&to| to != from) {
                links.insert((from, to), Proxy::start(addrs[&to].clone()).await?);
            }
        }
        // Every node bootstraps the same initial cluster (the nodes' own
        // addresses, as the cluster directory lists them), and dials each other
        // node through the proxy of that link (`peer-addresses`).
        let members: Vec<String> = ids.iter().map(|&j| format!("{j}={}", addrs[&j])).collect();
        if spec.tls {
            make_certs(&spec)?;
        }
        let mut nodes = BTreeMap::new();
        for &id in &ids {
            let peers: Vec<String> = ids
                .iter()
                .filter(|&&j| j != id)
                .map(|&j| format!("{j}={}", links[&(id, j)].addr))
                .collect();
            let status = reserved.addr()?;
            let node = Node::write(
                &spec,
                id,
                &addrs[&id],
                &status,
                &members.join(","),
                &peers.join(","),
            )?;
            nodes.insert(id, node);
        }
        let mut cluster = Cluster {
            spec,
            nodes,
            links,
            exits: Vec::new(),
        };
        // The nodes bind their ports now.
        drop(reserved);
        for id in ids {
            cluster.start_node(id)?;
        }
        Ok(cluster)
    }

    /// The TLS files of the runner's clients, when the cluster has TLS on.
    pub fn client_tls(&self) -> Option<TlsPaths> {
        let certs = self.spec.dir.join("certs");
        self.spec.tls.then(|| TlsPaths {
            ca_path: certs.join("ca.pem"),
            cert_path: certs.join("client-chaos.pem"),
            key_path: certs.join("client-chaos.key"),
        })
    }

    /// Store ids.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// The gRPC address of every node.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.addr.clone()).collect()
    }

    /// The gRPC address of node `id`.
    pub fn addr(&self, id: u64) -> String {
        self.nodes[&id].addr.clone()
    }

    /// (Re)starts node `id`.
    pub fn start_node(&mut self, id: u64) -> std::io::Result<()> {
        self.start_node_with(id, None)
    }

    /// (Re)starts node `id`, with `failpoints` (the `FAILPOINTS` syntax of the
    /// `fail` crate) armed when given: an exit of the node is then expected.
    pub fn start_node_with(&mut self, id: u64, failpoints: Option<&str>) -> std::io::Result<()> {
        let node = self.nodes.get_mut(&id).expect("known node");
        if node.child.is_some() {
            return Ok(());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let mut cmd = Command::new(&self.spec.exe);
        match failpoints {
            Some(f) => cmd.env("FAILPOINTS", f),
            None => cmd.env_remove("FAILPOINTS"),
        };
        let child = cmd
            .arg("node")
            .arg("--config")
            .arg(&node.config)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        node.child = Some(child);
        node.paused = false;
        node.armed = failpoints.is_some();
        Ok(())
    }

    /// `kill -9` node `id` and reaps it.
    pub fn kill(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("known node");
        if let Some(mut child) = node.child.take() {
            // A node that already died on its own (not by a failpoint) is recorded
            // before the nemesis's kill would hide it.
            if let (Ok(Some(status)), false) = (child.try_wait(), node.armed) {
                self.exits.push(Exit {
                    id,
                    status: status.to_string(),
                });
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
        node.armed = false;
    }

    /// SIGSTOP node `id`.
    pub fn pause(&mut self, id: u64) {
        self.signal(id, libc::SIGSTOP, true);
    }

    /// SIGCONT node `id`.
    pub fn resume(&mut self, id: u64) {
        self.signal(id, libc::SIGCONT, false);
    }

    fn signal(&mut self, id: u64, sig: libc::c_int, paused: bool) {
        let node = self.nodes.get_mut(&id).expect("known node");
        if let Some(child) = &node.child {
            // SAFETY: signals a process this cluster started and has not reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, sig) };
            node.paused = paused;
        }
    }

    /// Sets the directed link `from -> to`.
    pub fn set_link(&self, from: u64, to: u64, state: LinkState) {
        if let Some(p) = self.links.get(&(from, to)) {
            p.set(state);
        }
    }

    /// Every link up, every node resumed and running (a node with failpoints armed
    /// is restarted without them).
    pub fn heal(&mut self) -> std::io::Result<()> {
        for p in self.links.values() {
            p.set(LinkState::Up);
        }
        for id in self.ids() {
            if self.nodes[&id].paused {
                self.resume(id);
            }
            if self.nodes[&id].armed {
                self.kill(id);
            }
            self.start_node(id)?;
        }
        Ok(())
    }

    /// The size of node `id`'s log file now.
    pub fn log_len(&self, id: u64) -> u64 {
        std::fs::metadata(&self.nodes[&id].log).map_or(0, |m| m.len())
    }

    /// What node `id` logged after byte `offset`.
    pub fn log_since(&self, id: u64, offset: u64) -> String {
        let log = std::fs::read(&self.nodes[&id].log).unwrap_or_default();
        let from = (offset as usize).min(log.len());
        String::from_utf8_lossy(&log[from..]).into_owned()
    }

    /// Whether node `id` runs, paused or not (false once it exited or was killed).
    pub fn is_alive(&mut self, id: u64) -> bool {
        let node = self.nodes.get_mut(&id).expect("known node");
        node.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Records nodes that exited without the runner asking (crashed, aborted) and
    /// returns every such exit so far. A node started with failpoints is the
    /// nemesis's to reap.
    pub fn check_exits(&mut self) -> Vec<Exit> {
        for node in self.nodes.values_mut() {
            let Some(child) = node.child.as_mut() else {
                continue;
            };
            if node.armed {
                continue;
            }
            if let Ok(Some(status)) = child.try_wait() {
                self.exits.push(Exit {
                    id: node.id,
                    status: status.to_string(),
                });
                node.child = None;
            }
        }
        self.exits.clone()
    }

    /// Records that node `id` exited when it should not have (`why`), for the
    /// "no node exited" check.
    pub fn record_exit(&mut self, id: u64, why: &str) {
        self.exits.push(Exit {
            id,
            status: why.to_string(),
        });
    }

    /// Stops every node (SIGCONT first, so a paused one can die).
    pub fn stop(&mut self) {
        for id in self.ids() {
            self.resume(id);
            self.kill(id);
        }
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.spec.dir
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Node {
    /// Writes node `id`'s config file; the process is not started.
    fn write(
        spec: &ClusterSpec,
        id: u64,
        addr: &str,
        status: &str,
        members: &str,
        peers: &str,
    ) -> std::io::Result<Node> {
        let data_dir = spec.dir.join(format!("node-{id}"));
        let config = spec.dir.join(format!("node-{id}.toml"));
        // Log GC at aggressive settings (every 10 ticks, from 20 entries, and past
        // 200 entries whatever a replica lacks), so that the faults hit truncation,
        // and a node killed or cut off for a few seconds comes back to a snapshot.
        let toml = format!(
            "store-id = {id}\ndata-dir = {:?}\naddr = {addr:?}\nstatus-addr = {:?}\n\
             initial-cluster = {members:?}\npeer-addresses = {peers:?}\n\
             initial-regions = {}\nraft-tick-ms = {}\n\
             raft-log-gc-tick-interval-ms = {}\nraft-log-gc-threshold = 20\n\
             raft-log-gc-count-limit = 200\n",
            data_dir.display().to_string(),
            status,
            spec.regions,
            spec.raft_tick_ms,
            spec.raft_tick_ms * 10,
        );
        let mut toml = toml;
        if spec.tls {
            let certs = spec.dir.join("certs");
            toml.push_str(&format!(
                "ca-path = {:?}\ncert-path = {:?}\nkey-path = {:?}\ncert-allowed-cn = \"chaos\"\n",
                certs.join("ca.pem").display().to_string(),
                certs.join(format!("store-{id}.pem")).display().to_string(),
                certs.join(format!("store-{id}.key")).display().to_string(),
            ));
        }
        std::fs::write(&config, toml)?;
        Ok(Node {
            id,
            addr: addr.to_string(),
            data_dir,
            config,
            log: spec.dir.join(format!("node-{id}.log")),
            child: None,
            paused: false,
            armed: false,
        })
    }

    /// Where the node keeps its data.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// Runs `shoal cert` for the cluster: a CA, a certificate per store (for
/// 127.0.0.1: the nodes and the link proxies are all there) and the runner's client
/// certificate `client-chaos`, in `dir/certs`.
fn make_certs(spec: &ClusterSpec) -> std::io::Result<()> {
    let out = Command::new(&spec.exe)
        .arg("cert")
        .arg("--dir")
        .arg(spec.dir.join("certs"))
        .args(["--stores", &spec.nodes.to_string(), "--client", "chaos"])
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "shoal cert failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// How long a node gets to come up before it is considered broken.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
