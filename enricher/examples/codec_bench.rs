//! The enricher's Avro costs, generic against its own paths, by CPU time of the thread:
//! - reading a raw record: the generic reader (whole record, Kubernetes object included: what
//!   the enricher read before `kev_schemas::lean`) against the lean reader, over the 13,800 real
//!   events with their objects;
//! - writing its outputs: the generic `apache-avro` serde writer (what every output went
//!   through before `kev_schemas::binary`) against the records' own writers, over every output
//!   the engine makes of the real dumps scaled to `KEV_BENCH_EVENTS` (default 200,000), into a
//!   buffer reused per record; the bytes of both are checked equal.
//!
//! cargo run --release -p kev-enricher --example codec_bench

use std::time::Duration;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use kev_engine::rules::RuleSet;
use kev_engine::{Engine, EngineConfig, Output};
use kev_schemas::codec::encode_body;
use kev_schemas::lean::decode_raw_lean;
use kev_schemas::schema::{AGGREGATE_SCHEMA, ENRICHED_EVENT_SCHEMA, INCIDENT_SCHEMA, RAW_SCHEMA};
use kev_schemas::{AvroWrite, RawRecord};

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

/// The best of three passes of `f` over every body: CPU time per body.
fn read_pass(bodies: &[Vec<u8>], mut f: impl FnMut(&[u8])) -> f64 {
    (0..3)
        .map(|_| {
            let started = thread_cpu();
            bodies.iter().for_each(|b| f(b));
            (thread_cpu() - started).as_nanos() as f64 / bodies.len() as f64
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    let bodies: Vec<Vec<u8>> = kev_tests::data::observations()
        .into_iter()
        .map(|(c, o)| encode_body(&RAW_SCHEMA, &RawRecord::event(c, o)).expect("encodes"))
        .collect();
    let reader = GenericDatumReader::builder(&RAW_SCHEMA).build().expect("schema");
    let generic_read = read_pass(&bodies, |b| {
        let mut cursor = b;
        let r: RawRecord = reader.read_deser(&mut cursor).expect("decodes");
        std::hint::black_box(r);
    });
    let lean_read = read_pass(&bodies, |b| {
        std::hint::black_box(decode_raw_lean(b).expect("decodes"));
    });
    let avg = bodies.iter().map(Vec::len).sum::<usize>() / bodies.len();
    println!("raw records: {} real events with their objects, {avg} bytes each on average", bodies.len());
    println!("read, generic reader: {generic_read:.0} ns per record (CPU)");
    println!("read, lean reader:    {lean_read:.0} ns per record (CPU)");
    println!("read ratio: {:.1}x", generic_read / lean_read);

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
    println!("write, generic serde writer: {:.0} ns per record (CPU)", ns(generic.0));
    println!("write, own writers:          {:.0} ns per record (CPU)", ns(own.0));
    println!("write ratio: {:.1}x; same bytes (xxh3 {:016x})", ns(generic.0) / ns(own.0), own.2);
}
