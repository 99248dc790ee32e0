//! The script hook (`--script FILE`): Rhai functions that see and change each request before
//! it leaves, and each target's response before it is recorded.
//!
//! ```rhai
//! fn on_request(req) {
//!     // req: #{ exchange_id, method, path, query, headers: [#{name, value}, …], body }
//!     if req.path.starts_with("/admin") { return false; }   // drop this request
//!     set_header(req, "X-Env", "shadow");
//!     req.path.replace("/v1/", "/v2/");                      // in place, as Rhai's replace is
//!     req                                                   // send it (changed)
//! }
//!
//! fn on_response(req, resp) {
//!     // resp: #{ target, status, headers, body }; return it to record it (changed)
//!     remove_header(resp, "Date");
//!     resp
//! }
//! ```
//!
//! `body` is a string when the bytes are UTF-8, a blob otherwise; `query` is `()` when absent.
//! Returning `()` keeps the request or response as it was. Helpers: `header(m, name)`,
//! `set_header(m, name, value)`, `remove_header(m, name)`. Scripts run in Rhai's sandbox (no
//! file, network or process access) with an operation limit per call, so a runaway loop fails
//! that one request (recorded as a `hook` error) instead of hanging the replay.

use rhai::{Array, Dynamic, Engine, Map, Scope, AST};

use crate::request::{OutgoingRequest, ReceivedResponse};
use shadowtap_core::Header;

/// A compiled script.
pub struct ScriptHook {
    engine: Engine,
    ast: AST,
    on_request: bool,
    on_response: bool,
}

/// What the script decided about a request.
#[derive(Debug, PartialEq, Eq)]
pub enum ScriptOutcome {
    /// Send.
    Send,
    /// Drop on purpose.
    Drop,
}

fn headers_to_dynamic(headers: &[Header]) -> Dynamic {
    let arr: Array = headers
        .iter()
        .map(|h| {
            let mut m = Map::new();
            m.insert("name".into(), h.name.as_str().into());
            m.insert("value".into(), h.value.as_str().into());
            Dynamic::from_map(m)
        })
        .collect();
    Dynamic::from_array(arr)
}

fn headers_from_dynamic(d: Dynamic) -> Result<Vec<Header>, String> {
    let arr = d
        .into_array()
        .map_err(|t| format!("headers must be an array of #{{name, value}} maps, not {t}"))?;
    arr.into_iter()
        .map(|h| {
            let m = h
                .try_cast::<Map>()
                .ok_or("each header must be a #{name, value} map")?;
            let get = |k: &str| {
                m.get(k)
                    .map(|v| v.to_string())
                    .ok_or(format!("a header map has no `{k}`"))
            };
            Ok(Header::new(get("name")?, get("value")?))
        })
        .collect()
}

fn body_to_dynamic(body: &[u8]) -> Dynamic {
    match std::str::from_utf8(body) {
        Ok(s) => s.to_owned().into(),
        Err(_) => Dynamic::from_blob(body.to_vec()),
    }
}

fn body_from_dynamic(d: Dynamic) -> Result<Vec<u8>, String> {
    if d.is_blob() {
        return d.into_blob().map_err(|t| t.to_owned());
    }
    d.into_string()
        .map(String::into_bytes)
        .map_err(|t| format!("body must be a string or a blob, not {t}"))
}

fn find_header(m: &mut Map, name: &str) -> Option<String> {
    let arr = m.get("headers")?.clone().into_array().ok()?;
    arr.into_iter()
        .filter_map(|h| h.try_cast::<Map>())
        .find_map(|h| {
            let n = h.get("name")?.to_string();
            n.eq_ignore_ascii_case(name)
                .then(|| h.get("value").map(|v| v.to_string()))
                .flatten()
        })
}

fn edit_headers(m: &mut Map, f: impl FnOnce(&mut Vec<Header>)) {
    let current = m
        .get("headers")
        .cloned()
        .unwrap_or_else(|| Dynamic::from_array(Array::new()));
    if let Ok(mut hs) = headers_from_dynamic(current) {
        f(&mut hs);
        m.insert("headers".into(), headers_to_dynamic(&hs));
    }
}

