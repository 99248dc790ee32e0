//! The external middleware hook (`--middleware CMD`): a long-running process, in any language,
//! that sees every request before it leaves and every response before it is recorded.
//!
//! The protocol is one JSON object per line. shadowtap writes to the process's stdin:
//!
//! ```json
//! {"type":"request","id":1,"exchange_id":"…","method":"GET","path":"/a","query":"x=1","headers":[["Host","h"]],"body":"<base64>"}
//! {"type":"response","id":2,"exchange_id":"…","target":"candidate","status":200,"headers":[["Content-Type","text/plain"]],"body":"<base64>"}
//! ```
//!
//! and reads exactly one line back for each line written, in order: the same object, changed
//! or not (fields left out keep their value), or `{"id":1,"drop":true}` to drop a request.
//! `cat` is a valid middleware that changes nothing. The process's stderr is passed through.
//! A reply that is late (`--middleware-timeout`), malformed, or missing because the process
//! exited fails that request as a `hook` error; nothing is silently skipped. A reply line
//! longer than 64 MiB stops the middleware (every later request is a `hook` error).
//!
//! One process answers one line at a time, in order: a slow reply holds every request behind
//! it, so a middleware bounds how fast a replay can go.

use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use shadowtap_core::Header;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

use crate::request::{OutgoingRequest, ReceivedResponse};

/// The longest reply line read from the middleware (a 16 MiB body is about 22 MiB in base64).
const MAX_REPLY: usize = 64 << 20;

#[derive(Debug, Serialize, Deserialize, Default)]
struct Message {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exchange_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    query: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    headers: Option<Vec<(String, String)>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    drop: bool,
}

/// Distinguishes `"query": null` (remove the query) from a missing field (keep it).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

type Reply = oneshot::Sender<Result<String, String>>;

/// A running middleware process.
pub struct Middleware {
    tx: mpsc::Sender<(String, Reply)>,
    next_id: std::sync::atomic::AtomicU64,
    timeout: Duration,
}

/// What the middleware decided about a request.
#[derive(Debug, PartialEq, Eq)]
pub enum MiddlewareOutcome {
    /// Send.
    Send,
    /// Drop on purpose.
    Drop,
}

fn headers_out(h: &[Header]) -> Vec<(String, String)> {
    h.iter()
        .map(|h| (h.name.to_string(), h.value.to_string()))
        .collect()
}

fn headers_in(h: Vec<(String, String)>) -> Vec<Header> {
    h.into_iter()
        .map(|(name, value)| Header::new(name, value))
        .collect()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(s: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("body is not base64: {e}"))
}

