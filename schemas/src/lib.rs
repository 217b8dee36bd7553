//! kev's contracts.
//!
//! The `avro/*.avsc` files are the source of truth: the Rust records here mirror them field by field,
//! and the tests in this crate fail when the two drift apart. Both binaries use this crate, so the
//! producer and the enricher can never disagree on the wire format.

pub mod binary;
pub mod codec;
pub mod enriched;
pub mod k8s;
pub mod lean;
pub mod normalize;
pub mod raw;
pub mod schema;
pub mod time;

pub use binary::AvroWrite;
pub use codec::{Codec, CodecError};
pub use enriched::{Aggregate, DeadLetter, EnrichedEvent, Incident, IncidentStatus, Severity};
pub use k8s::{EventObject, ParseError};
pub use raw::{EventObservation, Heartbeat, NormalizedEvent, RawKind, RawRecord, ResourceRef, WatchVerb};