impl ScriptHook {
    /// Compiles `source`; `max_operations` bounds the work of each call.
    pub fn new(source: &str, max_operations: u64) -> Result<Self, String> {
        let mut engine = Engine::new();
        engine.set_max_operations(max_operations);
        engine.set_max_call_levels(64);
        engine.set_max_string_size(64 << 20);
        engine.set_max_array_size(1 << 20);
        engine.set_max_map_size(1 << 16);
        engine.register_fn("header", |m: &mut Map, name: &str| -> Dynamic {
            find_header(m, name).map_or(Dynamic::UNIT, Dynamic::from)
        });
        engine.register_fn("set_header", |m: &mut Map, name: &str, value: &str| {
            edit_headers(m, |hs| crate::request::set_header(hs, name, value));
        });
        engine.register_fn("remove_header", |m: &mut Map, name: &str| {
            edit_headers(m, |hs| crate::request::remove_header(hs, name));
        });
        let ast = engine.compile(source).map_err(|e| e.to_string())?;
        let has = |name: &str, params: usize| {
            ast.iter_functions()
                .any(|f| f.name == name && f.params.len() == params)
        };
        let (on_request, on_response) = (has("on_request", 1), has("on_response", 2));
        if !on_request && !on_response {
            return Err(
                "the script defines neither fn on_request(req) nor fn on_response(req, resp)"
                    .into(),
            );
        }
        Ok(ScriptHook {
            engine,
            ast,
            on_request,
            on_response,
        })
    }

    /// True when the script has `on_response`.
    pub fn has_on_response(&self) -> bool {
        self.on_response
    }

    fn request_map(req: &OutgoingRequest) -> Map {
        let mut m = Map::new();
        m.insert("exchange_id".into(), req.exchange_id.clone().into());
        m.insert("method".into(), req.method.as_str().into());
        m.insert("path".into(), req.path.as_str().into());
        m.insert(
            "query".into(),
            req.query
                .as_deref()
                .map_or(Dynamic::UNIT, |q| Dynamic::from(q.to_owned())),
        );
        m.insert("headers".into(), headers_to_dynamic(&req.headers));
        m.insert("body".into(), body_to_dynamic(&req.body));
        m
    }

    /// Runs `on_request`; errors are the script's, in words.
    pub fn on_request(&self, req: &mut OutgoingRequest) -> Result<ScriptOutcome, String> {
        if !self.on_request {
            return Ok(ScriptOutcome::Send);
        }
        let out: Dynamic = self
            .engine
            .call_fn(
                &mut Scope::new(),
                &self.ast,
                "on_request",
                (Dynamic::from_map(Self::request_map(req)),),
            )
            .map_err(|e| format!("on_request: {e}"))?;
        if out.is_unit() {
            return Ok(ScriptOutcome::Send);
        }
        if let Ok(b) = out.as_bool() {
            return Ok(if b {
                ScriptOutcome::Send
            } else {
                ScriptOutcome::Drop
            });
        }
        let type_name = out.type_name();
        let mut m = out.try_cast::<Map>().ok_or_else(|| format!("on_request returned a {type_name}; return the request map, false to drop, or nothing"))?;
        let text = |m: &mut Map, k: &str| m.remove(k).map(|v| v.to_string());
        if let Some(v) = text(&mut m, "method") {
            req.method = v.into();
        }
        if let Some(v) = text(&mut m, "path") {
            req.path = if v.starts_with('/') {
                v.into()
            } else {
                format!("/{v}").into()
            };
        }
        if let Some(q) = m.remove("query") {
            req.query = if q.is_unit() {
                None
            } else {
                Some(q.to_string().into())
            };
        }
        if let Some(h) = m.remove("headers") {
            req.headers = headers_from_dynamic(h).map_err(|e| format!("on_request: {e}"))?;
        }
        if let Some(b) = m.remove("body") {
            req.body = body_from_dynamic(b).map_err(|e| format!("on_request: {e}"))?;
        }
        Ok(ScriptOutcome::Send)
    }

