-- kev on ksqlDB: streams over the enricher's output topics, the latest state of every incident,
-- incidents joined with the window aggregates of their member events, and windowed counts of
-- enriched events per workload. Run it with `RUN SCRIPT` (deploy/ksql/README.md).
--
-- source: KEV_ENRICHED = schemas/avro/enriched_event.avsc
-- source: KEV_AGGREGATES = schemas/avro/aggregate.avsc
-- source: KEV_AGGREGATES_BY_KEY = schemas/avro/aggregate.avsc
-- source: KEV_INCIDENTS = schemas/avro/incident.avsc
--
-- Conventions of this file:
-- * Value columns are not declared: ksqlDB reads them from the Schema Registry subject
--   `<topic>-value` that the enricher registers (TopicNameStrategy), so they always match the
--   .avsc. ksqlDB upper-cases them (CLUSTER, EVENT_TIME, REGARDING->KIND); the unquoted
--   snake_case names below are the Avro field names and match them case-insensitively.
--   Declaring them instead would make ksqlDB register a schema of its own under kev's subject
--   whenever the enricher has not written to the topic yet, and kev's next registration would
--   then be refused as incompatible. Run this file after the enricher has emitted at least one
--   record to each topic (an inferred CREATE fails cleanly until then).
-- * `kafka_key` is the only declared column: the Kafka record key, a plain UTF-8 string (KAFKA
--   format) written by the enricher (enricher/src/records.rs, Record::key). It is not an Avro field.
-- * Every other name that is not an Avro field is an alias introduced with AS.
-- * Timestamps in kev's values are microseconds since the epoch (timestamp-micros). Each record's
--   Kafka timestamp (ROWTIME, milliseconds) is its event time: event time for an enriched event,
--   window end for an aggregate, last update for an incident. Windows and time arithmetic here
--   use ROWTIME, so they do not depend on how ksqlDB maps timestamp-micros.
-- * Aggregate windows: the enricher's tumbling windows are `engine.window_ms` long (default
--   60000) and aligned to the epoch. 60000 below must equal that setting.

SET 'auto.offset.reset' = 'earliest';

-- ---------------------------------------------------------------------------------------------
-- Sources
-- ---------------------------------------------------------------------------------------------

-- Enriched events (kev.events.enriched, delete policy), keyed by `cluster/namespace/kind/name`
-- of the regarding object. After a crash the enricher may re-emit a record byte for byte: a count
-- of records double-counts those; `(uid, resource_version)` identifies an observation.
CREATE STREAM IF NOT EXISTS KEV_ENRICHED (
  kafka_key STRING KEY
) WITH (
  KAFKA_TOPIC = 'kev.events.enriched',
  KEY_FORMAT = 'KAFKA',
  VALUE_FORMAT = 'AVRO'
);

-- Window aggregates (kev.events.aggregates, compacted), keyed by `<fingerprint>/<window_start>`
-- (window start in microseconds). A window is emitted when it closes and again, under the same
-- key, for every late event counted into it: the stream has every emission ...
CREATE STREAM IF NOT EXISTS KEV_AGGREGATES (
  kafka_key STRING KEY
) WITH (
  KAFKA_TOPIC = 'kev.events.aggregates',
  KEY_FORMAT = 'KAFKA',
  VALUE_FORMAT = 'AVRO'
);

-- ... and the table over the same topic keeps the newest per key, the corrected value.
CREATE TABLE IF NOT EXISTS KEV_AGGREGATES_BY_KEY (
  kafka_key STRING PRIMARY KEY
) WITH (
  KAFKA_TOPIC = 'kev.events.aggregates',
  KEY_FORMAT = 'KAFKA',
  VALUE_FORMAT = 'AVRO'
);

-- Incidents (kev.incidents, compacted), keyed by incident_id; every record is the whole incident
-- (status OPEN, then UPDATED, then RESOLVED).
CREATE STREAM IF NOT EXISTS KEV_INCIDENTS (
  kafka_key STRING KEY
) WITH (
  KAFKA_TOPIC = 'kev.incidents',
  KEY_FORMAT = 'KAFKA',
  VALUE_FORMAT = 'AVRO'
);

-- ---------------------------------------------------------------------------------------------
-- Latest state of every incident
-- ---------------------------------------------------------------------------------------------

