//! Confluent Schema Registry wire format (magic byte, 4-byte schema id, Avro body) for kev's records.
//!
//! Encoding registers kev's own schema text under `<topic>-value` (TopicNameStrategy), docs
//! included, so that what the registry shows is the documented contract. Decoding reads with the
//! writer's schema (fetched by id) and resolves into the reader schema compiled into this build:
//! that is what makes a newer or older producer readable (BACKWARD and FORWARD compatibility).

use std::time::Duration;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SubjectNameStrategy, SuppliedSchema};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::raw::RawRecord;
use crate::schema::{RAW_RECORD, RAW_SCHEMA};

/// What went wrong while encoding or decoding. `label()` names it for metrics and dead letters.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The registry could not be reached or answered 5xx: try again later.
    #[error("schema registry unavailable: {0}")]
    RegistryUnavailable(String),
    /// The registry answered, but not with what we need (unknown id, incompatible schema, auth).
    #[error("schema registry refused: {0}")]
    RegistryRefused(String),
    /// The bytes are not in Confluent wire format.
    #[error("not in Schema Registry wire format: {0}")]
    WireFormat(String),
    /// The body does not decode with its writer schema, or does not resolve into ours.
    #[error("record does not match its schema: {0}")]
    Schema(String),
}

impl CodecError {
    /// Whether retrying the same call later can succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, CodecError::RegistryUnavailable(_))
    }

    pub fn label(&self) -> &'static str {
        match self {
            CodecError::RegistryUnavailable(_) => "registry_unavailable",
            CodecError::RegistryRefused(_) => "registry_refused",
            CodecError::WireFormat(_) => "wire_format",
            CodecError::Schema(_) => "schema",
        }
    }

    fn from_registry(e: SRCError) -> Self {
        if e.retriable {
            CodecError::RegistryUnavailable(e.to_string())
        } else {
            CodecError::RegistryRefused(e.to_string())
        }
    }
}

/// How to reach the registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryAuth {
    pub basic: Option<(String, Option<String>)>,
    pub bearer: Option<String>,
}

/// Encoder and decoder for one registry. Cheap to share behind an `Arc`; schemas are cached.
pub struct Codec {
    encoder: AvroEncoder,
    decoder: AvroDecoder,
}

impl Codec {
    pub fn new(url: &str, auth: &RegistryAuth, timeout: Duration) -> Result<Self, CodecError> {
        let build = || {
            let mut b = SrSettings::new_builder(url.to_string());
            b.set_timeout(timeout).no_proxy();
            if let Some((user, pass)) = &auth.basic {
                b.set_basic_authorization(user, pass.as_deref());
            }
            if let Some(token) = &auth.bearer {
                b.set_token_authorization(token);
            }
            b.build().map_err(CodecError::from_registry)
        };
        Ok(Self { encoder: AvroEncoder::new(build()?), decoder: AvroDecoder::new(build()?) })
    }

    /// Encodes a raw record for `topic`.
    pub async fn encode_raw(&self, topic: &str, record: &RawRecord) -> Result<Vec<u8>, CodecError> {
        self.encode(topic, "io.kev.raw.RawRecord", RAW_RECORD, record).await
    }

    /// Decodes a raw record written with any compatible version of the raw schema.
    pub async fn decode_raw(&self, bytes: &[u8]) -> Result<RawRecord, CodecError> {
        self.decode(bytes, &RAW_SCHEMA).await
    }

    /// Encodes `item` with `schema_text`, registering it under `<topic>-value` on first use.
    pub async fn encode<T: Serialize>(
        &self,
        topic: &str,
        full_name: &str,
        schema_text: &str,
        item: &T,
    ) -> Result<Vec<u8>, CodecError> {
        let supplied = SuppliedSchema::new(Some(full_name.to_string()), SchemaType::Avro, schema_text.to_string());
        let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(topic.to_string(), false, supplied);
        let result = self.encoder.encode_struct(item, &strategy).await;
        result.map_err(|e| {
            // The converter caches refusals; a registry that comes back must get a fresh call.
            self.encoder.remove_errors_from_cache();
            if e.error.starts_with("Could not get Avro bytes") {
                CodecError::Schema(e.to_string())
            } else {
                CodecError::from_registry(e)
            }
        })
    }

    /// Decodes bytes in wire format into `T`, resolving the writer's schema into `reader`.
    pub async fn decode<T: DeserializeOwned>(&self, bytes: &[u8], reader: &Schema) -> Result<T, CodecError> {
        let (id, body) = split_wire_format(bytes)?;
        let writer = self.decoder.get_schema(id).await.map_err(|e| {
            if e.retriable {
                self.decoder.remove_errors_from_cache();
            }
            CodecError::from_registry(e)
        })?;
        decode_body(&writer.parsed, reader, body)
    }
}

/// Splits Confluent wire format into schema id and Avro body.
pub fn split_wire_format(bytes: &[u8]) -> Result<(u32, &[u8]), CodecError> {
    match bytes {
        [0, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        [] => Err(CodecError::WireFormat("empty payload".into())),
        [m, ..] if *m != 0 => Err(CodecError::WireFormat(format!("magic byte is {m:#04x}, expected 0x00"))),
        _ => Err(CodecError::WireFormat(format!("payload of {} bytes is too short", bytes.len()))),
    }
}

/// Decodes an Avro body written with `writer` into `T` through the `reader` schema.
pub fn decode_body<T: DeserializeOwned>(writer: &Schema, reader: &Schema, body: &[u8]) -> Result<T, CodecError> {
    let mut cursor = body;
    let value = GenericDatumReader::builder(writer)
        .reader_schema(reader)
        .build()
        .and_then(|r| r.read_value(&mut cursor))
        .map_err(|e| CodecError::Schema(e.to_string()))?;
    if !cursor.is_empty() {
        return Err(CodecError::Schema(format!("{} bytes left after the record", cursor.len())));
    }
    apache_avro::from_value(&value).map_err(|e| CodecError::Schema(e.to_string()))
}

/// Encodes `item` as a bare Avro body (no wire-format header) with `schema`.
pub fn encode_body<T: Serialize>(schema: &Schema, item: &T) -> Result<Vec<u8>, CodecError> {
    GenericDatumWriter::builder(schema)
        .build()
        .and_then(|w| w.write_ser_to_vec(item))
        .map_err(|e| CodecError::Schema(e.to_string()))
}
