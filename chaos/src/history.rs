//! The history of a run: what each client process invoked and how each operation
//! completed, as JSON lines (one [`Event`] per line), so that other tools can
//! produce and read it:
//!
//! ```text
//! {"process":3,"type":"invoke","f":"put","key":"6b31","value":"7631","time_ns":123}
//! {"process":3,"type":"ok","f":"put","key":"6b31","value":"7631","time_ns":456}
//! ```
//!
//! - `type`: `invoke`, then one of `ok`, `fail` (certainly did not happen) or
//!   `info` (outcome unknown: it may or may not have taken effect);
//! - `f`: `get` (the completion's `value` is the hex read, or null when absent),
//!   `put`, or `cas` (`value` is `{"expect":"<hex>"|null,"new":"<hex>"}`; a compare
//!   that did not match completes as `fail`);
//! - keys and values are hex; `time_ns` counts from the start of the run.
//!
//! A process runs one operation at a time: its completion is the next event of
//! that process after its invoke. One exception, in the set workload only: a
//! BatchWrite is recorded as one put per key, its invokes one after the other and
//! then its completions (the set check pairs puts by key; the register checker
//! never sees set keys).

use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What happened to an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The client called it.
    Invoke,
    /// It took effect (a get read `value`).
    Ok,
    /// It certainly did not take effect.
    Fail,
    /// Its outcome is unknown.
    Info,
}

/// The operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Func {
    /// Read a key.
    Get,
    /// Write a key.
    Put,
    /// Compare-and-swap a key.
    Cas,
}

/// A compare-and-swap's arguments (hex; `expect: None` means "absent").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CasValue {
    /// The value expected (hex), or null for "the key is absent".
    pub expect: Option<String>,
    /// The value written when the compare matches (hex).
    pub new: String,
}

/// An event's value: a hex string, null, or a CAS's arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A CAS's arguments.
    Cas(CasValue),
    /// A value (hex).
    Hex(String),
    /// Absent (a get that found nothing), or not known yet (a get's invoke).
    Null,
}

impl Value {
    /// The bytes of a hex value (`None` for null or a CAS).
    pub fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            Value::Hex(h) => from_hex(h),
            _ => None,
        }
    }
}

/// One line of the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The client process (one operation at a time each).
    pub process: u64,
    /// Invoke or completion.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The operation.
    pub f: Func,
    /// The key (hex).
    pub key: String,
    /// The value (see the module docs).
    #[serde(default = "null")]
    pub value: Value,
    /// Nanoseconds since the start of the run.
    pub time_ns: u64,
}

fn null() -> Value {
    Value::Null
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a hex string; `None` when it is not hex.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Writes `events` as JSON lines.
pub fn write(out: &mut impl Write, events: &[Event]) -> std::io::Result<()> {
    for e in events {
        serde_json::to_writer(&mut *out, e)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Why a history file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line is not an event.
    #[error("{path}:{line}: not a history event: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The line number (from 1).
        line: usize,
        /// What is wrong with it.
        source: serde_json::Error,
    },
}

/// Reads a JSON-lines history (blank lines are skipped).
pub fn read(path: &Path) -> Result<Vec<Event>, ReadError> {
    let shown = path.display().to_string();
    let io = |source| ReadError::Io {
        path: shown.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut events = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let e = serde_json::from_str(&line).map_err(|source| ReadError::Parse {
            path: shown.clone(),
            line: i + 1,
            source,
        })?;
        events.push(e);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_in_the_documented_format() {
        let lines = [
            r#"{"process":3,"type":"invoke","f":"put","key":"6b31","value":"7631","time_ns":123}"#,
            r#"{"process":3,"type":"ok","f":"get","key":"6b31","value":null,"time_ns":456}"#,
            r#"{"process":4,"type":"info","f":"cas","key":"6b31","value":{"expect":null,"new":"7632"},"time_ns":789}"#,
        ];
        for line in lines {
            let e: Event = serde_json::from_str(line).unwrap();
            assert_eq!(serde_json::to_string(&e).unwrap(), line);
        }
        let e: Event = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(
            e.value,
            Value::Cas(CasValue {
                expect: None,
                new: "7632".into()
            })
        );
        assert_eq!(from_hex("7632"), Some(b"v2".to_vec()));
        assert_eq!(to_hex(b"v2"), "7632");
        assert_eq!(from_hex("7g"), None);
    }
}
