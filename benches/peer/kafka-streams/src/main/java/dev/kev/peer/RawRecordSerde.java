package dev.kev.peer;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.kafka.common.errors.SerializationException;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serializer;

/**
 * kev's raw records in the Confluent wire format (magic byte 0, 4-byte schema id, Avro binary),
 * read with Apache Avro's GenericDatumReader and the writer schema the registry has under that
 * id (GET {registry}/schemas/ids/{id}, fetched once per id). Read-only: the peer never writes
 * raw records.
 *
 * <p>One instance serves every stream thread: the readers are shared (GenericDatumReader keeps
 * its resolver cache per thread), each thread reuses its own decoder.
 */
final class RawRecordSerde implements Serde<GenericRecord> {
    private final String registry;
    private final HttpClient http = HttpClient.newHttpClient();
    private final ConcurrentHashMap<Integer, GenericDatumReader<GenericRecord>> readers = new ConcurrentHashMap<>();
    private final ThreadLocal<BinaryDecoder> decoders = new ThreadLocal<>();

    RawRecordSerde(String registry) {
        this.registry = registry.replaceAll("/+$", "");
    }

    @Override
    public Serializer<GenericRecord> serializer() {
        return (topic, value) -> {
            throw new UnsupportedOperationException("the peer only reads raw records");
        };
    }

    @Override
    public Deserializer<GenericRecord> deserializer() {
        return this::decode;
    }

    private GenericRecord decode(String topic, byte[] data) {
        if (data == null) {
            return null;
        }
        if (data.length < 5 || data[0] != 0) {
            throw new SerializationException("not in the Confluent wire format: " + data.length + " bytes");
        }
        int id = ByteBuffer.wrap(data, 1, 4).getInt();
        GenericDatumReader<GenericRecord> reader = readers.computeIfAbsent(id, this::fetch);
        BinaryDecoder decoder = DecoderFactory.get().binaryDecoder(data, 5, data.length - 5, decoders.get());
        decoders.set(decoder);
        try {
            return reader.read(null, decoder);
        } catch (IOException | RuntimeException e) {
            throw new SerializationException("schema id " + id + ": " + e, e);
        }
    }

    /** The reader of schema {@code id}: its writer schema, from the registry. */
    private GenericDatumReader<GenericRecord> fetch(int id) {
        URI uri = URI.create(registry + "/schemas/ids/" + id);
        try {
            HttpResponse<String> r =
                    http.send(HttpRequest.newBuilder(uri).GET().build(), HttpResponse.BodyHandlers.ofString());
            if (r.statusCode() != 200) {
                throw new SerializationException("GET " + uri + ": " + r.statusCode() + " " + r.body());
            }
            return new GenericDatumReader<>(new Schema.Parser().parse(schemaField(r.body())));
        } catch (IOException e) {
            throw new UncheckedIOException("GET " + uri, e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new SerializationException("GET " + uri + ": interrupted", e);
        }
    }

    /** The "schema" member of the registry's answer, a JSON object. */
    private static String schemaField(String body) throws IOException {
        try (JsonParser p = new JsonFactory().createParser(body)) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                throw new SerializationException("registry answered " + body);
            }
            while (p.nextToken() == JsonToken.FIELD_NAME) {
                String name = p.currentName();
                p.nextToken();
                if (name.equals("schema")) {
                    return p.getText();
                }
                p.skipChildren();
            }
        }
        throw new SerializationException("no schema in the registry's answer " + body);
    }
}
