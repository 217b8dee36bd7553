//! Incidents as Alertmanager alerts: an open incident is a firing alert, a resolved one a
//! resolved alert (Alertmanager's v2 API, `POST /api/v2/alerts`).
//!
//! Alertmanager forgets a firing alert that is not re-sent within its `resolve_timeout`
//! (5 minutes by default), the way it forgets a Prometheus alert whose rule stopped evaluating,
//! so the alerter re-sends every open incident's alert each `resend_interval_ms`. A resolved
//! incident is sent with its `endsAt` until Alertmanager has accepted it once, then forgotten.
//!
//! Posting is at the edge and never holds the pipeline: the enricher hands incidents over a
//! bounded channel and goes on; while Alertmanager is down, the alerter retries with backoff
//! and keeps only the newest state of each incident, so what it holds is bounded by the number
//! of open incidents. Alerts are identified by their labels, so an incident re-emitted after a
//! restart updates the same alert instead of making a second one.

use std::collections::BTreeMap;
use std::time::Duration;

use kev_schemas::{Incident, IncidentStatus, ResourceRef, Severity};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::routes::SeverityName;

/// The `alerting` section of the enricher's configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingSettings {
    /// Alertmanager's base URL, such as `http://alertmanager.monitoring:9093`. Default none:
    /// no alerts are sent.
    #[serde(default)]
    pub alertmanager_url: Option<String>,
    /// Incidents below this severity raise no alert. Default `warning`.
    #[serde(default = "default_min_severity")]
    pub min_severity: SeverityName,
    /// Milliseconds between re-sends of open incidents' alerts; keep it well below
    /// Alertmanager's `resolve_timeout`. Default 60000.
    #[serde(default = "default_resend_ms")]
    pub resend_interval_ms: u64,
    /// Timeout of one POST in milliseconds. Default 5000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Labels added to every alert, such as `{team: platform}`. Default none.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Default for AlertingSettings {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("every field has a default")
    }
}

fn default_min_severity() -> SeverityName {
    SeverityName::Warning
}
fn default_resend_ms() -> u64 {
    60_000
}
fn default_timeout_ms() -> u64 {
    5_000
}

/// One alert as Alertmanager's v2 API takes it (`postableAlert`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
}

impl Alert {
    /// The alert of `incident`: labels name what it is about (cluster, namespace, scope, rule,
    /// severity, incident id), the annotations say what happened.
    pub fn of(incident: &Incident, extra_labels: &BTreeMap<String, String>) -> Alert {
        let mut labels = extra_labels.clone();
        labels.insert("alertname".into(), "KevIncident".into());
        labels.insert("cluster".into(), incident.cluster.clone());
        labels.insert("rule".into(), incident.rule.clone());
        labels.insert("severity".into(), crate::report::severity_name(incident.severity).to_string());
        labels.insert("incident_id".into(), incident.incident_id.clone());
        let anchor = incident.root_cause.as_ref().or_else(|| incident.scope.first());
        if let Some(ns) = anchor
            .and_then(|r| r.namespace.as_deref())
            .or_else(|| incident.scope.iter().find_map(|r| r.namespace.as_deref()))
            .filter(|n| !n.is_empty())
        {
            labels.insert("namespace".into(), ns.to_string());
        }
        if let Some(scope) = anchor.map(object_name) {
            labels.insert("scope".into(), scope);
        }
        let mut annotations = BTreeMap::new();
        annotations.insert("summary".into(), incident.summary.clone());
        let members: Vec<String> = incident.scope.iter().map(object_name).collect();
        annotations.insert(
            "description".into(),
            format!(
                "{} event(s) over {} object(s): {}; confidence {:.2}",
                incident.member_uids.len(),
                members.len(),
                members.join(", "),
                incident.confidence
            ),
        );
        Alert {
            labels,
            annotations,
            starts_at: rfc3339(incident.opened_at),
            ends_at: match incident.status {
                IncidentStatus::Resolved => Some(rfc3339(incident.resolved_at.unwrap_or(incident.updated_at))),
                _ => None,
            },
        }
    }

    pub fn is_resolved(&self) -> bool {
        self.ends_at.is_some()
    }
}

fn object_name(r: &ResourceRef) -> String {
    format!("{}/{}", r.kind.as_deref().unwrap_or("Object"), r.name.as_deref().unwrap_or("?"))
}

fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The enricher's side of the alerter: hands incidents over without waiting.
#[derive(Clone)]
pub struct AlertSender {
    tx: mpsc::Sender<Incident>,
    min_severity: Severity,
}

/// Incidents waiting for the alerter. Far more than open incidents at any time; when full
/// (Alertmanager has been down for long while incidents pour in), the newest are counted and
/// logged as dropped rather than slowing the pipeline.
const QUEUE: usize = 10_000;

impl AlertSender {
    pub fn send(&self, incident: &Incident) {
        if incident.severity == Severity::Unknown || incident.severity < self.min_severity {
            return;
        }
        if let Err(e) = self.tx.try_send(incident.clone()) {
            metrics::counter!("kev_enricher_alerts_dropped_total").increment(1);
            tracing::warn!(incident = %incident.incident_id, error = %e, "alert queue full; alert not sent");
        }
    }
}

