//! The memcached-backed store: every command goes to a real memcached at the
//! node's `kv_addr`, through the `memcache` crate. It runs only on the backend
//! worker thread, because each call blocks until memcached answers or the
//! timeout passes.
//!
//! Every value goes to memcached behind a [`HEADER`]: a magic (an item
//! another client stored there is refused, not misread), the cas unique the
//! replicas agreed on (memcached would assign its own, different on every
//! node) and the absolute expiry (memcached cannot say how long an item has
//! left; expiry is judged by it and the operation's time, so replicas
//! agree). So `gets` shows the cluster's unique, and the commands that change
//! an item in place (`cas`, `append`, `prepend`, `incr`, `decr`, `touch`,
//! `gat`) read the item, compute the new one here, and write it back with
//! memcached's own `cas`, keeping the expiry from the header. This worker is
//! the only client of its memcached, so the write-back finds the item as it
//! was read unless it expired meanwhile, which then reads as a miss. The
//! header makes each item 16 bytes longer than its value: the memcached
//! behind a node needs an item size limit (`-I`) that leaves that room.
//!
//! The crate hides some replies (its ASCII `add` returns `()` for both
//! `STORED` and `NOT_STORED`), so `add` and `replace` use its binary protocol,
//! whose errors tell the refusal apart.
//!
//! A strong mode's snapshot needs what the crate cannot say at all: every
//! key memcached holds, and a reset that leaves nothing behind. Those go
//! over a plain text-protocol connection ([`super::text_connection`]):
//! `lru_crawler metadump hash` lists the keys (memcached 1.6.9 or later),
//! each record is then read like any item, and a reset lists and deletes
//! every item (see [`MemcacheStore::reset`] on why `flush_all` cannot do
//! it). memcached cannot report a pending delayed `flush_all`, so the store
//! remembers the last one it sent.
//!
//! Failure handling: after an I/O error or timeout the connections are
//! dropped (a late reply must never be read as the answer to the next
//! request), calls fail fast for [`RETRY_INTERVAL`], and the next call after
//! that reconnects, so the node recovers by itself when memcached does.

use std::io;
use std::time::{Duration, Instant};

use memcache::{Client, ClientError, MemcacheError, ToMemcacheValue};

use super::key_image::KeyImage;
use super::text_connection::{DumpedItem, Setting, TextConnection};
use super::{
    apply_delta, ArithOutcome, Entry, Expiry, Head, Item, ItemRef, KeysRef, Listing, Record, Store,
    StoreError, StoreResult, StoreStats, StoreStatus, UnixTime, VersionedStore, Write,
};
use crate::protocol::{Key, Limits, StorageMode};

/// How long calls fail fast after memcached stopped answering.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// An exptime memcached reads as an absolute time long past: "already expired".
const EXPIRED: u32 = 2_592_001;

/// Keys read with one request when a sync answer reads many.
const EXPORT_BATCH: usize = 100;

/// A `flush_all` delay that unhides, while a reset lists and deletes them,
/// the items an earlier flush hid (memcached reads a delay up to 30 days as
/// relative; this one never comes: the reset replaces it).
const UNHIDE_DELAY: u32 = 60 * 60 * 24 * 30;

/// Bytes in front of every value: [`MAGIC`], the cas unique (big-endian
/// `u64`), the expiry (big-endian `u32` unix time; 0: never).
pub const HEADER: usize = 16;

/// Marks a value mckv stored (and the header's layout), so an item some
/// other client put into the node's memcached is refused, not misread.
const MAGIC: &[u8; 4] = b"mkv1";

/// An item as memcached holds it for mckv.
struct Stored {
    flags: u32,
    cas: u64,
    expiry: Expiry,
    data: Vec<u8>,
    /// memcached's own cas unique, for a write-back that must find the item unchanged.
    token: u64,
}

impl Stored {
    fn decode(key: &str, raw: &[u8], flags: u32, token: Option<u64>) -> Answer<Stored> {
        if raw.len() < HEADER || &raw[..4] != MAGIC {
            let why = format!("item {key} in memcached was not stored by mckv");
            return Err(MemcacheError::ClientError(ClientError::Error(why.into())));
        }
        let cas = u64::from_be_bytes(raw[4..12].try_into().expect("8 bytes"));
        let expiry = u32::from_be_bytes(raw[12..16].try_into().expect("4 bytes"));
        Ok(Stored {
            flags,
            cas,
            expiry: match expiry {
                0 => Expiry::Never,
                at => Expiry::At(u64::from(at)),
            },
            data: raw[HEADER..].to_vec(),
            token: token.unwrap_or(0),
        })
    }

