//! Where `shoal kv` and `shoal admin` find the cluster, against a real single-node
//! cluster: `--endpoints` before the command, after `kv`/`admin`, after the
//! subcommand, or `SHOAL_ENDPOINTS`; the flag nearest the command wins, any flag
//! wins over the environment. The address that must lose is one nothing listens on
//! (or an empty list, refused at once), so a wrong precedence fails the command.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{free_port, start_nodes};

/// Nothing listens here.
const WRONG: &str = "127.0.0.1:1";

/// `shoal ARGS` with `SHOAL_ENDPOINTS` set to `env` (unset when `None`).
fn shoal_env(env: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.args(args).env("RUST_LOG", "warn");
    match env {
        Some(v) => cmd.env("SHOAL_ENDPOINTS", v),
        None => cmd.env_remove("SHOAL_ENDPOINTS"),
    };
    cmd.output().expect("run shoal")
}

/// Its stdout, which must come with success.
fn ok(env: Option<&str>, args: &[&str]) -> String {
    let out = shoal_env(env, args);
    assert!(
        out.status.success(),
        "SHOAL_ENDPOINTS={env:?} shoal {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn endpoints_are_taken_where_people_type_them() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let _node = start_nodes(dir.path(), std::slice::from_ref(&addr), 1);
    let a = addr.as_str();

    // Before the command, as etcdctl and tikv-ctl take it (retried until the node
    // is up).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !shoal_env(None, &["--endpoints", a, "kv", "put", "k", "v"])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "the node never took a put");
        std::thread::sleep(Duration::from_millis(200));
    }
    // After `kv`, after the subcommand, and from the environment.
    assert_eq!(ok(None, &["kv", "--endpoints", a, "get", "k"]), "v\n");
    assert_eq!(ok(None, &["kv", "get", "k", "--endpoints", a]), "v\n");
    assert_eq!(ok(Some(a), &["kv", "get", "k"]), "v\n");
    ok(Some(a), &["admin", "regions", "--json"]);
    ok(None, &["admin", "--endpoints", a, "stores"]);

    // The nearest flag wins over an earlier one.
    assert_eq!(
        ok(
            None,
            &["--endpoints", WRONG, "kv", "--endpoints", a, "get", "k"]
        ),
        "v\n"
    );
    assert_eq!(
        ok(
            None,
            &["--endpoints", WRONG, "kv", "get", "k", "--endpoints", a]
        ),
        "v\n"
    );
    assert_eq!(
        ok(
            None,
            &["kv", "--endpoints", WRONG, "get", "k", "--endpoints", a]
        ),
        "v\n"
    );
    ok(
        None,
        &[
            "--endpoints",
            WRONG,
            "admin",
            "region",
            "1",
            "--endpoints",
            a,
        ],
    );
    // Flags win over the environment.
    assert_eq!(
        ok(Some(WRONG), &["kv", "get", "k", "--endpoints", a]),
        "v\n"
    );
    assert_eq!(
        ok(Some(WRONG), &["--endpoints", a, "kv", "get", "k"]),
        "v\n"
    );
    ok(Some(WRONG), &["admin", "--endpoints", a, "status"]);

    // ... and the losing one is not used: an empty list after the subcommand wins
    // over a good one before the command, and is refused at once.
    let out = shoal_env(
        Some(a),
        &["--endpoints", a, "kv", "get", "k", "--endpoints", ""],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no endpoints given"), "{err}");
}

#[test]
fn endpoints_before_another_command_are_refused() {
    let out = shoal_env(None, &["--endpoints", WRONG, "node", "--print-config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--endpoints before the command is for `kv` and `admin`"),
        "{err}"
    );
    // From the environment, it is simply not used by other commands.
    let out = shoal_env(Some(WRONG), &["node", "--print-config"]);
    assert!(out.status.success());
}
