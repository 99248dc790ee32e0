//! The verdict as people and CI systems read it: Markdown (a CI step summary), JUnit XML (one
//! test case per metric and endpoint) and a self-contained HTML page with SVG plots.

use std::fmt::Write as _;

use crate::verdict::{Check, CheckResult, Verdict};

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}%", v * 100.0))
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

/// `latency (p99)`, `error_rate`.
fn label(c: &Check) -> String {
    match &c.quantity {
        Some(q) => format!("{} ({q})", c.metric),
        None => c.metric.clone(),
    }
}

fn value(c: &Check, side: &crate::verdict::SideValue) -> String {
    if c.metric == "latency" && c.quantity.as_deref() == Some("slow_share") {
        format!(
            "{} much slower ({}/{})",
            pct(side.value),
            side.events.unwrap_or(0),
            side.n
        )
    } else if c.metric == "latency" {
        format!("p50 {} ms (n={})", ms(side.value), side.n)
    } else {
        format!(
            "{} ({}/{})",
            pct(side.value),
            side.events.unwrap_or(0),
            side.n
        )
    }
}

fn icon(r: CheckResult) -> &'static str {
    match r {
        CheckResult::Pass => "pass",
        CheckResult::Fail => "**FAIL**",
        CheckResult::Inconclusive => "inconclusive",
    }
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// `report.md`.
pub fn markdown(v: &Verdict) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# shadowtap canary verdict: **{}**\n",
        v.verdict.as_str().to_uppercase()
    );
    let _ = writeln!(
        s,
        "Candidate `{}` vs baseline `{}`; score {} (go at {:.0}, marginal at {:.0}); noise measured by: {}.\n",
        v.candidate,
        v.baseline,
        v.score.map_or("-".into(), |s| format!("{s:.1}")),
        v.thresholds.get("pass").copied().unwrap_or(0.0),
        v.thresholds.get("marginal").copied().unwrap_or(0.0),
        v.noise_source
    );
    for r in &v.reasons {
        let _ = writeln!(s, "- {}", md_escape(r));
    }
    for n in &v.notes {
        let _ = writeln!(s, "- note: {}", md_escape(n));
    }
    if !v.positions.is_empty() {
        let _ = writeln!(s, "\n## Latency by send position\n\nEach request went to the targets in a random order; a large gap between positions means the sending machine or the targets' host was saturated.\n\n| target | position | requests | p50 ms |\n|---|---|---|---|");
        for p in &v.positions {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                md_escape(&p.target),
                p.position,
                p.requests,
                ms(p.p50_ms)
            );
        }
    }
    let failing: Vec<&Check> = v
        .checks
        .iter()
        .filter(|c| c.result == CheckResult::Fail)
        .collect();
    if !failing.is_empty() {
        let _ = writeln!(s, "\n## Failing metrics\n\n| metric | endpoint | baseline | candidate | test | why |\n|---|---|---|---|---|---|");
        for c in failing {
            let _ = writeln!(
                s,
                "| {}{} | `{}` | {} | {} | {} | {} |",
                label(c),
                if c.critical { " (critical)" } else { "" },
                md_escape(&c.endpoint),
                value(c, &c.baseline),
                value(c, &c.candidate),
                c.test.as_ref().map_or("-".into(), |t| format!(
                    "{}{} p={} (adjusted {})",
                    t.name,
                    c.quantity
                        .as_ref()
                        .map_or(String::new(), |q| format!(" {q}")),
                    crate::stats::fmt_p(t.p_value.unwrap_or(1.0)),
                    crate::stats::fmt_p(t.p_adjusted.unwrap_or(1.0))
                )),
                md_escape(&c.explanation)
            );
        }
    }
    let real: Vec<_> = v.fields.iter().filter(|f| !f.noise).collect();
    if !real.is_empty() {
        let _ = writeln!(s, "\n## Differences counted against the candidate\n\n| endpoint | field | candidate rate | noise rate | example (baseline → candidate) |\n|---|---|---|---|---|");
        for f in real.iter().take(20) {
            let ex = f.example.as_ref().map_or("-".into(), |(id, kind, l, r)| {
                format!(
                    "{kind}: `{}` → `{}` ({})",
                    md_escape(l.as_deref().unwrap_or("∅")),
                    md_escape(r.as_deref().unwrap_or("∅")),
                    id.chars().take(12).collect::<String>()
                )
            });
            let _ = writeln!(
                s,
                "| `{}` | `{}` | {} | {} | {} |",
                md_escape(&f.endpoint),
                md_escape(&f.field),
                pct(Some(f.candidate_rate)),
                pct(Some(f.noise_rate)),
                ex
            );
        }
    }
    let noise: Vec<_> = v.fields.iter().filter(|f| f.noise).collect();
    if !noise.is_empty() {
        let _ = writeln!(
            s,
            "\n## Classified as noise\n\n| endpoint | field | why |\n|---|---|---|"
        );
        for f in noise.iter().take(30) {
            let _ = writeln!(
                s,
                "| `{}` | `{}` | {} |",
                md_escape(&f.endpoint),
                md_escape(&f.field),
                md_escape(&f.reason)
            );
        }
    }
    let _ = writeln!(s, "\n## Endpoints\n\n| endpoint | requests (b/c) | errors (b/c) | p50 ms (b/c) | p99 ms (b/c) | differing pairs |\n|---|---|---|---|---|---|");
    for e in &v.endpoints {
        let b = e.targets.get(&v.baseline).cloned().unwrap_or_default();
        let c = e.targets.get(&v.candidate).cloned().unwrap_or_default();
        let _ = writeln!(
            s,
            "| `{}` | {} / {} | {} / {} | {} / {} | {} / {} | {} of {} |",
            md_escape(&e.endpoint),
            b.requests,
            c.requests,
            b.errors,
            c.errors,
            ms(b.p50_ms),
            ms(c.p50_ms),
            ms(b.p99_ms),
            ms(c.p99_ms),
            e.differing_pairs,
            e.pairs
        );
    }
    if let Some(e) = v
        .endpoints
        .iter()
        .filter(|e| e.text_diff.is_some() && e.differing_pairs > 0)
        .max_by_key(|e| e.differing_pairs)
    {
        let _ = writeln!(
            s,
            "\n### Example text diff: `{}`\n\n```diff\n{}\n```",
            e.endpoint,
            e.text_diff.as_deref().unwrap_or("")
        );
    }
    let _ = writeln!(s, "\n## All checks\n\n| result | metric | endpoint | baseline | candidate | explanation |\n|---|---|---|---|---|---|");
    for c in &v.checks {
        let _ = writeln!(
            s,
            "| {} | {} | `{}` | {} | {} | {} |",
            icon(c.result),
            label(c),
            md_escape(&c.endpoint),
            value(c, &c.baseline),
            value(c, &c.candidate),
            md_escape(&c.explanation)
        );
    }
    let _ = writeln!(
        s,
        "\nEvery check's test, thresholds and the SQL behind its inputs are in `verdict.json`."
    );
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `junit.xml`: one test suite per metric, one test case per endpoint. Written by
/// `quick-junit` (cargo-nextest's writer), which escapes markup and drops the characters XML
/// cannot hold (an endpoint named after a path with a control byte stays valid XML).
pub fn junit(v: &Verdict) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut report = Report::new(format!("shadowtap canary: {}", v.verdict.as_str()));
    let mut metrics: Vec<&str> = v.checks.iter().map(|c| c.metric.as_str()).collect();
    metrics.sort_unstable();
    metrics.dedup();
    for m in metrics {
        let mut suite = TestSuite::new(m);
        for c in v.checks.iter().filter(|c| c.metric == m) {
            let status = match c.result {
                CheckResult::Pass => TestCaseStatus::success(),
                CheckResult::Fail => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(c.explanation.as_str())
                        .set_description(format!(
                            "{}\nthreshold: {}\nsql: {}",
                            c.explanation, c.threshold, c.sql
                        ));
                    s
                }
                CheckResult::Inconclusive => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(c.explanation.as_str());
                    s
                }
            };
            let name = match &c.quantity {
                Some(q) => format!("{} ({q})", c.endpoint),
                None => c.endpoint.clone(),
            };
            let mut case = TestCase::new(name, status);
            case.set_classname(format!("shadowtap.{m}"))
                .set_system_out(format!(
                    "baseline {} | candidate {}",
                    value(c, &c.baseline),
                    value(c, &c.candidate)
                ));
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    // Serializing to memory fails only on a writer error, which a String has not.
    report.to_string().unwrap_or_default()
}

