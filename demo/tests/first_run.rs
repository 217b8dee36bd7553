//! The first-run command over one real dump: everything the producer published comes back
//! enriched through the embedded Kafka, the dump's known chains become incidents, and the
//! report names every incident.

use kev_demo::{run, DemoOptions};
use kev_enricher::report;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openshift_must_gather_through_the_embedded_pipeline() {
    let file = std::path::PathBuf::from("../tests/data/k8s-events/openshift-aws.jsonl.gz");
    let opts = DemoOptions { files: vec![file], noisy: 10, speed: 0.0 };
    let mut out = Vec::new();
    let stop = CancellationToken::new();
    let outcome = run(&opts, &mut out, &stop).await.unwrap();
    let printed = String::from_utf8(out).unwrap();

    assert!(outcome.events_published > 0);
    assert_eq!(outcome.report.events.len() as u64, outcome.events_published, "every published event is enriched once");
    assert!(
        outcome.report.events.iter().all(|e| e.cluster == "openshift-aws"),
        "the dump's file name is its cluster id"
    );
    assert!(!outcome.report.aggregates.is_empty());
    let incidents = outcome.report.latest_incidents();
    assert!(!incidents.is_empty(), "the must-gather holds probe and mount failures");
    assert!(incidents.iter().any(|i| i.summary.contains("FailedMount")), "{incidents:#?}");
    for i in &incidents {
        let opened = printed.lines().any(|l| l.contains("OPEN") && l.contains(&i.cluster));
        assert!(opened, "incident {} was not printed as it opened:\n{printed}", i.incident_id);
    }

    let html = report::render(&outcome.report);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<svg"), "the timeline is drawn");
    for i in &incidents {
        assert!(
            html.contains(&format!("id=\"incident-{}\"", i.incident_id)),
            "report lacks incident {}",
            i.incident_id
        );
    }
    assert!(!html.contains("<script") && !html.contains("src=\"http"), "no script, nothing fetched");
    assert_eq!(html, report::render(&outcome.report), "the report is a function of the records");
}
