//! `kev-enricher incidents`: the incidents topic read as a table, for a person in an incident.
//!
//! The incidents topic is compacted and keyed by incident id, and every record carries the whole
//! incident, so the last record of each key is the incident as it stands: what a ksqlDB TABLE
//! shows, read here without one. `describe` adds the member events, from the enriched topic
//! around the incident's span (found by timestamp: the record timestamp is event time).
//!
//! Reading and printing are split so the tests can check the table without a terminal: this
//! module returns strings, `main` prints them.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::time::Duration;

use kev_common::kafka::{partition_count, KafkaSettings, LogEnds, RangeReader};
use kev_schemas::schema::{ENRICHED_EVENT_SCHEMA, INCIDENT_SCHEMA};
use kev_schemas::{Codec, EnrichedEvent, Incident, IncidentStatus, ResourceRef};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::EnricherConfig;

/// Why the incidents could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IncidentsError {
    #[error("reading {topic}: {source}")]
    Kafka { topic: String, source: rdkafka::error::KafkaError },
    #[error("no incident {0} in the incidents topic")]
    NotFound(String),
    #[error("formatting: {0}")]
    Format(String),
}

/// Which incidents to show: `--cluster`, `--namespace`, `--open`, `--since`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub cluster: Option<String>,
    /// Incidents whose root cause or scope is in this namespace.
    pub namespace: Option<String>,
    /// Not resolved.
    pub open_only: bool,
    /// Updated at or after this time (epoch milliseconds).
    pub since_ms: Option<i64>,
}

impl Filter {
    pub fn admits(&self, i: &Incident) -> bool {
        let in_namespace = |ns: &str| {
            i.root_cause.as_ref().and_then(|r| r.namespace.as_deref()) == Some(ns)
                || i.scope.iter().any(|r| r.namespace.as_deref() == Some(ns))
        };
        self.cluster.as_ref().is_none_or(|c| &i.cluster == c)
            && self.namespace.as_deref().is_none_or(in_namespace)
            && (!self.open_only || i.status != IncidentStatus::Resolved)
            && self.since_ms.is_none_or(|t| i.updated_at / 1000 >= t)
    }
}

/// How `incidents` prints: `-o wide|json|yaml`, a table by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Wide,
    Json,
    Yaml,
}

/// What reading the incidents topic found: the incidents as they stand, and the records that
/// did not decode (counted and logged, never dropped silently).
#[derive(Debug, Default)]
pub struct Current {
    pub incidents: Vec<Incident>,
    pub records: u64,
    pub undecodable: u64,
}

fn consumer(settings: &KafkaSettings) -> Result<BaseConsumer, rdkafka::error::KafkaError> {
    // Assigned, never subscribed: the group only names the reader for the broker's ACLs.
    settings.consumer_config(&[("group.id", "kev-enricher-incidents"), ("enable.auto.commit", "false")]).create()
}

/// Reads every record of the incidents topic (read_committed, to its end now) and keeps the
/// last of each incident id: the incidents in order of their opening.
pub async fn current(cfg: &EnricherConfig, codec: &Codec) -> Result<Current, IncidentsError> {
    let topic = cfg.topics.incidents.clone();
    let kafka = |source| IncidentsError::Kafka { topic: topic.clone(), source };
    let c = consumer(&cfg.kafka).map_err(kafka)?;
    let ends = LogEnds::new(&cfg.kafka, "kev-enricher-incidents-log-end").map_err(kafka)?;
    let n = partition_count(&cfg.kafka, &topic, Duration::from_secs(10)).map_err(kafka)?;
    let mut latest: BTreeMap<String, Incident> = BTreeMap::new();
    let mut out = Current::default();
    for p in 0..n {
        let (low, high) = ends.watermarks(&topic, p, Duration::from_secs(10)).map_err(kafka)?;
        let mut r = RangeReader::new(&c, &topic, p, low, high).map_err(kafka)?;
        while let Some(m) = r.next_message().map_err(kafka)? {
            out.records += 1;
            let Some(value) = m.payload() else { continue };
            match codec.decode::<Incident>(value, &INCIDENT_SCHEMA).await {
                Ok(i) => {
                    latest.insert(i.incident_id.clone(), i);
                }
                Err(e) => {
                    out.undecodable += 1;
                    tracing::warn!(topic, partition = p, offset = m.offset(), error = %e, "an incident record does not decode; skipped");
                }
            }
        }
    }
    out.incidents = latest.into_values().collect();
    out.incidents.sort_by(|a, b| (a.opened_at, &a.incident_id).cmp(&(b.opened_at, &b.incident_id)));
    Ok(out)
}

