//! `shoal admin ...`: inspect and reshape the cluster's regions, read store counters
//! and compare replicas. Each command connects to the [`Endpoints`] (resolved by
//! `main`: see [`Endpoints::resolve`]), makes its calls on `shoal-client`, prints
//! to stdout, and turns the client's errors into one clear message (printed by
//! `main` on stderr, exit code 1).

use clap::{Args, Subcommand};
use shoal_client::{Client, Error, Region, RegionInfo};
use tonic::Code;

use super::checksum;
use super::keys::KeyInput;
use super::membership::{self, MembershipCommand};
use super::render::{
    pretty, region_detail, region_json, regions_json, regions_table, replicas_detail,
    replicas_json, Replica, REGION_VIEW_HELP,
};
use super::{connect, Cluster, Endpoints};

/// `shoal admin [--endpoints E] ...`
#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(flatten)]
    pub endpoints: Endpoints,
    #[command(flatten)]
    pub tls: shoal_client::tls::TlsArgs,
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// The subcommands of `shoal admin`.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Prints each store's status and counters (regions, leaders, fsyncs, entries per
    /// fsync, proposals, applied entries, reads, Raft messages; the Raft log's size
    /// and truncated entries; snapshots generated, sent, received, applied, failed).
    Status,
    /// Prints every region: id, range, epoch, leader store, peers, approximate size
    /// and keys.
    #[command(after_help = REGION_VIEW_HELP)]
    Regions {
        /// Print a JSON array (one object per region) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Prints one region's details, as its leader reports them, then each replica as
    /// its store reports it (first and last Raft log index, applied index); fails if
    /// no store knows the region.
    #[command(after_help = REGION_VIEW_HELP)]
    Region {
        /// The region id.
        id: u64,
        /// Print a JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Splits regions: at each KEY, the region holding it (`split KEY...`), or one
    /// region at several keys in one request (`split --region ID --keys K1,K2`).
    /// Prints the resulting regions.
    #[command(after_help = REGION_VIEW_HELP)]
    Split(SplitArgs),
    /// Merges region SOURCE into its adjacent region TARGET and prints TARGET after
    /// the merge.
    #[command(after_help = REGION_VIEW_HELP)]
    Merge {
        /// The region that disappears into TARGET.
        source: u64,
        /// The adjacent region that absorbs SOURCE's range.
        target: u64,
        /// Print a JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Asks every store for its checksum of a region's replica and says whether the
    /// replicas agree.
    #[command(after_help = checksum::HELP)]
    Checksum {
        /// The region id.
        id: u64,
    },
    #[command(flatten)]
    Membership(MembershipCommand),
}

/// `shoal admin split`.
#[derive(Args, Debug)]
pub struct SplitArgs {
    /// Split keys: the region holding each key is split at it, so that the key starts
    /// a region (a key that already starts one needs no split). Not with --region.
    #[arg(
        value_name = "KEY",
        required_unless_present = "region",
        conflicts_with = "region"
    )]
    pub split_keys: Vec<String>,
    /// Split this region (instead of the regions holding each KEY), at the --keys, in
    /// one request.
    #[arg(long, value_name = "ID", requires = "keys")]
    pub region: Option<u64>,
    /// With --region: the split keys, comma-separated, each strictly inside the region
    /// (a comma inside a key: use --hex or --escaped with \x2c).
    #[arg(
        long,
        value_name = "K1,K2,...",
        value_delimiter = ',',
        requires = "region"
    )]
    pub keys: Vec<String>,
    #[command(flatten)]
    pub key_input: KeyInput,
    /// Print the resulting regions as a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs an `admin` command against `endpoints` (see [`Endpoints::resolve`]).
