//! `shadowtap query`, `shadowtap analyze` and `shadowtap gate`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use shadowtap_analyzer::analyze::write_reports_as;
use shadowtap_analyzer::pairs::RecordedLimits;
use shadowtap_analyzer::tables::{
    default_memory_limit, register_all_locations, run_sql, session_with_memory, Listing,
};
use shadowtap_analyzer::{analyze, AnalyzeError, AnalyzeOptions, Policy};

/// Exit code for usage and input errors of analyze, gate and query (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

/// Flags of `shadowtap query`.
///
/// Registers the Parquet tables found under each `--data` directory (`exchanges`, `replays`,
/// `diffs`; Hive partitions become `date` and `hour` columns) and runs SQL on them with
/// Apache DataFusion. Helper functions: `path_template(path)`, `header(headers, name)`,
/// `json_get(body, '/json/pointer')`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    shadowtap query --data data/ \"SELECT host, count(*) FROM exchanges GROUP BY 1 ORDER BY 2 DESC\"\n  \
    shadowtap query --data results/ \"SELECT target, path_template(path) AS endpoint, count(*), approx_percentile_cont(total_us, 0.99) FROM replays GROUP BY 1, 2\"\n  \
    shadowtap query --data verdict/ --format csv \"SELECT endpoint, d.pattern, count(*) FROM (SELECT endpoint, unnest(differences) AS d FROM diffs WHERE comparison = 'candidate') GROUP BY 1, 2\"\n  \
    shadowtap query --data data/ --data results/      (no SQL: an interactive prompt; end statements with ;)\n\n\
    Exit status: 0 on success, 64 for bad flags or input, 65 for SQL errors.")]
pub struct QueryArgs {
    /// A directory holding shadowtap output (repeat for capture, replay and analyze outputs),
    /// or an object-storage prefix (`s3://bucket/prefix`), read in place.
    #[arg(long, value_name = "DIR|URL", required = true)]
    data: Vec<String>,

    /// The SQL to run; without it, an interactive prompt reads statements from stdin.
    sql: Option<String>,

    /// Output format: table, csv, json (one object per line) or parquet (needs --output).
    #[arg(long, value_name = "FORMAT", default_value = "table")]
    format: Format,

    /// Write the result here instead of stdout.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// Memory the query may hold (`2G`, `512M`); sorts, joins and aggregations past it spill
    /// to temporary files. Default: half the machine's memory.
    #[arg(long, value_name = "BYTES", value_parser = parse_memory)]
    max_memory: Option<usize>,

    #[command(flatten)]
    engine: EngineArgs,
}

/// Where SQL runs.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// `local`: in this process; `ballista`: on the Ballista cluster at --scheduler
    /// (`shadowtap cluster`), whose executors read the data (local paths must exist on them
    /// too; s3:// prefixes are read with their credentials).
    #[arg(long, value_enum, value_name = "ENGINE", default_value = "local")]
    engine: Engine,

    /// The Ballista scheduler, for --engine ballista.
    #[arg(long, value_name = "df://HOST:PORT", env = "SHADOWTAP_SCHEDULER")]
    scheduler: Option<String>,
}

/// SQL engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// Apache DataFusion in this process.
    Local,
    /// An Apache DataFusion Ballista cluster.
    Ballista,
}

impl EngineArgs {
    /// The session queries run in, and how its tables must name their files.
    async fn session(
        &self,
        max_memory: Option<usize>,
    ) -> Result<(shadowtap_analyzer::tables::SessionContext, Listing), AnalyzeError> {
        match (self.engine, &self.scheduler) {
            (Engine::Local, _) => Ok((
                session_with_memory(max_memory.or_else(default_memory_limit)),
                Listing::Pattern,
            )),
            (Engine::Ballista, None) => Err(AnalyzeError::Input(
                "--engine ballista needs --scheduler df://HOST:PORT".into(),
            )),
            (Engine::Ballista, Some(s)) => shadowtap_cluster::remote_session(s)
                .await
                .map(|ctx| (ctx, Listing::Files))
                .map_err(|e| AnalyzeError::Input(e.to_string())),
        }
    }
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned table.
    Table,
    /// CSV with a header.
    Csv,
    /// JSON lines.
    Json,
    /// Parquet (zstd).
    Parquet,
}

