-- kev on Flink SQL: tables over the enricher's output topics, incidents joined with the window
-- aggregates of their member events, and tumbling-window counts of enriched events per workload.
-- Run it with the SQL client: sql-client.sh -f deploy/flink/kev.sql (deploy/flink/README.md).
--
-- source: kev_enriched = schemas/avro/enriched_event.avsc
-- source: kev_aggregates = schemas/avro/aggregate.avsc
-- source: kev_incidents = schemas/avro/incident.avsc
--
-- sink: kev_flink_incident_aggregates (not a kev schema: its columns are the aliases of the query that fills it)
-- sink: kev_flink_workload_counts (not a kev schema: its columns are the aliases of the query that fills it)
--
-- Conventions of this file:
-- * Every column of a source table is a field of its .avsc, declared in the schema's order with
--   the type Flink derives from it (nullable union -> nullable type, record -> ROW, array ->
--   ARRAY, enum -> STRING NOT NULL, required field -> NOT NULL). This is not style: each source
--   sets 'value.avro-confluent.schema' (below), and Flink refuses a table whose value columns
--   differ in any way from that schema.
-- * `kafka_key` is the Kafka record key (a plain UTF-8 string, 'raw' format), written by the
--   enricher (enricher/src/records.rs, Record::key). It is not an Avro field.
-- * Computed columns (event_ts, window_end_ts, updated_ts, proc_time) and every name
--   introduced with AS are not Avro fields either.
-- * Identifiers are in backticks: several field names (count, type, scope, name, ...) are
--   reserved words in Flink SQL.
--
-- Why 'value.avro-confluent.schema': without it Flink reads with a schema it derives from the
-- columns, in which kev's enums (severity, status) are strings, and Avro cannot resolve an enum
-- written by the enricher into a string (FLINK-24544: "Found io.kev.Severity, expecting union").
-- With it, Flink resolves the writer's schema (fetched from the registry by the id in each
-- record) into the one given here, which has the enums, and turns enum symbols into STRING.
-- The schema given is schemas/avro/<file>.avsc with the docs dropped and the timestamp logical
-- types dropped: kev's timestamps are timestamp-micros, which Flink releases read into
-- TIMESTAMP(6) as if they were milliseconds (FLINK-39036), so they are read as BIGINT
-- microseconds here and converted with TO_TIMESTAMP_LTZ(x / 1000, 3). Regenerate it with:
--   jq -c 'walk(if type == "object" then (del(.doc) | if .type == "long" and ((.logicalType // "") | startswith("timestamp")) then "long" else . end) else . end)' schemas/avro/<file>.avsc
-- The option needs Flink 1.18 or later.
--
-- Aggregate windows: the enricher's tumbling windows are `engine.window_ms` long (default
-- 60000 ms, i.e. 60000000 us) and aligned to the epoch. 60000000 below must equal that setting.

SET 'table.local-time-zone' = 'UTC';
-- A partition that receives nothing does not hold every watermark back.
SET 'table.exec.source.idle-timeout' = '30 s';
-- Bounds the state of the regular joins and de-duplications below.
SET 'table.exec.state.ttl' = '1 d';

-- ---------------------------------------------------------------------------------------------
-- Sources
-- ---------------------------------------------------------------------------------------------

