//! How the admin commands print regions: a table ([`regions_table`]), a detail view
//! of one region ([`region_detail`]) and JSON for scripts ([`region_json`]).
//!
//! Keys are printed as [`keys`](super::keys) describes: quoted and escaped, `-inf` /
//! `+inf` for the empty start / end key. In JSON each key is given twice: `start_key`
//! (the escaped form, without quotes; "" for the empty key) and `start_key_hex`.

use serde_json::{json, Value};
use shoal_client::{Peer, Region, RegionInfo};
use shoal_proto::metapb::PeerRole;

use super::keys::{end_bound, escape, start_bound, to_hex};

/// The help text that explains the region views (shown by `--help`).
pub const REGION_VIEW_HELP: &str = "\
Columns: ID, START and END (the range [START, END)), EPOCH (conf_ver/version), LEADER
(the leader's store id, - when unknown), PEERS (peer_id@store_id, comma-separated, a
learner marked (learner); during a membership change a voter joining marked
(incoming), one leaving (demoting)), SIZE and KEYS (approximate).

Keys are shown in double quotes: printable ASCII as is, \\\" and \\\\ for a quote and a
backslash, any other byte as \\xNN. The empty start key (the beginning of the key
space) shows as -inf, the empty end key (its end) as +inf.

With --json: an array of objects {id, start_key, start_key_hex, end_key, end_key_hex,
epoch: {conf_ver, version}, leader: {peer_id, store_id} or null, leader_store (or
null), peers: [{peer_id, store_id, role (voter, learner, incoming_voter,
demoting_voter)}], approximate_size, approximate_keys}; keys in
the escaped form above without quotes, and as hex; \"\" is -inf for start_key and +inf
for end_key.";

/// A peer's role as the JSON views name it.
fn role_name(peer: &Peer) -> &'static str {
    match PeerRole::try_from(peer.role) {
        Ok(PeerRole::Learner) => "learner",
        Ok(PeerRole::IncomingVoter) => "incoming_voter",
        Ok(PeerRole::DemotingVoter) => "demoting_voter",
        _ => "voter",
    }
}

/// `peer_id@store_id`, with `(learner)` for a learner, `(incoming)` or
/// `(demoting)` for a voter of one half of a joint configuration.
fn peer_label(peer: &Peer) -> String {
    let mark = match PeerRole::try_from(peer.role) {
        Ok(PeerRole::Learner) => "(learner)",
        Ok(PeerRole::IncomingVoter) => "(incoming)",
        Ok(PeerRole::DemotingVoter) => "(demoting)",
        _ => "",
    };
    format!("{}@{}{mark}", peer.id, peer.store_id)
}

fn peers_label(region: &Region) -> String {
    let peers: Vec<String> = region.peers.iter().map(peer_label).collect();
    peers.join(",")
}

fn epoch_label(region: &Region) -> String {
    let epoch = region.region_epoch.unwrap_or_default();
    format!("{}/{}", epoch.conf_ver, epoch.version)
}

