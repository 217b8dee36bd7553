package dev.kev.peer;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import java.io.IOException;
import java.io.StringWriter;
import java.io.UncheckedIOException;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.avro.Schema;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.AppInfoParser;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.EmitStrategy;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.kstream.Window;
import org.apache.kafka.streams.state.WindowStore;

/**
 * The Kafka Streams peer of kev's side-by-side benchmark: counts kev's raw records per
 * (cluster, namespace, kind, reason, template) in 1-minute event-time tumbling windows, as the
 * Quix peer (benches/peer/quix_windows.py) does, with Kafka Streams' DSL as it ships: a RocksDB
 * window store with its changelog topic and the record cache in front of it.
 *
 * <p>Started by {@code cargo run --release -p kev-tests --example side_by_side}, configured by
 * the Quix peer's environment: KEV_PEER_BROKER (bootstrap servers), KEV_PEER_TOPIC (kev's raw
 * topic), KEV_PEER_FORMAT (avro only), KEV_PEER_REGISTRY (Schema Registry URL), KEV_PEER_RECORDS
 * (how many records to process before stopping), KEV_PEER_GROUP (the application.id, fresh per
 * run: it reads from the beginning), KEV_PEER_OUTPUT (the topic closed windows go to),
 * KEV_PEER_STATE (state.dir). Prints one JSON line on stdout: records, seconds (from start() to
 * the end of close()), the first-record time, the window counts closed, the versions and the
 * settings.
 *
 * <p>The topology. The raw topic is keyed by cluster, so a cluster's records are in one
 * partition. The windows are kept per message key (the cluster) with one count per fingerprint
 * in the window's value, grouped by the key the records already have: no repartition topic,
 * as the Quix peer and kev's enricher keep them. The DSL's other way, {@code groupBy} on the
 * fingerprint and {@code count()}, would send every record through a repartition topic, which
 * neither of the others does, and would merge the partitions' event-time progress in the
 * repartition tasks: with the raw partitions advancing through event time at different speeds
 * (they hold different numbers of clusters), the 5 s grace would then drop as late the records
 * of the slower partitions, so it would not count the same windows.
 *
 * <p>Windows close on stream time (per task: per raw partition, whose clusters advance together
 * through event time) passing their end plus the grace; {@code EmitStrategy.onWindowClose()}
 * writes each closed window once, the way the Quix peer's {@code final()} does. Kafka Streams
 * checks for closed windows at most once a second of wall-clock time (its internal emit
 * interval, left at its default), so the windows that close in the last second of a run are
 * still unwritten when it stops: with the dumps' sparse recent years, that second can close
 * a hundred windows per cluster, and {@code windows_closed} is then lower than the Quix peer's
 * (side_by_side at 100,000 events: the same counts for every (cluster, window, fingerprint) both
 * wrote, 46,000 to 54,000 of Quix's 64,203 written, varying from run to run). Quix closes
 * windows per key, so the last windows of a cluster whose records end early stay open there
 * and close here.
 */
public final class StreamsWindows {
    /** The Quix peer's windows: 1 minute, 5 s grace. */
    static final Duration WINDOW = Duration.ofMinutes(1);

    static final Duration GRACE = Duration.ofSeconds(5);

    private StreamsWindows() {}