-- Enriched events (kev.events.enriched), keyed by `cluster/namespace/kind/name` of the regarding
-- object; the record timestamp is the event time. After a crash the enricher may re-emit a
-- record byte for byte; `(uid, resource_version)` identifies an observation.
CREATE TABLE IF NOT EXISTS kev_enriched (
  `kafka_key` STRING,
  `cluster` STRING NOT NULL,
  `uid` STRING NOT NULL,
  `resource_version` STRING NOT NULL,
  `event_time` BIGINT NOT NULL,
  `namespace` STRING,
  `regarding` ROW<`kind` STRING, `namespace` STRING, `name` STRING, `uid` STRING, `api_version` STRING, `field_path` STRING>,
  `type` STRING,
  `reason` STRING,
  `note` STRING,
  `reporting_controller` STRING,
  `host` STRING,
  `count` BIGINT NOT NULL,
  `new_occurrences` BIGINT NOT NULL,
  `severity` STRING NOT NULL,
  `category` STRING NOT NULL,
  `fingerprint` STRING NOT NULL,
  `template` STRING NOT NULL,
  `raw_offset` BIGINT NOT NULL,
  `raw_partition` INT NOT NULL,
  `event_ts` AS TO_TIMESTAMP_LTZ(`event_time` / 1000, 3),
  -- Events of one partition arrive roughly in event-time order; the enricher itself allows 30 s.
  WATERMARK FOR `event_ts` AS `event_ts` - INTERVAL '30' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = 'kev.events.enriched',
  'properties.bootstrap.servers' = 'kafka:9092',
  'properties.group.id' = 'kev-flink',
  'scan.startup.mode' = 'earliest-offset',
  'key.format' = 'raw',
  'key.fields' = 'kafka_key',
  'value.fields-include' = 'EXCEPT_KEY',
  'value.format' = 'avro-confluent',
  'value.avro-confluent.url' = 'http://schema-registry:8081',
  'value.avro-confluent.schema' = '{"type":"record","name":"EnrichedEvent","namespace":"io.kev.enriched","fields":[{"name":"cluster","type":"string"},{"name":"uid","type":"string"},{"name":"resource_version","type":"string"},{"name":"event_time","type":"long"},{"name":"namespace","type":["null","string"],"default":null},{"name":"regarding","type":["null",{"type":"record","name":"ResourceRef","namespace":"io.kev","fields":[{"name":"kind","type":["null","string"],"default":null},{"name":"namespace","type":["null","string"],"default":null},{"name":"name","type":["null","string"],"default":null},{"name":"uid","type":["null","string"],"default":null},{"name":"api_version","type":["null","string"],"default":null},{"name":"field_path","type":["null","string"],"default":null}]}],"default":null},{"name":"type","type":["null","string"],"default":null},{"name":"reason","type":["null","string"],"default":null},{"name":"note","type":["null","string"],"default":null},{"name":"reporting_controller","type":["null","string"],"default":null},{"name":"host","type":["null","string"],"default":null},{"name":"count","type":"long"},{"name":"new_occurrences","type":"long"},{"name":"severity","type":{"type":"enum","name":"Severity","namespace":"io.kev","symbols":["INFO","WARNING","ERROR","CRITICAL","UNKNOWN"],"default":"UNKNOWN"}},{"name":"category","type":"string"},{"name":"fingerprint","type":"string"},{"name":"template","type":"string"},{"name":"raw_offset","type":"long"},{"name":"raw_partition","type":"int"}]}'
);

-- Window aggregates (kev.events.aggregates, compacted), keyed by `<fingerprint>/<window_start>`;
-- the record timestamp is the window end. A window is emitted when it closes and again, under
-- the same key, for every late event counted into it (late_events).
CREATE TABLE IF NOT EXISTS kev_aggregates (
  `kafka_key` STRING,
  `cluster` STRING NOT NULL,
  `fingerprint` STRING NOT NULL,
  `window_start` BIGINT NOT NULL,
  `window_end` BIGINT NOT NULL,
  `namespace` STRING,
  `kind` STRING,
  `reason` STRING,
  `template` STRING NOT NULL,
  `category` STRING NOT NULL,
  `severity` STRING NOT NULL,
  `count` BIGINT NOT NULL,
  `distinct_objects` BIGINT NOT NULL,
  `first_seen` BIGINT NOT NULL,
  `last_seen` BIGINT NOT NULL,
  `top_objects` ARRAY<STRING NOT NULL> NOT NULL,
  `sample_message` STRING,
  `recurring` BOOLEAN NOT NULL,
  `late_events` BIGINT NOT NULL,
  `window_end_ts` AS TO_TIMESTAMP_LTZ(`window_end` / 1000, 3),
  `proc_time` AS PROCTIME(),
  -- A late re-emission carries the same window end as the first emission, up to
  -- `engine.late_retention_ms` (default 10 minutes) after it.
  WATERMARK FOR `window_end_ts` AS `window_end_ts` - INTERVAL '11' MINUTE
) WITH (
  'connector' = 'kafka',
  'topic' = 'kev.events.aggregates',
  'properties.bootstrap.servers' = 'kafka:9092',
  'properties.group.id' = 'kev-flink',
  'scan.startup.mode' = 'earliest-offset',
  'key.format' = 'raw',
  'key.fields' = 'kafka_key',
  'value.fields-include' = 'EXCEPT_KEY',
  'value.format' = 'avro-confluent',
  'value.avro-confluent.url' = 'http://schema-registry:8081',
  'value.avro-confluent.schema' = '{"type":"record","name":"Aggregate","namespace":"io.kev.enriched","fields":[{"name":"cluster","type":"string"},{"name":"fingerprint","type":"string"},{"name":"window_start","type":"long"},{"name":"window_end","type":"long"},{"name":"namespace","type":["null","string"],"default":null},{"name":"kind","type":["null","string"],"default":null},{"name":"reason","type":["null","string"],"default":null},{"name":"template","type":"string"},{"name":"category","type":"string"},{"name":"severity","type":{"type":"enum","name":"Severity","namespace":"io.kev","symbols":["INFO","WARNING","ERROR","CRITICAL","UNKNOWN"],"default":"UNKNOWN"}},{"name":"count","type":"long"},{"name":"distinct_objects","type":"long"},{"name":"first_seen","type":"long"},{"name":"last_seen","type":"long"},{"name":"top_objects","type":{"type":"array","items":"string"}},{"name":"sample_message","type":["null","string"],"default":null},{"name":"recurring","type":"boolean"},{"name":"late_events","type":"long","default":0}]}'
);