/// Returns the process exit code.
pub async fn run_admin(cluster: &Cluster, cmd: AdminCommand) -> Result<i32, String> {
    match cmd {
        AdminCommand::Status => status(&connect(cluster).await?).await,
        AdminCommand::Regions { json } => {
            let (regions, _) = connect(cluster)
                .await?
                .list_regions()
                .await
                .map_err(|e| failed("listing the regions", e))?;
            print_regions(&regions, json);
            Ok(0)
        }
        AdminCommand::Region { id, json } => {
            let client = connect(cluster).await?;
            let info = client
                .region(id)
                .await
                .map_err(|e| failed("looking up the region", e))?;
            let replicas = replicas(&client, &info).await;
            if json {
                let mut value = region_json(&info);
                value["replicas"] = replicas_json(&replicas);
                print!("{}", pretty(&value));
            } else {
                print!("{}", region_detail(&info));
                print!("{}", replicas_detail(&replicas));
            }
            Ok(0)
        }
        AdminCommand::Split(args) => split(cluster, args).await,
        AdminCommand::Merge {
            source,
            target,
            json,
        } => {
            let client = connect(cluster).await?;
            let merged = client
                .merge(source, target)
                .await
                .map_err(|e| refused("merge", e))?;
            print_regions(&describe(&client, vec![merged]).await, json);
            Ok(0)
        }
        AdminCommand::Checksum { id } => checksum::run(&connect(cluster).await?, id).await,
        AdminCommand::Membership(cmd) => membership::run(cluster, cmd).await,
    }
}

fn print_regions(regions: &[RegionInfo], json: bool) {
    if json {
        print!("{}", regions_json(regions));
    } else {
        print!("{}", regions_table(regions));
    }
}

async fn split(cluster: &Cluster, args: SplitArgs) -> Result<i32, String> {
    let client = connect(cluster).await?;
    let regions = match args.region {
        Some(region_id) => {
            let keys = args.key_input.parse_all(&args.keys)?;
            client
                .split_region(region_id, keys)
                .await
                .map_err(|e| refused("split", e))?
        }
        None => {
            let keys = args.key_input.parse_all(&args.split_keys)?;
            client.split(keys).await.map_err(|e| refused("split", e))?
        }
    };
    print_regions(&describe(&client, regions).await, args.json);
    Ok(0)
}

/// Each replica of `info`'s region as its store reports it (an error text for a
/// store that cannot be reached or has no replica).
async fn replicas(client: &Client, info: &RegionInfo) -> Vec<Replica> {
    let region = info.region.clone().unwrap_or_default();
    let stores = match client.list_regions().await {
        Ok((_, stores)) => stores,
        Err(_) => Vec::new(),
    };
    let mut out = Vec::new();
    for peer in &region.peers {
        let address = stores
            .iter()
            .find(|s| s.id == peer.store_id)
            .map(|s| s.address.clone());
        let view = match &address {
            Some(a) => client
                .replica(a, region.id)
                .await
                .map_err(|e| e.to_string()),
            None => Err("the store's address is unknown".to_string()),
        };
        out.push(Replica {
            store_id: peer.store_id,
            peer_id: peer.id,
            view,
        });
    }
    out
}

/// `regions` with their leaders and approximate sizes from a fresh listing (when it
/// has them). The regions themselves are kept as given: they are the answer of the
/// call that changed them.
async fn describe(client: &Client, regions: Vec<Region>) -> Vec<RegionInfo> {
    let listed = client
        .list_regions()
        .await
        .map(|(l, _)| l)
        .unwrap_or_default();
    regions
        .into_iter()
        .map(|region| {
            let known = listed
                .iter()
                .find(|i| i.region.as_ref().is_some_and(|r| r.id == region.id));
            RegionInfo {
                leader: known.and_then(|i| i.leader),
                approximate_size: known.map_or(0, |i| i.approximate_size),
                approximate_keys: known.map_or(0, |i| i.approximate_keys),
                region: Some(region),
                ..Default::default()
            }
        })
        .collect()
}

/// A failed look-up or listing.
fn failed(what: &str, e: Error) -> String {
    match e {
        Error::RegionNotFound { region_id, .. } => {
            format!("region {region_id} not found: no store knows it")
        }
        e => format!("{what} failed: {e}"),
    }
}

/// A refused or failed `what` (split, merge): says who refused and why.
pub(crate) fn refused(what: &str, e: Error) -> String {
    match &e {
        Error::InvalidArgument(message) => format!("{what} refused: {message}"),
        Error::Rejected {
            code: Code::Unimplemented,
            message,
            address,
            ..
        } => format!(
            "{what} refused by the cluster: the store at {address} cannot do it ({message})"
        ),
        Error::Rejected {
            code: Code::InvalidArgument,
            message,
            address,
            ..
        } => format!("{what} refused by the cluster: invalid request ({address}: {message})"),
        Error::Rejected {
            code,
            message,
            address,
            ..
        } => format!("{what} refused by the cluster: {address} answered {code:?}: {message}"),
        Error::Region { .. } => format!("{what} refused by the cluster: {e}"),
        Error::RegionNotFound { region_id, .. } => {
            format!("{what} failed: region {region_id} not found: no store knows it")
        }
        _ => format!("{what} failed: {e}"),
    }
}

