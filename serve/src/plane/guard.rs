//! The fail-safe half of the control plane: what an instance does on its own, whatever the
//! store and the lease say. Every interval each instance judges the new version's window on
//! its own proxy against the critical limits only ([`Plane::guard`]); a critical breach rolls
//! that proxy back at once, before (and whether or not) the store can record it, and the
//! rollback is stored, with when it was decided and applied, once the store answers
//! ([`Plane::store_local_rollbacks`]). Until then nothing read from the store puts the failing
//! version back on that proxy.

use std::time::Duration;

use super::{now, Balancer, ChangeError, Plane, MONITOR};
use crate::deployment::{act, proxy_config, ActError, Action, Deployment};

/// A rollback applied to this instance's proxy before the store had it (see [`Plane::guard`]).
#[derive(Debug, Clone)]
pub struct LocalRollback {
    /// The version it rolled back from.
    pub from_version: u64,
    /// Why, with when it was decided and applied.
    pub reason: String,
}

impl Plane {
    /// Keeps a rollback applied to this proxy but not stored, to be stored by
    /// [`Plane::store_local_rollbacks`].
    pub(super) fn hold_rollback(&self, lb: &Balancer, from: &Deployment, reason: &str, at: f64) {
        let mut pending = lb.local_rollback.lock().unwrap_or_else(|p| p.into_inner());
        if pending.is_some() {
            return;
        }
        eprintln!(
            "shadowtap serve: {}: rolled back on this instance's proxy at {}; the store could not be written, the rollback is stored once it can",
            from.id,
            crate::deployment::rfc3339(at)
        );
        *pending = Some(LocalRollback {
            from_version: from.rollout.version,
            reason: format!(
                "{reason} (applied to the proxy of instance {} at {}, before the store could record it)",
                self.instance,
                crate::deployment::rfc3339(at)
            ),
        });
    }

    /// Rolls this instance's proxy of `lb` back from `from` (what it runs) without the store.
    pub(super) async fn roll_back_locally(&self, lb: &Balancer, from: &Deployment, reason: &str) {
        let at = now();
        let Ok(outcome) = act(from, &Action::Rollback, MONITOR, Some(reason), at) else {
            // Nothing to roll back from this state.
            return;
        };
        let config = proxy_config(&lb.config, &outcome.deployment);
        match lb.state.apply(config, MONITOR).await {
            Ok(_) => self.hold_rollback(lb, from, reason, at),
            Err(e) => tracing::error!(id = from.id, "the proxy refused the local rollback: {e}"),
        }
    }

    /// The fail-safe half of the monitor, on every instance whether or not it leads and whether
    /// or not the store answers: the new version's window on this instance's own proxy, against
    /// the critical limits only (by rate, or by the exact test on a window too small for a
    /// rate). A critical breach rolls this proxy back at once; the rollback is stored when the
    /// store can be written ([`Plane::store_local_rollbacks`]).
    pub async fn guard(&self, id: &str) {
        use shadowtap_control::machine::State;
        use shadowtap_control::shift::{small_sample, SmallSample, Window};
        let Some(lb) = self.balancers.get(id) else {
            return;
        };
        if lb.pending_rollback().is_some() {
            return;
        }
        let d = lb.known.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if !matches!(
            d.rollout.state,
            State::Testing | State::Paused | State::Live | State::Degraded
        ) || (d.rollout.state == State::Live && now() - d.entered_at >= self.live_watch_s(&d))
        {
            return;
        }
        let Some(spec) = d.testing.as_ref() else {
            return;
        };
        let Ok(policy) = spec.policy(&self.defaults) else {
            return;
        };
        let fresh = super::fresh_seconds(now(), d.entered_at);
        let secs = (spec.interval_s(&self.defaults).ceil().max(1.0) as u64).min(fresh);
        if secs == 0 {
            return;
        }
        let w = lb.state.canary.complete_window(secs);
        let p = match spec.latency_percentile {
            50 => w.p50_ms,
            90 => w.p90_ms,
            _ => w.p99_ms,
        };
        let window = Window {
            error_rate: w.error_rate,
            latency_ms: p.unwrap_or(0.0),
            request_count: w.requests,
        };
        let why = if window.request_count >= policy.min_requests.max(1) {
            policy.critical.breached_by(&window).then(|| {
                format!(
                    "critical breach seen by instance {}: error rate {:.4}, latency {:.1} ms, {} requests",
                    self.instance, window.error_rate, window.latency_ms, window.request_count
                )
            })
        } else {
            match small_sample(&policy, window.errors(), window.request_count) {
                SmallSample::Critical(pv) => Some(format!(
                    "critical breach seen by instance {}: {} of {} requests failed (exact test: p = {pv:.1e} at the critical error rate {})",
                    self.instance,
                    window.errors(),
                    window.request_count,
                    policy.critical.error_rate
                )),
                _ => None,
            }
        };
        let Some(why) = why else { return };
        // A change stuck on the store holds the lock: do not wait for it (it will not put the
        // failing version back once this rollback is pending).
        let _held = tokio::time::timeout(Duration::from_millis(500), lb.lock.lock()).await;
        if lb.pending_rollback().is_some() {
            return;
        }
        self.roll_back_locally(lb, &d, &why).await;
    }

    /// Stores the rollbacks this instance applied on its own (see [`Plane::guard`]) once the
    /// store answers; one the store's state makes moot (rolled back already) is dropped.
    pub async fn store_local_rollbacks(&self) {
        for (id, lb) in &self.balancers {
            let Some(pending) = lb.pending_rollback() else {
                continue;
            };
            match self
                .change(id, Action::Rollback, MONITOR, Some(&pending.reason))
                .await
            {
                Ok(_) => {
                    eprintln!("shadowtap serve: {id}: the local rollback is stored");
                    *lb.local_rollback.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                Err(ChangeError::Act(ActError::Refused(_) | ActError::Stale(_))) => {
                    // Not active any more (rolled back by another instance, say): the store's
                    // state holds.
                    *lb.local_rollback.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    lb.applied
                        .store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
                }
                Err(_) => {}
            }
        }
    }

    /// How long a promoted version is watched (and the old stable pool kept) before the old
    /// pool is removed: the drain, and at least `failureLimit + 1` intervals, so a live version
    /// that breaches can be degraded and judged again before there is nothing to go back to.
    pub fn live_watch_s(&self, d: &Deployment) -> f64 {
        let (interval, failure_limit) = match d.testing.as_ref() {
            Some(t) => (
                t.interval_s(&self.defaults),
                t.failure_limit.unwrap_or(self.defaults.failure_limit),
            ),
            None => (self.defaults.interval_s, self.defaults.failure_limit),
        };
        self.drain
            .as_secs_f64()
            .max(f64::from(failure_limit.max(1) + 1) * interval)
    }

    /// The monitor's interval of `id` by the deployment its proxy runs (seconds).
    pub fn known_interval_s(&self, id: &str) -> f64 {
        self.balancers
            .get(id)
            .map_or(self.defaults.interval_s, |lb| {
                lb.known
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .testing
                    .as_ref()
                    .map_or(self.defaults.interval_s, |t| t.interval_s(&self.defaults))
            })
    }

    /// Whether `id`'s proxy runs a rollback the store does not have yet.
    pub fn rolled_back_locally(&self, id: &str) -> bool {
        self.balancers
            .get(id)
            .is_some_and(|lb| lb.pending_rollback().is_some())
    }
}
