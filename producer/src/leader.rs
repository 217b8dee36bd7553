//! Leader election through a coordination.k8s.io Lease, as client-go's leaderelection does:
//! of several replicas only the holder runs publishing sessions.
//!
//! Safety comes from the timings: a leader that cannot renew for `renew_deadline` stops its
//! session (and drains what is in flight) before the Lease can expire at `lease_duration`, so two
//! replicas never publish at once. A leader that was not running at all meanwhile (frozen by
//! SIGSTOP or a cgroup freezer) cannot stop itself in time; its [`Term`] makes it hand nothing
//! more to Kafka once it runs again. The new leader rebuilds its state from the raw topic, so a
//! handover loses nothing and repeats nothing. On shutdown the leader releases the Lease so that
//! a standby takes over at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;

use crate::config::LeaderSettings;

/// The time in which this replica may publish as the leader: until `renew_deadline` after the
/// start of its last successful acquisition or renewal, on the monotonic clock. That clock goes
/// on while the process is not running, so a leader woken after the standby took over finds its
/// term over before its next record, without waiting for a Lease call: the renewal loop may be
/// seconds from its next try, and the session has watch events ready at once. Records already
/// handed to librdkafka before the freeze may be sent as it wakes, before the check (a
/// transactional producer is fenced by the next leader; an idempotent one may deliver those few
/// once more). A guest whose monotonic clock stops while its VM is paused is not covered.
#[derive(Clone, Debug)]
pub struct Term {
    renewed: Arc<Mutex<tokio::time::Instant>>,
    deadline: Duration,
}

impl Term {
    fn new(deadline: Duration) -> Self {
        Self { renewed: Arc::new(Mutex::new(tokio::time::Instant::now())), deadline }
    }

    fn renewed(&self, at: tokio::time::Instant) {
        let mut renewed = self.renewed.lock().unwrap_or_else(|e| e.into_inner());
        *renewed = (*renewed).max(at);
    }

    /// Whether the term still holds: less than `renew_deadline` since the last renewal began.
    pub fn current(&self) -> bool {
        self.renewed.lock().unwrap_or_else(|e| e.into_inner()).elapsed() < self.deadline
    }
}

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    retry_period: Duration,
    /// Made not ready while the API server refuses the Lease calls (RBAC).
    health: Option<std::sync::Arc<kev_common::telemetry::Health>>,
    term: Term,
}

impl Elector {
    pub fn new(client: kube::Client, settings: &LeaderSettings, name: String, identity: String) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            name,
            identity,
            lease_duration: Duration::from_secs(settings.lease_duration_s),
            retry_period: Duration::from_secs(settings.retry_period_s.max(1)),
            health: None,
            term: Term::new(Duration::from_secs(settings.renew_deadline_s)),
        }
    }

    /// Reports refused Lease calls as not ready on `health`.
    pub fn with_health(mut self, health: std::sync::Arc<kev_common::telemetry::Health>) -> Self {
        self.health = Some(health);
        self
    }

    /// Logs a failed Lease call; a refusal (403) also makes the process not ready, saying what
    /// the server refused, so that a missing RBAC grant is seen at once and not taken for a
    /// standby waiting its turn.
    fn failed(&self, what: &str, e: &kube::Error) {
        match crate::watch::refusal(e) {
            Some(refused) => {
                metrics::counter!("kev_producer_kubernetes_refusals_total").increment(1);
                tracing::error!(lease = self.name, message = refused, "{what} refused");
                if let Some(h) = &self.health {
                    h.set_ready(false, refused);
                }
            }
            None => tracing::warn!(lease = self.name, error = %e, "{what} failed"),
        }
    }

    /// The term of this replica's leadership, which each successful acquisition or renewal
    /// extends.
    pub fn term(&self) -> Term {
        self.term.clone()
    }

    /// Tries once to take or renew the Lease. `Ok(true)` when this replica holds it (and its
    /// [`Term`] runs from the start of this call).
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let started = tokio::time::Instant::now();
        let held = self.acquire_or_renew_once().await?;
        if held {
            self.term.renewed(started);
        }
        Ok(held)
    }

    async fn acquire_or_renew_once(&self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let lease = self.api.get_opt(&self.name).await?;
        let Some(mut lease) = lease else {
            let fresh = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.lease_duration.as_secs() as i32),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &fresh).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.identity;
        if !ours && !holder.is_empty() {
            let duration = spec.lease_duration_seconds.unwrap_or(self.lease_duration.as_secs() as i32);
            let renewed = spec.renew_time.as_ref().map(|t| t.0).unwrap_or(Timestamp::UNIX_EPOCH);
            let expires = renewed.as_second() + duration as i64;
            if Timestamp::now().as_second() <= expires {
                return Ok(false);
            }
        }
        if !ours {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(self.lease_duration.as_secs() as i32);
        spec.renew_time = Some(now);
        // The resourceVersion in metadata makes this a compare-and-swap: 409 if anyone else
        // wrote the Lease since we read it.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up so that a standby takes over without waiting for it to expire.
    pub async fn release(&self) {
        let result = async {
            let Some(mut lease) = self.api.get_opt(&self.name).await? else { return Ok(()) };
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() != Some(&self.identity) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            self.api.replace(&self.name, &PostParams::default(), &lease).await.map(|_| ())
        }
        .await;
        match result {
            Ok(()) => tracing::info!(lease = self.name, "released the Lease"),
            Err(e) => {
                tracing::warn!(lease = self.name, error = %e, "could not release the Lease; it expires on its own")
            }
        }
    }

    /// Waits until this replica holds the Lease; `false` when `stop` came first.
    pub async fn acquire(&self, stop: &CancellationToken) -> bool {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = self.name, identity = self.identity, "became the leader");
                    metrics::gauge!("kev_producer_leader").set(1.0);
                    return true;
                }
                Ok(false) => {}
                Err(e) => self.failed("Lease call", &e),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.retry_period) => {}
                _ = stop.cancelled() => return false,
            }
        }
    }

    /// Renews the Lease until a renewal has not succeeded for `renew_deadline` (then cancels
    /// `lost`), until `lost` is cancelled by the session (its [`Term`] ran out, or it failed for
    /// good), or until `stop`.
    pub async fn keep(&self, lost: CancellationToken, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.retry_period) => {}
                _ = lost.cancelled() => break,
                _ = stop.cancelled() => return,
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(lease = self.name, "another replica holds the Lease");
                    break;
                }
                Err(e) => self.failed("renewing the Lease", &e),
            }
            if !self.term.current() {
                tracing::warn!(lease = self.name, "could not renew the Lease in time");
                break;
            }
        }
        metrics::gauge!("kev_producer_leader").set(0.0);
        lost.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The term lasts `renew_deadline` from the start of the last renewal, however long the
    /// process was away meanwhile, and each renewal extends it (never shortens it).
    #[tokio::test(start_paused = true)]
    async fn a_term_runs_out_renew_deadline_after_the_last_renewal_began() {
        let term = Term::new(Duration::from_secs(10));
        assert!(term.current());
        tokio::time::advance(Duration::from_secs(9)).await;
        let renewal_began = tokio::time::Instant::now();
        assert!(term.current());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!term.current(), "11 s after the first renewal began");
        term.renewed(renewal_began);
        assert!(term.current(), "extended from the renewal's start");
        term.renewed(renewal_began - Duration::from_secs(5));
        assert!(term.current(), "an older renewal does not shorten it");
        tokio::time::advance(Duration::from_secs(8)).await;
        assert!(!term.current());
    }
}
