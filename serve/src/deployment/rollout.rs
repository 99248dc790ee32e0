//! Declarative rollouts: one file names the new version, its pool, the analysis thresholds
//! and the steps (Argo Rollouts' habits in the design documents' vocabulary), `ctl apply`
//! stores it with the deployment, and the monitor walks the steps. Pure: the spec, its checks
//! and [`next`] — what the current step needs now, given the deployment — with no I/O; the
//! monitor applies what it says (`serve/src/monitor.rs`).
//!
//! Steps: `shadow {percentage, criteria, duration}` (none: until `promote`), `setWeight N`,
//! `shift {algorithm, target, interval, step}`, `pause {duration}` (none: until `promote`),
//! `analysis {windows}` (that many more judged windows, all passing), `promote`. A traffic step
//! holds at its weight (judged every window; a breach rolls back as always) until the next step
//! changes it; nothing advances on a window without data.

use serde::{Deserialize, Serialize};
use shadowtap_control::machine::State;

use crate::config::parse_duration;
use crate::deployment::{Action, Completion, Deployment, TestingSpec};

/// A rollout as the user writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutSpec {
    /// The load balancer it runs on.
    pub loadbalancer: String,
    /// A name for people (default: the load balancer's id).
    #[serde(default)]
    pub name: Option<String>,
    /// The new version's label (an image tag, a commit): a different one mid-rollout is a new
    /// rollout, refused unless replaced.
    pub version: String,
    /// The new version's members.
    pub pool: Vec<String>,
    /// The testing policy of every traffic step: the API's `testing` fields
    /// (`errorRateThreshold` and `latencyThreshold` at least).
    #[serde(default)]
    pub analysis: serde_json::Map<String, serde_json::Value>,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "StepForm")]
pub enum Step {
    /// Mirror a share of traffic to the new version, judged on the mirrored pairs.
    Shadow(ShadowStep),
    /// Real traffic to this weight (percent), on a judged window.
    SetWeight(f64),
    /// The monitor shifts up to `target` with an algorithm.
    Shift(ShiftStep),
    /// Hold where it is for `duration` (none: until `ctl promote`).
    Pause(PauseStep),
    /// Hold until that many more windows are judged, all passing.
    Analysis(AnalysisStep),
    /// All traffic to the new version.
    Promote(Empty),
}

/// A step as written: a table (a map) with one key, the step's kind (YAML's own enum form is
/// a tag, `!shadow`, which nobody writes).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StepForm {
    shadow: Option<ShadowStep>,
    set_weight: Option<f64>,
    shift: Option<ShiftStep>,
    pause: Option<PauseStep>,
    analysis: Option<AnalysisStep>,
    promote: Option<Empty>,
}

impl TryFrom<StepForm> for Step {
    type Error = String;

    fn try_from(f: StepForm) -> Result<Step, String> {
        let mut kinds = Vec::new();
        if let Some(s) = f.shadow {
            kinds.push(Step::Shadow(s));
        }
        if let Some(w) = f.set_weight {
            kinds.push(Step::SetWeight(w));
        }
        if let Some(s) = f.shift {
            kinds.push(Step::Shift(s));
        }
        if let Some(p) = f.pause {
            kinds.push(Step::Pause(p));
        }
        if let Some(a) = f.analysis {
            kinds.push(Step::Analysis(a));
        }
        if let Some(p) = f.promote {
            kinds.push(Step::Promote(p));
        }
        match kinds.len() {
            1 => Ok(kinds.pop().expect("one")),
            0 => {
                Err("a step needs one of shadow, setWeight, shift, pause, analysis, promote".into())
            }
            _ => Err(
                "a step is one of shadow, setWeight, shift, pause, analysis, promote, not several"
                    .into(),
            ),
        }
    }
}

/// `shadow = { … }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShadowStep {
    /// Share mirrored, percent.
    pub percentage: f64,
    /// Which requests (`random` by default).
    #[serde(default)]
    pub criteria: Option<Vec<String>>,
    /// How long (`10m`); none: until `ctl promote`.
    #[serde(default)]
    pub duration: Option<String>,
}

/// `shift = { … }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShiftStep {
    /// `seed`, `linear` (default), `exponential`, `metric`.
    #[serde(default)]
    pub algorithm: Option<String>,
    /// Where it stops, percent.
    pub target: f64,
    /// The judging interval (`1m`; default: the analysis's or the config's).
    #[serde(default)]
    pub interval: Option<String>,
    /// Points per step (default 10).
    #[serde(default)]
    pub step: Option<f64>,
}

