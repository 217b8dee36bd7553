//! The ksqlDB and Flink SQL in `deploy/` reads kev's topics unchanged: every column it names
//! is a field of the Avro schema of the topic it reads (or a name the SQL itself introduces),
//! Flink's source tables declare exactly the schema's fields in order, and the reader schemas
//! Flink embeds are the `.avsc` files with only docs and timestamp logical types dropped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn avsc(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo().join(path)).unwrap()).unwrap()
}

/// Every field name in a schema, nested records included (`regarding.kind` gives `kind`).
fn field_names(schema: &Value, out: &mut BTreeSet<String>) {
    match schema {
        Value::Object(m) => {
            for f in m.get("fields").and_then(Value::as_array).into_iter().flatten() {
                out.insert(f["name"].as_str().unwrap().to_lowercase());
                field_names(&f["type"], out);
            }
            if let Some(items) = m.get("items") {
                field_names(items, out);
            }
        }
        Value::Array(branches) => branches.iter().for_each(|b| field_names(b, out)),
        _ => {}
    }
}

/// The `-- source: NAME = schemas/avro/x.avsc` lines: which schema each source reads.
fn sources(sql: &str) -> Vec<(String, String)> {
    let line = Regex::new(r"(?m)^-- source: (\S+) = (\S+)$").unwrap();
    line.captures_iter(sql).map(|c| (c[1].to_string(), c[2].to_string())).collect()
}

/// The SQL without comments and string literals, which may say anything.
fn code(sql: &str) -> String {
    let comments = Regex::new(r"--[^\n]*").unwrap();
    let strings = Regex::new(r"'(?:[^']|'')*'").unwrap();
    strings.replace_all(&comments.replace_all(sql, ""), "''").into_owned()
}

/// SQL words that are neither columns nor names: keywords, types, time units and functions
/// called without parentheses.
const WORDS: &str = "add all and any array as asc at avro between bigint boolean by case cast char create cross \
    current_timestamp date day days decimal delimited desc descriptor distinct double drop earliest else emit end \
    escape except exists false first float for format from full grace group having hour hours if ilike in inner \
    int integer interval is join json kafka key last latest left like limit map minute minutes month not null \
    nulls of on or order outer over partition period primary raw right row second seconds select set smallint \
    stream string table tables then timestamp timestamp_ltz tinyint to true union unnest using value values \
    varchar view watermark week when where window with within year changes final size advance hopping tumbling \
    session metadata virtual enforced insert into temporary system_time proctime overwrite execute \
    statement begin kafka_topic key_format value_format partitions";

struct Names {
    /// Identifiers in column positions, lower-cased.
    used: BTreeSet<String>,
    /// Names the SQL introduces: sources, views, aliases and declared or computed columns.
    introduced: BTreeSet<String>,
}

fn names(sql: &str) -> Names {
    let code = code(sql);
    let ident = Regex::new(r"`([^`]+)`|\b([A-Za-z_][A-Za-z0-9_]*)\b(\s*\()?").unwrap();
    let introduced_by = Regex::new(
        r"(?i)\b(?:AS|STREAM(?:\s+IF\s+NOT\s+EXISTS)?|TABLE(?:\s+IF\s+NOT\s+EXISTS)?|VIEW(?:\s+IF\s+NOT\s+EXISTS)?|INTO)\s+`?([A-Za-z_][A-Za-z0-9_]*)`?",
    )
    .unwrap();
    let mut introduced: BTreeSet<String> = introduced_by.captures_iter(&code).map(|c| c[1].to_lowercase()).collect();
    // A column list after an alias: `UNNEST(...) AS m (member_uid)`.
    let alias_columns = Regex::new(r"(?i)\bAS\s+\w+\s*\(\s*`?(\w+)`?\s*\)").unwrap();
    introduced.extend(alias_columns.captures_iter(&code).map(|c| c[1].to_lowercase()));
    // Columns declared or computed in CREATE TABLE (...) of sinks and computed columns:
    // `name` TYPE or `name` AS expr at the start of a line of a column list.
    let declared = Regex::new(r"(?m)^\s*`?(\w+)`?\s+(?:[A-Z]+|AS\b)").unwrap();
    let words: BTreeSet<&str> = WORDS.split_whitespace().collect();
    let mut used = BTreeSet::new();
    for c in ident.captures_iter(&code) {
        let (name, call) = match (c.get(1), c.get(2)) {
            (Some(q), _) => (q.as_str(), false),
            (None, Some(w)) => (w.as_str(), c.get(3).is_some()),
            _ => unreachable!(),
        };
        let lower = name.to_lowercase();
        if call || words.contains(lower.as_str()) || name.chars().all(|ch| ch.is_ascii_digit()) {
            continue;
        }
        used.insert(lower);
    }
    for c in declared.captures_iter(&code) {
        let lower = c[1].to_lowercase();
        if !words.contains(lower.as_str()) {
            introduced.insert(lower);
        }
    }
    Names { used, introduced }
}