fn time(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| micros.to_string())
}

/// A span as kubectl writes ages: `45s`, `12m`, `3h5m`, `2d4h`.
fn span(micros: i64) -> String {
    let s = (micros / 1_000_000).max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn object(r: &ResourceRef) -> String {
    let kind = r.kind.as_deref().unwrap_or("?");
    match (r.namespace.as_deref(), r.name.as_deref()) {
        (Some(ns), Some(n)) if !ns.is_empty() => format!("{kind}/{ns}/{n}"),
        (_, Some(n)) => format!("{kind}/{n}"),
        _ => kind.to_string(),
    }
}

fn upper<T: std::fmt::Debug>(v: T) -> String {
    format!("{v:?}").to_uppercase()
}

/// The incidents as `format` says: aligned columns like `kubectl get` (Go's tabwriter, which
/// kubectl uses, ported by the `tabwriter` crate), or JSON or YAML of the whole records.
pub fn render(incidents: &[&Incident], format: Format) -> Result<String, IncidentsError> {
    let fmt = |e: &dyn std::fmt::Display| IncidentsError::Format(e.to_string());
    match format {
        Format::Json => serde_json::to_string_pretty(incidents).map(|s| s + "\n").map_err(|e| fmt(&e)),
        Format::Yaml => serde_norway::to_string(incidents).map_err(|e| fmt(&e)),
        Format::Table | Format::Wide => {
            let mut w = tabwriter::TabWriter::new(Vec::new()).padding(3);
            let wide = format == Format::Wide;
            let head = "CLUSTER\tINCIDENT\tSTATUS\tSEVERITY\tRULE\tOPENED\tLASTED";
            let _ = writeln!(w, "{head}{}", if wide { "\tMEMBERS\tCONFIDENCE\tROOT CAUSE\tSUMMARY" } else { "" });
            for i in incidents {
                let _ = write!(
                    w,
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    i.cluster,
                    i.incident_id,
                    upper(i.status),
                    upper(i.severity),
                    i.rule,
                    time(i.opened_at),
                    span(i.updated_at - i.opened_at)
                );
                if wide {
                    let root = i.root_cause.as_ref().map_or("-".to_string(), object);
                    let summary = i.summary.replace(['\t', '\n'], " ");
                    let _ = write!(w, "\t{}\t{:.2}\t{root}\t{summary}", i.member_uids.len(), i.confidence);
                }
                let _ = writeln!(w);
            }
            let bytes = w.into_inner().map_err(|e| fmt(&e))?;
            String::from_utf8(bytes).map_err(|e| fmt(&e))
        }
    }
}

/// How far around an incident's span `describe` looks for its members in the enriched topic:
/// a record's timestamp is its event time, and events of one partition arrive in roughly that
/// order, not exactly.
const MEMBER_MARGIN_MS: i64 = 10 * 60 * 1000;

/// The incident `id` as it stands and its member events in event-time order, read from the
/// enriched topic between the incident's opening and last update (with a margin).
pub async fn describe(cfg: &EnricherConfig, codec: &Codec, id: &str) -> Result<String, IncidentsError> {
    let current = current(cfg, codec).await?;
    let incident = current
        .incidents
        .iter()
        .find(|i| i.incident_id == id)
        .ok_or_else(|| IncidentsError::NotFound(id.to_string()))?;
    let members = members(cfg, codec, incident).await?;
    let mut w = tabwriter::TabWriter::new(Vec::new()).padding(2);
    let fmt = |e: &dyn std::fmt::Display| IncidentsError::Format(e.to_string());
    let line = |w: &mut tabwriter::TabWriter<Vec<u8>>, k: &str, v: String| {
        let _ = writeln!(w, "{k}:\t{v}");
    };
    line(&mut w, "Incident", incident.incident_id.clone());
    line(&mut w, "Cluster", incident.cluster.clone());
    line(&mut w, "Rule", incident.rule.clone());
    line(&mut w, "Status", upper(incident.status));
    line(&mut w, "Severity", format!("{} (confidence {:.2})", upper(incident.severity), incident.confidence));
    line(&mut w, "Opened", time(incident.opened_at));
    line(&mut w, "Updated", time(incident.updated_at));
    line(&mut w, "Resolved", incident.resolved_at.map_or("-".to_string(), time));
    line(&mut w, "Root cause", incident.root_cause.as_ref().map_or("-".to_string(), object));
    line(&mut w, "Root reason", incident.root_reason.clone().unwrap_or_else(|| "-".to_string()));
    line(&mut w, "Summary", incident.summary.replace('\n', " "));
    let _ = writeln!(w, "Scope:");
    for r in &incident.scope {
        let _ = writeln!(w, "  {}", object(r));
    }
    let missing = incident.member_uids.len() - members.iter().map(|e| &e.uid).collect::<HashSet<_>>().len();
    let _ = writeln!(
        w,
        "Events ({} observations of {} member events{}):",
        members.len(),
        incident.member_uids.len(),
        if missing > 0 { format!("; {missing} not found in the enriched topic") } else { String::new() }
    );
    let _ = writeln!(w, "  TIME\tTYPE\tREASON\tOBJECT\tCOUNT\tSEVERITY\tMESSAGE");
    for e in &members {
        let _ = writeln!(
            w,
            "  {}\t{}\t{}\t{}\t{}\t{}\t{}",
            time(e.event_time),
            e.type_.as_deref().unwrap_or("-"),
            e.reason.as_deref().unwrap_or("-"),
            e.regarding.as_ref().map_or("-".to_string(), object),
            e.count,
            upper(e.severity),
            e.note.as_deref().unwrap_or("").replace(['\t', '\n'], " ")
        );
    }
    let bytes = w.into_inner().map_err(|e| fmt(&e))?;
    String::from_utf8(bytes).map_err(|e| fmt(&e))
}

/// The enriched observations of `incident`'s member events in its span, in event-time order
/// (then uid and resource version, so the order is the same on every read).
async fn members(
    cfg: &EnricherConfig,
    codec: &Codec,
    incident: &Incident,
) -> Result<Vec<EnrichedEvent>, IncidentsError> {
    let topic = cfg.topics.enriched.clone();
    let kafka = |source| IncidentsError::Kafka { topic: topic.clone(), source };
    let uids: HashSet<&str> = incident.member_uids.iter().map(String::as_str).collect();
    let (from_ms, to_ms) =
        (incident.opened_at / 1000 - MEMBER_MARGIN_MS, incident.updated_at / 1000 + MEMBER_MARGIN_MS);
    let c = consumer(&cfg.kafka).map_err(kafka)?;
    let ends = LogEnds::new(&cfg.kafka, "kev-enricher-incidents-log-end").map_err(kafka)?;
    let n = partition_count(&cfg.kafka, &topic, Duration::from_secs(10)).map_err(kafka)?;
    let mut found = Vec::new();
    for p in 0..n {
        let (low, high) = ends.watermarks(&topic, p, Duration::from_secs(10)).map_err(kafka)?;
        // Where the span starts, by the broker's timestamp index; from the start if it cannot say.
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, p, Offset::Offset(from_ms)).map_err(kafka)?;
        let start = match c.offsets_for_times(tpl, Duration::from_secs(10)) {
            Ok(t) => match t.find_partition(&topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) if (low..=high).contains(&o) => o,
                Some(Offset::End) => high,
                _ => low,
            },
            Err(_) => low,
        };
        let mut r = RangeReader::new(&c, &topic, p, start, high).map_err(kafka)?;
        while let Some(m) = r.next_message().map_err(kafka)? {
            if m.timestamp().to_millis().is_some_and(|t| t > to_ms) {
                break;
            }
            let Some(value) = m.payload() else { continue };
            match codec.decode::<EnrichedEvent>(value, &ENRICHED_EVENT_SCHEMA).await {
                Ok(e) if e.cluster == incident.cluster && uids.contains(e.uid.as_str()) => found.push(e),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(topic, partition = p, offset = m.offset(), error = %e, "an enriched record does not decode; skipped")
                }
            }
        }
    }
    found.retain(|e| (incident.opened_at..=incident.updated_at).contains(&e.event_time));
    found.sort_by(|a, b| (a.event_time, &a.uid, &a.resource_version).cmp(&(b.event_time, &b.uid, &b.resource_version)));
    found.dedup_by(|a, b| a.uid == b.uid && a.resource_version == b.resource_version);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(id: &str, status: IncidentStatus, ns: &str) -> Incident {
        Incident {
            incident_id: id.into(),
            cluster: "c1".into(),
            rule: "missing_object".into(),
            status,
            root_cause: Some(ResourceRef {
                kind: Some("Secret".into()),
                namespace: Some(ns.into()),
                name: Some("etcd-client".into()),
                ..Default::default()
            }),
            member_uids: vec!["u1".into(), "u2".into()],
            opened_at: 1_631_440_000_000_000,
            updated_at: 1_631_440_000_000_000 + 754_000_000,
            summary: "Secret etcd-client is missing".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_table_has_kubectls_columns_aligned() {
        let a = incident("c1/inc-1", IncidentStatus::Open, "openshift-etcd");
        let b = incident("c1/inc-22", IncidentStatus::Resolved, "default");
        let table = render(&[&a, &b], Format::Table).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("CLUSTER   INCIDENT    STATUS"), "{table}");
        let status_at = lines[0].find("STATUS").unwrap();
        assert_eq!(&lines[1][status_at..status_at + 4], "OPEN", "{table}");
        assert_eq!(&lines[2][status_at..status_at + 8], "RESOLVED", "{table}");
        assert!(lines[1].contains("2021-09-12T09:46:40Z") && lines[1].contains("12m"), "{table}");
        let wide = render(&[&a], Format::Wide).unwrap();
        assert!(wide.contains("Secret/openshift-etcd/etcd-client") && wide.contains("Secret etcd-client is missing"));
    }

    #[test]
    fn filters_by_cluster_namespace_status_and_time() {
        let open = incident("c1/inc-1", IncidentStatus::Open, "openshift-etcd");
        let resolved = incident("c1/inc-2", IncidentStatus::Resolved, "default");
        let f = Filter { open_only: true, ..Default::default() };
        assert!(f.admits(&open) && !f.admits(&resolved));
        let f = Filter { namespace: Some("default".into()), ..Default::default() };
        assert!(!f.admits(&open) && f.admits(&resolved));
        let f = Filter { cluster: Some("c2".into()), ..Default::default() };
        assert!(!f.admits(&open));
        let f = Filter { since_ms: Some(open.updated_at / 1000 + 1), ..Default::default() };
        assert!(!f.admits(&open));
        let f = Filter { since_ms: Some(open.updated_at / 1000), ..Default::default() };
        assert!(f.admits(&open));
    }

    #[test]
    fn json_and_yaml_carry_whole_records() {
        let a = incident("c1/inc-1", IncidentStatus::Open, "openshift-etcd");
        let json: Vec<Incident> = serde_json::from_str(&render(&[&a], Format::Json).unwrap()).unwrap();
        assert_eq!(json, vec![a.clone()]);
        let yaml: Vec<Incident> = serde_norway::from_str(&render(&[&a], Format::Yaml).unwrap()).unwrap();
        assert_eq!(yaml, vec![a]);
    }

    #[test]
    fn spans_read_like_kubectl_ages() {
        assert_eq!(span(45_000_000), "45s");
        assert_eq!(span(754_000_000), "12m");
        assert_eq!(span(11_100_000_000), "3h5m");
        assert_eq!(span(187_200_000_000), "2d4h");
    }
}
