//! Where a partition's log ends, on Apache Kafka.
//!
//! kev reads a partition's end instead of trusting ListOffsets(latest) alone
//! ([`kev_common::kafka::LogEnds`]), since some Kafka-protocol brokers list it short (tansu
//! 0.6.0's memory storage answered the base offset of the newest batch plus one). On Kafka the
//! probe must agree with the listing and with what the broker acknowledged, also where a
//! partition ends in a transaction's commit marker, which takes an offset but is no record.
//! A range read that ends in such a marker ends there, without the record after it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kev_common::kafka::{ensure_topic, LogEnds, RangeReader};
use kev_tests::broker::Broker;
use kev_tests::init_logs;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

#[derive(Default)]
struct Acks(AtomicU64);
impl ClientContext for Acks {}
impl ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if r.is_ok() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_finds_the_end_of_batched_and_transactional_partitions() {
    init_logs();
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    let s = broker.settings();
    ensure_topic(&s, "batched", 3, 1, &[]).await.unwrap();
    let p: BaseProducer<Acks> = s
        .client_config(&[("linger.ms", "20"), ("batch.num.messages", "1000"), ("enable.idempotence", "true")])
        .create_with_context(Acks::default())
        .unwrap();
    // Partition 0 ends with a batch of 100 records (sent between two flushes), partition 1
    // with a batch of one, partition 2 with a committed transaction of 10 records, whose
    // marker takes the 11th offset.
    let per_partition = [3_100i64, 1, 11];
    let send = |partition: i32, n: i64| {
        for i in 0..n {
            let payload = format!("record {i} of partition {partition}");
            p.send(BaseRecord::<(), _>::to("batched").partition(partition).payload(&payload)).unwrap();
        }
        p.flush(Duration::from_secs(60)).unwrap();
    };
    send(0, 3_000);
    send(0, 100);
    send(1, 1);
    p.flush(Duration::from_secs(60)).unwrap();
    assert_eq!(p.context().0.load(Ordering::Relaxed), 3_101);
    let tx: BaseProducer<Acks> =
        s.client_config(&[("transactional.id", "log-end-test")]).create_with_context(Acks::default()).unwrap();
    tx.init_transactions(Duration::from_secs(30)).unwrap();
    tx.begin_transaction().unwrap();
    for i in 0..10 {
        let payload = format!("transactional record {i}");
        tx.send(BaseRecord::<(), _>::to("batched").partition(2).payload(&payload)).unwrap();
    }
    tx.commit_transaction(Duration::from_secs(30)).unwrap();
    assert_eq!(tx.context().0.load(Ordering::Relaxed), 10);

    let ends = LogEnds::new(&s, "kev-test-log-end").unwrap();
    let listing: BaseConsumer = s.client_config(&[("group.id", "listing")]).create().unwrap();
    for (partition, n) in per_partition.iter().enumerate() {
        let (_, listed) = listing.fetch_watermarks("batched", partition as i32, Duration::from_secs(10)).unwrap();
        let (low, end) = ends.watermarks("batched", partition as i32, Duration::from_secs(10)).unwrap();
        println!("partition {partition}: {n} acknowledged, ListOffsets says {listed}, the probe {end}");
        assert_eq!((low, end), (0, *n), "partition {partition}");
    }
}

/// Two committed transactions of 10 records each: records at offsets 0-9 and 11-20, markers at
/// 10 and 21. Reading [0, 11) gives the first ten and stops, though the next record a reader
/// sees (11) is already fetched: a take-over that rebuilds state up to offset 11 must not apply
/// the record at 11, which its consumer hands it next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_read_ending_in_a_transaction_marker_stops_at_its_end() {
    init_logs();
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    let s = broker.settings();
    ensure_topic(&s, "marked", 1, 1, &[]).await.unwrap();
    let tx: BaseProducer<Acks> =
        s.client_config(&[("transactional.id", "range-test")]).create_with_context(Acks::default()).unwrap();
    tx.init_transactions(Duration::from_secs(30)).unwrap();
    for t in 0..2 {
        tx.begin_transaction().unwrap();
        for i in 0..10 {
            let payload = format!("transaction {t} record {i}");
            tx.send(BaseRecord::<(), _>::to("marked").partition(0).payload(&payload)).unwrap();
        }
        tx.commit_transaction(Duration::from_secs(30)).unwrap();
    }
    let consumer: BaseConsumer = s.client_config(&[("group.id", "range-reader")]).create().unwrap();
    let offsets = |from: i64, to: i64| {
        let mut r = RangeReader::new(&consumer, "marked", 0, from, to).unwrap();
        let mut seen = Vec::new();
        while let Some(m) = r.next_message().unwrap() {
            seen.push(rdkafka::Message::offset(&m));
        }
        (seen, r.position())
    };
    assert_eq!(offsets(0, 11), ((0..10).collect::<Vec<_>>(), 11));
    assert_eq!(offsets(5, 10), ((5..10).collect::<Vec<_>>(), 10));
    assert_eq!(offsets(10, 22), ((11..21).collect::<Vec<_>>(), 22));
    assert_eq!(offsets(10, 11), (vec![], 11));
}
