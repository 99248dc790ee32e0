//! `analyze`: the analysis as a pipeline of stages, each with a small API:
//!
//! 1. **load pairs** ([`crate::pairs::pair_replays`]): the replays of one run, each request's
//!    rows paired across targets and diffed (the `diffs` table is written on the way);
//! 2. **measure** ([`crate::measure::measure`]): per endpoint, metric and comparison, the
//!    paired statistics and their raw p values;
//! 3. **judge** ([`crate::judge::judge`]): a pure function from measurements and policy to
//!    the decision;
//! 4. **report** ([`crate::report`]): `verdict.json`, `report.md`, `junit.xml`, `report.html`.

use std::path::{Path, PathBuf};

use crate::engine::Engine;
use crate::error::AnalyzeError;
use crate::pairs::{
    load_recorded, pair_replays, replayed_ids, runs_and_targets, PairTargets, PairingInput,
    RecordedLimits,
};
use crate::policy::Policy;
use crate::verdict::{EndpointSummary, Verdict, VERDICT_SCHEMA_VERSION};

pub use crate::verdict::{CheckResult, Decision};

/// Inputs of an analysis.
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    /// Capture output (exchanges). Without it, the recording named in the replay's summary is
    /// used when it is still there.
    pub capture: Option<PathBuf>,
    /// Replay output (replays).
    pub replay: PathBuf,
    /// The replay run to judge, when the directory holds several.
    pub run: Option<String>,
    /// Policy.
    pub policy: Policy,
    /// Output directory.
    pub out: PathBuf,
    /// Marginal counts as no-go for the exit code.
    pub fail_on_marginal: bool,
    /// How many recorded responses (and bytes of them) the `recorded` comparison holds.
    pub recorded: RecordedLimits,
    /// Bytes of responses held for requests still waiting for another target's row
    /// ([`crate::pending`]; default [`crate::pending::DEFAULT_PENDING_BYTES`]).
    pub pending_bytes: usize,
    /// How the replays are read: the files in `replay`, or SQL (a Ballista cluster).
    pub engine: Engine,
}

/// The recording a replay run read, from its `replay-<run>.summary.json`, when it still exists.
fn recording_of(replay: &Path, run: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(replay.join(format!("replay-{run}.summary.json"))).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let p = PathBuf::from(v.get("recording")?.as_str()?);
    (p.is_dir() && !crate::pairs::parquet_files(&p, "exchanges").is_empty()).then_some(p)
}

