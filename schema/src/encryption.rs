//! Encryption at rest as a backup records it and a node reports it: the cipher mode and
//! where the master key comes from, never the key. A node can restore an encrypted backup
//! only with the same cipher mode and the same master key; `key_id` tells keys apart
//! without revealing them.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionSettings {
    /// `AES256-CBC` or `AES256-GCM`.
    pub cipher_mode: String,
    pub key_source: KeySource,
    /// Identifies the master key without revealing it: for a key file, a keyed BLAKE3
    /// hash of its content (`keyfile:` and 32 hex digits; one-way, so the key cannot be
    /// recovered from it); for Vault and KMIP, the secret or key the server holds.
    pub key_id: String,
}

/// Where a node's master key comes from (PSMDB's three sources).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum KeySource {
    #[serde(rename_all = "camelCase")]
    KeyFile { path: String },
    #[serde(rename_all = "camelCase")]
    Vault {
        server: String,
        port: u16,
        secret: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret_version: Option<u32>,
    },
    #[serde(rename_all = "camelCase")]
    Kmip {
        server: String,
        port: u16,
        key_id: String,
    },
}

impl std::fmt::Display for EncryptionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.key_source {
            KeySource::KeyFile { path } => write!(
                f,
                "{}, key file {path} (key {})",
                self.cipher_mode, self.key_id
            ),
            KeySource::Vault {
                server,
                port,
                secret,
                secret_version,
            } => write!(
                f,
                "{}, Vault {server}:{port} secret {secret}{}",
                self.cipher_mode,
                secret_version.map_or(String::new(), |v| format!(" version {v}"))
            ),
            KeySource::Kmip {
                server,
                port,
                key_id,
            } => write!(f, "{}, KMIP {server}:{port} key {key_id}", self.cipher_mode),
        }
    }
}

/// The prefix of a `key_id` whose key file its agent could not read: the key is unknown,
/// neither a match nor a mismatch.
pub const UNREADABLE_KEY: &str = "keyfile-unreadable:";

impl EncryptionSettings {
    /// Whether the master key is known well enough to compare.
    pub fn key_known(&self) -> bool {
        !self.key_id.starts_with(UNREADABLE_KEY)
    }

    /// Same master key: the same key id; for Vault, the same server, port and secret, and
    /// the same version when both name one (a secret without a version is its latest,
    /// which may well be the version the other names).
    fn same_key(&self, other: &EncryptionSettings) -> bool {
        match (&self.key_source, &other.key_source) {
            (
                KeySource::Vault {
                    server: s1,
                    port: p1,
                    secret: k1,
                    secret_version: v1,
                },
                KeySource::Vault {
                    server: s2,
                    port: p2,
                    secret: k2,
                    secret_version: v2,
                },
            ) => s1 == s2 && p1 == p2 && k1 == k2 && (v1.is_none() || v2.is_none() || v1 == v2),
            _ => self.key_id == other.key_id,
        }
    }
}

/// Why a node with `node`'s encryption cannot open the files of a backup taken with
/// `backup`'s, or `None` when it can. Both must be known (see [`key_known`]): callers wait
/// or skip the check otherwise.
///
/// [`key_known`]: EncryptionSettings::key_known
pub fn decrypt_problem(
    backup: Option<&EncryptionSettings>,
    node: Option<&EncryptionSettings>,
) -> Option<String> {
    match (backup, node) {
        (None, None) => None,
        (Some(b), None) => Some(format!(
            "the backup is encrypted ({b}) but this node runs without encryption"
        )),
        (None, Some(n)) => Some(format!(
            "the backup is not encrypted but this node runs with encryption ({n}); PSMDB does \
             not open unencrypted files with encryption on"
        )),
        (Some(b), Some(n)) if b.cipher_mode != n.cipher_mode => Some(format!(
            "cipher mode {} differs from the backup's {}",
            n.cipher_mode, b.cipher_mode
        )),
        (Some(b), Some(n)) if !b.same_key(n) => Some(format!(
            "this node's master key ({n}) is not the backup's ({b})"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(id: &str, mode: &str) -> EncryptionSettings {
        EncryptionSettings {
            cipher_mode: mode.into(),
            key_source: KeySource::KeyFile {
                path: "/etc/mongod.key".into(),
            },
            key_id: id.into(),
        }
    }

    #[test]
    fn only_the_same_key_and_cipher_decrypt() {
        let a = file("keyfile:aa", "AES256-CBC");
        assert_eq!(decrypt_problem(Some(&a), Some(&a)), None);
        assert_eq!(decrypt_problem(None, None), None);
        let other_key = decrypt_problem(Some(&a), Some(&file("keyfile:bb", "AES256-CBC")));
        assert!(other_key.unwrap().contains("master key"));
        let other_mode = decrypt_problem(Some(&a), Some(&file("keyfile:aa", "AES256-GCM")));
        assert!(other_mode.unwrap().contains("cipher mode"));
        assert!(
            decrypt_problem(Some(&a), None)
                .unwrap()
                .contains("without encryption")
        );
        assert!(
            decrypt_problem(None, Some(&a))
                .unwrap()
                .contains("not encrypted")
        );
    }

    #[test]
    fn a_vault_secret_without_a_version_may_be_any_version_and_unreadable_keys_are_unknown() {
        let vault = |v: Option<u32>| EncryptionSettings {
            cipher_mode: "AES256-CBC".into(),
            key_source: KeySource::Vault {
                server: "vault".into(),
                port: 8200,
                secret: "kv/mongo".into(),
                secret_version: v,
            },
            key_id: format!(
                "vault:vault:8200/kv/mongo{}",
                v.map_or(String::new(), |v| format!("@{v}"))
            ),
        };
        assert_eq!(
            decrypt_problem(Some(&vault(Some(3))), Some(&vault(None))),
            None
        );
        assert!(decrypt_problem(Some(&vault(Some(3))), Some(&vault(Some(4)))).is_some());
        let unreadable = file(&format!("{UNREADABLE_KEY}/etc/k: denied"), "AES256-CBC");
        assert!(!unreadable.key_known());
        assert!(file("keyfile:aa", "AES256-CBC").key_known());
    }
}
