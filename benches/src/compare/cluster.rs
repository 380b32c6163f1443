//! The clusters `bench-compare` starts and stops: etcd members and Shoal node
//! processes on free 127.0.0.1 ports (with mutual TLS when asked, certificates from
//! `shoal cert`), each a child process stopped when dropped (SIGTERM, then SIGKILL
//! after 10 s; SIGKILL too if this process dies), and how to find etcd's leader.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{CompareArgs, Side};

/// Where `shoal cert` puts the run's certificates: `ca.pem`, `store-ID.pem` and
/// `.key` per node (etcd member i uses store i+1's), `client-bench.pem` and `.key`.
pub(super) fn certs_dir(args: &CompareArgs) -> PathBuf {
    args.dir.join("certs")
}

/// Makes the run's certificates with `shoal cert`.
pub(super) fn make_certs(args: &CompareArgs, shoal: &Path) -> Result<(), String> {
    let out = Command::new(shoal)
        .arg("cert")
        .arg("--dir")
        .arg(certs_dir(args))
        .args(["--stores", &args.nodes.to_string(), "--client", "bench"])
        .output()
        .map_err(|e| format!("cannot run {} cert: {e}", shoal.display()))?;
    if !out.status.success() {
        return Err(format!(
            "shoal cert failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// A child process that is stopped when dropped.
struct Proc {
    name: String,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            eprintln!(
                "bench-compare: {} did not stop in 10 s; killing it",
                self.name
            );
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A started cluster: its processes, client endpoints and pids.
pub(super) struct Cluster {
    procs: Vec<Proc>,
    pub(super) endpoints: Vec<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Signal every process first, so that none waits on a peer still running;
        // each Proc's drop then waits for its own (and kills it after 10 s).
        for p in &mut self.procs {
            if matches!(p.child.try_wait(), Ok(None)) {
                // SAFETY: kill(2) on the pid of our own child, not yet reaped.
                unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };
            }
        }
    }
}

impl Cluster {
    pub(super) fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.child.id()).collect()
    }

    /// Fails if a process has exited (with its log's path).
    pub(super) fn check_alive(&mut self, dir: &Path) -> Result<(), String> {
        for p in &mut self.procs {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}); see {}/{}.log",
                    p.name,
                    dir.display(),
                    p.name
                ));
            }
        }
        Ok(())
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Result<Proc, String> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))
        .map_err(|e| format!("cannot create {name}.log in {}: {e}", dir.display()))?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null()).stdout(log).stderr(err);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death
        // signal so that it dies with us even if we are killed.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
    Ok(Proc {
        name: name.to_string(),
        child,
    })
}

pub(super) fn start_etcd(args: &CompareArgs, dir: &Path, tls: bool) -> Result<Cluster, String> {
    let scheme = if tls { "https" } else { "http" };
    let mut peers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..args.nodes {
        peers.push(free_port()?);
        clients.push(free_port()?);
    }
    let initial: Vec<String> = (0..args.nodes)
        .map(|i| format!("m{i}={scheme}://127.0.0.1:{}", peers[i]))
        .collect();
    let mut procs = Vec::new();
    for i in 0..args.nodes {
        let (c, p) = (clients[i], peers[i]);
        let mut cmd = Command::new(&args.etcd_bin);
        cmd.arg("--name")
            .arg(format!("m{i}"))
            .arg("--data-dir")
            .arg(dir.join(format!("etcd-{i}")))
            .arg(format!("--listen-client-urls={scheme}://127.0.0.1:{c}"))
            .arg(format!("--advertise-client-urls={scheme}://127.0.0.1:{c}"))
            .arg(format!("--listen-peer-urls={scheme}://127.0.0.1:{p}"))
            .arg(format!(
                "--initial-advertise-peer-urls={scheme}://127.0.0.1:{p}"
            ))
            .arg(format!("--initial-cluster={}", initial.join(",")))
            .arg("--initial-cluster-state=new")
            .arg("--initial-cluster-token=shoal-bench-compare")
            .arg("--logger=zap")
            .arg("--log-level=warn");
        if tls {
            // Clients and peers alike must present a certificate from the CA.
            let certs = certs_dir(args);
            let ca = certs.join("ca.pem");
            let cert = certs.join(format!("store-{}.pem", i + 1));
            let key = certs.join(format!("store-{}.key", i + 1));
            for (flag, path) in [
                ("--trusted-ca-file", &ca),
                ("--cert-file", &cert),
                ("--key-file", &key),
                ("--peer-trusted-ca-file", &ca),
                ("--peer-cert-file", &cert),
                ("--peer-key-file", &key),
            ] {
                cmd.arg(format!("{flag}={}", path.display()));
            }
            cmd.args(["--client-cert-auth", "--peer-client-cert-auth"]);
        }
        procs.push(spawn(&format!("etcd-{i}"), cmd, dir)?);
    }
    let endpoints = clients.iter().map(|c| format!("127.0.0.1:{c}")).collect();
    Ok(Cluster { procs, endpoints })
}

/// A Shoal cluster whose nodes keep their data in `dir/NAME-i` (removed when the
/// round ends, so every round starts afresh).
pub(super) fn start_shoal(
    args: &CompareArgs,
    dir: &Path,
    name: &str,
    side: &Side,
    this_bin: &Path,
) -> Result<Cluster, String> {
    let node_bin = side.node_bin.as_deref().unwrap_or(this_bin);
    let mut grpc = Vec::new();
    for _ in 0..args.nodes {
        grpc.push(free_port()?);
    }
    let initial: Vec<String> = (0..args.nodes)
        .map(|i| format!("{}=127.0.0.1:{}", i + 1, grpc[i]))
        .collect();
    let mut procs = Vec::new();
    for (i, port) in grpc.iter().enumerate() {
        let mut cmd = Command::new(node_bin);
        cmd.arg("node")
            .arg(format!("--store-id={}", i + 1))
            .arg("--data-dir")
            .arg(dir.join(format!("{name}-{}", i + 1)))
            .arg(format!("--addr=127.0.0.1:{port}"))
            .arg(format!("--status-addr=127.0.0.1:{}", free_port()?))
            .arg(format!("--initial-cluster={}", initial.join(",")))
            .arg(format!("--initial-regions={}", args.regions))
            .args(&side.node_flags);
        if side.tls {
            let certs = certs_dir(args);
            cmd.arg("--ca-path")
                .arg(certs.join("ca.pem"))
                .arg("--cert-path")
                .arg(certs.join(format!("store-{}.pem", i + 1)))
                .arg("--key-path")
                .arg(certs.join(format!("store-{}.key", i + 1)));
        }
        for var in &side.node_env {
            if let Some((k, v)) = var.split_once('=') {
                cmd.env(k, v);
            }
        }
        procs.push(spawn(&format!("{name}-{}", i + 1), cmd, dir)?);
    }
    let endpoints = grpc.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    Ok(Cluster { procs, endpoints })
}

/// The client endpoint of the etcd member that leads: the one whose `/metrics` say
/// `etcd_server_is_leader 1`.
pub(super) fn etcd_leader(endpoints: &[String]) -> Result<String, String> {
    use std::io::{Read, Write};
    for endpoint in endpoints {
        let metrics = (|| -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect(endpoint)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })()
        .map_err(|e| format!("cannot read {endpoint}/metrics: {e}"))?;
        if metrics
            .lines()
            .any(|l| l.trim() == "etcd_server_is_leader 1")
        {
            return Ok(endpoint.clone());
        }
    }
    Err("no etcd member says it leads (etcd_server_is_leader)".into())
}
