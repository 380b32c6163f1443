//! The side-by-side Markdown table of a comparison, and the sizes line above it.

use super::{CompareArgs, Comparison};
use crate::report::Report;

/// "256-byte values, 100000 keys" when every pass ran with the same, else per
/// workload: "put, get: 256-byte values, 100000 keys; ycsb-a: 1000-byte values,
/// 1000 keys" (the workloads' defaults differ).
pub(super) fn sizes(cmp: &Comparison) -> String {
    let mut groups: Vec<((usize, u64), Vec<&'static str>)> = Vec::new();
    for p in &cmp.passes {
        let Some(r) = p.a.first().or(p.b.first()) else {
            continue;
        };
        let size = (r.value_size, r.keys);
        let name = p.workload.name();
        match groups.iter_mut().find(|(s, _)| *s == size) {
            Some((_, names)) if names.contains(&name) => {}
            Some((_, names)) => names.push(name),
            None => groups.push((size, vec![name])),
        }
    }
    let text = |(v, k): (usize, u64)| format!("{v}-byte values, {k} keys");
    match groups.as_slice() {
        [] => "no passes".to_string(),
        [(size, _)] => text(*size),
        _ => groups
            .iter()
            .map(|(size, names)| format!("{}: {}", names.join(", "), text(*size)))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// The side-by-side table, in Markdown.
pub fn table(args: &CompareArgs, cmp: &Comparison) -> String {
    let (a, b) = (&cmp.a.name, &cmp.b.name);
    let flags = match cmp.b.node_flags.is_empty() {
        true => String::new(),
        false => format!("; {b}'s nodes run with {}", cmp.b.node_flags.join(" ")),
    } + if cmp.b.unary {
        "; B's load generator sends unary calls"
    } else {
        ""
    } + &cmp
        .b
        .node_bin
        .as_ref()
        .map(|p| format!("; B's nodes run {}", p.display()))
        .unwrap_or_default()
        + &match cmp.b.node_env.is_empty() {
            true => String::new(),
            false => format!("; B's nodes run with {}", cmp.b.node_env.join(" ")),
        }
        + match (cmp.a.tls, cmp.b.tls) {
            (true, true) => "; mutual TLS on every connection of both",
            (false, true) => "; B with mutual TLS on every connection, A without",
            _ => "",
        };
    let mut s = format!(
        "{}, {} s measured after {} s warm-up; {} nodes each, \
         {} Shoal regions, {} cores; rounds {a}, {b}, {b}, {a}: each figure is the mean of a \
         side's two rounds, the ratio that of their sums{flags}\n\n",
        sizes(cmp),
        args.duration.as_secs_f64(),
        args.warmup.as_secs_f64(),
        cmp.nodes,
        cmp.regions,
        cmp.cores
    );
    s.push_str(&format!(
        "| workload | clients | {b} ops/s | {a} ops/s | {b}/{a} (pairs) | {b} p50 ms | {a} p50 ms \
         | {b} p99 ms | {a} p99 ms | CPU us/op {b} (servers + client) | CPU us/op {a} \
         (servers + client) | client bytes/op {b} (out/in) | client bytes/op {a} (out/in) \
         | {b} raft msgs/op | {b} entries/fsync | errors ({b}, {a}) |\n"
    ));
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for p in &cmp.passes {
        let (sh, et) = (&p.b[..], &p.a[..]);
        if sh.is_empty() || et.is_empty() {
            continue;
        }
        let mean =
            |rs: &[Report], f: fn(&Report) -> f64| rs.iter().map(f).sum::<f64>() / rs.len() as f64;
        let total = |rs: &[Report]| rs.iter().map(|r| r.ops_per_sec).sum::<f64>();
        let ratio = total(sh) / total(et).max(1e-9);
        let cpu = |rs: &[Report]| {
            let costs: Vec<_> = rs.iter().filter_map(|r| r.cost_per_op.as_ref()).collect();
            match costs.is_empty() {
                true => "n/a".to_string(),
                false => {
                    let n = costs.len() as f64;
                    let t = costs.iter().map(|c| c.total_cpu_us).sum::<f64>() / n;
                    let sv = costs.iter().map(|c| c.server_cpu_us).sum::<f64>() / n;
                    let cl = costs.iter().map(|c| c.client_cpu_us).sum::<f64>() / n;
                    format!("{t:.0} ({sv:.0} + {cl:.0})")
                }
            }
        };
        let wire = |rs: &[Report]| {
            let w: Vec<_> = rs.iter().filter_map(|r| r.client_wire.as_ref()).collect();
            match w.is_empty() {
                true => "n/a".to_string(),
                false => {
                    let n = w.len() as f64;
                    let out = w.iter().map(|w| w.bytes_out).sum::<f64>() / n;
                    let inb = w.iter().map(|w| w.bytes_in).sum::<f64>() / n;
                    format!("{out:.0} / {inb:.0}")
                }
            }
        };
        let epf = mean(sh, |r| {
            r.cluster_work.as_ref().map_or(0.0, |w| w.entries_per_fsync)
        });
        let msgs = mean(sh, |r| {
            r.cluster_work
                .as_ref()
                .map_or(0.0, |w| w.raft_messages_per_op)
        });
        let errors = |rs: &[Report]| rs.iter().map(|r| r.errors).sum::<u64>();
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {ratio:.2}x | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {msgs:.2} | {epf:.1} | {}, {} |\n",
            p.workload.name(),
            p.clients,
            mean(sh, |r| r.ops_per_sec),
            mean(et, |r| r.ops_per_sec),
            mean(sh, |r| r.latency.p50_ms),
            mean(et, |r| r.latency.p50_ms),
            mean(sh, |r| r.latency.p99_ms),
            mean(et, |r| r.latency.p99_ms),
            cpu(sh),
            cpu(et),
            wire(sh),
            wire(et),
            errors(sh),
            errors(et)
        ));
    }
    s
}
