//! The meta commands' parser: `mg ms md ma me` and `mn`, as memcached
//! 1.6.18's `proto_text.c` reads them.
//!
//! A meta line is `<cmd> <key> [<datalen> (ms)] <flags>*`, each flag a
//! token whose first byte names it. memcached reads the flags twice, and so
//! does this: [`Line::preparse`] (its `_meta_flag_preparse`) checks every
//! token and reads the numbers, in order, stopping at a duplicate or unknown
//! flag; then each command picks, in the client's order, the flags its
//! reply echoes or that act on the item ([`MetaFlag`]). The errors, and
//! which of them swallow an `ms` value, are memcached's.
//!
//! Flags memcached accepts but mckv does not implement (the stale-while-
//! revalidate and LRU flags `N R h l` of `mg`, `I` of `md`, and `I` of
//! `ms` with `C`) are refused as memcached refuses an unknown flag, rather
//! than half done.

use super::base64;
use super::command::{Command, Meta, MetaArith, MetaFlag, MetaOp, MetaReply, MetaSet, StorageMode};
use super::number::{parse_i32_truncating, parse_u32_truncating, parse_u64};
use super::parse::{Action, Incomplete, Line, Parsed};
use super::reply;

/// memcached's `MFLAG_MAX_OPT_LENGTH`: more tokens (counting its
/// terminating one) than this is an error.
const MAX_META_TOKENS: usize = 20;
/// memcached's `MFLAG_MAX_OPAQUE_LENGTH`, the `O` token included.
const MAX_OPAQUE_LEN: usize = 32;

/// What the first reading of a meta command's flags found.
#[derive(Default)]
struct Preparsed {
    /// The key, decoded when `b` was given.
    key: Vec<u8>,
    base64: bool,
    quiet: bool,
    value: bool,
    client_flags: u32,
    /// `T`.
    exptime: Option<i32>,
    /// `N`.
    vivify: Option<i32>,
    /// `C`.
    compare: Option<u64>,
    /// `M`'s mode letter.
    mode: Option<u8>,
    /// `J`.
    initial: u64,
    /// `D`.
    delta: Option<u64>,
    /// `I`.
    invalidate: bool,
}

/// Which meta command is being read, for the flags it keeps.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Get,
    Set,
    Delete,
    Arith,
}

