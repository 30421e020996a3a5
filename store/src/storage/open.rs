//! `BackupStore`: an opened backup storage (`file://`, `s3://`, `gs://`, `az://`) with its
//! URL kept for messages and its retry policy.
//!
//! Credentials never come from `StorageTarget` (it is stored in the control plane); they
//! come from an environment: `open` reads the process environment, `open_with_env` takes
//! an explicit one, applied with the same rules object_store's `from_env` builders use
//! (`AWS_*`, `GOOGLE_*` + `SERVICE_ACCOUNT`, `AZURE_*` + `IDENTITY_ENDPOINT`). One code
//! path serves both, so tests (which must not touch the process environment, as they run
//! in parallel) exercise exactly what production runs.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use tidemark_schema::control::StorageTarget;
use tidemark_schema::model::{StorageScheme, looks_like_credential, url_has_userinfo};

use super::error::StorageError;
use super::retry::RetryPolicy;

/// An opened backup storage. Cheap to clone; share one per storage URL.
#[derive(Clone, Debug)]
pub struct BackupStore {
    pub(crate) url: String,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) retry: RetryPolicy,
    /// For `file://` storage: the directory, so whole files are streamed straight to and
    /// from disk (see `local.rs`) instead of through object_store's staging copies.
    pub(crate) local_root: Option<PathBuf>,
}

impl BackupStore {
    /// Opens `target`, taking credentials and endpoints from the process environment.
    pub fn open(target: &StorageTarget) -> Result<BackupStore, StorageError> {
        BackupStore::open_with_env(target, std::env::vars())
    }

    /// Opens `target` with `env` in place of the process environment (which is then not
    /// read at all). `target.options` override what `env` sets.
    pub fn open_with_env<I, K, V>(
        target: &StorageTarget,
        env: I,
    ) -> Result<BackupStore, StorageError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let url = target.url.as_str();
        let bad = |why: String| StorageError::Open {
            url: url.to_string(),
            why,
        };
        if url_has_userinfo(url) {
            // Do not echo the URL's userinfo back: report it without the URL itself.
            return Err(StorageError::Open {
                url: "<url with credentials, not shown>".into(),
                why: "the storage URL embeds credentials; pass them in the environment".into(),
            });
        }
        for key in target.options.keys() {
            if looks_like_credential(key) {
                return Err(bad(format!(
                    "option {key:?} looks like a credential; credentials come from the \
                     environment, never from storage options"
                )));
            }
        }
        let env: Vec<(String, String)> = env
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
            .collect();
        let scheme = StorageScheme::of_url(url).map_err(bad)?;
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or_default();
        let mut local_root = None;
        let store: Arc<dyn ObjectStore> = match scheme {
            StorageScheme::File => {
                if let Some(key) = target.options.keys().next() {
                    return Err(bad(format!(
                        "option {key:?} does not apply to file:// storage"
                    )));
                }
                let dir = PathBuf::from(rest);
                if !dir.is_absolute() {
                    return Err(bad(
                        "a file:// URL needs an absolute path (file:///dir)".into()
                    ));
                }
                std::fs::create_dir_all(&dir)
                    .map_err(|e| bad(format!("cannot create {}: {e}", dir.display())))?;
                let dir = std::fs::canonicalize(&dir)
                    .map_err(|e| bad(format!("cannot resolve {}: {e}", dir.display())))?;
                local_root = Some(dir.clone());
                Arc::new(LocalFileSystem::new_with_prefix(&dir).map_err(|e| bad(e.to_string()))?)
            }
            StorageScheme::S3 | StorageScheme::Gcs | StorageScheme::Azure => {
                let (bucket, prefix) = split_bucket(rest);
                if bucket.is_empty() {
                    return Err(bad("the URL names no bucket".into()));
                }
                let scheme_str = url.split_once("://").map(|(s, _)| s).unwrap_or_default();
                let bucket_url = format!("{scheme_str}://{bucket}");
                let inner = build_cloud(scheme, &bucket_url, &env, target).map_err(bad)?;
                if prefix.is_empty() {
                    inner
                } else {
                    let prefix = ObjectPath::parse(prefix)
                        .map_err(|e| bad(format!("the prefix {prefix:?} is not valid: {e}")))?;
                    Arc::new(PrefixStore::new(inner, prefix))
                }
            }
        };
        Ok(BackupStore {
            url: url.to_string(),
            store,
            retry: RetryPolicy::default(),
            local_root,
        })
    }

    /// Wraps an already built store; `url` is only used in messages. For tests and for
    /// callers that configure object_store themselves.
    pub fn from_store(url: &str, store: Arc<dyn ObjectStore>) -> BackupStore {
        BackupStore {
            url: url.to_string(),
            store,
            retry: RetryPolicy::default(),
            local_root: None,
        }
    }

    /// The same store, its requests counted in [`control_requests`]: for the control
    /// plane, whose request rate at rest is what an idle fleet costs.
    ///
    /// [`control_requests`]: crate::control::control_requests
    pub(crate) fn counted(mut self) -> BackupStore {
        self.store = Arc::new(crate::control::CountingStore::new(
            self.store,
            crate::control::control_requests(),
        ));
        self
    }

    /// Removes the empty directories a local store leaves below `prefix` once its objects
    /// are deleted (an object store has no directories: nothing to do).
    pub fn remove_empty_dirs(&self, prefix: &str) {
        if let Some(root) = &self.local_root {
            super::delete::remove_empty_dirs(&root.join(prefix));
        }
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> BackupStore {
        self.retry = retry;
        self
    }

    /// The storage URL, as given (it never holds credentials).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The underlying object_store client, for operations this module does not wrap.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Parses a caller's key into an object path, refusing empty segments, `.` and `..`.
    pub(crate) fn path(&self, key: &str) -> Result<ObjectPath, StorageError> {
        let invalid = |why: String| StorageError::InvalidKey {
            url: self.url.clone(),
            key: key.to_string(),
            why,
        };
        if key.is_empty() {
            return Err(invalid("empty".into()));
        }
        ObjectPath::parse(key).map_err(|e| invalid(e.to_string()))
    }
}

