//! The logging flags of `shoal`: `--log-format json --log-file F` makes a node
//! append one JSON object per line to F (and nothing to stderr but its start-up
//! line); a bad format, filter or file is refused with the reason, before anything
//! starts.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Nodes};

fn shoal(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run shoal")
}

#[test]
fn a_node_logs_json_lines_to_its_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("node.log");
    let stderr = dir.path().join("stderr");
    let child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["node", "--addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--status-addr", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--log-format", "json", "--log-file"])
        .arg(&log)
        .env("RUST_LOG", "error") // the flag's absence would let this through
        .args(["--log-level", "info"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("start shoal node");
    let node = Nodes(vec![child]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("serving Kv, Admin and Raft") && text.ends_with('\n') {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no start-up line in {log:?}: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(node);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    let serving = lines
        .iter()
        .find(|l| l["fields"]["message"] == "serving Kv, Admin and Raft")
        .expect("the start-up line");
    assert_eq!(serving["level"], "INFO");
    assert!(serving["timestamp"].is_string(), "{serving}");
    // stderr keeps the one line `shoal node` prints itself, and no log line.
    let err = std::fs::read_to_string(&stderr).unwrap();
    assert!(err.starts_with("shoal: starting store"), "{err}");
    assert!(!err.contains("serving Kv"), "{err}");
}

#[test]
fn bad_logging_settings_are_refused_with_the_reason() {
    let out = shoal(&["--log-format", "xml", "kv", "get", "k"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid value 'xml' for '--log-format <FORMAT>'"),
        "{err}"
    );
    assert!(err.contains("[possible values: text, json]"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir/shoal.log");
    let out = shoal(&["kv", "get", "k", "--log-file", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "shoal: cannot open the log file {}",
            missing.display()
        )),
        "{err}"
    );

    let out = shoal(&["node", "--log-level", "info,raft=loudest"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("log-level \"info,raft=loudest\" is not a tracing filter"),
        "{err}"
    );

    // In a config file too, naming the file.
    let file = dir.path().join("node.toml");
    std::fs::write(&file, "log-format = \"xml\"\n").unwrap();
    let out = shoal(&["node", "--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node.toml") && err.contains("unknown variant `xml`"),
        "{err}"
    );
}

/// A `RUST_LOG` that is not a filter (it may be meant for another program) is
/// ignored with a warning; the command runs.
#[test]
fn a_bad_rust_log_is_ignored_with_a_warning() {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["node", "--print-config"])
        .env("RUST_LOG", "info,shoal=notalevel")
        .output()
        .expect("run shoal");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("ignoring RUST_LOG"), "{stderr}");
}
