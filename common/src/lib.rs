//! Plumbing both kev binaries share, so it exists once: layered configuration, credentials from
//! mounted Secrets, Kafka client settings and the partitioner, retrying a dependency that is not
//! there yet, telemetry (logs, metrics, health endpoints), shutdown, and the development Schema
//! Registry of the first-run command and the tests (the embedded Kafka is librdkafka's mock
//! cluster, which the binaries start themselves).

pub mod config;
pub mod credentials;
pub mod devregistry;
pub mod kafka;
pub mod retry;
pub mod shutdown;
pub mod telemetry;
