//! Signed control records: the reconciler seals every record an agent acts on (ops,
//! gates, the common point of a backup, slicing assignments) with its ed25519 key, and
//! agents check the seal against the public keys they were given. A writer of the bucket
//! without the private key can then make agents refuse, but never act.
//!
//! The seal is a `signature` field inside the record: `{key, sig}`, where `key` is the
//! signing key's SHA-256 fingerprint (`SHA256:…`, as `ssh-keygen -l` prints it) and `sig`
//! an SSH signature (`SSHSIG`, namespace [`NAMESPACE`], SHA-512) in base64. What is signed
//! is the record's object key, a newline, and the record's JSON without `signature`, in
//! the canonical form [`canonical`] gives. Binding the key means a sealed record is valid
//! only where it was written: a gate cannot be copied to another op, nor an op to another
//! id. Keys are OpenSSH keys, so `ssh-keygen -t ed25519` makes them as well as
//! `tidemark keygen` does.

use serde::{Deserialize, Serialize};
use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

/// The SSH signature namespace of control records: a signature made for git, or for any
/// other use of the same key, is never valid here.
pub const NAMESPACE: &str = "tidemark-control";

/// The field a sealed record carries.
pub const FIELD: &str = "signature";

/// A record's seal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// The signing key's fingerprint, `SHA256:…`.
    pub key: String,
    /// The `SSHSIG` blob in standard base64.
    pub sig: String,
}

/// Why a record is not trusted. An agent refuses it and says which of these it was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("it carries no signature")]
    Unsigned,
    #[error("it is signed by key {fingerprint}, which is not a trusted key here")]
    UnknownKey { fingerprint: String },
    #[error(
        "its signature by key {fingerprint} does not match its content: a signed field was \
         changed after signing, or the record was moved from another key"
    )]
    Tampered { fingerprint: String },
    #[error("its signature cannot be read: {0}")]
    Malformed(String),
}

/// A key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not an OpenSSH private key: {0}")]
    Private(String),
    #[error("the signing key must be an ed25519 key, not {0}")]
    Algorithm(String),
    #[error("line {line}: not an OpenSSH public key ({why})")]
    Public { line: usize, why: String },
    #[error("no key in it: give one `ssh-ed25519 AAAA… comment` line per trusted key")]
    Empty,
}

/// The reconciler's private key.
#[derive(Clone)]
pub struct Signer {
    key: PrivateKey,
    fingerprint: String,
    /// Public keys this reconciler signed with before a rotation: what they sealed is
    /// still read back as its own until those operations end.
    previous: TrustedKeys,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        write!(f, "Signer({})", self.fingerprint)
    }
}

impl Signer {
    /// Reads an OpenSSH private key (`-----BEGIN OPENSSH PRIVATE KEY-----`, unencrypted).
    pub fn from_openssh(text: &str) -> Result<Signer, KeyError> {
        let key =
            PrivateKey::from_openssh(text.trim()).map_err(|e| KeyError::Private(e.to_string()))?;
        if key.is_encrypted() {
            return Err(KeyError::Private(
                "it is encrypted with a passphrase; the reconciler runs unattended, so give \
                 it an unencrypted key kept in a secret store"
                    .into(),
            ));
        }
        if key.algorithm() != ssh_key::Algorithm::Ed25519 {
            return Err(KeyError::Algorithm(key.algorithm().to_string()));
        }
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        Ok(Signer {
            key,
            fingerprint,
            previous: TrustedKeys::default(),
        })
    }

    /// A new random key pair.
    pub fn generate() -> Signer {
        let key = PrivateKey::random(&mut ssh_key::rand_core::OsRng, ssh_key::Algorithm::Ed25519)
            .expect("ed25519 key generation does not fail");
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        Signer {
            key,
            fingerprint,
            previous: TrustedKeys::default(),
        }
    }

    /// The private key in OpenSSH form, for a file only its owner reads.
    pub fn to_openssh(&self) -> String {
        self.key
            .to_openssh(LineEnding::LF)
            .expect("an ed25519 key encodes")
            .to_string()
    }

