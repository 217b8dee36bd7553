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

use crate::binary::AvroWrite;
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

/// Where the registry is and how to log in: the `registry` section of both binaries' config.
/// `Debug` prints the password as `<redacted>`.
#[derive(Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// Schema Registry base URL. Default `http://localhost:8081`.
    #[serde(default = "default_registry_url")]
    pub url: String,
    /// Basic-auth user, if the registry wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// Basic-auth password. Prefer `password_file` so it stays out of the environment.
    #[serde(default)]
    pub password: Option<String>,
    /// File holding the basic-auth password (a mounted Secret).
    #[serde(default)]
    pub password_file: Option<std::path::PathBuf>,
    /// Timeout of one registry call in milliseconds. Default 10000.
    #[serde(default = "default_registry_timeout_ms")]
    pub timeout_ms: u64,
    /// PEM file of the CA(s) that signed an HTTPS registry's certificate, trusted besides the
    /// system's. Default none.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

fn default_registry_url() -> String {
    "http://localhost:8081".into()
}
fn default_registry_timeout_ms() -> u64 {
    10_000
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            url: default_registry_url(),
            username: None,
            password: None,
            password_file: None,
            timeout_ms: default_registry_timeout_ms(),
            ca_file: None,
        }
    }
}

impl std::fmt::Debug for RegistrySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySettings")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .field("timeout_ms", &self.timeout_ms)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl RegistrySettings {
    /// `password_file` and `ca_file` when they name nothing yet, each said with its setting
    /// (as `KafkaSettings::missing_files` in kev-common does for Kafka's), for Secrets mounted
    /// from optional volumes.
    pub fn missing_files(&self) -> Vec<String> {
        [("registry.password_file", &self.password_file), ("registry.ca_file", &self.ca_file)]
            .into_iter()
            .filter_map(|(setting, path)| Some((setting, path.as_ref()?)))
            .filter(|(_, path)| !path.is_file())
            .map(|(setting, path)| format!("{setting} {}: no such file (its Secret not created yet?)", path.display()))
            .collect()
    }

    /// Basic-auth credentials from `password_file` or `password`.
    pub fn auth(&self) -> std::io::Result<RegistryAuth> {
        let password = match &self.password_file {
            Some(f) => Some(std::fs::read_to_string(f)?.trim_end().to_string()),
            None => self.password.clone(),
        };
        let ca_pem = self.ca_file.as_ref().map(std::fs::read).transpose()?;
        Ok(RegistryAuth { basic: self.username.clone().map(|u| (u, password)), bearer: None, ca_pem })
    }

    /// Checks at start that the registry accepts these credentials and its certificate is
    /// trusted, so that a wrong password ends the process with a message instead of retrying
    /// forever. `Ok(false)` when it cannot be reached (it may be starting; callers retry later
    /// as for any unavailable registry); an error when it answers 401/403 or TLS fails.
    pub async fn check_access(&self) -> Result<bool, CodecError> {
        let auth = self.readable_auth()?;
        let client = http_client(&auth)?
            .timeout(Duration::from_millis(self.timeout_ms))
            .no_proxy()
            .build()
            .map_err(|e| CodecError::RegistryRefused(e.to_string()))?;
        let mut request = client.get(format!("{}/subjects", self.url.trim_end_matches('/')));
        if let Some((user, password)) = &auth.basic {
            request = request.basic_auth(user, password.as_deref());
        }
        match request.send().await {
            Ok(r) if matches!(r.status().as_u16(), 401 | 403) => Err(CodecError::RegistryRefused(format!(
                "Schema Registry at {} refused the credentials ({}); check registry.username and the password",
                self.url,
                r.status()
            ))),
            Ok(_) => Ok(true),
            // A certificate the client does not trust fails the connection: say so, it will not pass.
            Err(e) if format!("{e:?}").contains("certificate") => Err(CodecError::RegistryRefused(format!(
                "TLS with the Schema Registry at {} failed ({e:?}); check registry.ca_file",
                self.url
            ))),
            Err(_) => Ok(false),
        }
    }

    /// A codec for this registry.
    pub fn codec(&self) -> Result<Codec, CodecError> {
        Codec::new(&self.url, &self.readable_auth()?, Duration::from_millis(self.timeout_ms))
    }

    /// [`RegistrySettings::auth`], its files' read error said as the setting at fault.
    fn readable_auth(&self) -> Result<RegistryAuth, CodecError> {
        self.auth()
            .map_err(|e| CodecError::RegistryRefused(format!("registry.password_file or ca_file cannot be read: {e}")))
    }
}

