//! Counted places per key, each freed when its holder drops it: the HTTP
//! server's connections per client address and the long polls per client
//! both take one of these. Data only; it imports nothing of the node.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// Places taken per key and in all.
pub struct Places<K: Eq + Hash> {
    counts: Arc<Mutex<Counts<K>>>,
}

struct Counts<K> {
    by_key: HashMap<K, usize>,
    total: usize,
}

/// Why no place was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    /// Every place is taken.
    Total,
    /// The key holds its share already.
    Key,
}

impl<K: Eq + Hash> Default for Places<K> {
    fn default() -> Self {
        Places {
            counts: Arc::new(Mutex::new(Counts {
                by_key: HashMap::new(),
                total: 0,
            })),
        }
    }
}

impl<K: Eq + Hash> Clone for Places<K> {
    fn clone(&self) -> Self {
        Places {
            counts: self.counts.clone(),
        }
    }
}

impl<K: Eq + Hash + Clone> Places<K> {
    /// A place for `key` if it holds fewer than `per_key` and all keys
    /// together fewer than `total`; freed when the place is dropped.
    pub fn take(&self, key: K, per_key: usize, total: usize) -> Result<Place<K>, Full> {
        let mut counts = self.lock();
        if counts.total >= total {
            return Err(Full::Total);
        }
        if counts.by_key.get(&key).copied().unwrap_or(0) >= per_key {
            return Err(Full::Key);
        }
        *counts.by_key.entry(key.clone()).or_default() += 1;
        counts.total += 1;
        Ok(Place {
            counts: self.counts.clone(),
            key,
        })
    }

    /// Places `key` holds now.
    pub fn count(&self, key: &K) -> usize {
        self.lock().by_key.get(key).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts<K>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One place taken from [`Places`]; dropping it gives the place back.
pub struct Place<K: Eq + Hash> {
    counts: Arc<Mutex<Counts<K>>>,
    key: K,
}

impl<K: Eq + Hash> Drop for Place<K> {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total -= 1;
        if let Some(count) = counts.by_key.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.by_key.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_capped_per_key_and_in_all_and_given_back_on_drop() {
        let places: Places<&str> = Places::default();
        let a1 = places.take("a", 2, 3).unwrap();
        let _a2 = places.take("a", 2, 3).unwrap();
        assert_eq!(places.take("a", 2, 3).err(), Some(Full::Key));
        let _b1 = places.take("b", 2, 3).unwrap();
        assert_eq!(places.take("c", 2, 3).err(), Some(Full::Total));
        drop(a1);
        assert_eq!(places.count(&"a"), 1);
        assert!(places.take("c", 2, 3).is_ok());
        // A refusal takes nothing and leaves no empty entry behind.
        assert_eq!(places.count(&"d"), 0);
    }
}
