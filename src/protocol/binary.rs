//! memcached's binary protocol, as far as mckv speaks it: not at all, but
//! without leaving a binary client waiting. memcached reads the first byte
//! of a connection to choose its protocol; a connection that opens with the
//! binary request magic gets, for its first request, the response memcached
//! gives to a command it does not know, and is then closed, so a binary
//! client (`memccapable -b`, memjs, Java binary clients) fails at once
//! instead of waiting for a text reply that never comes.
//!
//! ```text
//!  request header (24 bytes): magic 0x80 | opcode | key len (2) | extras len | data type
//!                             | vbucket (2) | body len (4) | opaque (4) | cas (8)
//!  response: magic 0x81 | the opcode | 0 | 0 | 0 | status 0x0081 | body len 15
//!            | the opaque | cas 0 | "Unknown command"
//! ```

use super::Incomplete;

/// The first byte of every binary request.
pub const REQUEST_MAGIC: u8 = 0x80;
const RESPONSE_MAGIC: u8 = 0x81;
const HEADER_LEN: usize = 24;
/// memcached's status for an unknown command.
const UNKNOWN_COMMAND: u16 = 0x0081;
const UNKNOWN_COMMAND_TEXT: &[u8] = b"Unknown command";

/// Appends memcached's "unknown command" response to the binary request
/// whose header starts `buf` (`Incomplete` until the whole header is in).
pub fn unknown_command(buf: &[u8], out: &mut Vec<u8>) -> Result<(), Incomplete> {
    let header = buf.get(..HEADER_LEN).ok_or(Incomplete)?;
    let (opcode, opaque) = (header[1], &header[12..16]);
    out.extend_from_slice(&[RESPONSE_MAGIC, opcode, 0, 0, 0, 0]);
    out.extend_from_slice(&UNKNOWN_COMMAND.to_be_bytes());
    out.extend_from_slice(&(UNKNOWN_COMMAND_TEXT.len() as u32).to_be_bytes());
    out.extend_from_slice(opaque);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(UNKNOWN_COMMAND_TEXT);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binary request header: `get` of a one-byte key, opaque 0x11223344.
    fn get_header(opcode: u8) -> Vec<u8> {
        let mut h = vec![REQUEST_MAGIC, opcode, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        h.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
        h.extend_from_slice(&[0; 8]);
        h.push(b'k');
        h
    }

    #[test]
    fn the_answer_is_memcacheds_unknown_command_with_the_opcode_and_opaque() {
        let mut out = Vec::new();
        assert_eq!(unknown_command(&get_header(0x50), &mut out), Ok(()));
        // What memcached 1.6.18 answers to opcode 0x50 with that opaque.
        let memcached =
            "81500000000000810000000f112233440000000000000000556e6b6e6f776e20636f6d6d616e64";
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, memcached);
    }

    #[test]
    fn every_strict_prefix_of_the_header_is_incomplete() {
        let header = get_header(0);
        for end in 0..HEADER_LEN {
            assert_eq!(
                unknown_command(&header[..end], &mut Vec::new()),
                Err(Incomplete)
            );
        }
    }
}
