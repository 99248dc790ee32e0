//! `shadowtap ctl`: a client of `shadowtap serve`'s API. Each move is one call whose JSON
//! answer is printed; `status --watch` follows a rollout and exits with its outcome, for CI.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::serve::EXIT_USAGE;

/// Arguments of `shadowtap ctl`.
#[derive(Debug, Args)]
#[command(after_help = "\
A client of `shadowtap serve`'s API. It prints the API's JSON answer; the exit code is 0 on \
success, 3 when the move is refused in the current state (409, the answer names the allowed \
moves), 2 on other API errors.

`status NAME --watch` follows a rollout until it ends and exits like Argo Rollouts' \
`status --watch`: 0 once live (promoted) or a rollout file's last step is done, 1 once \
rolled back or degraded, 3 when paused (waiting for a human: `ctl resume` or `ctl promote`), \
4 on --timeout.

Examples:
  shadowtap ctl get web
  shadowtap ctl shadow web --pool http://10.0.0.7:8080 --mirror 5 --criteria header:X-Shadow-Test=true
  shadowtap ctl testing web --target 50 --error-rate 0.02 --latency 250 --algorithm linear --interval 30s \\
      --failure-limit 3 --max-step 20 --metrics-url http://10.0.0.7:8080=http://10.0.0.7:9100/metrics
  shadowtap ctl apply rollout.toml; shadowtap ctl status web --watch --timeout 30m
  shadowtap ctl promote web; shadowtap ctl abort web --reason 'p99 regression'
  shadowtap ctl set-thresholds web --error-rate 0.01 --latency 300
  shadowtap ctl history web")]
pub struct CtlArgs {
    /// The API's address.
    #[arg(long, env = "SHADOWTAP_API", default_value = "http://127.0.0.1:7070")]
    api: String,
    /// A file holding the bearer token (or SHADOWTAP_TOKEN).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    what: Ctl,
}

/// The testing policy's optional limits, as flags.
#[derive(Debug, Args)]
struct Limits {
    /// Breaching windows in a row before a rollback.
    #[arg(long, value_name = "N")]
    failure_limit: Option<u32>,
    /// Requests a window needs to be judged.
    #[arg(long, value_name = "N")]
    min_requests: Option<u64>,
    /// Windows in a row with too few requests before an alert.
    #[arg(long, value_name = "N")]
    silent_limit: Option<u32>,
    /// Windows in a row with no request at all on the new version before a rollback.
    #[arg(long, value_name = "N")]
    no_data_limit: Option<u32>,
    /// An error rate (fraction) that rolls back on one window (default 5 × --error-rate).
    #[arg(long, value_name = "FRACTION")]
    critical_error_rate: Option<f64>,
    /// A latency (ms) that rolls back on one window (default 4 × --latency).
    #[arg(long, value_name = "MS")]
    critical_latency: Option<f64>,
    /// Most the weight may rise in one step, promotion included (percent).
    #[arg(long = "max-step", value_name = "PERCENT")]
    max_step_percentage: Option<f64>,
    /// Most the error rate may exceed the stable pool's on the same window (fraction).
    #[arg(long, value_name = "FRACTION")]
    max_error_rate_increase: Option<f64>,
    /// Most the latency may be, as a ratio of the stable pool's on the same window.
    #[arg(long, value_name = "RATIO")]
    max_latency_ratio: Option<f64>,
    /// Cores the candidate's busiest member may use.
    #[arg(long, value_name = "CORES")]
    cpu_threshold: Option<f64>,
    /// Bytes of memory the candidate's busiest member may use.
    #[arg(long, value_name = "BYTES")]
    memory_threshold: Option<f64>,
    /// The statistical gate's false-alarm rate over the whole rollout.
    #[arg(long, value_name = "ALPHA")]
    judge_alpha: Option<f64>,
    /// A member's Prometheus endpoint, `MEMBER=URL` (repeat for more).
    #[arg(long = "metrics-url", value_name = "MEMBER=URL")]
    metrics_urls: Vec<String>,
}

