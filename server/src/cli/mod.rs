//! The client-side commands of `shoal`: `kv` and `admin`, on `shoal-client`.
//!
//! Layout:
//! - this module: [`Endpoints`], [`KvCommand`] and [`run_kv`];
//! - [`admin`]: [`AdminCommand`] and [`run_admin`] (`status`, `regions`, `region`,
//!   `split`, `merge`, `checksum`);
//! - [`checksum`]: `admin checksum`, comparing the replicas' digests;
//! - [`membership`]: `admin stores`, `add-peer`, `remove-peer`, `transfer-leader`,
//!   `move-replica`, `remove-store`;
//! - [`keys`]: how keys are printed (escaped, `-inf`/`+inf`) and read (text, hex,
//!   escaped);
//! - [`render`]: the region table, detail view and JSON.

pub mod admin;
pub mod checksum;
pub mod keys;
pub mod membership;
pub mod render;

use clap::{Args, Subcommand};
use shoal_client::{Client, ClientConfig};

pub use admin::{run_admin, AdminCommand};

/// Where the cluster is.
#[derive(Args, Clone, Debug)]
pub struct Endpoints {
    /// Comma-separated gRPC addresses of one or more nodes.
    #[arg(long, default_value = "127.0.0.1:20160", value_delimiter = ',')]
    pub endpoints: Vec<String>,
}

/// `shoal kv ...`
#[derive(Subcommand, Debug)]
pub enum KvCommand {
    /// Sets KEY to VALUE.
    Put {
        /// The key (UTF-8 text).
        key: String,
        /// The value (UTF-8 text).
        value: String,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Prints the value of KEY (exit code 1 when absent).
    Get {
        /// The key.
        key: String,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Removes KEY.
    Delete {
        /// The key.
        key: String,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Prints the pairs in [START, END) in key order, one `key<TAB>value` per line.
    Scan {
        /// First key (inclusive); "" for the beginning.
        start: String,
        /// End key (exclusive); "" for the end of the key space.
        end: String,
        /// Most pairs to print.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        endpoints: Endpoints,
    },
}

/// The client settings of the membership commands: a membership change or a leader
/// transfer answers once its effect is applied (up to 10 s at the leader), so one
/// attempt may take longer than a key-value call.
pub(crate) fn client_config() -> ClientConfig {
    ClientConfig {
        rpc_timeout: std::time::Duration::from_secs(30),
        request_timeout: std::time::Duration::from_secs(60),
        ..ClientConfig::default()
    }
}

async fn connect(e: &Endpoints) -> Result<Client, String> {
    Client::connect(e.endpoints.clone(), ClientConfig::default())
        .await
        .map_err(|e| format!("cannot reach the cluster: {e}"))
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a `kv` command. Returns the process exit code.
pub async fn run_kv(cmd: KvCommand) -> Result<i32, String> {
    match cmd {
        KvCommand::Put {
            key,
            value,
            endpoints,
        } => {
            connect(&endpoints)
                .await?
                .put(key, value)
                .await
                .map_err(|e| e.to_string())?;
            println!("OK");
        }
        KvCommand::Get { key, endpoints } => match connect(&endpoints)
            .await?
            .get(&key)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(v) => println!("{}", show(&v)),
            None => {
                eprintln!("{key}: not found");
                return Ok(1);
            }
        },
        KvCommand::Delete { key, endpoints } => {
            connect(&endpoints)
                .await?
                .delete(key)
                .await
                .map_err(|e| e.to_string())?;
            println!("OK");
        }
        KvCommand::Scan {
            start,
            end,
            limit,
            endpoints,
        } => {
            let pairs = connect(&endpoints)
                .await?
                .scan(start, end, limit)
                .await
                .map_err(|e| e.to_string())?;
            for (k, v) in pairs {
                println!("{}\t{}", show(&k), show(&v));
            }
        }
    }
    Ok(0)
}
