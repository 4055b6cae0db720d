//! Reply composition: memcached's reply strings and the writers that append a
//! reply to a connection's output buffer (no allocation beyond its growth).

use std::io::Write;

pub const ERROR: &[u8] = b"ERROR\r\n";
pub const STORED: &[u8] = b"STORED\r\n";
pub const NOT_STORED: &[u8] = b"NOT_STORED\r\n";
pub const EXISTS: &[u8] = b"EXISTS\r\n";
pub const NOT_FOUND: &[u8] = b"NOT_FOUND\r\n";
pub const DELETED: &[u8] = b"DELETED\r\n";
pub const TOUCHED: &[u8] = b"TOUCHED\r\n";
pub const OK: &[u8] = b"OK\r\n";
pub const RESET: &[u8] = b"RESET\r\n";
pub const END: &[u8] = b"END\r\n";
pub const BAD_FORMAT: &[u8] = b"CLIENT_ERROR bad command line format\r\n";
pub const BAD_DATA_CHUNK: &[u8] = b"CLIENT_ERROR bad data chunk\r\n";
pub const INVALID_EXPTIME: &[u8] = b"CLIENT_ERROR invalid exptime argument\r\n";
pub const INVALID_DELTA: &[u8] = b"CLIENT_ERROR invalid numeric delta argument\r\n";
pub const NON_NUMERIC: &[u8] = b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n";
pub const DELETE_USAGE: &[u8] =
    b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n";
pub const TOO_LARGE: &[u8] = b"SERVER_ERROR object too large for cache\r\n";
pub const OUT_OF_MEMORY: &[u8] = b"SERVER_ERROR out of memory storing object\r\n";
/// What memcached writes to a connection over its `-c` limit before closing it.
pub const TOO_MANY_CONNECTIONS: &[u8] = b"ERROR Too many open connections\r\n";
pub const SHUTDOWN_DISABLED: &[u8] = b"ERROR: shutdown not enabled\r\n";
pub const BAD_COMMAND_LINE: &[u8] = b"CLIENT_ERROR bad command line\r\n";
pub const ILLEGAL_SLAB_ID: &[u8] = b"CLIENT_ERROR Illegal slab id\r\n";
pub const DETAIL_USAGE: &[u8] = b"CLIENT_ERROR usage: stats detail on|off|dump\r\n";
pub const MEMLIMIT_TOO_SMALL: &[u8] = b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n";
pub const MEMLIMIT_NOT_BYTES: &[u8] =
    b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes\r\n";
pub const MEMLIMIT_ADJUST_FAILED: &[u8] =
    b"MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust\r\n";
pub const REASSIGN_SAME: &[u8] = b"SAME src and dst class are identical\r\n";
pub const REASSIGN_BAD_CLASS: &[u8] = b"BADCLASS invalid src or dst class id\r\n";
pub const MN: &[u8] = b"MN\r\n";
pub const META_TOO_MANY_FLAGS_MG: &[u8] = b"CLIENT_ERROR options flags are too long\r\n";
pub const META_TOO_MANY_FLAGS: &[u8] = b"CLIENT_ERROR options flags too long\r\n";
pub const META_DUPLICATE_FLAG: &[u8] = b"CLIENT_ERROR duplicate flag\r\n";
pub const META_INVALID_FLAG: &[u8] = b"CLIENT_ERROR invalid flag\r\n";
pub const META_INVALID_OR_DUPLICATE_FLAG: &[u8] = b"CLIENT_ERROR invalid or duplicate flag\r\n";
pub const META_BAD_KEY_ENCODING: &[u8] = b"CLIENT_ERROR error decoding key\r\n";
pub const META_BAD_TOKEN: &[u8] = b"CLIENT_ERROR bad token in command line format\r\n";
pub const META_BAD_MODE_LENGTH: &[u8] = b"CLIENT_ERROR incorrect length for M token\r\n";
pub const META_BAD_INITIAL: &[u8] = b"CLIENT_ERROR invalid numeric initial value\r\n";
pub const META_BAD_DELTA: &[u8] = b"CLIENT_ERROR invalid numeric delta value\r\n";
pub const META_OPAQUE_TOO_LONG: &[u8] = b"CLIENT_ERROR opaque token too long\r\n";
pub const META_BAD_SET_MODE: &[u8] = b"CLIENT_ERROR invalid mode for ms M token\r\n";
pub const META_BAD_ARITH_MODE: &[u8] = b"CLIENT_ERROR invalid mode for ma M token\r\n";
pub const REASSIGN_NO_SPARE: &[u8] = b"NOSPARE source class has no spare pages\r\n";

