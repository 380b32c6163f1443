//! The `shoal` command: runs a storage node and talks to a cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Shoal: a multi-raft sharded key-value storage engine.
#[derive(Parser)]
#[command(name = "shoal", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a storage node.
    Node {
        /// The directory holding the node's data (`raft/` and `kv/`).
        #[arg(long, default_value = "shoal-data")]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Node { data_dir } => {
            if let Err(e) = shoal_engine::rocks::Engines::open(&data_dir) {
                eprintln!("shoal: {e}");
                return ExitCode::FAILURE;
            }
            eprintln!(
                "shoal: opened the engines in {}; the node itself (Raft, gRPC services) is not implemented yet",
                data_dir.display()
            );
            ExitCode::from(2)
        }
    }
}
