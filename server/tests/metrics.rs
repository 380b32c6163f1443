//! The status endpoint of real node processes: `/metrics` parses as Prometheus text
//! and carries the metric families an operator needs; every metric the Grafana
//! dashboard (deploy/grafana/shoal.json) queries is one a node exports, so the
//! dashboard cannot rot; docs/metrics.md lists every exported metric; `/health`
//! and `/ready` answer.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{connect, free_port, start_cluster, status_addr, NodeProc};

/// `GET path` on `addr`: (status code, body); `None` while nothing listens.
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut conn = std::net::TcpStream::connect(addr).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).ok()?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).ok()?;
    let code = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

/// The metric names a scrape declares (`# TYPE NAME KIND`), with the series names
/// a histogram adds.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut it = rest.split_whitespace();
        let (Some(name), Some(kind)) = (it.next(), it.next()) else {
            continue;
        };
        names.insert(name.to_string());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

/// The metric names the dashboard's queries use.
fn dashboard_names() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/shoal.json");
    let text = std::fs::read_to_string(path).expect("the dashboard");
    let json: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&json, &mut exprs);
    assert!(exprs.len() > 20, "the dashboard has its queries: {exprs:?}");
    let mut names = BTreeSet::new();
    for e in exprs {
        let bytes = e.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let starts_name = (e[i..].starts_with("shoal_") || e[i..].starts_with("process_"))
                && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
            if starts_name {
                let end = e[i..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(e.len(), |n| i + n);
                names.insert(e[i..end].to_string());
                i = end;
            } else {
                i += 1;
            }
        }
    }
    names
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_exports_what_the_dashboard_queries() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, addrs) = start_cluster(dir.path(), 3, 4);
    let status: Vec<String> = nodes.iter().map(status_addr).collect();
    // Every node says it is alive, then ready.
    let deadline = Instant::now() + Duration::from_secs(60);
    for s in &status {
        loop {
            match http_get(s, "/ready") {
                Some((200, body)) => {
                    assert_eq!(body, "ready\n");
                    break;
                }
                Some((503, body)) => assert_eq!(body, "starting\n"),
                _ => {}
            }
            assert!(Instant::now() < deadline, "node {s} not ready in 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(http_get(s, "/health"), Some((200, "ok\n".to_string())));
    }

    // Some traffic: writes, reads, a scan.
    let client = connect(addrs.clone()).await;
    for i in 0..50u32 {
        client.put(format!("k{i:03}"), "v").await.unwrap();
    }
    assert_eq!(
        client.get("k007").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(client.scan("k", "l", 100).await.unwrap().len(), 50);

    let mut exported = BTreeSet::new();
    let mut families = BTreeSet::new();
    let mut totals = std::collections::HashMap::new();
    for s in &status {
        let (code, text) = http_get(s, "/metrics").expect("scrape");
        assert_eq!(code, 200);
        // Parsed as Prometheus text.
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
        assert!(scrape.samples.len() > 50, "{text}");
        for sample in &scrape.samples {
            if let prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) =
                sample.value
            {
                *totals.entry(sample.metric.clone()).or_insert(0.0) += v;
            }
        }
        exported.extend(exported_names(&text));
        families.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("# TYPE "))
                .filter_map(|l| l.split_whitespace().next())
                .map(String::from),
        );
    }
    // What the traffic must have moved.
    for name in [
        "shoal_fsyncs_total",
        "shoal_proposals_total",
        "shoal_applied_entries_total",
        "shoal_raft_messages_sent_total",
        "shoal_raft_messages_received_total",
        "shoal_transport_store_batches_total",
        "shoal_regions",
        "shoal_leaders",
        // (process_cpu_seconds_total counts whole seconds: 0 this early.)
        "process_resident_memory_bytes",
    ] {
        assert!(
            totals.get(name).copied().unwrap_or(0.0) > 0.0,
            "{name} did not count: {totals:?}"
        );
    }
    // docs/metrics.md names every family a node exports.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
        .expect("docs/metrics.md");
    let undocumented: Vec<_> = families
        .iter()
        .filter(|n| !doc.contains(&format!("`{n}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "docs/metrics.md does not list {undocumented:?}"
    );
    let missing: Vec<_> = dashboard_names()
        .into_iter()
        .filter(|n| !exported.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics no node exports: {missing:?}"
    );

    // A node told to stop says `draining` while it closes its connections (the
    // other nodes keep their Raft streams to it open for a while).
    let pid = nodes[0].child.as_ref().unwrap().id();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let answer = http_get(&status[0], "/ready");
        match &answer {
            Some((503, body)) if body == "draining\n" => break,
            Some(a) if seen.last() != Some(a) => seen.push(a.clone()),
            Some(_) => {}
            None => panic!("the node stopped without saying `draining`: {seen:?}"),
        }
        assert!(Instant::now() < deadline, "never draining: {seen:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(nodes);
}

/// `shoal playground --metrics` prints the scrape config of deploy/prometheus.yml,
/// its targets the playground's nodes.
#[test]
fn the_playground_scrape_config_is_the_deployed_one() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/prometheus.yml");
    let deployed: String = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let printed = shoal_server::playground::scrape_config(&["127.0.0.1:20180"]);
    assert_eq!(printed, deployed);
    let two = shoal_server::playground::scrape_config(&["127.0.0.1:1", "127.0.0.1:2"]);
    assert!(
        two.ends_with("          - 127.0.0.1:1\n          - 127.0.0.1:2\n"),
        "{two}"
    );
}

/// While a node is still joining its cluster, `/health` answers and `/ready` says
/// `starting` (here the cluster it joins is not there: it never gets further).
#[test]
fn a_node_still_joining_is_alive_but_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let status = format!("127.0.0.1:{}", free_port());
    let args: Vec<String> = [
        "--addr",
        &format!("127.0.0.1:{}", free_port()),
        "--status-addr",
        &status,
        "--join",
        &format!("127.0.0.1:{}", free_port()),
        "--data-dir",
        &dir.path().join("store").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut node = NodeProc::start(args, dir.path().join("node.log"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        if let Some(answer) = http_get(&status, "/ready") {
            break answer;
        }
        assert!(
            node.child.as_mut().unwrap().try_wait().unwrap().is_none(),
            "the node exited: {}",
            std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default()
        );
        assert!(Instant::now() < deadline, "no status endpoint in 20 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(ready, (503, "starting\n".to_string()));
    assert_eq!(
        http_get(&status, "/health"),
        Some((200, "ok\n".to_string()))
    );
    node.kill();
}