/// Runs the analysis.
pub async fn analyze(opts: &AnalyzeOptions) -> Result<Verdict, AnalyzeError> {
    let p = &opts.policy;
    p.check().map_err(AnalyzeError::Input)?;
    let sql = match &opts.engine {
        Engine::Sql(ctx) => Some(ctx),
        Engine::Files => None,
    };
    if sql.is_none() && !opts.replay.is_dir() {
        return Err(AnalyzeError::Input(format!(
            "{}: no such directory (the --out directory of `shadowtap replay`)",
            opts.replay.display()
        )));
    }
    // Foreign or other-version files are input errors here, never panics or SQL puzzles later.
    // (With SQL the engine reads them: the pairing checks every column's type.)
    if sql.is_none() && crate::pairs::check_files(&opts.replay, "replays")? == 0 {
        return Err(AnalyzeError::Input(format!(
            "{}: no replays-*.parquet files (is this the --out directory of `shadowtap replay`?)",
            opts.replay.display()
        )));
    }
    if let Some(c) = &opts.capture {
        if crate::pairs::check_files(c, "exchanges")? == 0 {
            return Err(AnalyzeError::Input(format!("{}: no exchanges-*.parquet files (is this the --out directory of `shadowtap capture`?)", c.display())));
        }
    }
    let (runs, targets) = match sql {
        Some(ctx) => Engine::runs_and_targets(ctx).await?,
        None => runs_and_targets(&opts.replay)?,
    };
    let run = match (&opts.run, runs.len()) {
        (Some(r), _) if runs.contains(r) => r.clone(),
        (Some(r), _) => {
            return Err(AnalyzeError::Input(format!(
                "run `{r}` is not in {} (runs: {})",
                opts.replay.display(),
                runs.iter().cloned().collect::<Vec<_>>().join(", ")
            )))
        }
        (None, 1) => runs.iter().next().cloned().unwrap_or_default(),
        (None, _) => {
            return Err(AnalyzeError::Input(format!(
                "{} holds {} replay runs ({}); judging them together would mix them: pick one with --run ID",
                opts.replay.display(),
                runs.len(),
                runs.iter().cloned().collect::<Vec<_>>().join(", ")
            )))
        }
    };
    for (role, name) in [("baseline", &p.baseline), ("candidate", &p.candidate)] {
        if !targets.contains(name) {
            return Err(AnalyzeError::Input(format!(
                "the {role} target `{name}` is not in the replay (targets: {}); name it with --{role}",
                targets.iter().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    std::fs::create_dir_all(&opts.out).map_err(|source| AnalyzeError::Io {
        path: opts.out.clone(),
        source,
    })?;
    let baseline2 = targets
        .contains(&p.baseline2)
        .then_some(p.baseline2.as_str());
    let capture = opts
        .capture
        .clone()
        .or_else(|| recording_of(&opts.replay, &run));
    let recorded = match &capture {
        Some(c) => {
            let ids = match sql {
                Some(ctx) => Engine::replayed_ids(ctx, &run).await?,
                None => replayed_ids(&opts.replay, &run)?,
            };
            Some(load_recorded(c, &ids, opts.recorded)?)
        }
        None => None,
    };
    let analysis_id = shadowtap_core::id::new_run_id();
    // Old diffs in the output directory would be read as this run's.
    for old in crate::pairs::parquet_files(&opts.out, "diffs") {
        let _ = std::fs::remove_file(old);
    }
    let diff_opts = p.diff_options();
    let input = PairingInput {
        replay_dir: &opts.replay,
        run: &run,
        targets: PairTargets {
            baseline: &p.baseline,
            candidate: &p.candidate,
            baseline2,
        },
        recorded: recorded.as_ref(),
        opts: &diff_opts,
        out: &opts.out,
        analysis_id: &analysis_id,
        pending_bytes: opts.pending_bytes,
    };
    let (set, diff_rows) = match sql {
        Some(ctx) => Engine::pair(ctx, &input).await?,
        None => pair_replays(&input)?,
    };
    let mut set = set;
    let routes = p.endpoint_routes().map_err(AnalyzeError::Input)?;
    set.name_endpoints(&routes, p.samples.min_endpoint);
    let (m, mut j) = crate::references::judge_set(&set, p);
    if set.incomplete > 0 {
        j.notes.push(format!(
            "{} requests lack a row for some target; they were compared where possible",
            set.incomplete
        ));
    }
    if set.pending_evicted > 0 {
        j.notes.push(format!(
            "{} requests waited for another target's row past the pending memory budget \
             ({} MiB) and were compared with the rows they had; {} rows came later and were \
             not compared",
            set.pending_evicted,
            opts.pending_bytes >> 20,
            set.pending_late
        ));
    }
    // Examples for the fields (kept out of the pure judge: they are the pairs' data).
    let field_index: std::collections::HashMap<(&str, &str), u32> = set
        .fields
        .iter()
        .enumerate()
        .map(|(i, (f, k))| ((f.as_str(), k.as_str()), i as u32))
        .collect();
    for f in &mut j.fields {
        if let Some(id) = field_index.get(&(f.field.as_str(), f.kind.as_str())) {
            f.example = set.examples.get(id).cloned();
        }
    }
    let total = m.overall.pairs.max(1) as f64;
    let endpoints = m
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| EndpointSummary {
            endpoint: e.name.clone(),
            targets: e.targets.clone(),
            pairs: e.differs.n,
            differing_pairs: j.differing_pairs.get(&e.name).copied().unwrap_or(0),
            traffic_share: e.pairs as f64 / total,
            text_diff: set.text_examples.get(&(i as u32)).cloned(),
        })
        .collect();
    let mut thresholds = std::collections::BTreeMap::new();
    thresholds.insert("pass".to_owned(), p.score.pass);
    thresholds.insert("marginal".to_owned(), p.score.marginal);
    Ok(Verdict {
        schema_version: VERDICT_SCHEMA_VERSION,
        verdict: j.decision,
        exit_code: j.decision.exit_code(opts.fail_on_marginal),
        score: j.score,
        thresholds,
        baseline: p.baseline.clone(),
        candidate: p.candidate.clone(),
        run_id: run,
        noise_source: m.noise.as_str().into(),
        reasons: j.reasons,
        notes: j.notes,
        health: m.health.clone(),
        checks: j.checks,
        not_judged: j.not_judged,
        fields: j.fields,
        endpoints,
        positions: m.positions.clone(),
        diff_rows,
        outputs: crate::pairs::parquet_files(&opts.out, "diffs"),
        policy: p.clone(),
    })
}

/// Writes `verdict.json`, `report.md`, `junit.xml` and `report.html` into `out`.
pub fn write_reports(v: &mut Verdict, out: &Path) -> Result<(), AnalyzeError> {
    write_reports_as(v, out, out)
}

/// [`write_reports`] into `out`, naming the files in `outputs` under `shown` (the object
/// storage prefix `out` is uploaded to).
pub fn write_reports_as(v: &mut Verdict, out: &Path, shown: &Path) -> Result<(), AnalyzeError> {
    let files = [
        ("report.md", crate::report::markdown(v)),
        ("junit.xml", crate::report::junit(v)),
        ("report.html", crate::report::html(v)),
    ];
    for (name, text) in files {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|source| AnalyzeError::Io {
            path: path.clone(),
            source,
        })?;
        v.outputs.push(shown.join(name));
    }
    let path = out.join("verdict.json");
    v.outputs.push(shown.join("verdict.json"));
    let text = serde_json::to_string_pretty(v).map_err(|e| AnalyzeError::Io {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(&path, text).map_err(|source| AnalyzeError::Io { path, source })?;
    Ok(())
}
