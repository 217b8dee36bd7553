//! `kev-producer`: publishes every new Kubernetes Event and every update of one to the raw topic,
//! exactly once across restarts, relists, 410 Gone, disconnects and leader handover.
//!
//! The pieces: a source (`watch` for a live cluster, `source::replay` for a dump) feeds a
//! `session`, which asks the pure `dedup` state what to publish and hands records to Kafka. The
//! state is rebuilt from the raw topic by `recover` at the start of every session, and `leader`
//! makes sure only one replica runs sessions at a time. Before anything is published, `redact`
//! masks secrets in the object and `filter` applies the user's keep/drop rules.

pub mod config;
pub mod dedup;
pub mod dump;
pub mod filter;
pub mod leader;
pub mod readback;
pub mod recover;
pub mod redact;
pub mod run;
pub mod session;
pub mod source;
pub mod watch;

pub use config::ProducerConfig;
