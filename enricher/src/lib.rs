//! `kev-enricher`: the engine of `kev-engine` run as a Kafka consumer group.
//!
//! - `config`: the configuration (file, `KEV_` environment, `--set`);
//! - `decode`: raw bytes to a raw record, or to a dead letter saying what was wrong;
//! - `partition`: one raw partition's engine, shared by the live run, its recovery and replay;
//! - `records`: each output record's topic, key, timestamp and value;
//! - `emit`: the idempotent producer and delivery tracking;
//! - `incidents`: the incidents topic read back as a table, for a person;
//! - `checkpoint`: engine state kept in a Kafka topic;
//! - `live`: the consumer group, the commit barrier, take-over and hand-over of partitions;
//! - `replay`: the records of an event-time range, re-derived for a postmortem;
//! - `topics`: creating the topics with their cleanup policies.

pub mod alerts;
pub mod checkpoint;
pub mod config;
pub mod decode;
pub mod emit;
pub mod incidents;
pub mod live;
pub mod partition;
pub mod records;
pub mod replay;
pub mod report;
pub mod routes;
pub mod topics;

pub use config::EnricherConfig;
