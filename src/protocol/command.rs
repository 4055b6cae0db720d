//! The requests a client can make, one type per command family, owned so they
//! can cross to the backend worker thread and to peers.
//!
//! They come in two kinds. A [`Command`] reads or changes stored data: it goes
//! to the store, through the cluster engine, and may be replicated. An
//! [`Admin`] command (`version`, `verbosity`, `stats` and its groups,
//! `cache_memlimit`, `slabs`, `show`, `quit`) is answered by the node itself
//! and never leaves it.

/// A key as the client sent it (at most [`super::Limits::MAX_KEY_LEN`] bytes).
pub type Key = Vec<u8>;

/// `get`, `gets`, `gat`, `gats` (and memcached's `bget` alias).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Get {
    pub keys: Vec<Key>,
    /// `gets`/`gats`: include the cas unique in each `VALUE` line.
    pub with_cas: bool,
    /// `gat`/`gats`: the new exptime, exactly as the client sent it.
    pub touch: Option<i32>,
}

/// Which storage command a [`Storage`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageMode {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    /// `cas` with the unique the client last saw.
    Cas(u64),
}

/// `set add replace append prepend cas`, memcached's storage commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    pub mode: StorageMode,
    pub key: Key,
    pub flags: u32,
    /// Relative seconds, absolute unix time, or negative, as memcached reads it.
    pub exptime: i32,
    pub value: Vec<u8>,
}

/// `incr`/`decr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arith {
    pub key: Key,
    pub incr: bool,
    pub delta: u64,
}

/// Which `stats` report was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsGroup {
    General,
    Settings,
    Reset,
    Items,
    Slabs,
    Sizes,
    Conns,
    /// memcached's report on its flash storage (extstore).
    Extstore,
    Detail(Detail),
    /// `stats cachedump <class> <limit>`: up to `limit` keys (0: all) of
    /// slab class `class`.
    CacheDump {
        class: u32,
        limit: u32,
    },
}

/// `stats detail on|off|dump`: per-key-prefix counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    On,
    Off,
    Dump,
}

/// A request for the store: every variant reads or changes stored data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Get(Get),
    Storage(Storage),
    /// A storage command whose value exceeds the size limit. memcached answers
    /// `SERVER_ERROR object too large for cache` and, for `set`, also drops the
    /// key's old value so no stale data survives the failed write.
    TooLarge {
        key: Key,
        is_set: bool,
    },
    Delete {
        key: Key,
    },
    Arith(Arith),
    Touch {
        key: Key,
        exptime: i32,
    },
    /// `flush_all [delay]`; a delay of 0 (or less) means now.
    FlushAll {
        delay: i32,
    },
}

/// A request the node answers itself, without the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admin {
    Version,
    Verbosity,
    Stats(StatsGroup),
    /// mckv's cluster status report.
    Show,
    Quit,
    /// `cache_memlimit <megabytes>`: the store's memory limit from now on.
    CacheMemlimit {
        megabytes: u32,
    },
    /// `slabs automove <0|1|2>` or `slabs automove ratio <x>`: how memcached
    /// moves slab pages between size classes.
    SlabsAutomove,
    /// `slabs reassign <source> <destination>`: move one slab page between
    /// size classes.
    SlabsReassign {
        source: i32,
        destination: i32,
    },
}

/// A store command with memcached's `noreply` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub noreply: bool,
}
