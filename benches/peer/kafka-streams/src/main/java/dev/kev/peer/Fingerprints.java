package dev.kev.peer;

import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.streams.processor.TimestampExtractor;
import org.apache.kafka.streams.processor.api.FixedKeyProcessor;
import org.apache.kafka.streams.processor.api.FixedKeyProcessorContext;
import org.apache.kafka.streams.processor.api.FixedKeyRecord;

/**
 * A raw record's fingerprint under its cluster key, the way the Quix peer computes it:
 * namespace (the regarding object's, else the Event's), kind, reason and the message's
 * template, joined by NUL. Events only: heartbeats and other kinds are dropped. One instance per
 * stream task (a value processor: the key, the cluster, stays, so nothing is repartitioned), with
 * the task's template memo.
 */
final class Fingerprints implements FixedKeyProcessor<String, GenericRecord, String> {
    private final Templates templates = new Templates();
    private FixedKeyProcessorContext<String, String> context;

    @Override
    public void init(FixedKeyProcessorContext<String, String> context) {
        this.context = context;
    }

    @Override
    public void process(FixedKeyRecord<String, GenericRecord> record) {
        GenericRecord value = record.value();
        if (value == null || !"EVENT".equals(String.valueOf(value.get("kind")))) {
            return;
        }
        if (!(value.get("event") instanceof GenericRecord event)) {
            return;
        }
        GenericRecord n = (GenericRecord) event.get("normalized");
        GenericRecord regarding = (GenericRecord) n.get("regarding");
        String namespace = regarding == null ? "" : text(regarding.get("namespace"));
        if (namespace.isEmpty()) {
            namespace = text(event.get("namespace"));
        }
        String fingerprint = String.join(
                "\0",
                namespace,
                regarding == null ? "" : text(regarding.get("kind")),
                text(n.get("reason")),
                templates.template(text(n.get("note"))));
        context.forward(record.withValue(fingerprint));
    }

    /** An optional Avro string (Utf8 as GenericDatumReader gives it), "" when null. */
    private static String text(Object o) {
        return o == null ? "" : o.toString();
    }

    /**
     * Every record's event time, as the Quix peer's extractor takes it: the event's, or a
     * heartbeat's newest event time, else the producer's clock, else the Kafka timestamp.
     */
    static final class EventTime implements TimestampExtractor {
        @Override
        public long extract(ConsumerRecord<Object, Object> record, long partitionTime) {
            if (!(record.value() instanceof GenericRecord value)) {
                return record.timestamp();
            }
            if (value.get("event") instanceof GenericRecord event) {
                long micros = (Long) ((GenericRecord) event.get("normalized")).get("event_time");
                return Math.floorDiv(micros, 1000L);
            }
            if (value.get("heartbeat") instanceof GenericRecord hb) {
                Object high = hb.get("event_time_high");
                if (high != null) {
                    return Math.floorDiv((Long) high, 1000L);
                }
                return (Long) hb.get("producer_time");
            }
            return record.timestamp();
        }
    }
}
