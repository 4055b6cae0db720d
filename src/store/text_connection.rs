//! A plain connection to a memcached in its text protocol, for what the
//! `memcache` crate cannot say: listing every item memcached holds
//! (`lru_crawler metadump hash`), deleting keys given as bytes, and storing
//! many items pipelined (the crate waits for each reply before the next
//! request). The memcache store opens one on the backend worker thread for
//! a snapshot's listing, a reset or a chunk's install, and drops it after.
//!
//! ```text
//! lru_crawler metadump hash\r\n
//!                   key=a%25b exp=-1 la=1700000000 cas=1 fetch=no cls=1 size=65\n
//!                   key=%D0%BA exp=1700003600 la=... size=90\n   (more fields later)
//!                   END\r\n
//! ```
//!
//! `hash` walks memcached's hash table (memcached 1.6.9 and later): unlike
//! a walk of its LRUs (`all`), it cannot miss an item that memcached's LRU
//! maintainer moves between queues during the walk. Keys are url-encoded
//! (every byte but letters, digits and `-._~` as `%XX`). memcached lists
//! neither expired items nor ones its `flush_all` hides (see
//! [`super::memcache`] on why a reset unhides them first). Its crawler runs
//! one walk at a time and answers `BUSY` while another (its own periodic
//! walk for expired items) runs: the listing asks again until the timeout.
//!
//! Errors come back as the crate's [`MemcacheError`] so the store maps them
//! as it maps the crate's: an I/O error, a timeout or a line the protocol
//! does not allow there (`ServerError::BadResponse`) is a transport failure;
//! a refusal memcached states (its crawler disabled, dumping disabled) is
//! not.

use std::borrow::Cow;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use memcache::{MemcacheError, ServerError};

use crate::protocol::{Key, Limits};

/// The longest line read: a metadump line has a 250-byte key encoded in at
/// most 750 bytes, and memcached writes each into a 4 KB buffer.
const MAX_LINE: usize = 4096;

/// The pause before asking a busy crawler again.
const BUSY_PAUSE: Duration = Duration::from_millis(10);

/// Keys deleted per round trip.
const DELETE_BATCH: usize = 100;

/// Items stored per round trip, at most; and a round trip sends no more
/// bytes than this past its first item.
const SET_BATCH: usize = 100;
const SET_BATCH_BYTES: usize = 256 * 1024;

/// An item to `set` as it is: its key (one the text protocol can carry),
/// flags, memcached `exptime`, and its bytes in pieces.
pub struct Setting<'a> {
    pub key: &'a [u8],
    pub flags: u32,
    pub exptime: u32,
    pub pieces: [&'a [u8]; 2],
}

/// An item as `lru_crawler metadump` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedItem {
    pub key: Key,
    /// memcached's whole item size: its item header, the key, the value
    /// (with its `\r\n`), the cas field, and 4 bytes for nonzero flags.
    pub size: u64,
    /// The item's flags, which memcached lists from 1.6.24 on.
    pub flags: Option<u32>,
}

/// A connection for one listing or reset, dropped after it.
pub struct TextConnection {
    stream: BufReader<TcpStream>,
    timeout: Duration,
}

type Answer<T> = Result<T, MemcacheError>;

