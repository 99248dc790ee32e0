//! The proxy's recording holds no secret: credentials in headers, the query, a form body and a
//! JSON response field are redacted in every table (production's rows and the shadows'),
//! searched in every Arrow buffer of every Parquet file read back; equal secrets stay equal.

use std::fs::File;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::common::*;

fn buffers(d: &arrow::array::ArrayData, out: &mut Vec<u8>) {
    for b in d.buffers() {
        out.extend_from_slice(b.as_slice());
        out.push(0);
    }
    for c in d.child_data() {
        buffers(c, out);
    }
}

fn every_byte(dir: &std::path::Path) -> (Vec<u8>, usize) {
    let (mut out, mut files) = (Vec::new(), 0);
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "parquet") {
            files += 1;
            let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&p).unwrap())
                .unwrap()
                .build()
                .unwrap();
            for batch in reader {
                for column in batch.unwrap().columns() {
                    buffers(&column.to_data(), &mut out);
                }
            }
        }
    }
    (out, files)
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_recording() {
    let (prod, _) = backend(Behaviour::default()).await;
    let (sh, _) = backend(Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(prod);
    cfg.record = Some(dir.path().to_path_buf());
    cfg.shadows = vec![shadow("candidate", sh)];
    cfg.mirror.allow_methods.push("POST".into());
    cfg.redact = vec!["X-Internal".into()];
    let running = shadowtap_proxy::start(cfg, None).await.unwrap();
    let c = client();
    for _ in 0..2 {
        let req = http::Request::get(format!(
            "http://{}/item/7?access_token=S3CRET01&page=2",
            running.addr
        ))
        .header("Authorization", "Bearer S3CRET02")
        .header("Cookie", "sid=S3CRET03; theme=dark")
        .header("X-Api-Key", "S3CRET04")
        .header("X-Internal", "S3CRET05")
        .body(Full::new(Bytes::new()))
        .unwrap();
        let resp = c.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
        let req = http::Request::post(format!("http://{}/upload", running.addr))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from_static(b"user=ann&password=S3CRET06")))
            .unwrap();
        let resp = c.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
    }
    running.shutdown();
    let summary = running.wait().await.unwrap();
    assert_eq!(summary.recorded, 4);
    let (bytes, files) = every_byte(dir.path());
    assert!(
        files >= 3,
        "exchanges, production's rows and the shadow's rows: {files} files"
    );
    for n in 1..=6 {
        let secret = format!("S3CRET0{n}");
        assert!(!contains(&bytes, &secret), "{secret} reached the recording");
    }
    for kept in ["page=2", "theme=", "user=ann", "item-7", "hmac:"] {
        assert!(contains(&bytes, kept), "{kept} should stay");
    }
}
