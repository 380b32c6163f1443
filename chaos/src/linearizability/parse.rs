//! Turning a history's events into each key's operations (invoke paired with
//! completion).

use super::*;

pub(super) fn func_name(f: Func) -> &'static str {
    match f {
        Func::Get => "get",
        Func::Put => "put",
        Func::Cas => "cas",
    }
}

pub(super) fn hex(event: usize, field: &'static str, text: &str) -> Result<Vec<u8>, HistoryError> {
    from_hex(text).ok_or_else(|| HistoryError::BadHex {
        event,
        field,
        text: text.to_string(),
    })
}

/// The operation an invoke (or a write's completion, which repeats it) carries.
pub(super) fn carried_op(i: usize, e: &Event) -> Result<Op, HistoryError> {
    match (e.f, &e.value) {
        (Func::Get, _) => Ok(Op::Get { read: None }),
        (Func::Put, Value::Hex(v)) => Ok(Op::Put {
            value: hex(i, "value", v)?,
        }),
        (Func::Cas, Value::Cas(c)) => Ok(Op::Cas {
            expect: match &c.expect {
                Some(x) => Some(hex(i, "cas expect", x)?),
                None => None,
            },
            new: hex(i, "cas new", &c.new)?,
        }),
        (f, v) => Err(HistoryError::BadValue {
            event: i,
            reason: format!("a {} with the value {v:?}", func_name(f)),
        }),
    }
}

/// The operation once completed by `e` (event `i`): a get's read, or a write's
/// value, which must repeat the invoke's when present.
pub(super) fn completed_op(
    i: usize,
    e: &Event,
    invoked: Op,
    invoke: usize,
) -> Result<Op, HistoryError> {
    if let Op::Get { .. } = invoked {
        let read = match (&e.value, e.kind) {
            (Value::Hex(v), EventType::Ok) => Some(hex(i, "value", v)?),
            (Value::Cas(_), EventType::Ok) => {
                return Err(HistoryError::BadValue {
                    event: i,
                    reason: "a get completed with a CAS value".into(),
                })
            }
            _ => None,
        };
        return Ok(Op::Get { read });
    }
    if e.value != Value::Null {
        let repeated = carried_op(i, e)?;
        if repeated != invoked {
            return Err(HistoryError::Mismatch {
                event: i,
                process: e.process,
                invoke,
                detail: format!("invoked {invoked}, completed {repeated}"),
            });
        }
    }
    Ok(invoked)
}

/// Pairs each invoke with its process's next event, and groups the operations by
/// key (each key's in invoke order). An invoke never completed is an `Info`
/// operation.
pub fn operations(events: &[Event]) -> Result<BTreeMap<Vec<u8>, Vec<Operation>>, HistoryError> {
    let mut open: HashMap<u64, (usize, Vec<u8>, Op)> = HashMap::new();
    let mut keys: BTreeMap<Vec<u8>, Vec<Operation>> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        let key = hex(i, "key", &e.key)?;
        if e.kind == EventType::Invoke {
            if let Some((j, ..)) = open.get(&e.process) {
                return Err(HistoryError::DoubleInvoke {
                    event: i,
                    process: e.process,
                    open: *j,
                });
            }
            let op = carried_op(i, e)?;
            open.insert(e.process, (i, key, op));
            continue;
        }
        let Some((j, invoked_key, op)) = open.remove(&e.process) else {
            return Err(HistoryError::CompletionWithoutInvoke {
                event: i,
                process: e.process,
            });
        };
        let inv = &events[j];
        if inv.f != e.f || invoked_key != key {
            return Err(HistoryError::Mismatch {
                event: i,
                process: e.process,
                invoke: j,
                detail: format!(
                    "invoked {} of key {}, completed {} of key {}",
                    func_name(inv.f),
                    inv.key,
                    func_name(e.f),
                    e.key
                ),
            });
        }
        let op = completed_op(i, e, op, j)?;
        keys.entry(key).or_default().push(Operation {
            process: e.process,
            op,
            outcome: e.kind,
            invoke: j,
            complete: Some(i),
            invoke_ns: inv.time_ns,
            complete_ns: Some(e.time_ns),
        });
    }
    for (process, (j, key, op)) in open {
        keys.entry(key).or_default().push(Operation {
            process,
            op,
            outcome: EventType::Info,
            invoke: j,
            complete: None,
            invoke_ns: events[j].time_ns,
            complete_ns: None,
        });
    }
    for ops in keys.values_mut() {
        ops.sort_by_key(|o| o.invoke);
    }
    Ok(keys)
}
