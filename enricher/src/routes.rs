//! Routing: copies of the records a team cares about on topics of their own (for example every
//! critical incident, or everything of the `payments` namespace), so that a consumer reads its
//! slice instead of filtering the whole stream.
//!
//! A routed record is the main record, written again: same key, same value (encoded for the
//! route's topic, whose Schema Registry subject is its own), same headers and timestamp. It is
//! sent before the input offsets are committed, like every output, so routes get the same
//! effectively-once guarantee and a postmortem replay routes the same records.

pub use kev_engine::rules::SeverityName;
use kev_engine::Output;
use kev_schemas::Severity;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::config::TopicsSettings;
use crate::records::{Record, Stream};

/// One route of the `routes` list.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    /// Names the route in the `kev_enricher_records_routed_total{route}` metric.
    pub name: String,
    /// The topic the copies go to; created like the stream's own topic when missing.
    pub topic: String,
    /// Which records: `enriched`, `aggregates` or `incidents`.
    pub stream: RoutedStream,
    /// Only records at least this severe (`info`, `warning`, `error`, `critical`).
    #[serde(default)]
    pub min_severity: Option<SeverityName>,
    /// Regular expression on the whole namespace (an incident's is its root cause's, else its
    /// first namespaced scope member's). A record without a namespace does not match.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Regular expression on the whole cluster id.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Regular expression on the whole category (enriched events and aggregates) or
    /// correlation rule name (incidents).
    #[serde(default)]
    pub category: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoutedStream {
    Enriched,
    Aggregates,
    Incidents,
}

impl RoutedStream {
    pub fn stream(self) -> Stream {
        match self {
            RoutedStream::Enriched => Stream::Enriched,
            RoutedStream::Aggregates => Stream::Aggregates,
            RoutedStream::Incidents => Stream::Incidents,
        }
    }
}

/// A route that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("routes[{index}] ({name}): {reason}")]
pub struct RouteError {
    index: usize,
    name: String,
    reason: String,
}

/// The compiled routes.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
}

#[derive(Debug)]
struct Route {
    name: String,
    topic: String,
    stream: Stream,
    min_severity: Option<Severity>,
    namespace: Option<Regex>,
    cluster: Option<Regex>,
    category: Option<Regex>,
}