-- Incidents (kev.incidents, compacted), keyed by incident_id; every record is the whole
-- incident (OPEN, then UPDATED, then RESOLVED). The record timestamp is the last update.
CREATE TABLE IF NOT EXISTS kev_incidents (
  `kafka_key` STRING,
  `incident_id` STRING NOT NULL,
  `cluster` STRING NOT NULL,
  `rule` STRING NOT NULL,
  `status` STRING NOT NULL,
  `severity` STRING NOT NULL,
  `confidence` DOUBLE NOT NULL,
  `summary` STRING NOT NULL,
  `root_cause` ROW<`kind` STRING, `namespace` STRING, `name` STRING, `uid` STRING, `api_version` STRING, `field_path` STRING>,
  `root_reason` STRING,
  `scope` ARRAY<ROW<`kind` STRING, `namespace` STRING, `name` STRING, `uid` STRING, `api_version` STRING, `field_path` STRING> NOT NULL> NOT NULL,
  `member_uids` ARRAY<STRING NOT NULL> NOT NULL,
  `opened_at` BIGINT NOT NULL,
  `updated_at` BIGINT NOT NULL,
  `resolved_at` BIGINT,
  -- Optional fields added after the first version (null in records written before them).
  `merged_into` STRING,
  `contributing_rules` ARRAY<STRING NOT NULL>,
  `causal_chain` STRING,
  `signature` STRING,
  `previous_count` BIGINT,
  `first_seen` BIGINT,
  `last_seen` BIGINT,
  `last_incident_id` STRING,
  `updated_ts` AS TO_TIMESTAMP_LTZ(`updated_at` / 1000, 3),
  `proc_time` AS PROCTIME(),
  -- The UPDATED/RESOLVED records of a sweep carry the time of the last member, up to
  -- `engine.incident_quiet_ms` (default 10 minutes) behind the other incidents.
  WATERMARK FOR `updated_ts` AS `updated_ts` - INTERVAL '11' MINUTE
) WITH (
  'connector' = 'kafka',
  'topic' = 'kev.incidents',
  'properties.bootstrap.servers' = 'kafka:9092',
  'properties.group.id' = 'kev-flink',
  'scan.startup.mode' = 'earliest-offset',
  'key.format' = 'raw',
  'key.fields' = 'kafka_key',
  'value.fields-include' = 'EXCEPT_KEY',
  'value.format' = 'avro-confluent',
  'value.avro-confluent.url' = 'http://schema-registry:8081',
  'value.avro-confluent.schema' = '{"type":"record","name":"Incident","namespace":"io.kev.enriched","fields":[{"name":"incident_id","type":"string"},{"name":"cluster","type":"string"},{"name":"rule","type":"string"},{"name":"status","type":{"type":"enum","name":"IncidentStatus","namespace":"io.kev.enriched","symbols":["OPEN","UPDATED","RESOLVED","UNKNOWN"],"default":"UNKNOWN"}},{"name":"severity","type":{"type":"enum","name":"Severity","namespace":"io.kev","symbols":["INFO","WARNING","ERROR","CRITICAL","UNKNOWN"],"default":"UNKNOWN"}},{"name":"confidence","type":"double"},{"name":"summary","type":"string"},{"name":"root_cause","type":["null",{"type":"record","name":"ResourceRef","namespace":"io.kev","fields":[{"name":"kind","type":["null","string"],"default":null},{"name":"namespace","type":["null","string"],"default":null},{"name":"name","type":["null","string"],"default":null},{"name":"uid","type":["null","string"],"default":null},{"name":"api_version","type":["null","string"],"default":null},{"name":"field_path","type":["null","string"],"default":null}]}],"default":null},{"name":"root_reason","type":["null","string"],"default":null},{"name":"scope","type":{"type":"array","items":"io.kev.ResourceRef"}},{"name":"member_uids","type":{"type":"array","items":"string"}},{"name":"opened_at","type":"long"},{"name":"updated_at","type":"long"},{"name":"resolved_at","type":["null","long"],"default":null},{"name":"merged_into","type":["null","string"],"default":null},{"name":"contributing_rules","type":["null",{"type":"array","items":"string"}],"default":null},{"name":"causal_chain","type":["null","string"],"default":null},{"name":"signature","type":["null","string"],"default":null},{"name":"previous_count","type":["null","long"],"default":null},{"name":"first_seen","type":["null","long"],"default":null},{"name":"last_seen","type":["null","long"],"default":null},{"name":"last_incident_id","type":["null","string"],"default":null}]}'
);