    /// Expiry is judged by the header's time and the operation's `now`, not
    /// by memcached's own clock, so every replica agrees at the expiry second.
    fn is_live(&self, now: UnixTime) -> bool {
        !self.expiry.has_passed(now)
    }

    /// As a snapshot carries it, read at `now`.
    fn record(self, key: &[u8], now: UnixTime) -> Record {
        Record {
            key: key.to_vec(),
            cas: self.cas,
            entry: self.version(),
            // memcached keeps neither where an ordered replica could read it.
            stored_at: now,
            referenced: false,
        }
    }

    fn version(self) -> Entry {
        Entry {
            flags: self.flags,
            expiry: self.expiry,
            value: self.data,
        }
    }

    fn item(self) -> Item {
        Item {
            flags: self.flags,
            value: self.data,
            cas: self.cas,
            expiry: self.expiry,
        }
    }
}

/// A value on its way to memcached: flags, header fields and the client's
/// bytes, in up to two pieces so that `append` and `prepend` need no copy.
struct Outgoing<'a> {
    flags: u32,
    cas: u64,
    expiry: Expiry,
    pieces: [&'a [u8]; 2],
}

impl<'a> Outgoing<'a> {
    fn new(flags: u32, cas: u64, expiry: Expiry, data: &'a [u8]) -> Outgoing<'a> {
        Outgoing {
            flags,
            cas,
            expiry,
            pieces: [data, &[]],
        }
    }

    fn header(&self) -> [u8; HEADER] {
        let at = match self.expiry {
            Expiry::Never => 0,
            // 0 reads as never: an item already expired is stored as expired at 1.
            Expiry::At(at) => u32::try_from(at).unwrap_or(u32::MAX).max(1),
        };
        let mut header = [0; HEADER];
        header[..4].copy_from_slice(MAGIC);
        header[4..12].copy_from_slice(&self.cas.to_be_bytes());
        header[12..].copy_from_slice(&at.to_be_bytes());
        header
    }
}

impl<W: io::Write> ToMemcacheValue<W> for Outgoing<'_> {
    fn get_flags(&self) -> u32 {
        self.flags
    }

    fn get_length(&self) -> usize {
        HEADER + self.pieces[0].len() + self.pieces[1].len()
    }

    fn write_to(&self, stream: &mut W) -> io::Result<()> {
        stream.write_all(&self.header())?;
        self.pieces.iter().try_for_each(|p| stream.write_all(p))
    }
}

struct Clients {
    ascii: Client,
    binary: Client,
    /// Where and how long to wait for a [`TextConnection`], for what the
    /// crate cannot say.
    addr: String,
    timeout: Duration,
}

impl Clients {
    fn text(&self) -> Answer<TextConnection> {
        TextConnection::open(&self.addr, self.timeout)
    }
}

/// A store kept in a real memcached server.
pub struct MemcacheStore {
    addr: String,
    timeout: Duration,
    /// mckv's item size limit, which `append` and `prepend` enforce here.
    limits: Limits,
    clients: Option<Clients>,
    retry_at: Option<Instant>,
    /// memcached is to be emptied before its first use (see [`MemcacheStore::starting_empty`]).
    empty_first: bool,
    /// The last delayed `flush_all` sent, which memcached cannot report;
    /// lost when the node restarts, as all of the embedded store is.
    pending_flush: Option<UnixTime>,
    /// The image snapshots are read from while writes go on, if frozen.
    image: Option<KeyImage>,
}

type Answer<T> = Result<T, MemcacheError>;

impl MemcacheStore {
    /// A store for the memcached at `addr` (`host:port`); connects on first use.
    pub fn new(addr: &str, timeout: Duration, limits: Limits) -> MemcacheStore {
        MemcacheStore {
            addr: addr.to_string(),
            timeout,
            limits,
            clients: None,
            retry_at: None,
            empty_first: false,
            pending_flush: None,
            image: None,
        }
    }

    /// A store that empties its memcached before anything else, so a node
    /// restarts empty whatever its memcached kept. Eventual mode needs it:
    /// what memcached held from an earlier run has no version in the new
    /// run's log, so it would be served but never replicated; syncing from
    /// the peers refills the store instead.
    pub fn starting_empty(mut self) -> MemcacheStore {
        self.empty_first = true;
        self
    }