impl Router {
    /// Compiles the routes; `main_topics` are the enricher's own topics, which a route may not
    /// write to (that would duplicate records in a stream).
    pub fn new(routes: &[RouteSettings], main_topics: &[&str]) -> Result<Self, RouteError> {
        let compiled = routes
            .iter()
            .enumerate()
            .map(|(index, r)| {
                let error = |reason: String| RouteError { index, name: r.name.clone(), reason };
                if r.name.is_empty() || r.topic.is_empty() {
                    return Err(error("a route needs a name and a topic".into()));
                }
                if main_topics.contains(&r.topic.as_str()) {
                    return Err(error(format!("topic {} is one of the enricher's own topics", r.topic)));
                }
                let anchored = |field: &str, p: &Option<String>| {
                    p.as_deref()
                        .map(|p| Regex::new(&format!("^(?:{p})$")).map_err(|e| error(format!("{field}: {e}"))))
                        .transpose()
                };
                Ok(Route {
                    name: r.name.clone(),
                    topic: r.topic.clone(),
                    stream: r.stream.stream(),
                    min_severity: r.min_severity.map(Severity::from),
                    namespace: anchored("namespace", &r.namespace)?,
                    cluster: anchored("cluster", &r.cluster)?,
                    category: anchored("category", &r.category)?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Router { routes: compiled })
    }

    /// The routes of `topics`, checked against its main topics.
    pub fn for_topics(t: &TopicsSettings) -> Result<Self, RouteError> {
        let main: Vec<&str> = std::iter::once(t.raw.as_str()).chain(t.written()).collect();
        Router::new(&t.routes, &main)
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Each route's (stream, topic), for creating the topics.
    pub fn topics(&self) -> impl Iterator<Item = (Stream, &str)> {
        self.routes.iter().map(|r| (r.stream, r.topic.as_str()))
    }

    /// The (route name, topic) of every route `record` matches, in configuration order.
    pub fn matching<'a>(&'a self, record: &'a Record) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let facts = Facts::of(record);
        self.routes
            .iter()
            .filter(move |r| facts.as_ref().is_some_and(|f| r.matches(f)))
            .map(|r| (r.name.as_str(), r.topic.as_str()))
    }
}

/// What a route can match on, taken from any routable record.
struct Facts<'a> {
    stream: Stream,
    severity: Severity,
    namespace: Option<&'a str>,
    cluster: &'a str,
    category: &'a str,
}

impl<'a> Facts<'a> {
    fn of(record: &'a Record) -> Option<Self> {
        let Record::Engine(output) = record else { return None };
        Some(match output {
            Output::Enriched(e) => Facts {
                stream: Stream::Enriched,
                severity: e.severity,
                namespace: e.namespace.as_deref(),
                cluster: &e.cluster,
                category: &e.category,
            },
            Output::Aggregate(a) => Facts {
                stream: Stream::Aggregates,
                severity: a.severity,
                namespace: a.namespace.as_deref(),
                cluster: &a.cluster,
                category: &a.category,
            },
            Output::Incident(i) => Facts {
                stream: Stream::Incidents,
                severity: i.severity,
                namespace: i
                    .root_cause
                    .as_ref()
                    .and_then(|r| r.namespace.as_deref())
                    .or_else(|| i.scope.iter().find_map(|r| r.namespace.as_deref())),
                cluster: &i.cluster,
                category: &i.rule,
            },
        })
    }
}

impl Route {
    fn matches(&self, f: &Facts<'_>) -> bool {
        let is = |re: &Option<Regex>, v: Option<&str>| match (re, v) {
            (None, _) => true,
            (Some(re), Some(v)) => re.is_match(v),
            (Some(_), None) => false,
        };
        self.stream == f.stream
            && self.min_severity.is_none_or(|min| f.severity != Severity::Unknown && f.severity >= min)
            && is(&self.namespace, f.namespace.filter(|n| !n.is_empty()))
            && is(&self.cluster, Some(f.cluster))
            && is(&self.category, Some(f.category))
    }
}

#[cfg(test)]
mod tests {
    use kev_schemas::{EnrichedEvent, Incident, IncidentStatus, ResourceRef};

    use super::*;

    fn enriched(namespace: &str, severity: Severity, category: &str) -> Record {
        Record::Engine(Output::Enriched(EnrichedEvent {
            cluster: "prod-eu".into(),
            namespace: Some(namespace.into()),
            severity,
            category: category.into(),
            ..Default::default()
        }))
    }

    fn incident(namespace: Option<&str>, severity: Severity) -> Record {
        Record::Engine(Output::Incident(Incident {
            cluster: "prod-eu".into(),
            rule: "volume-mount-failure".into(),
            status: IncidentStatus::Open,
            severity,
            root_cause: Some(ResourceRef {
                kind: Some("Pod".into()),
                namespace: namespace.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    fn router(yaml: &str) -> Router {
        let settings: Vec<RouteSettings> = serde_norway::from_str(yaml).unwrap();
        Router::new(&settings, &["kev.events.enriched"]).unwrap()
    }

    fn topics<'a>(r: &'a Router, rec: &'a Record) -> Vec<&'a str> {
        r.matching(rec).map(|(_, t)| t).collect()
    }

    #[test]
    fn routes_by_stream_severity_namespace_and_category() {
        let r = router(
            "[{name: critical, topic: inc.critical, stream: incidents, min_severity: critical},
              {name: payments, topic: ev.payments, stream: enriched, namespace: 'payments|checkout'},
              {name: storage, topic: ev.storage, stream: enriched, category: storage, min_severity: warning}]",
        );
        assert_eq!(topics(&r, &incident(Some("a"), Severity::Critical)), ["inc.critical"]);
        assert!(topics(&r, &incident(Some("a"), Severity::Error)).is_empty());
        assert_eq!(topics(&r, &enriched("payments", Severity::Info, "image")), ["ev.payments"]);
        assert!(topics(&r, &enriched("payments-x", Severity::Info, "image")).is_empty(), "anchored");
        assert_eq!(topics(&r, &enriched("checkout", Severity::Error, "storage")), ["ev.payments", "ev.storage"]);
        assert!(topics(&r, &enriched("other", Severity::Info, "storage")).is_empty(), "below min_severity");
    }

    #[test]
    fn incidents_route_by_their_root_cause_namespace_and_rule() {
        let r = router("[{name: team, topic: inc.team, stream: incidents, namespace: team-a, category: 'volume-.*'}]");
        assert_eq!(topics(&r, &incident(Some("team-a"), Severity::Warning)), ["inc.team"]);
        assert!(topics(&r, &incident(Some("team-b"), Severity::Warning)).is_empty());
        assert!(topics(&r, &incident(None, Severity::Warning)).is_empty(), "no namespace, no match");
    }

    #[test]
    fn broken_routes_are_refused() {
        let bad = |yaml: &str| {
            let settings: Vec<RouteSettings> = serde_norway::from_str(yaml).unwrap();
            Router::new(&settings, &["kev.events.enriched"]).unwrap_err().to_string()
        };
        assert!(bad("[{name: x, topic: kev.events.enriched, stream: enriched}]").contains("enricher's own topics"));
        assert!(
            bad("[{name: x, topic: t, stream: enriched, namespace: '(x'}]").starts_with("routes[0] (x): namespace:")
        );
        assert!(serde_norway::from_str::<Vec<RouteSettings>>("[{name: x, topic: t, stream: dead_letters}]").is_err());
    }
}
