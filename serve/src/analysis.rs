//! The verdict on a load balancer's new version, for controllers that run the rollout
//! themselves and ask shadowtap to judge it: Argo Rollouts (its `web` metric provider reads
//! `GET /loadbalancer/{id}/analysis`) and Flagger (its webhooks, answered 2xx or not from the
//! verdict). Pure: the deployment as stored in, the verdict and each hook's answer out; the
//! routes are in [`crate::api`].
//!
//! The verdict says what the monitor's judgements *in the current state* have shown, never
//! more: `go` only after at least one judged window (or a promotion), `no-go` on a breach,
//! a deviation of the shadow or a rollback, `inconclusive` while windows are too small to
//! judge, `pending` before any window of this state was judged.

use serde::Serialize;
use shadowtap_control::machine::State;

use crate::deployment::{Completion, Deployment};

/// What the judgements so far say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The new version passed every judged window of this state (or was promoted).
    Go,
    /// It breaches, deviates, is degraded or was rolled back.
    NoGo,
    /// The last windows had too few requests to judge.
    Inconclusive,
    /// No window of this state has been judged yet (or there is no new version).
    Pending,
}

impl Verdict {
    /// `go`, `no-go`, `inconclusive`, `pending`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Go => "go",
            Verdict::NoGo => "no-go",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Pending => "pending",
        }
    }
}

/// The verdict and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// The load balancer.
    pub loadbalancer: String,
    /// `go`, `no-go`, `inconclusive`, `pending`.
    pub verdict: Verdict,
    /// `verdict == go`, for a `successCondition: result == true`.
    pub ok: bool,
    /// `verdict == no-go`.
    pub failed: bool,
    /// Why, in one line.
    pub reason: String,
    /// The rollout's state.
    pub state: &'static str,
    /// Share of real traffic on the new version.
    pub traffic_percentage: f64,
    /// Share mirrored to it.
    pub mirror_percentage: f64,
    /// Judged windows in this state (the statistical gate's looks).
    pub looks: u32,
    /// Breaching (or deviating) windows in a row.
    pub breaches: u32,
    /// Windows in a row too small to judge.
    pub silent_windows: u32,
    /// How the last rollout ended: `promoted`, `rolledBack`, or none.
    pub completion: Option<Completion>,
    /// The deployment's version (bumped by every change).
    pub version: u64,
}

/// The verdict on `d` as stored.
pub fn analyse(d: &Deployment) -> Analysis {
    let p = &d.progress;
    let last = d.last_judgement.as_ref();
    let last_why = || last.map_or_else(String::new, |j| j.why.clone());
    let (verdict, reason) = match d.rollout.state {
        State::Stable => (Verdict::Pending, "no new version".to_owned()),
        State::Removing | State::Removed => match d.completion {
            Some(Completion::RolledBack) => (
                Verdict::NoGo,
                match last.filter(|j| j.decision == "rollback") {
                    Some(j) => format!("rolled back: {}", j.why),
                    None => "rolled back".to_owned(),
                },
            ),
            Some(Completion::Promoted) => (Verdict::Go, "promoted".to_owned()),
            None => (Verdict::Pending, "no new version".to_owned()),
        },
        State::Degraded => (
            Verdict::NoGo,
            format!("live but breaching, traffic reduced: {}", last_why()),
        ),
        State::Live => (Verdict::Go, "live".to_owned()),
        State::Shadow if p.breaches > 0 => (Verdict::NoGo, last_why()),
        State::Shadow if p.looks > 0 => (
            Verdict::Go,
            format!(
                "the shadow agrees with production on {} judged windows",
                p.looks
            ),
        ),
        State::Shadow => (
            Verdict::Pending,
            "not enough mirrored pairs judged yet".to_owned(),
        ),
        State::Testing | State::Paused if p.breaches > 0 => {
            (Verdict::NoGo, format!("breaching: {}", last_why()))
        }
        State::Testing | State::Paused if p.silent > 0 || p.empty > 0 => (
            Verdict::Inconclusive,
            format!("too few requests to judge: {}", last_why()),
        ),
        State::Testing | State::Paused if p.steps > 0 || p.looks > 0 => (
            Verdict::Go,
            format!(
                "every judged window passed ({} steps, at {:.2}%)",
                p.steps, d.rollout.traffic_percentage
            ),
        ),
        State::Testing | State::Paused => (Verdict::Pending, "no window judged yet".to_owned()),
    };
    Analysis {
        loadbalancer: d.id.clone(),
        verdict,
        ok: verdict == Verdict::Go,
        failed: verdict == Verdict::NoGo,
        reason,
        state: d.rollout.state.as_str(),
        traffic_percentage: d.rollout.traffic_percentage,
        mirror_percentage: d.rollout.mirror_percentage,
        looks: p.looks,
        breaches: p.breaches,
        silent_windows: p.silent.max(p.empty),
        completion: d.completion,
        version: d.rollout.version,
    }
}

