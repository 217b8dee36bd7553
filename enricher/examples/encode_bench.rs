//! The cost of encoding the enricher's outputs: the generic `apache-avro` serde writer (what
//! every output went through before `kev_schemas::binary`) against the records' own writers,
//! over every output the engine makes of the real dumps scaled to `KEV_BENCH_EVENTS` (default
//! 200,000). Both write into a buffer reused per record, so only the writing is compared; the
//! bytes of both are checked equal. Prints ns per output record by CPU time of the thread.
//!
//! cargo run --release -p kev-enricher --example encode_bench

use std::time::Duration;

use apache_avro::writer::datum::GenericDatumWriter;
use kev_engine::rules::RuleSet;
use kev_engine::{Engine, EngineConfig, Output};
use kev_schemas::schema::{AGGREGATE_SCHEMA, ENRICHED_EVENT_SCHEMA, INCIDENT_SCHEMA};
use kev_schemas::AvroWrite;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write to; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Encodes every output with `f`, three times over; returns the best pass's CPU time, the
/// bytes written in it and an xxh3 of them.
fn pass(outputs: &[Output], mut f: impl FnMut(&Output, &mut Vec<u8>)) -> (Duration, usize, u64) {
    let mut best = (Duration::MAX, 0, 0);
    for _ in 0..3 {
        let mut buf = Vec::with_capacity(4096);
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let mut bytes = 0;
        let started = thread_cpu();
        for o in outputs {
            buf.clear();
            f(o, &mut buf);
            bytes += buf.len();
            h.update(&buf);
        }
        let took = thread_cpu() - started;
        if took < best.0 {
            best = (took, bytes, h.digest());
        }
    }
    best
}

fn main() {
    let target: usize = std::env::var("KEV_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let base = kev_tests::scale::base(false);
    let mut engine = Engine::new(EngineConfig::default(), RuleSet::defaults());
    let mut outputs = Vec::new();
    for (cluster, batch) in kev_tests::scale::batches(&base, target, 8) {
        for (i, o) in batch.into_iter().enumerate() {
            engine.on_event(&cluster, o, 0, i as i64, &mut outputs);
        }
    }
    engine.flush(&mut outputs);
    let w = |s| GenericDatumWriter::builder(s).build().expect("schema");
    let (we, wa, wi) = (w(&ENRICHED_EVENT_SCHEMA), w(&AGGREGATE_SCHEMA), w(&INCIDENT_SCHEMA));
    let generic = pass(&outputs, |o, buf| {
        match o {
            Output::Enriched(e) => we.write_ser(buf, e),
            Output::Aggregate(a) => wa.write_ser(buf, a),
            Output::Incident(i) => wi.write_ser(buf, i),
        }
        .expect("encodes");
    });
    let own = pass(&outputs, |o, buf| match o {
        Output::Enriched(e) => e.write_avro(buf),
        Output::Aggregate(a) => a.write_avro(buf),
        Output::Incident(i) => i.write_avro(buf),
    });
    assert_eq!((generic.1, generic.2), (own.1, own.2), "both writers write the same bytes");
    let n = outputs.len() as f64;
    let ns = |d: Duration| d.as_nanos() as f64 / n;
    println!("outputs: {} records of {target} events, {:.0} bytes each on average", outputs.len(), own.1 as f64 / n);
    println!("generic serde writer: {:.0} ns per record (CPU)", ns(generic.0));
    println!("own writers:          {:.0} ns per record (CPU)", ns(own.0));
    println!("ratio: {:.1}x; same bytes (xxh3 {:016x})", ns(generic.0) / ns(own.0), own.2);
}
