//! The memcached-backed store: every command goes to a real memcached at the
//! node's `kv_addr`, through the `memcache` crate. It runs only on the backend
//! worker thread, because each call blocks until memcached answers or the
//! timeout passes.
//!
//! The crate hides some replies (its ASCII `add`/`append` return `()` for both
//! `STORED` and `NOT_STORED`, its binary `incr` creates missing keys, its `cas`
//! folds `EXISTS` and `NOT_FOUND` together). So each command uses the protocol
//! whose reply survives, and where neither does, the store asks memcached
//! whether the key exists, which is exact because this worker is the only
//! client of its memcached.
//!
//! Failure handling: after an I/O error or timeout the connections are
//! dropped (a late reply must never be read as the answer to the next
//! request), calls fail fast for [`RETRY_INTERVAL`], and the next call after
//! that reconnects, so the node recovers by itself when memcached does.

use std::io;
use std::time::{Duration, Instant};

use memcache::{Client, CommandError, MemcacheError, ToMemcacheValue};

use super::{
    ArithOutcome, Expiry, Item, Store, StoreError, StoreResult, StoreStats, StoreStatus, UnixTime,
    Write,
};
use crate::protocol::{Key, StoreMode};

/// How long calls fail fast after memcached stopped answering.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// An exptime memcached reads as an absolute time long past: "already expired".
const EXPIRED: u32 = 2_592_001;

/// A value with explicit flags (the crate otherwise derives flags from the type).
struct Flagged<'a> {
    flags: u32,
    data: &'a [u8],
}

impl<W: io::Write> ToMemcacheValue<W> for Flagged<'_> {
    fn get_flags(&self) -> u32 {
        self.flags
    }

    fn get_length(&self) -> usize {
        self.data.len()
    }

    fn write_to(&self, stream: &mut W) -> io::Result<()> {
        stream.write_all(self.data)
    }
}

struct Clients {
    ascii: Client,
    binary: Client,
}

/// A store kept in a real memcached server.
pub struct MemcacheStore {
    addr: String,
    timeout: Duration,
    clients: Option<Clients>,
    retry_at: Option<Instant>,
}

type Answer<T> = Result<T, MemcacheError>;

impl MemcacheStore {
    /// A store for the memcached at `addr` (`host:port`); connects on first use.
    pub fn new(addr: &str, timeout: Duration) -> MemcacheStore {
        MemcacheStore {
            addr: addr.to_string(),
            timeout,
            clients: None,
            retry_at: None,
        }
    }

    fn connect(&self) -> Answer<Clients> {
        Ok(Clients {
            ascii: self.client("&protocol=ascii")?,
            binary: self.client("")?,
        })
    }

    /// One pooled connection, not re-validated on every use (a failure
    /// drops the whole client instead).
    fn client(&self, protocol: &str) -> Answer<Client> {
        let secs = self.timeout.as_secs_f64();
        let url = format!(
            "memcache://{}?timeout={secs}&tcp_nodelay=true{protocol}",
            self.addr
        );
        let url = memcache::Url::parse(&url).map_err(|e| MemcacheError::BadURL(e.to_string()))?;
        let pool = r2d2::Pool::builder()
            .max_size(1)
            .test_on_check_out(false)
            .connection_timeout(self.timeout)
            .build(memcache::ConnectionManager::new(url))?;
        Client::with_pool(pool)
    }

