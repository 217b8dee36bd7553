//! The Avro binary form of the enricher's output records, written field by field.
//!
//! The enricher writes 1.6 output records per raw record. Through `apache-avro`'s serde writer
//! each record is walked against its schema (field lookups by name, union branch searches,
//! checks per value): in the profile of the live enricher that was the largest single part of
//! its own work. The binary form of a record is fixed by its schema, so writing it directly is
//! a handful of varints and copies. The tests in `tests/binary.rs` hold these writers to the
//! generic one: the same bytes for every output of the real dumps and for arbitrary records,
//! so a schema change that is not made here too fails them.

use crate::enriched::{Aggregate, DeadLetter, EnrichedEvent, Incident, IncidentStatus, Severity};
use crate::raw::ResourceRef;

/// A record that can write its own Avro binary body (no wire-format header).
pub trait AvroWrite {
    fn write_avro(&self, out: &mut Vec<u8>);
}

/// `long` and `int`: zig-zag, then base-128 varint, least significant group first.
fn long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn string(out: &mut Vec<u8>, s: &str) {
    long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

/// `["null", T]`: the branch index (0 or 1, zig-zagged to 0 or 2), then the value if any.
fn nullable<T>(out: &mut Vec<u8>, v: Option<T>, write: impl FnOnce(&mut Vec<u8>, T)) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(2);
            write(out, v);
        }
    }
}

fn opt_string(out: &mut Vec<u8>, s: Option<&str>) {
    nullable(out, s, string);
}

/// Arrays are written as one block of all items, then the empty block that ends them.
fn array<T>(out: &mut Vec<u8>, items: &[T], mut item: impl FnMut(&mut Vec<u8>, &T)) {
    if !items.is_empty() {
        long(out, items.len() as i64);
        for i in items {
            item(out, i);
        }
    }
    out.push(0);
}

/// The symbol index in `Severity`'s symbol list (`INFO, WARNING, ERROR, CRITICAL, UNKNOWN`).
fn severity(out: &mut Vec<u8>, s: Severity) {
    let i = match s {
        Severity::Info => 0,
        Severity::Warning => 1,
        Severity::Error => 2,
        Severity::Critical => 3,
        Severity::Unknown => 4,
    };
    long(out, i);
}

fn resource_ref(out: &mut Vec<u8>, r: &ResourceRef) {
    opt_string(out, r.kind.as_deref());
    opt_string(out, r.namespace.as_deref());
    opt_string(out, r.name.as_deref());
    opt_string(out, r.uid.as_deref());
    opt_string(out, r.api_version.as_deref());
    opt_string(out, r.field_path.as_deref());
}

fn opt_resource_ref(out: &mut Vec<u8>, r: Option<&ResourceRef>) {
    nullable(out, r, resource_ref);
}

impl AvroWrite for EnrichedEvent {
    fn write_avro(&self, out: &mut Vec<u8>) {
        string(out, &self.cluster);
        string(out, &self.uid);
        string(out, &self.resource_version);
        long(out, self.event_time);
        opt_string(out, self.namespace.as_deref());
        opt_resource_ref(out, self.regarding.as_ref());
        opt_string(out, self.type_.as_deref());
        opt_string(out, self.reason.as_deref());
        opt_string(out, self.note.as_deref());
        opt_string(out, self.reporting_controller.as_deref());
        opt_string(out, self.host.as_deref());
        long(out, self.count);
        long(out, self.new_occurrences);
        severity(out, self.severity);
        string(out, &self.category);
        string(out, &self.fingerprint);
        string(out, &self.template);
        long(out, self.raw_offset);
        long(out, self.raw_partition.into());
    }
}

impl AvroWrite for Aggregate {
    fn write_avro(&self, out: &mut Vec<u8>) {
        string(out, &self.cluster);
        string(out, &self.fingerprint);
        long(out, self.window_start);
        long(out, self.window_end);
        opt_string(out, self.namespace.as_deref());
        opt_string(out, self.kind.as_deref());
        opt_string(out, self.reason.as_deref());
        string(out, &self.template);
        string(out, &self.category);
        severity(out, self.severity);
        long(out, self.count);
        long(out, self.distinct_objects);
        long(out, self.first_seen);
        long(out, self.last_seen);
        array(out, &self.top_objects, |out, s| string(out, s));
        opt_string(out, self.sample_message.as_deref());
        out.push(u8::from(self.recurring));
        long(out, self.late_events);
    }
}

impl AvroWrite for Incident {
    fn write_avro(&self, out: &mut Vec<u8>) {
        string(out, &self.incident_id);
        string(out, &self.cluster);
        string(out, &self.rule);
        let status = match self.status {
            IncidentStatus::Open => 0,
            IncidentStatus::Updated => 1,
            IncidentStatus::Resolved => 2,
            IncidentStatus::Unknown => 3,
        };
        long(out, status);
        severity(out, self.severity);
        out.extend_from_slice(&self.confidence.to_le_bytes());
        string(out, &self.summary);
        opt_resource_ref(out, self.root_cause.as_ref());
        opt_string(out, self.root_reason.as_deref());
        array(out, &self.scope, resource_ref);
        array(out, &self.member_uids, |out, s| string(out, s));
        long(out, self.opened_at);
        long(out, self.updated_at);
        nullable(out, self.resolved_at, long);
        opt_string(out, self.merged_into.as_deref());
        nullable(out, self.contributing_rules.as_deref(), |out, rules| array(out, rules, |out, s| string(out, s)));
        opt_string(out, self.causal_chain.as_deref());
        opt_string(out, self.signature.as_deref());
        nullable(out, self.previous_count, long);
        nullable(out, self.first_seen, long);
        nullable(out, self.last_seen, long);
        opt_string(out, self.last_incident_id.as_deref());
    }
}

fn opt_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    nullable(out, b, |out, b| {
        long(out, b.len() as i64);
        out.extend_from_slice(b);
    });
}

impl AvroWrite for DeadLetter {
    fn write_avro(&self, out: &mut Vec<u8>) {
        string(out, &self.source_topic);
        long(out, self.source_partition.into());
        long(out, self.source_offset);
        string(out, &self.error_kind);
        string(out, &self.error);
        opt_bytes(out, self.key.as_deref());
        opt_bytes(out, self.value.as_deref());
        long(out, self.seen_at);
    }
}
