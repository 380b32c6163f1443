//! `shoal admin checksum ID`: ask every store for its checksum of region ID's replica
//! and compare. Replicas are comparable only at the same applied index: two replicas
//! at the same index with different checksums (or key counts) is a mismatch; replicas
//! at different indexes are reported as not compared.

use std::collections::BTreeMap;

use futures::future::join_all;
use shoal_client::{ChecksumResponse, Client, Error};
use shoal_proto::errorpb::region_error::Kind;
use tonic::Code;

/// Exit code when two replicas at the same applied index differ.
pub const EXIT_MISMATCH: i32 = 2;
/// Exit code when fewer than two replicas could be compared.
pub const EXIT_INCONCLUSIVE: i32 = 3;

/// The help text of `shoal admin checksum` (shown by `--help`).
pub const HELP: &str = "\
Prints one line per store: store id, applied index, keys and checksum (FNV-1a 64, hex),
or why that store gave none; then whether the replicas agree. Replicas are compared
only at the same applied index (a replica that is behind cannot be compared: run the
command again).

Exit codes: 0 the replicas compared agree; 1 an error (no store could answer, the
region does not exist, or the cluster does not implement Checksum); 2 replicas at the
same applied index differ; 3 fewer than two replicas could be compared.";

/// What one store answered.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreAnswer {
    /// Its replica's digest.
    Digest {
        applied_index: u64,
        keys: u64,
        checksum: u64,
    },
    /// The store holds no replica of the region.
    NoReplica,
    /// The store does not implement Checksum (its message).
    Unimplemented(String),
    /// Anything else (unreachable, refused), as a message.
    Failed(String),
}

impl StoreAnswer {
    fn from_result(result: Result<ChecksumResponse, Error>) -> StoreAnswer {
        match result {
            Ok(resp) => StoreAnswer::Digest {
                applied_index: resp.applied_index,
                keys: resp.keys,
                checksum: resp.checksum,
            },
            Err(Error::Region { error, .. })
                if matches!(error.kind, Some(Kind::RegionNotFound(_))) =>
            {
                StoreAnswer::NoReplica
            }
            Err(Error::Rejected {
                code: Code::Unimplemented,
                message,
                ..
            }) => StoreAnswer::Unimplemented(message),
            Err(e) => StoreAnswer::Failed(e.to_string()),
        }
    }

    /// The line printed for store `store_id` at `address`.
    pub fn line(&self, store_id: u64, address: &str, region_id: u64) -> String {
        let what = match self {
            StoreAnswer::Digest {
                applied_index,
                keys,
                checksum,
            } => format!("applied index {applied_index}, keys {keys}, checksum {checksum:016x}"),
            StoreAnswer::NoReplica => format!("no replica of region {region_id}"),
            StoreAnswer::Unimplemented(m) => format!("checksum not implemented ({m})"),
            StoreAnswer::Failed(m) => format!("failed: {m}"),
        };
        format!("store {store_id} ({address}): {what}")
    }
}

/// One replica's digest, as [`verdict`] groups them.
struct Replica {
    store: u64,
    keys: u64,
    checksum: u64,
}

/// The conclusion drawn from every store's answer: the summary line(s) and the exit
/// code, or an error message (exit code 1).
pub fn verdict(region_id: u64, answers: &[(u64, StoreAnswer)]) -> Result<(String, i32), String> {
    let by_index = replicas_by_index(answers);
    if by_index.is_empty() {
        return Err(no_digest_error(region_id, answers));
    }
    let mut lines = Vec::new();
    let mut mismatch = false;
    let mut compared = false;
    for (index, group) in &by_index {
        if group.len() < 2 {
            continue;
        }
        compared = true;
        let (line, agree) = compare(region_id, *index, group);
        lines.push(line);
        mismatch |= !agree;
    }
    lines.extend(not_compared(&by_index));
    let code = if mismatch {
        EXIT_MISMATCH
    } else if compared {
        0
    } else {
        lines.insert(
            0,
            "inconclusive: fewer than two replicas at the same applied index".to_string(),
        );
        EXIT_INCONCLUSIVE
    };
    Ok((lines.join("\n"), code))
}

/// The digests of `answers`, grouped by applied index (in store order within each).
fn replicas_by_index(answers: &[(u64, StoreAnswer)]) -> BTreeMap<u64, Vec<Replica>> {
    let mut by_index: BTreeMap<u64, Vec<Replica>> = BTreeMap::new();
    for (store, answer) in answers {
        if let StoreAnswer::Digest {
            applied_index,
            keys,
            checksum,
        } = answer
        {
            by_index.entry(*applied_index).or_default().push(Replica {
                store: *store,
                keys: *keys,
                checksum: *checksum,
            });
        }
    }
    by_index
}

/// Why no store gave a digest: the cluster cannot compute checksums, no store has the
/// region, or no store answered.
fn no_digest_error(region_id: u64, answers: &[(u64, StoreAnswer)]) -> String {
    let unimplemented = answers.iter().find_map(|(_, a)| match a {
        StoreAnswer::Unimplemented(m) => Some(m),
        _ => None,
    });
    if let Some(message) = unimplemented {
        format!("checksum refused by the cluster: the stores cannot compute checksums ({message})")
    } else if !answers.is_empty() && answers.iter().all(|(_, a)| *a == StoreAnswer::NoReplica) {
        format!("region {region_id} not found: no store has a replica of it")
    } else {
        format!("checksum failed: no store answered for region {region_id}")
    }
}

