//! Data-at-rest encryption as PSMDB offers it, to the degree tidemark depends on it: with
//! `--enableEncryption`, every `.wt` payload and journal record is unreadable without the
//! master key, and a key database (`key.db/`) tells at start-up whether the key given is
//! the one the data was written with. A wrong key, or encrypted data opened without
//! encryption (or the reverse), stops start-up with a fatal log line, as PSMDB does.
//!
//! The master key comes from `--encryptionKeyFile` (the file's content), or, since a test
//! has no Vault or KMIP server, from the Vault secret (server, port, path, version) or
//! the KMIP key identifier (server, port, key id) named on the command line. The cipher
//! mode is part of the key: data written with AES256-CBC does not open as AES256-GCM.
//! The "cipher" is a SHA-256 keystream: a simulator needs unreadable, not secure.

use std::path::Path;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// The key database's check file, relative to the dbPath (listed by `$backupCursor`).
pub const KEYDB_FILE: &str = "key.db/WiredTigerKeys.sim";

static MASTER: OnceLock<Option<[u8; 32]>> = OnceLock::new();

/// Where the master key comes from, as the command line says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encryption {
    pub enabled: bool,
    pub cipher_mode: String,
    pub key_file: Option<String>,
    pub vault: Option<VaultSource>,
    pub kmip: Option<KmipSource>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VaultSource {
    pub server: String,
    pub port: u16,
    pub secret: String,
    pub secret_version: Option<u32>,
    pub token_file: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KmipSource {
    pub server: String,
    pub port: u16,
    pub key_identifier: String,
}

impl Encryption {
    /// The master key, or why there is none.
    pub fn master_key(&self) -> Result<Option<[u8; 32]>, String> {
        if !self.enabled {
            return Ok(None);
        }
        let material = match (&self.key_file, &self.vault, &self.kmip) {
            (Some(path), None, None) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read encryption key file {path}: {e}"))?
                .trim()
                .to_string(),
            (None, Some(v), None) => format!(
                "vault|{}|{}|{}|{:?}",
                v.server, v.port, v.secret, v.secret_version
            ),
            (None, None, Some(k)) => format!("kmip|{}|{}|{}", k.server, k.port, k.key_identifier),
            (None, None, None) => {
                return Err(
                    "--enableEncryption needs a key source: --encryptionKeyFile, the \
                            Vault options or the KMIP options"
                        .into(),
                );
            }
            _ => return Err("give exactly one encryption key source".into()),
        };
        if material.is_empty() {
            return Err("the encryption key is empty".into());
        }
        let mut h = Sha256::new();
        h.update(self.cipher_mode.as_bytes());
        h.update(b"|");
        h.update(material.as_bytes());
        Ok(Some(h.finalize().into()))
    }
}

/// Sets the process's master key once, at start-up.
pub fn set_master_key(key: Option<[u8; 32]>) {
    let _ = MASTER.set(key);
}

fn master() -> Option<&'static [u8; 32]> {
    MASTER.get().and_then(Option::as_ref)
}

/// XORs `data` with the keystream of `nonce` (no-op without encryption). Its own inverse.
pub fn apply(nonce: &[u8], data: &mut [u8]) {
    let Some(key) = master() else {
        return;
    };
    for (i, chunk) in data.chunks_mut(32).enumerate() {
        let mut h = Sha256::new();
        h.update(key);
        h.update(nonce);
        h.update((i as u64).to_le_bytes());
        let block = h.finalize();
        for (b, k) in chunk.iter_mut().zip(block.iter()) {
            *b ^= k;
        }
    }
}

fn check_value(key: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(key);
    h.update(b"mongod-sim key database check");
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// At start-up: creates the key database of a new encrypted dbPath, or checks that the
/// key (or its absence) matches the data. `Err` is the fatal message.
pub fn check_keydb(dbpath: &Path, fresh: bool) -> Result<(), String> {
    let path = dbpath.join(KEYDB_FILE);
    let stored = std::fs::read_to_string(&path).ok();
    match (master(), stored) {
        (None, None) => Ok(()),
        (Some(key), None) if fresh => std::fs::create_dir_all(path.parent().expect("has a parent"))
            .and_then(|_| std::fs::write(&path, check_value(key)))
            .map_err(|e| format!("cannot create the key database {}: {e}", path.display())),
        (Some(_), None) => Err(format!(
            "Encryption is enabled but {} holds unencrypted data (no key database); \
             encrypt an existing node by initial sync",
            dbpath.display()
        )),
        (None, Some(_)) => Err(format!(
            "{} holds encrypted data (it has a key database), but encryption is not enabled; \
             start with --enableEncryption and the master key it was written with",
            dbpath.display()
        )),
        (Some(key), Some(check)) if check.trim() == check_value(key) => Ok(()),
        (Some(_), Some(_)) => Err(format!(
            "Unable to decrypt the key database {}: the master key does not match the one the \
             data was encrypted with",
            path.display()
        )),
    }
}