-- ---------------------------------------------------------------------------------------------
-- Latest state of every incident, and of every aggregate
-- ---------------------------------------------------------------------------------------------

-- Keep the last record per key in arrival order (offset order: all records of one key are in
-- one partition). Event time cannot order them: a RESOLVED record has the same updated_at as
-- the UPDATED record before it, and a late re-emission of an aggregate the same window_end.
CREATE TEMPORARY VIEW IF NOT EXISTS kev_incident_latest AS
SELECT
  `incident_id`, `cluster`, `rule`, `status`, `severity`, `confidence`, `summary`,
  `root_cause`, `root_reason`, `scope`, `member_uids`, `opened_at`, `updated_at`, `resolved_at`
FROM (
  SELECT
    `incident_id`, `cluster`, `rule`, `status`, `severity`, `confidence`, `summary`,
    `root_cause`, `root_reason`, `scope`, `member_uids`, `opened_at`, `updated_at`, `resolved_at`,
    ROW_NUMBER() OVER (PARTITION BY `incident_id` ORDER BY `proc_time` DESC) AS `row_num`
  FROM kev_incidents
)
WHERE `row_num` = 1;

CREATE TEMPORARY VIEW IF NOT EXISTS kev_aggregate_latest AS
SELECT
  `cluster`, `fingerprint`, `window_start`, `window_end`, `namespace`, `kind`, `reason`,
  `template`, `category`, `severity`, `count`, `distinct_objects`, `first_seen`, `last_seen`,
  `top_objects`, `sample_message`, `recurring`, `late_events`
FROM (
  SELECT
    `cluster`, `fingerprint`, `window_start`, `window_end`, `namespace`, `kind`, `reason`,
    `template`, `category`, `severity`, `count`, `distinct_objects`, `first_seen`, `last_seen`,
    `top_objects`, `sample_message`, `recurring`, `late_events`,
    ROW_NUMBER() OVER (PARTITION BY `cluster`, `fingerprint`, `window_start` ORDER BY `proc_time` DESC) AS `row_num`
  FROM kev_aggregates
)
WHERE `row_num` = 1;

