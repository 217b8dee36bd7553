package dev.kev.peer;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serializer;

/**
 * One window's counts of one cluster, per fingerprint (namespace, kind, reason, template): the
 * aggregate of the windowed store, as the Quix peer keeps a dict per window and message key.
 * Stored as its count of entries, then per entry the fingerprint's UTF-8 length and bytes and
 * the count.
 */
final class Counts {
    final Map<String, Long> byFingerprint = new HashMap<>();

    Counts add(String fingerprint) {
        byFingerprint.merge(fingerprint, 1L, Long::sum);
        return this;
    }

    static final class CountsSerde implements Serde<Counts> {
        @Override
        public Serializer<Counts> serializer() {
            return (topic, counts) -> {
                if (counts == null) {
                    return null;
                }
                byte[][] keys = new byte[counts.byFingerprint.size()][];
                long[] values = new long[keys.length];
                int i = 0;
                int size = 4;
                for (Map.Entry<String, Long> e : counts.byFingerprint.entrySet()) {
                    keys[i] = e.getKey().getBytes(StandardCharsets.UTF_8);
                    values[i] = e.getValue();
                    size += 4 + keys[i].length + 8;
                    i++;
                }
                ByteBuffer out = ByteBuffer.allocate(size).putInt(keys.length);
                for (i = 0; i < keys.length; i++) {
                    out.putInt(keys[i].length).put(keys[i]).putLong(values[i]);
                }
                return out.array();
            };
        }

        @Override
        public Deserializer<Counts> deserializer() {
            return (topic, data) -> {
                if (data == null) {
                    return null;
                }
                ByteBuffer in = ByteBuffer.wrap(data);
                Counts counts = new Counts();
                for (int n = in.getInt(); n > 0; n--) {
                    int len = in.getInt();
                    String key = new String(data, in.position(), len, StandardCharsets.UTF_8);
                    in.position(in.position() + len);
                    counts.byFingerprint.put(key, in.getLong());
                }
                return counts;
            };
        }
    }
}