impl TextConnection {
    /// Connects to `addr` (`host:port`); `timeout` bounds the connect and
    /// every read and write.
    pub fn open(addr: &str, timeout: Duration) -> Answer<TextConnection> {
        let mut failed = io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address"));
        for address in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&address, timeout) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(timeout))?;
                    stream.set_write_timeout(Some(timeout))?;
                    stream.set_nodelay(true)?;
                    let stream = BufReader::new(stream);
                    return Ok(TextConnection { stream, timeout });
                }
                Err(e) => failed = e,
            }
        }
        Err(failed.into())
    }

    /// Every item memcached lists: live by its own clock and not hidden by
    /// a `flush_all`.
    pub fn list_items(&mut self) -> Answer<Vec<DumpedItem>> {
        let give_up = Instant::now() + self.timeout;
        loop {
            self.send(b"lru_crawler metadump hash\r\n")?;
            let first = self.read_line()?;
            if first.starts_with(b"BUSY") && Instant::now() < give_up {
                std::thread::sleep(BUSY_PAUSE);
                continue;
            }
            return match first.starts_with(b"key=") || first == b"END" {
                true => self.read_items(first),
                false => Err(cannot_list(&first)),
            };
        }
    }

    /// The metadump lines from `line` on, up to `END`.
    fn read_items(&mut self, mut line: Vec<u8>) -> Answer<Vec<DumpedItem>> {
        let mut items = Vec::new();
        while line != b"END" {
            let item = parse_item(&line).ok_or_else(|| unexpected(&line))?;
            if !is_text_key(&item.key) {
                return Err(ServerError::Error(format!(
                    "memcached holds key {:?}, which the text protocol cannot name \
                     (another client stored it)",
                    String::from_utf8_lossy(&item.key)
                ))
                .into());
            }
            items.push(item);
            line = self.read_line()?;
        }
        Ok(items)
    }

    /// Deletes each of `keys` (each one a key [`TextConnection::list_items`]
    /// gave), whether or not it is still there.
    pub fn delete_each(&mut self, keys: &[Key]) -> Answer<()> {
        for batch in keys.chunks(DELETE_BATCH) {
            let mut requests = Vec::new();
            for key in batch {
                requests.extend_from_slice(b"delete ");
                requests.extend_from_slice(key);
                requests.extend_from_slice(b"\r\n");
            }
            self.send(&requests)?;
            for _ in batch {
                let reply = self.read_line()?;
                if reply != b"DELETED" && reply != b"NOT_FOUND" {
                    return Err(unexpected(&reply));
                }
            }
        }
        Ok(())
    }

    /// Stores each of `items` with `set`, a batch to a round trip.
    pub fn set_each(&mut self, items: &[Setting<'_>]) -> Answer<()> {
        let mut requests = Vec::new();
        let mut rest = items;
        while !rest.is_empty() {
            requests.clear();
            let mut sent = 0;
            for item in rest.iter().take(SET_BATCH) {
                if sent > 0 && requests.len() >= SET_BATCH_BYTES {
                    break;
                }
                let len: usize = item.pieces.iter().map(|p| p.len()).sum();
                requests.extend_from_slice(b"set ");
                requests.extend_from_slice(item.key);
                let fields = format!(" {} {} {len}\r\n", item.flags, item.exptime);
                requests.extend_from_slice(fields.as_bytes());
                item.pieces
                    .iter()
                    .for_each(|p| requests.extend_from_slice(p));
                requests.extend_from_slice(b"\r\n");
                sent += 1;
            }
            self.send(&requests)?;
            for _ in 0..sent {
                match self.read_line()? {
                    stored if stored == b"STORED" => {}
                    refused if is_refusal(&refused) => {
                        return Err(ServerError::Error(text(&refused)).into())
                    }
                    other => return Err(unexpected(&other)),
                }
            }
            rest = &rest[sent..];
        }
        Ok(())
    }

    /// Sends one command that memcached answers `OK`.
    pub fn expect_ok(&mut self, command: &str) -> Answer<()> {
        self.send(format!("{command}\r\n").as_bytes())?;
        match self.read_line()? {
            ok if ok == b"OK" => Ok(()),
            refused if is_refusal(&refused) => Err(ServerError::Error(text(&refused)).into()),
            other => Err(unexpected(&other)),
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Answer<()> {
        Ok(self.stream.get_mut().write_all(bytes)?)
    }

    /// One line without its `\n` or `\r\n` (metadump ends its item lines
    /// with a bare `\n`, everything else with `\r\n`).
    fn read_line(&mut self) -> Answer<Vec<u8>> {
        let mut line = Vec::new();
        let limit = MAX_LINE as u64;
        let read = (&mut self.stream)
            .take(limit)
            .read_until(b'\n', &mut line)?;
        if line.pop() != Some(b'\n') {
            return Err(match read as u64 == limit {
                true => unexpected(&line),
                false => io::Error::from(io::ErrorKind::UnexpectedEof).into(),
            });
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(line)
    }
}

/// One metadump line: `key=<url-encoded>` and `size=<n>` among
/// space-separated `name=value` fields; `None` if it is not one.
pub fn parse_item(line: &[u8]) -> Option<DumpedItem> {
    let (mut key, mut size, mut flags) = (None, None, None);
    for field in line.split(|&b| b == b' ').filter(|f| !f.is_empty()) {
        let at = field.iter().position(|&b| b == b'=')?;
        let (name, value) = (&field[..at], &field[at + 1..]);
        match name {
            b"key" => key = Some(url_decode(value)?),
            b"size" => size = Some(std::str::from_utf8(value).ok()?.parse().ok()?),
            b"flags" => flags = Some(std::str::from_utf8(value).ok()?.parse().ok()?),
            _ => {}
        }
    }
    Some(DumpedItem {
        key: key?,
        size: size?,
        flags,
    })
}

/// memcached's `uriencode` undone: `%XX` is the byte `0xXX`, every other
/// byte stands for itself; `None` for a `%` without two hex digits.
pub fn url_decode(encoded: &[u8]) -> Option<Key> {
    let mut decoded = Vec::with_capacity(encoded.len());
    let mut bytes = encoded.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'%' => {
                let high = hex_digit(*bytes.next()?)?;
                let low = hex_digit(*bytes.next()?)?;
                decoded.push(high << 4 | low);
            }
            b => decoded.push(b),
        }
    }
    Some(decoded)
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Whether a text command can carry `key`: memcached splits commands at
/// spaces and ends them at a newline, but a client of its binary protocol
/// may have stored any bytes.
fn is_text_key(key: &[u8]) -> bool {
    !key.is_empty()
        && key.len() <= Limits::MAX_KEY_LEN
        && !key.contains(&b' ')
        && !key.contains(&b'\n')
}

/// A reply memcached gives to refuse a command: `ERROR`, `CLIENT_ERROR ...`,
/// `SERVER_ERROR ...`.
fn is_refusal(line: &[u8]) -> bool {
    line.starts_with(b"ERROR")
        || line.starts_with(b"CLIENT_ERROR ")
        || line.starts_with(b"SERVER_ERROR ")
}

/// memcached answered a metadump with something other than items: the
/// crawler disabled (`-o no_lru_crawler`), dumping disabled (`-X`), a
/// memcached before 1.6.9 that knows no `hash` walk (`BADCLASS`), or its
/// crawler busy past the timeout.
fn cannot_list(first: &[u8]) -> MemcacheError {
    let why = match first.starts_with(b"BUSY") {
        true => "memcached's LRU crawler stayed busy with another walk".to_string(),
        false => text(first),
    };
    ServerError::Error(format!(
        "memcached cannot list its keys (lru_crawler metadump hash, memcached 1.6.9 or later \
         with its LRU crawler on): {why}"
    ))
    .into()
}

fn unexpected(line: &[u8]) -> MemcacheError {
    ServerError::BadResponse(Cow::Owned(text(line))).into()
}

fn text(line: &[u8]) -> String {
    String::from_utf8_lossy(line).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadump_lines_parse_with_their_keys_decoded() {
        let item = |key: &[u8], size, flags| {
            Some(DumpedItem {
                key: key.to_vec(),
                size,
                flags,
            })
        };
        let table: &[(&[u8], Option<DumpedItem>)] = &[
            (
                b"key=a%25b exp=-1 la=1796186660 cas=1 fetch=no cls=1 size=65",
                item(b"a%b", 65, None),
            ),
            (
                b"key=%D0%BA%d0%bb exp=1796186760 la=1 cas=2 fetch=yes cls=1 size=90",
                item("кл".as_bytes(), 90, None),
            ),
            // Newer memcacheds add fields, flags among them, and a trailing space.
            (
                b"key=t%09ab exp=-1 la=1 cas=4 fetch=no cls=1 size=64 flags=5 ext_page=2 ",
                item(b"t\tab", 64, Some(5)),
            ),
            (b"key=+~._- size=1", item(b"+~._-", 1, None)),
            (b"key=a%2 size=70", None),
            (b"key=a%zz size=70", None),
            (b"key=a exp=-1", None),
            (b"size=70", None),
            (b"key=a size=-1", None),
            (b"key=a size=70 flags=x", None),
            (b"key=a size=70 junk", None),
            (b"", None),
        ];
        for (line, want) in table {
            assert_eq!(
                &parse_item(line),
                want,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn every_byte_survives_memcacheds_url_encoding() {
        let all: Vec<u8> = (0..=255).collect();
        let encoded: Vec<u8> = all
            .iter()
            .flat_map(
                |&b| match b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    true => vec![b],
                    false => format!("%{b:02X}").into_bytes(),
                },
            )
            .collect();
        assert_eq!(url_decode(&encoded), Some(all));
        assert_eq!(url_decode(b"%"), None);
        assert_eq!(url_decode(b"%4"), None);
    }

    #[test]
    fn only_keys_a_text_command_can_carry_are_deletable() {
        assert!(is_text_key(b"a\tb"));
        assert!(is_text_key(&[b'k'; Limits::MAX_KEY_LEN]));
        assert!(!is_text_key(b""));
        assert!(!is_text_key(b"a b"));
        assert!(!is_text_key(b"a\r\nb"));
        assert!(!is_text_key(&[b'k'; Limits::MAX_KEY_LEN + 1]));
    }
}
