//! How operations, violations and reports are shown to a human.

use super::*;

/// A value for people: `"text"` when it is printable ASCII, hex otherwise,
/// `absent` for `None`.
pub fn show(v: Option<&[u8]>) -> String {
    match v {
        None => "absent".into(),
        Some(b) if !b.is_empty() && b.iter().all(|c| (0x20..0x7f).contains(c) && *c != b'"') => {
            format!("\"{}\"", String::from_utf8_lossy(b))
        }
        Some(b) => format!("0x{}", to_hex(b)),
    }
}

pub(super) fn outcome_name(t: EventType) -> &'static str {
    match t {
        EventType::Invoke => "invoke",
        EventType::Ok => "ok",
        EventType::Fail => "fail",
        EventType::Info => "info",
    }
}

pub(super) fn ms(ns: u64) -> String {
    format!("{:.3}ms", ns as f64 / 1e6)
}

impl fmt::Display for Operation {
    /// `#12 1.000ms..#15 1.300ms p3 put "3-4" ok` (positions in the history, then
    /// times).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = match (self.complete, self.complete_ns) {
            (Some(i), Some(t)) => format!("#{i} {}", ms(t)),
            _ => "never completed".into(),
        };
        write!(
            f,
            "#{} {}..{end} p{} ",
            self.invoke,
            ms(self.invoke_ns),
            self.process
        )?;
        match &self.op {
            Op::Get { read } if self.outcome == EventType::Ok => {
                write!(f, "get -> {}", show(read.as_deref()))?
            }
            op => write!(f, "{op}")?,
        }
        write!(f, " {}", outcome_name(self.outcome))
    }
}

impl fmt::Display for Op {
    /// `get`, `put "a"`, `cas "a" -> "b"` (values as [`show`] gives them; a get's
    /// read is not shown).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Get { .. } => write!(f, "get"),
            Op::Put { value } => write!(f, "put {}", show(Some(value))),
            Op::Cas { expect, new } => {
                write!(f, "cas {} -> {}", show(expect.as_deref()), show(Some(new)))
            }
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {}: not linearizable: at most {} of its {} operations can be ordered",
            to_hex(&self.key),
            self.linearized,
            self.ops
        )?;
        if self.prefix_tail.is_empty() {
            writeln!(f, "  nothing can go first")?;
        } else {
            writeln!(f, "  the longest order found ends with:")?;
            for o in &self.prefix_tail {
                writeln!(f, "    {o}")?;
            }
        }
        writeln!(
            f,
            "  the register then holds {}; none of these can go next:",
            show(self.state.as_deref())
        )?;
        for s in &self.stuck {
            writeln!(f, "    {}: {}", s.op, s.why)?;
        }
        if self.stuck_more > 0 {
            writeln!(f, "    and {} more", self.stuck_more)?;
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "linearizability: {} keys, {} operations ({} ok, {} fail, {} info of which {} \
             never completed): {} linearizable, {} not, {} undecided ({} search steps)",
            self.keys,
            self.ok + self.fail + self.info,
            self.ok,
            self.fail,
            self.info,
            self.unfinished,
            self.linearizable,
            self.violations.len(),
            self.undecided.len(),
            self.steps
        )?;
        for v in &self.violations {
            write!(f, "{v}")?;
        }
        for u in &self.undecided {
            writeln!(
                f,
                "key {}: undecided: {} operations, gave up after {} steps",
                to_hex(&u.key),
                u.ops,
                u.steps
            )?;
        }
        Ok(())
    }
}
