//! The first-run command over one real dump: everything the producer published comes back
//! enriched through the embedded Kafka, the dump's known chains become incidents, and the
//! report, opened in headless Chromium, shows every incident and its events on demand.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use kev_demo::{print_summary, run, DemoOptions};
use kev_enricher::report;
use kev_schemas::Incident;
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

    // The summary says what a person reads: no incident inside another, and the records to read.
    let mut summary = Vec::new();
    print_summary(&mut summary, &outcome).unwrap();
    let summary = String::from_utf8(summary).unwrap();
    assert!(summary.contains("nested incidents   0 "), "{summary}");
    assert!(summary.contains("records to read") && summary.contains("per 1,000 raw events"), "{summary}");

    let html = report::render(&outcome.report);
    // Graded by impact, the timeline is not one colour.
    let colours = ["bar warning", "bar error", "bar critical"].iter().filter(|c| html.contains(*c)).count();
    assert!(colours >= 2, "incidents of one severity only");
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

    check_in_browser(&html, &incidents).await;
}

/// chromedriver on a free local port, killed with the test.
struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn chromedriver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let driver = Driver(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian chromium-driver; scripts/prerequisites.sh --for-tests installs it)"),
        port,
    );
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not listen on {port}");
}

/// Opens the report as a user would and checks what the browser shows: every incident's
/// summary line is visible text, its member events appear when it is expanded (and not
/// before), and each cluster's timeline is drawn.
async fn check_in_browser(html: &str, incidents: &[&Incident]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.html");
    std::fs::write(&file, html).unwrap();
    let driver = chromedriver().await;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"]}),
    );
    let browser = ClientBuilder::native()
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("a Chromium session");
    browser.goto(&format!("file://{}", file.display())).await.unwrap();

    let summaries = browser.find_all(Locator::Css("details.incident > summary")).await.unwrap();
    let mut shown = Vec::new();
    for s in &summaries {
        shown.push(s.text().await.unwrap());
    }
    assert_eq!(shown.len(), incidents.len());
    for i in incidents {
        assert!(shown.iter().any(|t| t.contains(&i.summary)), "the browser does not show {:?}", i.summary);
    }

    let first = incidents[0];
    let members = format!("#incident-{} table.members", first.incident_id);
    let table = browser.find(Locator::Css(&members)).await.unwrap();
    assert!(!table.is_displayed().await.unwrap(), "member events are shown on demand, not up front");
    browser
        .find(Locator::Css(&format!("#incident-{} > summary", first.incident_id)))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let table = browser.find(Locator::Css(&members)).await.unwrap();
    assert!(table.is_displayed().await.unwrap(), "expanding an incident shows its events");
    let text = table.text().await.unwrap();
    assert!(text.lines().count() > 1, "the member table lists events: {text}");

    let clusters: std::collections::BTreeSet<&str> = incidents.iter().map(|i| i.cluster.as_str()).collect();
    let timelines = browser.find_all(Locator::Css("svg.timeline")).await.unwrap();
    assert_eq!(timelines.len(), clusters.len(), "one timeline per cluster");
    for t in &timelines {
        assert!(t.is_displayed().await.unwrap());
        let bars = t.find_all(Locator::Css("rect.bar")).await.unwrap();
        assert!(!bars.is_empty(), "the timeline draws incident bars");
    }
    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a screenshot is taken");
    if let Ok(path) = std::env::var("REPORT_SCREENSHOT") {
        std::fs::write(path, &png).unwrap();
    }
    browser.close().await.unwrap();
}
