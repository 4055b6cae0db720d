//! Runs one protocol request against a [`Store`] and writes memcached's reply.

use super::{ArithOutcome, Expiry, Store, StoreError, StoreStatus, UnixTime, Write};
use crate::protocol::{reply, Command, Get, Request};

/// What executing a request did, beyond its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Executed {
    /// What the command found, for memcached's hit and miss counters.
    pub outcome: Outcome,
    /// Whether the store changed (a refused write, a miss or an error did not).
    pub changed: bool,
}

/// What a command found in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A retrieval: how many of its keys were found.
    Retrieved { hits: u64 },
    /// A storage command, and what it answered.
    Stored(StoreStatus),
    /// `delete`, `touch`, `incr`/`decr`: whether the key held a live item.
    Found(bool),
    /// `incr`/`decr` of a value that is not a number: neither hit nor miss.
    NonNumeric,
    /// Nothing was looked for (`flush_all`; the drop of a too-large `set`).
    Done,
    /// The memory cap refused the write.
    OutOfMemory,
    /// The backend failed; what happened there is unknown.
    Failed,
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
    execute_noting_hits(store, request, now, cas, out, None)
}

/// [`execute`], also pushing to `found_keys` (when given) the index of every
/// key a retrieval found, for the counters that need to know which.
pub fn execute_noting_hits(
    store: &mut dyn Store,
    request: &Request,
    now: UnixTime,
    cas: u64,
    out: &mut Vec<u8>,
    found_keys: Option<&mut Vec<usize>>,
) -> Executed {
    let start = out.len();
    let result = run(store, &request.command, now, cas, out, found_keys);
    let executed = match result {
        Ok(executed) => executed,
        Err(error) => {
            // A failure drops any partial reply (e.g. the hits of a multi-get).
            out.truncate(start);
            let outcome = match error {
                StoreError::OutOfMemory => {
                    out.extend_from_slice(reply::OUT_OF_MEMORY);
                    Outcome::OutOfMemory
                }
                StoreError::Backend(why) | StoreError::Refused(why) => {
                    reply::server_error(out, &format!("backend error: {why}"));
                    Outcome::Failed
                }
                StoreError::Disk(why) => {
                    reply::server_error(out, &format!("data directory: {why}; not applied"));
                    Outcome::Failed
                }
            };
            Executed {
                outcome,
                changed: false,
            }
        }
    };
    if request.noreply {
        out.truncate(start);
    }
    executed
}

fn done(outcome: Outcome, changed: bool) -> Executed {
    Executed { outcome, changed }
}

fn run(
    store: &mut dyn Store,
    command: &Command,
    now: UnixTime,
    cas: u64,
    out: &mut Vec<u8>,
    found_keys: Option<&mut Vec<usize>>,
) -> Result<Executed, StoreError> {
    let (text, executed) = match command {
        Command::Get(get) => return run_get(store, get, now, out, found_keys),
        Command::Meta(meta) => return super::meta::run(store, meta, now, cas, out),
        Command::Storage(s) => {
            let write = Write {
                mode: s.mode,
                key: &s.key,
                flags: s.flags,
                expiry: Expiry::from_exptime(s.exptime, now),
                value: &s.value,
                cas,
            };
            let status = store.store(write, now)?;
            let text = match status {
                StoreStatus::Stored => reply::STORED,
                StoreStatus::NotStored => reply::NOT_STORED,
                StoreStatus::Exists => reply::EXISTS,
                StoreStatus::NotFound => reply::NOT_FOUND,
            };
            let stored = status == StoreStatus::Stored;
            (text, done(Outcome::Stored(status), stored))
        }
        Command::TooLarge { key, is_set } => {
            let dropped = *is_set && store.delete(key, now)?;
            (reply::TOO_LARGE, done(Outcome::Done, dropped))
        }
        Command::Delete { key } => found(store.delete(key, now)?, reply::DELETED),
        Command::Touch { key, exptime } => {
            let expiry = Expiry::from_exptime(*exptime, now);
            found(store.touch(key, expiry, now)?, reply::TOUCHED)
        }
        Command::Arith(a) => match store.arith(&a.key, a.incr, a.delta, cas, now)? {
            ArithOutcome::Value(n) => {
                reply::number(out, n);
                return Ok(done(Outcome::Found(true), true));
            }
            ArithOutcome::NotFound => (reply::NOT_FOUND, done(Outcome::Found(false), false)),
            ArithOutcome::NonNumeric => (reply::NON_NUMERIC, done(Outcome::NonNumeric, false)),
        },
        Command::FlushAll { delay } => {
            let at = match Expiry::from_exptime(*delay, now) {
                Expiry::At(at) if *delay > 0 => Some(at),
                _ => None,
            };
            store.flush_all(at, now)?;
            (reply::OK, done(Outcome::Done, true))
        }
    };
    out.extend_from_slice(text);
    Ok(executed)
}

fn found(existed: bool, text: &'static [u8]) -> (&'static [u8], Executed) {
    let outcome = Outcome::Found(existed);
    if existed {
        (text, done(outcome, true))
    } else {
        (reply::NOT_FOUND, done(outcome, false))
    }
}

fn run_get(
    store: &mut dyn Store,
    get: &Get,
    now: UnixTime,
    out: &mut Vec<u8>,
    mut found_keys: Option<&mut Vec<usize>>,
) -> Result<Executed, StoreError> {
    let touch = get.touch.map(|exptime| Expiry::from_exptime(exptime, now));
    let mut hits = 0;
    store.retrieve((&get.keys).into(), touch, now, &mut |index, item| {
        let cas = get.with_cas.then_some(item.cas);
        reply::value(out, &get.keys[index], item.flags, item.value, cas);
        hits += 1;
        if let Some(found) = found_keys.as_deref_mut() {
            found.push(index);
        }
    })?;
    out.extend_from_slice(reply::END);
    // `gat` changes the expiry of what it found.
    let changed = get.touch.is_some() && hits > 0;
    Ok(done(Outcome::Retrieved { hits }, changed))
}
