//! A location argument (`--out`, `--from`, `--data`, …): a local path or an object-storage
//! prefix, and the operations the stages need on a prefix (list, fetch, upload, delete).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;
use url::Url;

use crate::StorageError;

/// URL schemes served by object storage.
const SCHEMES: &[&str] = &["s3", "s3a", "gs", "az", "azure", "abfs", "abfss"];

/// Files up to this size go up in one request; larger ones as a multipart upload of parts of
/// this size (S3's minimum part is 5 MiB).
const PART_BYTES: usize = 8 << 20;

/// Whether `arg` names an object-storage location (`s3://…`, `gs://…`, `az://…`).
pub fn is_remote(arg: &str) -> bool {
    arg.split_once("://")
        .is_some_and(|(scheme, _)| SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()))
}

/// A directory argument.
#[derive(Debug, Clone)]
pub enum Location {
    /// A directory on this machine.
    Local(PathBuf),
    /// A prefix in object storage.
    Remote(Remote),
}

impl Location {
    /// Parses a directory argument: `s3://bucket/prefix` (and the other object-storage
    /// schemes) is remote, `file:///path` and anything else a local path.
    pub fn parse(arg: &str) -> Result<Self, StorageError> {
        if is_remote(arg) {
            return Ok(Self::Remote(Remote::parse(arg)?));
        }
        if let Some(rest) = arg.strip_prefix("file://") {
            return Ok(Self::Local(PathBuf::from(rest)));
        }
        if let Some((scheme, _)) = arg.split_once("://") {
            return Err(StorageError::Location(format!(
                "{arg}: `{scheme}://` is not a storage this build knows (a local path, file://, s3://, gs:// or az://)"
            )));
        }
        Ok(Self::Local(PathBuf::from(arg)))
    }

    /// What to show a user.
    pub fn display(&self) -> String {
        match self {
            Self::Local(p) => p.display().to_string(),
            Self::Remote(r) => r.url().to_string(),
        }
    }
}

/// A prefix in object storage: the store (credentials resolved) and the prefix in it.
#[derive(Debug, Clone)]
pub struct Remote {
    url: Url,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
}

impl Remote {
    /// `s3://bucket/prefix` (a trailing `/` or not: the prefix is a directory).
    pub fn parse(arg: &str) -> Result<Self, StorageError> {
        let url = Self::prefix_url(arg)?;
        Self::with_store(arg, store_for(&url)?)
    }

    /// `arg`'s prefix in `store` (a store built by the caller, with its own credentials).
    pub fn with_store(arg: &str, store: Arc<dyn ObjectStore>) -> Result<Self, StorageError> {
        let url = Self::prefix_url(arg)?;
        let prefix = ObjectPath::from_url_path(url.path())
            .map_err(|e| StorageError::Location(format!("{arg}: {e}")))?;
        Ok(Self { url, store, prefix })
    }

