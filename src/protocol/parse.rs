//! The incremental request parser: bytes in, one request (plus how many bytes
//! it used) out, or [`Incomplete`] when more bytes are needed. It never reads a
//! socket and never allocates for a request it rejects.
//!
//! The rules are memcached 1.6's `proto_text.c`, in its order: a line ends at
//! `\n` (one `\r` before it is dropped), is cut at the first NUL, and is split
//! on spaces only. Commands are dispatched on their first letter, so an unknown
//! `s...` command is `ERROR` while an unknown `X... HTTP/1.1` line closes the
//! connection. Protocol errors that memcached answers with a reply are
//! [`Action::Reply`]; `noreply` silences them exactly where memcached does.
//! After a storage error on the command line the value is *not* skipped: its
//! bytes are read as the next command, as memcached does. Only a value that is
//! too large is swallowed ([`Parsed::swallow`]).
//!
//! A storage command's data block (value and `\r\n`, of a classic `set`,
//! `add`, ... or of a meta `ms`) may be read apart from its line, straight
//! into the buffer that becomes the value: when the line is whole and the
//! block is not, [`parse_awaiting`] says how long the block is
//! ([`Awaiting::Block`]), and [`parse_with_block`] takes the line and the
//! block and makes the block the value without copying it, so a big value
//! is copied once on its way in (socket to value), not twice. Both kinds
//! take their value through one function (`Line::value`), so the request,
//! or the error (a bad data chunk), is the same whether the block came with
//! the line or apart. A line refused on its own (a value too large, a bad
//! `ms` flag) waits for no block.
//!
//! A request for the store comes out as [`Action::Execute`] with a data
//! [`Command`]; one the node answers itself (`version`, `verbosity`, `stats`
//! and its groups, `cache_memlimit`, `slabs`, `show`, `quit`) as
//! [`Action::Admin`], once its arguments pass memcached's checks. The meta
//! commands (`mg ms md ma mn me`) are read in [`super::meta`].

use super::command::{
    Admin, Arith, Command, Detail, Get, Request, StatsGroup, Storage, StorageMode,
};
use super::keys::Keys;
use super::number::{parse_f64, parse_i32_truncating, parse_u32_truncating, parse_u64};
use super::reply;
use std::cell::Cell;

/// The size limits the parser enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// memcached's `-I`: the largest item (header, key, flags, value) a
    /// storage command may create; see [`Limits::item_fits`].
    pub item_size_max: usize,
    /// Longest multi-get line accepted before the connection is closed.
    pub max_get_line: usize,
}

impl Limits {
    /// memcached's `KEY_MAX_LENGTH`.
    pub const MAX_KEY_LEN: usize = 250;
    /// Without a newline in this many bytes, only a multi-get may go on.
    pub const LINE_SCAN_LIMIT: usize = 2048;
    /// memcached's `MAX_TOKENS` (including its terminating empty token).
    const MAX_TOKENS: usize = 24;
    pub const DEFAULT_ITEM_SIZE_MAX: usize = 1024 * 1024;
    /// memcached's item header with its cas field, the key's NUL and the
    /// value's `\r\n`: what an item costs beyond its key and value.
    pub const ITEM_OVERHEAD: usize = 59;
    /// memcached's `MAX_NUMBER_OF_SLAB_CLASSES`: `stats cachedump` refuses a
    /// class id from here on.
    pub const SLAB_CLASS_IDS: u32 = 64;
    /// `cache_memlimit`'s bounds, in megabytes: memcached refuses less than
    /// 8 and reads more than a billion as a value given in bytes.
    pub const MEMLIMIT_MIN_MB: u32 = 8;
    pub const MEMLIMIT_MAX_MB: u32 = 1_000_000_000;

    /// memcached's `item_size_ok`: whether an item with this key, flags and
    /// value fits `item_size_max` (non-zero flags take 4 more bytes).
    pub fn item_fits(&self, key_len: usize, flags: u32, value_len: usize) -> bool {
        let flag_bytes = if flags == 0 { 0 } else { 4 };
        Limits::ITEM_OVERHEAD + key_len + flag_bytes + value_len <= self.item_size_max
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            item_size_max: Limits::DEFAULT_ITEM_SIZE_MAX,
            max_get_line: Limits::DEFAULT_ITEM_SIZE_MAX,
        }
    }
}

