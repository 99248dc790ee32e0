//! Recordings, replays and verdicts on object storage, against a real S3-compatible server
//! (moto) on loopback: the whole pipeline on `s3://` gives what it gives on disk, partial
//! uploads are never visible, credentials come from the environment or the profile files.

use std::path::Path;
use std::process::{Command, Output};

use crate::canary::{capture, service};
use crate::s3::S3;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shadowtap"))
}

/// `shadowtap` with the server's environment and `tmp` as TMPDIR (to see staging directories).
fn run(s3: &S3, tmp: &Path, args: &[&str]) -> Output {
    let o = bin()
        .args(args)
        .envs(s3.env())
        .env("TMPDIR", tmp)
        .env("XDG_CACHE_HOME", tmp.join("cache"))
        .output()
        .unwrap();
    o
}

fn ok(o: Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success() || o.status.code() == Some(0),
        "{what}: {err}"
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn query(s3: &S3, tmp: &Path, data: &str, sql: &str) -> String {
    ok(
        run(s3, tmp, &["query", "--data", data, "--format", "csv", sql]),
        sql,
    )
}

fn staging_dirs(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("shadowtap-upload-"))
        .collect()
}

#[test]
#[ignore = "needs moto_server: scripts/test.sh installs it and runs this test"]
fn capture_replay_analyze_on_s3_equal_the_same_run_on_disk() {
    let s3 = S3::start();
    s3.bucket("rec");
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let (b, c) = (service(&[]), service(&["--error-percent", "30"]));
    let pcap = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo/api.pcap");
    let targets = [
        format!("baseline={}", b.url),
        format!("candidate={}", c.url),
    ];

    // On disk.
    let cap = capture(dir.path());
    let rep = dir.path().join("rep");
    let ver = dir.path().join("ver");
    let replay = |from: &str, out: &str| {
        let args = [
            "replay",
            "--quiet",
            "--from",
            from,
            "--out",
            out,
            "--rate",
            "max",
            "--timeout",
            "5s",
            "--run-id",
            "r1",
            "--target",
            &targets[0],
            "--target",
            &targets[1],
        ];
        ok(run(&s3, &tmp, &args), "replay");
    };
    replay(cap.to_str().unwrap(), rep.to_str().unwrap());
    let local_code = run(
        &s3,
        &tmp,
        &[
            "analyze",
            "--capture",
            cap.to_str().unwrap(),
            "--replay",
            rep.to_str().unwrap(),
            "--out",
            ver.to_str().unwrap(),
        ],
    )
    .status
    .code();

    // The same on s3://.
    ok(
        run(
            &s3,
            &tmp,
            &[
                "capture",
                "--quiet",
                "--read",
                pcap.to_str().unwrap(),
                "--out",
                "s3://rec/cap",
            ],
        ),
        "capture to s3",
    );
    replay("s3://rec/cap", "s3://rec/rep/");
    let remote = run(
        &s3,
        &tmp,
        &[
            "analyze",
            "--capture",
            "s3://rec/cap",
            "--replay",
            "s3://rec/rep",
            "--out",
            "s3://rec/ver",
            "--json",
        ],
    );
    assert_eq!(
        remote.status.code(),
        local_code,
        "{}",
        String::from_utf8_lossy(&remote.stderr)
    );
    assert_eq!(local_code, Some(1), "a 30% error candidate is no-go");
    let stderr = String::from_utf8_lossy(&remote.stderr);
    assert!(
        stderr.contains("wrote        s3://rec/ver/verdict.json"),
        "{stderr}"
    );

    // What landed: complete files only, under the names a local run gives them.
    let keys = s3.keys("rec", "");
    for k in &keys {
        assert!(
            !k.split('/').any(|p| p.starts_with('.')),
            "a hidden object: {k}"
        );
    }
    let under = |p: &str| keys.iter().filter(|k| k.starts_with(p)).count();
    assert!(under("cap/exchanges-") >= 1, "{keys:?}");
    assert!(
        keys.iter()
            .any(|k| k.starts_with("cap/capture-") && k.ends_with(".summary.json")),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"rep/replay-r1.summary.json".to_owned()),
        "{keys:?}"
    );
    for f in ["verdict.json", "report.md", "junit.xml", "report.html"] {
        assert!(keys.contains(&format!("ver/{f}")), "{f}: {keys:?}");
    }
    assert!(under("ver/diffs-") >= 1, "{keys:?}");
    assert!(
        staging_dirs(&tmp).is_empty(),
        "staging left: {:?}",
        staging_dirs(&tmp)
    );

    // The same rows, read in place by `query --data s3://…` and from disk.
    let sql = "SELECT exchange_id, method, uri, status, latency_us, length(response_body) AS body FROM exchanges ORDER BY exchange_id";
    let (l, r) = (
        query(&s3, &tmp, cap.to_str().unwrap(), sql),
        query(&s3, &tmp, "s3://rec/cap", sql),
    );
    assert!(l.lines().count() > 100, "{l}");
    assert_eq!(l, r);
    let sql = "SELECT target, pass, exchange_id, method, path FROM replays ORDER BY 1, 2, 3";
    assert_eq!(
        query(&s3, &tmp, rep.to_str().unwrap(), sql),
        query(&s3, &tmp, "s3://rec/rep", sql)
    );
    let sql = "SELECT target, count(*), count(status) FROM replays GROUP BY 1 ORDER BY 1";
    assert_eq!(
        query(&s3, &tmp, rep.to_str().unwrap(), sql),
        query(&s3, &tmp, "s3://rec/rep", sql)
    );
    let local: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ver.join("verdict.json")).unwrap()).unwrap();
    let remote: serde_json::Value = serde_json::from_slice(&remote.stdout).unwrap();
    assert_eq!(local["verdict"], remote["verdict"]);
    assert_eq!(local["noise_source"], remote["noise_source"]);
    assert_eq!(local["diff_rows"], remote["diff_rows"]);
    let failing = |v: &serde_json::Value| {
        let mut f: Vec<String> = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["result"] == "fail")
            .map(|c| format!("{} {}", c["metric"], c["endpoint"]))
            .collect();
        f.sort();
        f
    };
    assert_eq!(failing(&local), failing(&remote));
    assert!(!failing(&remote).is_empty());

    // A second analysis replaces the diffs, as on disk.
    let before = s3.keys("rec", "ver/diffs-");
    let second = run(
        &s3,
        &tmp,
        &[
            "analyze",
            "--capture",
            "s3://rec/cap",
            "--replay",
            "s3://rec/rep",
            "--out",
            "s3://rec/ver",
        ],
    );
    assert_eq!(
        second.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let after = s3.keys("rec", "ver/diffs-");
    assert_eq!(before.len(), after.len(), "{before:?} {after:?}");
    assert_ne!(before, after, "the old diffs are gone");

    // Hive partitions: the same keys as on disk, the same `date` and `hour` columns.
    let part = dir.path().join("part");
    for out in [part.to_str().unwrap(), "s3://rec/part"] {
        ok(
            run(
                &s3,
                &tmp,
                &[
                    "capture",
                    "--quiet",
                    "--read",
                    pcap.to_str().unwrap(),
                    "--partition-by",
                    "hour",
                    "--out",
                    out,
                ],
            ),
            "partitioned capture",
        );
    }
    let keys = s3.keys("rec", "part/");
    assert!(
        keys.iter().any(|k| k.starts_with("part/date=")
            && k.contains("/hour=")
            && k.contains("/exchanges-")),
        "{keys:?}"
    );
    let sql = "SELECT date, hour, count(*) AS n FROM exchanges GROUP BY 1, 2 ORDER BY 1, 2";
    let l = query(&s3, &tmp, part.to_str().unwrap(), sql);
    assert!(l.lines().count() > 1, "{l}");
    assert_eq!(l, query(&s3, &tmp, "s3://rec/part", sql));

    // `gate` from and to the bucket: replays under OUT/replay, the reports at the top.
    let burl = b.url.clone();
    let curl = c.url.clone();
    let gate = run(
        &s3,
        &tmp,
        &[
            "gate",
            "--capture",
            "s3://rec/cap",
            "--baseline-url",
            &burl,
            "--candidate-url",
            &curl,
            "--rate",
            "max",
            "--out",
            "s3://rec/gate",
        ],
    );
    assert_eq!(
        gate.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&gate.stderr)
    );
    let keys = s3.keys("rec", "gate/");
    assert!(keys.contains(&"gate/verdict.json".to_owned()), "{keys:?}");
    assert!(
        keys.iter().any(|k| k.starts_with("gate/replay/replays-")),
        "{keys:?}"
    );
    assert!(
        staging_dirs(&tmp).is_empty(),
        "staging left: {:?}",
        staging_dirs(&tmp)
    );
}

