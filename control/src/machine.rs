//! The deployment state machine of one load balancer: a stable pool and at most one new version
//! moving through shadow → testing → live, with degraded, paused, rolled back, removing and
//! removed. [`step`] is the only way a state changes: a pure function of the current
//! [`Rollout`] and an [`Event`] (an API call or a monitor decision) that either returns the new
//! rollout and the [`Transition`] to record, or refuses with the current state and the moves
//! allowed from it (the API's 409). docs/control-plane.md carries the same table.

use serde::{Deserialize, Serialize};

/// Where a load balancer's new version stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Only the stable pool; no new version.
    Stable,
    /// A share of live traffic is mirrored to the new version; users see only stable.
    Shadow,
    /// A share of real traffic goes to the new version, checked every interval.
    Testing,
    /// Testing, held where it is (no shift, still checked).
    Paused,
    /// The new version takes all traffic; the old stable pool is being drained.
    Live,
    /// Live, but breaching: its traffic is reduced and alerts fire.
    Degraded,
    /// The new version is being taken out (after a rollback or a remove): no new traffic.
    Removing,
    /// The new version is gone; the stable pool has all traffic.
    Removed,
}

impl State {
    /// The name in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Stable => "stable",
            State::Shadow => "shadow",
            State::Testing => "testing",
            State::Paused => "paused",
            State::Live => "live",
            State::Degraded => "degraded",
            State::Removing => "removing",
            State::Removed => "removed",
        }
    }
}

/// What asks for a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Start mirroring `mirror_percentage` to a new version.
    Shadow {
        /// Share mirrored, 0–100.
        mirror_percentage: f64,
    },
    /// Start sending real traffic to the new version, from `initial_percentage`.
    Testing {
        /// The weight to start at, 0–100.
        initial_percentage: f64,
    },
    /// A monitor step: the new version's weight becomes `to` (testing or degraded).
    Shift {
        /// The new weight, 0–100.
        to: f64,
    },
    /// Hold the shift.
    Pause,
    /// Resume the shift.
    Resume,
    /// All traffic to the new version; the old stable pool is drained.
    Live,
    /// A live version breaches: reduce its traffic to `to`.
    Degrade {
        /// The reduced weight.
        to: f64,
    },
    /// A degraded version recovered: its weight goes up to `to` (under `maxStepPercentage`,
    /// never down), and at 100% it is live again.
    Recover {
        /// The new weight.
        to: f64,
    },
    /// Back to the previous stable pool at once; mirroring stops.
    Rollback,
    /// Take the new version out (or, when live, finish draining the old pool).
    Remove,
    /// The drain finished.
    Removed,
}

impl Event {
    /// The event's name (for refusals and the history).
    pub fn name(&self) -> &'static str {
        match self {
            Event::Shadow { .. } => "shadow",
            Event::Testing { .. } => "testing",
            Event::Shift { .. } => "shift",
            Event::Pause => "pause",
            Event::Resume => "resume",
            Event::Live => "live",
            Event::Degrade { .. } => "degrade",
            Event::Recover { .. } => "recover",
            Event::Rollback => "rollback",
            Event::Remove => "remove",
            Event::Removed => "removed",
        }
    }
}

/// One load balancer's rollout, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// The state.
    pub state: State,
    /// Share of real traffic on the new version, 0–100.
    pub traffic_percentage: f64,
    /// Share mirrored to the new version, 0–100.
    pub mirror_percentage: f64,
    /// Bumped by every change (the store's version check).
    pub version: u64,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            state: State::Stable,
            traffic_percentage: 0.0,
            mirror_percentage: 0.0,
            version: 0,
        }
    }
}

/// What a change records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// From.
    pub from: State,
    /// To.
    pub to: State,
    /// The event.
    pub event: String,
    /// Traffic before and after.
    pub traffic_from: f64,
    /// After.
    pub traffic_to: f64,
    /// Mirror share after.
    pub mirror_to: f64,
}

/// A refused event: the state it met and what is allowed there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{event} is not allowed in state {current}; allowed: {}", allowed.join(", "))]
pub struct Refused {
    /// The event.
    pub event: &'static str,
    /// The current state.
    pub current: &'static str,
    /// The events allowed from it.
    pub allowed: Vec<&'static str>,
}

