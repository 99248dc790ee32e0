//! The sending threads: each exchange through the request hooks, to every target (a random
//! order per exchange), the answers through the response hooks, one row per target.
//!
//! One dispatch loop per sending thread takes batches from its queue, paces them, and hands
//! each exchange to the next idle worker task; at most `concurrency` requests are in flight.

use std::collections::BTreeMap;
use std::mem::take;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use shadowtap_core::replays::{ErrorKind, ReplayRecord};
use shadowtap_core::{CompactString, Exchange};
use shadowtap_http1::decode_body;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{build_client, send, ClientOptions, Outgoing, TargetClient};
use crate::error::ReplayError;
use crate::input::Item;
use crate::middleware::{Middleware, MiddlewareOutcome};
use crate::request::{header, set_header, OutgoingRequest, ReceivedResponse};
use crate::rules::{RuleOutcome, Rules};
use crate::schedule::{Pacer, Pacing};
use crate::script::{ScriptHook, ScriptOutcome};
use crate::target::{route_url, Target};
use crate::writer::RowOut;

/// Live counters for progress, one set per sending thread (no cache line written by two
/// threads per request); aligned so that two sets never share a line.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Counters {
    pub(crate) unreplayable: AtomicU64,
    pub(crate) unreplayable_rows: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) hook_errors: AtomicU64,
    pub(crate) read: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) done: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// One counter summed over every sending thread's set.
