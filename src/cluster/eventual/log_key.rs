//! A key as the version log keeps it: up to [`INLINE`] bytes in place, in
//! the log's entry, and a longer one in an allocation of its own.
//!
//! Why: most memcached keys are short, and a key in its own allocation
//! costs its pointer (16 bytes) and a malloc chunk of at least 32 (48 for
//! 30 bytes): 64 bytes of the 139.5 the log took per key of 30 bytes. In
//! place, a key of up to 30 bytes takes the 32 bytes of this enum and
//! nothing more; a longer one takes 16 bytes more than it did (the enum's
//! room beside its pointer).

use std::ops::Deref;

/// The longest key held in place: with its length and the enum's tag, 32
/// bytes, as many as a key's pointer and length take twice.
pub const INLINE: usize = 30;

#[derive(Clone)]
pub enum LogKey {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl LogKey {
    pub fn new(key: &[u8]) -> LogKey {
        if key.len() > INLINE {
            return LogKey::Heap(key.into());
        }
        let mut bytes = [0; INLINE];
        bytes[..key.len()].copy_from_slice(key);
        LogKey::Inline {
            len: key.len() as u8,
            bytes,
        }
    }

    /// The heap bytes it takes beside the entry that holds it.
    pub fn heap_bytes(&self) -> u64 {
        match self {
            LogKey::Inline { .. } => 0,
            LogKey::Heap(key) => crate::store::malloc_chunk(key.len()),
        }
    }
}

/// The key's bytes, without the room left after a short one.
impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
}

impl Deref for LogKey {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            LogKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            LogKey::Heap(key) => key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_reads_back_whatever_its_length() {
        for len in [0, 1, INLINE - 1, INLINE, INLINE + 1, 250] {
            let key: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let held = LogKey::new(&key);
            assert_eq!(&*held, &key[..], "{len} bytes");
            assert_eq!(held.heap_bytes() == 0, len <= INLINE, "{len} bytes");
        }
    }

    #[test]
    fn a_key_in_place_takes_the_room_of_a_pointer_and_a_length_twice() {
        assert_eq!(std::mem::size_of::<LogKey>(), 32);
    }
}