    /// The public key as one `ssh-ed25519 AAAA… comment` line, for `--trusted-keys`.
    pub fn public_openssh(&self, comment: &str) -> String {
        let mut public = self.key.public_key().clone();
        public.set_comment(comment);
        public.to_openssh().expect("an ed25519 public key encodes")
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The same signer, also reading back as its own what `previous` keys sealed.
    pub fn with_previous(self, previous: TrustedKeys) -> Signer {
        Signer { previous, ..self }
    }

    /// Whether `record`, read at `key`, carries this reconciler's seal (or a previous
    /// key's): the reconciler re-reads what it wrote (ops, results, assignments) and must
    /// not take a record someone else wrote or edited for its own.
    pub fn verify_own(&self, key: &str, record: &serde_json::Value) -> Result<(), Refusal> {
        let own = TrustedKeys {
            keys: vec![(self.fingerprint.clone(), self.key.public_key().clone())],
        }
        .merge(self.previous.clone());
        own.check(key, record).map(|_| ())
    }

    /// Whether `record` carries the current key's seal (not a previous one's): records
    /// rewritten freely, such as slicing assignments, are sealed again after a rotation.
    pub fn verify_current(&self, key: &str, record: &serde_json::Value) -> Result<(), Refusal> {
        let current = TrustedKeys {
            keys: vec![(self.fingerprint.clone(), self.key.public_key().clone())],
        };
        current.check(key, record).map(|_| ())
    }

    /// `record` as JSON with its seal for object key `key`.
    pub fn seal<T: Serialize>(&self, key: &str, record: &T) -> serde_json::Value {
        let mut value = serde_json::to_value(record).expect("control records serialize");
        if let Some(map) = value.as_object_mut() {
            map.remove(FIELD);
        }
        let sig = self
            .key
            .sign(NAMESPACE, HashAlg::Sha512, &message(key, &value))
            .expect("ed25519 signing does not fail");
        let blob = sig
            .to_pem(LineEnding::LF)
            .expect("an SSH signature encodes");
        let seal = Seal {
            key: self.fingerprint.clone(),
            sig: armor_to_base64(&blob),
        };
        if let Some(map) = value.as_object_mut() {
            map.insert(
                FIELD.into(),
                serde_json::to_value(seal).expect("a seal serializes"),
            );
        }
        value
    }
}

/// The public keys an agent trusts.
#[derive(Clone, Debug, Default)]
pub struct TrustedKeys {
    keys: Vec<(String, PublicKey)>,
}

impl TrustedKeys {
    /// One OpenSSH public key per line (`ssh-ed25519 AAAA… comment`); blank lines and
    /// `#` comments are skipped. Every bad line is reported, each with its number.
    pub fn parse(text: &str) -> Result<TrustedKeys, Vec<KeyError>> {
        let mut keys = Vec::new();
        let mut errors = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match PublicKey::from_openssh(line) {
                Ok(key) if key.algorithm() == ssh_key::Algorithm::Ed25519 => {
                    keys.push((key.fingerprint(HashAlg::Sha256).to_string(), key))
                }
                Ok(key) => errors.push(KeyError::Public {
                    line: i + 1,
                    why: format!(
                        "{} keys are not accepted, only ssh-ed25519",
                        key.algorithm()
                    ),
                }),
                Err(e) => errors.push(KeyError::Public {
                    line: i + 1,
                    why: e.to_string(),
                }),
            }
        }
        if errors.is_empty() && keys.is_empty() {
            errors.push(KeyError::Empty);
        }
        if errors.is_empty() {
            Ok(TrustedKeys { keys })
        } else {
            Err(errors)
        }
    }

    /// These keys and `other`'s.
    pub fn merge(mut self, other: TrustedKeys) -> TrustedKeys {
        for (fp, key) in other.keys {
            if !self.keys.iter().any(|(f, _)| *f == fp) {
                self.keys.push((fp, key));
            }
        }
        self
    }

    pub fn fingerprints(&self) -> Vec<String> {
        self.keys.iter().map(|(fp, _)| fp.clone()).collect()
    }

    /// Checks the record read at object key `key`; on success, the signing key's
    /// fingerprint.
    pub fn check(&self, key: &str, record: &serde_json::Value) -> Result<String, Refusal> {
        let Some(raw) = record.get(FIELD) else {
            return Err(Refusal::Unsigned);
        };
        let seal: Seal =
            serde_json::from_value(raw.clone()).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let Some((_, public)) = self.keys.iter().find(|(fp, _)| *fp == seal.key) else {
            return Err(Refusal::UnknownKey {
                fingerprint: printable(&seal.key),
            });
        };
        // Whoever wrote the record chose this text: only base64 goes into the armor.
        if !seal
            .sig
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        {
            return Err(Refusal::Malformed("the signature is not base64".into()));
        }
        let sig = SshSig::from_pem(base64_to_armor(&seal.sig))
            .map_err(|e| Refusal::Malformed(e.to_string()))?;
        let mut unsealed = record.clone();
        if let Some(map) = unsealed.as_object_mut() {
            map.remove(FIELD);
        }
        public
            .verify(NAMESPACE, &message(key, &unsealed), &sig)
            .map_err(|_| Refusal::Tampered {
                fingerprint: seal.key.clone(),
            })?;
        Ok(seal.key)
    }
}

/// A fingerprint from a record, as shown in logs and `status`: whoever wrote the record
/// chose it, so it is cut short and stripped of anything but the characters a real one has.
fn printable(fingerprint: &str) -> String {
    fingerprint
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '+' | '/' | '='))
        .take(80)
        .collect()
}