/// `pause = { … }`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PauseStep {
    /// How long; none: until `ctl promote`.
    #[serde(default)]
    pub duration: Option<String>,
}

/// `analysis = { windows = N }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisStep {
    /// Judged windows that must pass.
    pub windows: u32,
}

/// `promote = {}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

impl Step {
    /// The step's name, as `status` shows it.
    pub fn name(&self) -> String {
        match self {
            Step::Shadow(s) => format!("shadow {}%", s.percentage),
            Step::SetWeight(w) => format!("setWeight {w}"),
            Step::Shift(s) => format!("shift to {}%", s.target),
            Step::Pause(p) => match &p.duration {
                Some(d) => format!("pause {d}"),
                None => "pause (until promote)".into(),
            },
            Step::Analysis(a) => format!("analysis of {} windows", a.windows),
            Step::Promote(_) => "promote".into(),
        }
    }

    /// The weight the step leaves real traffic at, when it sets one.
    fn weight(&self) -> Option<f64> {
        match self {
            Step::SetWeight(w) => Some(*w),
            Step::Shift(s) => Some(s.target),
            Step::Promote(_) => Some(100.0),
            _ => None,
        }
    }
}

/// Reads a rollout file: TOML, or YAML when `yaml`; errors name the line.
pub fn parse(text: &str, yaml: bool) -> Result<RolloutSpec, String> {
    if yaml {
        serde_norway::from_str(text).map_err(|e| e.to_string())
    } else {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

fn seconds(field: &str, d: &Option<String>) -> Result<Option<f64>, String> {
    d.as_deref()
        .map(|s| {
            parse_duration(s)
                .map(|d| d.as_secs_f64())
                .map_err(|e| format!("{field}: {e}"))
        })
        .transpose()
}

impl RolloutSpec {
    /// The testing policy of a traffic step: the analysis's fields, then the step's.
    pub fn testing(&self, step: &Step, current: f64) -> Result<TestingSpec, String> {
        let mut m = self.analysis.clone();
        m.insert("candidatePool".into(), self.pool.clone().into());
        // Held at the step's weight; the plan moves on.
        m.insert("promotion".into(), "hold".into());
        match step {
            Step::SetWeight(w) => {
                m.insert("targetTrafficPercentage".into(), (*w).into());
                m.insert("algorithm".into(), "linear".into());
                // One step, on a passing window.
                let up = (w - current).max(0.0);
                m.insert("initialPercentage".into(), (*w).into());
                m.insert("stepPercentage".into(), up.max(0.01).into());
            }
            Step::Shift(s) => {
                m.insert("targetTrafficPercentage".into(), s.target.into());
                if let Some(a) = &s.algorithm {
                    m.insert("algorithm".into(), a.clone().into());
                }
                if let Some(i) = &s.interval {
                    m.insert("interval".into(), i.clone().into());
                }
                if let Some(st) = s.step {
                    m.insert("stepPercentage".into(), st.into());
                }
            }
            _ => return Err("not a traffic step".into()),
        }
        let spec: TestingSpec = serde_json::from_value(serde_json::Value::Object(m))
            .map_err(|e| format!("analysis: {e}"))?;
        spec.check().map_err(|e| format!("analysis: {e}"))?;
        Ok(spec)
    }

    /// Checks what parsing cannot: each step's values, their order (a shadow before any real
    /// traffic; weights never going down), the analysis's fields, naming the step.
    pub fn check(&self) -> Result<(), String> {
        if self.version.trim().is_empty() {
            return Err("version: empty".into());
        }
        crate::deployment::check_pool("pool", &self.pool)?;
        if self.steps.is_empty() {
            return Err("steps: at least one".into());
        }
        let mut weight = 0.0;
        let mut traffic = false;
        for (i, step) in self.steps.iter().enumerate() {
            let at = |m: String| format!("steps[{i}] ({}): {m}", step.name());
            match step {
                Step::Shadow(s) => {
                    if traffic {
                        return Err(at("a shadow phase comes before any real traffic".into()));
                    }
                    if !(0.0..=100.0).contains(&s.percentage) || s.percentage == 0.0 {
                        return Err(at(format!(
                            "percentage {}: above 0, at most 100",
                            s.percentage
                        )));
                    }
                    if let Some(c) = &s.criteria {
                        crate::deployment::parse_criteria(c, true).map_err(at)?;
                    }
                    seconds("duration", &s.duration).map_err(at)?;
                }
                Step::Pause(p) => {
                    seconds("duration", &p.duration).map_err(at)?;
                }
                Step::Analysis(a) => {
                    if a.windows == 0 {
                        return Err(at("windows: at least 1".into()));
                    }
                }
                Step::SetWeight(_) | Step::Shift(_) | Step::Promote(_) => {
                    let w = step.weight().expect("a traffic step");
                    if !(0.0..=100.0).contains(&w) || w == 0.0 {
                        return Err(at(format!("weight {w}: above 0, at most 100")));
                    }
                    if w < weight {
                        return Err(at(format!(
                            "weight {w} is below the {weight}% an earlier step reached: roll back instead"
                        )));
                    }
                    if !matches!(step, Step::Promote(_)) {
                        self.testing(step, weight).map_err(at)?;
                    }
                    if matches!(step, Step::Promote(_)) && i + 1 != self.steps.len() {
                        return Err(at("promote is the last step".into()));
                    }
                    weight = w;
                    traffic = true;
                }
            }
        }
        Ok(())
    }
}

/// A rollout being walked, stored with the deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// What was applied.
    pub spec: RolloutSpec,
    /// The current step (`steps.len()`: past the last).
    pub step: usize,
    /// When the current step began, Unix seconds.
    pub step_started: f64,
    /// The gate's looks when the current step began (for `analysis` steps).
    pub looks_at_step: u32,
    /// An operator's `promote` of this step (a pause or a shadow without duration).
    #[serde(default)]
    pub promoted_step: Option<usize>,
    /// `completed` or `aborted` once over.
    #[serde(default)]
    pub ended: Option<String>,
}

impl Plan {
    /// A plan at its first step.
    pub fn new(spec: RolloutSpec, now: f64, looks: u32) -> Plan {
        Plan {
            spec,
            step: 0,
            step_started: now,
            looks_at_step: looks,
            promoted_step: None,
            ended: None,
        }
    }

    /// `progressing`, `paused` (waiting for `promote`), `completed`, `aborted`.
    pub fn phase(&self, d: &Deployment) -> &'static str {
        match self.ended.as_deref() {
            Some("completed") => return "completed",
            Some(_) => return "aborted",
            None => {}
        }
        if d.rollout.state == State::Paused {
            return "paused";
        }
        match self.spec.steps.get(self.step) {
            Some(Step::Pause(PauseStep { duration: None })) => "paused",
            Some(Step::Shadow(ShadowStep { duration: None, .. }))
                if d.rollout.state == State::Shadow =>
            {
                "paused"
            }
            _ => "progressing",
        }
    }

    /// As `GET …/rollout` and `…/analysis` show it.
    pub fn view(&self, d: &Deployment) -> serde_json::Value {
        serde_json::json!({
            "name": self.spec.name.clone().unwrap_or_else(|| self.spec.loadbalancer.clone()),
            "version": self.spec.version,
            "step": self.step,
            "steps": self.spec.steps.len(),
            "current": self.spec.steps.get(self.step).map(Step::name),
            "phase": self.phase(d),
            "spec": self.spec,
        })
    }
}

