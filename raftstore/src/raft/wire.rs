//! The wire check: a raft-rs message's bytes are walked, following the `eraftpb`
//! schema, before anything parses them, and a message holding what the schema
//! does not allow is refused unparsed.
//!
//! Why: raft-rs 0.7 parses peer messages with rust-protobuf 2, which has a
//! published advisory (RUSTSEC-2024-0437: unbounded recursion on nested groups
//! in unknown fields, a stack overflow on crafted input) and no patched 2.x
//! release. Any caller reaches the Raft service when TLS is off. The 2.28 we
//! build stops at the second nested group (`wire_tests.rs` shows it, in a child
//! process), but this check does not lean on that: it refuses every group before
//! the parser runs, so the advisory's input from another store never reaches
//! rust-protobuf. (What is not checked here: the entries a merge's commit
//! carries, which the target's replicas parse from the command; they are read
//! from the source region's own log, which took them through this check.)
//!
//! What is walked: `Message` -> `entries` (`Entry`) and `snapshot` (`Snapshot`
//! -> `SnapshotMetadata` -> `ConfState`); the `data` of an entry whose type is
//! `EntryConfChange` or `EntryConfChangeV2` (raft-rs parses it when a proposal
//! holds one), as `ConfChange` or `ConfChangeV2` -> `ConfChangeSingle`. Every
//! other bytes field (entry data of normal entries: Shoal's own commands,
//! decoded by prost; snapshot data; contexts) is opaque and skipped whole.
//!
//! What is refused:
//! - a group (wire types 3 and 4: proto3 `eraftpb` has none), anywhere, in a
//!   known field or an unknown one;
//! - a wire type that does not exist (6, 7), a field number 0, a tag that does
//!   not fit 32 bits (rust-protobuf truncates those: it would read another tag
//!   than this check did);
//! - a malformed varint (more than 10 bytes, or past 64 bits), a length or fixed
//!   value running past its message's end;
//! - a field of the schema with another wire type than the schema's, or an enum
//!   value the schema does not have (rust-protobuf's parse would fail anyway).
//!
//! It is stricter than rust-protobuf 2.28 in one more way: a nested message whose
//! length runs past the end is refused (the parser takes what there is).
//!
//! Unknown fields of the other wire types are skipped, as proto3 asks (a newer
//! raft-rs may add fields; rust-protobuf keeps them as opaque values, never
//! parsing inside). The walk descends only into the schema's message fields, so
//! it is never deeper than the schema (four levels); it allocates nothing and
//! reads each byte of the framing once (opaque bytes are skipped by length):
//! what it costs per message is in BENCHMARKS.md ("The Raft wire check").

/// Why a message's bytes were refused: what, in which message of the schema, and
/// at which byte of the whole message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{problem} in {message} at byte {at}")]
pub struct WireError {
    pub problem: Problem,
    /// The schema's message being walked (`Message`, `Entry`, ...).
    pub message: &'static str,
    pub at: usize,
}

/// What a refused message held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("a group (wire type {0}): eraftpb has none")]
    Group(u8),
    #[error("wire type {0}, which does not exist")]
    BadWireType(u8),
    #[error("field number 0")]
    FieldZero,
    #[error("a tag past 32 bits")]
    TagTooLong,
    #[error("a malformed varint")]
    Varint,
    #[error("a value running past the end")]
    Truncated,
    #[error("value {value} of enum field {field}, which has no such value")]
    UnknownEnum { field: u32, value: u64 },
    #[error("field {field} with wire type {wire_type}, the schema's is {expected}")]
    WrongWireType {
        field: u32,
        wire_type: u8,
        expected: u8,
    },
}

/// Checks the bytes of a raft-rs `eraftpb::Message`.
pub fn check_message(bytes: &[u8]) -> Result<(), WireError> {
    walk(bytes, 0, &MESSAGE)
}

/// Checks the bytes of one raft-rs `eraftpb::Entry`.
pub fn check_entry(bytes: &[u8]) -> Result<(), WireError> {
    walk(bytes, 0, &ENTRY)
}

// --- the schema (raft-proto 0.7's eraftpb.proto) ---

