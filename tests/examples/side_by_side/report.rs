//! The report's sections on scale, latency and the producer, written from the run's figures
//! (the JSON file holds the same numbers).

use serde_json::Value;

use crate::{met, thousands};

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Processes of one group, and what a member joining costs.
pub fn report_scale(line: &mut impl FnMut(String), figures: &Value, records: usize) {
    let rows = figures["scale"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        return;
    }
    let partitions = &figures["scale_partitions"];
    let ceiling = &figures["scale_ceiling"];
    line(String::new());
    line(format!(
        "## Scale: `kev-enricher` processes of one consumer group over {partitions} partitions ({} records)",
        thousands(records as f64)
    ));
    line(String::new());
    line(format!("Each row starts its processes together on the loaded raw topic of {partitions} partitions (keyed by cluster, cluster c on partition c mod {partitions}: murmur2 of the 16 ids would have put {} records on the partitions), as their own group with output topics of their own (the broker with Kafka's default `group.initial.rebalance.delay.ms` of 3 s, so that they join its first generation together), and is timed from the moment every process has its partitions until the group has committed every raw record; the processes are `kev-enricher run` with the shipped defaults (the run's commit interval and checkpoints aside), on a broker of their own. CPU is each process's own (from `/proc`) and the broker's, over the row. The ceiling of this topic: {} records/s. Records per partition: {}.", ceiling["per_partition_if_keyed_by_murmur2"], thousands(f(&ceiling["rate"])), ceiling["expected_per_partition"]));
    line(String::new());
    line("| processes | seconds | records/s | speed-up over 1 | enrichers' CPU per raw record, us | broker's CPU per raw record, us | cores busy: enrichers + broker, of 2 | outputs | digest of the outputs | same outputs as 1 process |".into());
    line("|---|---|---|---|---|---|---|---|---|---|".into());
    let one = f(&rows[0]["rate"]);
    let reference = rows[0]["digest"].as_str().unwrap_or("").to_string();
    let mut two = None;
    for r in &rows {
        let secs = f(&r["seconds"]);
        let n = r["records"].as_f64().unwrap_or(1.0).max(1.0);
        let cpu: f64 = r["process_cpu_seconds"].as_array().into_iter().flatten().map(f).sum();
        let broker = f(&r["broker_cpu_seconds"]);
        let speed_up = f(&r["rate"]) / one;
        if r["processes"] == 2 {
            two = Some(speed_up);
        }
        let same = r["digest"].as_str() == Some(reference.as_str()) && r["outputs"] == rows[0]["outputs"];
        line(format!(
            "| {} | {secs:.2} | {} | {speed_up:.2}x | {:.1} | {:.1} | {:.2} + {:.2} = {:.2} | {} | `{}` | {}{} |",
            r["processes"],
            thousands(f(&r["rate"])),
            1e6 * cpu / n,
            1e6 * broker / n,
            cpu / secs,
            broker / secs,
            (cpu + broker) / secs,
            r["outputs"],
            r["digest"].as_str().unwrap_or(""),
            if same { "yes" } else { "**no**" },
            match (r["failed"].as_str(), r["stopped_cleanly"] == true) {
                (Some(why), _) => format!(" (**failed**: {})", why.replace('|', "/")),
                (None, false) => " (a process did not stop cleanly)".to_string(),
                (None, true) => String::new(),
            }
        ));
    }
    if let Some(x) = two {
        line(String::new());
        line(format!(
            "Two processes against one: {x:.2}x, target >= 1.5x: {} (the cores busy column shows what was saturated).",
            met(x >= 1.5)
        ));
    }
    let rb = &figures["rebalance"];
    if let Some(joins) = rb["joins"].as_array() {
        line(String::new());
        line(format!("### A member joining: {} records fed at {} records/s to a fresh raw topic of {partitions} partitions, one more process started every {:.0} s", rb["fed"], rb["rate"], f(&rb["feed_seconds"]) / (joins.len() as f64 + 1.0)));
        line(String::new());
        line("The cost of a join: from the new process's start until every raw partition's enriched records flow again (the end of its last pause of 300 ms or more between two enriched records read back), and the longest pause of a partition. It holds the group's rebalance (kev's consumer is cooperative-sticky: two rounds, and only the partitions that move are handed over), the hand-over of the revoked partitions (acknowledgements, commit, checkpoint) and the take-over (checkpoint restored, raw log re-read to the committed offset).".into());
        line(String::new());
        line(
            "| members after the join | every partition flowing again after, s | longest pause of a partition, s |"
                .into(),
        );
        line("|---|---|---|".into());
        for j in joins {
            line(format!(
                "| {} | {:.2} | {:.2} |",
                j["members_after"],
                f(&j["flowing_again_after_s"]),
                f(&j["longest_pause_s"])
            ));
        }
        line(String::new());
        line(format!(
            "{} records acknowledged, {} of them read back as enriched records, {} read more than once{}.",
            rb["acknowledged"],
            rb["read_back"],
            rb["read_more_than_once"],
            if rb["stopped_cleanly"] == true {
                "; every process stopped cleanly"
            } else {
                "; **a process did not stop cleanly**"
            }
        ));
    }
}

