//! The store on a real PostgreSQL server started by the test (and on SQLite, the same checks):
//! two connections computing a change from the same version, only one commits; the history
//! and the outbox rows are written with the change or not at all; a plane over PostgreSQL runs
//! a rollout.

use std::path::Path;

use crate::pg::Postgres;

use shadowtap_serve::config::LoadBalancerConfig;
use shadowtap_serve::deployment::{act, Action, Deployment};
use shadowtap_serve::plane::Plane;
use shadowtap_serve::store::{Committed, Store};

use crate::common::*;

fn lb() -> LoadBalancerConfig {
    LoadBalancerConfig {
        sticky: "request".into(),
        ..LoadBalancerConfig::new("web", "127.0.0.1:0", vec!["http://127.0.0.1:9001".into()])
    }
}

/// Two connections race from the same version: one commits, the other is told to retry, and
/// the loser's history and outbox rows are not written.
fn only_one_writer_wins(url: &str) {
    let a = Store::open(url).unwrap();
    let b = Store::open(url).unwrap();
    assert_eq!(
        a.schema_version().unwrap(),
        shadowtap_serve::store::SCHEMA_VERSION
    );
    let d = a.create(&Deployment::new(&lb(), 1.0e9)).unwrap();
    assert_eq!(
        b.create(&Deployment::new(&lb(), 2.0e9)).unwrap(),
        d,
        "created once"
    );
    let shadow = |port: u16| Action::Shadow {
        pool: vec![format!("http://127.0.0.1:{port}")],
        mirror_percentage: 5.0,
        criteria: vec!["random".into()],
        metrics_urls: Default::default(),
    };
    let oa = act(&d, &shadow(9002), "a", None, 1.0e9).unwrap();
    let ob = act(&d, &shadow(9003), "b", None, 1.0e9).unwrap();
    assert_eq!(
        a.commit(d.rollout.version, &oa, &["webhook"], 1.0e9, None)
            .unwrap(),
        Committed::Yes
    );
    assert_eq!(
        b.commit(d.rollout.version, &ob, &["webhook"], 1.0e9, None)
            .unwrap(),
        Committed::Conflict
    );
    let stored = b.load("web").unwrap().unwrap();
    assert_eq!(stored.shadow_pool, ["http://127.0.0.1:9002"]);
    let h = b.history("web").unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].actor, "a");
    let due = b.due(2.0e9, 10).unwrap();
    assert_eq!(due.len(), 1, "one alert, the winner's");
    b.failed(&due[0].alert.id, "webhook", 3.0e9, "answered 500")
        .unwrap();
    assert!(a.due(2.0e9, 10).unwrap().is_empty(), "retried later");
    assert_eq!(a.due(3.0e9, 10).unwrap()[0].attempts, 1);
    // A dead letter: never due again, not counted as undelivered, counted as dead.
    a.dead(
        &due[0].alert.id,
        "webhook",
        "no webhook URL configured any more",
    )
    .unwrap();
    assert!(a.due(1.0e12, 10).unwrap().is_empty());
    assert_eq!(
        (a.undelivered().unwrap(), a.dead_letters().unwrap()),
        (0, 1)
    );
    a.delivered(&due[0].alert.id, "webhook", 3.0e9).unwrap();
    assert_eq!(a.dead_letters().unwrap(), 0);
    assert_eq!(a.undelivered().unwrap(), 0);
    assert_eq!(a.prune(2.0e9).unwrap(), 0, "delivered after the cut: kept");
    assert_eq!(a.prune(4.0e9).unwrap(), 1);

    // The monitor's lease, by the database's clock: one holder at a time; a holder whose
    // lease ran out is fenced.
    let fa = a
        .lease("monitor", "a", 60.0)
        .unwrap()
        .expect("a takes the free lease");
    assert_eq!(fa.epoch, 1);
    assert_eq!(b.lease("monitor", "b", 60.0).unwrap(), None, "a holds it");
    assert_eq!(
        a.lease("monitor", "a", 60.0).unwrap(),
        Some(fa.clone()),
        "renewed"
    );
    // a renews for a moment only, then stops (killed): b takes over once it has run out,
    // with the next epoch.
    assert_eq!(a.lease("monitor", "a", 0.2).unwrap(), Some(fa.clone()));
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert!(
        a.claim(&fa, 2.0e9, 10, 120.0).unwrap().is_none(),
        "a lease that ran out claims no alerts"
    );
    let fb = b
        .lease("monitor", "b", 60.0)
        .unwrap()
        .expect("b takes over");
    assert_eq!(fb.epoch, 2);
    assert_eq!(
        a.lease("monitor", "a", 60.0).unwrap(),
        None,
        "the deposed holder cannot renew"
    );
    let current = b.load("web").unwrap().unwrap();
    let late = act(&current, &Action::Rollback, "monitor", None, 2.0e9).unwrap();
    assert_eq!(
        a.commit(
            current.rollout.version,
            &late,
            &["webhook"],
            2.0e9,
            Some(&fa)
        )
        .unwrap(),
        Committed::Fenced,
        "the deposed leader cannot write"
    );
    assert_eq!(
        b.load("web").unwrap().unwrap(),
        current,
        "nothing was written"
    );
    assert_eq!(
        b.commit(
            current.rollout.version,
            &late,
            &["webhook"],
            2.0e9,
            Some(&fb)
        )
        .unwrap(),
        Committed::Yes
    );
    // The leader claims the new alert: it is not due again for the claim's hold, so a second
    // claim (another leader's after a takeover) does not send it again.
    let claimed = b.claim(&fb, 2.0e9, 10, 120.0).unwrap().expect("held");
    assert_eq!(claimed.len(), 1);
    assert!(b
        .claim(&fb, 2.0e9 + 60.0, 10, 120.0)
        .unwrap()
        .unwrap()
        .is_empty());
    assert_eq!(
        b.claim(&fb, 2.0e9 + 121.0, 10, 120.0)
            .unwrap()
            .unwrap()
            .len(),
        1
    );
    b.release(&fb).unwrap();
    let fa2 = a
        .lease("monitor", "a", 60.0)
        .unwrap()
        .expect("released: free at once");
    assert_eq!(fa2.epoch, 3);
    // b claimed the alert (epoch 2) and stopped: the next leader takes it over at once.
    assert_eq!(a.claim(&fa2, 2.0e9, 10, 120.0).unwrap().unwrap().len(), 1);
    assert!(
        a.claim(&fa2, 2.0e9, 10, 120.0).unwrap().unwrap().is_empty(),
        "but not from itself"
    );
    let fresh = a.claim(&fa2, 2.0e9 + 200.0, 10, 120.0).unwrap().unwrap();
    a.dead(&fresh[0].alert.id, "webhook", "test").unwrap();
    a.release(&fa2).unwrap();
    let fb2 = b.lease("monitor", "b", 60.0).unwrap().unwrap();
    assert!(
        b.claim(&fb2, 2.0e9 + 400.0, 10, 120.0)
            .unwrap()
            .unwrap()
            .is_empty(),
        "a dead letter is not claimed again by a later leader"
    );
}