/// An SVG plot of latency CDFs (baseline and candidate) for one endpoint.
fn cdf_svg(title: &str, series: &[(&str, &str, &[f64])]) -> String {
    let (w, h, pad) = (420.0, 220.0, 36.0);
    let max = series
        .iter()
        .flat_map(|(_, _, s)| s.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1e-6);
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\"><title>{}</title>", xml(title));
    let _ = write!(
        s,
        "<rect x=\"{pad}\" y=\"10\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>",
        w - pad - 10.0,
        h - pad - 10.0
    );
    let _ = write!(s, "<text x=\"{pad}\" y=\"{}\" font-size=\"10\">0</text><text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{max:.1} ms</text>", h - pad + 14.0, w - 10.0, h - pad + 14.0);
    let _ = write!(s, "<text x=\"4\" y=\"16\" font-size=\"10\">100%</text>");
    for (i, (name, color, samples)) in series.iter().enumerate() {
        if samples.is_empty() {
            continue;
        }
        let n = samples.len() as f64;
        let pts: Vec<String> = samples
            .iter()
            .enumerate()
            .map(|(j, v)| {
                format!(
                    "{:.1},{:.1}",
                    pad + v / max * (w - pad - 10.0),
                    10.0 + (h - pad - 10.0) * (1.0 - (j as f64 + 1.0) / n)
                )
            })
            .collect();
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>",
            pts.join(" ")
        );
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"{color}\">{}</text>",
            pad + 8.0,
            26.0 + 14.0 * i as f64,
            xml(name)
        );
    }
    s.push_str("</svg>");
    s
}

