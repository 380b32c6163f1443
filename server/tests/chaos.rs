//! The chaos suite's short run, so that every change is checked by CI: `shoal
//! chaos` with every nemesis (kill, pause, partition, admin, and disk when the
//! binary has failpoints, as `make test` builds it) on a few fixed seeds, each run's checks (linearizability, no lost write,
//! replicas agree, regions cover the key space, no node exited) required to pass;
//! the last run with mutual TLS on every connection.
//! `make chaos` is the long version.

use std::process::Command;

/// Runs `shoal chaos` with `args`, printing its output; panics with the summary
/// unless every check passed.
fn chaos(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("chaos")
        .args(args)
        .arg("--dir")
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    if !out.status.success() {
        // What the run left, for the failure report (CI keeps only the output).
        let run = dir.path().join("run");
        let nemesis = std::fs::read_to_string(run.join("nemesis.log")).unwrap_or_default();
        println!("--- nemesis.log\n{nemesis}");
        for id in 1..=5 {
            if let Ok(log) = std::fs::read_to_string(run.join(format!("node-{id}.log"))) {
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                println!("--- node-{id}.log (last 30 lines)\n{}", tail.join("\n"));
            }
        }
    }
    assert!(
        out.status.success(),
        "shoal chaos {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for check in [
        "register linearizable",
        "set: no lost or phantom write",
        "regions cover the key space",
        "replicas agree",
        "no node exited",
        "workloads made progress",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("PASS") && l.contains(check)),
            "{check} was not checked:\n{stdout}"
        );
    }
    stdout.into_owned()
}

/// One after the other (two clusters at once would compete for the machine's two
/// cores and turn the run into a load test).
#[test]
fn short_runs_with_every_nemesis_pass_every_check() {
    let every = match cfg!(feature = "failpoints") {
        true => "kill,pause,partition,admin,disk",
        false => "kill,pause,partition,admin",
    };
    chaos(&["--seed", "1", "--duration", "30s", "--nemesis", every]);
    let five = ["--nodes", "5", "--regions", "8"];
    let seed2 = ["--seed", "2", "--duration", "30s", "--nemesis", every];
    chaos(&[&seed2[..], &five[..]].concat());
    // With mutual TLS on every connection.
    let tls = [
        "--tls",
        "--seed",
        "3",
        "--duration",
        "20s",
        "--nemesis",
        every,
    ];
    let stdout = chaos(&tls);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("TLS") && l.contains("on")),
        "{stdout}"
    );
}