#[test]
fn postgres_store_version_checks_and_outbox() {
    let pg = Postgres::start();
    only_one_writer_wins(&pg.url);
}

/// Calls do not wait for each other: with one call stuck behind a table lock, another on a
/// different table is answered from another connection of the pool (it used to queue behind
/// the one connection until the stuck statement timed out).
#[test]
fn a_stuck_call_does_not_hold_the_others() {
    use sqlx::Connection;
    let pg = Postgres::start();
    let store = Store::open(&pg.url).unwrap();
    store.create(&Deployment::new(&lb(), 1.0e9)).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut locker = rt.block_on(sqlx::PgConnection::connect(&pg.url)).unwrap();
    rt.block_on(
        sqlx::raw_sql("BEGIN; LOCK TABLE deployments IN ACCESS EXCLUSIVE MODE")
            .execute(&mut locker),
    )
    .unwrap();
    let stuck = {
        let s = store.clone();
        std::thread::spawn(move || s.load("web"))
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(store.lease("other", "me", 5.0).unwrap().is_some());
    assert!(
        !stuck.is_finished(),
        "the lease was answered only after the stuck call ended"
    );
    rt.block_on(sqlx::raw_sql("COMMIT").execute(&mut locker))
        .unwrap();
    assert!(stuck.join().unwrap().unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_is_notified_to_the_listeners() {
    let pg = Postgres::start();
    let mut rx = Store::listen(&pg.url).expect("PostgreSQL listens");
    assert!(Store::listen("sqlite:///tmp/x.db").is_none());
    let url = pg.url.clone();
    // The listener connects on its own thread: give it a moment, then commit from another.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    tokio::task::spawn_blocking(move || {
        let s = Store::open(&url).unwrap();
        let d = s.create(&Deployment::new(&lb(), 1.0e9)).unwrap();
        let o = act(&d, &Action::Pause, "x", None, 1.0e9);
        assert!(o.is_err(), "paused from stable is refused");
        let o = act(
            &d,
            &Action::Shadow {
                pool: vec!["http://127.0.0.1:9002".into()],
                mirror_percentage: 5.0,
                criteria: vec![],
                metrics_urls: Default::default(),
            },
            "x",
            None,
            1.0e9,
        )
        .unwrap();
        assert_eq!(s.commit(0, &o, &[], 1.0e9, None).unwrap(), Committed::Yes);
    })
    .await
    .unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(3), rx.recv())
        .await
        .expect("notified within 3 s");
    assert_eq!(got.as_deref(), Some("web"));
}