-- ---------------------------------------------------------------------------------------------
-- Incidents with their aggregates
-- ---------------------------------------------------------------------------------------------
--
-- The relation: an incident lists the uids of its member events (member_uids); each member
-- event's enriched observation carries its fingerprint, and its event time falls in one window
-- of the enricher's tumbling windows; the aggregate of that (cluster, fingerprint, window) is
-- the one the observation was counted into (the enricher keys it `<fingerprint>/<window_start>`).
--   incident --member_uids[]--> enriched event (cluster, uid) --fingerprint, window--> aggregate
-- Nothing coarser links them: incidents carry no fingerprint, and aggregates no uid. Only the
-- observations inside the incident's span [opened_at, updated_at] count; an observation that
-- added no occurrence (or came after the window's late retention) has no aggregate, hence no row.
-- Regular joins, not interval joins: an aggregate is emitted when its window closes, usually
-- after the incident opened, and the sweep's UPDATED/RESOLVED records arrive late on purpose;
-- state is bounded by 'table.exec.state.ttl' instead.

-- One row per (incident, cluster, fingerprint, window start in microseconds).
CREATE TEMPORARY VIEW IF NOT EXISTS kev_incident_member_windows AS
SELECT DISTINCT
  i.`incident_id` AS `incident_id`,
  i.`cluster` AS `cluster`,
  e.`fingerprint` AS `fingerprint`,
  e.`event_time` - MOD(e.`event_time`, 60000000) AS `member_window_start`
FROM kev_incidents AS i
  CROSS JOIN UNNEST(i.`member_uids`) AS m (`member_uid`)
  JOIN kev_enriched AS e
    ON e.`cluster` = i.`cluster` AND e.`uid` = m.`member_uid`
WHERE e.`event_time` BETWEEN i.`opened_at` AND i.`updated_at`;

CREATE TABLE IF NOT EXISTS kev_flink_incident_aggregates (
  `incident_id` STRING NOT NULL,
  `fingerprint` STRING NOT NULL,
  `window_start` BIGINT NOT NULL,
  `cluster` STRING,
  `rule` STRING,
  `status` STRING,
  `incident_severity` STRING,
  `confidence` DOUBLE,
  `summary` STRING,
  `root_reason` STRING,
  `opened_at` BIGINT,
  `updated_at` BIGINT,
  `resolved_at` BIGINT,
  `window_end` BIGINT,
  `namespace` STRING,
  `kind` STRING,
  `reason` STRING,
  `template` STRING,
  `category` STRING,
  `aggregate_severity` STRING,
  `aggregate_count` BIGINT,
  `distinct_objects` BIGINT,
  `first_seen` BIGINT,
  `last_seen` BIGINT,
  `top_objects` ARRAY<STRING NOT NULL>,
  `recurring` BOOLEAN,
  `late_events` BIGINT,
  PRIMARY KEY (`incident_id`, `fingerprint`, `window_start`) NOT ENFORCED
) WITH (
  'connector' = 'upsert-kafka',
  'topic' = 'kev.flink.incident_aggregates',
  'properties.bootstrap.servers' = 'kafka:9092',
  'key.format' = 'json',
  'value.format' = 'avro-confluent',
  'value.avro-confluent.url' = 'http://schema-registry:8081'
);

-- ---------------------------------------------------------------------------------------------
-- Enriched events by workload: tumbling 5-minute counts
-- ---------------------------------------------------------------------------------------------

-- workload_namespace / workload: the owner workload of the regarding object, derived the way the
-- enricher's correlator does it (engine/src/correlate.rs, owner_of_pod): a Pod named
-- web-7d4b9c8f6d-x2v9q or fluentd-k8z7w belongs to `web` / `fluentd` (ReplicaSet and pod hashes
-- stripped), db-0 to `db` (StatefulSet ordinal); a ReplicaSet web-7d4b9c8f6d to `web`; a
-- Deployment, StatefulSet, DaemonSet, Job or CronJob is its own workload. Other objects (Node,
-- PersistentVolumeClaim, ...) are named `Kind/name` so they do not mix with workloads.
CREATE TEMPORARY VIEW IF NOT EXISTS kev_enriched_workload AS
SELECT
  `cluster`,
  `uid`,
  `severity`,
  `new_occurrences`,
  `event_time`,
  `event_ts`,
  COALESCE(`regarding`.`namespace`, `namespace`, '') AS `workload_namespace`,
  COALESCE(
    CASE
      WHEN `regarding`.`kind` = 'Pod' THEN COALESCE(
        REGEXP_EXTRACT(`regarding`.`name`, '^(.+?)(?:-[bcdfghjklmnpqrstvwxz2456789]{6,10})?-[bcdfghjklmnpqrstvwxz2456789]{5}$', 1),
        REGEXP_EXTRACT(`regarding`.`name`, '^(.+)-[0-9]+$', 1),
        `regarding`.`name`)
      WHEN `regarding`.`kind` = 'ReplicaSet' THEN COALESCE(
        REGEXP_EXTRACT(`regarding`.`name`, '^(.+)-[bcdfghjklmnpqrstvwxz2456789]{6,10}$', 1),
        `regarding`.`name`)
      WHEN `regarding`.`kind` IN ('Deployment', 'StatefulSet', 'DaemonSet', 'Job', 'CronJob') THEN `regarding`.`name`
      ELSE COALESCE(`regarding`.`kind`, '?') || '/' || COALESCE(`regarding`.`name`, '?')
    END,
    '') AS `workload`
FROM kev_enriched;

-- observations counts records, so a crash re-emission counts twice; occurrences sums
-- new_occurrences (what the observation added to the event's count, as the aggregates do);
-- distinct_events counts Event uids. Window bounds are epoch milliseconds, computed from
-- event_time (every row of a window has the same floor), so they do not depend on how a
-- TIMESTAMP is written to Avro.
CREATE TABLE IF NOT EXISTS kev_flink_workload_counts (
  `cluster` STRING,
  `workload_namespace` STRING,
  `workload` STRING,
  `window_start_ms` BIGINT,
  `window_end_ms` BIGINT,
  `observations` BIGINT,
  `occurrences` BIGINT,
  `distinct_events` BIGINT,
  `error_observations` BIGINT
) WITH (
  'connector' = 'kafka',
  'topic' = 'kev.flink.workload_counts',
  'properties.bootstrap.servers' = 'kafka:9092',
  'key.format' = 'json',
  'key.fields' = 'cluster;workload_namespace;workload',
  'value.format' = 'avro-confluent',
  'value.avro-confluent.url' = 'http://schema-registry:8081'
);

-- ---------------------------------------------------------------------------------------------
-- One job for both
-- ---------------------------------------------------------------------------------------------

EXECUTE STATEMENT SET
BEGIN

INSERT INTO kev_flink_incident_aggregates
SELECT
  w.`incident_id`,
  a.`fingerprint`,
  a.`window_start`,
  i.`cluster`,
  i.`rule`,
  i.`status`,
  i.`severity` AS `incident_severity`,
  i.`confidence`,
  i.`summary`,
  i.`root_reason`,
  i.`opened_at`,
  i.`updated_at`,
  i.`resolved_at`,
  a.`window_end`,
  a.`namespace`,
  a.`kind`,
  a.`reason`,
  a.`template`,
  a.`category`,
  a.`severity` AS `aggregate_severity`,
  a.`count` AS `aggregate_count`,
  a.`distinct_objects`,
  a.`first_seen`,
  a.`last_seen`,
  a.`top_objects`,
  a.`recurring`,
  a.`late_events`
FROM kev_incident_member_windows AS w
  JOIN kev_incident_latest AS i
    ON i.`incident_id` = w.`incident_id`
  JOIN kev_aggregate_latest AS a
    ON a.`cluster` = w.`cluster`
   AND a.`fingerprint` = w.`fingerprint`
   AND a.`window_start` = w.`member_window_start`;

INSERT INTO kev_flink_workload_counts
SELECT
  `cluster`,
  `workload_namespace`,
  `workload`,
  MIN(`event_time` - MOD(`event_time`, 300000000)) / 1000 AS `window_start_ms`,
  MIN(`event_time` - MOD(`event_time`, 300000000)) / 1000 + 300000 AS `window_end_ms`,
  COUNT(*) AS `observations`,
  SUM(`new_occurrences`) AS `occurrences`,
  COUNT(DISTINCT `uid`) AS `distinct_events`,
  CAST(SUM(CASE WHEN `severity` IN ('ERROR', 'CRITICAL') THEN 1 ELSE 0 END) AS BIGINT) AS `error_observations`
FROM TABLE(TUMBLE(TABLE kev_enriched_workload, DESCRIPTOR(`event_ts`), INTERVAL '5' MINUTES))
GROUP BY `window_start`, `window_end`, `cluster`, `workload_namespace`, `workload`;

END;
