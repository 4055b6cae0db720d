//! Runs the meta commands (`mg ms md ma me`) against a [`Store`] and writes
//! memcached 1.6's meta replies.
//!
//! Each is made of the store's own operations (retrieve, store, delete,
//! arith, touch), run one after the other while the store is held, so a
//! meta command is as atomic as a classic one and replicates the same way:
//! every replica runs the same operations with the same cas unique.
//!
//! ```text
//!  mg  retrieve ─► T? touch              HD|VA <size> <flags>*   EN (quiet: nothing)
//!  ms  [retrieve: C of append] ─► store  HD (quiet: nothing)|NS|EX|NF <flags>*
//!  md  [retrieve: C] ─► delete           HD (quiet: nothing)|NF|EX <flags>*
//!  ma  [retrieve] ─► arith ─► N? add ─► T/N? touch   HD|VA <len> <flags>*, NF, EX
//!  me  retrieve                          ME <key> exp= la= cas= fetch= cls= size=
//! ```

use super::execute::{Executed, Outcome};
use super::{
    ArithOutcome, Expiry, Item, KeysRef, Store, StoreResult, StoreStatus, UnixTime, Write,
};
use crate::protocol::{
    base64, reply, Meta, MetaArith, MetaFlag, MetaOp, MetaReply, MetaSet, StorageMode,
};

/// Runs `meta` at `now`, giving what it writes the cas unique `cas`, and
/// appends its reply to `out`.
pub fn run(
    store: &mut dyn Store,
    meta: &Meta,
    now: UnixTime,
    cas: u64,
    out: &mut Vec<u8>,
) -> StoreResult<Executed> {
    match &meta.op {
        MetaOp::Get => get(store, meta, now, out),
        MetaOp::Set(set) => store_value(store, meta, set, now, cas, out),
        MetaOp::Delete { compare } => delete(store, meta, *compare, now, out),
        MetaOp::Arith(arith) => arithmetic(store, meta, arith, now, cas, out),
        MetaOp::Debug => debug(store, meta, now, out),
    }
}

fn done(outcome: Outcome, changed: bool) -> Executed {
    Executed { outcome, changed }
}

/// The live item under `key`, if any.
fn peek(store: &mut dyn Store, key: &[u8], now: UnixTime) -> StoreResult<Option<Item>> {
    let mut found = None;
    store.retrieve(KeysRef::One(key), None, now, &mut |_, item| {
        found = Some(item.to_item())
    })?;
    Ok(found)
}

/// What the reply flags read from the item the command found or made.
struct Found<'a> {
    item: &'a Item,
    /// Its expiry as of the flag being written (`T` changes it).
    expiry: Expiry,
    /// `ma` made it (`N` gives it an expiry).
    created: bool,
}

