//! Where a partition's log ends, on Apache Kafka.
//!
//! kev reads a partition's end instead of trusting ListOffsets(latest) alone
//! ([`kev_common::kafka::LogEnds`]), since some Kafka-protocol brokers list it short (tansu
//! 0.6.0's memory storage answered the base offset of the newest batch plus one). On Kafka the
//! probe must agree with the listing and with what the broker acknowledged, also where a
//! partition ends in a transaction's commit marker, which takes an offset but is no record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kev_common::kafka::{ensure_topic, LogEnds};
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