/// The line for two or more replicas at applied index `index`, and whether they agree
/// (same keys and checksum).
fn compare(region_id: u64, index: u64, group: &[Replica]) -> (String, bool) {
    let first = &group[0];
    if group
        .iter()
        .all(|r| (r.keys, r.checksum) == (first.keys, first.checksum))
    {
        let stores: Vec<String> = group.iter().map(|r| r.store.to_string()).collect();
        let line = format!(
            "replicas agree: stores {} at applied index {index}, checksum {:016x}",
            stores.join(", "),
            first.checksum
        );
        return (line, true);
    }
    let each: Vec<String> = group
        .iter()
        .map(|r| format!("store {} {:016x} ({} keys)", r.store, r.checksum, r.keys))
        .collect();
    let line = format!(
        "MISMATCH: replicas of region {region_id} at applied index {index} differ: {}",
        each.join(", ")
    );
    (line, false)
}

/// The line listing the replicas alone at their applied index, if any.
fn not_compared(by_index: &BTreeMap<u64, Vec<Replica>>) -> Option<String> {
    let alone: Vec<String> = by_index
        .iter()
        .filter(|(_, g)| g.len() == 1)
        .map(|(index, g)| format!("store {} at applied index {index}", g[0].store))
        .collect();
    if alone.is_empty() {
        return None;
    }
    Some(format!(
        "not compared (no other replica at the same applied index; run again): {}",
        alone.join(", ")
    ))
}

/// Runs `shoal admin checksum ID`. Returns the exit code.
pub async fn run(client: &Client, region_id: u64) -> Result<i32, String> {
    let (_, mut stores) = client
        .list_regions()
        .await
        .map_err(|e| format!("listing the stores failed: {e}"))?;
    stores.sort_by_key(|s| s.id);
    let results = join_all(
        stores
            .iter()
            .map(|s| client.checksum(&s.address, region_id)),
    )
    .await;
    let answers: Vec<(u64, StoreAnswer)> = stores
        .iter()
        .zip(results)
        .map(|(s, r)| (s.id, StoreAnswer::from_result(r)))
        .collect();
    for (store, (_, answer)) in stores.iter().zip(&answers) {
        println!("{}", answer.line(store.id, &store.address, region_id));
    }
    let (summary, code) = verdict(region_id, &answers)?;
    println!("{summary}");
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::StoreAnswer::*;
    use super::*;

    fn digest(applied_index: u64, keys: u64, checksum: u64) -> StoreAnswer {
        Digest {
            applied_index,
            keys,
            checksum,
        }
    }

    #[test]
    fn lines_show_index_keys_and_hex_checksum() {
        assert_eq!(
            digest(42, 7, 0xab).line(1, "127.0.0.1:20160", 3),
            "store 1 (127.0.0.1:20160): applied index 42, keys 7, checksum 00000000000000ab"
        );
        assert_eq!(
            NoReplica.line(2, "h:1", 3),
            "store 2 (h:1): no replica of region 3"
        );
    }

    #[test]
    fn replicas_at_the_same_index_must_agree() {
        let (text, code) = verdict(
            3,
            &[
                (1, digest(10, 5, 0xaa)),
                (2, digest(10, 5, 0xaa)),
                (3, NoReplica),
            ],
        )
        .unwrap();
        assert_eq!(code, 0);
        assert_eq!(
            text,
            "replicas agree: stores 1, 2 at applied index 10, checksum 00000000000000aa"
        );

        let (text, code) = verdict(
            3,
            &[
                (1, digest(10, 5, 0xaa)),
                (2, digest(10, 5, 0xbb)),
                (3, digest(9, 4, 0xcc)),
            ],
        )
        .unwrap();
        assert_eq!(code, EXIT_MISMATCH);
        assert!(
            text.starts_with(
                "MISMATCH: replicas of region 3 at applied index 10 differ: store 1 \
             00000000000000aa (5 keys), store 2 00000000000000bb (5 keys)"
            ),
            "{text}"
        );
        assert!(text.contains("not compared (no other replica at the same applied index; run again): store 3 at applied index 9"), "{text}");
    }

    #[test]
    fn different_indexes_or_one_replica_are_inconclusive() {
        let (text, code) = verdict(
            3,
            &[
                (1, digest(10, 5, 0xaa)),
                (2, digest(11, 6, 0xbb)),
                (3, Failed("down".into())),
            ],
        )
        .unwrap();
        assert_eq!(code, EXIT_INCONCLUSIVE);
        assert!(text.starts_with("inconclusive"), "{text}");
        assert!(
            text.contains("store 1 at applied index 10, store 2 at applied index 11"),
            "{text}"
        );
    }

    #[test]
    fn no_digest_is_an_error_that_says_why() {
        let err = verdict(
            3,
            &[
                (
                    1,
                    Unimplemented("region checksum is not implemented".into()),
                ),
                (2, Failed("down".into())),
            ],
        )
        .unwrap_err();
        assert_eq!(
            err,
            "checksum refused by the cluster: the stores cannot compute checksums (region \
             checksum is not implemented)"
        );
        let err = verdict(3, &[(1, NoReplica), (2, NoReplica)]).unwrap_err();
        assert_eq!(err, "region 3 not found: no store has a replica of it");
        let err = verdict(3, &[(1, Failed("down".into()))]).unwrap_err();
        assert!(err.contains("no store answered"), "{err}");
    }
}
