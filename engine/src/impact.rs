//! An incident's severity from its impact, as a person on call would grade it.
//!
//! A rule names a kind of fault; how bad one occurrence of it is depends on what it did: how many
//! pods it reached, for how long, how many restarts, kills and evictions followed, and whether it
//! has happened before. A readiness blip on one pod during a rollout and a missing Secret that
//! keeps nine pods from starting for an hour match rules of the same severity, and were both
//! graded `error`, so a timeline of them was one colour and told nothing.
//!
//! Each of breadth, duration, disruption and recurrence scores 0 to 2 on thresholds a person
//! would use; the sum grades the incident, with rules about nodes (a fault under every pod on
//! them) starting one step higher. An incident is graded again at every update, so one that
//! widens or lasts escalates.

use kev_schemas::Severity;

/// Reasons of member events that mean a workload was disrupted: a container killed or not
/// started, a pod evicted, a node lost.
const DISRUPTIVE: &[&str] = &[
    "BackOff",
    "Killing",
    "Evicted",
    "TaintManagerEviction",
    "Preempted",
    "Preempting",
    "OOMKilling",
    "SystemOOM",
    "NodeNotReady",
    "FailedKillPod",
];

/// Whether a member event with this reason counts as a disruption.
pub fn is_disruptive(reason: &str) -> bool {
    DISRUPTIVE.contains(&reason)
}

/// What an incident did, as far as its events tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Impact {
    /// Pods among its members' objects (for an incident about no pod, its objects in scope).
    pub pods: usize,
    /// Event time from the first occurrence of its earliest member (a repeated Event began
    /// before its newest occurrence) to its last member, in microseconds.
    pub span_us: i64,
    /// Members that are restarts, kills, evictions or node losses.
    pub disruptions: usize,
    /// How often the same fault opened an incident before.
    pub previous: u64,
}

const MINUTE_US: i64 = 60_000_000;

impl Impact {
    /// 0 to 8 points: breadth, duration, disruption (0-2 each), recurrence (0-2).
    pub fn score(&self) -> u32 {
        let breadth = match self.pods {
            0 | 1 => 0,
            2..=4 => 1,
            _ => 2,
        };
        let duration = match self.span_us {
            s if s < 2 * MINUTE_US => 0,
            s if s < 15 * MINUTE_US => 1,
            _ => 2,
        };
        let disruption = match self.disruptions {
            0 => 0,
            1..=3 => 1,
            _ => 2,
        };
        let recurrence = match self.previous {
            0 => 0,
            1..=2 => 1,
            _ => 2,
        };
        breadth + duration + disruption + recurrence
    }

    /// The grade: `warning` for a brief fault on one or two pods, `error` for one that spread,
    /// lasted or disrupted, `critical` for one that did several of these; a rule about nodes
    /// (`critical` in its file) counts one point more. Never below `warning`: a correlated fault
    /// is worth a look.
    pub fn severity(&self, rule: Severity) -> Severity {
        let points = self.score() + u32::from(rule >= Severity::Critical);
        match points {
            0 | 1 => Severity::Warning,
            2 | 3 => Severity::Error,
            _ => Severity::Critical,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_readiness_blip_on_one_pod_is_a_warning() {
        let blip = Impact { pods: 1, span_us: 30_000_000, disruptions: 1, previous: 0 };
        assert_eq!(blip.severity(Severity::Error), Severity::Warning);
    }

    #[test]
    fn a_missing_secret_keeping_nine_pods_down_for_an_hour_is_critical() {
        let outage = Impact { pods: 9, span_us: 60 * MINUTE_US, disruptions: 0, previous: 0 };
        assert_eq!(outage.severity(Severity::Error), Severity::Critical);
        let brief = Impact { pods: 3, span_us: 5 * MINUTE_US, disruptions: 0, previous: 0 };
        assert_eq!(brief.severity(Severity::Error), Severity::Error);
    }

    #[test]
    fn recurrence_and_node_rules_raise_the_grade() {
        let once = Impact { pods: 2, span_us: MINUTE_US, disruptions: 0, previous: 0 };
        assert_eq!(once.severity(Severity::Error), Severity::Warning);
        assert_eq!(Impact { previous: 1, ..once }.severity(Severity::Error), Severity::Error);
        assert_eq!(Impact { previous: 5, ..once }.severity(Severity::Error), Severity::Error);
        assert_eq!(Impact { previous: 5, pods: 5, ..once }.severity(Severity::Error), Severity::Critical);
        assert_eq!(once.severity(Severity::Critical), Severity::Error);
    }

    #[test]
    fn the_grade_never_falls_as_the_impact_grows() {
        let mut last = Severity::Info;
        for step in 0..12 {
            let i = Impact { pods: step, span_us: step as i64 * 3 * MINUTE_US, disruptions: step, previous: 0 };
            let s = i.severity(Severity::Error);
            assert!(s >= last, "{i:?} graded {s:?} after {last:?}");
            last = s;
        }
        assert_eq!(last, Severity::Critical);
    }
}