/// An HTTP client builder that trusts `auth`'s extra CA besides the system's: for the codec's
/// registry client and the start-up check alike.
fn http_client(auth: &RegistryAuth) -> Result<reqwest::ClientBuilder, CodecError> {
    let mut client = reqwest::Client::builder();
    if let Some(pem) = &auth.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| CodecError::RegistryRefused(format!("registry.ca_file is not PEM: {e}")))?;
        client = client.tls_certs_merge(certs);
    }
    Ok(client)
}

/// How to log in to the registry. `Debug` shows which method, never the secret.
#[derive(Clone, Default)]
pub struct RegistryAuth {
    pub basic: Option<(String, Option<String>)>,
    pub bearer: Option<String>,
    /// Extra trusted CA certificates (PEM) for an HTTPS registry.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("basic_user", &self.basic.as_ref().map(|(u, _)| u))
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| p.len()))
            .finish()
    }
}

/// Encoder and decoder for one registry. Cheap to share behind an `Arc`; schemas are cached.
pub struct Codec {
    encoder: AvroEncoder,
    decoder: AvroDecoder,
    /// A prepared datum reader per (writer schema id, reader schema). Preparing one resolves
    /// both schemas, which for the raw schema costs most of a millisecond: per record, it was
    /// the enricher's bottleneck. Prepared readers are leaked on purpose so they can borrow
    /// their schemas for `'static`: one per writer schema version ever seen, a handful.
    readers: std::sync::Mutex<std::collections::HashMap<(u32, usize), &'static Prepared>>,
    /// Per record name and topic: the header with the registered schema id, and a writer
    /// prepared for the schema. The converter's own path clones the schema text and its
    /// resolved names for every record; after the first record of a (schema, topic) nothing
    /// about the registration can change, so later records skip it. Leaked like `readers`:
    /// one per output schema and topic.
    writers: std::sync::Mutex<std::collections::HashMap<&'static str, Vec<(String, &'static PreparedWriter)>>>,
}

struct PreparedWriter {
    header: [u8; 5],
    writer: GenericDatumWriter<'static>,
}

