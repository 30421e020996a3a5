//! Opens the control plane from its URL: a local directory (the default), `file://`,
//! `s3://`, `gs://` or `az://`. Credentials and endpoints come from the environment
//! (`AWS_*`, `GOOGLE_*`, `AZURE_*`), never from the URL.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;

use super::error::ControlError;

/// An opened control plane. `store` is `None` for a local directory that does not exist
/// yet: a fresh control plane in which nothing exists.
#[derive(Clone)]
pub struct ControlStore {
    pub url: String,
    pub store: Option<Arc<dyn ObjectStore>>,
}

/// Opens the control plane read-side. A missing local directory is not an error.
pub fn open_control(url: &str) -> Result<ControlStore, ControlError> {
    let bad = |message: String| ControlError::BadUrl {
        url: url.to_string(),
        message,
    };
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let store: Option<Arc<dyn ObjectStore>> = match scheme {
        "" | "file" => {
            let path = PathBuf::from(rest);
            if !path.exists() {
                None
            } else if !path.is_dir() {
                return Err(bad(format!("{} is not a directory", path.display())));
            } else {
                let local =
                    LocalFileSystem::new_with_prefix(&path).map_err(|e| bad(e.to_string()))?;
                Some(Arc::new(local))
            }
        }
        "s3" => Some(Arc::new(
            AmazonS3Builder::from_env()
                .with_url(url)
                .build()
                .map_err(|e| bad(e.to_string()))?,
        )),
        "gs" => Some(Arc::new(
            GoogleCloudStorageBuilder::from_env()
                .with_url(url)
                .build()
                .map_err(|e| bad(e.to_string()))?,
        )),
        "az" => Some(Arc::new(
            MicrosoftAzureBuilder::from_env()
                .with_url(url)
                .build()
                .map_err(|e| bad(e.to_string()))?,
        )),
        other => {
            return Err(bad(format!(
                "the scheme {other:?} is not supported; use a directory, file://, s3://, gs:// or az://"
            )));
        }
    };
    Ok(ControlStore {
        url: url.to_string(),
        store,
    })
}