/// Event to enriched record, and event to the incident it opened.
pub fn report_latency(line: &mut impl FnMut(String), l: &Value) {
    if l.is_null() {
        return;
    }
    line(String::new());
    line(format!("## Latency at {} raw records/s for {:.0} s", l["rate"], f(&l["feed_seconds"])));
    line(String::new());
    line("One enricher instance (kev's live code in this process, the shipped Kafka settings) on a fresh raw topic, caught up: the records after the scale phase's are written at a steady rate by a producer with kev-producer's settings; for each, from handing it to the producer to reading back its enriched record (matched by its `kev.source` header, the first copy read), and, for a record that opened an incident, to reading the incident's first record. The first 2 s are a warm-up and not counted.".into());
    line(String::new());
    line("| from a raw record handed to the producer to | records | p50 ms | p99 ms | max ms | target |".into());
    line("|---|---|---|---|---|---|".into());
    let p99 = f(&l["p99_ms"]);
    line(format!(
        "| its enriched record read downstream | {} of {} | {:.0} | {p99:.0} | {:.0} | p99 <= 150 ms: {} |",
        l["matched"],
        l["after_warm_up"],
        f(&l["p50_ms"]),
        f(&l["max_ms"]),
        met(p99 <= 150.0)
    ));
    let i = &l["incident"];
    line(format!(
        "| the first record of the incident it opened | {} of {} incidents opened | {:.0} | {:.0} | {:.0} | |",
        i["matched"],
        l["incidents_opened"],
        f(&i["p50_ms"]),
        f(&i["p99_ms"]),
        f(&i["max_ms"])
    ));
}

/// The producer's replay against a produce-only writer of the same records.
pub fn report_producer(line: &mut impl FnMut(String), p: &Value) {
    line(String::new());
    line("## The producer beside a produce-only writer".into());
    line(String::new());
    if let Some(e) = p["error"].as_str() {
        line(format!("Not measured: {e}"));
        return;
    }
    let w = &p["writer"];
    line(format!("`kev-producer replay` of a dump of {} Event objects (the shared dumps copied with new uids and names, times moved an hour a copy; JSON Lines), as one process for one cluster, timed from its start to its exit (reading the dump, ordering it by event time, de-duplication, redaction, Avro encoding through the registry, publishing with acknowledgements); then a plain rdkafka writer (this process) of the very records it published, read back, with the producer's Kafka settings (idempotent, acks=all, lz4, linger 10 ms). {}", p["events"], p["summary"].as_str().unwrap_or("")));
    line(String::new());
    line("| writer | records | seconds | records/s | CPU per record, us |".into());
    line("|---|---|---|---|---|".into());
    let n = p["records_published"].as_f64().unwrap_or(1.0).max(1.0);
    line(format!(
        "| kev-producer replay (events and heartbeats) | {} | {:.2} | {} | {:.1} |",
        p["records_published"],
        f(&p["seconds"]),
        thousands(f(&p["rate"])),
        1e6 * f(&p["cpu_seconds"]) / n
    ));
    let wn = w["records"].as_f64().unwrap_or(1.0).max(1.0);
    line(format!(
        "| produce-only rdkafka writer | {} | {:.2} | {} | {:.1} |",
        w["records"],
        f(&w["seconds"]),
        thousands(f(&w["rate"])),
        1e6 * f(&w["cpu_seconds"]) / wn
    ));
    let ratio = f(&p["rate"]) / f(&w["rate"]);
    line(String::new());
    line(format!("kev-producer / writer: {:.0}%, target >= 50%: {}.", 100.0 * ratio, met(ratio >= 0.5)));
}