/// Bytes for humans: `512 B`, `1.5 KiB`, `96.0 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Lays out rows in columns two spaces apart; `right[i]` right-aligns column i.
fn layout(header: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            if right[i] {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            } else {
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// The regions as a table, one line per region, in the order given.
pub fn regions_table(infos: &[RegionInfo]) -> String {
    let rows: Vec<Vec<String>> = infos
        .iter()
        .map(|info| {
            let r = info.region.clone().unwrap_or_default();
            vec![
                r.id.to_string(),
                start_bound(&r.start_key),
                end_bound(&r.end_key),
                epoch_label(&r),
                info.leader
                    .map_or("-".to_string(), |l| l.store_id.to_string()),
                peers_label(&r),
                human_size(info.approximate_size),
                info.approximate_keys.to_string(),
            ]
        })
        .collect();
    layout(
        &[
            "ID", "START", "END", "EPOCH", "LEADER", "PEERS", "SIZE", "KEYS",
        ],
        &rows,
        &[true, false, false, false, true, false, true, true],
    )
}

/// One region in detail, one field per line.
pub fn region_detail(info: &RegionInfo) -> String {
    let r = info.region.clone().unwrap_or_default();
    let epoch = r.region_epoch.unwrap_or_default();
    let key_line = |shown: String, key: &[u8]| {
        if key.is_empty() {
            format!("{shown} (empty)")
        } else {
            format!("{shown} (hex {})", to_hex(key))
        }
    };
    let leader = match info.leader {
        Some(l) => format!("peer {} on store {}", l.id, l.store_id),
        None => "unknown".to_string(),
    };
    let size = if info.approximate_size < 1024 {
        human_size(info.approximate_size)
    } else {
        format!(
            "{} ({} bytes)",
            human_size(info.approximate_size),
            info.approximate_size
        )
    };
    [
        format!("region {}", r.id),
        format!(
            "  start key:    {}",
            key_line(start_bound(&r.start_key), &r.start_key)
        ),
        format!(
            "  end key:      {}",
            key_line(end_bound(&r.end_key), &r.end_key)
        ),
        format!(
            "  epoch:        {}/{} (conf_ver {}, version {})",
            epoch.conf_ver, epoch.version, epoch.conf_ver, epoch.version
        ),
        format!("  leader:       {leader}"),
        format!("  peers:        {}", peers_label(&r)),
        format!("  approx size:  {size}"),
        format!("  approx keys:  {}", info.approximate_keys),
    ]
    .join("\n")
        + "\n"
}

/// One replica of a region, as its store reported it.
pub struct Replica {
    /// The store holding it.
    pub store_id: u64,
    /// Its peer id.
    pub peer_id: u64,
    /// The store's view, or why there is none.
    pub view: Result<RegionInfo, String>,
}

/// The replicas, one line each: log bounds, applied index, and whether dormant.
pub fn replicas_detail(replicas: &[Replica]) -> String {
    let mut out = String::from("  replicas:\n");
    for r in replicas {
        let line = match &r.view {
            Ok(v) => format!(
                "log {}..={}, applied {}{}",
                v.first_log_index,
                v.last_log_index,
                v.applied_index,
                if v.dormant { ", dormant" } else { "" }
            ),
            Err(e) => format!("no answer: {e}"),
        };
        out += &format!("    store {} (peer {}): {line}\n", r.store_id, r.peer_id);
    }
    out
}

/// The replicas as a JSON array of {store_id, peer_id, first_log_index,
/// last_log_index, applied_index, dormant} or {store_id, peer_id, error}.
pub fn replicas_json(replicas: &[Replica]) -> Value {
    Value::Array(
        replicas
            .iter()
            .map(|r| match &r.view {
                Ok(v) => json!({
                    "store_id": r.store_id,
                    "peer_id": r.peer_id,
                    "first_log_index": v.first_log_index,
                    "last_log_index": v.last_log_index,
                    "applied_index": v.applied_index,
                    "dormant": v.dormant,
                }),
                Err(e) => json!({ "store_id": r.store_id, "peer_id": r.peer_id, "error": e }),
            })
            .collect(),
    )
}

/// One region as a JSON object (fields in [`REGION_VIEW_HELP`]).
pub fn region_json(info: &RegionInfo) -> Value {
    let r = info.region.clone().unwrap_or_default();
    let epoch = r.region_epoch.unwrap_or_default();
    let peers: Vec<Value> = r
        .peers
        .iter()
        .map(|p| {
            json!({
                "peer_id": p.id,
                "store_id": p.store_id,
                "role": role_name(p),
            })
        })
        .collect();
    json!({
        "id": r.id,
        "start_key": escape(&r.start_key),
        "start_key_hex": to_hex(&r.start_key),
        "end_key": escape(&r.end_key),
        "end_key_hex": to_hex(&r.end_key),
        "epoch": { "conf_ver": epoch.conf_ver, "version": epoch.version },
        "leader": info.leader.map(|l| json!({ "peer_id": l.id, "store_id": l.store_id })),
        "leader_store": info.leader.map(|l| l.store_id),
        "peers": peers,
        "approximate_size": info.approximate_size,
        "approximate_keys": info.approximate_keys,
    })
}

/// The regions as a pretty-printed JSON array, with a final newline.
pub fn regions_json(infos: &[RegionInfo]) -> String {
    let array: Vec<Value> = infos.iter().map(region_json).collect();
    pretty(&Value::Array(array))
}

/// `value` pretty-printed, with a final newline.
pub fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("a JSON value serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_client::RegionEpoch;

    fn peer(id: u64, store_id: u64, role: PeerRole) -> Peer {
        Peer {
            id,
            store_id,
            role: role as i32,
        }
    }

    /// Two hand-made regions: [-inf, "@\x00") with a known leader and a learner, and
    /// ["@\x00", +inf) without a leader.
    fn sample() -> Vec<RegionInfo> {
        vec![
            RegionInfo {
                region: Some(Region {
                    id: 1,
                    start_key: vec![],
                    end_key: b"@\x00".to_vec(),
                    region_epoch: Some(RegionEpoch {
                        conf_ver: 3,
                        version: 7,
                    }),
                    peers: vec![
                        peer(5, 1, PeerRole::Voter),
                        peer(6, 2, PeerRole::Voter),
                        peer(7, 3, PeerRole::Learner),
                    ],
                }),
                leader: Some(peer(6, 2, PeerRole::Voter)),
                approximate_size: 3 * 1024 * 1024 / 2,
                approximate_keys: 1234,
                ..Default::default()
            },
            RegionInfo {
                region: Some(Region {
                    id: 12,
                    start_key: b"@\x00".to_vec(),
                    end_key: vec![],
                    region_epoch: Some(RegionEpoch {
                        conf_ver: 1,
                        version: 2,
                    }),
                    peers: vec![peer(20, 1, PeerRole::Voter)],
                }),
                leader: None,
                approximate_size: 100,
                approximate_keys: 0,
                ..Default::default()
            },
        ]
    }

    #[test]
    fn replicas_show_their_log_bounds_or_why_not() {
        let view = RegionInfo {
            first_log_index: 120,
            last_log_index: 300,
            applied_index: 299,
            ..Default::default()
        };
        let replicas = [
            Replica {
                store_id: 1,
                peer_id: 5,
                view: Ok(view),
            },
            Replica {
                store_id: 2,
                peer_id: 6,
                view: Err("unreachable".into()),
            },
        ];
        assert_eq!(
            replicas_detail(&replicas),
            "  replicas:\n    store 1 (peer 5): log 120..=300, applied 299\n    \
             store 2 (peer 6): no answer: unreachable\n"
        );
        let v = replicas_json(&replicas);
        assert_eq!(v[0]["first_log_index"], 120);
        assert_eq!(v[1]["error"], "unreachable");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(96 << 20), "96.0 MiB");
        assert_eq!(human_size(5 << 40), "5.0 TiB");
    }

    #[test]
    fn table_has_one_aligned_row_per_region() {
        let table = regions_table(&sample());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            header,
            ["ID", "START", "END", "EPOCH", "LEADER", "PEERS", "SIZE", "KEYS"]
        );
        let cells = |line: &str| {
            line.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            cells(lines[1]),
            [
                "1",
                "-inf",
                "\"@\\x00\"",
                "3/7",
                "2",
                "5@1,6@2,7@3(learner)",
                "1.5 MiB",
                "1234"
            ]
        );
        assert_eq!(
            cells(lines[2]),
            ["12", "\"@\\x00\"", "+inf", "1/2", "-", "20@1", "100 B", "0"]
        );
        // Columns line up: every row has its END at the header's END column.
        let end_col = lines[0].find("END").unwrap();
        assert_eq!(&lines[1][end_col..end_col + 7], "\"@\\x00\"");
        assert_eq!(&lines[2][end_col..end_col + 4], "+inf");
    }

    #[test]
    fn detail_shows_every_field() {
        let sample = sample();
        let text = region_detail(&sample[0]);
        let expected = "\
region 1
  start key:    -inf (empty)
  end key:      \"@\\x00\" (hex 4000)
  epoch:        3/7 (conf_ver 3, version 7)
  leader:       peer 6 on store 2
  peers:        5@1,6@2,7@3(learner)
  approx size:  1.5 MiB (1572864 bytes)
  approx keys:  1234
";
        assert_eq!(text, expected);
        let text = region_detail(&sample[1]);
        assert!(
            text.contains("start key:    \"@\\x00\" (hex 4000)"),
            "{text}"
        );
        assert!(text.contains("end key:      +inf (empty)"), "{text}");
        assert!(text.contains("leader:       unknown"), "{text}");
        assert!(text.contains("approx size:  100 B\n"), "{text}");
    }

    #[test]
    fn json_has_the_same_fields_with_keys_escaped_and_hex() {
        let text = regions_json(&sample());
        let value: Value = serde_json::from_str(&text).unwrap();
        let array = value.as_array().unwrap();
        assert_eq!(array.len(), 2);
        assert_eq!(
            array[0],
            json!({
                "id": 1,
                "start_key": "",
                "start_key_hex": "",
                "end_key": "@\\x00",
                "end_key_hex": "4000",
                "epoch": { "conf_ver": 3, "version": 7 },
                "leader": { "peer_id": 6, "store_id": 2 },
                "leader_store": 2,
                "peers": [
                    { "peer_id": 5, "store_id": 1, "role": "voter" },
                    { "peer_id": 6, "store_id": 2, "role": "voter" },
                    { "peer_id": 7, "store_id": 3, "role": "learner" },
                ],
                "approximate_size": 1572864,
                "approximate_keys": 1234,
            })
        );
        assert_eq!(array[1]["leader"], Value::Null);
        assert_eq!(array[1]["leader_store"], Value::Null);
        assert_eq!(array[1]["start_key_hex"], "4000");
        assert_eq!(array[1]["end_key"], "");
        assert!(text.ends_with("]\n"));
    }
}
