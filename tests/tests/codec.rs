//! The codec's prepared writers: after the first record of a schema on a topic registers it,
//! later records are written without the converter, and must come out byte for byte as the
//! converter would write them, under the id the registry gave.

use std::net::SocketAddr;

use kev_common::devregistry::DevRegistry;
use kev_schemas::codec::{encode_body, split_wire_format, RegistrySettings};
use kev_schemas::schema::{RAW_RECORD, RAW_SCHEMA};
use kev_schemas::RawRecord;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn prepared_writers_write_what_the_converter_writes() {
    let cancel = CancellationToken::new();
    let registry = DevRegistry::start(SocketAddr::from(([127, 0, 0, 1], 0)), cancel.clone()).await.unwrap();
    let settings = RegistrySettings { url: registry.url.clone(), ..Default::default() };
    let records: Vec<RawRecord> =
        kev_tests::data::observations().into_iter().take(40).map(|(cluster, o)| RawRecord::event(cluster, o)).collect();

    // A fresh codec per record: every record through the converter (register + encode).
    let mut by_converter = Vec::new();
    for r in &records {
        let codec = settings.codec().unwrap();
        by_converter.push(codec.encode("kev.events.raw", "io.kev.raw.RawRecord", RAW_RECORD, r).await.unwrap());
    }
    // One codec: the first record through the converter, the rest through the prepared writer.
    let codec = settings.codec().unwrap();
    for (r, want) in records.iter().zip(&by_converter) {
        let got = codec.encode("kev.events.raw", "io.kev.raw.RawRecord", RAW_RECORD, r).await.unwrap();
        assert_eq!(&got, want);
        let decoded: RawRecord = codec.decode_raw(&got).await.unwrap();
        assert_eq!(&decoded, r);
    }
    let (id, body) = split_wire_format(&by_converter[1]).unwrap();
    assert_eq!(body, encode_body(&RAW_SCHEMA, &records[1]).unwrap());

    // Another topic is another subject: registered on its first record, then prepared too.
    let other = codec.encode("kev.other", "io.kev.raw.RawRecord", RAW_RECORD, &records[0]).await.unwrap();
    let again = codec.encode("kev.other", "io.kev.raw.RawRecord", RAW_RECORD, &records[0]).await.unwrap();
    assert_eq!(other, again);
    assert_eq!(split_wire_format(&other).unwrap().0, id, "the registry reuses the id of an identical schema");
    cancel.cancel();
}