/// A storage command's data block does not end in `\r\n` (memcached's
/// `CLIENT_ERROR bad data chunk`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BadDataChunk;

/// More bytes are needed before anything can be decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incomplete;

/// What a request that cannot be parsed yet waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaiting {
    /// More bytes, how many not known yet.
    More,
    /// The data block (value and `\r\n`, `block_len` bytes) of a storage
    /// command whose line, `line_len` bytes with its newline, is whole.
    Block { line_len: usize, block_len: usize },
}

/// What to do with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a data command to the store (through the cluster engine).
    Execute(Request),
    /// Answer an admin command at the node; `noreply` silences its reply.
    Admin { command: Admin, noreply: bool },
    /// Answer with `text` (a whole reply line) unless `silent`. When
    /// `discards_unflushed`, memcached first drops every reply it has not yet
    /// flushed (a retrieval naming an overlong key does this).
    Reply {
        text: &'static [u8],
        silent: bool,
        discards_unflushed: bool,
    },
    /// Close the connection at once; replies not yet sent are dropped, as
    /// memcached drops them.
    Close,
    /// `mn`: answer `MN`; memcached writes out every reply owed before it.
    MetaNoop,
}

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub action: Action,
    /// Bytes of the input this request used.
    pub consumed: usize,
    /// Bytes *after* `consumed` to discard as they arrive (an oversized value).
    pub swallow: usize,
}

/// Parses the first request in `buf`.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Parsed, Incomplete> {
    parse_awaiting(buf, limits).map_err(|_| Incomplete)
}

/// [`parse`], saying what an unfinished request waits for.
#[inline]
pub fn parse_awaiting(buf: &[u8], limits: &Limits) -> Result<Parsed, Awaiting> {
    let Some(newline) = memchr::memchr(b'\n', buf) else {
        return if buf.len() > Limits::LINE_SCAN_LIMIT && !may_grow(buf, limits) {
            Ok(Parsed::new(Action::Close, buf.len()))
        } else {
            Err(Awaiting::More)
        };
    };
    let tokens = Tokens::split(line_of(buf, newline));
    let line = Line::new(&tokens, buf, newline, limits, None);
    line.dispatch()
        .map_err(|Incomplete| match line.awaited_block.get() {
            Some(block_len) => Awaiting::Block {
                line_len: newline + 1,
                block_len,
            },
            None => Awaiting::More,
        })
}

/// The request line of `buf` that ends at `newline`: without its `\r`, cut
/// at its first NUL.
fn line_of(buf: &[u8], newline: usize) -> &[u8] {
    let mut line = &buf[..newline];
    if line.len() > 1 && line.ends_with(b"\r") {
        line = &line[..line.len() - 1];
    }
    if let Some(nul) = memchr::memchr(0, line) {
        line = &line[..nul];
    }
    line
}

/// Parses the storage request of `line` (with its newline, as
/// [`Awaiting::Block`] measured it) whose data block was read apart into
/// `block` (exactly its `block_len` bytes): `block` becomes the value, not
/// copied. The request's `consumed` counts the line only.
pub fn parse_with_block(line: &[u8], block: Vec<u8>, limits: &Limits) -> Parsed {
    let newline = line.len() - 1;
    let tokens = Tokens::split(line_of(line, newline));
    let parsed = Line::new(&tokens, line, newline, limits, Some(block)).dispatch();
    let mut parsed = parsed.expect("a storage line with its whole block is complete");
    parsed.consumed = line.len();
    parsed
}

/// memcached lets only a `get`/`gets` line grow past the scan limit.
fn may_grow(buf: &[u8], limits: &Limits) -> bool {
    let spaces = buf.iter().take_while(|&&b| b == b' ').count();
    let start = &buf[spaces..];
    spaces <= 100
        && (start.starts_with(b"get ") || start.starts_with(b"gets "))
        && buf.len() <= limits.max_get_line
}

impl Parsed {
    pub(super) fn new(action: Action, consumed: usize) -> Parsed {
        Parsed {
            action,
            consumed,
            swallow: 0,
        }
    }
}

/// The first tokens of a line, split on spaces, without allocating.
pub(super) struct Tokens<'a> {
    items: [&'a [u8]; Limits::MAX_TOKENS],
    len: usize,
    /// The line after the last token kept, when there were too many.
    rest: &'a [u8],
}