/// Writes a status line: `code`, then the flags `meta` asks for, in its
/// order; without a found item only `O` and `k` are written.
fn status_line(
    out: &mut Vec<u8>,
    code: &[u8],
    meta: &Meta,
    now: UnixTime,
    mut found: Option<Found<'_>>,
) {
    out.extend_from_slice(code);
    for flag in &meta.reply.flags {
        match (flag, found.as_mut()) {
            (MetaFlag::Opaque(token), _) => {
                out.push(b' ');
                out.extend_from_slice(token);
            }
            (MetaFlag::Key, _) => key(out, &meta.key, &meta.reply),
            (MetaFlag::Cas, Some(f)) => number(out, b'c', f.item.cas),
            (MetaFlag::ClientFlags, Some(f)) => number(out, b'f', u64::from(f.item.flags)),
            (MetaFlag::Size, Some(f)) => number(out, b's', f.item.value.len() as u64),
            (MetaFlag::Ttl, Some(f)) => ttl(out, f.expiry, now),
            (MetaFlag::Touch(exptime), Some(f)) => f.expiry = Expiry::from_exptime(*exptime, now),
            (MetaFlag::Vivify(exptime), Some(f)) if f.created => {
                f.expiry = Expiry::from_exptime(*exptime, now)
            }
            _ => {}
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// ` <letter><n>`.
fn number(out: &mut Vec<u8>, letter: u8, n: u64) {
    out.push(b' ');
    out.push(letter);
    reply::decimal(out, n);
}

/// ` k<key>`, or ` k<base64 key> b` for a key sent in base64.
fn key(out: &mut Vec<u8>, key: &[u8], how: &MetaReply) {
    out.extend_from_slice(b" k");
    if how.base64 {
        base64::encode(key, out);
        out.extend_from_slice(b" b");
    } else {
        out.extend_from_slice(key);
    }
}

/// ` t<seconds left>`, ` t-1` for an item that never expires.
fn ttl(out: &mut Vec<u8>, expiry: Expiry, now: UnixTime) {
    match expiry {
        Expiry::Never => out.extend_from_slice(b" t-1"),
        Expiry::At(at) => number(out, b't', u64::from(at.wrapping_sub(now) as u32)),
    }
}

/// The expiry the item has once the `T` (and, for an item `ma` made, `N`)
/// flags have acted, if they change it.
fn new_expiry(meta: &Meta, item: &Item, created: bool, now: UnixTime) -> Option<Expiry> {
    let mut expiry = None;
    for flag in &meta.reply.flags {
        match flag {
            MetaFlag::Touch(exptime) => expiry = Some(Expiry::from_exptime(*exptime, now)),
            MetaFlag::Vivify(exptime) if created => {
                expiry = Some(Expiry::from_exptime(*exptime, now))
            }
            _ => {}
        }
    }
    expiry.filter(|&e| e != item.expiry)
}

fn get(
    store: &mut dyn Store,
    meta: &Meta,
    now: UnixTime,
    out: &mut Vec<u8>,
) -> StoreResult<Executed> {
    let Some(item) = peek(store, &meta.key, now)? else {
        if !meta.reply.quiet {
            status_line(out, b"EN", meta, now, None);
        }
        return Ok(done(Outcome::Retrieved { hits: 0 }, false));
    };
    let found = Found {
        item: &item,
        expiry: item.expiry,
        created: false,
    };
    if meta.reply.value {
        out.extend_from_slice(b"VA ");
        reply::decimal(out, item.value.len() as u64);
        status_line(out, b"", meta, now, Some(found));
        out.extend_from_slice(&item.value);
        out.extend_from_slice(b"\r\n");
    } else {
        status_line(out, b"HD", meta, now, Some(found));
    }
    let touched = match new_expiry(meta, &item, false, now) {
        Some(expiry) => store.touch(&meta.key, expiry, now)?,
        None => false,
    };
    Ok(done(Outcome::Retrieved { hits: 1 }, touched))
}

fn store_value(
    store: &mut dyn Store,
    meta: &Meta,
    set: &MetaSet,
    now: UnixTime,
    cas: u64,
    out: &mut Vec<u8>,
) -> StoreResult<Executed> {
    let refused = match set.compare {
        Some(unique) => peek(store, &meta.key, now)?.is_some_and(|item| item.cas != unique),
        None => false,
    };
    let status = if refused {
        StoreStatus::Exists
    } else {
        let write = Write {
            mode: set.mode,
            key: &meta.key,
            flags: set.flags,
            expiry: Expiry::from_exptime(set.exptime, now),
            value: &set.value,
            cas,
        };
        store.store(write, now)?
    };
    let stored = status == StoreStatus::Stored;
    let code: &[u8] = match status {
        StoreStatus::Stored => b"HD",
        StoreStatus::NotStored => b"NS",
        StoreStatus::Exists => b"EX",
        StoreStatus::NotFound => b"NF",
    };
    if !(stored && meta.reply.quiet) {
        // `c` returns the new unique, or 0 when nothing was stored.
        let written = Item {
            flags: set.flags,
            value: Vec::new(),
            cas: if stored { cas } else { 0 },
            expiry: Expiry::Never,
        };
        let found = Found {
            item: &written,
            expiry: Expiry::Never,
            created: false,
        };
        status_line(out, code, meta, now, Some(found));
    }
    Ok(done(Outcome::Stored(status), stored))
}

fn delete(
    store: &mut dyn Store,
    meta: &Meta,
    compare: Option<u64>,
    now: UnixTime,
    out: &mut Vec<u8>,
) -> StoreResult<Executed> {
    if let Some(unique) = compare {
        if peek(store, &meta.key, now)?.is_some_and(|item| item.cas != unique) {
            status_line(out, b"EX", meta, now, None);
            return Ok(done(Outcome::Found(false), false));
        }
    }
    let deleted = store.delete(&meta.key, now)?;
    if !deleted {
        status_line(out, b"NF", meta, now, None);
    } else if !meta.reply.quiet {
        status_line(out, b"HD", meta, now, None);
    }
    Ok(done(Outcome::Found(deleted), deleted))
}

fn arithmetic(
    store: &mut dyn Store,
    meta: &Meta,
    arith: &MetaArith,
    now: UnixTime,
    cas: u64,
    out: &mut Vec<u8>,
) -> StoreResult<Executed> {
    let before = peek(store, &meta.key, now)?;
    if let (Some(unique), Some(item)) = (arith.compare, &before) {
        if item.cas != unique {
            status_line(out, b"EX", meta, now, None);
            return Ok(done(Outcome::Done, false));
        }
    }
    let (number, expiry, created) =
        match store.arith(&meta.key, arith.incr, arith.delta, cas, now)? {
            ArithOutcome::Value(n) => (n, before.map_or(Expiry::Never, |item| item.expiry), false),
            ArithOutcome::NonNumeric => {
                out.extend_from_slice(reply::NON_NUMERIC);
                return Ok(done(Outcome::NonNumeric, false));
            }
            ArithOutcome::NotFound => match arith.initial {
                Some(initial) if vivify(store, meta, initial, now, cas)? => {
                    (initial, Expiry::Never, true)
                }
                Some(_) => {
                    status_line(out, b"NS", meta, now, None);
                    return Ok(done(Outcome::Done, false));
                }
                None => {
                    status_line(out, b"NF", meta, now, None);
                    return Ok(done(Outcome::Found(false), false));
                }
            },
        };
    let item = Item {
        flags: 0,
        value: number.to_string().into_bytes(),
        cas,
        expiry,
    };
    if let Some(expiry) = new_expiry(meta, &item, created, now) {
        store.touch(&meta.key, expiry, now)?;
    }
    // A quiet `ma` leaves out the reply of a change, not of a creation.
    if !meta.reply.quiet || created {
        let found = Found {
            item: &item,
            expiry,
            created,
        };
        write_arith_reply(out, meta, now, found);
    }
    // An item `N` created was stored (memcached counts it in `total_items`),
    // and is no hit.
    let outcome = if created {
        Outcome::Stored(StoreStatus::Stored)
    } else {
        Outcome::Found(true)
    };
    Ok(done(outcome, true))
}

/// `ma`'s `HD` or `VA <len>` line, then with `v` the number.
fn write_arith_reply(out: &mut Vec<u8>, meta: &Meta, now: UnixTime, found: Found<'_>) {
    let digits = found.item.value.clone();
    if meta.reply.value {
        out.extend_from_slice(b"VA ");
        reply::decimal(out, digits.len() as u64);
        status_line(out, b"", meta, now, Some(found));
        out.extend_from_slice(&digits);
        out.extend_from_slice(b"\r\n");
    } else {
        status_line(out, b"HD", meta, now, Some(found));
    }
}

/// `ma`'s `N`: adds the item holding `initial` (no flags, no expiry yet);
/// whether it was added.
fn vivify(
    store: &mut dyn Store,
    meta: &Meta,
    initial: u64,
    now: UnixTime,
    cas: u64,
) -> StoreResult<bool> {
    let value = initial.to_string().into_bytes();
    let write = Write {
        mode: StorageMode::Add,
        key: &meta.key,
        flags: 0,
        expiry: Expiry::Never,
        value: &value,
        cas,
    };
    Ok(store.store(write, now)? == StoreStatus::Stored)
}

/// `me`: memcached's debug line. mckv keeps no slab classes, access times
/// or fetched marks: `cls` and `size` are what memcached's default slab
/// sizes give an item of this key, flags and value, and `la`/`fetch` are
/// always `0`/`no`.
fn debug(
    store: &mut dyn Store,
    meta: &Meta,
    now: UnixTime,
    out: &mut Vec<u8>,
) -> StoreResult<Executed> {
    let Some(item) = peek(store, &meta.key, now)? else {
        out.extend_from_slice(b"EN\r\n");
        return Ok(done(Outcome::Done, false));
    };
    out.extend_from_slice(b"ME ");
    if meta.reply.base64 {
        base64::encode(&meta.key, out);
    } else {
        out.extend_from_slice(&meta.key);
    }
    let exp = match item.expiry {
        Expiry::Never => -1,
        Expiry::At(at) => now as i64 - at as i64,
    };
    let size = item_total_size(meta.key.len(), item.flags, item.value.len());
    let line = format!(
        " exp={exp} la=0 cas={} fetch=no cls={} size={size}\r\n",
        item.cas,
        slab_class(size)
    );
    out.extend_from_slice(line.as_bytes());
    Ok(done(Outcome::Done, false))
}

/// memcached's `ITEM_ntotal` on a 64-bit build with cas: header, key and
/// its NUL, the flags when not 0, the value and its `\r\n`, the cas unique.
fn item_total_size(key_len: usize, flags: u32, value_len: usize) -> u64 {
    let flag_bytes = if flags == 0 { 0 } else { 4 };
    (48 + key_len + 1 + flag_bytes + value_len + 2 + 8) as u64
}

/// The slab class memcached's defaults (`-n 48 -f 1.25`, 1 MiB pages)
/// put an item of `size` bytes in.
fn slab_class(size: u64) -> u32 {
    const ALIGN: u64 = 8;
    const LARGEST_CHUNK: u64 = 512 * 1024;
    let (mut class, mut chunk) = (1, 96u64);
    loop {
        chunk = chunk.div_ceil(ALIGN) * ALIGN;
        if LARGEST_CHUNK / chunk < 2 || size <= chunk {
            return class;
        }
        class += 1;
        chunk = chunk * 5 / 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_sizes_and_classes_match_memcached() {
        // `set mek 5 0 3` in memcached 1.6.18: `cls=1 size=69`.
        assert_eq!(item_total_size(3, 5, 3), 69);
        assert_eq!(slab_class(69), 1);
        assert_eq!(slab_class(96), 1);
        assert_eq!(slab_class(97), 2);
        assert_eq!(slab_class(121), 3);
    }
}