    public static void main(String[] args) throws InterruptedException {
        Map<String, String> env = System.getenv();
        if (!env.getOrDefault("KEV_PEER_FORMAT", "avro").equals("avro")) {
            System.err.println("the Kafka Streams peer reads the Avro raw topic only (KEV_PEER_FORMAT=avro)");
            System.exit(2);
        }
        long records = Long.parseLong(env.get("KEV_PEER_RECORDS"));

        // What this peer sets beyond what every application must name (application.id,
        // bootstrap.servers, state.dir): one stream thread per core, as the documentation
        // advises for throughput. Caching stays on at its default size, commits at their
        // default interval, the guarantee at_least_once (the default), like the Quix peer's.
        Map<String, Object> settings = new LinkedHashMap<>();
        settings.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, Runtime.getRuntime().availableProcessors());
        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, env.get("KEV_PEER_GROUP"));
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, env.get("KEV_PEER_BROKER"));
        props.put(StreamsConfig.STATE_DIR_CONFIG, env.get("KEV_PEER_STATE"));
        props.putAll(settings);
        StreamsConfig config = new StreamsConfig(props);
        Map<String, Object> defaults = new LinkedHashMap<>();
        defaults.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, config.getString(StreamsConfig.PROCESSING_GUARANTEE_CONFIG));
        defaults.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, config.getLong(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG));
        defaults.put(
                StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG,
                config.getLong(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG));
        defaults.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, config.getInt(StreamsConfig.REPLICATION_FACTOR_CONFIG));

        AtomicLong seen = new AtomicLong();
        AtomicLong windows = new AtomicLong();
        AtomicLong written = new AtomicLong();
        AtomicLong firstNanos = new AtomicLong();
        AtomicReference<String> failure = new AtomicReference<>();
        CountDownLatch done = new CountDownLatch(1);

        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(
                        env.get("KEV_PEER_TOPIC"),
                        Consumed.with(Serdes.String(), new RawRecordSerde(env.get("KEV_PEER_REGISTRY")))
                                .withTimestampExtractor(new Fingerprints.EventTime()))
                .peek((cluster, value) -> {
                    long n = seen.incrementAndGet();
                    if (n == 1) {
                        firstNanos.set(System.nanoTime());
                    }
                    if (n == records) {
                        done.countDown();
                    }
                })
                .processValues(Fingerprints::new)
                .groupByKey(Grouped.with(Serdes.String(), Serdes.String()))
                .windowedBy(TimeWindows.ofSizeAndGrace(WINDOW, GRACE))
                .emitStrategy(EmitStrategy.onWindowClose())
                .aggregate(
                        Counts::new,
                        (cluster, fingerprint, counts) -> counts.add(fingerprint),
                        Materialized.<String, Counts, WindowStore<Bytes, byte[]>>as("counts")
                                .withKeySerde(Serdes.String())
                                .withValueSerde(new Counts.CountsSerde()))
                .toStream()
                .map((window, counts) -> {
                    windows.addAndGet(counts.byFingerprint.size());
                    written.incrementAndGet();
                    return KeyValue.pair(window.key(), json(window.key(), window.window(), counts));
                })
                .to(env.get("KEV_PEER_OUTPUT"), Produced.with(Serdes.String(), Serdes.String()));

        KafkaStreams streams = new KafkaStreams(builder.build(), config);
        streams.setUncaughtExceptionHandler(e -> {
            failure.compareAndSet(null, String.valueOf(e));
            done.countDown();
            return StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        streams.setStateListener((now, before) -> {
            if (now == KafkaStreams.State.ERROR) {
                failure.compareAndSet(null, "Kafka Streams went from " + before + " to " + now);
                done.countDown();
            }
        });
        long started = System.nanoTime();
        streams.start();
        done.await();
        streams.close(Duration.ofMinutes(5));
        long ended = System.nanoTime();
        if (failure.get() != null) {
            System.err.println("the Kafka Streams peer failed: " + failure.get());
            System.exit(1);
        }

        Map<String, Object> stats = new LinkedHashMap<>();
        stats.put("records", seen.get());
        stats.put("seconds", (ended - started) / 1e9);
        long first = firstNanos.get();
        stats.put("first_record_after", ((first == 0 ? ended : first) - started) / 1e9);
        stats.put("windows_closed", windows.get());
        stats.put("window_records_written", written.get());
        stats.put("kafka_streams", AppInfoParser.getVersion());
        stats.put("java", System.getProperty("java.version"));
        stats.put("avro", String.valueOf(Schema.class.getPackage().getImplementationVersion()));
        stats.put("rocksdb", org.rocksdb.RocksDB.rocksdbVersion().toString());
        stats.put("settings", settings);
        stats.put("defaults", defaults);
        stats.put(
                "topology",
                "groupByKey (cluster, no repartition) -> 1-minute tumbling windows, 5 s grace, emit on window close"
                        + " -> aggregate of counts per fingerprint (RocksDB window store, changelog, cache)");
        System.out.println(jsonLine(stats));
        System.out.flush();
        System.exit(0);
    }

    /** A closed window as the output record's value. */
    private static String json(String cluster, Window window, Counts counts) {
        StringWriter out = new StringWriter();
        try (JsonGenerator g = new JsonFactory().createGenerator(out)) {
            g.writeStartObject();
            g.writeStringField("cluster", cluster);
            g.writeNumberField("start", window.start());
            g.writeNumberField("end", window.end());
            g.writeObjectFieldStart("counts");
            for (Map.Entry<String, Long> e : counts.byFingerprint.entrySet()) {
                g.writeNumberField(e.getKey(), e.getValue());
            }
            g.writeEndObject();
            g.writeEndObject();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return out.toString();
    }

    /** Strings, numbers and maps of them as one line of JSON. */
    private static String jsonLine(Map<String, Object> map) {
        StringWriter out = new StringWriter();
        try (JsonGenerator g = new JsonFactory().createGenerator(out)) {
            write(g, map);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return out.toString();
    }

    private static void write(JsonGenerator g, Object value) throws IOException {
        if (value instanceof Map<?, ?> m) {
            g.writeStartObject();
            for (Map.Entry<?, ?> e : m.entrySet()) {
                g.writeFieldName(String.valueOf(e.getKey()));
                write(g, e.getValue());
            }
            g.writeEndObject();
        } else if (value instanceof Long l) {
            g.writeNumber(l);
        } else if (value instanceof Integer i) {
            g.writeNumber(i);
        } else if (value instanceof Double d) {
            g.writeNumber(d);
        } else {
            g.writeString(String.valueOf(value));
        }
    }
}
