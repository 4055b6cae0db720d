//! Writes binary responses: a data command's text reply (the meta reply of
//! the command it became, see [`super::request`]) re-encoded as memcached
//! 1.6.18's `proto_bin.c` answers the binary request, and the responses
//! the node gives itself (errors, `noop`, `version`, `stat`, `quit`).
//!
//! ```text
//!  reply of                 text reply                   binary response
//!  get getk gat gatk        VA <n> f<flags> c<cas> data  flags, [key,] value, cas
//!                           EN                           Not found ([key] for getk/gatk)
//!  touch                    HD f<flags> c<cas>           flags, cas
//!  set add replace ...      HD c<cas> | NS | EX | NF     cas | Not stored / exists / not found
//!  delete                   HD | NF | EX                 - | Not found | Data exists
//!  incr decr                VA <n> c<cas> digits         the number (8 bytes), cas
//!  flush                    OK                           -
//!  any                      SERVER_ERROR <why>           Too large., Out of memory, or
//!                                                        0x84 "internal error" with <why>
//! ```
//!
//! Quiet forms leave out what memcached leaves out: a miss of `getq`,
//! `getkq`, `gatq`, `gatkq`, and the success of every other quiet command;
//! an error is always written.

use super::header::{RequestHeader, Response, Status};
use crate::protocol::number::parse_u64;
use crate::protocol::reply;

/// Which text reply a response is made from, and how it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// `mg` of get, getk, gat, gatk (`value`), and of touch.
    Item { value: bool },
    /// `ms` of a storage command; `NS` means `not_stored` (add: the key
    /// exists; replace: it does not; append, prepend: not stored).
    Stored { not_stored: Status },
    /// `md`.
    Deleted,
    /// `ma`.
    Counter,
    /// `flush_all`.
    Flushed,
    /// `version`.
    Version,
    /// `stats` and its groups; `dump` for `stats detail dump`, whose text
    /// memcached sends whole as one `detailed` stat.
    Stats { dump: bool },
    /// Nothing to read: `noop`, `quit`, and requests refused at once.
    Empty,
}

/// What a response needs from its request: opcode, opaque, the key for
/// getk and gatk, whether it is quiet, and how its reply reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Responder {
    /// As sent: a quiet opcode is answered with itself.
    opcode: u8,
    opaque: u32,
    reply: Reply,
    quiet: bool,
    /// The key, for a getk or gatk (empty otherwise).
    key: Vec<u8>,
}

impl Responder {
    pub(super) fn new(header: &RequestHeader, reply: Reply, quiet: bool) -> Responder {
        Responder {
            opcode: header.opcode,
            opaque: header.opaque,
            reply,
            quiet,
            key: Vec::new(),
        }
    }

    /// getk and gatk return the key, with a hit and with a miss.
    pub(super) fn return_key(&mut self, key: &[u8]) {
        self.key = key.to_vec();
    }

    pub fn reply(&self) -> Reply {
        self.reply
    }

    /// Appends the response to a request whose (text) reply is `text`;
    /// returns whether memcached writes out every response owed once it
    /// has answered this one (see [`Status::flushes`]).
    pub fn respond(&self, text: &[u8], out: &mut Vec<u8>) -> bool {
        let (line, rest) = first_line(text);
        let code = line.split(|&b| b == b' ').next().unwrap_or_default();
        match (self.reply, code) {
            (Reply::Item { value }, b"VA" | b"HD") => self.item(line, rest, value, out),
            (Reply::Item { .. }, b"EN") => self.miss(out),
            (Reply::Stored { .. }, b"HD") => {
                let cas = flag(line, b'c').unwrap_or(0);
                self.success(Response::with_cas(cas), out)
            }
            (Reply::Stored { not_stored }, b"NS") => self.refused(not_stored, out),
            (Reply::Deleted, b"HD") | (Reply::Flushed, b"OK") | (Reply::Empty, _) => {
                self.success(Response::bare(Status::Success), out)
            }
            (Reply::Counter, b"VA") => self.counter(line, rest, out),
            (Reply::Counter, b"NS") => self.refused(Status::NotStored, out),
            (Reply::Stored { .. } | Reply::Deleted | Reply::Counter, b"EX") => {
                self.refused(Status::KeyExists, out)
            }
            (Reply::Stored { .. } | Reply::Deleted | Reply::Counter, b"NF") => {
                self.refused(Status::KeyNotFound, out)
            }
            (Reply::Version, b"VERSION") => {
                let version = &line[b"VERSION ".len().min(line.len())..];
                self.success(Response::value(version), out)
            }
            (Reply::Stats { dump }, _) => self.stats(text, dump, out),
            _ => self.failed(text, out),
        }
    }

    /// Appends an error response of `status` with memcached's text for it.
    pub fn refuse(&self, status: Status, out: &mut Vec<u8>) {
        self.refused(status, out);
    }

    /// [`Responder::refuse`], and whether memcached writes out after it.
    fn refused(&self, status: Status, out: &mut Vec<u8>) -> bool {
        self.error(status, status.text(), out)
    }

    fn error(&self, status: Status, text: &[u8], out: &mut Vec<u8>) -> bool {
        let response = Response {
            value: text,
            ..Response::bare(status)
        };
        response.write(self.opcode, self.opaque, out);
        status.flushes()
    }

