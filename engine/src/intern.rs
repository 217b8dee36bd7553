//! Strings shared engine-wide: the names, templates and messages that many windows and
//! incidents hold, kept once and counted once in the state size.
//!
//! A holder keeps an `Arc`; the interner keeps one more, so it can hand the same one out again.
//! The interner must not keep what no holder uses any more, or it would grow without bound:
//! holders give their strings back ([`Interner::release`]) when they are dropped, which removes
//! an entry whose only other holder was the one giving it back; and a sweep drops every entry
//! only the interner holds when the table has grown to twice what was live at the last sweep,
//! for anything given back another way (a state cloned for a checkpoint, say).
//!
//! Nothing here changes a result: a string is the same text wherever it is held.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A shared string behind one pointer, where an `Arc<str>` takes two: what holds many names
/// (a window's objects) stays small. Compares, orders and hashes as its text.
#[derive(Clone)]
pub(crate) struct Text(Arc<Box<str>>);

impl Text {
    pub fn new(s: &str) -> Self {
        Text(Arc::new(s.into()))
    }

    fn holders(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    fn is(&self, other: &Text) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::ops::Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Text {}

impl std::hash::Hash for Text {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}

impl PartialOrd for Text {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Text {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (**self).cmp(&**other)
    }
}

/// Saved as its text.
impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self)
    }
}

/// Read as its own copy: [`Interner::adopt`] shares it.
impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Text(Arc::new(String::deserialize(d)?.into_boxed_str())))
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// What the windows of one fingerprint (and category) say alike, but the namespace: the same
/// kind, reason and template recur in many namespaces, and a meta per namespace would hold
/// them once per namespace (a group holds its namespace as a shared string instead).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub kind: Option<Box<str>>,
    pub reason: Option<Box<str>>,
    pub template: Box<str>,
    pub category: Box<str>,
}

impl Meta {
    fn heap_bytes(&self) -> usize {
        [self.kind.as_deref(), self.reason.as_deref(), Some(&*self.template), Some(&*self.category)]
            .into_iter()
            .map(|s| s.map_or(0, str::len))
            .sum()
    }
}

/// The parts of a [`Meta`], borrowed, to look one up without building it.
#[derive(Clone, Copy)]
pub(crate) struct MetaRef<'a> {
    pub kind: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub template: &'a str,
    pub category: &'a str,
}

impl MetaRef<'_> {
    fn is(&self, m: &Meta) -> bool {
        self.kind == m.kind.as_deref()
            && self.reason == m.reason.as_deref()
            && self.template == &*m.template
            && self.category == &*m.category
    }

    /// xxh3 of the parts in one pass over `buf`.
    fn hash(&self, buf: &mut Vec<u8>) -> u64 {
        buf.clear();
        for part in [self.kind, self.reason, Some(self.template), Some(self.category)] {
            // A tag byte per part tells an absent part from an empty one.
            match part {
                None => buf.push(0),
                Some(s) => {
                    buf.push(1);
                    buf.extend_from_slice(s.as_bytes());
                    buf.push(0);
                }
            }
        }
        xxhash_rust::xxh3::xxh3_64(buf)
    }

    fn to_meta(self) -> Meta {
        Meta {
            kind: self.kind.map(Into::into),
            reason: self.reason.map(Into::into),
            template: self.template.into(),
            category: self.category.into(),
        }
    }
}

impl Meta {
    fn as_ref(&self) -> MetaRef<'_> {
        MetaRef {
            kind: self.kind.as_deref(),
            reason: self.reason.as_deref(),
            template: &self.template,
            category: &self.category,
        }
    }
}

/// Table sizes below which a sweep is not worth its time.
const MIN_SWEEP: usize = 1024;

#[derive(Debug, Default)]
pub(crate) struct Interner {
    /// Hashed in one pass over the text (`IdHasher` runs xxh3 over what it is given), where
    /// the streaming xxh3 hasher would take several calls for each short name.
    strs: HashSet<Text, std::hash::BuildHasherDefault<crate::IdHasher>>,
    /// Metas by the hash of their parts; the list is compared part by part, so a collision
    /// costs a longer list, never a wrong answer.
    metas: crate::HashedMap<Vec<Arc<Meta>>>,
    metas_len: usize,
    /// Sweep when `strs.len() + metas_len` reaches this.
    sweep_at: usize,
    /// Reused to hash a meta's parts.
    buf: Vec<u8>,
}

impl Interner {
    /// The shared copy of `s`.
    pub fn str(&mut self, s: &str) -> Text {
        if let Some(a) = self.strs.get(s) {
            return a.clone();
        }
        self.maybe_sweep();
        let a = Text::new(s);
        self.strs.insert(a.clone());
        a
    }

    /// The shared copy of an `Arc` made elsewhere (a restored state): the interner's own when it
    /// has the text, else this one, which it then keeps.
    pub fn adopt(&mut self, a: &mut Text) {
        match self.strs.get(&**a) {
            Some(mine) => *a = mine.clone(),
            None => {
                self.strs.insert(a.clone());
            }
        }
    }

    /// Takes back a string its holder drops: forgets it when nobody else holds it. A holder
    /// of several copies (an incident holds its root in its scope too) gives them back one by
    /// one, each dropped before the next is looked at, so the last one counts right.
    pub fn release(&mut self, a: Text) {
        if a.holders() == 2 && self.strs.get(&*a).is_some_and(|mine| mine.is(&a)) {
            self.strs.remove(&*a);
            shrink(&mut self.strs);
        }
    }

