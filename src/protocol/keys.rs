//! [`Keys`]: a list of keys packed end to end in one buffer.
//!
//! A multi-get of 100 keys parsed into one `Vec` per key made 100 small
//! allocations (memcached makes none); packed, the parser sizes it first and
//! it is two buffers however many keys it names. Decoded from a peer it
//! is the same two buffers, the byte one grown as keys arrive (the wire
//! gives each key's length only as it comes). A listing of a million keys
//! for a snapshot is likewise a few allocations and a copy, not a million.
//!
//! The two buffers of a dropped list are kept, on the thread that dropped
//! it, for the next list made there ([`SPARE_LISTS`] of them, each buffer
//! of at most [`SPARE_BYTES`]): on the reactor, which parses every request and drops
//! most of them once answered, a `get` then allocates nothing, as
//! memcached's lends a connection's buffers. A list dropped on another
//! thread (a memcached backend's worker) feeds that thread's spares, and
//! the reactor allocates as before.
//!
//! ```text
//!  bytes: k e y 1 k e y 2 2 k 3
//!  ends:        4       8     11      key i = bytes[ends[i-1]..ends[i]]
//! ```

use std::cell::RefCell;
use std::fmt;
use std::ops::Index;

/// Dropped lists' buffers kept per thread at most: with [`SPARE_BYTES`],
/// at most 128 KiB a thread.
const SPARE_LISTS: usize = 16;
/// A list whose buffers hold more bytes than this (keys, or their ends:
/// 512 of them) is freed, not kept: a multi-get of a thousand keys must
/// not pin its room.
const SPARE_BYTES: usize = 4096;

thread_local! {
    /// The buffers of lists dropped on this thread, emptied.
    static SPARE: RefCell<Vec<(Vec<u8>, Vec<usize>)>> = const { RefCell::new(Vec::new()) };
}

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Keys {
    bytes: Vec<u8>,
    /// Where each key ends in `bytes`; the first starts at 0.
    ends: Vec<usize>,
}

impl Keys {
    /// Room for `keys` keys of `bytes` bytes in all, so pushing them does
    /// not reallocate.
    pub fn with_capacity(keys: usize, bytes: usize) -> Keys {
        let spare = SPARE.try_with(|spare| spare.borrow_mut().pop());
        let (mut packed, mut ends) = spare.ok().flatten().unwrap_or_default();
        packed.reserve(bytes);
        ends.reserve(keys);
        Keys {
            bytes: packed,
            ends,
        }
    }

    pub fn push(&mut self, key: &[u8]) {
        self.bytes.extend_from_slice(key);
        self.ends.push(self.bytes.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The bytes of every key together.
    pub fn total_len(&self) -> usize {
        self.bytes.len()
    }

    /// The `i`th key.
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + Clone {
        (0..self.len()).map(|i| self.get(i))
    }
}

/// Keeps the buffers for the next list made on this thread (module doc).
impl Drop for Keys {
    fn drop(&mut self) {
        let bytes = self.bytes.capacity();
        let ends = self.ends.capacity() * std::mem::size_of::<usize>();
        if bytes == 0 || bytes > SPARE_BYTES || ends > SPARE_BYTES {
            return;
        }
        let mut packed = std::mem::take(&mut self.bytes);
        let mut ends = std::mem::take(&mut self.ends);
        packed.clear();
        ends.clear();
        // At a thread's exit its spares may be gone already: then the
        // buffers are simply freed.
        let _ = SPARE.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < SPARE_LISTS {
                spare.push((packed, ends));
            }
        });
    }
}

impl Index<usize> for Keys {
    type Output = [u8];

    fn index(&self, i: usize) -> &[u8] {
        self.get(i)
    }
}

impl<K: AsRef<[u8]>> FromIterator<K> for Keys {
    fn from_iter<I: IntoIterator<Item = K>>(keys: I) -> Keys {
        let mut list = Keys::default();
        keys.into_iter().for_each(|k| list.push(k.as_ref()));
        list
    }
}

/// The keys a store looks up: a request's packed [`Keys`], or one key
/// borrowed as it is (a meta command's look at the item it names), so a
/// single lookup copies and allocates nothing.
#[derive(Debug, Clone, Copy)]
pub enum KeysRef<'a> {
    Packed(&'a Keys),
    One(&'a [u8]),
}

impl<'a> KeysRef<'a> {
    pub fn len(self) -> usize {
        match self {
            KeysRef::Packed(keys) => keys.len(),
            KeysRef::One(_) => 1,
        }
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// The `i`th key.
    pub fn get(self, i: usize) -> &'a [u8] {
        match self {
            KeysRef::Packed(keys) => keys.get(i),
            KeysRef::One(key) => [key][i],
        }
    }

    pub fn iter(self) -> impl ExactSizeIterator<Item = &'a [u8]> + Clone {
        (0..self.len()).map(move |i| self.get(i))
    }
}

impl<'a> From<&'a Keys> for KeysRef<'a> {
    fn from(keys: &'a Keys) -> KeysRef<'a> {
        KeysRef::Packed(keys)
    }
}

/// As the `Vec` of keys it replaced printed: one list entry per key.
impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::{Keys, KeysRef};

    #[test]
    fn keys_read_back_in_order_including_empty_ones() {
        let keys: Keys = [b"ab".as_slice(), b"", b"c"].into_iter().collect();
        assert_eq!(keys.len(), 3);
        assert_eq!(keys.total_len(), 3);
        assert_eq!(
            keys.iter().collect::<Vec<_>>(),
            [b"ab".as_slice(), b"", b"c"]
        );
        assert_eq!(
            (&keys[0], &keys[1], &keys[2]),
            (&b"ab"[..], &b""[..], &b"c"[..])
        );
        assert_eq!(
            format!("{keys:?}"),
            format!("{:?}", [b"ab".to_vec(), vec![], b"c".to_vec()])
        );
        assert!(Keys::default().is_empty());
    }

    #[test]
    fn one_borrowed_key_reads_as_a_list_of_one() {
        let one = KeysRef::One(b"k");
        assert_eq!((one.len(), one.get(0)), (1, &b"k"[..]));
        assert_eq!(one.iter().collect::<Vec<_>>(), [b"k".as_slice()]);
        let keys: Keys = ["a", "b"].into_iter().collect();
        let packed = KeysRef::from(&keys);
        assert_eq!(packed.iter().collect::<Vec<_>>(), [b"a".as_slice(), b"b"]);
    }

    #[test]
    fn keys_pushed_within_capacity_do_not_reallocate() {
        let mut keys = Keys::with_capacity(3, 6);
        let (bytes, ends) = (keys.bytes.as_ptr(), keys.ends.as_ptr());
        ["ab", "cd", "ef"]
            .iter()
            .for_each(|k| keys.push(k.as_bytes()));
        assert_eq!((keys.bytes.as_ptr(), keys.ends.as_ptr()), (bytes, ends));
    }
}