/// The Flagger webhooks shadowtap answers (Flagger's `HookType`s).
pub const FLAGGER_HOOKS: [&str; 8] = [
    "confirm-rollout",
    "pre-rollout",
    "rollout",
    "confirm-traffic-increase",
    "confirm-promotion",
    "post-rollout",
    "rollback",
    "event",
];

/// Whether Flagger's `hook` gets a 2xx on `verdict` (Flagger advances on 200–202, halts
/// otherwise; its `rollback` hook rolls back on a 2xx); none for a hook it does not know.
///
/// - the `confirm-*` gates open on `go` only: before the evidence is in they hold;
/// - `pre-rollout` and `rollout` (Flagger counts their failures towards its `threshold`) fail
///   on `no-go` only: a shadow not judged yet is no failure;
/// - `rollback` answers 2xx on `no-go`, so Flagger rolls back what shadowtap rejects;
/// - `post-rollout` and `event` are acknowledged.
pub fn flagger_allows(hook: &str, verdict: Verdict) -> Option<bool> {
    Some(match hook {
        "confirm-rollout" | "confirm-traffic-increase" | "confirm-promotion" => {
            verdict == Verdict::Go
        }
        "pre-rollout" | "rollout" => verdict != Verdict::NoGo,
        "rollback" => verdict == Verdict::NoGo,
        "post-rollout" | "event" => true,
        _ => return None,
    })
}

