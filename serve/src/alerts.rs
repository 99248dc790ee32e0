//! Alert delivery from the store's outbox. A change writes its alerts in its own transaction
//! (one row per sink); this loop sends what is due, marks it delivered on a 2xx, and otherwise
//! retries with exponential backoff (1 s doubling, at most 5 minutes). A restart resumes from
//! the outbox, so an alert is neither lost nor sent again once delivered; the delivery id
//! (`X-Shadowtap-Delivery`, the transition's id) is the same on every try, so a receiver that
//! saw a try whose answer was lost can drop the repeat.
//!
//! The generic webhook gets the alert as JSON, signed: `X-Shadowtap-Signature:
//! sha256=<hex HMAC-SHA256 of the body with the configured secret>`. The Slack-compatible one
//! gets `{"text": …}`. Alertmanager gets its v2 API's alert list (`POST /api/v2/alerts`,
//! [`alertmanager_body`]): the problems only (rollback, degraded, deviation, breach, silent),
//! labelled `alertname`, `loadbalancer`, `kind`, `severity`; a recovery resolves the degraded
//! alert (`endsAt`). Delivered alerts are kept a week in the outbox, then forgotten (the
//! history keeps every transition).

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::watch;

use crate::deployment::Alert;
use crate::plane::{now, Plane};
use crate::store::Pending;

/// The signature header's value for `body`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The Alertmanager alert list for `alert` raised at `at` (RFC 3339), or none when its kind
/// is news, not a problem (a shift, a transition, live, removed): those go to the webhook and
/// Slack only.
pub fn alertmanager_body(alert: &Alert, at: &str) -> Option<serde_json::Value> {
    let (kind, severity, resolved) = match alert.kind.as_str() {
        "rollback" => ("rollback", "critical", false),
        "degraded" => ("degraded", "critical", false),
        "deviation" => ("deviation", "warning", false),
        "breach" => ("breach", "warning", false),
        "silent" => ("silent", "warning", false),
        // The same labels as the degraded alert: Alertmanager resolves it.
        "recovered" => ("degraded", "critical", true),
        _ => return None,
    };
    let name: String = kind[..1].to_uppercase() + &kind[1..];
    let mut a = serde_json::json!({
        "labels": {
            "alertname": format!("Shadowtap{name}"),
            "loadbalancer": alert.loadbalancer,
            "kind": kind,
            "severity": severity,
            "service": "shadowtap",
        },
        "annotations": {
            "summary": alert.text,
            "delivery": alert.id,
        },
        "startsAt": at,
    });
    if resolved {
        a["endsAt"] = at.into();
    }
    Some(serde_json::json!([a]))
}

/// Tries after which an alert is a dead letter (1 s doubling to 5 min: about an hour).
pub const DEAD_AFTER: u32 = 20;

/// Alerts claimed at a time, and how long a claim keeps them from being due again: longer
/// than sending them all can take (10 s per try), so two leaders (one deposed while sending)
/// do not both send an alert; a leader that dies with a claim leaves its alerts to the next
/// after `CLAIM_HOLD`.
const CLAIM: i64 = 10;
const CLAIM_HOLD: f64 = 120.0;

/// Seconds to wait after `attempts` failed tries.
pub fn backoff(attempts: u32) -> f64 {
    2f64.powi(attempts.min(9) as i32).min(300.0)
}

async fn send(
    client: &reqwest::Client,
    plane: &Plane,
    secret: &[u8],
    p: &Pending,
) -> Result<(), String> {
    let (url, body, signed) = match p.sink.as_str() {
        "webhook" => (
            plane.config.alerts.webhook_url.clone(),
            serde_json::to_vec(&p.alert).expect("alert serialises"),
            true,
        ),
        "slack" => (
            plane.config.alerts.slack_url.clone(),
            serde_json::to_vec(&serde_json::json!({ "text": p.alert.text }))
                .expect("json serialises"),
            false,
        ),
        "alertmanager" => {
            let at = p
                .alert
                .transition
                .as_ref()
                .map_or_else(|| crate::deployment::rfc3339(now()), |t| t.at.clone());
            let Some(body) = alertmanager_body(&p.alert, &at) else {
                // News, not a problem: nothing to send, delivered.
                return Ok(());
            };
            (
                plane
                    .config
                    .alerts
                    .alertmanager_url
                    .as_ref()
                    .map(|u| format!("{}/api/v2/alerts", u.trim_end_matches('/'))),
                serde_json::to_vec(&body).expect("json serialises"),
                false,
            )
        }
        other => return Err(format!("unknown sink {other}")),
    };
    let Some(url) = url else {
        return Err(format!("no {} URL configured any more", p.sink));
    };
    let mut req = client
        .post(&url)
        .header("content-type", "application/json")
        .header("x-shadowtap-delivery", &p.alert.id)
        .header("x-shadowtap-attempt", (p.attempts + 1).to_string());
    if signed {
        req = req.header("x-shadowtap-signature", signature(secret, &body));
    }
    let resp = req.body(body).send().await.map_err(|e| {
        // The URL may hold a token: name the error's kind only.
        if e.is_timeout() {
            "timed out".to_owned()
        } else if e.is_connect() {
            "could not connect".to_owned()
        } else {
            "request failed".to_owned()
        }
    })?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("answered {}", resp.status().as_u16()))
    }
}

