//! The unit of analysis: one recorded request sent to baseline, candidate (and second
//! baseline) at the same moment, with what each answered and which fields differed.
//!
//! [`crate::pairs`] builds a [`PairSet`] from the `replays` files; the calibration harness
//! builds one in memory. [`crate::measure`] turns it into measurements.

use std::collections::HashMap;

use crate::diff::{field_pattern, Comparison, DiffKind};

/// What one target answered to one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Obs {
    /// Status; `None` when there was no response (transport error or timeout).
    pub status: Option<u16>,
    /// Total time, µs (for an error, the time until it).
    pub latency_us: Option<i64>,
    /// Position in the send order (0: first), when recorded.
    pub position: Option<u32>,
}

impl Obs {
    /// An answer with this status and latency.
    pub fn answer(status: u16, latency_us: i64) -> Obs {
        Obs {
            status: Some(status),
            latency_us: Some(latency_us),
            position: None,
        }
    }

    /// No answer (refused, reset, timed out).
    pub fn no_answer(latency_us: i64) -> Obs {
        Obs {
            status: None,
            latency_us: Some(latency_us),
            position: None,
        }
    }

    /// Whether an HTTP response came back.
    pub fn answered(&self) -> bool {
        self.status.is_some()
    }

    /// 5xx or no response: what the error rate counts.
    pub fn error(&self) -> bool {
        self.status.is_none_or(|s| s >= 500)
    }

    /// Latency for the latency checks, µs: a request without an answer is censored, worse
    /// than any answer (`+inf`).
    pub fn latency(&self) -> f64 {
        match (self.status, self.latency_us) {
            (Some(_), Some(us)) => (us.max(1)) as f64,
            (Some(_), None) => 1.0,
            (None, _) => f64::INFINITY,
        }
    }
}

/// One request (exchange and pass) across the targets.
#[derive(Debug, Clone, Default)]
pub struct Pair {
    /// Endpoint, an index into [`PairSet::endpoints`].
    pub endpoint: u32,
    /// The exchange (passes of one exchange share it): the cluster for `--loop`.
    pub cluster: u32,
    /// Baseline's answer.
    pub baseline: Obs,
    /// Candidate's answer.
    pub candidate: Obs,
    /// Second baseline's answer, when it ran.
    pub baseline2: Option<Obs>,
    /// The status production answered, when the capture recorded it.
    pub recorded_status: Option<u16>,
    /// Fields (indices into [`PairSet::fields`]) where candidate and baseline differ; `None`
    /// when they were not compared (a side did not answer).
    pub candidate_diff: Option<Vec<u32>>,
    /// Fields where the noise comparison differs (second baseline, or the recorded response,
    /// against the baseline); `None` when not compared.
    pub noise_diff: Option<Vec<u32>>,
}

/// Where noise was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseSource {
    /// A second baseline: two copies of the current version.
    Baseline2,
    /// The production responses in the capture.
    Recorded,
    /// None: every difference counts.
    None,
}

impl NoiseSource {
    /// As written in the verdict.
    pub fn as_str(self) -> &'static str {
        match self {
            NoiseSource::Baseline2 => "baseline2",
            NoiseSource::Recorded => "recorded",
            NoiseSource::None => "none",
        }
    }
}

/// An example difference: exchange id, kind, left value, right value.
pub type Example = (String, String, Option<String>, Option<String>);

/// Every pair of a run, with the interned endpoint and field names.
#[derive(Debug, Clone)]
pub struct PairSet {
    /// Baseline target name.
    pub baseline: String,
    /// Candidate target name.
    pub candidate: String,
    /// Second baseline's name, when it ran.
    pub baseline2: Option<String>,
    /// Where noise was measured.
    pub noise: NoiseSource,
    /// Endpoint names.
    pub endpoints: Vec<String>,
    /// Field patterns and kinds of difference.
    pub fields: Vec<(String, DiffKind)>,
    /// The pairs, grouped by cluster (passes of one exchange next to each other).
    pub pairs: Vec<Pair>,
    /// One example per candidate field (by field index).
    pub examples: HashMap<u32, Example>,
    /// One text diff excerpt per endpoint (by endpoint index).
    pub text_examples: HashMap<u32, String>,
    /// Requests that lacked the baseline or candidate row (not paired).
    pub incomplete: u64,
    /// Of those, requests let go early to keep the waiting rows under the pending budget.
    pub pending_evicted: u64,
    /// Rows that came after their request was let go (not compared).
    pub pending_late: u64,
    /// The most response bytes held at once for requests waiting for another target.
    pub pending_peak_bytes: u64,
    /// Whether the capture's responses were available (for the health guards).
    pub recorded_known: bool,
    endpoint_ids: HashMap<String, u32>,
    field_ids: HashMap<(String, DiffKind), u32>,
    cluster_ids: HashMap<String, u32>,
}

