//! Plumbing both kev binaries share, so it exists once: layered configuration, Kafka client
//! settings, the partitioner, telemetry (logs, metrics, health endpoints), shutdown, and the
//! embedded development Kafka and Schema Registry used by the first-run command and the tests.

pub mod config;
pub mod credentials;
pub mod devregistry;
pub mod kafka;
pub mod retry;
pub mod shutdown;
pub mod telemetry;