    /// [`Interner::release`] of each.
    pub fn release_all(&mut self, texts: impl IntoIterator<Item = Text>) {
        texts.into_iter().for_each(|t| self.release(t));
    }

    pub fn meta(&mut self, m: MetaRef) -> Arc<Meta> {
        let h = m.hash(&mut self.buf);
        if let Some(found) = self.metas.get(&h).and_then(|l| l.iter().find(|x| m.is(x))) {
            return found.clone();
        }
        self.maybe_sweep();
        let a = Arc::new(m.to_meta());
        self.metas.entry(h).or_default().push(a.clone());
        self.metas_len += 1;
        a
    }

    pub fn adopt_meta(&mut self, a: &mut Arc<Meta>) {
        let m = a.as_ref().as_ref();
        let h = m.hash(&mut self.buf);
        let list = self.metas.entry(h).or_default();
        match list.iter().find(|x| m.is(x)) {
            Some(mine) => *a = mine.clone(),
            None => {
                list.push(a.clone());
                self.metas_len += 1;
            }
        }
    }

    pub fn release_meta(&mut self, a: Arc<Meta>) {
        if Arc::strong_count(&a) != 2 {
            return;
        }
        let h = a.as_ref().as_ref().hash(&mut self.buf);
        let Some(list) = self.metas.get_mut(&h) else { return };
        let Some(i) = list.iter().position(|x| Arc::ptr_eq(x, &a)) else { return };
        list.swap_remove(i);
        self.metas_len -= 1;
        if list.is_empty() {
            self.metas.remove(&h);
            shrink(&mut self.metas);
        }
    }

    fn maybe_sweep(&mut self) {
        if self.strs.len() + self.metas_len < self.sweep_at.max(MIN_SWEEP) {
            return;
        }
        self.strs.retain(|a| a.holders() > 1);
        shrink(&mut self.strs);
        self.metas.retain(|_, l| {
            l.retain(|a| Arc::strong_count(a) > 1);
            !l.is_empty()
        });
        shrink(&mut self.metas);
        self.metas_len = self.metas.values().map(Vec::len).sum();
        self.sweep_at = 2 * (self.strs.len() + self.metas_len);
    }

    /// Bytes held: the tables, and each entry's heap block (the two reference counts and the
    /// value) once, however many hold it.
    pub fn approx_bytes(&self) -> usize {
        use std::mem::size_of;
        let counts = 2 * size_of::<usize>();
        crate::size::hash_set(&self.strs)
            + self.strs.iter().map(|s| counts + size_of::<Box<str>>() + s.len()).sum::<usize>()
            + crate::size::hash_map(&self.metas)
            + self
                .metas
                .values()
                .map(|l| {
                    crate::size::vec(l) + l.iter().map(|m| counts + size_of::<Meta>() + m.heap_bytes()).sum::<usize>()
                })
                .sum::<usize>()
    }

    /// Entries nobody but the interner holds: what a holder failed to give back.
    #[cfg(test)]
    pub fn orphans(&self) -> usize {
        self.strs.iter().filter(|t| t.holders() == 1).count()
            + self.metas.values().flatten().filter(|m| Arc::strong_count(m) == 1).count()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.strs.len() + self.metas_len
    }
}

/// A hash table keeps the buckets of its busiest time: give them back once mostly empty.
fn shrink<T: ShrinkTable>(t: &mut T) {
    if t.cap() > 4 * t.count().max(8) {
        t.shrink(2 * t.count());
    }
}

trait ShrinkTable {
    fn cap(&self) -> usize;
    fn count(&self) -> usize;
    fn shrink(&mut self, to: usize);
}

impl<T: Eq + std::hash::Hash, S: std::hash::BuildHasher> ShrinkTable for HashSet<T, S> {
    fn cap(&self) -> usize {
        self.capacity()
    }
    fn count(&self) -> usize {
        self.len()
    }
    fn shrink(&mut self, to: usize) {
        self.shrink_to(to)
    }
}

impl<V> ShrinkTable for crate::HashedMap<V> {
    fn cap(&self) -> usize {
        self.capacity()
    }
    fn count(&self) -> usize {
        self.len()
    }
    fn shrink(&mut self, to: usize) {
        self.shrink_to(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_strings_are_forgotten_and_shared_ones_kept() {
        let mut i = Interner::default();
        let a = i.str("web-1");
        let b = i.str("web-1");
        assert!(a.is(&b));
        i.release(a);
        assert_eq!(i.len(), 1, "b still holds it");
        i.release(b);
        assert_eq!(i.len(), 0);
    }

    #[test]
    fn a_sweep_drops_what_only_the_interner_holds() {
        let mut i = Interner::default();
        let kept: Vec<Text> = (0..10).map(|n| i.str(&format!("kept-{n}"))).collect();
        for n in 0..5000 {
            drop(i.str(&format!("gone-{n}")));
        }
        assert!(i.len() < 3 * MIN_SWEEP, "{}", i.len());
        for k in &kept {
            assert!(k.is(&i.str(k)));
        }
    }

    #[test]
    fn metas_tell_an_absent_part_from_an_empty_one() {
        let mut i = Interner::default();
        let m = MetaRef { kind: None, reason: Some(""), template: "t", category: "c" };
        let n = MetaRef { kind: Some(""), ..m };
        let (a, b) = (i.meta(m), i.meta(n));
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&a, &i.meta(m)));
        i.release_meta(b);
        assert_eq!(i.len(), 1);
    }
}