impl Limits {
    /// Adds the limits given to the testing body `o`.
    fn fill(self, o: &mut serde_json::Map<String, serde_json::Value>) -> anyhow::Result<()> {
        let mut put = |k: &str, v: Option<serde_json::Value>| {
            if let Some(v) = v {
                o.insert(k.into(), v);
            }
        };
        put("failureLimit", self.failure_limit.map(Into::into));
        put("minRequests", self.min_requests.map(Into::into));
        put("silentLimit", self.silent_limit.map(Into::into));
        put("noDataLimit", self.no_data_limit.map(Into::into));
        put(
            "criticalErrorRate",
            self.critical_error_rate.map(Into::into),
        );
        put("criticalLatency", self.critical_latency.map(Into::into));
        put(
            "maxStepPercentage",
            self.max_step_percentage.map(Into::into),
        );
        put(
            "maxErrorRateIncrease",
            self.max_error_rate_increase.map(Into::into),
        );
        put("maxLatencyRatio", self.max_latency_ratio.map(Into::into));
        put("cpuThreshold", self.cpu_threshold.map(Into::into));
        put("memoryThreshold", self.memory_threshold.map(Into::into));
        put("judgeAlpha", self.judge_alpha.map(Into::into));
        if !self.metrics_urls.is_empty() {
            let mut m = serde_json::Map::new();
            for pair in self.metrics_urls {
                let Some((member, url)) = pair.split_once('=') else {
                    anyhow::bail!("--metrics-url {pair:?}: MEMBER=URL");
                };
                m.insert(member.trim().into(), url.trim().into());
            }
            o.insert("metricsUrls".into(), m.into());
        }
        Ok(())
    }
}

