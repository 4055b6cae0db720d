//! Runs one protocol request against a [`Store`] and writes memcached's reply.

use super::{ArithOutcome, Expiry, Store, StoreError, StoreStatus, UnixTime, Write};
use crate::protocol::{reply, Command, Get, Request};

/// What executing a request did, beyond its reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Executed {
    /// Keys a retrieval found, for the hit counters.
    pub hits: u64,
    /// Whether the store changed (a refused write, a miss or an error did not).
    pub changed: bool,
}

/// Executes a store command at time `now`, giving anything it writes the cas
/// unique `cas`, and appends its reply to `out` unless `noreply`.
pub fn execute(
    store: &mut dyn Store,
    request: &Request,
    now: UnixTime,
    cas: u64,
    out: &mut Vec<u8>,
) -> Executed {
    let start = out.len();
    let result = run(store, &request.command, now, cas, out);
    let executed = result.as_ref().copied().unwrap_or_default();
    if let Err(error) = result {
        // A failure drops any partial reply (e.g. the hits of a multi-get).
        out.truncate(start);
        match error {
            StoreError::OutOfMemory => out.extend_from_slice(reply::OUT_OF_MEMORY),
            StoreError::Backend(why) | StoreError::Refused(why) => {
                reply::server_error(out, &format!("backend error: {why}"))
            }
        }
    }
    if request.noreply {
        out.truncate(start);
    }
    executed
}

fn changed(yes: bool) -> Executed {
    Executed {
        hits: 0,
        changed: yes,
    }
}

fn run(
    store: &mut dyn Store,
    command: &Command,
    now: UnixTime,
    cas: u64,
    out: &mut Vec<u8>,
) -> Result<Executed, StoreError> {
    let (text, executed) = match command {
        Command::Get(get) => return run_get(store, get, now, out),
        Command::Storage(s) => {
            let write = Write {
                mode: s.mode,
                key: &s.key,
                flags: s.flags,
                expiry: Expiry::from_exptime(s.exptime, now),
                value: &s.value,
                cas,
            };
            match store.store(write, now)? {
                StoreStatus::Stored => (reply::STORED, changed(true)),
                StoreStatus::NotStored => (reply::NOT_STORED, changed(false)),
                StoreStatus::Exists => (reply::EXISTS, changed(false)),
                StoreStatus::NotFound => (reply::NOT_FOUND, changed(false)),
            }
        }
        Command::TooLarge { key, is_set } => {
            let dropped = *is_set && store.delete(key, now)?;
            (reply::TOO_LARGE, changed(dropped))
        }
        Command::Delete { key } => found(store.delete(key, now)?, reply::DELETED),
        Command::Touch { key, exptime } => {
            let expiry = Expiry::from_exptime(*exptime, now);
            found(store.touch(key, expiry, now)?, reply::TOUCHED)
        }
        Command::Arith(a) => match store.arith(&a.key, a.incr, a.delta, cas, now)? {
            ArithOutcome::Value(n) => {
                reply::number(out, n);
                return Ok(changed(true));
            }
            ArithOutcome::NotFound => (reply::NOT_FOUND, changed(false)),
            ArithOutcome::NonNumeric => (reply::NON_NUMERIC, changed(false)),
        },
        Command::FlushAll { delay } => {
            let at = match Expiry::from_exptime(*delay, now) {
                Expiry::At(at) if *delay > 0 => Some(at),
                _ => None,
            };
            store.flush_all(at, now)?;
            (reply::OK, changed(true))
        }
    };
    out.extend_from_slice(text);
    Ok(executed)
}

fn found(existed: bool, text: &'static [u8]) -> (&'static [u8], Executed) {
    if existed {
        (text, changed(true))
    } else {
        (reply::NOT_FOUND, changed(false))
    }
}

fn run_get(
    store: &mut dyn Store,
    get: &Get,
    now: UnixTime,
    out: &mut Vec<u8>,
) -> Result<Executed, StoreError> {
    let touch = get.touch.map(|exptime| Expiry::from_exptime(exptime, now));
    let mut hits = 0;
    store.retrieve(&get.keys, touch, now, &mut |index, item| {
        let cas = get.with_cas.then_some(item.cas);
        reply::value(out, &get.keys[index], item.flags, &item.value, cas);
        hits += 1;
    })?;
    out.extend_from_slice(reply::END);
    Ok(Executed {
        hits,
        // `gat` changes the expiry of what it found.
        changed: get.touch.is_some() && hits > 0,
    })
}