impl Middleware {
    /// Starts `command` through `sh -c`.
    pub fn start(command: &str, timeout: Duration) -> Result<Self, String> {
        let mut child: Child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {command:?}: {e}"))?;
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let (tx, mut rx) = mpsc::channel::<(String, Reply)>(64);
        tokio::spawn(async move {
            let _child = child; // killed when this task ends
            let mut line = String::new();
            while let Some((msg, reply)) = rx.recv().await {
                let sent = async {
                    stdin.write_all(msg.as_bytes()).await?;
                    stdin.write_all(b"\n").await?;
                    stdin.flush().await
                }
                .await;
                if let Err(e) = sent {
                    let _ = reply.send(Err(format!("middleware stdin closed: {e}")));
                    continue;
                }
                line.clear();
                // At most MAX_REPLY bytes per line: a middleware that never ends its line
                // cannot grow this buffer without bound.
                let mut bounded = (&mut stdout).take(MAX_REPLY as u64 + 1);
                match bounded.read_line(&mut line).await {
                    Ok(0) => {
                        let _ = reply.send(Err("middleware exited".into()));
                    }
                    Ok(_) if !line.ends_with('\n') && line.len() > MAX_REPLY => {
                        let _ = reply.send(Err(format!(
                            "middleware reply longer than {} MiB: the middleware is stopped",
                            MAX_REPLY >> 20
                        )));
                        // The rest of that line would be read as the next reply.
                        break;
                    }
                    Ok(_) => {
                        let _ = reply.send(Ok(line.trim_end().to_owned()));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(format!("middleware stdout: {e}")));
                    }
                }
            }
        });
        Ok(Middleware {
            tx,
            next_id: std::sync::atomic::AtomicU64::new(1),
            timeout,
        })
    }

    async fn call(&self, msg: Message) -> Result<Message, String> {
        let id = msg.id;
        let line = serde_json::to_string(&msg).map_err(|e| e.to_string())?;
        let (reply_tx, reply_rx) = oneshot::channel();
        self.tx
            .send((line, reply_tx))
            .await
            .map_err(|_| "middleware stopped".to_string())?;
        let line = tokio::time::timeout(self.timeout, reply_rx)
            .await
            .map_err(|_| format!("middleware did not answer within {:?}", self.timeout))?
            .map_err(|_| "middleware stopped".to_string())??;
        let back: Message = serde_json::from_str(&line)
            .map_err(|e| format!("middleware answered a line that is not a message: {e}"))?;
        if back.id != id {
            return Err(format!(
                "middleware answered id {} to message {id} (one line per line, in order)",
                back.id
            ));
        }
        Ok(back)
    }

    fn id(&self) -> u64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Passes a request through the middleware.
    pub async fn on_request(&self, req: &mut OutgoingRequest) -> Result<MiddlewareOutcome, String> {
        let msg = Message {
            kind: Some("request".into()),
            id: self.id(),
            exchange_id: Some(req.exchange_id.clone()),
            method: Some(req.method.to_string()),
            path: Some(req.path.to_string()),
            query: Some(req.query.as_ref().map(ToString::to_string)),
            headers: Some(headers_out(&req.headers)),
            body: Some(b64(&req.body)),
            ..Message::default()
        };
        let back = self.call(msg).await?;
        if back.drop {
            return Ok(MiddlewareOutcome::Drop);
        }
        if let Some(m) = back.method {
            req.method = m.into();
        }
        if let Some(p) = back.path {
            req.path = if p.starts_with('/') {
                p.into()
            } else {
                format!("/{p}").into()
            };
        }
        if let Some(q) = back.query {
            req.query = q.map(Into::into);
        }
        if let Some(h) = back.headers {
            req.headers = headers_in(h);
        }
        if let Some(b) = back.body {
            req.body = unb64(&b)?;
        }
        Ok(MiddlewareOutcome::Send)
    }

    /// Passes one target's response through the middleware.
    pub async fn on_response(
        &self,
        target: &str,
        req: &OutgoingRequest,
        resp: &mut ReceivedResponse,
    ) -> Result<(), String> {
        let msg = Message {
            kind: Some("response".into()),
            id: self.id(),
            exchange_id: Some(req.exchange_id.clone()),
            target: Some(target.to_owned()),
            status: Some(resp.status),
            headers: Some(headers_out(&resp.headers)),
            body: Some(b64(&resp.body)),
            ..Message::default()
        };
        let back = self.call(msg).await?;
        if let Some(h) = back.headers {
            resp.headers = headers_in(h);
        }
        if let Some(b) = back.body {
            resp.body = unb64(&b)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> OutgoingRequest {
        OutgoingRequest {
            exchange_id: "e".into(),
            method: "GET".into(),
            path: "/a".into(),
            query: Some("q=1".into()),
            headers: vec![Header {
                name: "Host".into(),
                value: "h".into(),
            }],
            body: b"\xff\x00binary".to_vec(),
            delay: Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn cat_changes_nothing() {
        let m = Middleware::start("cat", Duration::from_secs(5)).unwrap();
        let mut r = req();
        assert_eq!(m.on_request(&mut r).await, Ok(MiddlewareOutcome::Send));
        assert_eq!(r, req());
        let mut resp = ReceivedResponse {
            status: 200,
            headers: vec![],
            body: b"x".to_vec(),
        };
        m.on_response("t", &r, &mut resp).await.unwrap();
        assert_eq!(resp.body, b"x");
    }

    #[tokio::test]
    async fn a_dead_or_silent_middleware_fails_the_request() {
        let m = Middleware::start("exit 0", Duration::from_secs(5)).unwrap();
        assert!(m.on_request(&mut req()).await.is_err());
        let m = Middleware::start("sleep 5", Duration::from_millis(200)).unwrap();
        let err = m.on_request(&mut req()).await.unwrap_err();
        assert!(err.contains("did not answer"), "{err}");
    }
}
