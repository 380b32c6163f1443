//! The client-side commands of `shoal`: `kv` and `admin`, on `shoal-client`.

use clap::{Args, Subcommand};
use shoal_client::{Client, ClientConfig};

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

/// `shoal admin ...`
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Prints each store's counters (fsyncs, entries per fsync, messages, ...).
    Status {
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Prints the regions: id, range, epoch, leader store, peers.
    Regions {
        #[command(flatten)]
        endpoints: Endpoints,
    },
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

/// Runs an `admin` command. Returns the process exit code.
pub async fn run_admin(cmd: AdminCommand) -> Result<i32, String> {
    match cmd {
        AdminCommand::Status { endpoints } => {
            let client = connect(&endpoints).await?;
            let (_, stores) = client.list_regions().await.map_err(|e| e.to_string())?;
            for s in stores {
                match client.status(&s.address).await {
                    Ok(st) => {
                        let c = st.counters.unwrap_or_default();
                        let per = |sum: u64| {
                            if c.fsyncs == 0 {
                                0.0
                            } else {
                                sum as f64 / c.fsyncs as f64
                            }
                        };
                        println!(
                            "store {} ({}): regions {} leaders {} | fsyncs {} entries/fsync {:.1} regions/fsync {:.1} | proposals {} applied {} reads {} | raft msgs {} batches {}",
                            s.id,
                            s.address,
                            c.region_count,
                            c.leader_count,
                            c.fsyncs,
                            per(c.entries_per_fsync_sum),
                            per(c.regions_per_fsync_sum),
                            c.proposals,
                            c.applied_entries,
                            c.reads_served,
                            c.raft_messages_sent,
                            c.transport_batches_sent
                        );
                    }
                    Err(e) => println!("store {} ({}): unreachable: {e}", s.id, s.address),
                }
            }
        }
        AdminCommand::Regions { endpoints } => {
            let (regions, _) = connect(&endpoints)
                .await?
                .list_regions()
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "{:>8}  {:<20} {:<20} {:>8} {:>7}  peers",
                "id", "start", "end", "epoch", "leader"
            );
            for info in regions {
                let r = info.region.unwrap_or_default();
                let epoch = r.region_epoch.unwrap_or_default();
                let peers: Vec<String> = r
                    .peers
                    .iter()
                    .map(|p| format!("{}@{}", p.id, p.store_id))
                    .collect();
                println!(
                    "{:>8}  {:<20} {:<20} {:>8} {:>7}  {}",
                    r.id,
                    format!("{:?}", show(&r.start_key)),
                    format!("{:?}", show(&r.end_key)),
                    format!("{}/{}", epoch.conf_ver, epoch.version),
                    info.leader
                        .map_or("-".to_string(), |l| l.store_id.to_string()),
                    peers.join(",")
                );
            }
        }
    }
    Ok(0)
}