pub(crate) fn total(sets: &[Arc<Counters>], counter: impl Fn(&Counters) -> &AtomicU64) -> u64 {
    sets.iter()
        .map(|c| counter(c).load(Ordering::Relaxed))
        .sum()
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Everything a request task needs, shared.
pub(crate) struct Shared {
    pub(crate) run_id: Arc<str>,
    pub(crate) targets: Vec<Route>,
    pub(crate) rules: Option<Rules>,
    pub(crate) script: Option<ScriptHook>,
    pub(crate) middleware: Option<Middleware>,
    pub(crate) marker: Option<String>,
    pub(crate) preserve_host: bool,
    pub(crate) max_body: u64,
    pub(crate) rows: RowOut,
    pub(crate) counters: Arc<Counters>,
}

impl Shared {
    pub(crate) fn has_request_hooks(&self) -> bool {
        self.rules.is_some() || self.script.is_some() || self.middleware.is_some()
    }

    /// The same replay for another sending thread (only replays without hooks have several):
    /// its own clients and counters, the same writer.
    pub(crate) fn for_another_thread(
        &self,
        targets: Vec<Route>,
        counters: Arc<Counters>,
    ) -> Shared {
        Shared {
            // Its own copy: rows clone it, and a count shared by threads would bounce.
            run_id: self.run_id.as_ref().into(),
            targets,
            rules: None,
            script: None,
            middleware: None,
            marker: self.marker.clone(),
            preserve_host: self.preserve_host,
            max_body: self.max_body,
            rows: RowOut::new(
                self.rows.tx.clone(),
                self.rows.spare.clone(),
                self.rows.observer.clone(),
                self.rows.keep_bodies,
            ),
            counters,
        }
    }
}

/// A target with its client and the text every request to it repeats.
pub(crate) struct Route {
    pub(crate) target: Target,
    pub(crate) client: TargetClient,
    /// `host[:port]`.
    pub(crate) authority: String,
    /// `scheme://host[:port]`.
    pub(crate) origin: String,
    /// The target's name and base URL as text (the `target` and `target_url` columns),
    /// shared by its rows.
    pub(crate) name: Arc<str>,
    pub(crate) url_text: Arc<str>,
}

/// A row with the request's identity and nothing sent or received yet.
/// `request` is (method, path, query).
fn base_row(
    run_id: &Arc<str>,
    route: &Route,
    pass: u32,
    exchange_id: String,
    recorded_start_us: i64,
    request: (CompactString, CompactString, Option<CompactString>),
) -> ReplayRecord {
    let (method, path, query) = request;
    ReplayRecord {
        run_id: run_id.clone(),
        exchange_id,
        pass,
        target: route.name.clone(),
        target_url: route.url_text.clone(),
        recorded_start_us,
        sent_at_us: None,
        method,
        url: String::new(),
        path,
        query,
        request_headers: Vec::new(),
        request_body: Vec::new(),
        status: None,
        response_version: None,
        response_headers: Vec::new(),
        response_body: Vec::new(),
        response_body_decoded: None,
        response_body_len: 0,
        response_body_truncated: false,
        connect_us: None,
        ttfb_us: None,
        total_us: None,
        error_kind: None,
        error_message: None,
        send_position: None,
    }
}

/// The row for a request that was not sent.
fn unsent_row(
    run_id: &Arc<str>,
    route: &Route,
    pass: u32,
    ex: &Exchange,
    kind: ErrorKind,
    message: String,
) -> ReplayRecord {
    let mut row = base_row(
        run_id,
        route,
        pass,
        ex.exchange_id.clone(),
        ex.request_start_us,
        (ex.method.clone(), ex.path.clone(), ex.query.clone()),
    );
    row.error_kind = Some(kind);
    row.error_message = Some(message);
    row
}

/// Sends one prepared request to one target and records the outcome.
async fn send_one(
    shared: &Shared,
    ti: usize,
    position: usize,
    pass: u32,
    recorded_start_us: i64,
    mut req: OutgoingRequest,
    host_set_by_hooks: bool,
) {
    let route = &shared.targets[ti];
    let target = &route.target;
    if !req.delay.is_zero() {
        tokio::time::sleep(req.delay).await;
    }
    // Host: the target's, unless kept from the recording or set by a hook.
    if !shared.preserve_host && !host_set_by_hooks {
        set_header(&mut req.headers, "Host", &route.authority);
    }
    if let Some(m) = &shared.marker {
        set_header(&mut req.headers, m, &shared.run_id);
    }
    let sent_at_us = now_us();
    let (url, path_at) = route_url(&route.origin, target.url.path(), &req);
    let body = bytes::Bytes::from(std::mem::take(&mut req.body));
    shared.counters.sent.fetch_add(1, Ordering::Relaxed);
    let outgoing = Outgoing {
        url: &url,
        authority: &route.authority,
        path_and_query: &url[path_at..],
        method: &req.method,
        headers: &req.headers,
        body: body.clone(),
    };
    let got = send(&route.client, outgoing, shared.max_body).await;
    let hooks = shared.rules.as_ref().is_some_and(Rules::has_response_rules)
        || shared.script.is_some()
        || shared.middleware.is_some();
    // The request's identity moves into the row, unless response hooks still need it.
    let identity = if hooks {
        let r = &req;
        (
            r.exchange_id.clone(),
            (r.method.clone(), r.path.clone(), r.query.clone()),
        )
    } else {
        let r = &mut req;
        let (m, p, q) = (take(&mut r.method), take(&mut r.path), r.query.take());
        (take(&mut r.exchange_id), (m, p, q))
    };
    let mut row = base_row(
        &shared.run_id,
        route,
        pass,
        identity.0,
        recorded_start_us,
        identity.1,
    );
    row.sent_at_us = Some(sent_at_us);
    row.send_position = Some(position.min(u32::MAX as usize) as u32);
    row.url = url;
    row.request_body = Vec::from(body);
    row.connect_us = got.connect_us;
    row.ttfb_us = got.ttfb_us;
    row.total_us = Some(got.total_us);
    if let Some((kind, message)) = got.error {
        row.error_kind = Some(kind);
        row.error_message = Some(message);
    }
    if let Some(raw) = got.response {
        let coding = header(&raw.headers, "content-encoding").map(str::to_owned);
        let decoded = coding
            .as_deref()
            .filter(|c| !c.eq_ignore_ascii_case("identity"))
            .and_then(|c| decode_body(c, &raw.body, shared.max_body).ok().flatten());
        row.status = Some(raw.status);
        row.response_version = Some(raw.version);
        row.response_body_len = raw.body_len;
        row.response_body_truncated = raw.truncated;
        if !hooks {
            row.response_headers = raw.headers;
            row.response_body = raw.body;
            row.response_body_decoded = decoded;
        } else {
            req.body = row.request_body.clone();
            let mut resp = ReceivedResponse {
                status: raw.status,
                headers: raw.headers,
                body: decoded.clone().unwrap_or_else(|| raw.body.clone()),
            };
            let before = resp.body.clone();
            if let Err(e) =
                Box::pin(apply_response_hooks(shared, &target.name, &req, &mut resp)).await
            {
                row.error_message = Some(format!("response hook: {e}"));
            }
            let changed = resp.body != before;
            row.response_headers = resp.headers;
            match (decoded.is_some(), changed) {
                (true, _) => {
                    row.response_body = raw.body;
                    row.response_body_decoded = Some(resp.body);
                }
                (false, false) => row.response_body = raw.body,
                (false, true) => row.response_body = resp.body,
            }
        }
    }
    row.request_headers = std::mem::take(&mut req.headers);
    if row.error_kind.is_some() {
        shared.counters.errors.fetch_add(1, Ordering::Relaxed);
    }
    shared.counters.done.fetch_add(1, Ordering::Relaxed);
    shared.rows.push(row).await;
}

async fn apply_response_hooks(
    shared: &Shared,
    target: &str,
    req: &OutgoingRequest,
    resp: &mut ReceivedResponse,
) -> Result<(), String> {
    if let Some(r) = &shared.rules {
        r.apply_response(req, resp);
    }
    if let Some(s) = &shared.script {
        s.on_response(target, req, resp)?;
    }
    if let Some(m) = &shared.middleware {
        m.on_response(target, req, resp).await?;
    }
    Ok(())
}

/// What the request hooks decided.
enum Decision {
    Send(OutgoingRequest),
    NotSent(ErrorKind, String),
}

async fn apply_request_hooks(shared: &Shared, mut req: OutgoingRequest) -> Decision {
    if let Some(r) = &shared.rules {
        if let RuleOutcome::Drop(why) = r.apply_request(&mut req) {
            return Decision::NotSent(ErrorKind::Dropped, why);
        }
    }
    if let Some(s) = &shared.script {
        match s.on_request(&mut req) {
            Ok(ScriptOutcome::Send) => {}
            Ok(ScriptOutcome::Drop) => {
                return Decision::NotSent(ErrorKind::Dropped, "dropped by the script".into())
            }
            Err(e) => return Decision::NotSent(ErrorKind::Hook, format!("script: {e}")),
        }
    }
    if let Some(m) = &shared.middleware {
        match m.on_request(&mut req).await {
            Ok(MiddlewareOutcome::Send) => {}
            Ok(MiddlewareOutcome::Drop) => {
                return Decision::NotSent(ErrorKind::Dropped, "dropped by the middleware".into())
            }
            Err(e) => return Decision::NotSent(ErrorKind::Hook, format!("middleware: {e}")),
        }
    }
    Decision::Send(req)
}

/// Prepares one selected exchange (hooks) and sends it to every target.
async fn exchange_task(shared: &Shared, pass: u32, mut ex: Box<Exchange>) {
    // Hooks may decide not to send; the row then names the request as recorded.
    let hooks = shared.has_request_hooks();
    let original_host = hooks
        .then(|| header(&ex.request_headers, "host").map(str::to_owned))
        .flatten();
    let decision = match OutgoingRequest::take_from_exchange(&mut ex, hooks) {
        Err(u) => {
            shared.counters.unreplayable.fetch_add(1, Ordering::Relaxed);
            Decision::NotSent(ErrorKind::Unreplayable, u.0)
        }
        // Boxed: the middleware's future is large, and most replays have no hooks.
        Ok(req) if hooks => Box::pin(apply_request_hooks(shared, req)).await,
        Ok(req) => Decision::Send(req),
    };
    let req = match decision {
        Decision::Send(req) => req,
        Decision::NotSent(kind, message) => {
            match kind {
                ErrorKind::Dropped => &shared.counters.dropped,
                ErrorKind::Hook => &shared.counters.hook_errors,
                _ => &shared.counters.unreplayable_rows,
            }
            .fetch_add(1, Ordering::Relaxed);
            for t in &shared.targets {
                shared
                    .counters
                    .errors
                    .fetch_add(u64::from(kind != ErrorKind::Dropped), Ordering::Relaxed);
                shared
                    .rows
                    .push(unsent_row(
                        &shared.run_id,
                        t,
                        pass,
                        &ex,
                        kind,
                        message.clone(),
                    ))
                    .await;
            }
            return;
        }
    };
    let recorded = ex.request_start_us;
    // The target's Host goes out unless a hook set one of its own.
    let host_set_by_hooks = hooks && req.header("host") != original_host.as_deref();
    let n = shared.targets.len();
    if n == 1 {
        send_one(shared, 0, 0, pass, recorded, req, host_set_by_hooks).await;
        return;
    }
    // A random order per exchange: the futures are polled, so their requests written, in the
    // order they are listed (see `order`).
    let order = crate::order::send_order(n, &shared.run_id, &req.exchange_id, pass);
    let sends = order.iter().enumerate().map(|(position, &ti)| {
        send_one(
            shared,
            ti,
            position,
            pass,
            recorded,
            req.clone(),
            host_set_by_hooks,
        )
    });
    futures_util::future::join_all(sends).await;
}

/// The tasks that send: one per exchange in flight (`--concurrency` divided by the targets each
/// exchange goes to), each taking the next exchange when it is done with the last. Long-lived
/// tasks rather than one task per exchange: spawning copies the request future (kilobytes)
/// and costs an allocation and the task bookkeeping for every request.
struct Workers {
    /// Each worker's inbox (room for one exchange, given only when it is idle).
    pub(crate) inboxes: Vec<mpsc::Sender<(u32, Box<Exchange>)>>,
    /// Workers that are idle, by index.
    pub(crate) idle: mpsc::UnboundedReceiver<usize>,
    pub(crate) tasks: JoinSet<()>,
}

impl Workers {
    pub(crate) fn start(shared: &Arc<Shared>, concurrency: usize) -> Workers {
        // One slot per target: waiting for an idle worker is how --concurrency pushes back.
        let per_exchange = shared.targets.len().clamp(1, concurrency.max(1));
        let count = (concurrency / per_exchange).max(1);
        let (idle_tx, idle) = mpsc::unbounded_channel();
        let mut inboxes = Vec::with_capacity(count);
        let mut tasks = JoinSet::new();
        for id in 0..count {
            let (tx, mut inbox) = mpsc::channel::<(u32, Box<Exchange>)>(1);
            inboxes.push(tx);
            let (shared, idle_tx) = (shared.clone(), idle_tx.clone());
            let _ = idle_tx.send(id);
            tasks.spawn(async move {
                while let Some((pass, ex)) = inbox.recv().await {
                    exchange_task(&shared, pass, ex).await;
                    if idle_tx.send(id).is_err() {
                        break;
                    }
                }
            });
        }
        Workers {
            inboxes,
            idle,
            tasks,
        }
    }

    /// Gives the exchange to the next idle worker, waiting for one. False when none is left
    /// (a worker task ended early, which only a panic does).
    pub(crate) async fn hand(&mut self, pass: u32, ex: Box<Exchange>) -> bool {
        let Some(id) = self.idle.recv().await else {
            return false;
        };
        self.inboxes[id].send((pass, ex)).await.is_ok()
    }

    /// Lets every worker finish the exchange it holds, then ends them.
    pub(crate) async fn finish(mut self) {
        self.inboxes.clear();
        while let Some(ended) = self.tasks.join_next().await {
            if let Err(e) = ended {
                // Only a bug does this; say so rather than lose the exchange quietly.
                tracing::error!("a sending task failed ({e}): the exchange it held has no row");
            }
        }
    }
}

/// Sending threads at most when their number is picked automatically.
pub const MAX_SENDERS: usize = 4;

/// What one sending thread's dispatch loop counted.
#[derive(Default)]
pub(crate) struct Dispatched {
    pub(crate) read: u64,
    pub(crate) selected: u64,
    pub(crate) not_matched: u64,
    pub(crate) sampled_out: u64,
    pub(crate) refused: BTreeMap<String, u64>,
    pub(crate) passes: u32,
    pub(crate) max_lag_ms: f64,
    /// `signal` or `duration` when either stopped it before the items ended.
    pub(crate) stopped_by: Option<&'static str>,
    pub(crate) failure: Option<ReplayError>,
    /// Selected exchanges still queued (or waiting for their time) when sending stopped.
    pub(crate) queued_at_stop: u64,
}

/// The clients for `targets`, each pooling up to `concurrency` connections.
pub(crate) fn routes(
    targets: &[Target],
    client: &ClientOptions,
    concurrency: usize,
) -> Result<Vec<Route>, ReplayError> {
    targets
        .iter()
        .map(|t| {
            let options = ClientOptions {
                pool_size: concurrency,
                ..client.clone()
            };
            let client =
                build_client(&t.url, &options).map_err(|message| ReplayError::InvalidOption {
                    option: "--target",
                    message,
                })?;
            Ok(Route {
                client,
                authority: t.authority(),
                origin: t.origin(),
                name: t.name.as_str().into(),
                url_text: t.url.as_str().into(),
                target: t.clone(),
            })
        })
        .collect()
}

/// One sending thread's loop: hands the exchanges from `item_rx` to `concurrency` sending tasks
/// on the current runtime, at the pace `pacing` asks, until the items end, `deadline` passes
/// or `stop` turns true; then lets the tasks finish and hands their last rows to the writer.
pub(crate) async fn dispatch(
    shared: Arc<Shared>,
    concurrency: usize,
    pacing: Pacing,
    mut item_rx: mpsc::Receiver<Vec<Item>>,
    mut stop: watch::Receiver<bool>,
    deadline: Option<Instant>,
) -> Dispatched {
    let mut d = Dispatched::default();
    let mut items: std::collections::VecDeque<Item> = std::collections::VecDeque::new();
    let mut workers = Workers::start(&shared, concurrency);
    let mut pacer = Pacer::new(pacing, Instant::now());
    let stop_now = |s: &watch::Receiver<bool>| *s.borrow();
    'dispatch: loop {
        if stop_now(&stop) {
            d.stopped_by = Some("signal");
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            d.stopped_by = Some("duration");
            break;
        }
        if items.is_empty() {
            let batch = tokio::select! {
                biased;
                _ = wait_stop(&mut stop) => continue,
                _ = sleep_until_opt(deadline) => { d.stopped_by = Some("duration"); break }
                batch = item_rx.recv() => batch,
            };
            match batch {
                Some(b) => items.extend(b),
                None => break,
            }
        }
        let item = items.pop_front();
        let (pass, ex) = match item {
            None => break,
            Some(Item::Failed(e)) => {
                d.failure = Some(e);
                break;
            }
            Some(Item::PassStart(p)) => {
                if p > 0 {
                    pacer.new_pass();
                }
                d.passes = p + 1;
                continue;
            }
            Some(Item::Skipped(skipped)) => {
                let n = skipped.total();
                d.read += n;
                shared.counters.read.fetch_add(n, Ordering::Relaxed);
                d.not_matched += skipped.not_matched;
                d.sampled_out += skipped.sampled_out;
                for (method, n) in skipped.refused {
                    *d.refused.entry(method).or_default() += n;
                }
                continue;
            }
            Some(Item::Exchange(pass, ex)) => (pass, ex),
        };
        d.read += 1;
        shared.counters.read.fetch_add(1, Ordering::Relaxed);
        let due = pacer.due(ex.request_start_us);
        if let Some(due) = due {
            tokio::select! {
                biased;
                // Stopped while waiting: this request was not sent, and is not recorded.
                _ = wait_stop(&mut stop) => {
                    d.stopped_by = Some("signal");
                    d.queued_at_stop += 1;
                    break 'dispatch;
                }
                _ = sleep_until_opt(deadline) => {
                    d.stopped_by = Some("duration");
                    d.queued_at_stop += 1;
                    break 'dispatch;
                }
                _ = tokio::time::sleep_until(due) => {}
            }
            let lag = Instant::now().saturating_duration_since(due).as_secs_f64() * 1000.0;
            d.max_lag_ms = d.max_lag_ms.max(lag);
        }
        // Waiting for an idle worker is how `concurrency` pushes back; a stop while waiting
        // leaves this exchange unsent (no request goes out after a stop).
        let handed = tokio::select! {
            biased;
            _ = wait_stop(&mut stop) => {
                d.stopped_by = Some("signal");
                d.queued_at_stop += 1;
                break 'dispatch;
            }
            _ = sleep_until_opt(deadline) => {
                d.stopped_by = Some("duration");
                d.queued_at_stop += 1;
                break 'dispatch;
            }
            handed = workers.hand(pass, ex) => handed,
        };
        if !handed {
            break;
        }
        d.selected += 1;
    }
    // Stop taking more, count what is queued (not sent, no row: see `crate::sender`), finish
    // what is in flight, then hand the last rows to the writer.
    item_rx.close();
    let mut queued = items
        .into_iter()
        .chain(std::iter::from_fn(|| item_rx.try_recv().ok()).flatten());
    for item in &mut queued {
        if let Item::Exchange(..) = item {
            d.queued_at_stop += 1;
        }
    }
    drop(item_rx);
    workers.finish().await;
    shared.rows.flush().await;
    d
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn wait_stop(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
