//! Membership between node processes: a store joins a running cluster and takes a
//! replica of every region while a client writes; a dead store (its disk gone) is
//! replaced by a new one and removed; a store restarted on a new address is found
//! again through the cluster directory; leadership of every region moves to one
//! store of five and back. Every acknowledged write stays readable and the
//! replicas of each region end equal.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{connect, free_port, join_node, shoal, start_cluster, wait_registered};
use shoal_client::{Client, Directory, Region};
use shoal_proto::metapb::{PeerRole, StoreState};
use shoal_proto::RegionExt;

const T: Duration = Duration::from_secs(60);

/// Every region of the cluster, as the stores of the directory report them, once
/// every up store has registered its address and answers (a new cluster's stores
/// register theirs within a second or so).
async fn regions(dir: &Directory) -> Vec<Region> {
    let deadline = Instant::now() + T;
    loop {
        let stores = dir.stores().await.unwrap();
        let up: Vec<u64> = stores
            .iter()
            .filter(|s| s.state == StoreState::Up as i32)
            .map(|s| s.id)
            .collect();
        let (infos, answered) = dir.client().cluster_regions(&stores).await;
        if up.iter().all(|id| answered.contains(id)) {
            return infos.into_iter().filter_map(|i| i.region).collect();
        }
        assert!(
            Instant::now() < deadline,
            "stores {up:?} never all answered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every replica of `region` (at the addresses of its stores) reports
/// the same applied index, digest and key count.
async fn wait_replicas_agree(client: &Client, region: u64, addrs: &HashMap<u64, String>) {
    let deadline = Instant::now() + T;
    loop {
        let r = client.region(region).await.unwrap().region.unwrap();
        let mut sums = Vec::new();
        for p in &r.peers {
            if let Ok(c) = client.checksum(&addrs[&p.store_id], region).await {
                sums.push((c.applied_index, c.checksum, c.keys));
            }
        }
        if sums.len() == r.peers.len() && sums.iter().all(|s| *s == sums[0]) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "region {region}'s replicas never agreed: {sums:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes `w{i}` for i in 0.. until `stop`, at most 4000 keys or 60 s; returns
/// the keys acknowledged.
async fn write_until(client: Client, stop: tokio::sync::watch::Receiver<bool>) -> Vec<String> {
    let mut acked = Vec::new();
    let deadline = Instant::now() + T;
    for i in 0..4000 {
        if *stop.borrow() || Instant::now() > deadline {
            break;
        }
        let key = format!("w{i:05}");
        if client.put(&key, &key).await.is_ok() {
            acked.push(key);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    acked
}

/// The store leading `region`, once one does (a new cluster elects for a while).
async fn leader_of(client: &Client, region: u64) -> u64 {
    let deadline = Instant::now() + T;
    loop {
        if let Ok(Some(l)) = client.region(region).await.map(|i| i.leader) {
            return l.store_id;
        }
        assert!(Instant::now() < deadline, "region {region} has no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Puts `key = value`; a put whose outcome is unknown (its store died under it)
/// is read back, and sent again only if it did not happen.
async fn put_surely(client: &Client, key: &str, value: &str) {
    for _ in 0..5 {
        match client.put(key, value).await {
            Ok(()) => return,
            Err(shoal_client::Error::Undetermined { .. }) => {
                if client.get(key).await.ok().flatten().as_deref() == Some(value.as_bytes()) {
                    return;
                }
            }
            Err(e) => panic!("put {key}: {e}"),
        }
    }
    panic!("put {key} never went through");
}

#[test]
fn a_joined_store_takes_a_replica_of_every_region_while_a_client_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (_nodes, addrs) = start_cluster(dir.path(), 3, 4);
    let addr4 = format!("127.0.0.1:{}", free_port());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect(addrs.clone()).await;
        let dir_client = Directory::connect(addrs.clone(), Default::default())
            .await
            .unwrap();
        let _node4 = join_node(dir.path(), "store4", &addr4, &addrs[0]);
        // Given no id, it gets the next one.
        wait_registered(&dir_client, 4, &addr4).await;
        // An id the directory has at another address is refused, as is an
        // address another store has.
        let taken = dir_client.register(4, "127.0.0.1:1").await.unwrap_err();
        assert!(taken.to_string().contains("already used"), "{taken}");
        let twice = dir_client.register(0, &addr4).await.unwrap_err();
        assert!(twice.to_string().contains("already registered"), "{twice}");
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let writer = tokio::spawn(write_until(client.clone(), stop_rx));
        let before = regions(&dir_client).await;
        assert_eq!(before.len(), 4);
        for (i, r) in before.iter().enumerate() {
            let from = 1 + i as u64 % 3;
            if i == 0 {
                // The command line does the first move.
                let out = shoal(&[
                    "admin",
                    "move-replica",
                    &r.id.to_string(),
                    &from.to_string(),
                    "4",
                    "--json",
                    "--endpoints",
                    &addrs[0],
                ]);
                assert!(out.status.success(), "{out:?}");
                let region: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                let stores: Vec<u64> = region["peers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["store_id"].as_u64().unwrap())
                    .collect();
                assert!(stores.contains(&4) && !stores.contains(&from), "{region}");
                let progress = String::from_utf8_lossy(&out.stderr);
                assert!(
                    progress.contains("adding a learner on store 4"),
                    "{progress}"
                );
            } else {
                client.move_replica(r.id, from, 4, &|_| {}).await.unwrap();
            }
        }
        stop_tx.send(true).unwrap();
        let acked = writer.await.unwrap();
        assert!(
            acked.len() > 50,
            "the writer made progress: {}",
            acked.len()
        );
        for key in &acked {
            assert_eq!(
                client.get(key).await.unwrap().as_deref(),
                Some(key.as_bytes()),
                "acknowledged write of {key} lost"
            );
        }
        let mut by_store: HashMap<u64, String> = (1..=3).zip(addrs.iter().cloned()).collect();
        by_store.insert(4, addr4.clone());
        for r in regions(&dir_client).await {
            assert_eq!(r.peers.len(), 3, "{r:?}");
            assert_eq!(
                r.peer_on_store(4).map(|p| p.role),
                Some(PeerRole::Voter as i32),
                "{r:?}"
            );
            wait_replicas_agree(&client, r.id, &by_store).await;
        }
    });
}

#[test]
fn a_dead_store_is_replaced_removed_and_a_moved_store_is_found_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, addrs) = start_cluster(dir.path(), 3, 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect(addrs.clone()).await;
        for i in 0..200 {
            client
                .put(format!("k{i:03}"), format!("v{i}"))
                .await
                .unwrap();
        }
        let dir_client = Directory::connect(addrs.clone(), Default::default())
            .await
            .unwrap();
        // Each store writes its address into the directory about a second after it
        // starts serving: until then the directory lists it without one, and what
        // follows reads (and checks) those addresses. The writes above can finish
        // sooner (one run in five or six failed on a store without its address).
        for (i, addr) in addrs.iter().enumerate() {
            wait_registered(&dir_client, i as u64 + 1, addr).await;
        }
        // Store 3 dies with its disk.
        nodes[2].kill();
        std::fs::remove_dir_all(dir.path().join("store3")).unwrap();
        let addr4 = format!("127.0.0.1:{}", free_port());
        let mut node4 = join_node(dir.path(), "store4", &addr4, &addrs[1]);
        wait_registered(&dir_client, 4, &addr4).await;
        // Every replica of store 3 moves to store 4 (the only up store without
        // one), although store 3 cannot take part; then store 3 is removed.
        let out = shoal(&["admin", "remove-store", "3", "--endpoints", &addrs[0]]);
        assert!(out.status.success(), "{out:?}");
        let progress = String::from_utf8_lossy(&out.stderr);
        assert!(progress.contains("moving region"), "{progress}");
        assert!(progress.contains("marked removed"), "{progress}");
        for r in regions(&dir_client).await {
            let mut stores: Vec<u64> = r.peers.iter().map(|p| p.store_id).collect();
            stores.sort_unstable();
            assert_eq!(stores, vec![1, 2, 4], "{r:?}");
        }
        assert_eq!(
            dir_client.store(3).await.unwrap().unwrap().state,
            StoreState::Removed as i32
        );
        // Running it again finds nothing left to do.
        let again = shoal(&["admin", "remove-store", "3", "--endpoints", &addrs[0]]);
        assert!(again.status.success(), "{again:?}");
        // No replica goes to a removed store, nor to one the cluster lacks.
        for (store, why) in [("3", "store 3 is REMOVED"), ("9", "has no store 9")] {
            let out = shoal(&["admin", "add-peer", "1", store, "--endpoints", &addrs[0]]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success() && err.contains(why), "{out:?}");
        }
        // A removed store's id is never given again.
        let reuse = dir_client.register(3, "127.0.0.1:1").await.unwrap_err();
        assert!(reuse.to_string().contains("removed"), "{reuse}");
        // Store 4 restarts on a new address (no --join: its data directory says
        // who it is) and registers it; the others dial it there.
        node4.kill();
        let addr4b = format!("127.0.0.1:{}", free_port());
        let at = node4.args.iter().position(|a| a == "--addr").unwrap();
        node4.args[at + 1] = addr4b.clone();
        let join_at = node4.args.iter().position(|a| a == "--join").unwrap();
        node4.args.drain(join_at..join_at + 2);
        node4.restart();
        wait_registered(&dir_client, 4, &addr4b).await;
        // Stores 1 and 2 alone cannot commit without store 4 once 2 stops: a
        // write that commits now needs store 4 at its new address.
        nodes[1].kill();
        put_surely(&client, "after-move", "yes").await;
        for i in 0..200 {
            assert_eq!(
                client.get(format!("k{i:03}")).await.unwrap(),
                Some(format!("v{i}").into_bytes())
            );
        }
        let stores = shoal(&["admin", "stores", "--json", "--endpoints", &addrs[0]]);
        assert!(stores.status.success(), "{stores:?}");
        let v: serde_json::Value = serde_json::from_slice(&stores.stdout).unwrap();
        let states: Vec<(u64, String, String)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_u64().unwrap(),
                    s["address"].as_str().unwrap().to_string(),
                    s["state"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert!(
            states.contains(&(3, addrs[2].clone(), "removed".into())),
            "{states:?}"
        );
        assert!(
            states.contains(&(4, addr4b.clone(), "up".into())),
            "{states:?}"
        );
    });
}

#[test]
fn leadership_of_every_region_moves_to_one_store_of_five_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_nodes, addrs) = start_cluster(dir.path(), 5, 4);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect(addrs.clone()).await;
        let dir_client = Directory::connect(addrs.clone(), Default::default())
            .await
            .unwrap();
        let mut first = HashMap::new();
        for r in regions(&dir_client).await {
            first.insert(r.id, leader_of(&client, r.id).await);
        }
        let out = shoal(&[
            "admin",
            "transfer-leader",
            &first.keys().next().unwrap().to_string(),
            "5",
            "--endpoints",
            &addrs[0],
        ]);
        assert!(out.status.success(), "{out:?}");
        for &region in first.keys() {
            let leader = client.transfer_leader(region, 5).await.unwrap();
            assert_eq!(leader.store_id, 5);
            assert_eq!(
                client
                    .region(region)
                    .await
                    .unwrap()
                    .leader
                    .unwrap()
                    .store_id,
                5
            );
        }
        client.put("led-by-5", "yes").await.unwrap();
        for (&region, &store) in &first {
            let leader = client.transfer_leader(region, store).await.unwrap();
            assert_eq!(leader.store_id, store);
        }
        assert_eq!(client.get("led-by-5").await.unwrap(), Some(b"yes".to_vec()));
    });
}