/// Flagger's `flagger_canary_status` code for a verdict and state: 0 running, 1 succeeded,
/// 2 failed (its Alertmanager recipe alerts on `> 1`).
pub fn canary_status(a: &Analysis) -> u8 {
    match (a.completion, a.state) {
        (Some(Completion::RolledBack), "removing" | "removed") => 2,
        (_, "degraded") => 2,
        (Some(Completion::Promoted), "live" | "removing" | "removed") => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::{act, Action, Judgement};
    use shadowtap_control::shift::Progress;

    fn base() -> Deployment {
        let lb: crate::config::LoadBalancerConfig = toml::from_str(
            "id = \"web\"\nlisten = \"127.0.0.1:0\"\nproduction = [\"http://127.0.0.1:9\"]",
        )
        .unwrap();
        Deployment::new(&lb, 0.0)
    }

    fn shadowing() -> Deployment {
        let d = base();
        let a = Action::Shadow {
            pool: vec!["http://127.0.0.1:10".into()],
            mirror_percentage: 10.0,
            criteria: vec!["random".into()],
            metrics_urls: Default::default(),
        };
        act(&d, &a, "ops", None, 1.0).unwrap().deployment
    }

    #[test]
    fn nothing_judged_is_pending_and_no_gate_opens_on_it() {
        for d in [base(), shadowing()] {
            let a = analyse(&d);
            assert_eq!(a.verdict, Verdict::Pending, "{a:?}");
            assert!(!a.ok && !a.failed);
            assert_eq!(flagger_allows("confirm-promotion", a.verdict), Some(false));
            assert_eq!(flagger_allows("rollback", a.verdict), Some(false));
            assert_eq!(flagger_allows("rollout", a.verdict), Some(true));
        }
    }

    #[test]
    fn the_shadow_phase_is_go_after_a_judged_window_and_no_go_on_a_deviation() {
        let mut d = shadowing();
        d.progress = Progress {
            looks: 2,
            ..Progress::default()
        };
        assert_eq!(analyse(&d).verdict, Verdict::Go);
        d.progress.breaches = 1;
        d.last_judgement = Some(Judgement {
            at: String::new(),
            decision: "deviation".into(),
            why: "latency p99 +30 ms".into(),
            metrics: serde_json::Value::Null,
        });
        let a = analyse(&d);
        assert_eq!(a.verdict, Verdict::NoGo);
        assert!(a.reason.contains("p99"), "{a:?}");
        assert_eq!(flagger_allows("rollback", a.verdict), Some(true));
        assert_eq!(flagger_allows("rollout", a.verdict), Some(false));
        assert_eq!(flagger_allows("confirm-rollout", a.verdict), Some(false));
    }

    #[test]
    fn a_rollback_stays_no_go_until_a_new_rollout_starts() {
        let d = shadowing();
        let d = act(&d, &Action::Rollback, "ops", Some("bad"), 2.0)
            .unwrap()
            .deployment;
        assert_eq!(d.completion, Some(Completion::RolledBack));
        let a = analyse(&d);
        assert_eq!((a.verdict, canary_status(&a)), (Verdict::NoGo, 2));
        let d = act(&d, &Action::Removed, "monitor", None, 3.0)
            .unwrap()
            .deployment;
        let a = analyse(&d);
        assert_eq!((a.verdict, a.state), (Verdict::NoGo, "removed"));
        // A new shadow phase forgets the old rollout's end.
        let again = Action::Shadow {
            pool: vec!["http://127.0.0.1:11".into()],
            mirror_percentage: 10.0,
            criteria: vec!["random".into()],
            metrics_urls: Default::default(),
        };
        let d = act(&d, &again, "ops", None, 4.0).unwrap().deployment;
        assert_eq!(d.completion, None);
        assert_eq!(analyse(&d).verdict, Verdict::Pending);
    }

    #[test]
    fn a_promotion_is_go_through_the_drain() {
        let d = shadowing();
        let d = act(&d, &Action::Live, "ops", None, 2.0);
        // Shadow → live is not a move: the machine refuses it.
        assert!(d.is_err());
        let mut d = shadowing();
        d.rollout.state = State::Live;
        d.rollout.traffic_percentage = 100.0;
        d.completion = Some(Completion::Promoted);
        let a = analyse(&d);
        assert_eq!((a.verdict, canary_status(&a)), (Verdict::Go, 1));
        let d = act(&d, &Action::Remove, "ops", None, 3.0)
            .unwrap()
            .deployment;
        let a = analyse(&d);
        assert_eq!(
            (a.verdict, a.state, canary_status(&a)),
            (Verdict::Go, "removing", 1)
        );
    }

    #[test]
    fn testing_windows_too_small_are_inconclusive_and_breaches_no_go() {
        let mut d = shadowing();
        d.rollout.state = State::Testing;
        d.progress = Progress {
            steps: 3,
            looks: 3,
            ..Progress::default()
        };
        assert_eq!(analyse(&d).verdict, Verdict::Go);
        d.progress.silent = 1;
        assert_eq!(analyse(&d).verdict, Verdict::Inconclusive);
        d.progress.breaches = 1;
        assert_eq!(analyse(&d).verdict, Verdict::NoGo);
        d.rollout.state = State::Degraded;
        d.progress = Progress::default();
        assert_eq!(analyse(&d).verdict, Verdict::NoGo);
    }

    #[test]
    fn unknown_hooks_are_not_answered_and_known_ones_are_flaggers() {
        assert_eq!(flagger_allows("confirm-everything", Verdict::Go), None);
        for h in FLAGGER_HOOKS {
            assert!(flagger_allows(h, Verdict::Go).is_some(), "{h}");
        }
    }
}