/// What a field of the schema is.
#[derive(Clone, Copy)]
enum Field {
    /// A scalar: integer or bool (wire type 0).
    Varint,
    /// An enum whose values run from 0 to this (wire type 0); rust-protobuf 2
    /// refuses others in its parse.
    Enum(u64),
    /// Bytes the walk does not look into (wire type 2).
    Opaque,
    /// A repeated integer: packed (wire type 2, varints inside) or one value
    /// (wire type 0); parsers take both.
    Repeated,
    /// A message of the schema (wire type 2).
    Message(&'static Schema),
    /// `Entry.data`: a conf change of the entry's type, else opaque.
    EntryData,
}

/// A message of the schema: its fields, by field number.
struct Schema {
    name: &'static str,
    /// `fields[n]` is field `n` (`None`: not in the schema, or 0).
    fields: &'static [Option<Field>],
}

impl Schema {
    fn field(&self, n: u32) -> Option<Field> {
        self.fields.get(n as usize).copied().flatten()
    }
}

use Field::{EntryData, Enum, Message as Msg, Opaque, Repeated, Varint};

/// `eraftpb.Message`: 1 msg_type, 2 to, 3 from, 4 term, 5 log_term, 6 index,
/// 7 entries, 8 commit, 9 snapshot, 10 reject, 11 reject_hint, 12 context,
/// 13 request_snapshot, 14 deprecated_priority, 15 commit_term, 16 priority.
static MESSAGE: Schema = Schema {
    name: "Message",
    fields: &[
        None,
        Some(Enum(18)),
        Some(Varint),
        Some(Varint),
        Some(Varint),
        Some(Varint),
        Some(Varint),
        Some(Msg(&ENTRY)),
        Some(Varint),
        Some(Msg(&SNAPSHOT)),
        Some(Varint),
        Some(Varint),
        Some(Opaque),
        Some(Varint),
        Some(Varint),
        Some(Varint),
        Some(Varint),
    ],
};

/// `eraftpb.Entry`: 1 entry_type, 2 term, 3 index, 4 data, 5 sync_log, 6 context.
static ENTRY: Schema = Schema {
    name: "Entry",
    fields: &[
        None,
        Some(Enum(2)),
        Some(Varint),
        Some(Varint),
        Some(EntryData),
        Some(Varint),
        Some(Opaque),
    ],
};

/// `eraftpb.Snapshot`: 1 data, 2 metadata.
static SNAPSHOT: Schema = Schema {
    name: "Snapshot",
    fields: &[None, Some(Opaque), Some(Msg(&SNAPSHOT_METADATA))],
};

/// `eraftpb.SnapshotMetadata`: 1 conf_state, 2 index, 3 term.
static SNAPSHOT_METADATA: Schema = Schema {
    name: "SnapshotMetadata",
    fields: &[None, Some(Msg(&CONF_STATE)), Some(Varint), Some(Varint)],
};

/// `eraftpb.ConfState`: 1 voters, 2 learners, 3 voters_outgoing, 4 learners_next,
/// 5 auto_leave.
static CONF_STATE: Schema = Schema {
    name: "ConfState",
    fields: &[
        None,
        Some(Repeated),
        Some(Repeated),
        Some(Repeated),
        Some(Repeated),
        Some(Varint),
    ],
};

/// `eraftpb.ConfChange`: 1 id, 2 change_type, 3 node_id, 4 context.
static CONF_CHANGE: Schema = Schema {
    name: "ConfChange",
    fields: &[
        None,
        Some(Varint),
        Some(Enum(2)),
        Some(Varint),
        Some(Opaque),
    ],
};

/// `eraftpb.ConfChangeV2`: 1 transition, 2 changes, 3 context.
static CONF_CHANGE_V2: Schema = Schema {
    name: "ConfChangeV2",
    fields: &[
        None,
        Some(Enum(2)),
        Some(Msg(&CONF_CHANGE_SINGLE)),
        Some(Opaque),
    ],
};

/// `eraftpb.ConfChangeSingle`: 1 change_type, 2 node_id.
static CONF_CHANGE_SINGLE: Schema = Schema {
    name: "ConfChangeSingle",
    fields: &[None, Some(Enum(2)), Some(Varint)],
};

/// `EntryType` values whose data raft-rs parses.
const ENTRY_CONF_CHANGE: u64 = 1;
const ENTRY_CONF_CHANGE_V2: u64 = 2;

// --- the walk ---

/// A field's value as framed on the wire.
#[derive(Clone, Copy)]
enum Value<'a> {
    Varint(u64),
    Fixed,
    Bytes(&'a [u8]),
}

impl Value<'_> {
    fn wire_type(&self) -> u8 {
        match self {
            Value::Varint(_) => 0,
            Value::Fixed => 1,
            Value::Bytes(_) => 2,
        }
    }
}

