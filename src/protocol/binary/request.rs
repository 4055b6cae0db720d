//! Reads one binary request: bytes in, what to do (plus how many bytes it
//! used and how many to swallow after) out, or [`Incomplete`]. It checks a
//! request as memcached 1.6.18's `try_read_command_binary` and
//! `dispatch_bin_command` do, in their order, so a malformed one gets the
//! same response and the same close:
//!
//! ```text
//!  magic not 0x80 ─────────────────────────────► close at once, nothing sent
//!  (wait for header, extras and key; never for more before the checks)
//!  key + extras longer than the body ──────────► Unknown command, then close
//!  key over 250 bytes ─────────────────────────► Invalid arguments, then close
//!  opcode unknown (and the SASL ones) ─────────► Unknown command, body swallowed
//!  lengths wrong for the opcode ───────────────► Invalid arguments, then close
//!  value past item_size_max ───────────────────► Too large, value swallowed
//! ```
//!
//! A data command becomes the meta command that does the same store work
//! (see [`super`]): gets and touches are `mg`, stores `ms`, `delete` is
//! `md`, `incr`/`decr` are `ma`, `flush` is `flush_all`. Only a request
//! with a value (the storage commands) waits for its whole body; the others
//! are decided once header, extras and key are in, and what their body
//! length claims beyond those is read as the next request, as memcached
//! reads it. So no request makes the connection hold more than
//! `item_size_max` plus a header, 255 bytes of extras and a 64 KB key.

use super::header::{Opcode, RequestHeader, Status, HEADER_LEN, REQUEST_MAGIC};
use super::response::{Reply, Responder};
use crate::protocol::{
    Admin, Command, Detail, Incomplete, Limits, Meta, MetaArith, MetaFlag, MetaOp, MetaReply,
    MetaSet, StatsGroup, StorageMode,
};

/// What to do with one binary request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a data command to the store (through the cluster engine); its
    /// text reply becomes the response ([`Responder::respond`]).
    Execute(Command),
    /// Answer an admin command (`version`, `stat`, `quit`) at the node.
    Admin(Admin),
    /// `noop`: an empty success, after which memcached writes out every
    /// response owed.
    Noop,
    /// Answer `status` at once ([`Responder::refuse`]); with `close`, the
    /// connection closes once it is written.
    Refuse { status: Status, close: bool },
    /// Close at once, dropping the responses memcached had not written yet
    /// (a request whose magic is wrong).
    Close,
}

/// One decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub action: Action,
    /// How its reply becomes a response.
    pub responder: Responder,
    /// Bytes of the input this request used.
    pub consumed: usize,
    /// Bytes *after* `consumed` to discard as they arrive.
    pub swallow: usize,
}

/// memcached's incr/decr expiration that means "do not create the item".
const NO_CREATE: u32 = 0xffff_ffff;

/// Decodes the first request in `buf`.
pub fn decode(buf: &[u8], limits: &Limits) -> Result<Decoded, Incomplete> {
    let header = RequestHeader::read(buf)?;
    let plain = Responder::new(&header, Reply::Empty, false);
    if header.magic != REQUEST_MAGIC {
        return Ok(decoded(Action::Close, plain, HEADER_LEN, 0));
    }
    let head = buf.get(..header.head_len()).ok_or(Incomplete)?;
    let extras_end = HEADER_LEN + usize::from(header.extras_len);
    let body_len = header.body_len as usize;
    if head.len() - HEADER_LEN > body_len {
        return Ok(refuse(plain, Status::UnknownCommand, true, head.len(), 0));
    }
    if usize::from(header.key_len) > Limits::MAX_KEY_LEN {
        return Ok(refuse(plain, Status::InvalidArguments, true, head.len(), 0));
    }
    let Some((opcode, quiet)) = Opcode::of(header.opcode) else {
        // memcached swallows the whole body length after the extras and
        // key it has already read: a request behind an unknown one that
        // had a key or extras loses its first bytes, there as here.
        return Ok(refuse(
            plain,
            Status::UnknownCommand,
            false,
            head.len(),
            body_len,
        ));
    };
    if !well_formed(opcode, &header) {
        return Ok(refuse(plain, Status::InvalidArguments, true, head.len(), 0));
    }
    let request = Request {
        header,
        quiet,
        extras: &head[HEADER_LEN..extras_end],
        key: &head[extras_end..],
        buf,
        limits,
    };
    request.decode(opcode)
}

fn decoded(action: Action, responder: Responder, consumed: usize, swallow: usize) -> Decoded {
    Decoded {
        action,
        responder,
        consumed,
        swallow,
    }
}

fn refuse(
    responder: Responder,
    status: Status,
    close: bool,
    consumed: usize,
    swallow: usize,
) -> Decoded {
    decoded(
        Action::Refuse { status, close },
        responder,
        consumed,
        swallow,
    )
}