-- One row per incident_id with the values of its newest record. LATEST_BY_OFFSET skips nulls,
-- which is right here: resolved_at is null until the RESOLVED record, merged_into is null until
-- an incident's last record says which incident it was merged into, and an incident is never
-- reopened (a new root cause opens a new incident_id). STRUCT and ARRAY arguments (root_cause,
-- scope, member_uids) need ksqlDB 0.25 or later.
CREATE TABLE IF NOT EXISTS KEV_INCIDENT_LATEST WITH (
  KAFKA_TOPIC = 'kev.ksql.incident_latest',
  PARTITIONS = 3,
  KEY_FORMAT = 'KAFKA',
  VALUE_FORMAT = 'AVRO'
) AS
SELECT
  incident_id,
  LATEST_BY_OFFSET(cluster) AS cluster,
  LATEST_BY_OFFSET(rule) AS rule,
  LATEST_BY_OFFSET(status) AS status,
  LATEST_BY_OFFSET(severity) AS severity,
  LATEST_BY_OFFSET(confidence) AS confidence,
  LATEST_BY_OFFSET(summary) AS summary,
  LATEST_BY_OFFSET(root_cause) AS root_cause,
  LATEST_BY_OFFSET(root_reason) AS root_reason,
  LATEST_BY_OFFSET(scope) AS scope,
  LATEST_BY_OFFSET(member_uids) AS member_uids,
  LATEST_BY_OFFSET(opened_at) AS opened_at,
  LATEST_BY_OFFSET(updated_at) AS updated_at,
  LATEST_BY_OFFSET(resolved_at) AS resolved_at,
  -- Fields added after the first version of the schema; null in older records.
  LATEST_BY_OFFSET(merged_into) AS merged_into,
  LATEST_BY_OFFSET(contributing_rules) AS contributing_rules,
  LATEST_BY_OFFSET(causal_chain) AS causal_chain,
  LATEST_BY_OFFSET(signature) AS signature,
  LATEST_BY_OFFSET(previous_count) AS previous_count,
  LATEST_BY_OFFSET(last_incident_id) AS last_incident_id
FROM KEV_INCIDENTS
GROUP BY incident_id
EMIT CHANGES;

-- ---------------------------------------------------------------------------------------------
-- Enriched events with derived columns (used by both downstream queries)
-- ---------------------------------------------------------------------------------------------

-- event_time_ms: the record's event time in milliseconds (ROWTIME is only reliable in a
-- single-source query; in a join it is the joined record's time).
-- workload_namespace / workload: the owner workload of the regarding object, derived the way the
-- enricher's correlator does it (engine/src/correlate.rs, owner_of_pod): a Pod named
-- web-7d4b9c8f6d-x2v9q or fluentd-k8z7w belongs to `web` / `fluentd` (ReplicaSet and pod hashes
-- stripped), db-0 to `db` (StatefulSet ordinal); a ReplicaSet web-7d4b9c8f6d to `web`; a
-- Deployment, StatefulSet, DaemonSet, Job or CronJob is its own workload. Other objects (Node,
-- PersistentVolumeClaim, ...) are named `Kind/name` so they do not mix with workloads.
-- aggregate_key: the key of the window aggregate this observation was counted into, built
-- exactly as the enricher builds it (`<fingerprint>/<window start in microseconds>`).
CREATE STREAM IF NOT EXISTS KEV_ENRICHED_EXT WITH (
  KAFKA_TOPIC = 'kev.ksql.enriched_ext',
  PARTITIONS = 3,
  KEY_FORMAT = 'KAFKA',
  VALUE_FORMAT = 'AVRO'
) AS
SELECT
  kafka_key,
  cluster,
  uid,
  resource_version,
  fingerprint,
  severity,
  new_occurrences,
  ROWTIME AS event_time_ms,
  COALESCE(regarding->namespace, namespace, '') AS workload_namespace,
  COALESCE(
    CASE
      WHEN regarding->kind = 'Pod' THEN COALESCE(
        REGEXP_EXTRACT('^(.+?)(?:-[bcdfghjklmnpqrstvwxz2456789]{6,10})?-[bcdfghjklmnpqrstvwxz2456789]{5}$', regarding->name, 1),
        REGEXP_EXTRACT('^(.+)-[0-9]+$', regarding->name, 1),
        regarding->name)
      WHEN regarding->kind = 'ReplicaSet' THEN COALESCE(
        REGEXP_EXTRACT('^(.+)-[bcdfghjklmnpqrstvwxz2456789]{6,10}$', regarding->name, 1),
        regarding->name)
      WHEN regarding->kind IN ('Deployment', 'StatefulSet', 'DaemonSet', 'Job', 'CronJob') THEN regarding->name
      ELSE COALESCE(regarding->kind, '?') + '/' + COALESCE(regarding->name, '?')
    END,
    '') AS workload,
  fingerprint + '/' + CAST((ROWTIME - (ROWTIME % 60000)) * 1000 AS STRING) AS aggregate_key