#[derive(Debug, Subcommand)]
enum Ctl {
    /// Every load balancer, or one.
    Get {
        /// The load balancer's id (all of them without it).
        id: Option<String>,
    },
    /// A rollout's state, weight and verdict; with --watch, followed until it ends.
    Status {
        /// The load balancer's id.
        id: String,
        /// Follow it: a line per change, then exit 0 live, 1 rolled back or degraded,
        /// 3 paused.
        #[arg(long)]
        watch: bool,
        /// Give up watching after this long (`90s`, `30m`; exit 4).
        #[arg(long, value_name = "DURATION", value_parser = shadowtap_core::units::parse_duration)]
        timeout: Option<Duration>,
        /// How often to ask.
        #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = shadowtap_core::units::parse_duration)]
        poll: Duration,
    },
    /// The verdict for outside controllers (what Argo Rollouts' web provider reads).
    Analysis {
        /// The load balancer's id.
        id: String,
    },
    /// A load balancer's history.
    History {
        /// The load balancer's id.
        id: String,
    },
    /// A load balancer's pool windows.
    Metrics {
        /// The load balancer's id.
        id: String,
    },
    /// Mirror a share of traffic to a new version.
    Shadow {
        /// The load balancer's id.
        id: String,
        /// A member of the new version's pool (repeat for more).
        #[arg(long = "pool", required = true)]
        pool: Vec<String>,
        /// Share mirrored, percent.
        #[arg(long, default_value_t = 5.0)]
        mirror: f64,
        /// random, header:NAME=VALUE, cookie:NAME=VALUE, geo:CC, useragent:REGEX, path:REGEX.
        #[arg(long = "criteria")]
        criteria: Vec<String>,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Send a share of real traffic to the new version; the monitor shifts it.
    Testing {
        /// The load balancer's id.
        id: String,
        /// Where the shift stops, percent.
        #[arg(long, default_value_t = 100.0)]
        target: f64,
        /// Error rate over which a window breaches (a fraction).
        #[arg(long)]
        error_rate: f64,
        /// Latency (ms at --percentile) over which a window breaches.
        #[arg(long)]
        latency: f64,
        /// The latency percentile judged: 50, 90 or 99.
        #[arg(long, default_value_t = 99)]
        percentile: u8,
        /// seed, linear, exponential or metric.
        #[arg(long, default_value = "linear")]
        algorithm: String,
        /// Points per interval (linear), the first step (exponential), the step at full headroom
        /// (metric); default 10.
        #[arg(long)]
        step: Option<f64>,
        /// How often the monitor judges and shifts (`30s`, `2m`; default: the config's).
        #[arg(long)]
        interval: Option<String>,
        /// The weight to start at (default: the first step; 1 for seed).
        #[arg(long)]
        initial: Option<f64>,
        /// The pool taking real traffic (default: the shadow pool).
        #[arg(long = "candidate")]
        candidate: Vec<String>,
        /// Do not gate steps with the statistical comparison against the stable pool.
        #[arg(long)]
        no_judge: bool,
        /// Stop before live: pause at --target until `ctl promote` (default: promote).
        #[arg(long)]
        manual_promotion: bool,
        #[command(flatten)]
        limits: Box<Limits>,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// A declarative rollout from a file (TOML, or YAML by its extension): started, or
    /// updated when the same version is running; the same file twice changes nothing.
    Apply {
        /// The rollout file.
        file: PathBuf,
        /// Another version is rolling out: roll it back, wait until it is removed, then apply.
        #[arg(long)]
        replace: bool,
    },
    /// The declarative rollout applied to a load balancer (its steps and where it is).
    Rollout {
        /// The load balancer's id.
        id: String,
    },
    /// With a declarative rollout, its current step is done (a pause, a shadow phase without
    /// duration); without one, or with --full, all traffic to the new version.
    Promote {
        /// The load balancer's id.
        id: String,
        /// All traffic to the new version now, skipping the remaining steps.
        #[arg(long)]
        full: bool,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Start an aborted declarative rollout again from its first step.
    Retry {
        /// The load balancer's id.
        id: String,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Change the running rollout's thresholds and limits (the state and weight stay).
    SetThresholds {
        /// The load balancer's id.
        id: String,
        /// Error rate over which a window breaches (a fraction).
        #[arg(long)]
        error_rate: Option<f64>,
        /// Latency (ms) over which a window breaches.
        #[arg(long)]
        latency: Option<f64>,
        #[command(flatten)]
        limits: Box<Limits>,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// All traffic to the new version (stepped under --max-step).
    Live {
        /// The load balancer's id.
        id: String,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// All traffic back to the stable pool at once, mirroring stopped.
    #[command(visible_alias = "abort")]
    Rollback {
        /// The load balancer's id.
        id: String,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Hold the shift.
    Pause {
        /// The load balancer's id.
        id: String,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume the shift.
    Resume {
        /// The load balancer's id.
        id: String,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Take the new version out.
    Remove {
        /// The load balancer's id.
        id: String,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<String>,
    },
}

fn token(args: &CtlArgs) -> anyhow::Result<String> {
    Ok(match &args.token_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("--token-file {}", f.display()))?
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.rsplit(char::is_whitespace).next().unwrap_or(l).to_owned())
            .unwrap_or_default(),
        None => std::env::var("SHADOWTAP_TOKEN").unwrap_or_default(),
    })
}

/// Prints to stdout; a closed pipe (`| head`) is the reader's choice, not an error.
fn print(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// What `status --watch` does once a rollout is in this state: go on, or exit with a code.
fn watch_exit(a: &serde_json::Value) -> Option<u8> {
    let state = a["state"].as_str().unwrap_or("");
    let completion = a["completion"].as_str();
    // A declarative rollout's own phase first: waiting at a pause is "paused".
    match a["rollout"]["phase"].as_str() {
        Some("paused") => return Some(3),
        Some("aborted") => return Some(1),
        // Every step done (a file without `promote` ends at its last weight).
        Some("completed") => return Some(0),
        _ => {}
    }
    match (state, completion) {
        ("live", _) | ("removing" | "removed", Some("promoted")) => Some(0),
        ("degraded", _) | ("removing" | "removed", Some("rolledBack")) => Some(1),
        ("paused", _) => Some(3),
        _ => None,
    }
}

/// One line of `status`: the state, the weights, the verdict and why.
fn status_line(a: &serde_json::Value) -> String {
    let num = |k: &str| a[k].as_f64().unwrap_or(0.0);
    let step = match a["rollout"]["current"].as_str() {
        Some(c) => format!(
            " step={}/{} ({c})",
            a["rollout"]["step"].as_u64().unwrap_or(0) + 1,
            a["rollout"]["steps"].as_u64().unwrap_or(0)
        ),
        None => String::new(),
    };
    format!(
        "{}{step} state={} traffic={:.2}% mirror={:.2}% verdict={} — {}",
        a["loadbalancer"].as_str().unwrap_or("?"),
        a["state"].as_str().unwrap_or("?"),
        num("trafficPercentage"),
        num("mirrorPercentage"),
        a["verdict"].as_str().unwrap_or("?"),
        a["reason"].as_str().unwrap_or("")
    )
}

/// Runs `shadowtap ctl`.
pub fn run(args: CtlArgs) -> anyhow::Result<ExitCode> {
    let token = token(&args)?;
    if token.is_empty() {
        eprintln!("shadowtap: error: no token: --token-file FILE or SHADOWTAP_TOKEN");
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let post = |id: &str, what: &str, body: serde_json::Value| {
        (format!("/loadbalancer/{id}/{what}"), Some(body))
    };
    let reason = |r: Option<String>| serde_json::json!({ "reason": r });
    let api = args.api.trim_end_matches('/').to_owned();
    let (path, body) = match args.what {
        Ctl::Status {
            id,
            watch,
            timeout,
            poll,
        } => return status(&api, &token, &id, watch, timeout, poll),
        Ctl::Get { id: None } => ("/loadbalancer".to_owned(), None),
        Ctl::Get { id: Some(id) } => (format!("/loadbalancer/{id}"), None),
        Ctl::Analysis { id } => (format!("/loadbalancer/{id}/analysis"), None),
        Ctl::History { id } => (format!("/loadbalancer/{id}/history"), None),
        Ctl::Metrics { id } => (format!("/loadbalancer/{id}/metrics"), None),
        Ctl::Shadow {
            id,
            pool,
            mirror,
            criteria,
            reason,
        } => post(
            &id,
            "shadow",
            serde_json::json!({
                "shadowPool": pool, "mirrorPercentage": mirror,
                "mirrorCriteria": if criteria.is_empty() { vec!["random".to_owned()] } else { criteria },
                "reason": reason,
            }),
        ),
        Ctl::Testing {
            id,
            target,
            error_rate,
            latency,
            percentile,
            algorithm,
            step,
            interval,
            initial,
            candidate,
            no_judge,
            manual_promotion,
            limits,
            reason,
        } => {
            let mut b = serde_json::json!({
                "targetTrafficPercentage": target, "errorRateThreshold": error_rate,
                "latencyThreshold": latency, "latencyPercentile": percentile, "algorithm": algorithm,
            });
            let o = b.as_object_mut().expect("an object");
            if let Some(s) = step {
                o.insert("stepPercentage".into(), s.into());
            }
            if let Some(i) = interval {
                o.insert("interval".into(), i.into());
            }
            if let Some(i) = initial {
                o.insert("initialPercentage".into(), i.into());
            }
            if !candidate.is_empty() {
                o.insert("candidatePool".into(), candidate.into());
            }
            if no_judge {
                o.insert("judge".into(), false.into());
            }
            if manual_promotion {
                o.insert("promotion".into(), "manual".into());
            }
            if let Some(r) = reason {
                o.insert("reason".into(), r.into());
            }
            if let Err(e) = limits.fill(o) {
                eprintln!("shadowtap: error: {e}");
                return Ok(ExitCode::from(EXIT_USAGE));
            }
            post(&id, "testing", b)
        }
        Ctl::Live { id, reason: r } => post(&id, "live", reason(r)),
        Ctl::Promote {
            id,
            full,
            reason: r,
        } => post(&id, if full { "live" } else { "promote" }, reason(r)),
        Ctl::Retry { id, reason: r } => post(&id, "retry", reason(r)),
        Ctl::Rollout { id } => (format!("/loadbalancer/{id}/rollout"), None),
        Ctl::SetThresholds {
            id,
            error_rate,
            latency,
            limits,
            reason,
        } => {
            let mut o = serde_json::Map::new();
            if let Some(e) = error_rate {
                o.insert("errorRateThreshold".into(), e.into());
            }
            if let Some(l) = latency {
                o.insert("latencyThreshold".into(), l.into());
            }
            if let Some(r) = reason {
                o.insert("reason".into(), r.into());
            }
            if let Err(e) = limits.fill(&mut o) {
                eprintln!("shadowtap: error: {e}");
                return Ok(ExitCode::from(EXIT_USAGE));
            }
            if o.is_empty() {
                eprintln!("shadowtap: error: set-thresholds: nothing to set");
                return Ok(ExitCode::from(EXIT_USAGE));
            }
            post(&id, "thresholds", o.into())
        }
        Ctl::Apply { file, replace } => return apply(&api, &token, &file, replace),
        Ctl::Rollback { id, reason: r } => post(&id, "rollback", reason(r)),
        Ctl::Pause { id, reason: r } => post(&id, "pause", reason(r)),
        Ctl::Resume { id, reason: r } => post(&id, "resume", reason(r)),
        Ctl::Remove { id, reason: r } => post(&id, "remove", reason(r)),
    };
    let url = format!("{api}{path}");
    runtime()?.block_on(async move {
        let (status, text) = call(&client()?, &url, &token, body).await?;
        let shown = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => serde_json::to_string_pretty(&v).unwrap_or(text),
            Err(_) => text,
        };
        print(&shown);
        Ok(match status {
            200..=299 => ExitCode::SUCCESS,
            409 => ExitCode::from(3),
            _ => ExitCode::from(2),
        })
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn client() -> anyhow::Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// One API call: (status, body).
async fn call(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(u16, String)> {
    let req = match body {
        Some(b) => client.post(url).json(&b),
        None => client.get(url),
    };
    let resp = req
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("{url}: the API did not answer"))?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await.unwrap_or_default()))
}

/// `ctl apply FILE`: the file checked here first (errors name its line), then `PUT
/// …/rollout`; with `replace`, a running other version is rolled back and removed first.
fn apply(
    api: &str,
    token: &str,
    file: &std::path::Path,
    replace: bool,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
    let yaml = matches!(
        file.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    let spec = match shadowtap_serve::rollout::parse(&text, yaml) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shadowtap: error: {}: {e}", file.display());
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    if let Err(e) = spec.check() {
        eprintln!("shadowtap: error: {}: {e}", file.display());
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let id = spec.loadbalancer.clone();
    let body = serde_json::to_value(&spec)?;
    let url = format!("{api}/loadbalancer/{id}/rollout");
    runtime()?.block_on(async move {
        let client = client()?;
        let put = |body: serde_json::Value| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let resp = client
                    .put(&url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .with_context(|| format!("{url}: the API did not answer"))?;
                let status = resp.status().as_u16();
                anyhow::Ok((status, resp.text().await.unwrap_or_default()))
            }
        };
        let (mut status, mut text) = put(body.clone()).await?;
        if status == 409 && replace {
            let rollback = format!("{api}/loadbalancer/{id}/rollback");
            let why =
                serde_json::json!({"reason": format!("replaced by version {}", spec.version)});
            let (s, t) = call(&client, &rollback, token, Some(why)).await?;
            if !(200..300).contains(&s) && s != 409 {
                print(&t);
                return Ok(ExitCode::from(2));
            }
            // The old version drains, then the new rollout starts.
            let get = format!("{api}/loadbalancer/{id}");
            let t0 = Instant::now();
            loop {
                let (_, t) = call(&client, &get, token, None).await?;
                let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                if matches!(v["state"].as_str(), Some("removed" | "stable")) {
                    break;
                }
                if t0.elapsed() > Duration::from_secs(600) {
                    anyhow::bail!("--replace: the old version was not removed within 10 minutes");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            (status, text) = put(body).await?;
        }
        let shown = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => serde_json::to_string_pretty(&v).unwrap_or(text),
            Err(_) => text,
        };
        print(&shown);
        Ok(match status {
            200..=299 => ExitCode::SUCCESS,
            409 => ExitCode::from(3),
            _ => ExitCode::from(2),
        })
    })
}

/// `ctl status`: one line, or with `watch` a line per change until the rollout ends.
fn status(
    api: &str,
    token: &str,
    id: &str,
    watch: bool,
    timeout: Option<Duration>,
    poll: Duration,
) -> anyhow::Result<ExitCode> {
    let url = format!("{api}/loadbalancer/{id}/analysis");
    runtime()?.block_on(async move {
        let client = client()?;
        let started = Instant::now();
        let mut last = String::new();
        let mut failures = 0;
        loop {
            match call(&client, &url, token, None).await {
                Ok((200, text)) => {
                    failures = 0;
                    let a: serde_json::Value =
                        serde_json::from_str(&text).context("the API's answer is not JSON")?;
                    let line = status_line(&a);
                    if line != last {
                        print(&line);
                        last = line;
                    }
                    if !watch {
                        return Ok(ExitCode::SUCCESS);
                    }
                    if let Some(code) = watch_exit(&a) {
                        return Ok(ExitCode::from(code));
                    }
                }
                Ok((status, text)) => {
                    eprintln!("shadowtap: error: the API answered {status}: {text}");
                    return Ok(ExitCode::from(2));
                }
                // A watch outlives a restart of serve: a few failed polls in a row are waited out.
                Err(e) if watch && failures < 5 => {
                    failures += 1;
                    eprintln!("shadowtap: {e:#}; retrying");
                }
                Err(e) => return Err(e),
            }
            if timeout.is_some_and(|t| started.elapsed() >= t) {
                eprintln!("shadowtap: --timeout: still {last}");
                return Ok(ExitCode::from(4));
            }
            tokio::time::sleep(poll).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_ends_on_an_outcome_and_goes_on_otherwise() {
        let a = |state: &str, completion: Option<&str>| serde_json::json!({"state": state, "completion": completion});
        assert_eq!(watch_exit(&a("live", Some("promoted"))), Some(0));
        assert_eq!(watch_exit(&a("removed", Some("promoted"))), Some(0));
        assert_eq!(watch_exit(&a("removing", Some("rolledBack"))), Some(1));
        assert_eq!(watch_exit(&a("degraded", Some("promoted"))), Some(1));
        assert_eq!(watch_exit(&a("paused", None)), Some(3));
        for going in ["stable", "shadow", "testing"] {
            assert_eq!(watch_exit(&a(going, None)), None, "{going}");
        }
        // A new rollout after an old one ended is not the old one's outcome.
        assert_eq!(watch_exit(&a("removed", None)), None);
        // A rollout file's own phase comes first.
        let plan = |state: &str, phase: &str| serde_json::json!({"state": state, "completion": null, "rollout": {"phase": phase}});
        assert_eq!(watch_exit(&plan("testing", "paused")), Some(3));
        assert_eq!(watch_exit(&plan("testing", "completed")), Some(0));
        assert_eq!(watch_exit(&plan("removing", "aborted")), Some(1));
        assert_eq!(watch_exit(&plan("testing", "progressing")), None);
    }
}