/// An upload that never completes (the process died, the network went) leaves no object: a
/// multipart upload is visible only once completed. This is what every upload of shadowtap
/// above 8 MiB is; smaller files go in one request, which S3 also applies whole or not at all.
#[test]
#[ignore = "needs moto_server: scripts/test.sh installs it and runs this test"]
fn an_interrupted_upload_leaves_no_visible_object() {
    use object_store::ObjectStoreExt as _;
    let s3 = S3::start();
    s3.bucket("rec");
    let store = moto_store(&s3, "rec");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let key = object_store::path::Path::from("cap/exchanges-x-00001.parquet");
        let mut upload = store.put_multipart(&key).await.unwrap();
        for _ in 0..2 {
            upload.put_part(vec![7u8; 5 << 20].into()).await.unwrap();
        }
        // The process dies here: the upload is never completed.
        drop(upload);
        assert!(
            store.head(&key).await.is_err(),
            "a partial upload is visible"
        );
        assert!(
            s3.keys("rec", "cap/").is_empty(),
            "{:?}",
            s3.keys("rec", "cap/")
        );
    });
    // And through shadowtap: a capture whose destination refuses the upload keeps its files
    // and says where.
    let dir = tempfile::tempdir().unwrap();
    let pcap = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo/api.pcap");
    let o = run(
        &s3,
        dir.path(),
        &[
            "capture",
            "--quiet",
            "--read",
            pcap.to_str().unwrap(),
            "--out",
            "s3://no-such-bucket/cap",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let kept = err
        .split("kept in ")
        .nth(1)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| panic!("where the files are kept: {err}"));
    let files: Vec<_> = std::fs::read_dir(&kept).unwrap().flatten().collect();
    assert!(
        files
            .iter()
            .any(|f| f.file_name().to_string_lossy().starts_with("exchanges-")),
        "{kept}"
    );
    assert!(s3.keys("rec", "").is_empty());
}