/// Sends due alerts until `stop`.
pub async fn run(plane: Arc<Plane>, mut stop: watch::Receiver<bool>) {
    if plane.sinks.is_empty() {
        return;
    }
    let secret = match &plane.config.alerts.webhook_secret_file {
        Some(f) => match std::fs::read(f) {
            Ok(s) => s.trim_ascii().to_vec(),
            Err(e) => {
                eprintln!(
                    "shadowtap serve: alerts: {}: {e}; webhooks are not sent",
                    f.display()
                );
                return;
            }
        },
        None => Vec::new(),
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shadowtap serve: alerts: no HTTP client: {e}");
            return;
        }
    };
    let mut pruned = 0.0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.changed() => return,
        }
        // Alerts go out once: from the instance running the monitor, and only while the
        // store says it still does (its fence), like the monitor's writes.
        let Some(fence) = plane.fence() else {
            continue;
        };
        if now() - pruned > 3600.0 {
            pruned = now();
            let _ = plane.store.call(|s| s.prune(now() - 7.0 * 86_400.0)).await;
        }
        let due = match plane
            .store
            .call(move |s| s.claim(&fence, now(), CLAIM, CLAIM_HOLD))
            .await
        {
            Ok(Some(d)) => d,
            Ok(None) => {
                plane.deposed();
                continue;
            }
            Err(e) => {
                eprintln!("shadowtap serve: alerts: {e}");
                continue;
            }
        };
        for p in due {
            let result = send(&client, &plane, &secret, &p).await;
            let (id, sink) = (p.alert.id.clone(), p.sink.clone());
            let written = match result {
                Ok(()) => {
                    plane
                        .store
                        .call(move |s| s.delivered(&id, &sink, now()))
                        .await
                }
                Err(why) => {
                    tracing::warn!(id = p.alert.id, sink = p.sink, "alert not delivered: {why}");
                    // A sink this instance cannot send to, or an alert that failed for about an
                    // hour: a dead letter, kept and counted (`/metrics`), no longer retried.
                    let permanent = why.starts_with("unknown sink") || why.starts_with("no ");
                    if permanent || p.attempts + 1 >= DEAD_AFTER {
                        eprintln!(
                            "shadowtap serve: alerts: {} to {}: dead letter after {} attempts: {why}",
                            p.alert.id,
                            p.sink,
                            p.attempts + 1
                        );
                        plane.store.call(move |s| s.dead(&id, &sink, &why)).await
                    } else {
                        let next = now() + backoff(p.attempts);
                        plane
                            .store
                            .call(move |s| s.failed(&id, &sink, next, &why))
                            .await
                    }
                }
            };
            if let Err(e) = written {
                eprintln!("shadowtap serve: alerts: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_rfc_4231s_hmac() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn alertmanager_gets_problems_and_a_recovery_resolves_the_degraded_alert() {
        let alert = |kind: &str| Alert {
            id: "web-7".into(),
            loadbalancer: "web".into(),
            kind: kind.into(),
            text: "web: degraded".into(),
            transition: None,
        };
        let at = "2026-12-07T10:00:00.000Z";
        let fired = alertmanager_body(&alert("degraded"), at).unwrap();
        assert_eq!(fired[0]["labels"]["alertname"], "ShadowtapDegraded");
        assert_eq!(fired[0]["labels"]["severity"], "critical");
        assert!(fired[0].get("endsAt").is_none());
        let resolved = alertmanager_body(&alert("recovered"), at).unwrap();
        assert_eq!(resolved[0]["labels"], fired[0]["labels"]);
        assert_eq!(resolved[0]["endsAt"], at);
        for news in ["shift", "transition", "live", "removed"] {
            assert!(alertmanager_body(&alert(news), at).is_none(), "{news}");
        }
    }

    #[test]
    fn backoff_doubles_and_stops_at_five_minutes() {
        assert_eq!(backoff(0), 1.0);
        assert_eq!(backoff(3), 8.0);
        assert_eq!(backoff(20), 300.0);
    }
}
