//! The Jupyter notebook, executed headlessly (nbclient) against data made from the bundled demo
//! capture. `scripts/test.sh` creates the virtualenv, sets `SHADOWTAP_NOTEBOOK_PYTHON` and runs
//! it; a plain `cargo test` reports it ignored, and run without the variable it fails.

use std::path::Path;
use std::process::Command;

use crate::canary::{capture, service};

#[test]
#[ignore = "needs the notebook virtualenv: scripts/test.sh creates it and runs this test"]
fn the_notebook_runs_on_a_real_canary_run() {
    let python = std::env::var_os("SHADOWTAP_NOTEBOOK_PYTHON").expect(
        "SHADOWTAP_NOTEBOOK_PYTHON names the virtualenv's python (scripts/test.sh creates it)",
    );
    let dir = tempfile::tempdir().unwrap();
    let cap = capture(dir.path());
    let (b, c) = (
        service(&["--noise"]),
        service(&["--noise", "--change-field", "tier=platinum"]),
    );
    let bin = env!("CARGO_BIN_EXE_shadowtap");
    let rep = dir.path().join("rep");
    let st = Command::new(bin)
        .args([
            "replay",
            "--quiet",
            "--rate",
            "max",
            "--from",
            cap.to_str().unwrap(),
            "--out",
            rep.to_str().unwrap(),
        ])
        .args([
            "--target",
            &format!("baseline={}", b.url),
            "--target",
            &format!("candidate={}", c.url),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let verdict = dir.path().join("verdict");
    let st = Command::new(bin)
        .args([
            "analyze",
            "--capture",
            cap.to_str().unwrap(),
            "--replay",
            rep.to_str().unwrap(),
            "--out",
            verdict.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(1));
    let notebooks = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
    )
    .join("../notebooks");
    let executed = dir.path().join("executed.ipynb");
    let o = Command::new(python)
        .arg(notebooks.join("run.py"))
        .arg(&executed)
        .env("SHADOWTAP_CAPTURE", &cap)
        .env("SHADOWTAP_REPLAY", &rep)
        .env("SHADOWTAP_VERDICT", &verdict)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "notebook failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(&executed).unwrap();
    assert!(text.contains("verdict: no-go"), "the verdict is shown");
    assert!(text.contains("/tier"), "the differing field is shown");
    assert!(
        verdict.join("latency_cdf.png").is_file(),
        "the CDF plot is saved"
    );
}
