//! `BackupStorage`: where backups go. Credentials never live here; they come from the
//! environment of the process that opens the storage.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupStorageSpec {
    /// `file://`, `s3://`, `gs://` or `az://` URL.
    pub url: String,
    #[serde(default)]
    pub compression: Compression,
    /// zstd: 1–22; lz4: 1–12. Not allowed with `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_level: Option<i32>,
    /// Non-secret object_store settings, e.g. `region`, `endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Zstd,
    Lz4,
    None,
}

impl Compression {
    /// The accepted level range, or `None` when levels do not apply.
    pub fn level_range(self) -> Option<(i32, i32)> {
        match self {
            Compression::Zstd => Some((1, 22)),
            Compression::Lz4 => Some((1, 12)),
            Compression::None => None,
        }
    }
}

/// The URL schemes tidemark can open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageScheme {
    File,
    S3,
    Gcs,
    Azure,
}

impl StorageScheme {
    pub fn of_url(url: &str) -> Result<StorageScheme, String> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!(
                "{url:?} is not a URL; expected file://, s3://, gs:// or az://"
            ));
        };
        if rest.is_empty() {
            return Err(format!("{url:?} names no bucket or path"));
        }
        match scheme {
            "file" => Ok(StorageScheme::File),
            "s3" => Ok(StorageScheme::S3),
            "gs" => Ok(StorageScheme::Gcs),
            "az" => Ok(StorageScheme::Azure),
            other => Err(format!(
                "the scheme {other:?} is not supported; use file://, s3://, gs:// or az://"
            )),
        }
    }
}

/// Words that mark a key (or URL part) as a credential, which must not be in git.
const CREDENTIAL_WORDS: [&str; 10] = [
    "secret",
    "password",
    "passwd",
    "token",
    "accesskey",
    "access_key",
    "credential",
    "privatekey",
    "private_key",
    "sas",
];

/// Whether an option key looks like it carries a credential.
pub fn looks_like_credential(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('-', "_");
    let squashed = k.replace('_', "");
    CREDENTIAL_WORDS
        .iter()
        .any(|w| k.contains(w) || squashed.contains(&w.replace('_', "")))
        && !matches!(squashed.as_str(), "usessl")
}

/// Whether a URL embeds a user name or password (`s3://KEY:SECRET@bucket`).
pub fn url_has_userinfo(url: &str) -> bool {
    url.split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or("").contains('@'))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_keys_are_spotted() {
        for k in [
            "secret_access_key",
            "aws_secret_access_key",
            "accessKeyId",
            "password",
            "session_token",
            "sas_key",
        ] {
            assert!(looks_like_credential(k), "{k}");
        }
        for k in ["region", "endpoint", "allow_http", "bucket"] {
            assert!(!looks_like_credential(k), "{k}");
        }
    }

    #[test]
    fn schemes() {
        assert_eq!(
            StorageScheme::of_url("s3://b/p").unwrap(),
            StorageScheme::S3
        );
        assert!(StorageScheme::of_url("ftp://x").is_err());
        assert!(StorageScheme::of_url("s3://").is_err());
        assert!(url_has_userinfo("s3://AKIA:xyz@bucket/p"));
        assert!(!url_has_userinfo("s3://bucket/p@x"));
    }
}