/// Walks the fields of one message of `schema` (`bytes`, which start at byte
/// `base` of the whole message). Recursion follows the schema's message fields
/// only, and the schema has no cycle: at most four levels.
fn walk(bytes: &[u8], base: usize, schema: &Schema) -> Result<(), WireError> {
    // An entry's data is read by its type, which may come after it on the wire;
    // for both, the last occurrence counts (as in every protobuf parser, and
    // raft-rs parses the data it ends with): the data is walked once the whole
    // entry has been.
    let (mut entry_type, mut data) = (0, None);
    let mut fields = Fields::new(bytes, base, schema);
    while let Some(f) = fields.next_field()? {
        let Some(kind) = schema.field(f.number) else {
            continue;
        };
        let wrong = |expected| WireError {
            problem: Problem::WrongWireType {
                field: f.number,
                wire_type: f.value.wire_type(),
                expected,
            },
            message: schema.name,
            at: f.at,
        };
        match (kind, f.value) {
            (Varint | Repeated, Value::Varint(_)) | (Opaque, Value::Bytes(_)) => {}
            (Enum(max), Value::Varint(v)) if v <= max => {
                if f.number == 1 {
                    entry_type = v;
                }
            }
            (Enum(_), Value::Varint(v)) => {
                return Err(WireError {
                    problem: Problem::UnknownEnum {
                        field: f.number,
                        value: v,
                    },
                    message: schema.name,
                    at: f.at,
                })
            }
            (Repeated, Value::Bytes(b)) => packed(b, f.body, schema)?,
            (Msg(inner), Value::Bytes(b)) => walk(b, f.body, inner)?,
            (EntryData, Value::Bytes(b)) => data = Some((b, f.body)),
            (Varint | Enum(_), _) => return Err(wrong(0)),
            (_, _) => return Err(wrong(2)),
        }
    }
    if let Some((b, at)) = data {
        match entry_type {
            ENTRY_CONF_CHANGE => walk(b, at, &CONF_CHANGE)?,
            ENTRY_CONF_CHANGE_V2 => walk(b, at, &CONF_CHANGE_V2)?,
            _ => {}
        }
    }
    Ok(())
}

/// A packed repeated integer: varints, to its end.
fn packed(bytes: &[u8], base: usize, schema: &Schema) -> Result<(), WireError> {
    let mut pos = 0;
    while pos < bytes.len() {
        pos = varint(bytes, pos)
            .map_err(|problem| WireError {
                problem,
                message: schema.name,
                at: base + pos,
            })?
            .1;
    }
    Ok(())
}

/// One field as framed: its number, value, where its tag starts and where its
/// value's bytes start (in the whole message).
struct Framed<'a> {
    number: u32,
    value: Value<'a>,
    at: usize,
    body: usize,
}

/// The fields of one message, in wire order.
struct Fields<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: usize,
    schema: &'static str,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8], base: usize, schema: &Schema) -> Self {
        Fields {
            bytes,
            pos: 0,
            base,
            schema: schema.name,
        }
    }

    /// The next field, `None` at the end, or why its framing is refused.
    fn next_field(&mut self) -> Result<Option<Framed<'a>>, WireError> {
        if self.pos == self.bytes.len() {
            return Ok(None);
        }
        let at = self.pos;
        let fail = |problem, pos: usize| WireError {
            problem,
            message: self.schema,
            at: self.base + pos,
        };
        let (tag, next) = varint(self.bytes, at).map_err(|p| fail(p, at))?;
        let tag = u32::try_from(tag).map_err(|_| fail(Problem::TagTooLong, at))?;
        let (number, wire_type) = (tag >> 3, (tag & 7) as u8);
        if number == 0 {
            return Err(fail(Problem::FieldZero, at));
        }
        let (value, body, end) = match wire_type {
            0 => {
                let (v, end) = varint(self.bytes, next).map_err(|p| fail(p, next))?;
                (Value::Varint(v), next, end)
            }
            1 | 5 => {
                let end = next + if wire_type == 1 { 8 } else { 4 };
                if end > self.bytes.len() {
                    return Err(fail(Problem::Truncated, next));
                }
                (Value::Fixed, next, end)
            }
            2 => {
                let (len, start) = varint(self.bytes, next).map_err(|p| fail(p, next))?;
                if len > (self.bytes.len() - start) as u64 {
                    return Err(fail(Problem::Truncated, next));
                }
                let end = start + len as usize;
                (Value::Bytes(&self.bytes[start..end]), start, end)
            }
            3 | 4 => return Err(fail(Problem::Group(wire_type), at)),
            _ => return Err(fail(Problem::BadWireType(wire_type), at)),
        };
        self.pos = end;
        Ok(Some(Framed {
            number,
            value,
            at: self.base + at,
            body: self.base + body,
        }))
    }
}

/// The varint at `pos`: its value and the position after it. At most 10 bytes,
/// and the tenth may hold only the 64th bit.
#[inline]
fn varint(bytes: &[u8], pos: usize) -> Result<(u64, usize), Problem> {
    // Most are one byte (tags, small values).
    if let Some(&b) = bytes.get(pos) {
        if b < 0x80 {
            return Ok((u64::from(b), pos + 1));
        }
    }
    let mut value = 0u64;
    for i in 0..10 {
        let Some(&b) = bytes.get(pos + i) else {
            return Err(Problem::Truncated);
        };
        if i == 9 && b > 1 {
            return Err(Problem::Varint);
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok((value, pos + i + 1));
        }
    }
    Err(Problem::Varint)
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
