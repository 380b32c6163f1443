//! docs/config.md, `shoal node --print-config` and `shoal node --help` agree: the
//! same settings under the same names, and the defaults the doc gives are the real
//! ones. A setting added to `NodeConfig` without its row in docs/config.md fails
//! here.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use shoal_server::config::{NodeConfig, SETTINGS};

/// One row of the settings table of docs/config.md.
#[derive(Debug)]
struct Row {
    flag: String,
    default: toml::Value,
    meaning: String,
}

/// The text of the first code span (`...`) of a table cell.
fn code(cell: &str) -> &str {
    cell.split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no `code` in cell {cell:?}"))
}

/// The settings table of docs/config.md, by key.
fn doc_rows() -> BTreeMap<String, Row> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/config.md");
    let text = std::fs::read_to_string(path).expect("docs/config.md");
    let mut lines = text
        .lines()
        .skip_while(|l| l.trim() != "| key | flag | default | meaning |")
        .skip(2);
    let mut rows = BTreeMap::new();
    for line in lines.by_ref().take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.splitn(6, '|').map(str::trim).collect();
        assert_eq!(cells.len(), 6, "not a 4-column row: {line}");
        let key = code(cells[1]).to_string();
        let default = toml::from_str::<toml::Table>(&format!("v = {}", code(cells[3])))
            .unwrap_or_else(|e| panic!("{key}: default {:?} is not TOML: {e}", cells[3]))["v"]
            .clone();
        let row = Row {
            flag: code(cells[2]).to_string(),
            default,
            meaning: cells[4].to_string(),
        };
        assert!(rows.insert(key.clone(), row).is_none(), "{key} twice");
    }
    assert!(!rows.is_empty(), "docs/config.md has no settings table");
    rows
}

/// `shoal ARGS` with no `RUST_LOG` or `SHOAL_ENDPOINTS`; its stdout, which must
/// come with success.
fn shoal(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("SHOAL_ENDPOINTS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shoal {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn docs_list_every_setting_with_its_flag_and_real_default() {
    let rows = doc_rows();
    let documented: BTreeSet<&String> = rows.keys().collect();
    let settings: Vec<String> = SETTINGS.iter().map(|s| s.key()).collect();
    let declared: BTreeSet<&String> = settings.iter().collect();
    let missing: Vec<_> = declared.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&declared).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/config.md is out of date: settings without a row {missing:?}, rows \
         without a setting {stale:?}"
    );
    let defaults = toml::Table::try_from(NodeConfig::default()).unwrap();
    for (key, row) in &rows {
        assert_eq!(row.flag, format!("--{key}"), "{key}: flag");
        assert_eq!(
            row.default, defaults[key],
            "{key}: default in docs/config.md"
        );
        assert!(!row.meaning.is_empty(), "{key}: no meaning");
    }
}

#[test]
fn the_binary_prints_and_takes_the_documented_settings() {
    let rows = doc_rows();
    // --print-config: one `key = value` per documented setting, the defaults.
    let printed = shoal(&["node", "--print-config"]);
    let parsed: toml::Table = toml::from_str(&printed).unwrap();
    let printed_keys: BTreeSet<&String> = parsed.keys().collect();
    assert_eq!(printed_keys, rows.keys().collect::<BTreeSet<_>>());
    for (key, row) in &rows {
        assert_eq!(parsed[key], row.default, "{key}: printed default");
    }
    // --help: a flag per documented setting (the logging ones are global), plus
    // --config and --print-config.
    let help = shoal(&["node", "--help"]);
    let flags: BTreeSet<String> = help
        .lines()
        .filter_map(|l| l.strip_prefix("      --"))
        .map(|l| format!("--{}", l.split_whitespace().next().unwrap_or_default()))
        .collect();
    let mut expected: BTreeSet<String> = rows.values().map(|r| r.flag.clone()).collect();
    expected.extend(["--config".to_string(), "--print-config".to_string()]);
    assert_eq!(flags, expected);
}

#[test]
fn printed_config_round_trips_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let printed = shoal(&[
        "node",
        "--store-id",
        "2",
        "--join",
        "127.0.0.1:20160",
        "--max-value-size",
        "2048",
        "--log-format",
        "json",
        "--print-config",
    ]);
    let file = dir.path().join("node.toml");
    std::fs::write(&file, &printed).unwrap();
    let again = shoal(&["node", "--config", file.to_str().unwrap(), "--print-config"]);
    assert_eq!(again, printed);
    let c: NodeConfig = toml::from_str(&printed).unwrap();
    assert_eq!(
        (c.store_id, c.join.as_str(), c.max_value_size),
        (2, "127.0.0.1:20160", 2048)
    );
}

/// A u64 setting above TOML's largest integer (i64::MAX) is refused by name, with
/// the usual error exit, instead of panicking when printed.
#[test]
fn a_setting_too_large_for_toml_is_refused_not_a_panic() {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "node",
            "--raft-log-gc-count-limit",
            &u64::MAX.to_string(),
            "--print-config",
        ])
        .env_remove("RUST_LOG")
        .env_remove("SHOAL_ENDPOINTS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {out:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("raft-log-gc-count-limit is out of range"),
        "{stderr}"
    );
    // At the largest TOML integer it is printed and reads back.
    let printed = shoal(&[
        "node",
        "--raft-log-gc-count-limit",
        &i64::MAX.to_string(),
        "--print-config",
    ]);
    assert!(printed.contains(&format!("raft-log-gc-count-limit = {}", i64::MAX)));
}