/// A writer schema resolved against a reader schema, ready to decode many records.
struct Prepared {
    reader: GenericDatumReader<'static>,
    /// The writer and reader schemas are the same: decode straight into the Rust type.
    same: bool,
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
            b.build_with(http_client(auth)?).map_err(CodecError::from_registry)
        };
        Ok(Self {
            encoder: AvroEncoder::new(build()?),
            decoder: AvroDecoder::new(build()?),
            readers: Default::default(),
            writers: Default::default(),
        })
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
        full_name: &'static str,
        schema_text: &'static str,
        item: &T,
    ) -> Result<Vec<u8>, CodecError> {
        match self.writer(full_name, topic) {
            Some(w) => {
                // Raw records run to a few KiB: one allocation instead of several regrowths.
                let mut out = Vec::with_capacity(4096);
                out.extend_from_slice(&w.header);
                w.writer.write_ser(&mut out, item).map_err(|e| CodecError::Schema(e.to_string()))?;
                Ok(out)
            }
            None => self.register(topic, full_name, schema_text, item).await,
        }
    }

    /// Encodes an output record into `out` (replacing what it held) the way [`Codec::encode`]
    /// does, but with the record's own writer once its schema is registered: the same bytes
    /// (tested), several times cheaper.
    pub async fn encode_into<T: Serialize + AvroWrite>(
        &self,
        topic: &str,
        full_name: &'static str,
        schema_text: &'static str,
        item: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        out.clear();
        match self.writer(full_name, topic) {
            Some(w) => {
                out.extend_from_slice(&w.header);
                item.write_avro(out);
            }
            None => out.extend_from_slice(&self.register(topic, full_name, schema_text, item).await?),
        }
        Ok(())
    }

    /// The first record of a schema and topic: registers the schema through the converter
    /// (which encodes the record too), then prepares what later records are written with.
    async fn register<T: Serialize>(
        &self,
        topic: &str,
        full_name: &'static str,
        schema_text: &'static str,
        item: &T,
    ) -> Result<Vec<u8>, CodecError> {
        let supplied = SuppliedSchema::new(Some(full_name.to_string()), SchemaType::Avro, schema_text.to_string());
        let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(topic.to_string(), false, supplied);
        let bytes = self.encoder.encode_struct(item, &strategy).await.map_err(|e| {
            // The converter caches refusals; a registry that comes back must get a fresh call.
            self.encoder.remove_errors_from_cache();
            if e.error.starts_with("Could not get Avro bytes") {
                CodecError::Schema(e.to_string())
            } else {
                // Who reads this is whoever must fix the registry: say which subject and what
                // the registry answered, not the converter's wording around it.
                let said = e.cause.as_deref().unwrap_or(&e.error);
                let what = format!("registering {full_name} under subject {topic}-value: {}: {said}", e.error);
                if e.retriable {
                    CodecError::RegistryUnavailable(what)
                } else {
                    CodecError::RegistryRefused(what)
                }
            }
        })?;
        // Registered: what follows for this schema and topic is written directly, with the
        // same header, so the bytes are the same.
        let (id, _) = split_wire_format(&bytes)?;
        let schema = Schema::parse_str(schema_text).map_err(|e| CodecError::Schema(e.to_string()))?;
        let schema: &'static Schema = Box::leak(Box::new(schema));
        let writer = GenericDatumWriter::builder(schema).build().map_err(|e| CodecError::Schema(e.to_string()))?;
        let mut header = [0u8; 5];
        header[1..].copy_from_slice(&id.to_be_bytes());
        let prepared: &'static PreparedWriter = Box::leak(Box::new(PreparedWriter { header, writer }));
        let mut writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        let per_topic = writers.entry(full_name).or_default();
        if !per_topic.iter().any(|(t, _)| t == topic) {
            per_topic.push((topic.to_string(), prepared));
        }
        Ok(bytes)
    }

    fn writer(&self, full_name: &str, topic: &str) -> Option<&'static PreparedWriter> {
        let writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        writers.get(full_name)?.iter().find(|(t, _)| t == topic).map(|(_, w)| *w)
    }

    /// Decodes bytes in wire format into `T`, resolving the writer's schema into `reader`.
    pub async fn decode<T: DeserializeOwned>(&self, bytes: &[u8], reader: &'static Schema) -> Result<T, CodecError> {
        let (id, body) = split_wire_format(bytes)?;
        let prepared = self.prepared(id, reader).await?;
        read(&prepared.reader, prepared.same, body)
    }

    /// Decodes a raw record without its Kubernetes objects (`core` and `events_v1` are
    /// `None`): what the enricher reads. Bodies written with this build's raw schema are read
    /// by [`crate::lean`], several times faster; others through schema resolution.
    pub async fn decode_raw_lean(&self, bytes: &[u8]) -> Result<RawRecord, CodecError> {
        let (id, body) = split_wire_format(bytes)?;
        let prepared = self.prepared(id, &RAW_SCHEMA).await?;
        if prepared.same {
            return crate::lean::decode_raw_lean(body);
        }
        let mut record: RawRecord = read(&prepared.reader, false, body)?;
        if let Some(e) = record.event.as_mut() {
            (e.core, e.events_v1) = (None, None);
        }
        Ok(record)
    }

    /// The reader of bodies written with schema `id`, read as `reader`.
    async fn prepared(&self, id: u32, reader: &'static Schema) -> Result<&'static Prepared, CodecError> {
        let key = (id, reader as *const Schema as usize);
        let cached = self.readers.lock().unwrap_or_else(|e| e.into_inner()).get(&key).copied();
        if let Some(p) = cached {
            return Ok(p);
        }
        let writer = self.decoder.get_schema(id).await.map_err(|e| {
            if e.retriable {
                self.decoder.remove_errors_from_cache();
            }
            CodecError::from_registry(e)
        })?;
        let writer: &'static Schema = Box::leak(Box::new(writer.parsed.clone()));
        let same = writer.canonical_form() == reader.canonical_form();
        let builder = GenericDatumReader::builder(writer);
        let built = if same { builder.build() } else { builder.reader_schema(reader).build() };
        let reader = built.map_err(|e| CodecError::Schema(e.to_string()))?;
        let p: &'static Prepared = Box::leak(Box::new(Prepared { reader, same }));
        Ok(*self.readers.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_insert(p))
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

/// Decodes an Avro body written with `writer` into `T` through the `reader` schema, the way
/// [`Codec::decode`] does (without its cache of prepared readers).
pub fn decode_body<T: DeserializeOwned>(writer: &Schema, reader: &Schema, body: &[u8]) -> Result<T, CodecError> {
    let same = writer.canonical_form() == reader.canonical_form();
    let builder = GenericDatumReader::builder(writer);
    let built = if same { builder.build() } else { builder.reader_schema(reader).build() };
    read(&built.map_err(|e| CodecError::Schema(e.to_string()))?, same, body)
}

/// Reads one body: straight into `T` when the writer's schema is the reader's (no
/// intermediate `Value`, several times faster), else through schema resolution.
fn read<T: DeserializeOwned>(reader: &GenericDatumReader<'_>, same: bool, body: &[u8]) -> Result<T, CodecError> {
    let mut cursor = body;
    let item = if same {
        reader.read_deser(&mut cursor).map_err(|e| CodecError::Schema(e.to_string()))?
    } else {
        let value = reader.read_value(&mut cursor).map_err(|e| CodecError::Schema(e.to_string()))?;
        apache_avro::from_value(&value).map_err(|e| CodecError::Schema(e.to_string()))?
    };
    if !cursor.is_empty() {
        return Err(CodecError::Schema(format!("{} bytes left after the record", cursor.len())));
    }
    Ok(item)
}

/// Encodes `item` as a bare Avro body (no wire-format header) with `schema`.
pub fn encode_body<T: Serialize>(schema: &Schema, item: &T) -> Result<Vec<u8>, CodecError> {
    GenericDatumWriter::builder(schema)
        .build()
        .and_then(|w| w.write_ser_to_vec(item))
        .map_err(|e| CodecError::Schema(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::RegistrySettings;

    /// The password and CA files of the registry, reported while absent, each by its setting.
    #[test]
    fn missing_files_names_each_absent_registry_file() {
        let dir = std::env::temp_dir().join(format!("kev-registry-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = RegistrySettings {
            password_file: Some(dir.join("password")),
            ca_file: Some(dir.join("ca.crt")),
            ..Default::default()
        };
        let missing = s.missing_files();
        assert_eq!(missing.len(), 2, "{missing:?}");
        assert!(missing[0].starts_with("registry.password_file") && missing[0].contains("no such file"));
        assert!(missing[1].starts_with("registry.ca_file"));
        std::fs::write(dir.join("password"), "x").unwrap();
        std::fs::write(dir.join("ca.crt"), "pem").unwrap();
        assert!(s.missing_files().is_empty());
        assert!(RegistrySettings::default().missing_files().is_empty(), "nothing to read, nothing missing");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
