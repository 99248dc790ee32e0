//! DataFusion's view of object storage: a registry that opens the store of an `s3://`,
//! `gs://` or `az://` URL the first time a query names it, with the credentials of
//! [`shadowtap_storage::store_for`]. Sessions of the local engine and of the Ballista
//! scheduler and executors use it, so a table over `s3://bucket/prefix/` needs no setup.

use std::sync::Arc;

use datafusion::error::DataFusionError;
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use object_store::ObjectStore;
use url::Url;

/// Local files as DataFusion's default registry serves them; object storage on demand.
#[derive(Debug, Default)]
pub struct StorageRegistry {
    known: DefaultObjectStoreRegistry,
}

impl StorageRegistry {
    /// A registry serving `file://` and opening object stores when asked.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ObjectStoreRegistry for StorageRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.known.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        self.known.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        if let Ok(s) = self.known.get_store(url) {
            return Ok(s);
        }
        if !shadowtap_storage::is_remote(url.as_str()) {
            return self.known.get_store(url);
        }
        let store = shadowtap_storage::store_for(url)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        self.known.register_store(url, store.clone());
        Ok(store)
    }
}