    /// Runs `op` on connected clients, turning transport failures into
    /// [`StoreError::Backend`] and a reconnect later.
    fn call<T>(&mut self, op: impl FnOnce(&Clients) -> Answer<T>) -> StoreResult<T> {
        if let Some(at) = self.retry_at {
            if Instant::now() < at {
                return Err(StoreError::Backend(
                    "memcached unavailable, retrying".into(),
                ));
            }
        }
        if self.clients.is_none() {
            match self.connect() {
                Ok(clients) => self.clients = Some(clients),
                Err(e) => return Err(self.fail(e)),
            }
        }
        let clients = self.clients.as_ref().expect("connected above");
        match op(clients) {
            Ok(value) => {
                self.retry_at = None;
                Ok(value)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn fail(&mut self, error: MemcacheError) -> StoreError {
        if is_transport(&error) {
            log::warn!("memcached at {}: {error}; reconnecting", self.addr);
            self.clients = None;
            self.retry_at = Some(Instant::now() + RETRY_INTERVAL);
        }
        StoreError::Backend(one_line(&error))
    }

    fn exists(clients: &Clients, key: &str) -> Answer<bool> {
        Ok(clients.ascii.get::<Vec<u8>>(key)?.is_some())
    }
}

fn is_transport(error: &MemcacheError) -> bool {
    matches!(
        error,
        MemcacheError::IOError(_) | MemcacheError::PoolError(_) | MemcacheError::ParseError(_)
    ) || matches!(
        error,
        MemcacheError::ServerError(memcache::ServerError::BadResponse(_))
    )
}

fn one_line(error: &MemcacheError) -> String {
    error.to_string().trim_end().replace(['\r', '\n'], " ")
}

/// The crate takes keys as `&str`; memcached's keys are bytes.
fn key_str(key: &[u8]) -> StoreResult<&str> {
    std::str::from_utf8(key)
        .map_err(|_| StoreError::Backend("the memcache backend needs UTF-8 keys".into()))
}

/// An absolute expiry as memcached's `exptime` field.
fn exptime(expiry: Expiry, now: UnixTime) -> u32 {
    match expiry {
        Expiry::Never => 0,
        Expiry::At(at) if at <= now => EXPIRED,
        Expiry::At(at) => u32::try_from(at).unwrap_or(u32::MAX),
    }
}

/// A `CommandError` from a conditional binary store means "not stored".
fn stored_or(answer: Answer<()>, refused: StoreStatus) -> Answer<StoreStatus> {
    match answer {
        Ok(()) => Ok(StoreStatus::Stored),
        Err(MemcacheError::CommandError(_)) => Ok(refused),
        Err(e) => Err(e),
    }
}

impl Store for MemcacheStore {
    fn get_many(&mut self, keys: &[Key], _now: UnixTime) -> StoreResult<Vec<Option<Item>>> {
        let keys: Vec<&str> = keys
            .iter()
            .map(|k| key_str(k))
            .collect::<StoreResult<_>>()?;
        let found = self.call(|c| c.ascii.gets::<(Vec<u8>, u32, Option<u64>)>(&keys))?;
        Ok(keys
            .iter()
            .map(|k| {
                found.get(*k).map(|(value, flags, cas)| Item {
                    flags: *flags,
                    value: value.clone(),
                    cas: cas.unwrap_or(0),
                })
            })
            .collect())
    }

    fn get_and_touch(
        &mut self,
        keys: &[Key],
        expiry: Expiry,
        now: UnixTime,
    ) -> StoreResult<Vec<Option<Item>>> {
        let items = self.get_many(keys, now)?;
        for (key, item) in keys.iter().zip(&items) {
            if item.is_some() {
                self.touch(key, expiry, now)?;
            }
        }
        Ok(items)
    }

    fn store(&mut self, write: Write<'_>, now: UnixTime) -> StoreResult<StoreStatus> {
        let key = key_str(write.key)?;
        let exp = exptime(write.expiry, now);
        let value = Flagged {
            flags: write.flags,
            data: write.value,
        };
        self.call(|c| match write.mode {
            StoreMode::Set => c.ascii.set(key, value, exp).map(|()| StoreStatus::Stored),
            StoreMode::Add => stored_or(c.binary.add(key, value, exp), StoreStatus::NotStored),
            StoreMode::Replace => {
                stored_or(c.binary.replace(key, value, exp), StoreStatus::NotStored)
            }
            StoreMode::Append => stored_or(c.binary.append(key, value), StoreStatus::NotStored),
            StoreMode::Prepend => {
                if !MemcacheStore::exists(c, key)? {
                    return Ok(StoreStatus::NotStored);
                }
                c.ascii.prepend(key, value).map(|()| StoreStatus::Stored)
            }
            StoreMode::Cas(unique) => match c.ascii.cas(key, value, exp, unique)? {
                true => Ok(StoreStatus::Stored),
                false if MemcacheStore::exists(c, key)? => Ok(StoreStatus::Exists),
                false => Ok(StoreStatus::NotFound),
            },
        })
    }

    fn delete(&mut self, key: &[u8], _now: UnixTime) -> StoreResult<bool> {
        let key = key_str(key)?;
        self.call(|c| c.ascii.delete(key))
    }

    /// memcached assigns its own cas uniques, so `_cas` cannot be passed on.
    fn arith(
        &mut self,
        key: &[u8],
        incr: bool,
        delta: u64,
        _cas: u64,
        _now: UnixTime,
    ) -> StoreResult<ArithOutcome> {
        let key = key_str(key)?;
        self.call(|c| {
            let answer = if incr {
                c.ascii.increment(key, delta)
            } else {
                c.ascii.decrement(key, delta)
            };
            match answer {
                Ok(n) => Ok(ArithOutcome::Value(n)),
                Err(MemcacheError::CommandError(CommandError::KeyNotFound)) => {
                    Ok(ArithOutcome::NotFound)
                }
                Err(MemcacheError::ClientError(_)) => Ok(ArithOutcome::NonNumeric),
                Err(e) => Err(e),
            }
        })
    }

    fn touch(&mut self, key: &[u8], expiry: Expiry, now: UnixTime) -> StoreResult<bool> {
        let key = key_str(key)?;
        let exp = exptime(expiry, now);
        self.call(|c| c.ascii.touch(key, exp))
    }

    fn flush_all(&mut self, at: Option<UnixTime>, now: UnixTime) -> StoreResult<()> {
        self.call(|c| match at {
            Some(at) if at > now => c
                .ascii
                .flush_with_delay(u32::try_from(at - now).unwrap_or(u32::MAX)),
            _ => c.ascii.flush(),
        })
    }

    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}
