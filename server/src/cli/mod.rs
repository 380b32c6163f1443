//! The client-side commands of `shoal`: `kv` and `admin`, on `shoal-client`.
//!
//! Layout:
//! - this module: [`Endpoints`] (with the precedence of `--endpoints` and
//!   `SHOAL_ENDPOINTS`), [`KvArgs`] and [`run_kv`];
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
use shoal_client::tls::TlsArgs;
use shoal_client::{Client, ClientConfig, TlsPaths};

pub use admin::{run_admin, AdminArgs, AdminCommand};

/// The cluster address `kv` and `admin` dial when none is given: a node started
/// with its defaults.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:20160";

/// The environment variable read when no `--endpoints` flag is given.
pub const ENDPOINTS_ENV: &str = "SHOAL_ENDPOINTS";

/// Where `--endpoints` may go and which one counts (the help of every form).
pub const ENDPOINTS_HELP: &str = "Comma-separated gRPC addresses of one or more nodes \
    (HOST:PORT,...). Given before the command (shoal --endpoints E kv get K), after \
    kv/admin, or after the subcommand; the flag nearest the command wins, any flag \
    wins over SHOAL_ENDPOINTS, and SHOAL_ENDPOINTS over the default \
    [default: 127.0.0.1:20160]";

/// Where the cluster is: `--endpoints` after `kv`/`admin` or after their
/// subcommand (the flag is global inside them, so `shoal kv --endpoints E get K`
/// and `shoal kv get K --endpoints E` both work; the later one wins).
///
/// Precedence, nearest first: this flag, then `shoal --endpoints E` before the
/// command (or [`ENDPOINTS_ENV`] when that flag is absent: clap reads it there),
/// then [`DEFAULT_ENDPOINT`]. [`Endpoints::resolve`] applies it.
#[derive(Args, Clone, Debug, Default)]
pub struct Endpoints {
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        value_name = "ENDPOINTS",
        help = ENDPOINTS_HELP
    )]
    pub endpoints: Option<Vec<String>>,
}

impl Endpoints {
    /// The addresses to dial: this flag's, else `outer` (the flag before the
    /// command, or `SHOAL_ENDPOINTS`), else [`DEFAULT_ENDPOINT`].
    pub fn resolve(&self, outer: Option<&[String]>) -> Vec<String> {
        match (&self.endpoints, outer) {
            (Some(e), _) => e.clone(),
            (None, Some(e)) => e.to_vec(),
            (None, None) => vec![DEFAULT_ENDPOINT.to_string()],
        }
    }
}

/// The cluster a command talks to: its addresses, and the TLS files when its
/// nodes have TLS on.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    pub endpoints: Vec<String>,
    pub tls: Option<TlsPaths>,
}

impl Cluster {
    /// `base` with this cluster's TLS files.
    pub fn config(&self, base: ClientConfig) -> ClientConfig {
        ClientConfig {
            tls: self.tls.clone(),
            ..base
        }
    }
}

/// `shoal kv [--endpoints E] ...`
#[derive(Args, Debug)]
pub struct KvArgs {
    #[command(flatten)]
    pub endpoints: Endpoints,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(subcommand)]
    pub command: KvCommand,
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
    },
    /// Prints the value of KEY (exit code 1 when absent).
    Get {
        /// The key.
        key: String,
    },
    /// Removes KEY.
    Delete {
        /// The key.
        key: String,
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

async fn connect(cluster: &Cluster) -> Result<Client, String> {
    Client::connect(
        cluster.endpoints.clone(),
        cluster.config(ClientConfig::default()),
    )
    .await
    .map_err(|e| format!("cannot reach the cluster: {e}"))
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a `kv` command against `cluster` (see [`Endpoints::resolve`]). Returns
/// the process exit code.
pub async fn run_kv(cluster: &Cluster, cmd: KvCommand) -> Result<i32, String> {
    match cmd {
        KvCommand::Put { key, value } => {
            connect(cluster)
                .await?
                .put(key, value)
                .await
                .map_err(|e| e.to_string())?;
            println!("OK");
        }
        KvCommand::Get { key } => match connect(cluster)
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
        KvCommand::Delete { key } => {
            connect(cluster)
                .await?
                .delete(key)
                .await
                .map_err(|e| e.to_string())?;
            println!("OK");
        }
        KvCommand::Scan { start, end, limit } => {
            let pairs = connect(cluster)
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