impl<'a> Tokens<'a> {
    #[inline]
    fn split(line: &'a [u8]) -> Tokens<'a> {
        let mut tokens = Tokens {
            items: [&[]; Limits::MAX_TOKENS],
            len: 0,
            rest: &[],
        };
        let mut start = 0;
        let ends = memchr::memchr_iter(b' ', line).chain(std::iter::once(line.len()));
        for end in ends {
            if end > start {
                if tokens.len == Limits::MAX_TOKENS {
                    tokens.rest = &line[start..];
                    break;
                }
                tokens.items[tokens.len] = &line[start..end];
                tokens.len += 1;
            }
            start = end + 1;
        }
        tokens
    }

    /// Every token from the `first`, including those past the limit (a
    /// multi-get may name more keys than memcached keeps tokens).
    fn starting_at(&self, first: usize) -> impl Iterator<Item = &'a [u8]> + Clone + '_ {
        let rest = self.rest.split(|&b| b == b' ').filter(|t| !t.is_empty());
        self.items[first..self.len].iter().copied().chain(rest)
    }

    pub(super) fn get(&self, i: usize) -> &'a [u8] {
        self.items[i]
    }

    /// The tokens from the `first` on, up to memcached's token limit.
    pub(super) fn from(&self, first: usize) -> &[&'a [u8]] {
        &self.items[first.min(self.len)..self.len]
    }

    /// memcached's `ntokens`: the real tokens plus its terminating one.
    pub(super) fn ntokens(&self) -> usize {
        self.len + 1
    }

    /// memcached's `set_noreply_maybe`: the last token is `noreply`.
    fn noreply(&self) -> bool {
        self.len > 0 && self.items[self.len - 1] == b"noreply"
    }
}

/// One request line being dispatched.
pub(super) struct Line<'a, 'b> {
    pub(super) tokens: &'b Tokens<'a>,
    /// Everything after the request line (a storage command's value).
    pub(super) rest: &'a [u8],
    pub(super) line_len: usize,
    pub(super) limits: &'b Limits,
    /// A storage command's data block, read apart from the line: it
    /// becomes the value (then `rest` is empty).
    apart: Cell<Option<Vec<u8>>>,
    /// Set when a storage command waits for its data block: its length.
    awaited_block: Cell<Option<usize>>,
}

impl<'a, 'b> Line<'a, 'b> {
    /// The line of `buf` that ends at `newline`, split into `tokens`.
    fn new(
        tokens: &'b Tokens<'a>,
        buf: &'a [u8],
        newline: usize,
        limits: &'b Limits,
        apart: Option<Vec<u8>>,
    ) -> Line<'a, 'b> {
        Line {
            tokens,
            rest: &buf[newline + 1..],
            line_len: newline + 1,
            limits,
            apart: Cell::new(apart),
            awaited_block: Cell::new(None),
        }
    }
}

