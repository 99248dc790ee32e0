//! Where recordings, replays and verdicts live: a local directory, or a prefix in object
//! storage (`s3://bucket/prefix`, `gs://…`, `az://…`) through the `object_store` crate.
//!
//! Every stage writes files into a local directory it owns; for an object-storage location
//! that directory is a staging area and a [`Publisher`] uploads each file once it is complete
//! (the Parquet sink renames `.NAME.inprogress` into place when a file is done), with a
//! multipart upload for large files. S3 makes a multipart upload visible only when it
//! completes, so a reader never sees a partial object, and an upload that is interrupted leaves
//! no object at all (only parts, which the bucket's lifecycle rule for incomplete uploads
//! removes). Inputs on object storage are either read in place (SQL: DataFusion reads the
//! objects directly) or fetched into a local cache directory ([`Remote::download_to`]).
//!
//! Credentials come from the standard environment (`AWS_ACCESS_KEY_ID`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, web identity, container credentials, instance metadata; `GOOGLE_*`;
//! `AZURE_*`) and, for S3, from the shared profile files (`~/.aws/credentials`, `~/.aws/config`,
//! `AWS_PROFILE`) when the environment names no key ([`profile`]).

mod location;
pub mod profile;
mod publish;

pub use location::{is_remote, store_for, Location, Remote};
pub use publish::Publisher;

/// Errors of the storage layer, naming the object or file.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The location is not one this build understands.
    #[error("{0}")]
    Location(String),
    /// The object store refused or failed.
    #[error("{url}: {source}")]
    Store {
        /// The object or prefix.
        url: String,
        /// The cause.
        #[source]
        source: object_store::Error,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Runs `fut` to completion on a runtime of its own, on a thread of its own, so it can be
/// called from synchronous code and from inside another runtime alike; an operation's own
/// error is flattened into the result.
pub fn block_on<T, F>(fut: F) -> Result<T, StorageError>
where
    F: std::future::Future<Output = Result<T, StorageError>> + Send,
    T: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| StorageError::Io {
                    path: std::path::PathBuf::from("(a runtime for object storage)"),
                    source,
                })?
                .block_on(fut)
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