/// `shoal admin status`: one line per store, with its counters.
async fn status(client: &Client) -> Result<i32, String> {
    let (_, stores) = client
        .list_regions()
        .await
        .map_err(|e| failed("listing the stores", e))?;
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
                    "store {} ({}, v{}): regions {} leaders {} | fsyncs {} entries/fsync {:.1} regions/fsync {:.1} | proposals {} applied {} reads {} | raft msgs {} batches {}",
                    s.id,
                    s.address,
                    st.version,
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
                println!("{}", log_and_snapshots(&c));
            }
            Err(e) => println!("store {} ({}): unreachable: {e}", s.id, s.address),
        }
    }
    Ok(0)
}

/// The second line of a store's status: its Raft log and snapshots.
fn log_and_snapshots(c: &shoal_proto::adminpb::StoreCounters) -> String {
    format!(
        "  raft log {} bytes on disk, {} entries truncated | snapshots generated {} sent {} \
         ({} bytes) received {} ({} bytes) applied {} failed {}",
        c.log_engine_disk_bytes,
        c.log_entries_truncated,
        c.snapshots_generated,
        c.snapshots_sent,
        c.snapshot_sent_bytes,
        c.snapshots_received,
        c.snapshot_received_bytes,
        c.snapshots_applied,
        c.snapshot_failures
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use shoal_client::RequestInfo;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: AdminCommand,
    }

    fn parse(args: &[&str]) -> Result<AdminCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("admin").chain(args.iter().copied())).map(|c| c.cmd)
    }

    #[test]
    fn split_takes_keys_or_a_region_with_keys() {
        let Ok(AdminCommand::Split(a)) = parse(&["split", "b", "a"]) else {
            panic!()
        };
        assert_eq!(a.split_keys, ["b", "a"]);
        assert_eq!(a.region, None);
        let Ok(AdminCommand::Split(a)) = parse(&["split", ""]) else {
            panic!()
        };
        assert_eq!(a.split_keys, vec![String::new()]);
        let Ok(AdminCommand::Split(a)) =
            parse(&["split", "--region", "3", "--keys", "6b,6c", "--hex"])
        else {
            panic!()
        };
        assert_eq!(a.region, Some(3));
        assert_eq!(a.keys, ["6b", "6c"]);
        assert_eq!(
            a.key_input.parse_all(&a.keys).unwrap(),
            vec![b"k".to_vec(), b"l".to_vec()]
        );
        for bad in [
            &["split"][..],
            &["split", "--region", "3"],
            &["split", "--keys", "a"],
            &["split", "a", "--region", "3", "--keys", "b"],
            &["split", "a", "--hex", "--escaped"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refusals_say_who_refused_and_why() {
        let request = RequestInfo {
            op: "merge",
            key: None,
            region_id: Some(2),
        };
        let unimplemented = Error::Rejected {
            request: request.clone(),
            address: "127.0.0.1:1".into(),
            code: Code::Unimplemented,
            message: "region merge is not implemented in this version of Shoal".into(),
        };
        assert_eq!(
            refused("merge", unimplemented),
            "merge refused by the cluster: the store at 127.0.0.1:1 cannot do it (region \
             merge is not implemented in this version of Shoal)"
        );
        let invalid = Error::Rejected {
            request,
            address: "127.0.0.1:1".into(),
            code: Code::InvalidArgument,
            message: "split key \"a\" is the region's start".into(),
        };
        assert!(refused("split", invalid)
            .starts_with("split refused by the cluster: invalid request (127.0.0.1:1: split key"));
        assert_eq!(
            refused(
                "split",
                Error::InvalidArgument("cannot split at the empty key".into())
            ),
            "split refused: cannot split at the empty key"
        );
        assert_eq!(
            refused(
                "split",
                Error::RegionNotFound {
                    op: "split_region",
                    region_id: 9
                }
            ),
            "split failed: region 9 not found: no store knows it"
        );
        assert_eq!(
            failed(
                "looking up the region",
                Error::RegionNotFound {
                    op: "region",
                    region_id: 9
                }
            ),
            "region 9 not found: no store knows it"
        );
    }
}