/// The events allowed in `state` (the transition table, by row).
pub fn allowed(state: State) -> &'static [&'static str] {
    match state {
        State::Stable | State::Removed => &["shadow", "testing"],
        State::Shadow => &["shadow", "testing", "rollback", "remove"],
        State::Testing => &["shift", "pause", "live", "rollback", "remove"],
        State::Paused => &["resume", "live", "rollback", "remove"],
        State::Live => &["degrade", "rollback", "remove"],
        State::Degraded => &["shift", "recover", "rollback", "remove"],
        State::Removing => &["removed"],
    }
}

fn pct(v: f64) -> f64 {
    if v.is_finite() {
        v.clamp(0.0, 100.0)
    } else {
        0.0
    }
}

/// Applies `event` to `r`: the new rollout and the transition to record, or the refusal.
pub fn step(r: &Rollout, event: &Event) -> Result<(Rollout, Transition), Refused> {
    let refuse = || Refused {
        event: event.name(),
        current: r.state.as_str(),
        allowed: allowed(r.state).to_vec(),
    };
    if !allowed(r.state).contains(&event.name()) {
        return Err(refuse());
    }
    let (state, traffic, mirror) = match (r.state, event) {
        (State::Stable | State::Removed | State::Shadow, Event::Shadow { mirror_percentage }) => {
            (State::Shadow, 0.0, pct(*mirror_percentage))
        }
        (State::Stable | State::Removed | State::Shadow, Event::Testing { initial_percentage }) => {
            (
                State::Testing,
                pct(*initial_percentage),
                r.mirror_percentage,
            )
        }
        (State::Testing, Event::Shift { to }) => (State::Testing, pct(*to), r.mirror_percentage),
        (State::Degraded, Event::Shift { to }) => {
            // Degraded traffic only ever goes down by a shift; up is `recover`.
            (
                State::Degraded,
                pct(*to).min(r.traffic_percentage),
                r.mirror_percentage,
            )
        }
        (State::Testing, Event::Pause) => {
            (State::Paused, r.traffic_percentage, r.mirror_percentage)
        }
        (State::Paused, Event::Resume) => {
            (State::Testing, r.traffic_percentage, r.mirror_percentage)
        }
        (State::Testing | State::Paused, Event::Live) => (State::Live, 100.0, 0.0),
        (State::Live, Event::Degrade { to }) => {
            (State::Degraded, pct(*to).min(100.0), r.mirror_percentage)
        }
        (State::Degraded, Event::Recover { to }) => {
            let to = pct(*to).max(r.traffic_percentage);
            if to >= 100.0 {
                (State::Live, 100.0, 0.0)
            } else {
                (State::Degraded, to, r.mirror_percentage)
            }
        }
        // A rollback: all traffic back to the stable pool at once, mirroring stops; the new
        // version is then drained.
        (_, Event::Rollback) => (State::Removing, 0.0, 0.0),
        // Removing a version that is live drains the old stable pool instead: the new version
        // keeps its traffic.
        (State::Live, Event::Remove) => (State::Removing, 100.0, 0.0),
        (_, Event::Remove) => (State::Removing, 0.0, 0.0),
        (State::Removing, Event::Removed) => (State::Removed, r.traffic_percentage, 0.0),
        _ => return Err(refuse()),
    };
    let next = Rollout {
        state,
        traffic_percentage: traffic,
        mirror_percentage: mirror,
        version: r.version + 1,
    };
    let t = Transition {
        from: r.state,
        to: state,
        event: event.name().to_owned(),
        traffic_from: r.traffic_percentage,
        traffic_to: traffic,
        mirror_to: mirror,
    };
    Ok((next, t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn go(r: &Rollout, e: Event) -> Rollout {
        step(r, &e).unwrap().0
    }

    #[test]
    fn the_happy_path_and_a_rollback() {
        let r = Rollout::default();
        let r = go(
            &r,
            Event::Shadow {
                mirror_percentage: 5.0,
            },
        );
        assert_eq!(
            (r.state, r.traffic_percentage, r.mirror_percentage),
            (State::Shadow, 0.0, 5.0)
        );
        let r = go(
            &r,
            Event::Testing {
                initial_percentage: 1.0,
            },
        );
        let r = go(&r, Event::Shift { to: 10.0 });
        let r = go(&r, Event::Pause);
        assert!(
            step(&r, &Event::Shift { to: 20.0 }).is_err(),
            "paused: no shift"
        );
        let r = go(&r, Event::Resume);
        let rolled = go(&r, Event::Rollback);
        assert_eq!(
            (
                rolled.state,
                rolled.traffic_percentage,
                rolled.mirror_percentage
            ),
            (State::Removing, 0.0, 0.0)
        );
        let gone = go(&rolled, Event::Removed);
        assert_eq!(gone.state, State::Removed);
        let live = go(&r, Event::Live);
        assert_eq!((live.state, live.traffic_percentage), (State::Live, 100.0));
        let drained = go(&live, Event::Remove);
        assert_eq!(
            (drained.state, drained.traffic_percentage),
            (State::Removing, 100.0)
        );
    }

    #[test]
    fn a_refusal_names_the_state_and_the_allowed_moves() {
        let e = step(&Rollout::default(), &Event::Live).unwrap_err();
        assert_eq!(e.current, "stable");
        assert_eq!(e.allowed, vec!["shadow", "testing"]);
        assert!(e
            .to_string()
            .contains("live is not allowed in state stable"));
        let r = go(
            &Rollout::default(),
            Event::Testing {
                initial_percentage: 1.0,
            },
        );
        let e = step(
            &r,
            &Event::Shadow {
                mirror_percentage: 1.0,
            },
        )
        .unwrap_err();
        assert_eq!(
            e.current, "testing",
            "a new version mid-rollout is an explicit error"
        );
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (0.0f64..100.0).prop_map(|m| Event::Shadow {
                mirror_percentage: m
            }),
            (0.0f64..100.0).prop_map(|i| Event::Testing {
                initial_percentage: i
            }),
            (-10.0f64..110.0).prop_map(|t| Event::Shift { to: t }),
            Just(Event::Pause),
            Just(Event::Resume),
            Just(Event::Live),
            (0.0f64..100.0).prop_map(|t| Event::Degrade { to: t }),
            (0.0f64..110.0).prop_map(|t| Event::Recover { to: t }),
            Just(Event::Rollback),
            Just(Event::Remove),
            Just(Event::Removed),
        ]
    }

    proptest! {
        /// Any sequence: every accepted event is in the table, every refused one is not; the
        /// version rises by one per accepted change; weights stay in 0–100; a rollback always
        /// leaves no traffic and no mirror on the new version.
        #[test]
        fn only_the_table_moves_and_records_one_change_each(events in proptest::collection::vec(event(), 1..60)) {
            let mut r = Rollout::default();
            for e in events {
                let before = r.clone();
                match step(&r, &e) {
                    Ok((next, t)) => {
                        prop_assert!(allowed(before.state).contains(&e.name()));
                        prop_assert_eq!(next.version, before.version + 1);
                        prop_assert_eq!(t.from, before.state);
                        prop_assert_eq!(t.to, next.state);
                        prop_assert!((0.0..=100.0).contains(&next.traffic_percentage));
                        prop_assert!((0.0..=100.0).contains(&next.mirror_percentage));
                        if e == Event::Rollback {
                            prop_assert_eq!(next.traffic_percentage, 0.0);
                            prop_assert_eq!(next.mirror_percentage, 0.0);
                        }
                        if before.state == State::Degraded {
                            if let Event::Shift { .. } = e {
                                prop_assert!(next.traffic_percentage <= before.traffic_percentage);
                            }
                            if let Event::Recover { .. } = e {
                                prop_assert!(next.traffic_percentage >= before.traffic_percentage);
                                prop_assert_eq!(
                                    next.state == State::Live,
                                    next.traffic_percentage == 100.0
                                );
                            }
                        }
                        r = next;
                    }
                    Err(refused) => {
                        prop_assert!(!allowed(before.state).contains(&e.name()));
                        prop_assert_eq!(refused.current, before.state.as_str());
                    }
                }
            }
        }
    }
}
