//! The Avro schemas, parsed once.

use std::sync::LazyLock;

use apache_avro::Schema;

/// The raw topic's value schema.
pub const RAW_RECORD: &str = include_str!("../avro/raw_record.avsc");
/// The enriched-events topic's value schema (first version; the enricher refines it).
pub const ENRICHED_EVENT: &str = include_str!("../avro/enriched_event.avsc");
/// The window-aggregates topic's value schema (first version).
pub const AGGREGATE: &str = include_str!("../avro/aggregate.avsc");
/// The incidents topic's value schema (first version).
pub const INCIDENT: &str = include_str!("../avro/incident.avsc");
/// The dead-letter topic's value schema (first version).
pub const DEAD_LETTER: &str = include_str!("../avro/dead_letter.avsc");

/// Every schema with the file it comes from, for tools that list or register them.
pub const ALL: [(&str, &str); 5] = [
    ("raw_record.avsc", RAW_RECORD),
    ("enriched_event.avsc", ENRICHED_EVENT),
    ("aggregate.avsc", AGGREGATE),
    ("incident.avsc", INCIDENT),
    ("dead_letter.avsc", DEAD_LETTER),
];

/// The parsed raw schema. The text is compiled in and tested, so a parse failure is a build defect.
pub static RAW_SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| Schema::parse_str(RAW_RECORD).expect("raw_record.avsc is valid Avro"));

/// The parsed enriched-event schema.
pub static ENRICHED_EVENT_SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| Schema::parse_str(ENRICHED_EVENT).expect("enriched_event.avsc is valid Avro"));
/// The parsed incident schema.
pub static INCIDENT_SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| Schema::parse_str(INCIDENT).expect("incident.avsc is valid Avro"));
/// The parsed dead-letter schema.
pub static DEAD_LETTER_SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| Schema::parse_str(DEAD_LETTER).expect("dead_letter.avsc is valid Avro"));
/// The parsed aggregate schema.
pub static AGGREGATE_SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| Schema::parse_str(AGGREGATE).expect("aggregate.avsc is valid Avro"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_parses_and_documents_every_field() {
        for (file, text) in ALL {
            Schema::parse_str(text).unwrap_or_else(|e| panic!("{file}: {e}"));
            let json: serde_json::Value = serde_json::from_str(text).unwrap();
            let mut undocumented = Vec::new();
            find_undocumented(&json, "", &mut undocumented);
            assert!(undocumented.is_empty(), "{file}: fields without doc: {undocumented:?}");
        }
    }

    fn find_undocumented(v: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if m.get("type").and_then(|t| t.as_str()) == Some("record") {
                    let name = m["name"].as_str().unwrap_or("?");
                    for f in m["fields"].as_array().into_iter().flatten() {
                        let fname = f["name"].as_str().unwrap_or("?");
                        if f.get("doc").and_then(|d| d.as_str()).is_none_or(str::is_empty) {
                            out.push(format!("{path}{name}.{fname}"));
                        }
                    }
                }
                for (_, child) in m {
                    find_undocumented(child, path, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|c| find_undocumented(c, path, out)),
            _ => {}
        }
    }
}
