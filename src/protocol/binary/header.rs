//! The fixed parts of memcached's binary protocol: the 24-byte header every
//! request and response starts with, the opcodes memcached 1.6 knows, and
//! the statuses it answers with (`protocol_binary.h`).
//!
//! ```text
//!  byte  0       1        2-3      4         5         6-7            8-11      12-15   16-23
//!  req   0x80    opcode   key len  extras    datatype  vbucket        body len  opaque  cas
//!  resp  0x81    opcode   key len  extras    0         status         body len  opaque  cas
//!  then the body: extras, key, value (body len counts all three)
//! ```
//!
//! Numbers are big-endian. memcached ignores the datatype and vbucket of a
//! request, and so does mckv.

use crate::protocol::Incomplete;

/// The first byte of every binary request; memcached picks the binary
/// protocol for a connection whose first byte it is.
pub const REQUEST_MAGIC: u8 = 0x80;
/// The first byte of every binary response.
pub const RESPONSE_MAGIC: u8 = 0x81;
/// The length of a request or response header.
pub const HEADER_LEN: usize = 24;

/// A request header, its numbers in host order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub magic: u8,
    pub opcode: u8,
    pub key_len: u16,
    pub extras_len: u8,
    /// Extras, key and value together.
    pub body_len: u32,
    /// Echoed in the response, so a client can match responses to requests.
    pub opaque: u32,
    pub cas: u64,
}

impl RequestHeader {
    /// The header at the start of `buf`, once all 24 bytes are there.
    pub fn read(buf: &[u8]) -> Result<RequestHeader, Incomplete> {
        let h: &[u8; HEADER_LEN] = buf
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(Incomplete)?;
        Ok(RequestHeader {
            magic: h[0],
            opcode: h[1],
            key_len: u16::from_be_bytes([h[2], h[3]]),
            extras_len: h[4],
            body_len: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            opaque: u32::from_be_bytes([h[12], h[13], h[14], h[15]]),
            cas: u64::from_be_bytes([h[16], h[17], h[18], h[19], h[20], h[21], h[22], h[23]]),
        })
    }

    /// Header, extras and key: what memcached reads before it looks at
    /// the opcode (a value, when there is one, follows).
    pub fn head_len(&self) -> usize {
        HEADER_LEN + usize::from(self.extras_len) + usize::from(self.key_len)
    }
}

/// A command memcached 1.6 knows, its quiet form folded in (see [`Opcode::of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Get,
    GetK,
    Set,
    Add,
    Replace,
    Delete,
    Increment,
    Decrement,
    Quit,
    Flush,
    Noop,
    Version,
    Append,
    Prepend,
    Stat,
    Touch,
    Gat,
    GatK,
    SaslListMechs,
    SaslAuth,
    SaslStep,
}

impl Opcode {
    /// The command `byte` names and whether it is its quiet form; `None`
    /// for a byte memcached 1.6 does not know (`verbosity`, 0x1b, among
    /// them: memcached 1.6 dropped it).
    pub fn of(byte: u8) -> Option<(Opcode, bool)> {
        use Opcode::*;
        let (opcode, quiet) = match byte {
            0x00 => (Get, false),
            0x01 => (Set, false),
            0x02 => (Add, false),
            0x03 => (Replace, false),
            0x04 => (Delete, false),
            0x05 => (Increment, false),
            0x06 => (Decrement, false),
            0x07 => (Quit, false),
            0x08 => (Flush, false),
            0x09 => (Get, true),
            0x0a => (Noop, false),
            0x0b => (Version, false),
            0x0c => (GetK, false),
            0x0d => (GetK, true),
            0x0e => (Append, false),
            0x0f => (Prepend, false),
            0x10 => (Stat, false),
            0x11 => (Set, true),
            0x12 => (Add, true),
            0x13 => (Replace, true),
            0x14 => (Delete, true),
            0x15 => (Increment, true),
            0x16 => (Decrement, true),
            0x17 => (Quit, true),
            0x18 => (Flush, true),
            0x19 => (Append, true),
            0x1a => (Prepend, true),
            0x1c => (Touch, false),
            0x1d => (Gat, false),
            0x1e => (Gat, true),
            0x20 => (SaslListMechs, false),
            0x21 => (SaslAuth, false),
            0x22 => (SaslStep, false),
            0x23 => (GatK, false),
            0x24 => (GatK, true),
            _ => return None,
        };
        Some((opcode, quiet))
    }
}