impl<'a> Line<'a, '_> {
    fn dispatch(&self) -> Result<Parsed, Incomplete> {
        let t = self.tokens;
        if t.len == 0 || t.get(0).len() < 2 {
            return Ok(self.error());
        }
        let name = t.get(0);
        let n = t.ntokens();
        let parsed = match (name[0], name) {
            (b'm', _) if name.len() == 2 => return self.meta(name[1]),
            (b'g', _) if n < 3 => self.error(),
            (b'g', b"get") => self.get(false, false),
            (b'g', b"gets") => self.get(true, false),
            (b'g', b"gat") => self.get(false, true),
            (b'g', b"gats") => self.get(true, true),
            (b's', b"set") if matches!(n, 6 | 7) => return self.storage(StorageMode::Set),
            (b's', b"stats") => self.stats(),
            (b's', b"show") => self.admin(Admin::Show, false),
            (b's', b"shutdown") => self.reply(reply::SHUTDOWN_DISABLED, false),
            (b'a', b"add") if matches!(n, 6 | 7) => return self.storage(StorageMode::Add),
            (b'a', b"append") if matches!(n, 6 | 7) => return self.storage(StorageMode::Append),
            (b'c', b"cas") if matches!(n, 7 | 8) => return self.storage(StorageMode::Cas(0)),
            (b'c', b"cache_memlimit") if matches!(n, 3 | 4) => self.cache_memlimit(),
            (b's', b"slabs") => self.slabs(),
            (b'i', b"incr") if matches!(n, 4 | 5) => self.arith(true),
            (b'd', b"delete") if (3..=5).contains(&n) => self.delete(),
            (b'd', b"decr") if matches!(n, 4 | 5) => self.arith(false),
            (b't', b"touch") if matches!(n, 4 | 5) => self.touch(),
            (b'g' | b's' | b'a' | b'c' | b'i' | b'd' | b't', _) => self.error(),
            _ if t.get(t.len - 1).starts_with(b"HTTP/") => {
                Parsed::new(Action::Close, self.line_len)
            }
            (_, b"prepend") if matches!(n, 6 | 7) => return self.storage(StorageMode::Prepend),
            (_, b"replace") if matches!(n, 6 | 7) => return self.storage(StorageMode::Replace),
            (_, b"bget") => self.get(false, false),
            (_, b"flush_all") if (2..=4).contains(&n) => self.flush_all(),
            (_, b"version") => self.admin(Admin::Version, false),
            (_, b"quit") => self.admin(Admin::Quit, false),
            (_, b"verbosity") if matches!(n, 3 | 4) => self.verbosity(),
            _ => self.error(),
        };
        Ok(parsed)
    }

    pub(super) fn execute(&self, command: Command, noreply: bool) -> Parsed {
        Parsed::new(Action::Execute(Request { command, noreply }), self.line_len)
    }

    fn admin(&self, command: Admin, noreply: bool) -> Parsed {
        Parsed::new(Action::Admin { command, noreply }, self.line_len)
    }

    pub(super) fn reply(&self, text: &'static [u8], silent: bool) -> Parsed {
        let action = Action::Reply {
            text,
            silent,
            discards_unflushed: false,
        };
        Parsed::new(action, self.line_len)
    }

    pub(super) fn error(&self) -> Parsed {
        self.reply(reply::ERROR, false)
    }

    pub(super) fn key_too_long(&self) -> bool {
        self.tokens.get(1).len() > Limits::MAX_KEY_LEN
    }

    fn get(&self, with_cas: bool, touches: bool) -> Parsed {
        let mut skip = 1;
        let touch = if touches {
            match parse_i32_truncating(self.tokens.get(1)) {
                Some(exptime) => {
                    skip = 2;
                    Some(exptime)
                }
                None => return self.reply(reply::INVALID_EXPTIME, false),
            }
        } else {
            None
        };
        let keys = self.tokens.starting_at(skip);
        // One pass checks the keys and sizes them, so they take exactly two
        // allocations.
        let (mut count, mut bytes, mut too_long) = (0, 0, false);
        for key in keys.clone() {
            (count, bytes) = (count + 1, bytes + key.len());
            too_long |= key.len() > Limits::MAX_KEY_LEN;
        }
        if too_long {
            let action = Action::Reply {
                text: reply::BAD_FORMAT,
                silent: false,
                discards_unflushed: true,
            };
            return Parsed::new(action, self.line_len);
        }
        let mut packed = Keys::with_capacity(count, bytes);
        keys.for_each(|key| packed.push(key));
        let keys = packed;
        self.execute(
            Command::Get(Get {
                keys,
                with_cas,
                touch,
            }),
            false,
        )
    }

    /// Flags, exptime and length of a storage command.
    fn storage_numbers(&self) -> Option<(u32, i32, i32)> {
        let t = self.tokens;
        Some((
            parse_u32_truncating(t.get(2))?,
            parse_i32_truncating(t.get(3))?,
            parse_i32_truncating(t.get(4))?,
        ))
    }

    /// A storage command; for `cas`, `mode` is a placeholder whose unique is
    /// read from the line after the other numbers, in memcached's order.
    fn storage(&self, mut mode: StorageMode) -> Result<Parsed, Incomplete> {
        let noreply = self.tokens.noreply();
        if self.key_too_long() {
            return Ok(self.reply(reply::BAD_FORMAT, noreply));
        }
        let Some((flags, exptime, length)) = self.storage_numbers() else {
            return Ok(self.reply(reply::BAD_FORMAT, noreply));
        };
        if let StorageMode::Cas(_) = mode {
            match parse_u64(self.tokens.get(5)) {
                Some(unique) => mode = StorageMode::Cas(unique),
                None => return Ok(self.reply(reply::BAD_FORMAT, noreply)),
            }
        }
        // memcached refuses negative lengths and any that overflow with the `\r\n`.
        let Ok(length) = usize::try_from(length).map_err(|_| ()).and_then(|l| {
            if l > i32::MAX as usize - 2 {
                Err(())
            } else {
                Ok(l)
            }
        }) else {
            return Ok(self.reply(reply::BAD_FORMAT, noreply));
        };
        let key = self.tokens.get(1).to_vec();
        if !self.limits.item_fits(key.len(), flags, length) {
            let command = Command::TooLarge {
                key,
                is_set: mode == StorageMode::Set,
            };
            let mut parsed = self.execute(command, noreply);
            parsed.swallow = length + 2;
            return Ok(parsed);
        }
        let consumed = self.line_len + length + 2;
        let bad_chunk = || {
            let action = Action::Reply {
                text: reply::BAD_DATA_CHUNK,
                silent: noreply,
                discards_unflushed: false,
            };
            Ok(Parsed::new(action, consumed))
        };
        let Ok(value) = self.value(length)? else {
            return bad_chunk();
        };
        let command = Command::Storage(Storage {
            mode,
            key,
            flags,
            exptime,
            value,
        });
        let mut parsed = self.execute(command, noreply);
        parsed.consumed = consumed;
        Ok(parsed)
    }

    /// The value of a storage command (classic or `ms`) whose line says
    /// it is `length` bytes: its data block, without the `\r\n`, taken as
    /// it is when it was read apart, else copied out of `rest`. A block
    /// not all in `rest` is waited for, its length noted so that
    /// [`parse_awaiting`] can name it and the block be read apart.
    pub(super) fn value(&self, length: usize) -> Result<Result<Vec<u8>, BadDataChunk>, Incomplete> {
        let block_len = length + 2;
        if let Some(mut block) = self.apart.take() {
            assert_eq!(
                block.len(),
                block_len,
                "a block read apart is as long as its line says"
            );
            if !block.ends_with(b"\r\n") {
                return Ok(Err(BadDataChunk));
            }
            block.truncate(length);
            return Ok(Ok(block));
        }
        let Some(block) = self.rest.get(..block_len) else {
            self.awaited_block.set(Some(block_len));
            return Err(Incomplete);
        };
        match block.ends_with(b"\r\n") {
            true => Ok(Ok(block[..length].to_vec())),
            false => Ok(Err(BadDataChunk)),
        }
    }

    fn arith(&self, incr: bool) -> Parsed {
        let noreply = self.tokens.noreply();
        if self.key_too_long() {
            return self.reply(reply::BAD_FORMAT, noreply);
        }
        let Some(delta) = parse_u64(self.tokens.get(2)) else {
            return self.reply(reply::INVALID_DELTA, noreply);
        };
        let key = self.tokens.get(1).to_vec();
        self.execute(Command::Arith(Arith { key, incr, delta }), noreply)
    }

    fn delete(&self) -> Parsed {
        let t = self.tokens;
        let n = t.ntokens();
        let mut noreply = false;
        if n > 3 {
            let hold_is_zero = t.get(2) == b"0";
            noreply = t.noreply();
            let valid =
                (n == 4 && (hold_is_zero || noreply)) || (n == 5 && hold_is_zero && noreply);
            if !valid {
                return self.reply(reply::DELETE_USAGE, noreply);
            }
        }
        if self.key_too_long() {
            return self.reply(reply::BAD_FORMAT, noreply);
        }
        let key = t.get(1).to_vec();
        self.execute(Command::Delete { key }, noreply)
    }

    fn touch(&self) -> Parsed {
        let noreply = self.tokens.noreply();
        if self.key_too_long() {
            return self.reply(reply::BAD_FORMAT, noreply);
        }
        let Some(exptime) = parse_i32_truncating(self.tokens.get(2)) else {
            return self.reply(reply::INVALID_EXPTIME, noreply);
        };
        let key = self.tokens.get(1).to_vec();
        self.execute(Command::Touch { key, exptime }, noreply)
    }

    fn flush_all(&self) -> Parsed {
        let noreply = self.tokens.noreply();
        let bare = if noreply { 3 } else { 2 };
        let delay = if self.tokens.ntokens() == bare {
            0
        } else {
            match parse_i32_truncating(self.tokens.get(1)) {
                Some(delay) => delay,
                None => return self.reply(reply::INVALID_EXPTIME, noreply),
            }
        };
        self.execute(Command::FlushAll { delay }, noreply)
    }

    fn verbosity(&self) -> Parsed {
        let noreply = self.tokens.noreply();
        if parse_u32_truncating(self.tokens.get(1)).is_none() {
            return self.reply(reply::BAD_FORMAT, noreply);
        }
        self.admin(Admin::Verbosity, noreply)
    }

    /// memcached's `process_stat`: words after the group's own are
    /// ignored, and there is no `noreply`.
    fn stats(&self) -> Parsed {
        let t = self.tokens;
        let group = match t.len {
            1 => StatsGroup::General,
            _ => match t.get(1) {
                b"reset" => StatsGroup::Reset,
                b"settings" => StatsGroup::Settings,
                b"items" => StatsGroup::Items,
                b"slabs" => StatsGroup::Slabs,
                b"sizes" => StatsGroup::Sizes,
                b"conns" => StatsGroup::Conns,
                b"extstore" => StatsGroup::Extstore,
                b"detail" => match (t.len > 2).then(|| t.get(2)) {
                    Some(b"on") => StatsGroup::Detail(Detail::On),
                    Some(b"off") => StatsGroup::Detail(Detail::Off),
                    Some(b"dump") => StatsGroup::Detail(Detail::Dump),
                    _ => return self.reply(reply::DETAIL_USAGE, false),
                },
                b"cachedump" => return self.cachedump(),
                _ => return self.error(),
            },
        };
        self.admin(Admin::Stats(group), false)
    }

    fn cachedump(&self) -> Parsed {
        let t = self.tokens;
        if t.ntokens() < 5 {
            return self.reply(reply::BAD_COMMAND_LINE, false);
        }
        let (Some(class), Some(limit)) = (
            parse_u32_truncating(t.get(2)),
            parse_u32_truncating(t.get(3)),
        ) else {
            return self.reply(reply::BAD_FORMAT, false);
        };
        if class >= Limits::SLAB_CLASS_IDS {
            return self.reply(reply::ILLEGAL_SLAB_ID, false);
        }
        self.admin(Admin::Stats(StatsGroup::CacheDump { class, limit }), false)
    }

    /// memcached's `process_memlimit_command`; `noreply` silences its errors too.
    fn cache_memlimit(&self) -> Parsed {
        let noreply = self.tokens.noreply();
        match parse_u32_truncating(self.tokens.get(1)) {
            None => self.reply(reply::ERROR, noreply),
            Some(mb) if mb < Limits::MEMLIMIT_MIN_MB => {
                self.reply(reply::MEMLIMIT_TOO_SMALL, noreply)
            }
            Some(mb) if mb > Limits::MEMLIMIT_MAX_MB => {
                self.reply(reply::MEMLIMIT_NOT_BYTES, noreply)
            }
            Some(megabytes) => self.admin(Admin::CacheMemlimit { megabytes }, noreply),
        }
    }

    /// memcached's `process_slabs_command`: `reassign` takes exactly two
    /// class ids (and no `noreply`); `automove` takes a level of 0, 1 or 2,
    /// or `ratio` and a number, and `noreply` silences its errors too.
    fn slabs(&self) -> Parsed {
        let t = self.tokens;
        let n = t.ntokens();
        if n == 5 && t.get(1) == b"reassign" {
            let ids = (
                parse_i32_truncating(t.get(2)),
                parse_i32_truncating(t.get(3)),
            );
            let (Some(source), Some(destination)) = ids else {
                return self.reply(reply::BAD_FORMAT, false);
            };
            return self.admin(
                Admin::SlabsReassign {
                    source,
                    destination,
                },
                false,
            );
        }
        if n < 4 || t.get(1) != b"automove" {
            return self.error();
        }
        let noreply = t.noreply();
        if t.get(2) == b"ratio" {
            return match n >= 5 && parse_f64(t.get(3)).is_some() {
                true => self.admin(Admin::SlabsAutomove, noreply),
                false => self.reply(reply::ERROR, noreply),
            };
        }
        match parse_u32_truncating(t.get(2)) {
            None => self.reply(reply::BAD_FORMAT, noreply),
            Some(0..=2) => self.admin(Admin::SlabsAutomove, noreply),
            Some(_) => self.reply(reply::ERROR, noreply),
        }
    }
}