fn check_columns(file: &str) {
    let sql = std::fs::read_to_string(repo().join(file)).unwrap();
    let sources = sources(&sql);
    assert!(sources.len() >= 3, "{file}: no `-- source:` lines");
    let mut fields = BTreeSet::new();
    for (_, schema) in &sources {
        field_names(&avsc(schema), &mut fields);
    }
    let Names { used, introduced } = names(&sql);
    let unknown: Vec<&String> =
        used.iter().filter(|n| !fields.contains(*n) && !introduced.contains(*n) && *n != "kafka_key").collect();
    assert!(unknown.is_empty(), "{file} names columns that no kev schema has: {unknown:?}");
    // The check has teeth: the SQL reads real fields of every schema it declares.
    for (name, schema) in &sources {
        let mut own = BTreeSet::new();
        field_names(&avsc(schema), &mut own);
        assert!(own.iter().any(|f| used.contains(f)), "{file}: nothing of {name} ({schema}) is read");
    }
}

#[test]
fn ksql_names_only_columns_of_the_kev_schemas() {
    check_columns("deploy/ksql/kev.sql");
}

#[test]
fn flink_names_only_columns_of_the_kev_schemas() {
    check_columns("deploy/flink/kev.sql");
}

/// The avsc as Flink is told to read it: docs dropped, timestamp logical types dropped.
fn flink_reader(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let timestamp = m.get("logicalType").and_then(Value::as_str).is_some_and(|t| t.starts_with("timestamp"));
            if timestamp && m["type"] == "long" {
                return Value::String("long".into());
            }
            Value::Object(m.iter().filter(|(k, _)| *k != "doc").map(|(k, v)| (k.clone(), flink_reader(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(flink_reader).collect()),
        other => other.clone(),
    }
}

/// Each Flink source declares the schema's top-level fields, in order, after `kafka_key` and
/// before its computed columns, and embeds the schema it reads with.
#[test]
fn flink_sources_declare_exactly_their_schema() {
    let sql = std::fs::read_to_string(repo().join("deploy/flink/kev.sql")).unwrap();
    // Declared columns (`name` TYPE), not computed ones (`name` AS expr).
    let column = Regex::new(r"(?m)^  `(\w+)` ([A-Z]+)").unwrap();
    let embedded = Regex::new(r"'value\.avro-confluent\.schema' = '((?:[^']|'')*)'").unwrap();
    for (name, schema) in sources(&sql) {
        let start = sql.find(&format!("CREATE TABLE IF NOT EXISTS {name} (")).unwrap_or_else(|| panic!("{name}"));
        let body = &sql[start..];
        let body = &body[..body.find(") WITH (").unwrap()];
        let declared: Vec<String> =
            column.captures_iter(body).filter(|c| &c[2] != "AS").map(|c| c[1].to_string()).collect();
        let avsc = avsc(&schema);
        let fields: Vec<String> =
            avsc["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_string()).collect();
        assert_eq!(declared[0], "kafka_key", "{name}");
        assert_eq!(declared[1..], fields[..], "{name} does not declare {schema}'s fields in order");

        let with = &sql[start..];
        let with = &with[..with.find(");").unwrap()];
        let text =
            embedded.captures(with).unwrap_or_else(|| panic!("{name} embeds no reader schema"))[1].replace("''", "'");
        let embedded: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(embedded, flink_reader(&avsc), "{name}: the embedded schema drifted from {schema}");
    }
}