#[test]
fn the_store_connects_again_after_postgres_restarts() {
    let pg = Postgres::start();
    let store = Store::open(&pg.url).unwrap();
    store.create(&Deployment::new(&lb(), 1.0e9)).unwrap();
    pg.restart();
    // The first statement may meet the closed connection; the next one connects again.
    let _ = store.load("web");
    assert!(store.load("web").unwrap().is_some());
}

#[test]
fn sqlite_store_version_checks_and_outbox() {
    let dir = tempfile::tempdir().unwrap();
    only_one_writer_wins(&format!("sqlite://{}", dir.path().join("s.db").display()));
}

#[test]
fn a_store_newer_than_the_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let url = format!("sqlite://{}", path.display());
    Store::open(&url).unwrap();
    Store::open(&url).unwrap(); // migrations run once: opening again is a no-op
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("INSERT INTO schema_migrations (version, applied_ms) VALUES (99, 0)")
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
    });
    let err = Store::open(&url).err().expect("refused").to_string();
    assert!(
        err.contains("version 99") && err.contains("upgrade"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plane_over_postgres_runs_a_rollout_and_remembers_it() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let (prod, _) = backend().await;
    let (canary, _) = backend().await;
    let c = config(dir.path(), &prod, Some(pg.url.clone()), None);
    let plane = Plane::start(c.clone()).await.unwrap();
    assert_eq!(plane.store.kind, "postgres");
    plane
        .change(
            "web",
            Action::Shadow {
                pool: vec![canary.clone()],
                mirror_percentage: 10.0,
                criteria: vec!["random".into()],
                metrics_urls: Default::default(),
            },
            "ops",
            None,
        )
        .await
        .unwrap();
    plane
        .change("web", Action::Rollback, "ops", Some("changed my mind"))
        .await
        .unwrap();
    plane.shutdown().await;
    drop(plane);
    // A second start reads the state back from PostgreSQL.
    let plane = Plane::start(c).await.unwrap();
    let d = plane.get("web").await.unwrap();
    assert_eq!(d.rollout.state.as_str(), "removing");
    let h = plane.history("web").await.unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[1].reason, "changed my mind");
    plane.shutdown().await;
    let _: &Path = dir.path();
}

fn weight(s: &shadowtap_serve::Server) -> f64 {
    s.plane.balancers["web"]
        .state
        .routing()
        .config
        .canary
        .as_ref()
        .map_or(-1.0, |c| c.weight)
}

