//! Directory arguments that may name object storage (`s3://bucket/prefix`, `gs://`, `az://`).
//!
//! An input prefix is fetched into a cache directory that mirrors it
//! (`$XDG_CACHE_HOME/shadowtap/objects/…`, files already there with the same size are not
//! fetched again); an output prefix is written through a staging directory whose files go up as
//! each completes ([`shadowtap_storage::Publisher`]). `shadowtap query` reads prefixes in
//! place, without either.

use std::path::{Path, PathBuf};

use anyhow::Context;
use shadowtap_storage::{Location, Publisher};

/// The cache directory for the objects under `url`.
fn cache_dir(url: &url::Url) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    let mut dir = base
        .join("shadowtap")
        .join("objects")
        .join(url.scheme())
        .join(url.host_str().unwrap_or("_"));
    for part in url
        .path()
        .split('/')
        .filter(|p| !p.is_empty() && *p != "..")
    {
        dir.push(part);
    }
    dir
}

/// An input directory: a local path as given, an object-storage prefix fetched into its
/// cache directory (an empty prefix is an error naming it).
pub fn input(arg: &str) -> anyhow::Result<PathBuf> {
    match Location::parse(arg)? {
        Location::Local(p) => Ok(p),
        Location::Remote(r) => {
            let dir = cache_dir(r.url());
            let n = shadowtap_storage::block_on(r.download_to(&dir))
                .with_context(|| format!("fetching {}", r.url()))?;
            if n == 0 {
                anyhow::bail!("{}: no objects under this prefix", r.url());
            }
            eprintln!(
                "shadowtap: {} objects of {} in {}",
                n,
                r.url(),
                dir.display()
            );
            Ok(dir)
        }
    }
}

/// An output directory.
#[derive(Debug)]
pub enum Output {
    /// A local directory.
    Local(PathBuf),
    /// An object-storage prefix and the staging directory in front of it.
    Remote(Publisher),
}

impl Output {
    /// Opens `arg` for writing; `live`: upload complete Parquet files while the stage runs.
    pub fn open(arg: &str, live: bool) -> anyhow::Result<Self> {
        Ok(match Location::parse(arg)? {
            Location::Local(p) => Self::Local(p),
            Location::Remote(r) => Self::Remote(Publisher::start(r, live)?),
        })
    }

    /// Where the stage writes.
    pub fn dir(&self) -> PathBuf {
        match self {
            Self::Local(p) => p.clone(),
            Self::Remote(p) => p.dir().to_path_buf(),
        }
    }

    /// What a written file is called for the user: its path, or its object URL.
    pub fn shown(&self, written: &Path) -> PathBuf {
        match self {
            Self::Local(_) => written.to_path_buf(),
            Self::Remote(p) => match written.strip_prefix(p.dir()) {
                Ok(rel) => PathBuf::from(p.remote().url_of(&rel.to_string_lossy())),
                Err(_) => written.to_path_buf(),
            },
        }
    }

    /// The directory as the user named it.
    pub fn shown_dir(&self) -> PathBuf {
        match self {
            Self::Local(p) => p.clone(),
            Self::Remote(p) => PathBuf::from(p.remote().url().as_str()),
        }
    }

    /// Deletes the objects under the prefix `doomed` selects (a local directory is the
    /// stage's own business).
    pub fn delete_remote_where(&self, doomed: impl Fn(&str) -> bool + Send) -> anyhow::Result<()> {
        if let Self::Remote(p) = self {
            let n = shadowtap_storage::block_on(p.remote().delete_where(doomed))?;
            if n > 0 {
                tracing::info!("removed {n} old objects under {}", p.remote().url());
            }
        }
        Ok(())
    }

    /// Uploads what is left; says how many objects went up.
    pub fn finish(self) -> anyhow::Result<()> {
        if let Self::Remote(p) = self {
            let url = p.remote().url().to_string();
            let objects = p.finish()?;
            eprintln!("shadowtap: {} objects written to {url}", objects.len());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_mirrors_the_url() {
        let u = url::Url::parse("s3://bucket/runs/../x/").unwrap();
        let d = cache_dir(&u);
        assert!(
            d.ends_with("shadowtap/objects/s3/bucket/x"),
            "{}",
            d.display()
        );
    }
}
