//! `shoal playground` starts real nodes, serves writes, and stops every node on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Stops the playground (and so its nodes) even when an assertion fails.
struct Stopper(u32);

impl Drop for Stopper {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.to_string()])
            .status();
    }
}

fn shoal(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .output()
        .expect("run shoal")
}

#[test]
fn the_playground_serves_writes_and_stops_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut pg = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["playground", "--nodes", "3", "--regions", "4", "--dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _stopper = Stopper(pg.id());
    let mut lines = BufReader::new(pg.stdout.take().unwrap()).lines();
    let mut addrs = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("node ") {
            let addr = rest
                .split("gRPC ")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap()
                .to_string();
            addrs.push(addr);
        }
        if line.contains("Ctrl-C") {
            break;
        }
    }
    assert_eq!(addrs.len(), 3, "three endpoints printed");
    let endpoints = addrs.join(",");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = shoal(&["kv", "put", "pg-key", "pg-value", "--endpoints", &endpoints]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "put never succeeded: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = shoal(&["kv", "get", "pg-key", "--endpoints", &endpoints]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pg-value");

    Command::new("kill")
        .args(["-TERM", &pg.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while pg.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the playground did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("every node stopped")),
        "{rest:?}"
    );
    for addr in &addrs {
        assert!(
            std::net::TcpStream::connect_timeout(
                &addr.parse().unwrap(),
                Duration::from_millis(500)
            )
            .is_err(),
            "a node still listens on {addr}"
        );
    }
}