impl PairSet {
    /// An empty set for these targets.
    pub fn new(
        baseline: &str,
        candidate: &str,
        baseline2: Option<&str>,
        noise: NoiseSource,
    ) -> PairSet {
        PairSet {
            baseline: baseline.to_owned(),
            candidate: candidate.to_owned(),
            baseline2: baseline2.map(str::to_owned),
            noise,
            endpoints: Vec::new(),
            fields: Vec::new(),
            pairs: Vec::new(),
            examples: HashMap::new(),
            text_examples: HashMap::new(),
            incomplete: 0,
            pending_evicted: 0,
            pending_late: 0,
            pending_peak_bytes: 0,
            recorded_known: false,
            endpoint_ids: HashMap::new(),
            field_ids: HashMap::new(),
            cluster_ids: HashMap::new(),
        }
    }

    /// The index of an endpoint, added when new.
    pub fn endpoint_id(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.endpoint_ids.get(name) {
            return i;
        }
        let i = self.endpoints.len() as u32;
        self.endpoints.push(name.to_owned());
        self.endpoint_ids.insert(name.to_owned(), i);
        i
    }

    /// Names the endpoints as users do: the user's `routes` first, then parameters inferred
    /// from the traffic among endpoints with fewer than `min_pairs` pairs
    /// ([`crate::template`]). Endpoints that get the same name are merged (their pairs, their
    /// text examples).
    pub fn name_endpoints(&mut self, routes: &crate::template::Routes, min_pairs: u64) {
        let mut counts = vec![0u64; self.endpoints.len()];
        for p in &self.pairs {
            counts[p.endpoint as usize] += 1;
        }
        let routed: Vec<String> = self
            .endpoints
            .iter()
            .map(|e| match e.split_once(' ') {
                Some((method, path)) => routes.endpoint(method, path).unwrap_or_else(|| e.clone()),
                None => e.clone(),
            })
            .collect();
        // Routed endpoints are the user's: inference only among the others.
        let free: Vec<(String, u64)> = routed
            .iter()
            .zip(&self.endpoints)
            .zip(&counts)
            .map(|((r, e), n)| (if r == e { e.clone() } else { String::new() }, *n))
            .collect();
        let inferred = crate::template::infer_parameters(&free, min_pairs);
        let names: Vec<String> = routed
            .into_iter()
            .zip(inferred)
            .zip(&self.endpoints)
            .map(|((r, i), e)| if &r != e { r } else { i })
            .collect();
        if names == self.endpoints {
            return;
        }
        let old = std::mem::take(&mut self.endpoints);
        self.endpoint_ids.clear();
        let map: Vec<u32> = names.iter().map(|n| self.endpoint_id(n)).collect();
        for p in &mut self.pairs {
            p.endpoint = map[p.endpoint as usize];
        }
        let texts = std::mem::take(&mut self.text_examples);
        for (e, t) in texts {
            self.text_examples.entry(map[e as usize]).or_insert(t);
        }
        drop(old);
    }

    /// The index of an exchange (cluster), added when new.
    pub fn cluster_id(&mut self, exchange_id: &str) -> u32 {
        if let Some(&i) = self.cluster_ids.get(exchange_id) {
            return i;
        }
        let i = self.cluster_ids.len() as u32;
        self.cluster_ids.insert(exchange_id.to_owned(), i);
        i
    }

    fn field_id(&mut self, pattern: String, kind: DiffKind) -> u32 {
        let key = (pattern, kind);
        if let Some(&i) = self.field_ids.get(&key) {
            return i;
        }
        let i = self.fields.len() as u32;
        self.fields.push(key.clone());
        self.field_ids.insert(key, i);
        i
    }

    /// The fields of a comparison as interned ids (each field and kind once), keeping an
    /// example of each for the candidate comparison.
    pub fn diff_fields(
        &mut self,
        cmp: &Comparison,
        endpoint: u32,
        example_of: Option<&str>,
    ) -> Vec<u32> {
        let mut ids: Vec<u32> = Vec::new();
        for d in &cmp.differences {
            let id = self.field_id(field_pattern(&d.field), d.kind);
            if ids.contains(&id) {
                continue;
            }
            ids.push(id);
            if let Some(x) = example_of {
                self.examples.entry(id).or_insert_with(|| {
                    let secret = holds_secret(&d.field);
                    (
                        x.to_owned(),
                        d.kind.as_str().to_owned(),
                        masked(d.left.as_deref(), secret),
                        masked(d.right.as_deref(), secret),
                    )
                });
            }
        }
        if let (Some(_), Some(t)) = (example_of, &cmp.text_diff) {
            self.text_examples
                .entry(endpoint)
                .or_insert_with(|| t.clone());
        }
        ids
    }

