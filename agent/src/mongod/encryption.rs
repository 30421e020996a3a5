//! This node's encryption at rest, read from `getCmdLineOpts` (`parsed.security`): the
//! cipher mode and key source, and an identifier of the master key that does not reveal
//! it. Also the command-line options a temporary standalone start needs to open
//! encrypted files, passed through as the node has them (key file, Vault, KMIP).

use bson::Document;
use tidemark_schema::encryption::{EncryptionSettings, KeySource};

/// The label that keys the hash of a key file's content: a `key_id` is one-way and
/// means nothing outside tidemark.
const KEY_ID_CONTEXT: &str = "tidemark 2026-11 master key identifier";

fn security(cmdline: &Document) -> Option<&Document> {
    cmdline
        .get_document("parsed")
        .ok()?
        .get_document("security")
        .ok()
        .filter(|s| s.get_bool("enableEncryption").unwrap_or(false))
}

fn port(d: &Document, default: u16) -> u16 {
    d.get("port")
        .and_then(|p| p.as_i32().map(i64::from).or_else(|| p.as_i64()))
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(default)
}

/// The node's settings, or `None` when encryption is off.
pub fn settings(cmdline: &Document) -> Option<EncryptionSettings> {
    let sec = security(cmdline)?;
    let cipher_mode = sec
        .get_str("encryptionCipherMode")
        .unwrap_or("AES256-CBC")
        .to_string();
    let (key_source, key_id) = if let Ok(path) = sec.get_str("encryptionKeyFile") {
        let id = match std::fs::read(path) {
            Ok(bytes) => {
                let content = String::from_utf8_lossy(&bytes);
                let hash = blake3::derive_key(KEY_ID_CONTEXT, content.trim().as_bytes());
                let hex: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
                format!("keyfile:{hex}")
            }
            // Compared as a mismatch, saying why: better than guessing it matches.
            Err(e) => format!("{}{path}: {e}", tidemark_schema::encryption::UNREADABLE_KEY),
        };
        (
            KeySource::KeyFile {
                path: path.to_string(),
            },
            id,
        )
    } else if let Ok(v) = sec.get_document("vault") {
        let server = v.get_str("serverName").unwrap_or_default().to_string();
        let port = port(v, 8200);
        let secret = v.get_str("secret").unwrap_or_default().to_string();
        let secret_version = v
            .get("secretVersion")
            .and_then(|n| n.as_i64().or_else(|| n.as_i32().map(i64::from)))
            .and_then(|n| u32::try_from(n).ok());
        let id = format!(
            "vault:{server}:{port}/{secret}{}",
            secret_version.map_or(String::new(), |n| format!("@{n}"))
        );
        (
            KeySource::Vault {
                server,
                port,
                secret,
                secret_version,
            },
            id,
        )
    } else if let Ok(k) = sec.get_document("kmip") {
        let server = k.get_str("serverName").unwrap_or_default().to_string();
        let port = port(k, 5696);
        let key_id = k.get_str("keyIdentifier").unwrap_or_default().to_string();
        let id = format!("kmip:{server}:{port}/{key_id}");
        (
            KeySource::Kmip {
                server,
                port,
                key_id,
            },
            id,
        )
    } else {
        (
            KeySource::KeyFile {
                path: String::new(),
            },
            "no-key-source".to_string(),
        )
    };
    Some(EncryptionSettings {
        cipher_mode,
        key_source,
        key_id,
    })
}