/// A response status, with memcached's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    KeyNotFound,
    KeyExists,
    TooLarge,
    InvalidArguments,
    NotStored,
    NonNumeric,
    UnknownCommand,
    OutOfMemory,
    /// The binary protocol's "internal error" (0x84), which memcached 1.6
    /// never sends: mckv's cluster and backend errors, whose text says
    /// what happened and whether the operation may have been applied.
    InternalError,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Success => 0x0000,
            Status::KeyNotFound => 0x0001,
            Status::KeyExists => 0x0002,
            Status::TooLarge => 0x0003,
            Status::InvalidArguments => 0x0004,
            Status::NotStored => 0x0005,
            Status::NonNumeric => 0x0006,
            Status::UnknownCommand => 0x0081,
            Status::OutOfMemory => 0x0082,
            Status::InternalError => 0x0084,
        }
    }

    /// Whether memcached writes out every response owed once it has
    /// answered this error: it does after an error it answers without
    /// swallowing a value (`write_bin_error` with nothing to swallow), so
    /// not after `Too large.` or `Out of memory`, whose value it swallows.
    pub fn flushes(self) -> bool {
        matches!(
            self,
            Status::KeyNotFound
                | Status::KeyExists
                | Status::InvalidArguments
                | Status::NotStored
                | Status::NonNumeric
                | Status::UnknownCommand
        )
    }

    /// memcached's text for an error response of this status
    /// (`write_bin_error`).
    pub fn text(self) -> &'static [u8] {
        match self {
            Status::Success => b"",
            Status::KeyNotFound => b"Not found",
            Status::KeyExists => b"Data exists for key.",
            Status::TooLarge => b"Too large.",
            Status::InvalidArguments => b"Invalid arguments",
            Status::NotStored => b"Not stored.",
            Status::NonNumeric => b"Non-numeric server-side value for incr or decr",
            Status::UnknownCommand => b"Unknown command",
            Status::OutOfMemory => b"Out of memory",
            Status::InternalError => b"Internal error",
        }
    }
}

/// One response: its header's variable fields and its body's parts.
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    pub status: Status,
    pub cas: u64,
    pub extras: &'a [u8],
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl Response<'_> {
    /// A response with nothing but its status.
    pub fn bare(status: Status) -> Response<'static> {
        Response {
            status,
            cas: 0,
            extras: &[],
            key: &[],
            value: &[],
        }
    }

    /// Appends the response to the request with `opcode` and `opaque`.
    pub fn write(&self, opcode: u8, opaque: u32, out: &mut Vec<u8>) {
        let body_len = self.extras.len() + self.key.len() + self.value.len();
        out.reserve(HEADER_LEN + body_len);
        out.extend_from_slice(&[RESPONSE_MAGIC, opcode]);
        // A key is at most 250 bytes and extras at most 8, so neither
        // length is ever cut.
        out.extend_from_slice(&(self.key.len() as u16).to_be_bytes());
        out.extend_from_slice(&[self.extras.len() as u8, 0]);
        out.extend_from_slice(&self.status.code().to_be_bytes());
        out.extend_from_slice(&(body_len as u32).to_be_bytes());
        out.extend_from_slice(&opaque.to_be_bytes());
        out.extend_from_slice(&self.cas.to_be_bytes());
        out.extend_from_slice(self.extras);
        out.extend_from_slice(self.key);
        out.extend_from_slice(self.value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_reads_big_endian_and_only_when_whole() {
        let bytes = [
            0x80, 0x01, 0x00, 0x03, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0xde, 0xad,
            0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0x01, 0x02,
        ];
        let header = RequestHeader::read(&bytes).unwrap();
        assert_eq!(
            header,
            RequestHeader {
                magic: 0x80,
                opcode: 0x01,
                key_len: 3,
                extras_len: 8,
                body_len: 16,
                opaque: 0xdead_beef,
                cas: 0x0102,
            }
        );
        assert_eq!(header.head_len(), 35);
        for end in 0..HEADER_LEN {
            assert_eq!(RequestHeader::read(&bytes[..end]), Err(Incomplete));
        }
    }

    #[test]
    fn quiet_opcodes_fold_into_their_command() {
        let table = [
            (0x00, Opcode::Get, false),
            (0x09, Opcode::Get, true),
            (0x0d, Opcode::GetK, true),
            (0x11, Opcode::Set, true),
            (0x17, Opcode::Quit, true),
            (0x1e, Opcode::Gat, true),
            (0x24, Opcode::GatK, true),
            (0x22, Opcode::SaslStep, false),
        ];
        for (byte, opcode, quiet) in table {
            assert_eq!(Opcode::of(byte), Some((opcode, quiet)), "{byte:#04x}");
        }
        for unknown in [0x1b, 0x1f, 0x25, 0x30, 0x50, 0xff] {
            assert_eq!(Opcode::of(unknown), None, "{unknown:#04x}");
        }
    }

    #[test]
    fn a_response_is_written_as_memcached_writes_it() {
        let mut out = Vec::new();
        let response = Response {
            status: Status::Success,
            cas: 112,
            extras: &5u32.to_be_bytes(),
            key: b"k1",
            value: b"hello",
        };
        response.write(0x0c, 0xdead_beef, &mut out);
        // memcached 1.6.18's answer to a `getk k1` of a value `hello`, flags 5.
        let memcached = "810c0002040000000000000bdeadbeef0000000000000070\
                         000000056b3168656c6c6f";
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, memcached);
    }
}
