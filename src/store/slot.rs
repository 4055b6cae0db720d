//! How the embedded store holds one item: header, key and value in one heap
//! allocation of exactly their size, so an item costs one malloc chunk and
//! the 16-byte pointer that owns it, where separate key and value vectors
//! cost two chunks and 48 bytes of vector headers.
//!
//! ```text
//!  0        8      12      16          20      21     22        22+k
//!  | cas    | flags | expiry | stored_at | k=len | bits | key ... | value ... |
//!    u64 le   u32     u32      u32         u8      u8
//! ```
//!
//! Times are seconds since the epoch in 32 bits (memcached's `rel_time_t`
//! is 32 bits too, counted from its start): good until 2106, and no exptime a client can send
//! reaches past that; a later time is held as the last one that fits. The
//! bits are [`FETCHED`], [`REFERENCED`] and [`NEVER`] (no expiry). The value's
//! length is what the allocation has left after the header and the key.

use super::{Expiry, ItemRef, UnixTime};

const CAS: usize = 0;
const FLAGS: usize = 8;
const EXPIRY: usize = 12;
const STORED_AT: usize = 16;
const KEY_LEN: usize = 20;
const BITS: usize = 21;
/// Bytes before the key.
pub const HEADER: usize = 22;

/// A `get`, `gat` or `touch` found it (memcached's `ITEM_FETCHED`).
const FETCHED: u8 = 1;
/// Used since the eviction clock last passed it.
const REFERENCED: u8 = 2;
/// It never expires (the expiry field is then 0).
const NEVER: u8 = 4;

/// What one item costs in memory, with its key and value, for a store on
/// glibc's malloc: the header; malloc's chunk (the size plus 8 bytes,
/// rounded up to 16, at least 32); the slot's 16-byte pointer and 4-byte
/// hash in the dense table's vectors; and 8 bytes for its share of the
/// hash index (a 4-byte position and a control byte per bucket, 7/16 to
/// 7/8 of them used: 5.7 to 11.4 bytes an item). What is left out: the
/// vectors' spare room (at most a quarter of 20 bytes an item) and
/// malloc's fragmentation when items of other sizes replace freed ones.
pub fn cost(key_len: usize, value_len: usize) -> u64 {
    malloc_chunk(HEADER + key_len + value_len) + PER_ITEM_TABLE
}

/// The table's bytes per item that [`cost`] charges: pointer, hash, index share.
const PER_ITEM_TABLE: u64 = 16 + 4 + 8;

/// The bytes glibc's malloc takes for a request of `size` bytes.
pub fn malloc_chunk(size: usize) -> u64 {
    ((size as u64 + 8 + 15) & !15).max(32)
}

fn time32(t: UnixTime) -> u32 {
    u32::try_from(t).unwrap_or(u32::MAX)
}

/// One item: see the module doc.
#[derive(Clone, PartialEq, Eq)]
pub struct Slot(Box<[u8]>);

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("key", &String::from_utf8_lossy(self.key()))
            .field("value_len", &self.value().len())
            .field("cas", &self.cas())
            .finish()
    }
}

/// The fields of an item besides its key and value.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub flags: u32,
    pub cas: u64,
    pub expiry: Expiry,
    pub stored_at: UnixTime,
}

impl Slot {
    /// A slot for `key` and `value`, with neither bit set. Keys are at most
    /// 250 bytes (the protocol's limit), so their length takes a byte.
    pub fn new(key: &[u8], value: &[u8], meta: Meta) -> Slot {
        let key_len = u8::try_from(key.len()).expect("keys are at most 250 bytes");
        let mut bytes = Vec::with_capacity(HEADER + key.len() + value.len());
        bytes.resize(HEADER, 0);
        bytes[KEY_LEN] = key_len;
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
        let mut slot = Slot(bytes.into_boxed_slice());
        slot.set_meta(meta);
        slot
    }

    fn set_meta(&mut self, meta: Meta) {
        self.0[CAS..CAS + 8].copy_from_slice(&meta.cas.to_le_bytes());
        self.0[FLAGS..FLAGS + 4].copy_from_slice(&meta.flags.to_le_bytes());
        self.set_expiry(meta.expiry);
        self.0[STORED_AT..STORED_AT + 4].copy_from_slice(&time32(meta.stored_at).to_le_bytes());
    }

    fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.0[at..at + 4].try_into().expect("4 bytes"))
    }

    fn key_end(&self) -> usize {
        HEADER + usize::from(self.0[KEY_LEN])
    }

    pub fn key(&self) -> &[u8] {
        &self.0[HEADER..self.key_end()]
    }

    pub fn value(&self) -> &[u8] {
        &self.0[self.key_end()..]
    }

    pub fn cas(&self) -> u64 {
        u64::from_le_bytes(self.0[CAS..CAS + 8].try_into().expect("8 bytes"))
    }

    pub fn flags(&self) -> u32 {
        self.u32_at(FLAGS)
    }

    pub fn expiry(&self) -> Expiry {
        match self.0[BITS] & NEVER {
            0 => Expiry::At(UnixTime::from(self.u32_at(EXPIRY))),
            _ => Expiry::Never,
        }
    }

    pub fn set_expiry(&mut self, expiry: Expiry) {
        let (at, never) = match expiry {
            Expiry::Never => (0, true),
            Expiry::At(at) => (time32(at), false),
        };
        self.0[EXPIRY..EXPIRY + 4].copy_from_slice(&at.to_le_bytes());
        self.set_bit(NEVER, never);
    }

    pub fn stored_at(&self) -> UnixTime {
        UnixTime::from(self.u32_at(STORED_AT))
    }

    fn set_bit(&mut self, bit: u8, on: bool) {
        if on {
            self.0[BITS] |= bit;
        } else {
            self.0[BITS] &= !bit;
        }
    }

    pub fn fetched(&self) -> bool {
        self.0[BITS] & FETCHED != 0
    }

    pub fn set_fetched(&mut self, on: bool) {
        self.set_bit(FETCHED, on);
    }

    pub fn referenced(&self) -> bool {
        self.0[BITS] & REFERENCED != 0
    }

    pub fn set_referenced(&mut self, on: bool) {
        self.set_bit(REFERENCED, on);
    }

    /// The item as a `get` lends it.
    pub fn item(&self) -> ItemRef<'_> {
        ItemRef {
            flags: self.flags(),
            value: self.value(),
            cas: self.cas(),
            expiry: self.expiry(),
        }
    }

    /// Takes a new value and fields, both bits clear: in place when the
    /// value has the old one's length (a counter, a same-size overwrite),
    /// else in an allocation of the new size (glibc's `realloc` keeps the
    /// chunk when the new size fits it).
    pub fn overwrite(&mut self, value: &[u8], meta: Meta) {
        let start = self.key_end();
        if self.0.len() - start != value.len() {
            let mut bytes = std::mem::take(&mut self.0).into_vec();
            bytes.truncate(start);
            bytes.reserve_exact(value.len());
            bytes.extend_from_slice(value);
            self.0 = bytes.into_boxed_slice();
        } else {
            self.0[start..].copy_from_slice(value);
        }
        self.0[BITS] = 0;
        self.set_meta(meta);
    }

    /// The bytes of the allocation (header, key, value).
    #[cfg(test)]
    pub fn allocated_len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(expiry: Expiry) -> Meta {
        Meta {
            flags: 0xdead_beef,
            cas: u64::MAX - 1,
            expiry,
            stored_at: 1_700_000_000,
        }
    }

    #[test]
    fn fields_read_back_as_written() {
        for expiry in [
            Expiry::Never,
            Expiry::At(0),
            Expiry::At(u64::from(u32::MAX)),
        ] {
            let mut slot = Slot::new(b"key", b"value", meta(expiry));
            assert_eq!(slot.key(), b"key");
            assert_eq!(slot.value(), b"value");
            assert_eq!(
                (slot.flags(), slot.cas(), slot.expiry()),
                (0xdead_beef, u64::MAX - 1, expiry)
            );
            assert_eq!(slot.stored_at(), 1_700_000_000);
            assert!(!slot.fetched() && !slot.referenced());
            slot.set_referenced(true);
            assert!(slot.referenced() && !slot.fetched());
            slot.set_fetched(true);
            slot.set_referenced(false);
            assert!(!slot.referenced() && slot.fetched());
            assert_eq!(slot.expiry(), expiry, "bits leave the expiry alone");
        }
    }

    #[test]
    fn a_time_past_2106_is_held_as_the_last_that_fits() {
        let slot = Slot::new(b"k", b"", meta(Expiry::At(1 << 40)));
        assert_eq!(slot.expiry(), Expiry::At(u64::from(u32::MAX)));
    }

    #[test]
    fn overwrites_keep_the_key_and_size_the_allocation_to_the_value() {
        let mut slot = Slot::new(b"key", &[b'x'; 100], meta(Expiry::Never));
        slot.set_referenced(true);
        for len in [100, 3, 0, 250, 249] {
            slot.overwrite(&vec![b'v'; len], meta(Expiry::At(5)));
            assert_eq!((slot.key(), slot.value().len()), (&b"key"[..], len));
            assert_eq!(slot.allocated_len(), HEADER + 3 + len);
            assert_eq!(slot.expiry(), Expiry::At(5));
            assert!(!slot.referenced(), "bits are cleared");
        }
        let empty_key = Slot::new(b"", b"v", meta(Expiry::Never));
        assert_eq!((empty_key.key(), empty_key.value()), (&b""[..], &b"v"[..]));
    }

    #[test]
    fn cost_follows_glibc_chunks() {
        // 22 + 30 + 100 = 152 bytes: a 160-byte chunk.
        assert_eq!(cost(30, 100), 160 + 28);
        // 22 + 30 + 10 = 62: an 80-byte chunk.
        assert_eq!(cost(30, 10), 80 + 28);
        assert_eq!(cost(1, 0), 32 + 28, "the smallest chunk");
    }
}