/// What is signed: the object key and the record in canonical JSON.
fn message(key: &str, record: &serde_json::Value) -> Vec<u8> {
    let mut out = key.as_bytes().to_vec();
    out.push(b'\n');
    out.extend(canonical(record));
    out
}

/// The record's JSON with every object's members sorted by name and no spaces. Sorting
/// here (rather than relying on the map type) keeps signer and checker byte-equal
/// whatever order the writer used and whatever `serde_json` features a build enables.
pub fn canonical(value: &serde_json::Value) -> Vec<u8> {
    fn sorted(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&map[k]));
                }
                serde_json::Value::Object(out)
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(sorted).collect())
            }
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sorted(value)).expect("JSON values serialize")
}

/// The body of an `-----BEGIN SSH SIGNATURE-----` armor as one base64 string.
fn armor_to_base64(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>()
}

/// The armor back around a seal's base64 (PEM decoding checks it is base64).
fn base64_to_armor(b64: &str) -> String {
    let mut out = String::from("-----BEGIN SSH SIGNATURE-----\n");
    for chunk in b64.as_bytes().chunks(70) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END SSH SIGNATURE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn trusted(signers: &[&Signer]) -> TrustedKeys {
        let text: Vec<String> = signers.iter().map(|s| s.public_openssh("t")).collect();
        TrustedKeys::parse(&text.join("\n")).unwrap()
    }

    #[test]
    fn a_sealed_record_is_trusted_where_it_was_written_and_nowhere_else() {
        let signer = Signer::generate();
        let keys = trusted(&[&signer]);
        let op = json!({"id": "op1", "command": {"kind": "restore", "backup": "b1"}});
        let sealed = signer.seal("ops/op1/op.json", &op);
        assert_eq!(
            keys.check("ops/op1/op.json", &sealed),
            Ok(signer.fingerprint().to_string())
        );
        assert!(matches!(
            keys.check("ops/op2/op.json", &sealed),
            Err(Refusal::Tampered { .. })
        ));
    }

    #[test]
    fn an_edited_field_an_unknown_key_and_no_seal_are_refused() {
        let signer = Signer::generate();
        let other = Signer::generate();
        let keys = trusted(&[&signer]);
        let op = json!({"id": "op1", "command": {"kind": "backup", "backup": "b1"}});
        let mut edited = signer.seal("k", &op);
        edited["command"]["kind"] = json!("restore");
        assert!(matches!(
            keys.check("k", &edited),
            Err(Refusal::Tampered { .. })
        ));
        let foreign = other.seal("k", &op);
        assert_eq!(
            keys.check("k", &foreign),
            Err(Refusal::UnknownKey {
                fingerprint: other.fingerprint().to_string()
            })
        );
        assert_eq!(keys.check("k", &op), Err(Refusal::Unsigned));
    }

    #[test]
    fn a_seal_that_cannot_be_read_and_a_key_that_is_not_one_are_named() {
        let signer = Signer::generate();
        let keys = trusted(&[&signer]);
        let mut sealed = signer.seal("k", &json!({"id": "x"}));
        // A character across the armor's 70-byte lines, a blob too short, none at all.
        let straddling = format!("{}\u{e9}", "A".repeat(69));
        for sig in [straddling.as_str(), "QUJD", ""] {
            sealed["signature"]["sig"] = json!(sig);
            assert!(
                matches!(keys.check("k", &sealed), Err(Refusal::Malformed(_))),
                "{sig:?}"
            );
        }
        sealed["signature"] = json!("a string");
        assert!(matches!(
            keys.check("k", &sealed),
            Err(Refusal::Malformed(_))
        ));
        assert!(matches!(
            Signer::from_openssh("-----BEGIN OPENSSH PRIVATE KEY-----\nnope\n"),
            Err(KeyError::Private(_))
        ));
    }

    #[test]
    fn member_order_does_not_matter_and_keys_round_trip() {
        let signer = Signer::from_openssh(&Signer::generate().to_openssh()).unwrap();
        let keys = trusted(&[&Signer::generate(), &signer]);
        let sealed = signer.seal("k", &json!({"b": 1, "a": {"y": 2.5, "x": [1, "z"]}}));
        let text = serde_json::to_string(&sealed).unwrap();
        let reordered: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(keys.check("k", &reordered).is_ok());
    }

    #[test]
    fn bad_trusted_keys_lines_are_each_named() {
        let good = Signer::generate().public_openssh("ok");
        let errors = TrustedKeys::parse(&format!(
            "# rotation\n{good}\nnot a key\n\nssh-ed25519 @@@\n"
        ))
        .unwrap_err();
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("line 3:"), "{lines:?}");
        assert!(lines[1].starts_with("line 5:"), "{lines:?}");
        assert!(matches!(
            TrustedKeys::parse("# none\n").unwrap_err()[..],
            [KeyError::Empty]
        ));
    }
}