    /// The fields a comparison contributes to the difference tests: `None` when either side
    /// answered 5xx (the error rate's business: one error page would otherwise count again as
    /// a difference in every field, and against a recorded response at production's error rate
    /// rather than the targets').
    pub fn judged_fields(
        &mut self,
        cmp: &Comparison,
        statuses: (Option<u16>, Option<u16>),
        endpoint: u32,
        example_of: Option<&str>,
    ) -> Option<Vec<u32>> {
        let server_error = |s: Option<u16>| s.is_some_and(|s| s >= 500);
        if server_error(statuses.0) || server_error(statuses.1) {
            return None;
        }
        Some(self.diff_fields(cmp, endpoint, example_of))
    }

    /// For a noise comparison against the recorded production response: a field production's
    /// response lacked (or had and the replayed version lacks) says nothing about whether its
    /// value is stable, so it also counts as noise for `value_changed` on the same path (a
    /// per-request field the recorded version did not have yet is not a regression).
    /// `type_changed` and the other kinds stay uncalibrated by it.
    pub fn absent_fields_as_volatile(&mut self, ids: &mut Vec<u32>) {
        let absent: Vec<String> = ids
            .iter()
            .map(|&i| &self.fields[i as usize])
            .filter(|(_, kind)| matches!(kind, DiffKind::FieldAdded | DiffKind::FieldMissing))
            .map(|(pattern, _)| pattern.clone())
            .collect();
        for pattern in absent {
            let id = self.field_id(pattern, DiffKind::ValueChanged);
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }

    /// Orders the pairs by cluster (stable), as the bootstrap needs.
    pub fn group_by_cluster(&mut self) {
        self.pairs.sort_by_key(|p| p.cluster);
    }
}

/// Whether a difference's field (`/user/token`, `header:set-cookie`) is one secrets live under
/// (the names capture redacts, [`shadowtap_core::secrets`]): its values are not shown in the
/// reports. Replayed responses come from the shadow's own services, whose tokens are secrets
/// too.
fn holds_secret(field: &str) -> bool {
    use shadowtap_core::secrets::Names;
    use std::sync::OnceLock;
    static NAMES: OnceLock<(Names, Names)> = OnceLock::new();
    let (headers, keys) = NAMES.get_or_init(|| (Names::headers(&[]), Names::json_keys(&[])));
    match field.strip_prefix("header:") {
        Some(h) => headers.matches(h),
        None => field
            .rsplit('/')
            .find(|s| !s.is_empty() && *s != "*")
            .is_some_and(|last| keys.matches(last)),
    }
}

/// An example value as the reports show it: a secret's value is masked (an `hmac:` token,
/// already redacted at capture, is kept: it is equal for equal secrets and reveals nothing).
fn masked(value: Option<&str>, secret: bool) -> Option<String> {
    value.map(|v| {
        if secret && !v.trim_matches('"').starts_with("hmac:") {
            "‹redacted›".to_owned()
        } else {
            v.to_owned()
        }
    })
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn examples_of_secret_fields_are_masked() {
        assert!(holds_secret("/session/access_token"));
        assert!(holds_secret("/users/*/password"));
        assert!(holds_secret("header:set-cookie"));
        assert!(!holds_secret("/user/name") && !holds_secret("header:content-type"));
        assert_eq!(
            masked(Some("\"s3cr3t\""), true).as_deref(),
            Some("‹redacted›")
        );
        assert_eq!(
            masked(Some("\"hmac:ab12\""), true).as_deref(),
            Some("\"hmac:ab12\"")
        );
        assert_eq!(masked(Some("gold"), false).as_deref(), Some("gold"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_inferred_parameters_merge_endpoints_and_their_pairs() {
        let mut s = PairSet::new("b", "c", None, NoiseSource::None);
        let push = |s: &mut PairSet, name: &str| {
            let ep = s.endpoint_id(name);
            s.pairs.push(Pair {
                endpoint: ep,
                ..Pair::default()
            });
        };
        for i in 0..12 {
            push(&mut s, &format!("GET /users/name-{}x", (b'a' + i) as char));
        }
        for _ in 0..40 {
            push(&mut s, "GET /shop/products/{id}.json");
            push(&mut s, "GET /api/orders");
        }
        let routes = crate::template::Routes::new(&["/shop/products/{sku}.json".into()]).unwrap();
        s.name_endpoints(&routes, 30);
        let mut names = s.endpoints.clone();
        names.sort();
        assert_eq!(
            names,
            [
                "GET /api/orders",
                "GET /shop/products/{sku}.json",
                "GET /users/{param}"
            ]
        );
        let users = s
            .endpoints
            .iter()
            .position(|e| e == "GET /users/{param}")
            .unwrap() as u32;
        assert_eq!(s.pairs.iter().filter(|p| p.endpoint == users).count(), 12);
    }
}