/// The version `version` and `stats` report: the memcached protocol level
/// mckv implements, so clients that parse it (node's `memcached` reads
/// `major.minor.patch` from the front) see a memcached 1.6. mckv's own
/// version is `stats`' `mckv_version`.
pub const VERSION: &str = "1.6.0";

/// mckv's own version, reported as `stats`' `mckv_version`.
pub const MCKV_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Appends `VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>\r\n`.
pub fn value(out: &mut Vec<u8>, key: &[u8], flags: u32, data: &[u8], cas: Option<u64>) {
    // One reservation for the whole reply: the header's numbers take at
    // most 10 + 20 + 20 digits.
    out.reserve(key.len() + data.len() + 64);
    out.extend_from_slice(b"VALUE ");
    out.extend_from_slice(key);
    out.push(b' ');
    decimal(out, u64::from(flags));
    out.push(b' ');
    decimal(out, data.len() as u64);
    if let Some(cas) = cas {
        out.push(b' ');
        decimal(out, cas);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends the new value of an `incr`/`decr`.
pub fn number(out: &mut Vec<u8>, n: u64) {
    decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal. The replies on the hot path use this rather than
/// `write!`, whose formatting machinery cost more than the rest of a `get`.
pub fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Appends `STAT <name> <value>\r\n`.
pub fn stat(out: &mut Vec<u8>, name: &str, value: impl std::fmt::Display) {
    let _ = write!(out, "STAT {name} {value}\r\n");
}

/// Appends memcached's `stats detail dump` line for one key prefix:
/// `PREFIX <prefix> get <n> hit <n> set <n> del <n>\r\n`.
pub fn prefix_counts(out: &mut Vec<u8>, prefix: &[u8], [gets, hits, sets, deletes]: [u64; 4]) {
    out.extend_from_slice(b"PREFIX ");
    out.extend_from_slice(prefix);
    let _ = write!(out, " get {gets} hit {hits} set {sets} del {deletes}\r\n");
}

/// Appends `SERVER_ERROR <why>\r\n`.
pub fn server_error(out: &mut Vec<u8>, why: &str) {
    let _ = write!(out, "SERVER_ERROR {why}\r\n");
}

/// Appends `VERSION <version>\r\n`.
pub fn version(out: &mut Vec<u8>) {
    let _ = write!(out, "VERSION {VERSION}\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_lines_match_memcached() {
        let mut out = Vec::new();
        value(&mut out, b"k", 5, b"abc", None);
        value(&mut out, b"k", 0, b"", Some(9));
        assert_eq!(out, b"VALUE k 5 3\r\nabc\r\nVALUE k 0 0 9\r\n\r\n");
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0, 7, 10, 99, 100, 4_294_967_295, u64::MAX] {
            let mut out = Vec::new();
            number(&mut out, n);
            assert_eq!(out, format!("{n}\r\n").as_bytes());
        }
        let mut out = Vec::new();
        value(&mut out, b"key", u32::MAX, &[b'x'; 12], Some(u64::MAX));
        let header = format!("VALUE key {} 12 {}\r\n", u32::MAX, u64::MAX);
        assert!(out.starts_with(header.as_bytes()));
    }
}
