//! An image of a store that lists its items by key only (a memcached
//! backend), kept while the store takes writes: the keys it held when the
//! image was frozen, and the record each key had then, saved before the
//! first write since changed it. A strong mode's source reads a rejoining
//! member's snapshot from it a chunk at a time and goes on applying writes
//! meanwhile, as it does from the image an ordered memory store keeps in
//! its table (`dense.rs`), instead of holding every write until the last
//! chunk is read.
//!
//! Why it is exact: the store saves a key's record before any write to
//! it (any key: telling listed keys apart would take a set of every key),
//! so a key read from the image is either unwritten since the freeze, and
//! read as it is, or read as saved. A key added since was not listed, and
//! is not read. A `flush_all` hides every item: saving every listed key
//! first would copy the whole memcached into the node's memory, so it ends
//! the image instead (`lost`), and reading from it fails from then on: the
//! snapshot fails, and a later view hands one of a new image. What
//! memcached drops by itself
//! (an item that expires, one it evicts) reads as absent either way, as it
//! did before the image: the member judges expiry as of when each chunk was
//! read.

use std::collections::HashMap;

use super::{Listing, Record, StoreError, StoreResult};

#[derive(Debug)]
pub struct KeyImage {
    listing: Listing,
    /// Keys written since the freeze, with the record each had then
    /// (`None`: the store did not hold it).
    saved: HashMap<Vec<u8>, Option<Record>, ahash::RandomState>,
    /// A `flush_all` came since the freeze: the keys not saved are gone.
    lost: bool,
}

impl KeyImage {
    pub fn new(listing: Listing) -> KeyImage {
        KeyImage {
            listing,
            saved: HashMap::default(),
            lost: false,
        }
    }

    /// The keys the store held when frozen, and its head then; an error
    /// once a `flush_all` ended the image.
    pub fn listing(&self) -> StoreResult<Listing> {
        self.readable()?;
        Ok(self.listing.clone())
    }

    /// An error once a `flush_all` ended the image: a snapshot read from it
    /// fails, and a later view hands one of a new image.
    pub fn readable(&self) -> StoreResult<()> {
        match self.lost {
            true => Err(StoreError::Refused(
                "a flush_all came while the snapshot was read; a new view hands a new one".into(),
            )),
            false => Ok(()),
        }
    }

    /// A write to `key` must first save its record.
    pub fn unsaved(&self, key: &[u8]) -> bool {
        !self.lost && !self.saved.contains_key(key)
    }

    /// A `flush_all` came: the image can no longer be read.
    pub fn lose(&mut self) {
        self.lost = true;
        self.saved.clear();
    }

    pub fn save(&mut self, key: &[u8], record: Option<Record>) {
        self.saved.entry(key.to_vec()).or_insert(record);
    }

    /// `key`'s record as frozen, if a write since saved it.
    pub fn saved(&self, key: &[u8]) -> Option<&Option<Record>> {
        self.saved.get(key)
    }

    /// Keys saved: those written since the freeze.
    pub fn copied(&self) -> usize {
        self.saved.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Keys;
    use crate::store::{Entry, Expiry};

    fn record(key: &[u8], value: &[u8]) -> Record {
        Record {
            key: key.to_vec(),
            cas: 1,
            entry: Entry {
                value: value.to_vec(),
                flags: 0,
                expiry: Expiry::Never,
            },
            stored_at: 0,
            referenced: false,
        }
    }

    #[test]
    fn a_key_is_saved_once_and_reads_as_it_was_at_the_freeze() {
        let keys: Keys = [b"a".as_slice(), b"b"].into_iter().collect();
        let mut image = KeyImage::new(Listing {
            keys,
            ..Listing::default()
        });
        assert!(image.unsaved(b"a"));
        image.save(b"a", Some(record(b"a", b"first")));
        image.save(b"a", Some(record(b"a", b"second")));
        image.save(b"new", None);
        assert_eq!(image.saved(b"a"), Some(&Some(record(b"a", b"first"))));
        assert_eq!(image.saved(b"new"), Some(&None));
        assert_eq!(image.saved(b"b"), None);
        assert!(!image.unsaved(b"a") && image.unsaved(b"b"));
        assert_eq!(image.copied(), 2);
        image.lose();
        assert!(image.readable().is_err() && image.listing().is_err());
        assert!(!image.unsaved(b"b"));
    }
}
