//! What a proxy run did, written when it ends: `proxy-<run>.summary.json` in the recording
//! (and printed by the binary), plus the `replay-<run>.summary.json` that lets
//! `shadowtap analyze --replay DIR` find the recording without `--capture`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use serde::Serialize;
use shadowtap_replayer::ReplaySummary;

use crate::config::ProxyConfig;
use crate::error::ProxyError;
use crate::state::State;

/// A shadow's part of the summary.
#[derive(Debug, Serialize)]
pub struct ShadowSummary {
    /// Copies chosen, sent, dropped by reason.
    pub mirror: serde_json::Value,
    /// What its sender did (responses by class, errors by kind, latency), when it ended well.
    pub sender: Option<ReplaySummary>,
    /// Why its sender failed, when it did.
    pub error: Option<String>,
}

/// The summary of a proxy run.
#[derive(Debug, Serialize)]
pub struct ProxySummary {
    /// The run id of every row.
    pub run_id: String,
    /// Requests answered by production.
    pub production_requests: u64,
    /// Requests answered by the canary.
    pub canary_requests: u64,
    /// Every connection finished its requests within the grace period.
    pub drained: bool,
    /// Per shadow.
    pub shadows: BTreeMap<String, ShadowSummary>,
    /// The recording directory.
    pub recording: Option<PathBuf>,
    /// Exchanges written to it.
    pub recorded: u64,
    /// Exchanges not recorded because the writer was behind.
    pub recording_dropped: u64,
    /// Files written.
    pub files: Vec<PathBuf>,
    /// The configuration version in force at the end.
    pub config_version: u64,
}

impl ProxySummary {
    /// A few lines for stderr.
    pub fn render(&self) -> String {
        let mut s = format!(
            "run          {}\nproduction   {} requests\n",
            self.run_id, self.production_requests
        );
        if self.canary_requests > 0 {
            s.push_str(&format!("canary       {} requests\n", self.canary_requests));
        }
        for (name, sh) in &self.shadows {
            s.push_str(&format!("shadow {name}  mirror {}\n", sh.mirror));
            if let Some(e) = &sh.error {
                s.push_str(&format!("shadow {name}  error: {e}\n"));
            }
        }
        if let Some(dir) = &self.recording {
            s.push_str(&format!(
                "recorded     {} exchanges in {} ({} dropped, writer behind)\n",
                self.recorded,
                dir.display(),
                self.recording_dropped
            ));
        }
        if !self.drained {
            s.push_str(
                "shutdown     some connections were still busy at the end of the grace period\n",
            );
        }
        s
    }
}

pub(crate) fn finish(
    state: &State,
    config: &ProxyConfig,
    drained: bool,
    shadows: Vec<crate::mirror::Closed>,
    files: Vec<PathBuf>,
) -> Result<ProxySummary, ProxyError> {
    let mut out: BTreeMap<String, ShadowSummary> = BTreeMap::new();
    for (name, mirror, r) in shadows {
        let (sender, error) = match r {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e.to_string())),
        };
        // A set replaced by a configuration change keeps its own entry.
        let mut key = name.clone();
        let mut k = 1;
        while out.contains_key(&key) {
            k += 1;
            key = format!("{name} (set {k})");
        }
        out.insert(
            key,
            ShadowSummary {
                mirror,
                sender,
                error,
            },
        );
    }
    let shadows = out;
    let (recorded, recording_dropped) = state.sinks.recorder.as_ref().map_or((0, 0), |r| {
        (
            r.counts.written.load(Ordering::Relaxed),
            r.counts.dropped.load(Ordering::Relaxed),
        )
    });
    let summary = ProxySummary {
        run_id: state.run_id.clone(),
        production_requests: state.production.total(),
        canary_requests: state.canary.total(),
        drained,
        shadows,
        recording: config.record.clone(),
        recorded,
        recording_dropped,
        files,
        config_version: state.routing().version,
    };
    if let Some(dir) = &config.record {
        let write = |name: String, value: &serde_json::Value| -> Result<(), ProxyError> {
            let path = dir.join(name);
            std::fs::write(&path, serde_json::to_vec_pretty(value).expect("json"))
                .map_err(|e| ProxyError::Record(format!("{}: {e}", path.display())))
        };
        write(
            format!("proxy-{}.summary.json", state.run_id),
            &serde_json::to_value(&summary).expect("summary serialises"),
        )?;
        write(
            format!("replay-{}.summary.json", state.run_id),
            &serde_json::json!({
                "run_id": state.run_id,
                "recording": dir,
                "source": "shadowtap proxy",
            }),
        )?;
    }
    Ok(summary)
}