impl<'a> Line<'a, '_> {
    /// A line whose command is `m` and one more byte.
    pub(super) fn meta(&self, which: u8) -> Result<Parsed, Incomplete> {
        Ok(match which {
            b'n' => Parsed::new(Action::MetaNoop, self.line_len),
            b'g' => self.meta_get(),
            b's' => return self.meta_set(),
            b'd' => self.meta_delete(),
            b'a' => self.meta_arith(),
            b'e' => self.meta_debug(),
            _ => self.error(),
        })
    }

    /// The checks every meta command but `me` makes before its flags:
    /// memcached's token count, key length and flag count; the reply that
    /// refuses the line, if one does.
    fn meta_line_checks(&self, too_many: &'static [u8]) -> Option<Parsed> {
        let t = self.tokens;
        if t.ntokens() < 3 {
            return Some(self.error());
        }
        if self.key_too_long() {
            return Some(self.reply(reply::BAD_FORMAT, false));
        }
        if t.ntokens() > MAX_META_TOKENS {
            return Some(self.reply(too_many, false));
        }
        None
    }

    /// memcached's `_meta_flag_preparse` over the tokens from `first`;
    /// `unsupported` flags are refused as unknown ones.
    fn preparse(&self, first: usize, unsupported: &[u8]) -> Result<Preparsed, &'static [u8]> {
        let mut p = Preparsed {
            key: self.tokens.get(1).to_vec(),
            ..Preparsed::default()
        };
        let mut seen = [false; 127];
        // memcached reads on after most errors, keeping the last message.
        let mut error: Option<&'static [u8]> = None;
        for token in self.tokens.from(first) {
            let (letter, arg) = (token[0], &token[1..]);
            if letter >= 127 || seen[usize::from(letter)] {
                return Err(reply::META_DUPLICATE_FLAG);
            }
            seen[usize::from(letter)] = true;
            if unsupported.contains(&letter) {
                return Err(reply::META_INVALID_FLAG);
            }
            let failed = match letter {
                b'b' => {
                    p.base64 = true;
                    p.key = base64::decode(&p.key).unwrap_or_default();
                    p.key.is_empty().then_some(reply::META_BAD_KEY_ENCODING)
                }
                b'N' | b'T' | b'R' => {
                    let exptime = parse_i32_truncating(arg);
                    match letter {
                        b'N' => p.vivify = exptime,
                        b'T' => p.exptime = exptime,
                        _ => {}
                    }
                    exptime.is_none().then_some(reply::META_BAD_TOKEN)
                }
                b'O' | b'P' | b'L' | b'k' | b's' | b't' | b'c' | b'f' | b'h' | b'l' | b'u' => None,
                b'I' => {
                    p.invalidate = true;
                    None
                }
                b'v' => {
                    p.value = true;
                    None
                }
                b'q' => {
                    p.quiet = true;
                    None
                }
                // memcached leaves the message as it was.
                b'F' => match parse_u32_truncating(arg) {
                    Some(flags) => {
                        p.client_flags = flags;
                        None
                    }
                    None => Some(error.unwrap_or(reply::BAD_FORMAT)),
                },
                b'C' => {
                    p.compare = parse_u64(arg);
                    p.compare.is_none().then_some(reply::META_BAD_TOKEN)
                }
                b'M' if token.len() != 2 => Some(reply::META_BAD_MODE_LENGTH),
                b'M' => {
                    p.mode = Some(arg[0]);
                    None
                }
                b'J' => match parse_u64(arg) {
                    Some(initial) => {
                        p.initial = initial;
                        None
                    }
                    None => Some(reply::META_BAD_INITIAL),
                },
                b'D' => {
                    p.delta = parse_u64(arg);
                    p.delta.is_none().then_some(reply::META_BAD_DELTA)
                }
                _ => return Err(reply::META_INVALID_FLAG),
            };
            if failed.is_some() {
                error = failed;
            }
        }
        match error {
            Some(why) => Err(why),
            None => Ok(p),
        }
    }

    /// The second reading: the flags `kind` echoes or acts on, in order.
    fn reply_flags(
        &self,
        first: usize,
        kind: Kind,
        p: &Preparsed,
    ) -> Result<Vec<MetaFlag>, &'static [u8]> {
        let mut flags = Vec::new();
        for token in self.tokens.from(first) {
            let flag = match (token[0], kind) {
                (b'O', _) if token.len() > MAX_OPAQUE_LEN => {
                    return Err(reply::META_OPAQUE_TOO_LONG)
                }
                (b'O', _) => MetaFlag::Opaque(token.to_vec()),
                (b'k', _) => MetaFlag::Key,
                (b'c', Kind::Get | Kind::Set | Kind::Arith) => MetaFlag::Cas,
                (b't', Kind::Get | Kind::Arith) => MetaFlag::Ttl,
                (b'T', Kind::Get | Kind::Arith) => MetaFlag::Touch(p.exptime.unwrap_or(0)),
                (b'N', Kind::Arith) => MetaFlag::Vivify(p.vivify.unwrap_or(0)),
                (b's', Kind::Get) => MetaFlag::Size,
                (b'f', Kind::Get) => MetaFlag::ClientFlags,
                _ => continue,
            };
            flags.push(flag);
        }
        Ok(flags)
    }

    fn meta_command(&self, p: Preparsed, op: MetaOp, flags: Vec<MetaFlag>) -> Parsed {
        let reply = MetaReply {
            flags,
            quiet: p.quiet,
            base64: p.base64,
            value: p.value,
        };
        let meta = Meta {
            key: p.key,
            op,
            reply,
        };
        self.execute(Command::Meta(meta), false)
    }

    /// `mg <key> <flags>*`.
    fn meta_get(&self) -> Parsed {
        if let Some(parsed) = self.meta_line_checks(reply::META_TOO_MANY_FLAGS_MG) {
            return parsed;
        }
        let parsed = self
            .preparse(2, b"NRhl")
            .and_then(|p| Ok((self.reply_flags(2, Kind::Get, &p)?, p)));
        match parsed {
            Ok((flags, p)) => self.meta_command(p, MetaOp::Get, flags),
            Err(why) => self.reply(why, false),
        }
    }

    /// `md <key> <flags>*`.
    fn meta_delete(&self) -> Parsed {
        if let Some(parsed) = self.meta_line_checks(reply::META_TOO_MANY_FLAGS) {
            return parsed;
        }
        let Ok(p) = self.preparse(2, b"I") else {
            return self.reply(reply::META_INVALID_OR_DUPLICATE_FLAG, false);
        };
        match self.reply_flags(2, Kind::Delete, &p) {
            Ok(flags) => {
                let op = MetaOp::Delete { compare: p.compare };
                self.meta_command(p, op, flags)
            }
            Err(why) => self.reply(why, false),
        }
    }

    /// `ma <key> <flags>*`.
    fn meta_arith(&self) -> Parsed {
        if let Some(parsed) = self.meta_line_checks(reply::META_TOO_MANY_FLAGS) {
            return parsed;
        }
        let Ok(p) = self.preparse(2, b"") else {
            return self.reply(reply::META_INVALID_OR_DUPLICATE_FLAG, false);
        };
        let incr = match p.mode {
            None | Some(b'I' | b'+') => true,
            Some(b'D' | b'-') => false,
            Some(_) => return self.reply(reply::META_BAD_ARITH_MODE, false),
        };
        let flags = match self.reply_flags(2, Kind::Arith, &p) {
            Ok(flags) => flags,
            Err(why) => return self.reply(why, false),
        };
        let op = MetaOp::Arith(MetaArith {
            incr,
            delta: p.delta.unwrap_or(1),
            initial: p.vivify.map(|_| p.initial),
            compare: p.compare.filter(|&cas| cas != 0),
        });
        self.meta_command(p, op, flags)
    }

    /// `me <key> [b]`: memcached reads no other flag.
    fn meta_debug(&self) -> Parsed {
        let t = self.tokens;
        if t.ntokens() < 3 || self.key_too_long() {
            return self.reply(reply::BAD_FORMAT, false);
        }
        let mut p = Preparsed {
            key: t.get(1).to_vec(),
            ..Preparsed::default()
        };
        if t.ntokens() >= 4 && t.get(2) == b"b" {
            match base64::decode(&p.key) {
                Some(key) => p.key = key,
                None => return self.reply(reply::BAD_FORMAT, false),
            }
            p.base64 = true;
        }
        self.meta_command(p, MetaOp::Debug, Vec::new())
    }

    /// `ms <key> <datalen> <flags>*` and its data block, which may have
    /// been read apart (see [`super::parse`]). An error found once the
    /// length is read swallows the data block, as in memcached.
    fn meta_set(&self) -> Result<Parsed, Incomplete> {
        if let Some(parsed) = self.meta_line_checks(reply::META_TOO_MANY_FLAGS) {
            return Ok(parsed);
        }
        let t = self.tokens;
        let length = match t.ntokens() {
            3 => None,
            _ => parse_i32_truncating(t.get(2)).and_then(|l| usize::try_from(l).ok()),
        };
        let Some(length) = length.filter(|&l| l <= i32::MAX as usize - 2) else {
            return Ok(self.reply(reply::BAD_FORMAT, false));
        };
        let swallowing = |why: &'static [u8]| {
            let mut parsed = self.reply(why, false);
            parsed.swallow = length + 2;
            parsed
        };
        let p = match self.preparse(3, b"") {
            Ok(p) => p,
            Err(why) => return Ok(swallowing(why)),
        };
        let flags = self.reply_flags(3, Kind::Set, &p);
        let mode = match p.mode {
            None | Some(b'S') => StorageMode::Set,
            Some(b'E') => StorageMode::Add,
            Some(b'A') => StorageMode::Append,
            Some(b'P') => StorageMode::Prepend,
            Some(b'R') => StorageMode::Replace,
            Some(_) => return Ok(swallowing(reply::META_BAD_SET_MODE)),
        };
        // `I` acts only on a `cas` (marking a late write stale), which mckv
        // does not implement; elsewhere memcached ignores it too.
        let cas_mode = matches!(mode, StorageMode::Set | StorageMode::Replace);
        if p.invalidate && p.compare.is_some() && cas_mode {
            return Ok(swallowing(reply::META_INVALID_FLAG));
        }
        let flags = match flags {
            Ok(flags) => flags,
            Err(why) => return Ok(swallowing(why)),
        };
        if !self.limits.item_fits(p.key.len(), p.client_flags, length) {
            let command = Command::TooLarge {
                key: p.key,
                is_set: true,
            };
            let mut parsed = self.execute(command, false);
            parsed.swallow = length + 2;
            return Ok(parsed);
        }
        let consumed = self.line_len + length + 2;
        let Ok(value) = self.value(length)? else {
            let mut parsed = self.reply(reply::BAD_DATA_CHUNK, false);
            parsed.consumed = consumed;
            return Ok(parsed);
        };
        let op = meta_set_op(&p, mode, value);
        let mut parsed = self.meta_command(p, op, flags);
        parsed.consumed = consumed;
        Ok(parsed)
    }
}

/// `ms`'s store operation: `C` makes set and replace a `cas`, is ignored
/// by add, and checks append and prepend itself.
fn meta_set_op(p: &Preparsed, mode: StorageMode, value: Vec<u8>) -> MetaOp {
    let (mode, compare) = match (mode, p.compare) {
        (StorageMode::Set | StorageMode::Replace, Some(cas)) => (StorageMode::Cas(cas), None),
        (StorageMode::Append | StorageMode::Prepend, compare) => {
            (mode, compare.filter(|&cas| cas != 0))
        }
        (mode, _) => (mode, None),
    };
    MetaOp::Set(MetaSet {
        mode,
        compare,
        flags: p.client_flags,
        exptime: p.exptime.unwrap_or(0),
        value,
    })
}
