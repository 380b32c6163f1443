//! `shoal bench` against a real node process: the report counts exactly the requests
//! asked for, reads the node's counters and CPU time, and bad options or a missing
//! etcd are refused with a clear message.

mod common;

use std::time::Duration;

use common::{free_port, shoal, start_nodes};

fn json_number(json: &serde_json::Value, path: &[&str]) -> f64 {
    let mut v = json;
    for p in path {
        v = &v[*p];
    }
    v.as_f64()
        .unwrap_or_else(|| panic!("{path:?} missing in {json}"))
}

#[test]
fn bench_reports_requests_counters_and_cpu_of_a_real_node() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let _node = start_nodes(dir.path(), std::slice::from_ref(&addr), 4);
    let out_file = dir.path().join("report.json");
    let mut last = None;
    // The node needs a moment to elect its leaders; the client retries within its
    // deadline, and we retry the whole run a few times on a slow machine.
    for _ in 0..5 {
        let out = shoal(&[
            "bench",
            "mixed",
            "--endpoints",
            &addr,
            "--clients",
            "4",
            "--keys",
            "200",
            "--ops",
            "300",
            "--warmup",
            "200ms",
            "--json",
            out_file.to_str().unwrap(),
            "--quiet",
        ]);
        if out.status.success() {
            last = Some(out);
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
        last = Some(out);
    }
    let out = last.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ops/s"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(json_number(&json, &["ops"]), 300.0);
    assert_eq!(json_number(&json, &["errors"]), 0.0);
    assert_eq!(json_number(&json, &["regions"]), 4.0);
    let node = &json["cluster_work"]["nodes"][0];
    // Mixed is 90% reads: the 30-odd writes need at least one fsync, and the node
    // runs here, so its CPU time is read from /proc.
    assert!(json_number(node, &["fsyncs"]) >= 1.0, "{node}");
    assert!(json_number(node, &["cpu_seconds"]) > 0.0, "{node}");
    assert!(json_number(&json, &["latency", "p99_ms"]) > 0.0);
}

#[test]
fn bench_refuses_bad_options_with_the_option_named() {
    let out = shoal(&["bench", "--clients", "0", "--endpoints", "127.0.0.1:1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--clients 0"), "{err}");

    let out = shoal(&["bench", "--duration", "soon"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a duration"));
}

#[test]
fn bench_compare_without_etcd_says_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let out = shoal(&[
        "bench-compare",
        "--etcd-bin",
        "/nonexistent/etcd",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("apt-get install etcd-server"), "{err}");
}

/// A benchmark of a degraded cluster runs: one store of three is down, and the
/// report gives the counters of the two that answer and names the one that did
/// not (it used to refuse to run: "cannot read the status of store 3").
#[test]
fn bench_runs_on_a_cluster_with_a_store_down_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, addrs) = common::start_cluster(dir.path(), 3, 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = common::connect(addrs.clone()).await;
        client.put("k", "v").await.unwrap();
    });
    nodes[2].kill();
    let endpoints = format!("{},{}", addrs[0], addrs[1]);
    let out_file = dir.path().join("report.json");
    let out = shoal(&[
        "bench",
        "put",
        "--endpoints",
        &endpoints,
        "--clients",
        "4",
        "--ops",
        "200",
        "--warmup",
        "500ms",
        "--json",
        out_file.to_str().unwrap(),
        "--quiet",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("store 3 ({}): did not answer", addrs[2])),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    let work = &json["cluster_work"];
    let answered: Vec<u64> = work["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["store_id"].as_u64().unwrap())
        .collect();
    assert_eq!(answered, [1, 2], "{work}");
    assert_eq!(work["silent"][0]["store_id"].as_u64(), Some(3), "{work}");
    assert!(json_number(&json, &["ops"]) >= 200.0, "{json}");
}