FROM KEV_ENRICHED
EMIT CHANGES;

-- ---------------------------------------------------------------------------------------------
-- Enriched events by workload: tumbling 5-minute counts
-- ---------------------------------------------------------------------------------------------

-- Keyed by (cluster, workload_namespace, workload) and the window, hence a JSON key (the KAFKA
-- format holds one column only). Updated as events arrive (EMIT CHANGES); events up to 1 minute
-- late still count (the enricher allows 30 s by default).
-- observations counts records, so a crash re-emission counts twice; occurrences sums
-- new_occurrences (what the observation added to the event's count, as the aggregates do);
-- approx_distinct_events is COUNT_DISTINCT (HyperLogLog) of the Event uids.
CREATE TABLE IF NOT EXISTS KEV_WORKLOAD_COUNTS WITH (
  KAFKA_TOPIC = 'kev.ksql.workload_counts',
  PARTITIONS = 3,
  KEY_FORMAT = 'JSON',
  VALUE_FORMAT = 'AVRO'
) AS
SELECT
  cluster,
  workload_namespace,
  workload,
  WINDOWSTART AS window_start_ms,
  WINDOWEND AS window_end_ms,
  COUNT(*) AS observations,
  SUM(new_occurrences) AS occurrences,
  COUNT_DISTINCT(uid) AS approx_distinct_events,
  SUM(CASE WHEN severity IN ('ERROR', 'CRITICAL') THEN 1 ELSE 0 END) AS error_observations
FROM KEV_ENRICHED_EXT
WINDOW TUMBLING (SIZE 5 MINUTES, GRACE PERIOD 1 MINUTE)
GROUP BY cluster, workload_namespace, workload
EMIT CHANGES;

-- ---------------------------------------------------------------------------------------------
-- Incidents with their aggregates
-- ---------------------------------------------------------------------------------------------
--
-- The relation: an incident lists the uids of its member events (member_uids); each member
-- event's enriched observation carries its fingerprint, and its event time falls in one window
-- of the enricher's tumbling windows; the aggregate of that (fingerprint, window) is the one the
-- observation was counted into, and its key is `<fingerprint>/<window start>`
-- (KEV_ENRICHED_EXT.aggregate_key). So:
--   incident --member_uids[]--> enriched event (cluster, uid) --aggregate_key--> aggregate.
-- Nothing coarser links them: incidents carry no fingerprint, and aggregates no uid. The result
-- has one row per (incident, aggregate window) with the incident's latest state and the
-- aggregate's latest (late-corrected) counts. Only observations that added occurrences are in
-- an aggregate; an observation that added none (or arrived after the window's late retention)
-- has no aggregate and no row.

-- 1. One row per member uid of every incident record.
CREATE STREAM IF NOT EXISTS KEV_INCIDENT_MEMBERS WITH (
  KAFKA_TOPIC = 'kev.ksql.incident_members',
  PARTITIONS = 3,
  KEY_FORMAT = 'KAFKA',
  VALUE_FORMAT = 'AVRO'
) AS
SELECT
  kafka_key,
  incident_id,
  cluster,
  EXPLODE(member_uids) AS member_uid
FROM KEV_INCIDENTS
EMIT CHANGES;

-- 2. Each member uid with the enriched observations of that event. An incident record's ROWTIME
-- is its last update; its members are at most that old, so the join looks up to 6 hours back
-- (an incident spanning more than that loses its oldest members here; raise it if yours do).
-- The grace period covers records the enricher emits late on purpose: the UPDATED/RESOLVED
-- records of a sweep carry the time of the last member, up to `engine.incident_quiet_ms`
-- (default 10 minutes) behind. Both sides are repartitioned by uid (same partition count: 3).
CREATE STREAM IF NOT EXISTS KEV_INCIDENT_MEMBER_EVENTS WITH (
  KAFKA_TOPIC = 'kev.ksql.incident_member_events',
  PARTITIONS = 3,
  KEY_FORMAT = 'KAFKA',
  VALUE_FORMAT = 'AVRO'
) AS
SELECT
  m.member_uid AS member_uid,
  m.incident_id AS incident_id,
  e.cluster AS cluster,
  e.resource_version AS resource_version,
  e.fingerprint AS fingerprint,
  e.event_time_ms AS event_time_ms,
  e.aggregate_key AS aggregate_key,
  m.incident_id + '|' + e.aggregate_key AS incident_window_key
FROM KEV_INCIDENT_MEMBERS AS m
  JOIN KEV_ENRICHED_EXT AS e WITHIN (6 HOURS, 1 MINUTE) GRACE PERIOD 15 MINUTES
  ON m.member_uid = e.uid
WHERE m.cluster = e.cluster
EMIT CHANGES;

-- 3. One row per (incident, aggregate window), whatever the number of incident records and
-- re-emissions that produced it.
CREATE TABLE IF NOT EXISTS KEV_INCIDENT_WINDOWS WITH (
  KAFKA_TOPIC = 'kev.ksql.incident_windows',
  PARTITIONS = 3,
  KEY_FORMAT = 'KAFKA',
  VALUE_FORMAT = 'AVRO'
) AS
SELECT
  incident_window_key,
  LATEST_BY_OFFSET(incident_id) AS incident_id,
  LATEST_BY_OFFSET(aggregate_key) AS aggregate_key,
  COUNT_DISTINCT(member_uid) AS approx_member_events
FROM KEV_INCIDENT_MEMBER_EVENTS
GROUP BY incident_window_key
EMIT CHANGES;

-- 4. The aggregate of each (incident, window): a foreign-key table-table join, so the row
-- appears when the window closes (usually after the incident opened) and follows late
-- corrections of the aggregate.
CREATE TABLE IF NOT EXISTS KEV_INCIDENT_WINDOW_AGGREGATES WITH (
  KAFKA_TOPIC = 'kev.ksql.incident_window_aggregates',
  PARTITIONS = 3,
  KEY_FORMAT = 'KAFKA',
  VALUE_FORMAT = 'AVRO'
) AS
SELECT
  w.incident_window_key AS incident_window_key,
  w.incident_id AS incident_id,
  w.approx_member_events AS approx_member_events,
  a.kafka_key AS aggregate_key,
  a.cluster AS cluster,
  a.fingerprint AS fingerprint,
  a.window_start AS window_start,
  a.window_end AS window_end,
  a.namespace AS namespace,
  a.kind AS kind,
  a.reason AS reason,
  a.template AS template,
  a.category AS category,
  a.severity AS aggregate_severity,
  a.count AS aggregate_count,
  a.distinct_objects AS distinct_objects,
  a.first_seen AS first_seen,
  a.last_seen AS last_seen,
  a.top_objects AS top_objects,
  a.recurring AS recurring,
  a.late_events AS late_events
FROM KEV_INCIDENT_WINDOWS AS w
  JOIN KEV_AGGREGATES_BY_KEY AS a ON w.aggregate_key = a.kafka_key
EMIT CHANGES;

-- 5. With the incident's latest state (foreign-key join on incident_id), so the status,
-- severity and summary follow the incident (OPEN, UPDATED, RESOLVED).
CREATE TABLE IF NOT EXISTS KEV_INCIDENT_AGGREGATES WITH (
  KAFKA_TOPIC = 'kev.ksql.incident_aggregates',
  PARTITIONS = 3,
  KEY_FORMAT = 'KAFKA',
  VALUE_FORMAT = 'AVRO'
) AS
SELECT
  x.incident_window_key AS incident_window_key,
  i.incident_id AS incident_id,
  i.cluster AS cluster,
  i.rule AS rule,
  i.status AS status,
  i.severity AS incident_severity,
  i.confidence AS confidence,
  i.summary AS summary,
  i.root_reason AS root_reason,
  i.opened_at AS opened_at,
  i.updated_at AS updated_at,
  i.resolved_at AS resolved_at,
  x.approx_member_events AS approx_member_events,
  x.aggregate_key AS aggregate_key,
  x.fingerprint AS fingerprint,
  x.window_start AS window_start,
  x.window_end AS window_end,
  x.namespace AS namespace,
  x.kind AS kind,
  x.reason AS reason,
  x.template AS template,
  x.category AS category,
  x.aggregate_severity AS aggregate_severity,
  x.aggregate_count AS aggregate_count,
  x.distinct_objects AS distinct_objects,
  x.first_seen AS first_seen,
  x.last_seen AS last_seen,
  x.top_objects AS top_objects,
  x.recurring AS recurring,
  x.late_events AS late_events
FROM KEV_INCIDENT_WINDOW_AGGREGATES AS x
  JOIN KEV_INCIDENT_LATEST AS i ON x.incident_id = i.incident_id
EMIT CHANGES;