/// Two `serve` instances on one PostgreSQL: a change through either reaches both proxies within
/// a second or so; one instance runs the monitor; when it stops, the other takes over and the
/// shift goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres_follow_the_store_and_hand_the_monitor_over() {
    use std::time::{Duration, Instant};
    let pg = Postgres::start();
    let (prod, _) = backend().await;
    let (canary, _) = backend().await;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut ca = config(da.path(), &prod, Some(pg.url.clone()), None);
    ca.monitor.lease = "2s".into();
    let mut cb = config(db.path(), &prod, Some(pg.url.clone()), None);
    cb.monitor.lease = "2s".into();
    let a = shadowtap_serve::Server::start(ca).await.unwrap();
    wait_leader(&a).await;
    let b = shadowtap_serve::Server::start(cb).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!b.plane.is_leader(), "one leader");
    // A change through the follower: both proxies run it.
    post_ok(
        b.api,
        "/loadbalancer/web/testing",
        serde_json::json!({
            "candidatePool": [canary], "targetTrafficPercentage": 100, "errorRateThreshold": 0.5,
            "latencyThreshold": 5000, "algorithm": "linear", "stepPercentage": 10,
            "initialPercentage": 10, "interval": "1s", "minRequests": 1, "judge": false
        }),
    )
    .await;
    let t0 = Instant::now();
    while weight(&a) != 10.0 {
        assert!(
            t0.elapsed() < Duration::from_millis(2500),
            "a did not follow: {}",
            weight(&a)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(weight(&b), 10.0);
    // Traffic through both proxies; the leader (a) shifts, b follows.
    let (pa, pb) = (a.plane.balancers["web"].addr, b.plane.balancers["web"].addr);
    let load = tokio::spawn(async move {
        for _ in 0..30 {
            traffic(pa, 20, &[]).await;
            traffic(pb, 20, &[]).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let t0 = Instant::now();
    while weight(&b) < 20.0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no shift reached b: {}",
            weight(&b)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The leader stops: b takes the monitor over and the shift goes on.
    a.shutdown().await;
    let t0 = Instant::now();
    while !b.plane.is_leader() {
        assert!(t0.elapsed() < Duration::from_secs(4), "b never took over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at_takeover = weight(&b);
    let t0 = Instant::now();
    while weight(&b) <= at_takeover {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the shift stopped at {at_takeover}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    load.await.unwrap();
    // One history, a chain: no transition lost or written twice across the hand-over.
    let (_, h) = call(b.api, "GET", "/loadbalancer/web/history", None).await;
    let h = h.as_array().unwrap();
    for pair in h.windows(2) {
        assert!(
            pair[0]["version"].as_u64() < pair[1]["version"].as_u64(),
            "{pair:?}"
        );
        assert_eq!(
            pair[0]["trafficPercentage"], pair[1]["trafficFrom"],
            "{pair:?}"
        );
    }
    b.shutdown().await;
}

/// Two instances on hosts with the same name, both listening on `0.0.0.0:7070` (ids made as
/// `shadowtap serve` makes them), renewing the lease over and over: never both leaders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_with_the_same_host_and_address_never_both_lead() {
    use shadowtap_serve::{instance_id, Plane};
    let pg = Postgres::start();
    let (prod, _) = backend().await;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ida, idb) = (
        instance_id("web-1", "0.0.0.0:7070"),
        instance_id("web-1", "0.0.0.0:7070"),
    );
    assert_ne!(ida, idb);
    assert!(ida.starts_with("web-1/0.0.0.0:7070/"), "{ida}");
    let a = Plane::start_as(config(da.path(), &prod, Some(pg.url.clone()), None), ida)
        .await
        .unwrap();
    let b = Plane::start_as(config(db.path(), &prod, Some(pg.url.clone()), None), idb)
        .await
        .unwrap();
    let mut led = [0; 2];
    for _ in 0..20 {
        let (la, lb) = tokio::join!(a.lead(30.0), b.lead(30.0));
        assert!(!(la && lb), "both instances hold the monitor's lease");
        led[0] += la as u32;
        led[1] += lb as u32;
    }
    assert_eq!(
        led.iter().sum::<u32>(),
        20,
        "one of them leads each round: {led:?}"
    );
    assert!(
        led.contains(&20),
        "the lease stays with its holder: {led:?}"
    );
}

/// Two instances on `pg` in front of `prod`: `a` the leader (waited for), `b` the follower;
/// and their directories (kept while they run).
async fn leader_and_follower(
    pg: &Postgres,
    prod: &str,
) -> (
    shadowtap_serve::Server,
    shadowtap_serve::Server,
    [tempfile::TempDir; 2],
) {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = shadowtap_serve::Server::start(config(da.path(), prod, Some(pg.url.clone()), None))
        .await
        .unwrap();
    wait_leader(&a).await;
    let b = shadowtap_serve::Server::start(config(db.path(), prod, Some(pg.url.clone()), None))
        .await
        .unwrap();
    (a, b, [da, db])
}

/// The leader judges every instance's traffic: with all of it going through the follower's
/// proxy, the leader (whose own proxy sees nothing) still shifts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_judges_the_traffic_of_every_instance() {
    use std::time::{Duration, Instant};
    let pg = Postgres::start();
    let (prod, _) = backend().await;
    let (canary, _) = backend().await;
    let (a, b, _dirs) = leader_and_follower(&pg, &prod).await;
    let pb = b.plane.balancers["web"].addr;
    let load = tokio::spawn(async move {
        for _ in 0..60 {
            traffic(pb, 30, &[]).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    post_ok(
        a.api,
        "/loadbalancer/web/testing",
        serde_json::json!({
            "candidatePool": [canary], "targetTrafficPercentage": 100, "errorRateThreshold": 0.5,
            "latencyThreshold": 5000, "algorithm": "linear", "stepPercentage": 10,
            "initialPercentage": 50, "interval": "1s"
        }),
    )
    .await;
    let t0 = Instant::now();
    loop {
        let (_, v) = call(a.api, "GET", "/loadbalancer/web", None).await;
        if v["trafficPercentage"].as_f64().unwrap() > 50.0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the leader never shifted: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, m) = call(a.api, "GET", "/loadbalancer/web/metrics", None).await;
    assert!(
        m["pools"]["candidate"]["requestCount"].as_u64().unwrap() > 0,
        "the leader's window holds the follower's traffic: {m}"
    );
    assert_eq!(
        a.plane.balancers["web"].state.production.total(),
        0,
        "a's proxy saw none"
    );
    load.abort();
    b.shutdown().await;
    a.shutdown().await;
}

/// The shadow gate judges the mirrored pairs of every instance: every request goes through
/// the follower's proxy, the shadow answers 30 ms late, and the leader (whose own proxy
/// mirrors nothing) finds the deviation on the pairs the follower published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_judges_the_mirrored_pairs_of_every_instance() {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};
    let pg = Postgres::start();
    let (prod, _) = backend().await;
    let (shadow_url, shadow) = backend().await;
    shadow.delay_ms.store(30, Ordering::Relaxed);
    let (a, b, _dirs) = leader_and_follower(&pg, &prod).await;
    post_ok(
        a.api,
        "/loadbalancer/web/shadow",
        serde_json::json!({"shadowPool": [shadow_url], "mirrorPercentage": 100}),
    )
    .await;
    let pb = b.plane.balancers["web"].addr;
    let load = tokio::spawn(async move {
        for _ in 0..100 {
            traffic(pb, 20, &[]).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let t0 = Instant::now();
    let v = loop {
        let (_, v) = call(a.api, "GET", "/loadbalancer/web", None).await;
        if v["lastJudgement"]["decision"] == "deviation" {
            break v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the leader found no deviation: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        v["lastJudgement"]["why"]
            .as_str()
            .unwrap()
            .contains("mirrored pairs"),
        "{v}"
    );
    assert_eq!(
        a.plane.balancers["web"].state.production.total(),
        0,
        "a's proxy saw none"
    );
    load.abort();
    b.shutdown().await;
    a.shutdown().await;
}

/// The leader dies without a word (its tasks aborted, its lease left to run out): the other
/// instance takes over within the lease, the shift goes on, and every transition's alert
/// reached the webhook across the two: at least once, a repeat only of one sent as it died.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_dies_is_replaced_within_its_lease_and_no_alert_is_lost() {
    use std::time::{Duration, Instant};
    let pg = Postgres::start();
    let (prod, _) = backend().await;
    let (canary, _) = backend().await;
    let (hook, received) = receiver().await;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut ca = config(da.path(), &prod, Some(pg.url.clone()), Some(&hook));
    ca.monitor.lease = "2s".into();
    let mut cb = config(db.path(), &prod, Some(pg.url.clone()), Some(&hook));
    cb.monitor.lease = "2s".into();
    let a = shadowtap_serve::Server::start(ca).await.unwrap();
    wait_leader(&a).await;
    let b = shadowtap_serve::Server::start(cb).await.unwrap();
    let pb = b.plane.balancers["web"].addr;
    let load = tokio::spawn(async move {
        for _ in 0..100 {
            traffic(pb, 20, &[]).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    post_ok(
        b.api,
        "/loadbalancer/web/testing",
        serde_json::json!({
            "candidatePool": [canary], "targetTrafficPercentage": 100, "errorRateThreshold": 0.5,
            "latencyThreshold": 5000, "algorithm": "linear", "stepPercentage": 5,
            "initialPercentage": 50, "interval": "1s", "judge": false
        }),
    )
    .await;
    let t0 = Instant::now();
    while weight(&b) < 60.0 {
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "no shift: {}",
            weight(&b)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What the webhook had when the leader died: a repeat may only be of one of these.
    let before_crash = received.lock().unwrap().len();
    a.crash().await;
    let died = Instant::now();
    while !b.plane.is_leader() {
        assert!(
            died.elapsed() < Duration::from_secs(4),
            "b did not take over within the lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at_takeover = weight(&b);
    while weight(&b) <= at_takeover {
        assert!(
            died.elapsed() < Duration::from_secs(10),
            "the shift stopped at {at_takeover}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, h) = call(b.api, "GET", "/loadbalancer/web/history", None).await;
    let ids: Vec<String> = h
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| shadowtap_serve::deployment::alerted(r))
        .map(|r| r["transitionId"].as_str().unwrap().to_owned())
        .collect();
    let t0 = Instant::now();
    loop {
        let got = received.lock().unwrap().clone();
        let signed: Vec<&String> = got
            .iter()
            .filter(|(_, s, _)| s != "slack")
            .map(|(id, _, _)| id)
            .collect();
        if ids.iter().all(|id| signed.contains(&id)) {
            // At least once: the leader's tasks aborted between the webhook's 200 and the
            // outbox's mark send that alert again from the new leader (same delivery id), so
            // one repeat is allowed, of an alert first received before the crash.
            let mut repeats = 0;
            for (i, id) in signed.iter().enumerate() {
                if let Some(first) = signed[..i].iter().position(|x| x == id) {
                    repeats += 1;
                    let first_at = got
                        .iter()
                        .enumerate()
                        .filter(|(_, (_, s, _))| s != "slack")
                        .nth(first)
                        .map_or(usize::MAX, |(k, _)| k);
                    assert!(
                        first_at < before_crash,
                        "alert {id} sent twice, not across the crash: {signed:?}"
                    );
                }
            }
            assert!(repeats <= 1, "alerts repeated {repeats} times: {signed:?}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "alerts missing: {ids:?} vs {signed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    load.abort();
    b.shutdown().await;
}

/// The store goes down as the canary starts failing: the proxy is rolled back anyway within
/// two intervals (users stop getting the canary's errors), `/healthz` says the store failed,
/// and once the store is back the rollback is in the history, with when it was applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_rolled_back_while_postgres_is_down() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let (stable_url, _) = backend().await;
    let (canary_url, canary) = backend().await;
    let server =
        shadowtap_serve::Server::start(config(dir.path(), &stable_url, Some(pg.url.clone()), None))
            .await
            .unwrap();
    let api = server.api;
    post_ok(
        api,
        "/loadbalancer/web/testing",
        serde_json::json!({
            "candidatePool": [canary_url], "targetTrafficPercentage": 50,
            "errorRateThreshold": 0.05, "latencyThreshold": 500,
            "algorithm": "linear", "stepPercentage": 1, "initialPercentage": 30, "interval": "1s"
        }),
    )
    .await;
    assert!(weight(&server) >= 30.0);
    pg.stop();
    canary
        .failing
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let proxy = server.plane.balancers["web"].addr;
    let t0 = std::time::Instant::now();
    // Requests go on; the proxy must stop sending them to the canary within two intervals
    // (plus the window's whole second).
    loop {
        traffic(proxy, 20, &[]).await;
        if weight(&server) <= 0.0 {
            break;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(4),
            "still {}% on the failing canary with the store down",
            weight(&server)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let before = canary.real.load(std::sync::atomic::Ordering::Relaxed);
    let statuses = traffic(proxy, 100, &[]).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        canary.real.load(std::sync::atomic::Ordering::Relaxed),
        before,
        "no user request reaches the rolled-back canary"
    );
    // The store is down: health says so (degraded once a call has waited a second or failed,
    // then failed after a lease).
    let client = reqwest::Client::new();
    let t1 = std::time::Instant::now();
    let h = loop {
        let h: serde_json::Value = client
            .get(format!("http://{api}/healthz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if h["store"] != "ok" {
            break h;
        }
        assert!(
            t1.elapsed() < std::time::Duration::from_secs(3),
            "the store is down and /healthz says {h}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(h["localRollbacks"], 1, "{h}");
    // The store comes back: the rollback is stored, and the proxy stays rolled back.
    pg.start_again();
    let t1 = std::time::Instant::now();
    let stored = loop {
        let (status, v) = call(api, "GET", "/loadbalancer/web", None).await;
        if status == 200 && matches!(v["state"].as_str(), Some("removing" | "removed")) {
            break v;
        }
        assert!(
            t1.elapsed() < std::time::Duration::from_secs(20),
            "not stored after the store came back: {status} {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(stored["trafficPercentage"], 0.0, "{stored}");
    let (_, h) = call(api, "GET", "/loadbalancer/web/history", None).await;
    let rollback = h
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["event"] == "rollback")
        .unwrap_or_else(|| panic!("no rollback in {h}"))
        .clone();
    assert_eq!(rollback["actor"], "monitor");
    assert!(
        rollback["reason"]
            .as_str()
            .unwrap()
            .contains("before the store could record it"),
        "{rollback}"
    );
    assert!(weight(&server) <= 0.0);
    server.shutdown().await;
}

/// A monitor decision made on a deployment an operator has changed since is stale: not applied
/// (the next judgement is made on the new state), where it used to be replayed on the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_decision_on_an_old_version_is_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let (prod, _) = backend().await;
    let (canary, _) = backend().await;
    let plane = Plane::start(config(dir.path(), &prod, None, None))
        .await
        .unwrap();
    assert!(plane.lead(5.0).await, "the only instance leads");
    plane
        .change(
            "web",
            Action::Shadow {
                pool: vec![canary.clone()],
                mirror_percentage: 10.0,
                criteria: vec!["random".into()],
                metrics_urls: Default::default(),
            },
            "ops",
            None,
        )
        .await
        .unwrap();
    let judged = plane.get("web").await.unwrap().rollout.version;
    // An operator changes the share meanwhile.
    plane
        .change(
            "web",
            Action::Shadow {
                pool: vec![canary],
                mirror_percentage: 20.0,
                criteria: vec!["random".into()],
                metrics_urls: Default::default(),
            },
            "ops",
            None,
        )
        .await
        .unwrap();
    let note = Action::Note {
        decision: "deviation".into(),
        why: "computed on the old share".into(),
        alert: None,
        progress: shadowtap_control::shift::Progress {
            breaches: 1,
            ..Default::default()
        },
        metrics: serde_json::Value::Null,
    };
    let e = plane
        .change_monitor_on("web", note, judged)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("judged on version"), "{e}");
    let d = plane.get("web").await.unwrap();
    assert_eq!(d.progress.breaches, 0, "the stale decision changed nothing");
    assert_eq!(d.rollout.mirror_percentage, 20.0);
    plane.shutdown().await;
}