/// The options a standalone start needs to open this node's encrypted files: the node's
/// own key source, exactly as its command line has it.
pub fn key_source_args(cmdline: &Document) -> Vec<String> {
    let Some(sec) = security(cmdline) else {
        return Vec::new();
    };
    let mut args = vec!["--enableEncryption".to_string()];
    fn push(args: &mut Vec<String>, name: &str, value: Option<String>) {
        if let Some(v) = value {
            args.push(format!("--{name}"));
            args.push(v);
        }
    }
    let text = |d: &Document, k: &str| d.get_str(k).ok().map(str::to_string);
    let number = |d: &Document, k: &str| {
        d.get(k)
            .and_then(|n| n.as_i64().or_else(|| n.as_i32().map(i64::from)))
            .map(|n| n.to_string())
    };
    push(
        &mut args,
        "encryptionCipherMode",
        text(sec, "encryptionCipherMode"),
    );
    push(
        &mut args,
        "encryptionKeyFile",
        text(sec, "encryptionKeyFile"),
    );
    if let Ok(v) = sec.get_document("vault") {
        push(&mut args, "vaultServerName", text(v, "serverName"));
        push(&mut args, "vaultPort", number(v, "port"));
        push(&mut args, "vaultSecret", text(v, "secret"));
        push(&mut args, "vaultSecretVersion", number(v, "secretVersion"));
        push(&mut args, "vaultTokenFile", text(v, "tokenFile"));
        push(&mut args, "vaultServerCAFile", text(v, "serverCAFile"));
        if v.get_bool("disableTLSForTesting").unwrap_or(false) {
            args.push("--vaultDisableTLSForTesting".into());
        }
        if let Ok(check) = v.get_bool("checkMaxVersions") {
            args.push(format!("--vaultCheckMaxVersions={check}"));
        }
    }
    if let Ok(k) = sec.get_document("kmip") {
        push(&mut args, "kmipServerName", text(k, "serverName"));
        push(&mut args, "kmipPort", number(k, "port"));
        push(&mut args, "kmipKeyIdentifier", text(k, "keyIdentifier"));
        push(&mut args, "kmipServerCAFile", text(k, "serverCAFile"));
        push(
            &mut args,
            "kmipClientCertificateFile",
            text(k, "clientCertificateFile"),
        );
    }
    args
}

/// The layout options a standalone start needs to find the backup's files, from the
/// storage options its manifest recorded (never from the target node's).
pub fn layout_args(
    storage_options: &std::collections::BTreeMap<String, serde_json::Value>,
) -> Vec<String> {
    let mut args = Vec::new();
    if storage_options
        .get("directoryPerDB")
        .and_then(|v| v.as_bool())
        == Some(true)
    {
        args.push("--directoryperdb".to_string());
    }
    let for_indexes = storage_options
        .get("wiredTiger")
        .and_then(|w| w.get("engineConfig"))
        .and_then(|e| e.get("directoryForIndexes"))
        .and_then(|v| v.as_bool());
    if for_indexes == Some(true) {
        args.push("--wiredTigerDirectoryForIndexes".to_string());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn key_files_are_told_apart_without_the_key_and_vault_passes_through() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        std::fs::write(&key, "c2VjcmV0\n").unwrap();
        let path = key.to_str().unwrap();
        let opts =
            doc! {"parsed": {"security": {"enableEncryption": true, "encryptionKeyFile": path}}};
        let s = settings(&opts).unwrap();
        assert_eq!(s.cipher_mode, "AES256-CBC");
        assert!(s.key_id.starts_with("keyfile:"), "{s:?}");
        assert!(!s.key_id.contains("c2VjcmV0"));
        std::fs::write(&key, "b3RoZXI=\n").unwrap();
        assert_ne!(settings(&opts).unwrap().key_id, s.key_id);
        assert_eq!(
            key_source_args(&opts),
            ["--enableEncryption", "--encryptionKeyFile", path]
        );
        let vault = doc! {"parsed": {"security": {"enableEncryption": true,
        "encryptionCipherMode": "AES256-GCM",
        "vault": {"serverName": "vault.local", "port": 8200, "secret": "kv/mongo", "secretVersion": 3i64}}}};
        assert_eq!(
            settings(&vault).unwrap().key_id,
            "vault:vault.local:8200/kv/mongo@3"
        );
        assert_eq!(
            key_source_args(&vault),
            [
                "--enableEncryption",
                "--encryptionCipherMode",
                "AES256-GCM",
                "--vaultServerName",
                "vault.local",
                "--vaultPort",
                "8200",
                "--vaultSecret",
                "kv/mongo",
                "--vaultSecretVersion",
                "3"
            ]
        );
        assert!(settings(&doc! {"parsed": {}}).is_none());
    }
}
