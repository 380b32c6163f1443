//! What the load generator put on the wire: the TCP payload bytes and data segments
//! of every connection this process holds, read from the kernel's socket statistics
//! (`ss -tinp`, `bytes_sent`, `bytes_received`, `data_segs_out`, `data_segs_in`).
//! The same count serves Shoal and etcd, whatever their protocol: it is what crossed
//! between client and servers, HTTP/2 and gRPC framing included, TCP/IP headers not.
//!
//! Sampled right before and right after the measured phase. A connection closed in
//! between loses its bytes and one opened in between counts from zero, so the load
//! generator's long-lived channels are what this measures (its short status scrapes
//! barely register).

use serde::Serialize;

/// The totals over this process's TCP connections at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WireSample {
    /// Payload bytes sent (retransmissions included).
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Segments carrying data, sent and received.
    pub data_segments: u64,
}

/// Client traffic per request over the measured phase.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct WirePerOp {
    /// Bytes the load generator sent per request.
    pub bytes_out: f64,
    /// Bytes it received per request.
    pub bytes_in: f64,
    /// Data segments both ways per request (how many network writes a request's
    /// share of the traffic took: well under one when a frame carries many).
    pub segments: f64,
}

/// The connections of process `pid` now; `None` when `ss` is missing or fails.
pub fn sample(pid: u32) -> Option<WireSample> {
    let out = std::process::Command::new("ss")
        .args(["-tinpH"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(parse(&String::from_utf8_lossy(&out.stdout), pid))
}

/// Sums the info lines of `pid`'s sockets in `ss -tinpH` output: each socket is one
/// line naming its processes (`users:(("name",pid=N,fd=F))`), then an indented line
/// of `key:value` statistics.
pub fn parse(text: &str, pid: u32) -> WireSample {
    let needle = format!("pid={pid},");
    let mut total = WireSample::default();
    let mut mine = false;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            mine = line.contains(&needle);
            continue;
        }
        if !mine {
            continue;
        }
        mine = false;
        for field in line.split_whitespace() {
            let Some((key, value)) = field.split_once(':') else {
                continue;
            };
            let Ok(n) = value.parse::<u64>() else {
                continue;
            };
            match key {
                "bytes_sent" => total.bytes_sent += n,
                "bytes_received" => total.bytes_received += n,
                "data_segs_out" | "data_segs_in" => total.data_segments += n,
                _ => {}
            }
        }
    }
    total
}

/// The traffic between two samples, per request.
pub fn per_op(before: WireSample, after: WireSample, ops: u64) -> WirePerOp {
    let ops = ops.max(1) as f64;
    WirePerOp {
        bytes_out: after.bytes_sent.saturating_sub(before.bytes_sent) as f64 / ops,
        bytes_in: after.bytes_received.saturating_sub(before.bytes_received) as f64 / ops,
        segments: after.data_segments.saturating_sub(before.data_segments) as f64 / ops,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SS: &str = "\
ESTAB 0 0 127.0.0.1:49056 127.0.0.1:2379 users:((\"shoal\",pid=42,fd=3))
\t bbr rto:204 bytes_sent:1000 bytes_acked:1001 bytes_received:5000 segs_out:6 data_segs_out:10 data_segs_in:20 send 1bps
ESTAB 0 0 127.0.0.1:49057 127.0.0.1:2379 users:((\"other\",pid=420,fd=3))
\t bbr bytes_sent:7 bytes_received:7 data_segs_out:7 data_segs_in:7
ESTAB 0 0 127.0.0.1:49058 127.0.0.1:2380 users:((\"shoal\",pid=42,fd=4))
\t bbr bytes_sent:24 bytes_received:76 data_segs_out:1 data_segs_in:1
ESTAB 0 0 127.0.0.1:2380 127.0.0.1:49058
\t bbr bytes_sent:99 bytes_received:99
";

    #[test]
    fn only_the_sockets_of_the_process_are_summed() {
        let s = parse(SS, 42);
        assert_eq!(
            s,
            WireSample {
                bytes_sent: 1024,
                bytes_received: 5076,
                data_segments: 32
            }
        );
        assert_eq!(parse(SS, 4).bytes_sent, 0);
    }

    #[test]
    fn this_process_sees_its_own_connection_traffic() {
        use std::io::{Read, Write};
        let Some(before) = sample(std::process::id()) else {
            eprintln!("no `ss` on this machine: nothing to check");
            return;
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut b, _) = listener.accept().unwrap();
        a.write_all(&[7u8; 10_000]).unwrap();
        let mut buf = vec![0u8; 10_000];
        b.read_exact(&mut buf).unwrap();
        let after = sample(std::process::id()).unwrap();
        // Both ends are this process: 10,000 bytes out of one, into the other.
        let w = per_op(before, after, 1);
        assert!(w.bytes_out >= 10_000.0, "{w:?}");
        assert!(w.bytes_in >= 10_000.0, "{w:?}");
        assert!(w.segments >= 2.0, "{w:?}");
    }
}