/// memcached's length checks for each opcode (`dispatch_bin_command`).
fn well_formed(opcode: Opcode, h: &RequestHeader) -> bool {
    let (key, extras, body) = (u32::from(h.key_len), u32::from(h.extras_len), h.body_len);
    let bare = key == 0 && extras == 0 && body == 0;
    match opcode {
        Opcode::Get | Opcode::GetK => extras == 0 && key > 0 && body == key,
        Opcode::Set | Opcode::Add | Opcode::Replace => extras == 8 && key > 0 && body >= key + 8,
        Opcode::Append | Opcode::Prepend => extras == 0 && key > 0,
        Opcode::Delete => extras == 0 && key > 0 && body == key,
        Opcode::Increment | Opcode::Decrement => extras == 20 && key > 0 && body == key + 20,
        Opcode::Touch | Opcode::Gat | Opcode::GatK => extras == 4 && key > 0,
        Opcode::Flush => key == 0 && body == extras && (extras == 0 || extras == 4),
        Opcode::Stat => extras == 0,
        Opcode::Noop | Opcode::Version | Opcode::Quit | Opcode::SaslListMechs => bare,
        Opcode::SaslAuth | Opcode::SaslStep => extras == 0 && key > 0,
    }
}

/// An exptime as memcached reads it from a binary request: unsigned, so
/// never "already expired". Past `i32::MAX` (January 2038, as an absolute
/// time) it is kept at `i32::MAX`, the furthest expiry the store takes.
fn exptime(raw: u32) -> i32 {
    i32::try_from(raw).unwrap_or(i32::MAX)
}

/// A request whose header, extras and key have been read and checked.
struct Request<'a> {
    header: RequestHeader,
    quiet: bool,
    extras: &'a [u8],
    key: &'a [u8],
    /// The whole input, for a value after the key.
    buf: &'a [u8],
    limits: &'a Limits,
}