    /// A success: the quiet forms of all but the retrievals leave it out.
    fn success(&self, response: Response<'_>, out: &mut Vec<u8>) -> bool {
        let retrieval = matches!(self.reply, Reply::Item { .. });
        if retrieval || !self.quiet {
            response.write(self.opcode, self.opaque, out);
        }
        false
    }

    /// A retrieval found nothing: silent when quiet; getk and gatk return
    /// the key (and no text), which memcached does not write out at once.
    fn miss(&self, out: &mut Vec<u8>) -> bool {
        if self.quiet {
            return false;
        }
        if self.key.is_empty() {
            return self.refused(Status::KeyNotFound, out);
        }
        let response = Response {
            key: &self.key,
            ..Response::bare(Status::KeyNotFound)
        };
        response.write(self.opcode, self.opaque, out);
        false
    }

    /// `VA <len> f<flags> c<cas>` and the value, or touch's `HD f c`.
    fn item(&self, line: &[u8], rest: &[u8], value: bool, out: &mut Vec<u8>) -> bool {
        let data = match value {
            true => match value_block(line, rest) {
                Some(data) => data,
                None => return self.failed(line, out),
            },
            false => &[],
        };
        let flags = flag(line, b'f').unwrap_or(0) as u32;
        let response = Response {
            status: Status::Success,
            cas: flag(line, b'c').unwrap_or(0),
            extras: &flags.to_be_bytes(),
            key: &self.key,
            value: data,
        };
        self.success(response, out)
    }

    /// `VA <len> c<cas>` and the number's digits: the number in 8 bytes.
    fn counter(&self, line: &[u8], rest: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(number) = value_block(line, rest).and_then(parse_u64) else {
            return self.failed(line, out);
        };
        let response = Response {
            value: &number.to_be_bytes(),
            ..Response::with_cas(flag(line, b'c').unwrap_or(0))
        };
        self.success(response, out)
    }

    /// One response per `STAT <name> <value>` line (or the whole `detail
    /// dump` text as `detailed`), then an empty one that ends the list.
    fn stats(&self, text: &[u8], dump: bool, out: &mut Vec<u8>) -> bool {
        if dump {
            let detailed = Response {
                key: b"detailed",
                value: text,
                ..Response::bare(Status::Success)
            };
            detailed.write(self.opcode, self.opaque, out);
        } else {
            for line in text.split(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let Some(stat) = line.strip_prefix(b"STAT ") else {
                    continue;
                };
                let at = stat.iter().position(|&b| b == b' ').unwrap_or(stat.len());
                let value = stat.get(at + 1..).unwrap_or_default();
                let response = Response {
                    key: &stat[..at],
                    value,
                    ..Response::bare(Status::Success)
                };
                response.write(self.opcode, self.opaque, out);
            }
        }
        Response::bare(Status::Success).write(self.opcode, self.opaque, out);
        false
    }

    /// Any other reply: an error. memcached's own store errors keep their
    /// status and text; the node's (`SERVER_ERROR no quorum`, a timeout, a
    /// backend error) are an internal error that says what it said.
    fn failed(&self, text: &[u8], out: &mut Vec<u8>) -> bool {
        if text.starts_with(reply::TOO_LARGE) {
            return self.refused(Status::TooLarge, out);
        }
        if text.starts_with(reply::NON_NUMERIC) {
            return self.refused(Status::NonNumeric, out);
        }
        if text.starts_with(reply::OUT_OF_MEMORY) {
            let why: &[u8] = match self.reply {
                Reply::Stored { .. } => b"Out of memory allocating item",
                Reply::Counter => b"Out of memory incrementing value",
                _ => Status::OutOfMemory.text(),
            };
            return self.error(Status::OutOfMemory, why, out);
        }
        let (line, _) = first_line(text);
        let why = line.strip_prefix(b"SERVER_ERROR ").unwrap_or(line);
        self.error(Status::InternalError, why, out)
    }
}

impl Response<'_> {
    /// A success carrying only the item's new cas unique.
    fn with_cas(cas: u64) -> Response<'static> {
        Response {
            cas,
            ..Response::bare(Status::Success)
        }
    }

    /// A success carrying only `value`.
    fn value(value: &[u8]) -> Response<'_> {
        Response {
            value,
            ..Response::bare(Status::Success)
        }
    }
}

/// The first line of a text reply (without its `\r\n`) and what follows it.
fn first_line(text: &[u8]) -> (&[u8], &[u8]) {
    match memchr::memchr(b'\n', text) {
        Some(end) => {
            let line = &text[..end];
            (line.strip_suffix(b"\r").unwrap_or(line), &text[end + 1..])
        }
        None => (text, &[]),
    }
}

/// The number of the meta flag `letter` on a reply line (after its code).
fn flag(line: &[u8], letter: u8) -> Option<u64> {
    line.split(|&b| b == b' ')
        .skip(1)
        .find_map(|token| token.strip_prefix(&[letter]))
        .and_then(parse_u64)
}

/// The data block a `VA <len>` line announces, from the bytes after it.
fn value_block<'a>(line: &[u8], rest: &'a [u8]) -> Option<&'a [u8]> {
    let len = line.split(|&b| b == b' ').nth(1).and_then(parse_u64)?;
    rest.get(..usize::try_from(len).ok()?)
}