/// What the plan needs now.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Nothing this tick (why).
    Wait(String),
    /// Apply this change for the current step (why).
    Act(Action, String),
    /// The current step is done: on to the next (why).
    Advance(String),
    /// The rollout is over: `completed` or `aborted` (why).
    End(&'static str, String),
}

/// What plan `p` of deployment `d` needs at `now`; `failure_limit` is the windows a shadow
/// may deviate in a row before it is rolled back.
pub fn next(d: &Deployment, p: &Plan, now: f64, failure_limit: u32) -> Next {
    let state = d.rollout.state;
    if d.completion == Some(Completion::RolledBack)
        && matches!(state, State::Removing | State::Removed)
    {
        return Next::End("aborted", "rolled back".into());
    }
    let Some(step) = p.spec.steps.get(p.step) else {
        return Next::End("completed", "every step is done".into());
    };
    let elapsed = now - p.step_started;
    let promoted = p.promoted_step == Some(p.step);
    let pool = &p.spec.pool;
    match step {
        Step::Shadow(s) => {
            let criteria = s.criteria.clone().unwrap_or_else(|| vec!["random".into()]);
            let shadow = Action::Shadow {
                pool: pool.clone(),
                mirror_percentage: s.percentage,
                criteria: criteria.clone(),
                metrics_urls: Default::default(),
            };
            match state {
                State::Stable | State::Removed => {
                    Next::Act(shadow, format!("{}: started", step.name()))
                }
                State::Shadow if d.shadow_pool != *pool => {
                    Next::Wait("another version is in its shadow phase".into())
                }
                State::Shadow
                    if d.rollout.mirror_percentage != s.percentage
                        || d.mirror_criteria != criteria =>
                {
                    Next::Act(shadow, format!("{}: share set", step.name()))
                }
                State::Shadow if d.progress.breaches >= failure_limit.max(1) => Next::Act(
                    Action::Rollback,
                    format!(
                        "the shadow deviated from production on {} judged windows in a row",
                        d.progress.breaches
                    ),
                ),
                State::Shadow if d.progress.breaches > 0 => Next::Wait(format!(
                    "held: the shadow deviates ({})",
                    d.last_judgement.as_ref().map_or("", |j| j.why.as_str())
                )),
                State::Shadow => {
                    let duration = seconds("duration", &s.duration).ok().flatten();
                    match duration {
                        _ if promoted => Next::Advance("promoted by an operator".into()),
                        _ if d.progress.looks == 0 => Next::Wait(
                            "no mirrored window judged yet: never advanced on no data".into(),
                        ),
                        Some(t) if elapsed >= t => Next::Advance(format!(
                            "the shadow agreed with production for {}",
                            s.duration.as_deref().unwrap_or("")
                        )),
                        Some(t) => Next::Wait(format!("shadow for {:.0}s more", t - elapsed)),
                        None => Next::Wait("waiting for promote".into()),
                    }
                }
                _ => Next::Wait(format!("{} while {}", step.name(), state.as_str())),
            }
        }
        Step::SetWeight(_) | Step::Shift(_) => {
            let target = step.weight().expect("a traffic step");
            let current = d.rollout.traffic_percentage;
            let spec = match p.spec.testing(step, current) {
                Ok(s) => s,
                Err(e) => return Next::End("aborted", e),
            };
            match state {
                State::Stable | State::Removed | State::Shadow => Next::Act(
                    Action::Testing(Box::new(spec)),
                    format!("{}: started", step.name()),
                ),
                State::Testing | State::Paused => {
                    // The policy the step wants (where it starts and how big a step it
                    // takes aside: those follow from the weight when it was set).
                    let same = d.testing.as_ref().is_some_and(|t| {
                        let mut t = t.clone();
                        t.initial_percentage = spec.initial_percentage;
                        t.step_percentage = spec.step_percentage;
                        t.reason = spec.reason.clone();
                        t == spec
                    });
                    if (current - target).abs() < 1e-9 {
                        Next::Advance(format!("at {target}%"))
                    } else if !same {
                        Next::Act(
                            Action::Update(Box::new(spec)),
                            format!("{}: the shift goes on to {target}%", step.name()),
                        )
                    } else if state == State::Paused {
                        Next::Wait("paused by an operator".into())
                    } else {
                        Next::Wait(format!("shifting: at {current:.2}% of {target}%"))
                    }
                }
                _ => Next::Wait(format!("{} while {}", step.name(), state.as_str())),
            }
        }
        Step::Pause(pause) => match seconds("duration", &pause.duration).ok().flatten() {
            _ if promoted => Next::Advance("promoted by an operator".into()),
            Some(t) if elapsed >= t => Next::Advance("the pause is over".into()),
            Some(t) => Next::Wait(format!("paused for {:.0}s more", t - elapsed)),
            None => Next::Wait("waiting for promote".into()),
        },
        Step::Analysis(a) => {
            let judged = d.progress.looks.saturating_sub(p.looks_at_step);
            if d.progress.breaches > 0 {
                Next::Wait("a window breached: held (the monitor rolls back at the limit)".into())
            } else if judged >= a.windows {
                Next::Advance(format!("{judged} windows judged, all passing"))
            } else {
                Next::Wait(format!("{judged} of {} windows judged", a.windows))
            }
        }
        Step::Promote(_) => match (state, d.completion) {
            (State::Live | State::Removing | State::Removed, Some(Completion::Promoted)) => {
                Next::Advance("promoted".into())
            }
            (State::Testing | State::Paused, _) => {
                Next::Act(Action::Live, "the last step: promote".into())
            }
            _ => Next::Wait(format!("promote while {}", state.as_str())),
        },
    }
}

#[cfg(test)]
mod tests;
