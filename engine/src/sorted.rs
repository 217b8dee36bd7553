//! A map kept as one vector sorted by key: for the engine's small, hot tables it holds less
//! than a B-tree (whose nodes are a third empty on average) or a hash table (whose buckets are a
//! power of two), iterates in key order as a B-tree does, and finds a key by binary search.
//! It grows by an eighth and gives back what a removal leaves mostly empty, so its spare
//! capacity stays small; an insertion in the middle moves the entries after it, which for
//! these tables (tens to thousands of entries, inserted far less often than looked up) costs
//! less than it saves.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone)]
pub(crate) struct SortedVec<K, V> {
    v: Vec<(K, V)>,
}

impl<K, V> Default for SortedVec<K, V> {
    fn default() -> Self {
        Self { v: Vec::new() }
    }
}

impl<K: Ord, V> SortedVec<K, V> {
    /// From pairs already sorted by key, without duplicates.
    pub fn from_sorted(mut v: Vec<(K, V)>) -> Self {
        debug_assert!(v.windows(2).all(|w| w[0].0 < w[1].0));
        v.shrink_to_fit();
        Self { v }
    }

    pub fn reserve_exact(&mut self, additional: usize) {
        self.v.reserve_exact(additional);
    }

    pub fn shrink_to_fit(&mut self) {
        self.v.shrink_to_fit();
    }

    pub fn len(&self) -> usize {
        self.v.len()
    }

    fn find(&self, k: &K) -> Result<usize, usize> {
        self.v.binary_search_by(|(x, _)| x.cmp(k))
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        self.find(k).ok().map(|i| &self.v[i].1)
    }

    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.find(k).ok().map(|i| &mut self.v[i].1)
    }

    pub fn get_or_insert_with(&mut self, k: K, make: impl FnOnce() -> V) -> &mut V {
        let i = match self.find(&k) {
            Ok(i) => i,
            Err(i) => {
                self.grow();
                self.v.insert(i, (k, make()));
                i
            }
        };
        &mut self.v[i].1
    }

    /// Inserts or replaces; returns the value replaced.
    pub fn insert(&mut self, k: K, value: V) -> Option<V> {
        match self.find(&k) {
            Ok(i) => Some(std::mem::replace(&mut self.v[i].1, value)),
            Err(i) => {
                self.grow();
                self.v.insert(i, (k, value));
                None
            }
        }
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        let i = self.find(k).ok()?;
        let (_, v) = self.v.remove(i);
        self.trim();
        Some(v)
    }

    /// Removes the entries whose keys satisfy `front` (true for a prefix of the keys, false
    /// after), in key order, handing each to `f`.
    pub fn remove_front_while(&mut self, front: impl Fn(&K) -> bool, f: impl FnMut((K, V))) {
        let n = self.v.partition_point(|(k, _)| front(k));
        if n > 0 {
            self.v.drain(..n).for_each(f);
            self.trim();
        }
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.v.retain_mut(|(k, v)| keep(k, v));
        self.trim();
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.v.iter().map(|(k, v)| (k, v))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.v.iter_mut().map(|(k, v)| (&*k, v))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.v.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.v.iter_mut().map(|(_, v)| v)
    }

    /// Bytes of the vector, spare capacity included (not what the values hold elsewhere).
    pub fn approx_bytes(&self) -> usize {
        crate::size::vec(&self.v)
    }

    fn grow(&mut self) {
        if self.v.len() == self.v.capacity() {
            self.v.reserve_exact(4 + self.v.len() / 8);
        }
    }

    fn trim(&mut self) {
        if self.v.capacity() > self.v.len() + self.v.len() / 4 + 8 {
            self.v.shrink_to(self.v.len() + self.v.len() / 8);
        }
    }
}

impl<K: Ord, V> IntoIterator for SortedVec<K, V> {
    type Item = (K, V);
    type IntoIter = std::vec::IntoIter<(K, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.v.into_iter()
    }
}

/// Saved as a sequence of (key, value) pairs, as `crate::pairs` saves a map.
impl<K: Serialize, V: Serialize> Serialize for SortedVec<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.v.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Deserialize<'de> for SortedVec<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut v = Vec::<(K, V)>::deserialize(d)?;
        // Saved in order; sorted again (stably, the last of equal keys kept, as a map would) so
        // that a hand-made state cannot break the binary search.
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.reverse();
        v.dedup_by(|a, b| a.0 == b.0);
        v.reverse();
        v.shrink_to_fit();
        Ok(Self { v })
    }
}

#[cfg(test)]
mod tests {
    use super::SortedVec;

    #[test]
    fn keeps_keys_in_order_and_capacity_near_length() {
        let mut m = SortedVec::default();
        for k in [5, 1, 9, 3, 7, 1] {
            *m.get_or_insert_with(k, || 0) += 1;
        }
        assert_eq!(m.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(), [(1, 2), (3, 1), (5, 1), (7, 1), (9, 1)]);
        let mut gone = Vec::new();
        m.remove_front_while(|k| *k < 6, |(k, _)| gone.push(k));
        assert_eq!(gone, [1, 3, 5]);
        for k in 0..1000 {
            m.insert(k, k);
        }
        m.retain(|k, _| *k % 100 == 0);
        assert!(m.v.capacity() <= m.len() + m.len() / 4 + 8);
        let json = serde_json::to_string(&m).unwrap();
        let back: SortedVec<i32, i32> = serde_json::from_str(&json).unwrap();
        assert_eq!(back.v, m.v);
        let unsorted: SortedVec<i32, i32> = serde_json::from_str("[[3,1],[1,1],[3,2]]").unwrap();
        assert_eq!(unsorted.v, [(1, 1), (3, 2)]);
    }
}
