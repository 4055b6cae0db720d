//! The calls a node of a strong cluster of several logs: every call that
//! may change its ordered store, with its arguments and time, rather than
//! the state it left (`store.rs`, "Marks").
//!
//! Why a replay of the calls gives back the very store, not only its keys:
//! an ordered store (`store/memory.rs`, "Ordered stores") changes only in
//! these calls, each at the time it is given, and what each does depends
//! only on what the store holds (dead items, their places in the table,
//! their bits, the clock's hand, the sweep's cursor) and on its arguments:
//! its reads change nothing, and it sweeps with its writes, not on a
//! timer. So the same calls, in the same order, from the same image, give
//! the same store, place for place, and go on evicting alike. The image a
//! marked log starts from is a snapshot that is a [`Call::Reset`] and the
//! [`Call::Install`] of every entry in the table's order, exactly as a
//! peer's snapshot is installed (`recover.rs`), so recovery is this replay
//! from the start.
//!
//! A call whose outcome was a refusal is logged too: a `set` refused for
//! memory has dropped the old value, and replayed it refuses and drops
//! alike.

use crate::protocol::{Keys, KeysRef, StorageMode};
use crate::store::{Expiry, Head, Housekeeping, RecordRef, StoreResult, UnixTime};
use crate::store::{VersionedStore, Write};

use super::record::{frame, put_bytes, put_u64, Reader};

pub const STORE: u8 = 11;
pub const DELETE: u8 = 12;
pub const ARITH: u8 = 13;
pub const TOUCH: u8 = 14;
pub const GAT: u8 = 15;
pub const RESET: u8 = 16;
pub const INSTALL: u8 = 17;

/// The first and last type byte of a call's record.
pub const FIRST: u8 = STORE;
pub const LAST: u8 = INSTALL;

/// One call to the store, borrowing its arguments: encoded from the
/// caller's, decoded from a record's payload.
#[derive(Debug, Clone)]
pub enum Call<'a> {
    Store {
        now: UnixTime,
        write: Write<'a>,
    },
    Delete {
        now: UnixTime,
        key: &'a [u8],
    },
    Arith {
        now: UnixTime,
        key: &'a [u8],
        incr: bool,
        delta: u64,
        cas: u64,
    },
    Touch {
        now: UnixTime,
        key: &'a [u8],
        expiry: Expiry,
    },
    /// A retrieval that touches what it finds (`gat`, `gats`, `mg ... T`).
    Gat {
        now: UnixTime,
        keys: Vec<&'a [u8]>,
        expiry: Expiry,
    },
    Reset {
        now: UnixTime,
        head: Head,
    },
    Install {
        now: UnixTime,
        record: RecordRef<'a>,
    },
}

impl<'a> Call<'a> {
    /// A retrieval touching `keys`.
    pub fn gat(now: UnixTime, keys: KeysRef<'a>, expiry: Expiry) -> Call<'a> {
        let keys = keys.iter().collect();
        Call::Gat { now, keys, expiry }
    }

    /// Appends the call's record, framed, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        frame(out, |out| self.encode_payload(out));
    }

    fn encode_payload(&self, out: &mut Vec<u8>) {
        match self {
            Call::Store { now, write } => {
                out.push(STORE);
                put_u64(out, *now);
                let (mode, compare) = mode_code(write.mode);
                out.push(mode);
                put_u64(out, compare);
                put_bytes(out, write.key);
                out.extend_from_slice(&write.flags.to_be_bytes());
                put_u64(out, expiry_code(write.expiry));
                put_u64(out, write.cas);
                put_bytes(out, write.value);
            }
            Call::Delete { now, key } => {
                out.push(DELETE);
                put_u64(out, *now);
                put_bytes(out, key);
            }
            Call::Arith {
                now,
                key,
                incr,
                delta,
                cas,
            } => {
                out.push(ARITH);
                put_u64(out, *now);
                put_bytes(out, key);
                out.push(u8::from(*incr));
                put_u64(out, *delta);
                put_u64(out, *cas);
            }
            Call::Touch { now, key, expiry } => {
                out.push(TOUCH);
                put_u64(out, *now);
                put_bytes(out, key);
                put_u64(out, expiry_code(*expiry));
            }
            Call::Gat { now, keys, expiry } => {
                out.push(GAT);
                put_u64(out, *now);
                put_u64(out, expiry_code(*expiry));
                out.extend_from_slice(&(keys.len() as u32).to_be_bytes());
                keys.iter().for_each(|key| put_bytes(out, key));
            }
            Call::Reset { now, head } => {
                out.push(RESET);
                put_u64(out, *now);
                put_u64(out, head.flush_at.map_or(0, |at| at.saturating_add(1)));
                let h = head.housekeeping;
                put_u64(out, h.sweep_cursor.map_or(0, |c| c.saturating_add(1)));
                put_u64(out, h.sweep_began);
                put_u64(out, h.hand);
                put_u64(out, h.last_reclaim);
            }
            Call::Install { now, record } => {
                out.push(INSTALL);
                put_u64(out, *now);
                put_bytes(out, record.key);
                out.extend_from_slice(&record.flags.to_be_bytes());
                put_u64(out, expiry_code(record.expiry));
                put_u64(out, record.cas);
                put_u64(out, record.stored_at);
                out.push(u8::from(record.referenced));
                put_bytes(out, record.value);
            }
        }
    }

