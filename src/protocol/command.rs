//! The requests a client can make, one type per command family, owned so they
//! can cross to the backend worker thread and to peers.
//!
//! They come in two kinds. A [`Command`] reads or changes stored data: it goes
//! to the store, through the cluster engine, and may be replicated. An
//! [`Admin`] command (`version`, `verbosity`, `stats` and its groups,
//! `cache_memlimit`, `slabs`, `show`, `quit`) is answered by the node itself
//! and never leaves it.

use super::Keys;

/// A key as the client sent it (at most [`super::Limits::MAX_KEY_LEN`] bytes).
pub type Key = Vec<u8>;

/// `get`, `gets`, `gat`, `gats` (and memcached's `bget` alias).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Get {
    /// Packed: a multi-get's keys are two allocations, not one each.
    pub keys: Keys,
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
    /// `mg ms md ma me`, memcached's meta commands.
    Meta(Meta),
}

/// A meta command: what it does to one key, and how its reply is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The key, base64-decoded when the client sent the `b` flag.
    pub key: Key,
    pub op: MetaOp,
    pub reply: MetaReply,
}

/// What a meta command does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaOp {
    /// `mg`: a lookup; a `T` flag among the reply flags also touches.
    Get,
    /// `ms`.
    Set(MetaSet),
    /// `md`, refused with `EX` when `compare` is given and the item's cas
    /// unique differs.
    Delete { compare: Option<u64> },
    /// `ma`.
    Arith(MetaArith),
    /// `me`: memcached's debug line about the item.
    Debug,
}

/// `ms`: a storage command in meta form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaSet {
    /// `M` (set, add, replace, append, prepend); `C` turns set and
    /// replace into `cas`.
    pub mode: StorageMode,
    /// `C` with append or prepend: refused with `EX` when the item's cas
    /// unique differs (memcached's "simplified" check; 0 checks nothing).
    pub compare: Option<u64>,
    pub flags: u32,
    pub exptime: i32,
    pub value: Vec<u8>,
}

/// `ma`: `incr`/`decr` in meta form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaArith {
    pub incr: bool,
    pub delta: u64,
    /// `N`: on a miss, create the item holding `J`'s initial value.
    pub initial: Option<u64>,
    /// `C`: refused with `EX` when the item's cas unique differs (0
    /// checks nothing, as in memcached).
    pub compare: Option<u64>,
}

/// How a meta command's reply is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaReply {
    /// The flags that return something or act on the found item, in the
    /// order the client gave them (memcached writes them in that order).
    pub flags: Vec<MetaFlag>,
    /// `q`: leave out the nominal reply (`EN` of `mg`, `HD` of `ms md ma`).
    pub quiet: bool,
    /// `b`: the key was sent in base64, and `k` returns it so.
    pub base64: bool,
    /// `v`: return the value (`VA <size>` and a data block).
    pub value: bool,
}

/// One flag of a meta command that returns something or acts on the item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaFlag {
    /// `O<token>`: echoed as given.
    Opaque(Vec<u8>),
    /// `k`: the key.
    Key,
    /// `c`: the cas unique.
    Cas,
    /// `f`: the client flags.
    ClientFlags,
    /// `s`: the value's size.
    Size,
    /// `t`: seconds to live (`-1`: never expires), as of this flag.
    Ttl,
    /// `T<exptime>`: the item's new exptime from this flag on.
    Touch(i32),
    /// `N<exptime>` of `ma`: the exptime of an item it creates.
    Vivify(i32),
}

impl Meta {
    /// Whether it only reads (`mg` without `T`, `me`).
    pub fn is_read(&self) -> bool {
        match self.op {
            MetaOp::Get => !self.touches(),
            MetaOp::Debug => true,
            _ => false,
        }
    }

    /// Whether a `T` flag gives the item a new exptime.
    pub fn touches(&self) -> bool {
        self.reply
            .flags
            .iter()
            .any(|f| matches!(f, MetaFlag::Touch(_)))
    }
}

impl Command {
    /// Whether it only reads the store (`get`/`gets`, `mg` without `T`,
    /// `me`), so the engines may serve it without ordering it as a write.
    pub fn is_read(&self) -> bool {
        match self {
            Command::Get(get) => get.touch.is_none(),
            Command::Meta(meta) => meta.is_read(),
            _ => false,
        }
    }
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