    /// Runs `on_response` for one target's response.
    pub fn on_response(
        &self,
        target: &str,
        req: &OutgoingRequest,
        resp: &mut ReceivedResponse,
    ) -> Result<(), String> {
        if !self.on_response {
            return Ok(());
        }
        let mut m = Map::new();
        m.insert("target".into(), target.to_owned().into());
        m.insert("status".into(), Dynamic::from(i64::from(resp.status)));
        m.insert("headers".into(), headers_to_dynamic(&resp.headers));
        m.insert("body".into(), body_to_dynamic(&resp.body));
        let out: Dynamic = self
            .engine
            .call_fn(
                &mut Scope::new(),
                &self.ast,
                "on_response",
                (
                    Dynamic::from_map(Self::request_map(req)),
                    Dynamic::from_map(m),
                ),
            )
            .map_err(|e| format!("on_response: {e}"))?;
        if out.is_unit() {
            return Ok(());
        }
        let type_name = out.type_name();
        let mut m = out.try_cast::<Map>().ok_or_else(|| {
            format!("on_response returned a {type_name}; return the response map or nothing")
        })?;
        if let Some(h) = m.remove("headers") {
            resp.headers = headers_from_dynamic(h).map_err(|e| format!("on_response: {e}"))?;
        }
        if let Some(b) = m.remove("body") {
            resp.body = body_from_dynamic(b).map_err(|e| format!("on_response: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn req() -> OutgoingRequest {
        OutgoingRequest {
            exchange_id: "e".into(),
            method: "GET".into(),
            path: "/v1/a".into(),
            query: None,
            headers: vec![Header {
                name: "Host".into(),
                value: "h".into(),
            }],
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    #[test]
    fn changes_drops_and_keeps() {
        let s = ScriptHook::new(
            r#"
            fn on_request(req) {
                if req.path == "/drop" { return false; }
                if req.path == "/keep" { return; }
                set_header(req, "X-Env", "shadow");
                req.path.replace("/v1/", "/v2/");   // Rhai's replace works in place
                req.query = "from=script";
                req
            }"#,
            10_000,
        )
        .unwrap();
        let mut r = req();
        assert_eq!(s.on_request(&mut r), Ok(ScriptOutcome::Send));
        assert_eq!(
            (r.path.as_str(), r.query.as_deref(), r.header("x-env")),
            ("/v2/a", Some("from=script"), Some("shadow"))
        );
        let mut d = req();
        d.path = "/drop".into();
        assert_eq!(s.on_request(&mut d), Ok(ScriptOutcome::Drop));
        let mut k = req();
        k.path = "/keep".into();
        assert_eq!(s.on_request(&mut k), Ok(ScriptOutcome::Send));
        assert_eq!(k, {
            let mut x = req();
            x.path = "/keep".into();
            x
        });
    }

    #[test]
    fn a_runaway_script_fails_that_call_only() {
        let s = ScriptHook::new("fn on_request(req) { loop { } }", 5_000).unwrap();
        let err = s.on_request(&mut req()).unwrap_err();
        assert!(err.to_lowercase().contains("too many operations"), "{err}");
    }

    #[test]
    fn response_hook_and_missing_functions() {
        let s = ScriptHook::new(
            r#"fn on_response(req, resp) { remove_header(resp, "date"); resp.body = "n"; resp }"#,
            10_000,
        )
        .unwrap();
        let mut resp = ReceivedResponse {
            status: 200,
            headers: vec![Header {
                name: "Date".into(),
                value: "x".into(),
            }],
            body: b"y".to_vec(),
        };
        s.on_response("candidate", &req(), &mut resp).unwrap();
        assert!(resp.headers.is_empty());
        assert_eq!(resp.body, b"n");
        assert!(ScriptHook::new("fn other() {}", 10).is_err());
        assert!(ScriptHook::new("fn on_request(req) {", 10).is_err());
    }
}