    fn prefix_url(arg: &str) -> Result<Url, StorageError> {
        let mut url = Url::parse(arg)
            .map_err(|e| StorageError::Location(format!("{arg}: not a URL: {e}")))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(StorageError::Location(format!(
                "{arg}: no bucket (expected {}://BUCKET/PREFIX)",
                url.scheme()
            )));
        }
        if !url.path().ends_with('/') {
            let p = format!("{}/", url.path());
            url.set_path(&p);
        }
        Ok(url)
    }

    /// The prefix as a URL, ending in `/`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The store.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// `scheme://bucket/`: what DataFusion registers a store under.
    pub fn bucket_url(&self) -> Url {
        let mut u = self.url.clone();
        u.set_path("/");
        u
    }

    /// The URL of `rel` under the prefix.
    pub fn url_of(&self, rel: &str) -> String {
        format!("{}{rel}", self.url)
    }

    fn key(&self, rel: &str) -> ObjectPath {
        rel.split('/')
            .filter(|p| !p.is_empty())
            .fold(self.prefix.clone(), |k, part| k.clone().join(part))
    }

    fn store_err(&self, rel: &str) -> impl Fn(object_store::Error) -> StorageError + '_ {
        let url = self.url_of(rel);
        move |source| StorageError::Store {
            url: url.clone(),
            source,
        }
    }

    /// The objects under the prefix: (path relative to the prefix, size), sorted.
    pub async fn list(&self) -> Result<Vec<(String, u64)>, StorageError> {
        let metas: Vec<_> = self
            .store
            .list(Some(&self.prefix))
            .try_collect()
            .await
            .map_err(self.store_err(""))?;
        let mut out: Vec<(String, u64)> = metas
            .into_iter()
            .filter_map(|m| {
                let rel: Vec<_> = m.location.prefix_match(&self.prefix)?.collect();
                let rel = rel.iter().map(|p| p.as_ref()).collect::<Vec<_>>().join("/");
                (!rel.is_empty()).then_some((rel, m.size))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Fetches every object under the prefix into `dir` (paths kept, Hive partitions
    /// included), skipping files already there with the same size; returns how many objects
    /// the prefix holds. Hidden names and names with `..` are skipped. Each file appears
    /// under its name only once complete.
    pub async fn download_to(&self, dir: &Path) -> Result<usize, StorageError> {
        let objects = self.list().await?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StorageError::Io {
                path: path.clone(),
                source,
            }
        };
        let mut n = 0;
        for (rel, size) in &objects {
            if rel
                .split('/')
                .any(|p| p.starts_with('.') || p == ".." || p.is_empty())
            {
                continue;
            }
            n += 1;
            let dest = dir.join(rel);
            if std::fs::metadata(&dest).is_ok_and(|m| m.len() == *size) {
                continue;
            }
            let parent = dest.parent().unwrap_or(dir);
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io(parent))?;
            let part = parent.join(format!(
                ".{}.part",
                dest.file_name().unwrap_or_default().to_string_lossy()
            ));
            let mut stream = self
                .store
                .get(&self.key(rel))
                .await
                .map_err(self.store_err(rel))?
                .into_stream();
            let mut file = tokio::fs::File::create(&part).await.map_err(io(&part))?;
            while let Some(chunk) = stream.try_next().await.map_err(self.store_err(rel))? {
                tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                    .await
                    .map_err(io(&part))?;
            }
            tokio::io::AsyncWriteExt::flush(&mut file)
                .await
                .map_err(io(&part))?;
            drop(file);
            tokio::fs::rename(&part, &dest).await.map_err(io(&dest))?;
        }
        // A cache directory mirrors the prefix: files deleted there go here too.
        let keep: std::collections::HashSet<PathBuf> =
            objects.iter().map(|(rel, _)| dir.join(rel)).collect();
        prune(dir, &keep);
        Ok(n)
    }

    /// Uploads the local file `local` as `rel` under the prefix: one request up to 8 MiB, a
    /// multipart upload above, aborted on any error. The object exists only once complete.
    pub async fn upload(&self, local: &Path, rel: &str) -> Result<(), StorageError> {
        let io = |source| StorageError::Io {
            path: local.to_path_buf(),
            source,
        };
        let key = self.key(rel);
        let mut file = tokio::fs::File::open(local).await.map_err(io)?;
        let size = file.metadata().await.map_err(io)?.len();
        if size <= PART_BYTES as u64 {
            let mut buf = Vec::with_capacity(size as usize);
            file.read_to_end(&mut buf).await.map_err(io)?;
            self.store
                .put(&key, PutPayload::from(buf))
                .await
                .map_err(self.store_err(rel))?;
            return Ok(());
        }
        let upload = self
            .store
            .put_multipart(&key)
            .await
            .map_err(self.store_err(rel))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(io(e));
                }
            };
            if n == 0 {
                break;
            }
            if let Err(e) = writer.wait_for_capacity(4).await {
                let _ = writer.abort().await;
                return Err(self.store_err(rel)(e));
            }
            writer.write(&buf[..n]);
        }
        writer.finish().await.map_err(self.store_err(rel))?;
        Ok(())
    }

    /// Deletes the objects under the prefix whose relative path `doomed` selects; returns how
    /// many.
    pub async fn delete_where(&self, doomed: impl Fn(&str) -> bool) -> Result<usize, StorageError> {
        let mut n = 0;
        for (rel, _) in self.list().await? {
            if doomed(&rel) {
                self.store
                    .delete(&self.key(&rel))
                    .await
                    .map_err(self.store_err(&rel))?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Removes the visible files under `dir` that are not in `keep`.
fn prune(dir: &Path, keep: &std::collections::HashSet<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if p.is_dir() {
            prune(&p, keep);
        } else if !keep.contains(&p) {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// The store serving `url`'s bucket, built once per scheme and bucket with credentials from
/// the environment (and, for S3, the shared profile files).
pub fn store_for(url: &Url) -> Result<Arc<dyn ObjectStore>, StorageError> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let bucket = url.host_str().unwrap_or_default();
    let scheme = url.scheme().to_ascii_lowercase();
    let id = format!("{scheme}://{bucket}");
    let stores = STORES.get_or_init(Default::default);
    if let Some(s) = stores.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
        return Ok(s.clone());
    }
    let fail = |e: object_store::Error| StorageError::Location(format!("{id}: {e}"));
    let store: Arc<dyn ObjectStore> = match scheme.as_str() {
        "s3" | "s3a" => {
            use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
            let mut b = AmazonS3Builder::from_env();
            let env_has = |k: &str| std::env::var_os(k).is_some();
            for (k, v) in crate::profile::settings() {
                let from_env = match k.as_str() {
                    "aws_access_key_id" | "aws_secret_access_key" | "aws_session_token" => {
                        env_has("AWS_ACCESS_KEY_ID")
                    }
                    "aws_region" => env_has("AWS_REGION") || env_has("AWS_DEFAULT_REGION"),
                    "aws_endpoint" => env_has("AWS_ENDPOINT_URL") || env_has("AWS_ENDPOINT"),
                    _ => true,
                };
                if !from_env {
                    if let Ok(key) = k.parse::<AmazonS3ConfigKey>() {
                        b = b.with_config(key, v);
                    }
                }
            }
            // An endpoint the user gave as http:// (a local MinIO, moto, a proxy) is meant.
            let endpoint = b.get_config_value(&AmazonS3ConfigKey::Endpoint);
            if endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://"))
            {
                b = b.with_allow_http(true);
            }
            if b.get_config_value(&AmazonS3ConfigKey::Region).is_none()
                && b.get_config_value(&AmazonS3ConfigKey::DefaultRegion)
                    .is_none()
            {
                b = b.with_region("us-east-1");
            }
            Arc::new(b.with_bucket_name(bucket).build().map_err(fail)?)
        }
        "gs" => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(fail)?,
        ),
        _ => Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(url.as_str())
                .build()
                .map_err(fail)?,
        ),
    };
    stores
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, store.clone());
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_told_apart() {
        assert!(is_remote("s3://b/p"));
        assert!(is_remote("GS://b"));
        assert!(!is_remote("/tmp/out"));
        assert!(!is_remote("file:///tmp/out"));
        assert!(
            matches!(Location::parse("out").unwrap(), Location::Local(p) if p == Path::new("out"))
        );
        assert!(
            matches!(Location::parse("file:///x/y").unwrap(), Location::Local(p) if p == Path::new("/x/y"))
        );
        let e = Location::parse("ftp://host/x").unwrap_err().to_string();
        assert!(e.contains("ftp://"), "{e}");
        let e = Location::parse("s3:///nobucket").unwrap_err().to_string();
        assert!(e.contains("no bucket"), "{e}");
    }

    #[test]
    fn a_prefix_is_a_directory() {
        let r = Remote::parse("s3://bucket/runs/2026").unwrap();
        assert_eq!(r.url().as_str(), "s3://bucket/runs/2026/");
        assert_eq!(r.bucket_url().as_str(), "s3://bucket/");
        assert_eq!(
            r.key("date=x/hour=1/f.parquet").as_ref(),
            "runs/2026/date=x/hour=1/f.parquet"
        );
        assert_eq!(r.url_of("f"), "s3://bucket/runs/2026/f");
        let root = Remote::parse("s3://bucket").unwrap();
        assert_eq!(root.key("f").as_ref(), "f");
    }
}