/// Starts the alerter when `alertmanager_url` is set.
pub fn start(settings: &AlertingSettings, stop: CancellationToken) -> Result<Option<AlertSender>, reqwest::Error> {
    let Some(url) = settings.alertmanager_url.clone() else { return Ok(None) };
    let client = reqwest::Client::builder().timeout(Duration::from_millis(settings.timeout_ms.max(100))).build()?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let alerter = Alerter {
        client,
        url: format!("{}/api/v2/alerts", url.trim_end_matches('/')),
        labels: settings.labels.clone(),
        resend: Duration::from_millis(settings.resend_interval_ms.max(1_000)),
        pending: BTreeMap::new(),
        firing: BTreeMap::new(),
    };
    tokio::spawn(alerter.run(rx, stop));
    Ok(Some(AlertSender { tx, min_severity: settings.min_severity.into() }))
}

struct Alerter {
    client: reqwest::Client,
    url: String,
    labels: BTreeMap<String, String>,
    resend: Duration,
    /// Alerts not yet accepted by Alertmanager, newest state per incident.
    pending: BTreeMap<String, Alert>,
    /// Open incidents' alerts, re-sent every `resend`.
    firing: BTreeMap<String, Alert>,
}

impl Alerter {
    async fn run(mut self, mut rx: mpsc::Receiver<Incident>, stop: CancellationToken) {
        let mut resend = tokio::time::interval(self.resend);
        resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff = Duration::from_millis(500);
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    // One last try, so that resolutions seen just before a shutdown arrive.
                    if !self.pending.is_empty() {
                        let _ = self.post().await;
                    }
                    return;
                }
                incident = rx.recv() => match incident {
                    None => return,
                    Some(i) => {
                        self.take(i);
                        // Take what else is queued, so one POST carries a burst.
                        while let Ok(i) = rx.try_recv() {
                            self.take(i);
                        }
                    }
                },
                _ = resend.tick() => {
                    for (id, alert) in &self.firing {
                        self.pending.entry(id.clone()).or_insert_with(|| alert.clone());
                    }
                }
            }
            if self.pending.is_empty() {
                continue;
            }
            match self.post().await {
                Ok(()) => backoff = Duration::from_millis(500),
                Err(e) => {
                    metrics::counter!("kev_enricher_alert_failures_total").increment(1);
                    tracing::warn!(error = %e, alerts = self.pending.len(), retry_in = ?backoff, "posting alerts to Alertmanager failed");
                    if kev_common::shutdown::sleep_or_stop(backoff, &stop).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    fn take(&mut self, incident: Incident) {
        let alert = Alert::of(&incident, &self.labels);
        if alert.is_resolved() {
            self.firing.remove(&incident.incident_id);
        } else {
            self.firing.insert(incident.incident_id.clone(), alert.clone());
        }
        metrics::gauge!("kev_enricher_alerts_firing").set(self.firing.len() as f64);
        self.pending.insert(incident.incident_id, alert);
    }

    /// Posts every pending alert in one request; they stay pending unless it succeeds.
    async fn post(&mut self) -> Result<(), String> {
        let alerts: Vec<&Alert> = self.pending.values().collect();
        let response = self.client.post(&self.url).json(&alerts).send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(format!("{} answered {status}: {}", self.url, body.trim()));
        }
        metrics::counter!("kev_enricher_alerts_sent_total").increment(alerts.len() as u64);
        tracing::debug!(alerts = alerts.len(), "alerts posted");
        self.pending.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(status: IncidentStatus) -> Incident {
        Incident {
            incident_id: "inc-1".into(),
            cluster: "prod".into(),
            rule: "volume-mount-failure".into(),
            status,
            severity: Severity::Error,
            confidence: 0.8,
            summary: "FailedMount of volume data (timeout) on pod db-0 preceded 7 restarts (BackOff) within 4m".into(),
            root_cause: Some(ResourceRef {
                kind: Some("Pod".into()),
                namespace: Some("shop".into()),
                name: Some("db-0".into()),
                ..Default::default()
            }),
            scope: vec![ResourceRef {
                kind: Some("Pod".into()),
                namespace: Some("shop".into()),
                name: Some("db-0".into()),
                ..Default::default()
            }],
            member_uids: vec!["a".into(), "b".into()],
            opened_at: 1_700_000_000_000_000,
            updated_at: 1_700_000_060_000_000,
            resolved_at: (status == IncidentStatus::Resolved).then_some(1_700_000_600_000_000),
            ..Default::default()
        }
    }

    #[test]
    fn an_incident_becomes_an_alert_with_the_labels_alertmanager_groups_by() {
        let extra = BTreeMap::from([("team".to_string(), "platform".to_string())]);
        let a = Alert::of(&incident(IncidentStatus::Open), &extra);
        let labels: Vec<(&str, &str)> = a.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            labels,
            [
                ("alertname", "KevIncident"),
                ("cluster", "prod"),
                ("incident_id", "inc-1"),
                ("namespace", "shop"),
                ("rule", "volume-mount-failure"),
                ("scope", "Pod/db-0"),
                ("severity", "error"),
                ("team", "platform"),
            ]
        );
        assert!(a.annotations["summary"].starts_with("FailedMount of volume data"));
        assert_eq!(a.starts_at, "2023-11-14T22:13:20.000Z");
        assert_eq!(a.ends_at, None);
        let json = serde_json::to_value(&a).unwrap();
        assert!(json.get("endsAt").is_none() && json.get("startsAt").is_some(), "{json}");

        let r = Alert::of(&incident(IncidentStatus::Resolved), &extra);
        assert_eq!(r.ends_at.as_deref(), Some("2023-11-14T22:23:20.000Z"));
        assert_eq!(r.labels, a.labels, "resolution must name the same alert");
    }
}