impl Request<'_> {
    fn decode(&self, opcode: Opcode) -> Result<Decoded, Incomplete> {
        Ok(match opcode {
            Opcode::Get => self.item(None, false),
            Opcode::GetK => self.item(None, true),
            Opcode::Touch | Opcode::Gat | Opcode::GatK => {
                let touch = Some(exptime(self.u32_at(0)));
                match opcode {
                    Opcode::Touch => self.touch(touch),
                    _ => self.item(touch, opcode == Opcode::GatK),
                }
            }
            Opcode::Set => return self.store(StorageMode::Set, Status::NotStored),
            Opcode::Add => return self.store(StorageMode::Add, Status::KeyExists),
            Opcode::Replace => return self.store(StorageMode::Replace, Status::KeyNotFound),
            Opcode::Append => return self.store(StorageMode::Append, Status::NotStored),
            Opcode::Prepend => return self.store(StorageMode::Prepend, Status::NotStored),
            Opcode::Delete => self.delete(),
            Opcode::Increment => self.arith(true),
            Opcode::Decrement => self.arith(false),
            Opcode::Flush => {
                let delay = match self.extras.is_empty() {
                    true => 0,
                    false => exptime(self.u32_at(0)),
                };
                self.execute(Command::FlushAll { delay }, Reply::Flushed)
            }
            Opcode::Noop => self.act(Action::Noop, Reply::Empty),
            Opcode::Version => self.act(Action::Admin(Admin::Version), Reply::Version),
            Opcode::Quit => self.act(Action::Admin(Admin::Quit), Reply::Empty),
            Opcode::Stat => self.stat(),
            // memcached without SASL answers as to an unknown command,
            // swallowing the mechanism's data.
            Opcode::SaslListMechs | Opcode::SaslAuth | Opcode::SaslStep => {
                let data = self.header.body_len as usize - self.key.len();
                let mut d = self.act(
                    Action::Refuse {
                        status: Status::UnknownCommand,
                        close: false,
                    },
                    Reply::Empty,
                );
                d.swallow = data;
                d
            }
        })
    }

    /// Decoded as `action`, having used header, extras and key.
    fn act(&self, action: Action, reply: Reply) -> Decoded {
        let responder = Responder::new(&self.header, reply, self.quiet);
        decoded(action, responder, self.header.head_len(), 0)
    }

    fn execute(&self, command: Command, reply: Reply) -> Decoded {
        self.act(Action::Execute(command), reply)
    }

    /// The big-endian number at `at` in the extras (whose length
    /// [`well_formed`] checked).
    fn u32_at(&self, at: usize) -> u32 {
        u32::from_be_bytes(self.extras[at..at + 4].try_into().expect("4 bytes"))
    }

    fn u64_at(&self, at: usize) -> u64 {
        u64::from_be_bytes(self.extras[at..at + 8].try_into().expect("8 bytes"))
    }

    /// The request's cas, where 0 means "no compare".
    fn compare(&self) -> Option<u64> {
        Some(self.header.cas).filter(|&cas| cas != 0)
    }

    fn meta(&self, op: MetaOp, flags: Vec<MetaFlag>, value: bool) -> Command {
        Command::Meta(Meta {
            key: self.key.to_vec(),
            op,
            reply: MetaReply {
                flags,
                quiet: false,
                base64: false,
                value,
            },
        })
    }

    /// get, getk, gat, gatk: `mg <key> f c v [T<exptime>]`.
    fn item(&self, touch: Option<i32>, returns_key: bool) -> Decoded {
        let mut flags = vec![MetaFlag::ClientFlags, MetaFlag::Cas];
        flags.extend(touch.map(MetaFlag::Touch));
        let command = self.meta(MetaOp::Get, flags, true);
        let mut d = self.execute(command, Reply::Item { value: true });
        if returns_key {
            d.responder.return_key(self.key);
        }
        d
    }

    /// touch: `mg <key> f c T<exptime>`, its flags and cas without the value.
    fn touch(&self, touch: Option<i32>) -> Decoded {
        let mut flags = vec![MetaFlag::ClientFlags, MetaFlag::Cas];
        flags.extend(touch.map(MetaFlag::Touch));
        let command = self.meta(MetaOp::Get, flags, false);
        self.execute(command, Reply::Item { value: false })
    }

    /// set, add, replace (flags and exptime in the extras; a cas makes any
    /// of them a `cas`, as in memcached), append and prepend (a cas is
    /// memcached's compare for them): `ms <key> <len> c` with the value.
    fn store(&self, mode: StorageMode, not_stored: Status) -> Result<Decoded, Incomplete> {
        let (flags, exptime) = match self.extras.is_empty() {
            true => (0, 0),
            false => (self.u32_at(0), exptime(self.u32_at(4))),
        };
        let head = self.header.head_len();
        let value_len = self.header.body_len as usize - (head - HEADER_LEN);
        let reply = Reply::Stored { not_stored };
        if !self.limits.item_fits(self.key.len(), flags, value_len) {
            // memcached drops a `set`'s old value when the new one is too
            // large, so no stale data survives the failed write.
            let command = Command::TooLarge {
                key: self.key.to_vec(),
                is_set: mode == StorageMode::Set,
            };
            let mut d = self.execute(command, reply);
            d.swallow = value_len;
            return Ok(d);
        }
        let value = self.buf.get(head..head + value_len).ok_or(Incomplete)?;
        let (mode, compare) = match (mode, self.compare()) {
            (StorageMode::Append | StorageMode::Prepend, compare) => (mode, compare),
            (_, Some(cas)) => (StorageMode::Cas(cas), None),
            (mode, None) => (mode, None),
        };
        let set = MetaSet {
            mode,
            compare,
            flags,
            exptime,
            value: value.to_vec(),
        };
        let command = self.meta(MetaOp::Set(set), vec![MetaFlag::Cas], false);
        let mut d = self.execute(command, reply);
        d.consumed = head + value_len;
        Ok(d)
    }

    /// delete: `md <key> [C<cas>]`.
    fn delete(&self) -> Decoded {
        let op = MetaOp::Delete {
            compare: self.compare(),
        };
        self.execute(self.meta(op, Vec::new(), false), Reply::Deleted)
    }

    /// incr, decr: `ma <key> D<delta> [N<exptime> J<initial>] [C<cas>] c v`.
    fn arith(&self, incr: bool) -> Decoded {
        let raw_exptime = self.u32_at(16);
        let creates = raw_exptime != NO_CREATE;
        let arith = MetaArith {
            incr,
            delta: self.u64_at(0),
            initial: creates.then(|| self.u64_at(8)),
            compare: self.compare(),
        };
        let mut flags = vec![MetaFlag::Cas];
        if creates {
            flags.push(MetaFlag::Vivify(exptime(raw_exptime)));
        }
        let command = self.meta(MetaOp::Arith(arith), flags, true);
        self.execute(command, Reply::Counter)
    }

    /// stat: the key names the group, as memcached's `process_bin_stat`
    /// reads it; a group it does not know is `Not found`.
    fn stat(&self) -> Decoded {
        match stats_group(self.key) {
            Some(group) => {
                let dump = group == StatsGroup::Detail(Detail::Dump);
                self.act(Action::Admin(Admin::Stats(group)), Reply::Stats { dump })
            }
            None => self.act(
                Action::Refuse {
                    status: Status::KeyNotFound,
                    close: false,
                },
                Reply::Empty,
            ),
        }
    }
}

/// The `stats` group a binary `stat` key names: memcached matches `reset`,
/// `settings` and `detail` by prefix and `items`, `slabs` and `sizes`
/// whole; `conns`, `extstore` and `cachedump` are text-only.
fn stats_group(key: &[u8]) -> Option<StatsGroup> {
    if key.is_empty() {
        return Some(StatsGroup::General);
    }
    if key.starts_with(b"reset") {
        return Some(StatsGroup::Reset);
    }
    if key.starts_with(b"settings") {
        return Some(StatsGroup::Settings);
    }
    if let Some(detail) = key.strip_prefix(b"detail") {
        let which = match detail {
            d if d.starts_with(b" dump") => Detail::Dump,
            d if d.starts_with(b" on") => Detail::On,
            d if d.starts_with(b" off") => Detail::Off,
            _ => return None,
        };
        return Some(StatsGroup::Detail(which));
    }
    match key {
        b"items" => Some(StatsGroup::Items),
        b"slabs" => Some(StatsGroup::Slabs),
        b"sizes" => Some(StatsGroup::Sizes),
        _ => None,
    }
}