    /// The call a record's payload (its type byte first) holds, if it is
    /// one and decodes exactly.
    pub fn decode(payload: &'a [u8]) -> Option<Call<'a>> {
        let mut r = Reader(payload);
        let call = match r.u8()? {
            STORE => {
                let now = r.u64()?;
                let mode = mode_of(r.u8()?, r.u64()?)?;
                let key = r.bytes()?;
                let flags = r.u32()?;
                let expiry = expiry_of(r.u64()?);
                let cas = r.u64()?;
                let value = r.bytes()?;
                let write = Write {
                    mode,
                    key,
                    flags,
                    expiry,
                    value,
                    cas,
                };
                Call::Store { now, write }
            }
            DELETE => Call::Delete {
                now: r.u64()?,
                key: r.bytes()?,
            },
            ARITH => Call::Arith {
                now: r.u64()?,
                key: r.bytes()?,
                incr: bool_of(r.u8()?)?,
                delta: r.u64()?,
                cas: r.u64()?,
            },
            TOUCH => Call::Touch {
                now: r.u64()?,
                key: r.bytes()?,
                expiry: expiry_of(r.u64()?),
            },
            GAT => {
                let (now, expiry) = (r.u64()?, expiry_of(r.u64()?));
                let count = r.u32()? as usize;
                // Each key takes at least its length's four bytes.
                if count > r.0.len() / 4 {
                    return None;
                }
                let keys = (0..count).map(|_| r.bytes()).collect::<Option<_>>()?;
                Call::Gat { now, keys, expiry }
            }
            RESET => {
                let now = r.u64()?;
                let flush_at = r.u64()?.checked_sub(1);
                let housekeeping = Housekeeping {
                    sweep_cursor: r.u64()?.checked_sub(1),
                    sweep_began: r.u64()?,
                    hand: r.u64()?,
                    last_reclaim: r.u64()?,
                };
                let head = Head {
                    flush_at,
                    housekeeping,
                };
                Call::Reset { now, head }
            }
            INSTALL => {
                let now = r.u64()?;
                let key = r.bytes()?;
                let flags = r.u32()?;
                let expiry = expiry_of(r.u64()?);
                let (cas, stored_at) = (r.u64()?, r.u64()?);
                let referenced = bool_of(r.u8()?)?;
                let value = r.bytes()?;
                let record = RecordRef {
                    key,
                    flags,
                    expiry,
                    value,
                    cas,
                    stored_at,
                    referenced,
                };
                Call::Install { now, record }
            }
            _ => return None,
        };
        r.0.is_empty().then_some(call)
    }

    /// Makes the call again on `store`; its outcome (a status, a refusal
    /// the store made) is the one it had, and only a failure of the store
    /// itself is an error.
    pub fn apply(&self, store: &mut dyn VersionedStore) -> StoreResult<()> {
        match self {
            Call::Store { now, write } => store.store(*write, *now).map(drop),
            Call::Delete { now, key } => store.delete(key, *now).map(drop),
            Call::Arith {
                now,
                key,
                incr,
                delta,
                cas,
            } => store.arith(key, *incr, *delta, *cas, *now).map(drop),
            Call::Touch { now, key, expiry } => store.touch(key, *expiry, *now).map(drop),
            Call::Gat { now, keys, expiry } => {
                let keys: Keys = keys.iter().collect();
                store.retrieve(KeysRef::from(&keys), Some(*expiry), *now, &mut |_, _| {})
            }
            Call::Reset { now, head } => store.reset(head, *now),
            Call::Install { now, record } => store.install(&record.to_record(), *now),
        }
    }

    /// The cas unique the call hands out, if any (a restarted node hands
    /// out only higher ones).
    pub fn cas(&self) -> u64 {
        match self {
            Call::Store { write, .. } => write.cas,
            Call::Arith { cas, .. } => *cas,
            Call::Install { record, .. } => record.cas,
            _ => 0,
        }
    }
}

/// A storage mode as a byte, and the unique a `cas` compares with.
fn mode_code(mode: StorageMode) -> (u8, u64) {
    match mode {
        StorageMode::Set => (0, 0),
        StorageMode::Add => (1, 0),
        StorageMode::Replace => (2, 0),
        StorageMode::Append => (3, 0),
        StorageMode::Prepend => (4, 0),
        StorageMode::Cas(unique) => (5, unique),
    }
}

fn mode_of(code: u8, compare: u64) -> Option<StorageMode> {
    Some(match (code, compare) {
        (0, 0) => StorageMode::Set,
        (1, 0) => StorageMode::Add,
        (2, 0) => StorageMode::Replace,
        (3, 0) => StorageMode::Append,
        (4, 0) => StorageMode::Prepend,
        (5, unique) => StorageMode::Cas(unique),
        _ => return None,
    })
}

fn bool_of(byte: u8) -> Option<bool> {
    match byte {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

/// An expiry as a call carries it: 0 for never, else the absolute time
/// plus one (a call may carry a time of 0, already passed, as a `touch`
/// with a negative exptime does, and must replay it so).
fn expiry_code(expiry: Expiry) -> u64 {
    match expiry {
        Expiry::Never => 0,
        Expiry::At(at) => at.saturating_add(1),
    }
}

fn expiry_of(code: u64) -> Expiry {
    code.checked_sub(1).map_or(Expiry::Never, Expiry::At)
}