fn fail(e: &AnalyzeError) -> ExitCode {
    eprintln!("shadowtap: error: {e}");
    ExitCode::from(e.exit_code())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn render(
    batches: &[arrow::array::RecordBatch],
    format: Format,
    output: Option<&PathBuf>,
) -> anyhow::Result<()> {
    let mut out: Box<dyn Write> = match output {
        Some(p) if format != Format::Parquet => Box::new(std::fs::File::create(p)?),
        _ => Box::new(std::io::stdout().lock()),
    };
    match format {
        Format::Table => writeln!(
            out,
            "{}",
            arrow::util::pretty::pretty_format_batches(batches)?
        )?,
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            for b in batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        Format::Parquet => {
            let Some(path) = output else {
                anyhow::bail!("--format parquet needs --output FILE")
            };
            let schema = batches
                .first()
                .map(|b| b.schema())
                .unwrap_or_else(|| std::sync::Arc::new(arrow::datatypes::Schema::empty()));
            let props = parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                .build();
            let mut w = parquet::arrow::ArrowWriter::try_new(
                std::fs::File::create(path)?,
                schema,
                Some(props),
            )?;
            for b in batches {
                w.write(b)?;
            }
            w.close()?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Runs `shadowtap query`.
pub fn query(args: QueryArgs) -> anyhow::Result<ExitCode> {
    if args.format == Format::Parquet && args.output.is_none() {
        eprintln!("shadowtap: error: --format parquet needs --output FILE");
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let rt = runtime()?;
    rt.block_on(async {
        let (ctx, listing) = match args.engine.session(args.max_memory).await {
            Ok(s) => s,
            Err(e) => return Ok(fail(&e)),
        };
        let mut dirs = Vec::new();
        for d in &args.data {
            match shadowtap_storage::Location::parse(d) {
                Ok(l) => dirs.push(l),
                Err(e) => {
                    eprintln!("shadowtap: error: --data: {e}");
                    return Ok(ExitCode::from(EXIT_USAGE));
                }
            }
        }
        let found = match register_all_locations(&ctx, &dirs, listing).await {
            Ok(f) => f,
            Err(e) => return Ok(fail(&e)),
        };
        if found.is_empty() {
            eprintln!(
                "shadowtap: error: no shadowtap tables (exchanges-*, replays-*, diffs-*.parquet) under {}",
                args.data.join(", ")
            );
            return Ok(ExitCode::from(EXIT_USAGE));
        }
        if let Some(sql) = &args.sql {
            return match run_sql(&ctx, sql).await {
                Ok(batches) => {
                    render(&batches, args.format, args.output.as_ref())?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Ok(fail(&e)),
            };
        }
        // Interactive: statements end with `;`.
        let tty = std::io::stdin().is_terminal();
        if tty {
            eprintln!("tables: {}. End statements with ; and quit with Ctrl-D.", found.join(", "));
        }
        let mut buf = String::new();
        let stdin = std::io::stdin();
        let mut failed = false;
        loop {
            if tty {
                eprint!("{}", if buf.trim().is_empty() { "shadowtap> " } else { "        -> " });
            }
            let mut line = String::new();
            if stdin.lock().read_line(&mut line)? == 0 {
                break;
            }
            buf.push_str(&line);
            while let Some(i) = buf.find(';') {
                let stmt: String = buf[..i].trim().to_owned();
                buf = buf[i + 1..].to_owned();
                if stmt.is_empty() {
                    continue;
                }
                match run_sql(&ctx, &stmt).await {
                    Ok(b) => render(&b, args.format, None)?,
                    Err(e) => {
                        eprintln!("shadowtap: error: {e}");
                        failed = true;
                    }
                }
            }
        }
        Ok(if failed && !tty { ExitCode::from(65) } else { ExitCode::SUCCESS })
    })
}

/// Flags shared by analyze and gate.
#[derive(Debug, Args)]
pub struct JudgeArgs {
    /// Canary policy (TOML): targets, noise rule, metrics, thresholds. See docs/analyze.md.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,

    /// Baseline target name (default: baseline, or the policy's).
    #[arg(long, value_name = "NAME")]
    baseline: Option<String>,

    /// Candidate target name (default: candidate, or the policy's).
    #[arg(long, value_name = "NAME")]
    candidate: Option<String>,

    /// Second baseline target (another copy of the current version): the noise for the
    /// differences, and the A/A calibration (the candidate fails only when worse than both).
    #[arg(long, value_name = "NAME")]
    baseline2: Option<String>,

    /// An endpoint template (repeat): `/shop/products/{id}.json`, `/users/{name}/orders`. A
    /// `{…}` segment matches any one segment. Requests matching one are judged as that
    /// endpoint; the others by their path with identifiers, dates and emails as parameters,
    /// and positions with many sparse values inferred as parameters.
    #[arg(long, value_name = "TEMPLATE")]
    route: Vec<String>,

    /// An OpenAPI document (JSON or YAML, OpenAPI 3 or Swagger 2): requests matching one of
    /// its operations are judged as that endpoint, named `GET /v1/pets/{petId} (showPetById)`
    /// (paths under the first server's base path). `--route` templates are tried first.
    #[arg(long, value_name = "FILE")]
    openapi: Option<std::path::PathBuf>,

    /// Exit 1 on a marginal verdict instead of 2.
    #[arg(long)]
    fail_on_marginal: bool,

    /// Memory for the recorded production responses compared with the baseline (`512M`,
    /// `2G`): the responses of the replayed exchanges are read in two streaming passes and
    /// as many as fit are kept, chosen by a hash of the exchange id (at most 200,000).
    /// Default: an eighth of the machine's memory.
    #[arg(long, value_name = "BYTES", value_parser = shadowtap_core::units::parse_size)]
    max_recorded_memory: Option<u64>,

    /// Memory for the responses of requests still waiting for another target's row
    /// (`256M`): rows of one request normally arrive together, but a target that died
    /// mid-run or a replay cut short leaves requests that never complete. Past this the
    /// oldest waiting request is compared with the rows it has, and counted in the verdict's
    /// notes.
    #[arg(long, value_name = "BYTES", value_parser = shadowtap_core::units::parse_size,
          default_value = "512M")]
    max_pending_memory: u64,

    /// Print verdict.json on stdout.
    #[arg(long)]
    json: bool,
}

impl JudgeArgs {
    fn policy(&self) -> Result<Policy, AnalyzeError> {
        let mut p = match &self.policy {
            Some(f) => Policy::load(f).map_err(AnalyzeError::Input)?,
            None => Policy::default(),
        };
        if let Some(b) = &self.baseline {
            p.baseline = b.clone();
        }
        if let Some(c) = &self.candidate {
            p.candidate = c.clone();
        }
        p.routes.extend(self.route.iter().cloned());
        if let Some(f) = &self.openapi {
            p.openapi = Some(f.clone());
        }
        if let Some(b) = &self.baseline2 {
            p.baseline2 = b.clone();
        }
        p.check().map_err(AnalyzeError::Input)?;
        Ok(p)
    }
}

/// Flags of `shadowtap analyze`.
///
/// Pairs every replayed request across targets, diffs the responses (JSON structurally, text
/// with a unified diff, binary by hash), sets aside differences that also appear between two
/// copies of the current version (noise, in Diffy's manner), computes per-endpoint metrics and
/// judges candidate vs baseline with paired statistical tests, controlled for the number of
/// checks and calibrated by a second baseline when one ran (in Kayenta's manner). Writes
/// `verdict.json`, `report.md`, `junit.xml`, `report.html` and `diffs-*.parquet` into --out.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    shadowtap analyze --capture data/ --replay results/ --out verdict/\n  \
    shadowtap analyze --capture data/ --replay results/ --policy canary.toml --fail-on-marginal --out verdict/\n\n\
    Exit status (for CI): 0 go, 1 no-go, 2 marginal (1 with --fail-on-marginal), 3 inconclusive\n\
    (not enough data, or an unhealthy baseline: nothing valid was compared), 64 bad flags or\n\
    input (also: a replay directory holding several runs without --run), 65 SQL errors, 74\n\
    output errors.")]
pub struct AnalyzeArgs {
    /// Capture output: the recorded production responses are the noise source without a second
    /// baseline, and the health guards compare the baseline's answers with them. Default: the
    /// recording named in the replay's summary, when it still exists. An object-storage
    /// prefix is fetched into the local cache.
    #[arg(long, value_name = "DIR|URL")]
    capture: Option<String>,

    /// Replay output (a directory, or an object-storage prefix fetched into the local cache).
    #[arg(long, value_name = "DIR|URL")]
    replay: String,

    /// Output directory, or an object-storage prefix (the reports and the `diffs` table are
    /// uploaded when complete; old `diffs` objects there are replaced).
    #[arg(short, long, value_name = "DIR|URL")]
    out: String,

    /// The replay run to judge when --replay holds several (their ids are in the
    /// `replay-<run>.summary.json` files and the `run_id` column).
    #[arg(long, value_name = "ID")]
    run: Option<String>,

    #[command(flatten)]
    judge: JudgeArgs,

    /// With --engine ballista the cluster reads the replays where they are (a local path its
    /// executors see, or an s3:// prefix read in place) and streams the rows to pair here.
    #[command(flatten)]
    engine: EngineArgs,
}

fn judge(
    capture: Option<&str>,
    replay: &str,
    run: Option<String>,
    out: &str,
    j: &JudgeArgs,
    engine: Option<&EngineArgs>,
) -> anyhow::Result<ExitCode> {
    let policy = match j.policy() {
        Ok(p) => p,
        Err(e) => return Ok(fail(&e)),
    };
    let usage = |flag: &str, e: anyhow::Error| {
        eprintln!("shadowtap: error: {flag}: {e:#}");
        Ok(ExitCode::from(EXIT_USAGE))
    };
    let capture = match capture.map(crate::location::input).transpose() {
        Ok(c) => c,
        Err(e) => return usage("--capture", e),
    };
    let rt = runtime()?;
    let ballista = engine.filter(|e| e.engine == Engine::Ballista);
    let (replay, engine) = match ballista {
        // The cluster reads the replays in place.
        Some(e) => {
            let location = match shadowtap_storage::Location::parse(replay) {
                Ok(l) => l,
                Err(err) => return usage("--replay", err.into()),
            };
            let sql = rt.block_on(async {
                let (ctx, listing) = e.session(None).await?;
                shadowtap_analyzer::Engine::sql(ctx, &location, listing).await
            });
            match sql {
                Ok(s) => (PathBuf::from(replay), s),
                Err(err) => return Ok(fail(&err)),
            }
        }
        None => match crate::location::input(replay) {
            Ok(r) => (r, shadowtap_analyzer::Engine::Files),
            Err(e) => return usage("--replay", e),
        },
    };
    let output = match crate::location::Output::open(out, false) {
        Ok(o) => o,
        Err(e) => return usage("--out", e),
    };
    let opts = AnalyzeOptions {
        capture,
        replay,
        run,
        policy,
        out: output.dir(),
        fail_on_marginal: j.fail_on_marginal,
        recorded: RecordedLimits {
            bytes: j
                .max_recorded_memory
                .unwrap_or_else(|| RecordedLimits::default().bytes),
            ..RecordedLimits::default()
        },
        pending_bytes: usize::try_from(j.max_pending_memory).unwrap_or(usize::MAX),
        engine,
    };
    let result = rt.block_on(analyze(&opts));
    let mut v = match result {
        Ok(v) => v,
        Err(e) => return Ok(fail(&e)),
    };
    // Paths as the user named the output (object URLs for a prefix).
    v.outputs = v.outputs.iter().map(|p| output.shown(p)).collect();
    if let Err(e) = write_reports_as(&mut v, &output.dir(), &output.shown_dir()) {
        return Ok(fail(&e));
    }
    // As on disk, the output holds this analysis's diffs only.
    let finished = output
        .delete_remote_where(|rel| {
            let name = rel.rsplit('/').next().unwrap_or(rel);
            name.starts_with("diffs-") && name.ends_with(".parquet")
        })
        .and_then(|()| output.finish());
    if let Err(e) = finished {
        eprintln!("shadowtap: error: {e:#}");
        return Ok(ExitCode::from(74));
    }
    if j.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    eprintln!(
        "verdict      {} (exit {})",
        v.verdict.as_str().to_uppercase(),
        v.exit_code
    );
    eprintln!(
        "score        {}",
        v.score.map_or("-".into(), |s| format!(
            "{s:.1} (go at {}, marginal at {})",
            v.policy.score.pass, v.policy.score.marginal
        ))
    );
    for r in &v.reasons {
        eprintln!("because      {r}");
    }
    for n in &v.notes {
        eprintln!("note         {n}");
    }
    for f in v.fields.iter().filter(|f| f.noise).take(5) {
        eprintln!("noise        {} {}: {}", f.endpoint, f.field, f.reason);
    }
    for p in &v.outputs {
        eprintln!("wrote        {}", p.display());
    }
    Ok(ExitCode::from(v.exit_code))
}

/// Runs `shadowtap analyze`.
pub fn analyze_cmd(args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    judge(
        args.capture.as_deref(),
        &args.replay,
        args.run,
        &args.out,
        &args.judge,
        Some(&args.engine),
    )
}

/// Flags of `shadowtap gate`.
///
/// Replay and analyze in one command, for a CI job: replays the recording in --capture at the
/// baseline and candidate (and optional second baseline) URLs, then judges the candidate.
#[derive(Debug, Args)]
#[command(after_help = "Example (a CI step):\n  \
    shadowtap gate --capture data/ --baseline-url http://baseline:8080 --candidate-url http://canary:8080 \\\n    \
    --sample 10% --rate 200/s --out gate/ && echo GO\n\n\
    Exit status: 0 go, 1 no-go, 2 marginal (1 with --fail-on-marginal), 3 inconclusive, 64 bad\n\
    flags or input.")]
pub struct GateArgs {
    /// Capture output (the recording to replay): a directory or an object-storage prefix.
    #[arg(long, value_name = "DIR|URL")]
    capture: String,

    /// Baseline URL (the current version).
    #[arg(long, value_name = "URL")]
    baseline_url: String,

    /// Candidate URL (the new version).
    #[arg(long, value_name = "URL")]
    candidate_url: String,

    /// Second baseline URL (another copy of the current version), to measure noise.
    #[arg(long, value_name = "URL")]
    baseline2_url: Option<String>,

    /// Output directory (replays in `replay/`, reports at the top), or an object-storage
    /// prefix.
    #[arg(short, long, value_name = "DIR|URL")]
    out: String,

    /// Replay this share of the recording.
    #[arg(long, value_name = "PERCENT")]
    sample: Option<String>,

    /// Send rate (`200/s`, `max`); default: the recorded timing.
    #[arg(long, value_name = "N/s|max")]
    rate: Option<String>,

    /// Also replay these methods.
    #[arg(long, value_name = "METHODS")]
    allow_methods: Option<String>,

    /// Requests in flight at most.
    #[arg(long, value_name = "N", default_value_t = 32)]
    concurrency: usize,

    /// Per-request timeout.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    timeout: String,

    #[command(flatten)]
    judge: JudgeArgs,
}

/// Runs `shadowtap gate`: `shadowtap replay` then `shadowtap analyze`, as child processes of
/// this binary so each keeps its own flags, signals and exit codes.
pub fn gate(args: GateArgs) -> anyhow::Result<ExitCode> {
    let me = std::env::current_exe()?;
    let remote = shadowtap_storage::is_remote(&args.out);
    let replay_dir = if remote {
        format!("{}/replay", args.out.trim_end_matches('/'))
    } else {
        PathBuf::from(&args.out)
            .join("replay")
            .display()
            .to_string()
    };
    let base_name = args
        .judge
        .baseline
        .clone()
        .unwrap_or_else(|| "baseline".into());
    let cand_name = args
        .judge
        .candidate
        .clone()
        .unwrap_or_else(|| "candidate".into());
    let mut cmd = std::process::Command::new(&me);
    cmd.arg("replay")
        .arg("--from")
        .arg(&args.capture)
        .arg("--out")
        .arg(&replay_dir);
    cmd.arg("--target")
        .arg(format!("{base_name}={}", args.baseline_url));
    cmd.arg("--target")
        .arg(format!("{cand_name}={}", args.candidate_url));
    if let Some(u) = &args.baseline2_url {
        let b2 = args
            .judge
            .baseline2
            .clone()
            .unwrap_or_else(|| "baseline2".into());
        cmd.arg("--target").arg(format!("{b2}={u}"));
    }
    if let Some(s) = &args.sample {
        cmd.arg("--sample").arg(s);
    }
    if let Some(r) = &args.rate {
        cmd.arg("--rate").arg(r);
    }
    if let Some(m) = &args.allow_methods {
        cmd.arg("--allow-methods").arg(m);
    }
    cmd.arg("--concurrency")
        .arg(args.concurrency.to_string())
        .arg("--timeout")
        .arg(&args.timeout)
        .arg("--progress-interval")
        .arg("30s");
    // The replay directory holds this gate's run only.
    if remote {
        let old = shadowtap_storage::Remote::parse(&replay_dir)?;
        shadowtap_storage::block_on(old.delete_where(|_| true))?;
    } else {
        let _ = std::fs::remove_dir_all(&replay_dir);
    }
    let st = cmd.status()?;
    if !st.success() {
        let code = st.code().unwrap_or(1);
        eprintln!("shadowtap: error: gate: the replay failed (exit {code}); no verdict");
        return Ok(ExitCode::from(if code == 2 { EXIT_USAGE } else { 70 }));
    }
    std::thread::sleep(Duration::from_millis(10));
    judge(
        Some(&args.capture),
        &replay_dir,
        None,
        &args.out,
        &args.judge,
        None,
    )
}

/// A byte count (`2G`, `512M`) as a memory limit.
fn parse_memory(s: &str) -> Result<usize, String> {
    let bytes = shadowtap_core::units::parse_size(s)?;
    usize::try_from(bytes)
        .ok()
        .filter(|b| *b > 0)
        .ok_or_else(|| format!("{s:?}: a memory limit is a positive size"))
}
