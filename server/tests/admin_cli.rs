//! `shoal admin ...` against a real single-node cluster with 4 initial regions: the
//! region table, JSON and detail views show the 4 regions covering the key space with
//! their leader on store 1; an unknown region and an empty split key are refused with
//! a clear message and a non-zero exit code. Successful splits and merges through the
//! Admin API are in `split_merge.rs`.

mod common;

use std::process::Output;

use common::{free_port, shoal, start_nodes};
use std::time::{Duration, Instant};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `shoal admin ARGS --endpoints ADDR`, which must succeed.
fn admin_ok(addr: &str, args: &[&str]) -> String {
    let out = admin(addr, args);
    assert!(
        out.status.success(),
        "shoal admin {args:?}: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

fn admin(addr: &str, args: &[&str]) -> Output {
    let mut all = vec!["admin"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--endpoints", addr]);
    shoal(&all)
}

/// Waits until every region has a leader, and returns the JSON listing.
fn wait_for_leaders(addr: &str) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = admin(addr, &["regions", "--json"]);
        if out.status.success() {
            let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let regions = json.as_array().unwrap().clone();
            if regions.len() == 4 && regions.iter().all(|r| !r["leader_store"].is_null()) {
                return regions;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no leaders after 60s: {}\n{}",
            stdout(&out),
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn admin_commands_against_a_real_node() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let _node = start_nodes(dir.path(), std::slice::from_ref(&addr), 4);

    // JSON: 4 regions, ids 1..=4, contiguous from -inf to +inf, led by store 1.
    let regions = wait_for_leaders(&addr);
    let ids: Vec<u64> = regions.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![1, 2, 3, 4]);
    assert_eq!(regions[0]["start_key_hex"], "");
    assert_eq!(regions[3]["end_key_hex"], "");
    for pair in regions.windows(2) {
        assert_eq!(pair[0]["end_key_hex"], pair[1]["start_key_hex"], "{pair:?}");
        assert_ne!(pair[0]["end_key_hex"], "");
    }
    assert_eq!(regions[1]["start_key"], "@\\x00");
    assert_eq!(regions[1]["start_key_hex"], "4000");
    for r in &regions {
        assert_eq!(r["leader_store"], 1, "{r}");
        assert_eq!(r["leader"]["store_id"], 1, "{r}");
        let peers = r["peers"].as_array().unwrap();
        assert_eq!(peers.len(), 1, "{r}");
        assert_eq!(peers[0]["store_id"], 1);
        assert_eq!(peers[0]["role"], "voter");
        assert_eq!(r["epoch"]["conf_ver"], 1);
        assert!(r["approximate_size"].is_u64() && r["approximate_keys"].is_u64());
    }

    // The table: a header and one row per region, keys escaped, -inf/+inf bounds.
    let table = admin_ok(&addr, &["regions"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert!(lines[0].starts_with("ID  START"), "{table}");
    let expected = [
        ("1", "-inf", "\"@\\x00\""),
        ("2", "\"@\\x00\"", "\"\\x80\\x00\""),
        ("3", "\"\\x80\\x00\"", "\"\\xc0\\x00\""),
        ("4", "\"\\xc0\\x00\"", "+inf"),
    ];
    for (line, (id, start, end)) in lines[1..].iter().zip(expected) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&cells[..3], &[id, start, end], "{table}");
        let peer = regions[id.parse::<usize>().unwrap() - 1]["peers"][0]["peer_id"].clone();
        // EPOCH, LEADER (store 1), PEERS (peer@1).
        assert_eq!(cells[3], "1/1", "{table}");
        assert_eq!(cells[4], "1", "{table}");
        assert_eq!(cells[5], format!("{peer}@1"), "{table}");
    }

    // One region, as text and JSON.
    for r in &regions {
        let id = r["id"].to_string();
        let text = admin_ok(&addr, &["region", &id]);
        assert!(text.starts_with(&format!("region {id}\n")), "{text}");
        assert!(
            text.contains(&format!(
                "leader:       peer {} on store 1",
                r["leader"]["peer_id"]
            )),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&admin_ok(&addr, &["region", &id, "--json"])).unwrap();
        assert_eq!(json["id"], r["id"]);
        assert_eq!(json["start_key_hex"], r["start_key_hex"]);
        assert_eq!(json["end_key_hex"], r["end_key_hex"]);
        assert_eq!(json["leader_store"], 1);
        // Its one replica, with its log bounds and applied index.
        assert!(text.contains("  replicas:\n    store 1 (peer "), "{text}");
        let replica = &json["replicas"][0];
        assert_eq!(replica["store_id"], 1);
        let (first, last, applied) = (
            replica["first_log_index"].as_u64().unwrap(),
            replica["last_log_index"].as_u64().unwrap(),
            replica["applied_index"].as_u64().unwrap(),
        );
        assert!(
            first >= 6 && first <= last + 1 && applied <= last,
            "{replica}"
        );
    }
    let text = admin_ok(&addr, &["region", "3"]);
    assert!(
        text.contains("start key:    \"\\x80\\x00\" (hex 8000)"),
        "{text}"
    );

    // A region no store knows.
    let out = admin(&addr, &["region", "999999"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("region 999999 not found: no store knows it"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());

    // An empty split key, either form.
    for args in [
        &["split", ""][..],
        &["split", "--region", "1", "--keys", ""],
    ] {
        let out = admin(&addr, args);
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("split refused") && err.contains("empty key"),
            "{args:?}: {err}"
        );
    }
    // A bad hex key is refused before anything is sent.
    let out = admin(&addr, &["split", "--hex", "zz"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not hex"), "{}", stderr(&out));

    // Merging regions that do not exist.
    let out = admin(&addr, &["merge", "999998", "999999"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));

    // Checksum: refused as not implemented by this server, or (once it is) one line
    // for the only replica, which has nothing to be compared with.
    let out = admin(&addr, &["checksum", "1"]);
    let (text, err) = (stdout(&out), stderr(&out));
    match out.status.code() {
        Some(1) => assert!(err.contains("checksum refused by the cluster"), "{err}"),
        Some(3) => {
            assert!(text.starts_with("store 1 ("), "{text}");
            assert!(text.contains("inconclusive"), "{text}");
        }
        other => panic!("exit {other:?}: {text}\n{err}"),
    }

    // Status still prints the store's counters.
    let status = admin_ok(&addr, &["status"]);
    assert!(status.starts_with(&format!("store 1 ({addr}")), "{status}");
    assert!(status.contains("regions 4 leaders 4"), "{status}");
    assert!(
        status.contains("entries truncated | snapshots generated 0 sent 0"),
        "{status}"
    );
}

#[test]
fn every_admin_command_documents_its_options() {
    for cmd in ["status", "regions", "region", "split", "merge", "checksum"] {
        let out = shoal(&["admin", cmd, "--help"]);
        assert!(out.status.success(), "{cmd}");
        let help = stdout(&out);
        assert!(help.contains("--endpoints <ENDPOINTS>"), "{cmd}: {help}");
        assert!(
            help.contains("Comma-separated gRPC addresses"),
            "{cmd}: {help}"
        );
    }
    let help = stdout(&shoal(&["admin", "split", "--help"]));
    for needle in [
        "--region <ID>",
        "--keys <K1,K2,...>",
        "--hex",
        "--escaped",
        "-inf",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
    let help = stdout(&shoal(&["admin", "regions", "--help"]));
    assert!(
        help.contains("+inf") && help.contains("\\xNN") && help.contains("--json"),
        "{help}"
    );
    let help = stdout(&shoal(&["admin", "checksum", "--help"]));
    assert!(help.contains("Exit codes"), "{help}");
}