/// Credentials and the endpoint from `~/.aws/credentials` and `~/.aws/config` (AWS_PROFILE),
/// with no AWS_* variable set.
#[test]
#[ignore = "needs moto_server: scripts/test.sh installs it and runs this test"]
fn profile_files_give_credentials_region_and_endpoint() {
    let s3 = S3::start();
    s3.bucket("rec");
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    std::fs::write(
        home.join(".aws/credentials"),
        "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n[ci]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .unwrap();
    std::fs::write(
        home.join(".aws/config"),
        format!(
            "[profile ci]\nregion = us-east-1\nendpoint_url = {}\n",
            s3.endpoint
        ),
    )
    .unwrap();
    let pcap = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo/api.pcap");
    let with_profile = |args: &[&str]| {
        let mut c = bin();
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                c.env_remove(k);
            }
        }
        c.args(args)
            .env("HOME", &home)
            .env("AWS_PROFILE", "ci")
            .env("TMPDIR", dir.path())
            .output()
            .unwrap()
    };
    let o = with_profile(&[
        "capture",
        "--quiet",
        "--read",
        pcap.to_str().unwrap(),
        "--out",
        "s3://rec/p",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = with_profile(&[
        "query",
        "--data",
        "s3://rec/p",
        "--format",
        "csv",
        "SELECT count(*) AS n FROM exchanges",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let n: u64 = String::from_utf8_lossy(&o.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(n > 100, "{n}");
    assert!(!s3.keys("rec", "p/exchanges-").is_empty());
}

fn moto_store(s3: &S3, bucket: &str) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&s3.endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name(bucket)
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .build()
        .unwrap()
}

/// A live publisher (capture, the proxy's recording) uploads a file only once the writer
/// renamed it into place, as a multipart upload above 8 MiB, byte for byte, and then frees
/// the local disk.
#[test]
#[ignore = "needs moto_server: scripts/test.sh installs it and runs this test"]
fn live_publishing_uploads_complete_files_only_and_frees_the_disk() {
    use object_store::ObjectStoreExt as _;
    let s3 = S3::start();
    s3.bucket("rec");
    let store = std::sync::Arc::new(moto_store(&s3, "rec"));
    let remote = shadowtap_storage::Remote::with_store("s3://rec/live", store.clone()).unwrap();
    let publisher = shadowtap_storage::Publisher::start(remote, true).unwrap();
    let dir = publisher.dir().to_path_buf();
    let part_dir = dir.join("date=2026-12-01").join("hour=20");
    std::fs::create_dir_all(&part_dir).unwrap();
    // 20 MiB of varied bytes: three parts.
    let body: Vec<u8> = (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let writing = part_dir.join(".exchanges-r-00001.parquet.inprogress");
    std::fs::write(&writing, &body).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(
        s3.keys("rec", "live/").is_empty(),
        "an unfinished file went up: {:?}",
        s3.keys("rec", "live/")
    );
    let done = part_dir.join("exchanges-r-00001.parquet");
    std::fs::rename(&writing, &done).unwrap();
    let start = std::time::Instant::now();
    while done.exists() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "not uploaded"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let key = "live/date=2026-12-01/hour=20/exchanges-r-00001.parquet";
    assert_eq!(s3.keys("rec", "live/"), vec![key.to_owned()]);
    std::fs::write(dir.join("capture-r.summary.json"), b"{}").unwrap();
    let urls = publisher.finish().unwrap();
    assert_eq!(urls.len(), 2, "{urls:?}");
    assert!(!dir.exists(), "the staging directory is removed");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let got = rt.block_on(async {
        store
            .get(&object_store::path::Path::from(key))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    });
    assert_eq!(got.len(), body.len());
    assert!(
        got.as_ref() == body.as_slice(),
        "the object differs from the file"
    );
}

/// `proxy --record s3://…`: the recording goes up while the proxy runs and its last files at
/// SIGTERM; `query` reads it in place.
#[test]
#[ignore = "needs moto_server: scripts/test.sh installs it and runs this test"]
fn the_proxy_records_to_s3() {
    use std::io::{BufRead, BufReader, Read, Write};
    let s3 = S3::start();
    s3.bucket("rec");
    let dir = tempfile::tempdir().unwrap();
    let prod = service(&[]);
    let shadow = service(&[]);
    let mut child = bin()
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--production",
            &prod.url,
        ])
        .args(["--shadow", &format!("candidate={}", shadow.url)])
        .args(["--record", "s3://rec/live/"])
        .envs(s3.env())
        .env("TMPDIR", dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let port: u16 = loop {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "the proxy ended");
        if let Some(p) = line
            .split("listening on 127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse().ok())
        {
            break p;
        }
    };
    for i in 0..40 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "GET /api/users/{i} HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{rest}");
    assert!(rest.contains("objects written to s3://rec/live/"), "{rest}");
    let keys = s3.keys("rec", "live/");
    assert!(keys.iter().any(|k| k.contains("exchanges-")), "{keys:?}");
    assert!(keys.iter().any(|k| k.contains("replays-")), "{keys:?}");
    let n = query(
        &s3,
        dir.path(),
        "s3://rec/live",
        "SELECT count(*) AS n FROM exchanges",
    );
    assert_eq!(n.lines().nth(1), Some("40"), "{n}");
    assert!(
        staging_dirs(dir.path()).is_empty(),
        "staging left: {:?}",
        staging_dirs(dir.path())
    );
}
