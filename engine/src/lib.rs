//! The enricher engine: pure code, no I/O, no clock. Event observations and heartbeats go in,
//! enriched events and window aggregates come out, in event time. Given the same inputs in the
//! same order and the same configuration, the output is byte for byte the same, which is what
//! makes a postmortem replay give the records the live run gave.
//!
//! - `rules`: the classification rules (shipped defaults, user overrides), checked at load;
//! - `classify`: severity and category, with escalation by repetition;
//! - `template`: the message template that masks what varies between instances of a problem;
//! - `window`: event-time tumbling windows with a per-cluster watermark;
//! - `correlate`: incidents linking events of related resources to a root-cause candidate;
//! - `engine`: the pieces wired together.

pub mod classify;
pub mod correlate;
pub mod engine;
mod group;
pub mod history;
pub mod impact;
mod intern;
pub mod review;
pub mod rules;
pub mod shorten;
mod sorted;
pub mod template;
pub mod window;

pub use engine::{Engine, EngineConfig, Output};

/// A HashMap with xxh3 instead of SipHash: the keys are ours, not an attacker's, and lookups are
/// on the hot path. Never iterated where order could reach the output.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, xxhash_rust::xxh3::Xxh3Builder>;

/// A HashMap keyed by a u64 that is already a hash (xxh3 of the real key): hashing it again
/// would only cost time.
pub(crate) type HashedMap<V> = std::collections::HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

/// The identity hasher of [`HashedMap`]: the key is a well-mixed 64-bit hash.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys reach here (`write_u64`); anything else still hashes, slowly.
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }

    /// The terminator `str`'s `Hash` writes after the bytes: folded into the hash of the bytes,
    /// still well mixed, instead of a second xxh3 call per string key.
    fn write_u8(&mut self, v: u8) {
        self.0 ^= u64::from(v);
    }
}

/// A memo keyed by text: the xxh3 of the key, hashed once in one pass, picks a short list in
/// which the key itself is compared, so a collision costs a miss, never a wrong answer. Cleared
/// when it holds more than `LIMIT` keys, so it stays bounded whatever comes in.
#[derive(Debug)]
pub(crate) struct StrMemo<V> {
    map: HashedMap<Vec<(Box<str>, V)>>,
    len: usize,
}

impl<V> Default for StrMemo<V> {
    fn default() -> Self {
        Self { map: HashedMap::default(), len: 0 }
    }
}

impl<V> StrMemo<V> {
    const LIMIT: usize = 100_000;

    pub(crate) fn get_or_insert_with(&mut self, key: &str, make: impl FnOnce() -> V) -> &V {
        let h = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
        let hit = self.map.get(&h).and_then(|v| v.iter().position(|(k, _)| **k == *key));
        let i = match hit {
            Some(i) => i,
            None => {
                if self.len >= Self::LIMIT {
                    self.map.clear();
                    self.len = 0;
                }
                let v = make();
                let list = self.map.entry(h).or_default();
                list.push((key.into(), v));
                self.len += 1;
                list.len() - 1
            }
        };
        &self.map[&h][i].1
    }

    /// Bytes held: the table, the lists and the keys, plus `value_bytes` of each value.
    pub(crate) fn approx_bytes(&self, value_bytes: impl Fn(&V) -> usize) -> usize {
        let entry = std::mem::size_of::<(u64, Vec<(Box<str>, V)>)>() + 1;
        self.map.capacity() * entry
            + self
                .map
                .values()
                .map(|l| {
                    l.capacity() * std::mem::size_of::<(Box<str>, V)>()
                        + l.iter().map(|(k, v)| k.len() + value_bytes(v)).sum::<usize>()
                })
                .sum::<usize>()
    }
}

/// Sizes of what the engine holds, for its state-size estimate. The estimate counts what is
/// really held: the size of each value in its collection, the spare capacity of vectors and hash
/// tables, one control byte per hash bucket, and the heap bytes of every string at its capacity.
/// What it cannot read from the collections it bounds from what is known: B-tree nodes hold 5 to
/// 11 entries, so an entry is counted as 3/2 of its size; the allocator's own rounding is left
/// out.
pub(crate) mod size {
    use std::collections::{BTreeMap, HashMap, HashSet};
    use std::mem::size_of;

    pub fn string(s: &String) -> usize {
        s.capacity()
    }

    pub fn vec<T>(v: &Vec<T>) -> usize {
        v.capacity() * size_of::<T>()
    }

    pub fn hash_map<K, V, S>(m: &HashMap<K, V, S>) -> usize {
        // Buckets are the capacity rounded up to a power of two over the 7/8 load factor.
        let buckets = if m.capacity() == 0 { 0 } else { (m.capacity() * 8 / 7).next_power_of_two() };
        buckets * (size_of::<(K, V)>() + 1)
    }

    pub fn hash_set<K, S>(m: &HashSet<K, S>) -> usize {
        let buckets = if m.capacity() == 0 { 0 } else { (m.capacity() * 8 / 7).next_power_of_two() };
        buckets * (size_of::<K>() + 1)
    }

    pub fn btree_map<K, V>(m: &BTreeMap<K, V>) -> usize {
        m.len() * size_of::<(K, V)>() * 3 / 2
    }
}

/// A u64 as 16 lower-case hex digits, as `format!("{v:016x}")` writes it, without the
/// formatting machinery.
pub(crate) fn hex16(v: u64) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut b = [0u8; 16];
    for (i, d) in b.iter_mut().enumerate() {
        *d = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
    String::from_utf8(b.to_vec()).expect("hex digits are ASCII")
}

/// Serde of an id as the 16 hex digits it is emitted as.
pub(crate) mod hex_id {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::hex16(*id))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        u64::from_str_radix(&s, 16).map_err(D::Error::custom)
    }
}

/// Serde for maps with non-string keys, as a sequence of pairs, so engine state saves as JSON.
pub(crate) mod pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<'a, S, K, V, M>(map: &'a M, s: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        K: Serialize + 'a,
        V: Serialize + 'a,
        &'a M: IntoIterator<Item = (&'a K, &'a V)>,
    {
        s.collect_seq(map)
    }

    pub fn deserialize<'de, D, K, V, M>(d: D) -> Result<M, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de>,
        V: Deserialize<'de>,
        M: FromIterator<(K, V)>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex16_writes_what_format_writes() {
        for v in [0, 1, 0xabc, u64::MAX, 0x3b09580eb34bd979, 1 << 63] {
            assert_eq!(super::hex16(v), format!("{v:016x}"));
        }
    }
}