fn bars_svg(title: &str, rows: &[(String, f64, f64)], unit: &str) -> String {
    let bar_h = 14.0;
    let h = 30.0 + rows.len() as f64 * (2.0 * bar_h + 8.0);
    let w = 620.0;
    let label_w = 260.0;
    let max = rows
        .iter()
        .flat_map(|r| [r.1, r.2])
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\"><title>{}</title>", xml(title));
    let _ = write!(
        s,
        "<text x=\"4\" y=\"14\" font-size=\"12\">{}</text>",
        xml(title)
    );
    for (i, (label, b, c)) in rows.iter().enumerate() {
        let y = 24.0 + i as f64 * (2.0 * bar_h + 8.0);
        let _ = write!(
            s,
            "<text x=\"4\" y=\"{}\" font-size=\"10\">{}</text>",
            y + bar_h,
            xml(&label.chars().take(40).collect::<String>())
        );
        for (k, (v, color)) in [(*b, "#4e79a7"), (*c, "#e15759")].iter().enumerate() {
            let yy = y + k as f64 * bar_h;
            let bw = v / max * (w - label_w - 80.0);
            let _ = write!(s, "<rect x=\"{label_w}\" y=\"{yy}\" width=\"{bw:.1}\" height=\"{}\" fill=\"{color}\"/>", bar_h - 2.0);
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{}\" font-size=\"10\">{v:.2}{unit}</text>",
                label_w + bw + 4.0,
                yy + bar_h - 4.0
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// `report.html`: self-contained (no scripts, no external files).
pub fn html(v: &Verdict) -> String {
    let color = match v.verdict {
        crate::verdict::Decision::Go => "#2e7d32",
        crate::verdict::Decision::NoGo => "#c62828",
        crate::verdict::Decision::Marginal => "#ef6c00",
        crate::verdict::Decision::Inconclusive => "#616161",
    };
    let mut s = String::from("<!doctype html><html><head><meta charset=\"utf-8\"><title>shadowtap canary verdict</title><style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}code{font-size:12px}.fail{color:#c62828;font-weight:bold}.grid{display:flex;flex-wrap:wrap;gap:12px}</style></head><body>");
    let _ = write!(
        s,
        "<h1>Verdict: <span style=\"color:{color}\">{}</span></h1><p>Candidate <code>{}</code> vs baseline <code>{}</code>; score {}; noise measured by {}.</p><ul>",
        v.verdict.as_str().to_uppercase(),
        xml(&v.candidate),
        xml(&v.baseline),
        v.score.map_or("-".into(), |s| format!("{s:.1}")),
        xml(&v.noise_source)
    );
    for r in &v.reasons {
        let _ = write!(s, "<li>{}</li>", xml(r));
    }
    s.push_str("</ul><h2>Checks</h2><table><tr><th>result</th><th>metric</th><th>endpoint</th><th>baseline</th><th>candidate</th><th>explanation</th></tr>");
    for c in &v.checks {
        let cls = if c.result == CheckResult::Fail {
            " class=\"fail\""
        } else {
            ""
        };
        let _ = write!(
            s,
            "<tr><td{cls}>{:?}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            c.result,
            xml(&label(c)),
            xml(&c.endpoint),
            xml(&value(c, &c.baseline)),
            xml(&value(c, &c.candidate)),
            xml(&c.explanation)
        );
    }
    s.push_str("</table><h2>Error and difference rates per endpoint</h2><div class=\"grid\">");
    let err_rows: Vec<(String, f64, f64)> = v
        .endpoints
        .iter()
        .map(|e| {
            let r = |t: &str| {
                e.targets.get(t).map_or(0.0, |m| {
                    if m.requests > 0 {
                        100.0 * m.errors as f64 / m.requests as f64
                    } else {
                        0.0
                    }
                })
            };
            (e.endpoint.clone(), r(&v.baseline), r(&v.candidate))
        })
        .collect();
    s.push_str(&bars_svg(
        "error rate (%): baseline (blue) vs candidate (red)",
        &err_rows,
        "%",
    ));
    let diff_rows: Vec<(String, f64, f64)> = v
        .endpoints
        .iter()
        .map(|e| {
            (
                e.endpoint.clone(),
                0.0,
                if e.pairs > 0 {
                    100.0 * e.differing_pairs as f64 / e.pairs as f64
                } else {
                    0.0
                },
            )
        })
        .collect();
    s.push_str(&bars_svg(
        "non-noise difference rate (%) of candidate pairs",
        &diff_rows,
        "%",
    ));
    s.push_str("</div><h2>Latency distributions (CDF)</h2><div class=\"grid\">");
    for e in &v.endpoints {
        let b = e
            .targets
            .get(&v.baseline)
            .map(|m| m.samples_ms.clone())
            .unwrap_or_default();
        let c = e
            .targets
            .get(&v.candidate)
            .map(|m| m.samples_ms.clone())
            .unwrap_or_default();
        let _ = write!(
            s,
            "<figure><figcaption><code>{}</code></figcaption>",
            xml(&e.endpoint)
        );
        s.push_str(&cdf_svg(
            &e.endpoint,
            &[
                (&format!("baseline {}", v.baseline), "#4e79a7", &b),
                (&format!("candidate {}", v.candidate), "#e15759", &c),
            ],
        ));
        s.push_str("</figure>");
    }
    s.push_str("</div><h2>Fields</h2><table><tr><th>endpoint</th><th>field</th><th>counted</th><th>candidate rate</th><th>noise rate</th><th>why</th></tr>");
    for f in &v.fields {
        let _ = write!(
            s,
            "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            xml(&f.endpoint),
            xml(&f.field),
            if f.noise { "noise" } else { "<b>yes</b>" },
            pct(Some(f.candidate_rate)),
            pct(Some(f.noise_rate)),
            xml(&f.reason)
        );
    }
    s.push_str("</table></body></html>\n");
    s
}