    fn connect(&self) -> Answer<Clients> {
        Ok(Clients {
            ascii: self.client("&protocol=ascii")?,
            binary: self.client("")?,
            addr: self.addr.clone(),
            timeout: self.timeout,
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
        if self.empty_first {
            let clients = self.clients.as_ref().expect("connected above");
            if let Err(e) = clients.ascii.flush() {
                return Err(self.fail(e));
            }
            log::info!("memcached at {}: emptied for a fresh start", self.addr);
            self.empty_first = false;
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

    /// Before a write to `key`, while an image is frozen: saves its record
    /// there, if no write since the freeze has.
    fn keep(&mut self, key: &[u8], now: UnixTime) -> StoreResult<()> {
        if !self.image.as_ref().is_some_and(|image| image.unsaved(key)) {
            return Ok(());
        }
        let record = self.export_record(key, now)?;
        if let Some(image) = &mut self.image {
            image.save(key, record);
        }
        Ok(())
    }

    fn fail(&mut self, error: MemcacheError) -> StoreError {
        if is_transport(&error) {
            log::warn!("memcached at {}: {error}; reconnecting", self.addr);
            self.clients = None;
            self.retry_at = Some(Instant::now() + RETRY_INTERVAL);
        }
        let why = one_line(&error);
        if why.contains("object too large") {
            return StoreError::Refused(why);
        }
        StoreError::Backend(why)
    }

    /// The live item at `key` at `now`, with memcached's cas unique for a write-back.
    fn fetch(clients: &Clients, key: &str, now: UnixTime) -> Answer<Option<Stored>> {
        Ok(MemcacheStore::fetch_many(clients, &[key], now)?
            .pop()
            .flatten())
    }

    /// The live items at `keys` at `now`, in order, in one request. A key
    /// asked for more than once gets its item each time.
    fn fetch_many(clients: &Clients, keys: &[&str], now: UnixTime) -> Answer<Vec<Option<Stored>>> {
        let found = clients.ascii.gets::<(Vec<u8>, u32, Option<u64>)>(keys)?;
        let mut items = Vec::with_capacity(keys.len());
        for key in keys {
            let item = match found.get(*key) {
                Some((raw, flags, token)) => Some(Stored::decode(key, raw, *flags, *token)?),
                None => None,
            };
            items.push(item.filter(|item| item.is_live(now)));
        }
        Ok(items)
    }

    /// Gives `old` a new expiry; its cas unique stays, as in memcached.
    fn retouch(
        clients: &Clients,
        key: &str,
        old: &Stored,
        expiry: Expiry,
        now: UnixTime,
    ) -> Answer<bool> {
        let value = Outgoing::new(old.flags, old.cas, expiry, &old.data);
        MemcacheStore::write_back(clients, key, old, value, now)
    }

    /// Writes `value` over `old` unless memcached's item changed since it
    /// was read; whether it was written.
    fn write_back(
        clients: &Clients,
        key: &str,
        old: &Stored,
        value: Outgoing<'_>,
        now: UnixTime,
    ) -> Answer<bool> {
        let exp = exptime(value.expiry, now);
        clients.ascii.cas(key, value, exp, old.token)
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

/// The error as one line, without memcached's own `SERVER_ERROR ` (the
/// reply adds its prefix).
fn one_line(error: &MemcacheError) -> String {
    let text = error.to_string();
    let text = text.trim_end();
    let text = text.strip_prefix("SERVER_ERROR ").unwrap_or(text);
    text.replace(['\r', '\n'], " ")
}

/// The crate takes keys as `&str`; memcached's keys are bytes.
fn key_str(key: &[u8]) -> StoreResult<&str> {
    std::str::from_utf8(key)
        .map_err(|_| StoreError::Refused("the memcache backend needs UTF-8 keys".into()))
}

/// A key a write may store: one memcached's text protocol can carry, with
/// no space, line end or NUL, which split or end its lines. A meta
/// command's base64 key may decode to any bytes; stored through the binary
/// protocol, such a key would make every later listing of the keys fail.
fn storable_key(key: &[u8]) -> StoreResult<&str> {
    let text = key_str(key)?;
    match text.bytes().any(|b| matches!(b, b' ' | b'\r' | b'\n' | 0)) {
        true => Err(StoreError::Refused(
            "the memcache backend cannot hold a key with a space, line end or NUL".into(),
        )),
        false => Ok(text),
    }
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
    fn retrieve(
        &mut self,
        keys: KeysRef<'_>,
        touch: Option<Expiry>,
        now: UnixTime,
        found: &mut dyn FnMut(usize, ItemRef<'_>),
    ) -> StoreResult<()> {
        if touch.is_some() {
            for key in keys.iter() {
                self.keep(key, now)?;
            }
        }
        let keys: Vec<&str> = keys
            .iter()
            .map(|k| key_str(k))
            .collect::<StoreResult<_>>()?;
        let hits = self.call(|c| {
            let hits = MemcacheStore::fetch_many(c, &keys, now)?;
            if let Some(expiry) = touch {
                for (key, old) in keys.iter().zip(&hits) {
                    if let Some(old) = old {
                        MemcacheStore::retouch(c, key, old, expiry, now)?;
                    }
                }
            }
            Ok(hits)
        })?;
        for (index, hit) in hits.into_iter().enumerate() {
            if let Some(hit) = hit {
                found(index, hit.item().as_item_ref());
            }
        }
        Ok(())
    }

    fn store(&mut self, write: Write<'_>, now: UnixTime) -> StoreResult<StoreStatus> {
        let key = storable_key(write.key)?;
        self.keep(write.key, now)?;
        let exp = exptime(write.expiry, now);
        let value = Outgoing::new(write.flags, write.cas, write.expiry, write.value);
        let limits = self.limits;
        self.call(|c| match write.mode {
            StorageMode::Set => c.ascii.set(key, value, exp).map(|()| StoreStatus::Stored),
            StorageMode::Add => stored_or(c.binary.add(key, value, exp), StoreStatus::NotStored),
            StorageMode::Replace => {
                stored_or(c.binary.replace(key, value, exp), StoreStatus::NotStored)
            }
            StorageMode::Append | StorageMode::Prepend => {
                let Some(old) = MemcacheStore::fetch(c, key, now)? else {
                    return Ok(StoreStatus::NotStored);
                };
                let joined_len = old.data.len() + write.value.len();
                if !limits.item_fits(key.len(), old.flags, joined_len) {
                    return Ok(StoreStatus::NotStored); // as memcached answers
                }
                let pieces = match write.mode {
                    StorageMode::Append => [&old.data[..], write.value],
                    _ => [write.value, &old.data[..]],
                };
                // Like memcached: the item keeps its flags and expiry.
                let joined = Outgoing {
                    flags: old.flags,
                    cas: write.cas,
                    expiry: old.expiry,
                    pieces,
                };
                match MemcacheStore::write_back(c, key, &old, joined, now)? {
                    true => Ok(StoreStatus::Stored),
                    false => Ok(StoreStatus::NotStored),
                }
            }
            StorageMode::Cas(unique) => {
                let Some(old) = MemcacheStore::fetch(c, key, now)? else {
                    return Ok(StoreStatus::NotFound);
                };
                if old.cas != unique {
                    return Ok(StoreStatus::Exists);
                }
                match MemcacheStore::write_back(c, key, &old, value, now)? {
                    true => Ok(StoreStatus::Stored),
                    false => Ok(StoreStatus::NotFound),
                }
            }
        })
    }

    fn delete(&mut self, key: &[u8], now: UnixTime) -> StoreResult<bool> {
        self.keep(key, now)?;
        let key = key_str(key)?;
        self.call(|c| c.ascii.delete(key))
    }

    fn arith(
        &mut self,
        key: &[u8],
        incr: bool,
        delta: u64,
        cas: u64,
        now: UnixTime,
    ) -> StoreResult<ArithOutcome> {
        self.keep(key, now)?;
        let key = key_str(key)?;
        self.call(|c| {
            let Some(old) = MemcacheStore::fetch(c, key, now)? else {
                return Ok(ArithOutcome::NotFound);
            };
            let Some((number, text)) = apply_delta(&old.data, incr, delta) else {
                return Ok(ArithOutcome::NonNumeric);
            };
            let value = Outgoing::new(old.flags, cas, old.expiry, &text);
            match MemcacheStore::write_back(c, key, &old, value, now)? {
                true => Ok(ArithOutcome::Value(number)),
                false => Ok(ArithOutcome::NotFound),
            }
        })
    }

    /// Rewrites the item with the new expiry; its cas unique stays, as in memcached.
    fn touch(&mut self, key: &[u8], expiry: Expiry, now: UnixTime) -> StoreResult<bool> {
        self.keep(key, now)?;
        let key = key_str(key)?;
        self.call(|c| match MemcacheStore::fetch(c, key, now)? {
            Some(old) => MemcacheStore::retouch(c, key, &old, expiry, now),
            None => Ok(false),
        })
    }

    /// A delayed flush is sent as its absolute unix time (memcached reads a
    /// delay above 30 days as one), so every replica flushes at the same
    /// second; sent as a delay, one more than 30 days ahead would read as a
    /// time in 1970, which memcached takes as "flush nothing".
    fn flush_all(&mut self, at: Option<UnixTime>, now: UnixTime) -> StoreResult<()> {
        if let Some(image) = &mut self.image {
            image.lose();
        }
        let at = at.filter(|&at| at > now);
        self.call(|c| match at {
            Some(at) => c
                .ascii
                .flush_with_delay(u32::try_from(at).unwrap_or(u32::MAX)),
            None => c.ascii.flush(),
        })?;
        self.pending_flush = at;
        Ok(())
    }

    /// The memcached's memory is its own (`-m`, or `cache_memlimit` sent to
    /// it): the node does not change it.
    fn set_memory_limit(&mut self, _limit_bytes: u64) -> StoreResult<()> {
        Err(StoreError::Refused(
            "a memcached backend's memory limit is its own".into(),
        ))
    }

    /// Items, bytes and what memcached met while serving are in the
    /// memcached's own `stats`: the node counts none of them.
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}

impl VersionedStore for MemcacheStore {
    fn export_many(&mut self, keys: &[&[u8]], now: UnixTime) -> StoreResult<Vec<Option<Entry>>> {
        let keys: Vec<&str> = keys
            .iter()
            .map(|k| key_str(k))
            .collect::<StoreResult<_>>()?;
        let mut items = Vec::with_capacity(keys.len());
        for batch in keys.chunks(EXPORT_BATCH) {
            let found = self.call(|c| MemcacheStore::fetch_many(c, batch, now))?;
            items.extend(found.into_iter().map(|item| item.map(Stored::version)));
        }
        Ok(items)
    }

    fn export(&mut self, key: &[u8], now: UnixTime) -> StoreResult<Option<Entry>> {
        let key = key_str(key)?;
        let found = self.call(|c| MemcacheStore::fetch(c, key, now))?;
        Ok(found.map(Stored::version))
    }

    fn import(
        &mut self,
        key: &[u8],
        entry: Option<&Entry>,
        cas: u64,
        now: UnixTime,
    ) -> StoreResult<()> {
        self.keep(key, now)?;
        let key = storable_key(key)?;
        self.call(|c| match entry {
            Some(entry) => {
                let value = Outgoing::new(entry.flags, cas, entry.expiry, &entry.value);
                c.ascii.set(key, value, exptime(entry.expiry, now))
            }
            None => c.ascii.delete(key).map(drop),
        })
    }

    /// memcached's live items as `lru_crawler metadump hash` lists them
    /// (see [`super::text_connection`]). `bytes` is worked out from each
    /// item's size as memcached counts it, less its overhead and mckv's
    /// header: exact for a memcached with cas uniques on (its default), but
    /// 4 bytes more per item with flags where memcached (before 1.6.24)
    /// does not list them. `flush_at` is the last delayed flush this store
    /// sent, even one that has come (the receiver drops it, as it drops the
    /// embedded store's).
    fn snapshot_keys(&mut self) -> StoreResult<Listing> {
        let items = self.call(|c| c.text()?.list_items())?;
        Ok(Listing {
            bytes: items.iter().map(payload_bytes).sum(),
            keys: items.into_iter().map(|item| item.key).collect(),
            head: self.head(),
        })
    }

    fn head(&self) -> Head {
        Head {
            flush_at: self.pending_flush,
            ..Head::default()
        }
    }

    fn export_record(&mut self, key: &[u8], now: UnixTime) -> StoreResult<Option<Record>> {
        let name = key_str(key)?;
        let found = self.call(|c| MemcacheStore::fetch(c, name, now))?;
        Ok(found.map(|item| item.record(key, now)))
    }

    /// A chunk's records, pipelined over a text connection (one `set`
    /// each through the crate would take a round trip each).
    fn install_many(&mut self, records: &[Record], now: UnixTime) -> StoreResult<()> {
        for record in records {
            storable_key(&record.key)?;
            self.keep(&record.key, now)?;
        }
        let headers: Vec<[u8; HEADER]> = records
            .iter()
            .map(|r| Outgoing::new(r.entry.flags, r.cas, r.entry.expiry, &[]).header())
            .collect();
        let items: Vec<Setting<'_>> = records
            .iter()
            .zip(&headers)
            .map(|(r, header)| Setting {
                key: &r.key,
                flags: r.entry.flags,
                exptime: exptime(r.entry.expiry, now),
                pieces: [header, &r.entry.value],
            })
            .collect();
        self.call(|c| c.text()?.set_each(&items))
    }

    /// See `key_image.rs`.
    fn freeze_keys(&mut self) -> StoreResult<Option<Listing>> {
        if self.image.is_none() {
            let listing = self.snapshot_keys()?;
            self.image = Some(KeyImage::new(listing));
        }
        self.image.as_ref().map(KeyImage::listing).transpose()
    }

    /// Saved records from the image, the others read 100 to a request.
    fn export_listed(&mut self, keys: &[&[u8]], now: UnixTime) -> StoreResult<Vec<Option<Record>>> {
        let image = self.image.as_ref();
        image.map(KeyImage::readable).transpose()?;
        let saved = |key: &[u8]| image.and_then(|image| image.saved(key)).cloned();
        let mut records: Vec<Option<Option<Record>>> = keys.iter().map(|k| saved(k)).collect();
        let unsaved: Vec<usize> = (0..keys.len()).filter(|&i| records[i].is_none()).collect();
        for batch in unsaved.chunks(EXPORT_BATCH) {
            let names: Vec<&str> = batch
                .iter()
                .map(|&i| key_str(keys[i]))
                .collect::<StoreResult<_>>()?;
            let found = self.call(|c| MemcacheStore::fetch_many(c, &names, now))?;
            for (&i, item) in batch.iter().zip(found) {
                records[i] = Some(item.map(|item| item.record(keys[i], now)));
            }
        }
        Ok(records.into_iter().map(Option::flatten).collect())
    }

    fn thaw(&mut self) -> usize {
        self.image.take().map_or(0, |image| image.copied())
    }

    /// Deletes every item, then sends the snapshot's pending flush, if any.
    ///
    /// memcached's `flush_all` does not remove items: it only hides those
    /// stored before a time, and a later delayed `flush_all` replaces that
    /// time, so what an immediate flush hid would come back once the
    /// snapshot's delayed flush is sent. The reset so first unhides them
    /// with a delayed flush that never comes, lists every item
    /// ([`super::text_connection`]; expired ones cannot come back and are
    /// not listed) and deletes each, which this worker, memcached's only
    /// client, can do with nothing stored in between. Last, it replaces the
    /// unhiding flush: with the snapshot's delayed flush, which then hides
    /// the records imported next when it comes, as on the peer; or with an
    /// immediate one, which hides nothing (there is nothing left) and
    /// cancels any pending flush. A reset cut short may leave hidden items
    /// shown, but a node serves nothing from a snapshot before it has
    /// installed all of it, and each one starts with a reset.
    fn reset(&mut self, head: &Head, now: UnixTime) -> StoreResult<()> {
        let flush_at = head.flush_at.filter(|&at| at > now);
        self.call(|c| {
            let mut text = c.text()?;
            text.expect_ok(&format!("flush_all {UNHIDE_DELAY}"))?;
            let keys: Vec<Key> = text.list_items()?.into_iter().map(|i| i.key).collect();
            text.delete_each(&keys)?;
            match flush_at {
                Some(at) => text.expect_ok(&format!("flush_all {at}")),
                None => text.expect_ok("flush_all"),
            }
        })?;
        self.pending_flush = flush_at;
        Ok(())
    }
}

/// About the bytes of key and value an item listed by metadump holds.
fn payload_bytes(item: &DumpedItem) -> u64 {
    let flag_bytes = match item.flags {
        Some(flags) if flags != 0 => 4,
        _ => 0,
    };
    let overhead = (Limits::ITEM_OVERHEAD + HEADER + flag_bytes) as u64;
    item.size.saturating_sub(overhead)
}
