//! The node's settings under one name: every field of `NodeConfig` is a TOML key and
//! (but for the global logging flags) a `shoal node` flag of the same kebab-case
//! name, whose help ends with its real default; a flag overrides the config file;
//! `--print-config`'s TOML reads back to an equal configuration. `config_docs.rs`
//! checks docs/config.md against the same list.

use std::collections::BTreeSet;

use clap::{Args, Command, FromArgMatches};
use shoal_server::config::{NodeArgs, NodeConfig, GLOBAL_FLAG_SETTINGS, SETTINGS};
use shoal_server::logging::{LogArgs, LogFormat};

/// `shoal node` as the binary builds it: its own flags and the global logging ones.
fn node_command() -> Command {
    LogArgs::augment_args(NodeArgs::augment_args(Command::new("node")))
}

/// Parses `shoal node ARGS`, then merges the configuration with no `RUST_LOG`.
fn parse(args: &[&str]) -> Result<NodeConfig, String> {
    let argv = std::iter::once("node").chain(args.iter().copied());
    let m = node_command()
        .try_get_matches_from(argv)
        .map_err(|e| e.to_string())?;
    let node = NodeArgs::from_arg_matches(&m).map_err(|e| e.to_string())?;
    let log = LogArgs::from_arg_matches(&m).map_err(|e| e.to_string())?;
    node.into_config(&log, None)
}

fn keys() -> BTreeSet<String> {
    SETTINGS.iter().map(|s| s.key()).collect()
}

/// The long flags of `cmd`, but `--help`.
fn long_flags(cmd: &Command) -> BTreeSet<String> {
    cmd.get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| *l != "help")
        .map(String::from)
        .collect()
}

/// A default as TOML, the way `--print-config` and docs/config.md show it.
fn default_toml(key: &str) -> toml::Value {
    toml::Table::try_from(NodeConfig::default()).unwrap()[key].clone()
}

#[test]
fn every_field_is_a_setting_with_a_doc_and_a_kebab_case_key() {
    let table = toml::Table::try_from(NodeConfig::default()).unwrap();
    let serde_keys: BTreeSet<String> = table.keys().cloned().collect();
    assert_eq!(serde_keys, keys(), "TOML keys and SETTINGS differ");
    assert_eq!(SETTINGS.len(), keys().len(), "a setting is declared twice");
    for s in SETTINGS {
        assert_eq!(s.key(), s.field.replace('_', "-"));
        assert!(s.meaning().len() > 10, "{} has no doc", s.key());
    }
}

#[test]
fn node_flags_are_the_settings_with_the_same_names() {
    let node = NodeArgs::augment_args(Command::new("node"));
    let mut expected: BTreeSet<String> = keys()
        .into_iter()
        .filter(|k| !GLOBAL_FLAG_SETTINGS.contains(&k.as_str()))
        .collect();
    expected.insert("config".into());
    expected.insert("print-config".into());
    assert_eq!(long_flags(&node), expected);
    // The logging settings are the global flags, by the same names.
    let log = LogArgs::augment_args(Command::new("any"));
    let globals: BTreeSet<String> = GLOBAL_FLAG_SETTINGS.iter().map(|s| s.to_string()).collect();
    assert_eq!(long_flags(&log), globals);
    assert!(log.get_arguments().all(|a| a.is_global_set()));
}

#[test]
fn each_flag_help_ends_with_its_real_default() {
    let cmd = node_command();
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if ["help", "config", "print-config"].contains(&long) {
            continue;
        }
        let help = arg.get_help().expect("every flag has help").to_string();
        let shown = help
            .rsplit_once("[default: ")
            .and_then(|(_, d)| d.strip_suffix(']'))
            .unwrap_or_else(|| panic!("--{long}: help does not end with [default: ...]: {help}"));
        let real = match default_toml(long) {
            toml::Value::String(s) if long == "log-file" && s.is_empty() => "stderr".into(),
            toml::Value::String(s) if s.is_empty() => "\"\"".into(),
            toml::Value::String(s) => s,
            v => v.to_string(),
        };
        assert_eq!(shown, real, "--{long}");
    }
}

#[test]
fn flags_override_the_file_which_overrides_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(
        &file,
        "max-value-size = 100\nraft-tick-ms = 50\nlog-format = \"json\"\npollers = 3\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let c = parse(&["--config", path]).unwrap();
    assert_eq!((c.max_value_size, c.raft_tick_ms, c.pollers), (100, 50, 3));
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.max_batch_keys, NodeConfig::default().max_batch_keys);
    let c = parse(&[
        "--config",
        path,
        "--max-value-size",
        "200",
        "--log-format",
        "text",
        "--raft-merge-writes=false",
        "--region-max-keys",
        "7",
    ])
    .unwrap();
    assert_eq!((c.max_value_size, c.raft_tick_ms), (200, 50));
    assert_eq!(c.log_format, LogFormat::Text);
    assert!(!c.raft_merge_writes);
    assert_eq!(c.region_max_keys, 7);
    // Bad values are refused, naming the flag or the setting.
    let err = parse(&["--log-format", "xml"]).unwrap_err();
    assert!(
        err.contains("invalid value 'xml' for '--log-format"),
        "{err}"
    );
    let err = parse(&["--pollers", "many"]).unwrap_err();
    assert!(err.contains("--pollers"), "{err}");
    let err = parse(&["--pollers", "1000"]).unwrap_err();
    assert!(err.contains("pollers must be 0..=256"), "{err}");
    let err = parse(&["--log-level", "info,raft=loudest"]).unwrap_err();
    assert!(err.contains("log-level \"info,raft=loudest\""), "{err}");
}

#[test]
fn printed_config_reads_back_equal() {
    let c = parse(&[
        "--store-id",
        "3",
        "--initial-cluster",
        "1=127.0.0.1:1,2=127.0.0.1:2,3=127.0.0.1:3",
        "--data-dir",
        "/var/lib/shoal \"quoted\"",
        "--raft-skip-bcast-commit",
        "false",
        "--log-level",
        "info,shoal_raftstore=debug",
        "--log-format",
        "json",
        "--log-file",
        "/var/log/shoal.log",
    ])
    .unwrap();
    let text = c.to_commented_toml().unwrap();
    let back: NodeConfig = toml::from_str(&text).unwrap();
    assert_eq!(back, c);
    // Every setting is there, after its meaning and its default.
    for s in SETTINGS {
        let key = s.key();
        let at = text
            .find(&format!("\n{key} = "))
            .unwrap_or_else(|| panic!("{key} is not printed"));
        let comment = format!("# Default: {}\n", default_toml(&key));
        assert!(text[..at + 1].ends_with(&comment), "{key}: {comment:?}");
    }
    let defaults = NodeConfig::default();
    let back: NodeConfig = toml::from_str(&defaults.to_commented_toml().unwrap()).unwrap();
    assert_eq!(back, defaults);
}

#[test]
fn zero_pollers_means_the_raftstore_default() {
    let c = NodeConfig::default();
    assert_eq!(c.pollers, 0);
    assert_eq!(
        c.raftstore().pollers,
        shoal_raftstore::Config::default().pollers
    );
    let c = NodeConfig {
        pollers: 3,
        ..NodeConfig::default()
    };
    assert_eq!(c.raftstore().pollers, 3);
}
