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
pub mod rules;
pub mod template;
pub mod window;

pub use engine::{Engine, EngineConfig, Output};

/// A HashMap with xxh3 instead of SipHash: the keys are ours, not an attacker's, and lookups are
/// on the hot path. Never iterated where order could reach the output.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, xxhash_rust::xxh3::Xxh3Builder>;

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
