//! `shoal admin stores|add-peer|remove-peer|transfer-leader|move-replica|remove-store`:
//! the cluster's stores and where replicas live. Long procedures print each step
//! on stderr (stdout keeps the result, a table or `--json`); each can be run again
//! after an interruption and resumes.

use clap::Subcommand;
use serde_json::{json, Value};
use shoal_client::{Client, RegionInfo, Store};
use shoal_proto::metapb::{ChangeKind, StoreState};

use super::admin::refused;
use super::render::{pretty, region_json, regions_table, REGION_VIEW_HELP};
use super::{client_config, Cluster};

/// The membership commands of `shoal admin`.
#[derive(Subcommand, Debug)]
pub enum MembershipCommand {
    /// Prints the cluster's stores as the cluster directory lists them: id, address,
    /// state (up, offline: being emptied, removed), its regions and leaders, and how
    /// long ago the answering node last heard from it (a Raft message).
    Stores {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Adds a replica of REGION on STORE (a voter, or with --learner a learner; a
    /// learner already there is promoted). The store must be up; the new replica
    /// catches up from a snapshot. Prints the region.
    #[command(after_help = REGION_VIEW_HELP)]
    AddPeer {
        /// The region id.
        region: u64,
        /// The store that gets the replica.
        store: u64,
        /// Add a learner (receives the log, does not vote) instead of a voter.
        #[arg(long)]
        learner: bool,
        /// Print a JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Removes STORE's replica of REGION (refused for the leader: transfer the
    /// leadership first). Prints the region.
    #[command(after_help = REGION_VIEW_HELP)]
    RemovePeer {
        /// The region id.
        region: u64,
        /// The store whose replica goes.
        store: u64,
        /// Print a JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Makes STORE's replica of REGION its leader (a voter that is not behind);
    /// answers once it is elected.
    TransferLeader {
        /// The region id.
        region: u64,
        /// The store whose replica should lead.
        store: u64,
        /// Print a JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Moves REGION's replica from store FROM to store TO: a learner on TO, caught
    /// up, then one joint change promoting it and demoting FROM, then FROM's replica
    /// removed (FROM may be down); a learner on FROM moves as a learner. Run again,
    /// it skips what is done. Prints each step on stderr, then the region.
    #[command(after_help = REGION_VIEW_HELP)]
    MoveReplica {
        /// The region id.
        region: u64,
        /// The store the replica leaves.
        from: u64,
        /// The store the replica goes to (must be up).
        to: u64,
        /// Print a JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Empties STORE and removes it from the cluster: marks it offline, moves each
    /// of its replicas to the up store with the fewest replicas (STORE may be down),
    /// then marks it removed; its id is never used again. Prints progress on
    /// stderr; run it again to resume after an interruption.
    RemoveStore {
        /// The store to remove.
        store: u64,
        /// Print the final store record as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a membership command against `endpoints`. Returns the process exit code.
pub async fn run(cluster: &Cluster, cmd: MembershipCommand) -> Result<i32, String> {
    let progress = |line: &str| eprintln!("{line}");
    match cmd {
        MembershipCommand::Stores { json } => {
            let client = client(cluster).await?;
            stores(&client, &cluster.endpoints, json).await
        }
        MembershipCommand::AddPeer {
            region,
            store,
            learner,
            json,
        } => {
            let kind = match learner {
                true => ChangeKind::AddLearner,
                false => ChangeKind::AddVoter,
            };
            change("add-peer", region, (kind, store), json, cluster).await
        }
        MembershipCommand::RemovePeer {
            region,
            store,
            json,
        } => {
            let remove = (ChangeKind::Remove, store);
            change("remove-peer", region, remove, json, cluster).await
        }
        MembershipCommand::TransferLeader {
            region,
            store,
            json,
        } => {
            let client = client(cluster).await?;
            let leader = client
                .transfer_leader(region, store)
                .await
                .map_err(|e| refused("transfer-leader", e))?;
            if json {
                let v = json!({"region": region, "leader": {"peer_id": leader.id, "store_id": leader.store_id}});
                print!("{}", pretty(&v));
            } else {
                println!(
                    "region {region}: store {} leads (peer {})",
                    leader.store_id, leader.id
                );
            }
            Ok(0)
        }
        MembershipCommand::MoveReplica {
            region,
            from,
            to,
            json,
        } => {
            let client = client(cluster).await?;
            let r = client
                .move_replica(region, from, to, &progress)
                .await
                .map_err(|e| refused("move-replica", e))?;
            print_region(&client, r, json).await
        }
        MembershipCommand::RemoveStore { store, json } => {
            let client = client(cluster).await?;
            client
                .remove_store(store, &progress)
                .await
                .map_err(|e| refused("remove-store", e))?;
            let record = client
                .stores()
                .await
                .map_err(|e| format!("reading store {store}'s record failed: {e}"))?
                .into_iter()
                .find(|s| s.id == store)
                .unwrap_or_default();
            if json {
                print!("{}", pretty(&store_json(&record, None, None)));
            } else {
                println!("store {store} removed");
            }
            Ok(0)
        }
    }
}

/// One membership change (`what` names the command in errors); prints the region.
async fn change(
    what: &str,
    region: u64,
    change: (ChangeKind, u64),
    json: bool,
    cluster: &Cluster,
) -> Result<i32, String> {
    let client = client(cluster).await?;
    let r = client
        .change_peer(region, &[change])
        .await
        .map_err(|e| refused(what, e))?;
    print_region(&client, r, json).await
}

async fn client(cluster: &Cluster) -> Result<Client, String> {
    Client::connect(cluster.endpoints.clone(), cluster.config(client_config()))
        .await
        .map_err(|e| format!("cannot reach the cluster: {e}"))
}

async fn print_region(
    client: &Client,
    region: shoal_client::Region,
    json: bool,
) -> Result<i32, String> {
    let leader = client.region(region.id).await.ok().and_then(|i| i.leader);
    let info = RegionInfo {
        region: Some(region),
        leader,
        ..Default::default()
    };
    if json {
        print!("{}", pretty(&region_json(&info)));
    } else {
        print!("{}", regions_table(&[info]));
    }
    Ok(0)
}

fn state_name(state: i32) -> &'static str {
    match StoreState::try_from(state) {
        Ok(StoreState::Up) => "up",
        Ok(StoreState::Offline) => "offline",
        Ok(StoreState::Removed) => "removed",
        Err(_) => "unknown",
    }
}

/// What one store reports of itself: (regions, leaders), or why it did not.
type Counts = Result<(u64, u64), String>;

fn store_json(s: &Store, counts: Option<&Counts>, heard_ms: Option<u64>) -> Value {
    let (regions, leaders, error) = match counts {
        Some(Ok((r, l))) => (json!(r), json!(l), Value::Null),
        Some(Err(e)) => (Value::Null, Value::Null, json!(e)),
        None => (Value::Null, Value::Null, Value::Null),
    };
    json!({
        "id": s.id,
        "address": s.address,
        "state": state_name(s.state),
        "regions": regions,
        "leaders": leaders,
        "last_heartbeat_ms": heard_ms,
        "error": error,
    })
}

/// `shoal admin stores`: the directory's stores, each asked for its counts; the
/// first endpoint that answers says when it last heard from each.
async fn stores(client: &Client, endpoints: &[String], json: bool) -> Result<i32, String> {
    let stores = client
        .stores()
        .await
        .map_err(|e| format!("reading the cluster directory failed: {e}"))?;
    let mut contacts = std::collections::HashMap::new();
    let mut reporter = None;
    for e in endpoints {
        if let Ok(status) = client.status(e).await {
            reporter = status.store.map(|s| s.id);
            contacts = status
                .contacts
                .iter()
                .map(|c| (c.store_id, c.millis_ago))
                .collect();
            break;
        }
    }
    let mut rows = Vec::new();
    for s in &stores {
        let counts: Counts = if s.state == StoreState::Removed as i32 {
            Err("removed".into())
        } else {
            match client.status(&s.address).await {
                Ok(st) => {
                    let c = st.counters.unwrap_or_default();
                    Ok((c.region_count, c.leader_count))
                }
                Err(_) => Err("unreachable".into()),
            }
        };
        let heard = match Some(s.id) == reporter {
            true => Some(0),
            false => contacts.get(&s.id).copied(),
        };
        rows.push((s.clone(), counts, heard));
    }
    if json {
        let v: Vec<Value> = rows
            .iter()
            .map(|(s, c, h)| store_json(s, Some(c), *h))
            .collect();
        print!("{}", pretty(&Value::Array(v)));
        return Ok(0);
    }
    println!(
        "{:<6} {:<22} {:<8} {:>8} {:>8}  LAST HEARTBEAT",
        "ID", "ADDRESS", "STATE", "REGIONS", "LEADERS"
    );
    for (s, counts, heard) in rows {
        let (regions, leaders) = match &counts {
            Ok((r, l)) => (r.to_string(), l.to_string()),
            Err(e) => (e.clone(), "-".into()),
        };
        let heard = match heard {
            Some(0) if Some(s.id) == reporter => "(answering node)".to_string(),
            Some(ms) => format!("{:.1} s ago", ms as f64 / 1000.0),
            None => "never".to_string(),
        };
        println!(
            "{:<6} {:<22} {:<8} {:>8} {:>8}  {heard}",
            s.id,
            s.address,
            state_name(s.state),
            regions,
            leaders
        );
    }
    Ok(0)
}