/// `bucket/some/prefix/` → (`bucket`, `some/prefix`).
fn split_bucket(rest: &str) -> (&str, &str) {
    match rest.split_once('/') {
        Some((bucket, prefix)) => (bucket, prefix.trim_matches('/')),
        None => (rest, ""),
    }
}

/// HTTP settings for cloud stores. No overall request timeout: a multi-GiB download is
/// one GET and must not be cut off; instead a stalled connection is detected by the read
/// timeout and a dead endpoint by the connect timeout. Options may override all three
/// (`timeout`, `read_timeout`, `connect_timeout`).
fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_read_timeout(Duration::from_secs(60))
        .with_timeout_disabled()
}

/// object_store's per-request retries: a few quick ones for blips; anything longer is
/// left to the whole-object retries of `RetryPolicy`, so a dead storage is reported in
/// seconds rather than object_store's default of minutes.
fn request_retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: Duration::from_secs(60),
    }
}

fn env_value<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// `AWS_FOO` → `aws_foo` parsed as a config key, for every variable with `prefix`.
fn env_keys<'a, K: FromStr>(
    env: &'a [(String, String)],
    prefix: &'a str,
) -> impl Iterator<Item = (K, &'a str)> + 'a {
    env.iter().filter_map(move |(k, v)| {
        if !k.starts_with(prefix) {
            return None;
        }
        k.to_ascii_lowercase()
            .parse::<K>()
            .ok()
            .map(|key| (key, v.as_str()))
    })
}

/// Parses every option key, naming the first unknown one. Values are never echoed.
fn option_keys<K: FromStr>(
    target: &StorageTarget,
    store: &str,
) -> Result<Vec<(K, String)>, String> {
    target
        .options
        .iter()
        .map(|(k, v)| {
            K::from_str(k)
                .map(|key| (key, v.clone()))
                .map_err(|_| format!("option {k:?} is not a known {store} setting"))
        })
        .collect()
}

fn build_cloud(
    scheme: StorageScheme,
    bucket_url: &str,
    env: &[(String, String)],
    target: &StorageTarget,
) -> Result<Arc<dyn ObjectStore>, String> {
    let store: Arc<dyn ObjectStore> = match scheme {
        StorageScheme::S3 => {
            let mut b = AmazonS3Builder::new()
                .with_client_options(client_options())
                .with_retry(request_retry());
            for (key, value) in env_keys::<AmazonS3ConfigKey>(env, "AWS_") {
                b = b.with_config(key, value);
            }
            for (key, value) in option_keys::<AmazonS3ConfigKey>(target, "S3")? {
                b = b.with_config(key, value);
            }
            Arc::new(b.with_url(bucket_url).build().map_err(|e| e.to_string())?)
        }
        StorageScheme::Gcs => {
            let mut b = GoogleCloudStorageBuilder::new()
                .with_client_options(client_options())
                .with_retry(request_retry());
            if let Some(path) = env_value(env, "SERVICE_ACCOUNT") {
                b = b.with_service_account_path(path);
            }
            for (key, value) in env_keys::<GoogleConfigKey>(env, "GOOGLE_") {
                b = b.with_config(key, value);
            }
            for (key, value) in option_keys::<GoogleConfigKey>(target, "GCS")? {
                b = b.with_config(key, value);
            }
            Arc::new(b.with_url(bucket_url).build().map_err(|e| e.to_string())?)
        }
        StorageScheme::Azure => {
            let mut b = MicrosoftAzureBuilder::new()
                .with_client_options(client_options())
                .with_retry(request_retry());
            for (key, value) in env_keys::<AzureConfigKey>(env, "AZURE_") {
                b = b.with_config(key, value);
            }
            if let Some(endpoint) = env_value(env, "IDENTITY_ENDPOINT") {
                b = b.with_msi_endpoint(endpoint);
            }
            for (key, value) in option_keys::<AzureConfigKey>(target, "Azure")? {
                b = b.with_config(key, value);
            }
            Arc::new(b.with_url(bucket_url).build().map_err(|e| e.to_string())?)
        }
        StorageScheme::File => unreachable!("file:// is opened without a cloud builder"),
    };
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str, options: &[(&str, &str)]) -> StorageTarget {
        StorageTarget {
            url: url.into(),
            compression: Default::default(),
            compression_level: None,
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    const NO_ENV: [(&str, &str); 0] = [];

    #[test]
    fn bucket_and_prefix_split() {
        assert_eq!(split_bucket("b"), ("b", ""));
        assert_eq!(split_bucket("b/"), ("b", ""));
        assert_eq!(split_bucket("b/p/q/"), ("b", "p/q"));
    }

    #[test]
    fn unknown_option_is_named() {
        let err = BackupStore::open_with_env(&target("s3://b/p", &[("regoin", "x")]), NO_ENV)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"regoin\"") && err.contains("s3://b/p"),
            "{err}"
        );
    }

    #[test]
    fn credentials_in_options_or_url_are_refused_without_echo() {
        let err = BackupStore::open_with_env(
            &target("s3://b", &[("secret_access_key", "hunter2")]),
            NO_ENV,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("secret_access_key") && !err.contains("hunter2"),
            "{err}"
        );
        let err = BackupStore::open_with_env(&target("s3://AKIA:hunter2@b/p", &[]), NO_ENV)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn gcs_and_azure_build_offline() {
        BackupStore::open_with_env(&target("gs://bucket/pre", &[]), NO_ENV).unwrap();
        BackupStore::open_with_env(
            &target("az://container/pre", &[("account_name", "acct")]),
            NO_ENV,
        )
        .unwrap();
    }
}
