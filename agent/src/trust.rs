//! What this agent acts on: records sealed by a key of its `--trusted-keys` files, or
//! anything when it was started with `--insecure-accept-unsigned`. The files are read
//! again whenever they change, so keys rotate without a restart; a refusal is logged
//! and kept for the heartbeat.

use std::path::PathBuf;
use std::sync::Mutex;

use chrono::Utc;
use tidemark_schema::control::signature::{Refusal, TrustedKeys};
use tidemark_schema::control::{RefusedRecord, TrustFacts};

/// How the agent was told to trust.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustSetting {
    /// Files of OpenSSH public keys, one key per line.
    Keys(Vec<PathBuf>),
    /// Act on any record: for playgrounds and tests only.
    AcceptUnsigned,
}

/// What a file looked like when it was last read (modified, changed, size, inode): a
/// change of any of these reads it again. The change time moves on every write, even one
/// that keeps the size and lands within the modification time's granularity.
type Stamp = Option<(std::time::SystemTime, (i64, i64), u64, u64)>;

#[derive(Debug)]
struct State {
    stamps: Vec<Stamp>,
    keys: TrustedKeys,
    keys_error: Option<String>,
    refused_count: u64,
    last_refused: Option<RefusedRecord>,
    /// The last refusal counted (record, reason): the same one again is not counted.
    repeat: Option<(String, String)>,
}

#[derive(Debug)]
pub struct Trust {
    setting: TrustSetting,
    state: Mutex<State>,
}

/// The keys could not be read at start.
#[derive(Debug, thiserror::Error)]
#[error("--trusted-keys: {0}")]
pub struct TrustError(String);

impl Trust {
    /// Reads the key files now: an agent that cannot read them must not start.
    pub fn new(setting: TrustSetting) -> Result<Trust, TrustError> {
        let (stamps, keys) = match &setting {
            TrustSetting::Keys(paths) => read_all(paths).map_err(TrustError)?,
            TrustSetting::AcceptUnsigned => (Vec::new(), TrustedKeys::default()),
        };
        Ok(Trust {
            setting,
            state: Mutex::new(State {
                stamps,
                keys,
                keys_error: None,
                refused_count: 0,
                last_refused: None,
                repeat: None,
            }),
        })
    }

    /// Acts on any record (`--insecure-accept-unsigned`).
    pub fn accept_unsigned() -> Trust {
        Trust::new(TrustSetting::AcceptUnsigned).expect("no file to read")
    }

    /// Whether the record read at object `key` may be acted on. A refusal is logged and
    /// remembered for the heartbeat; the caller says what it does instead.
    pub fn check(&self, key: &str, record: &serde_json::Value) -> Result<(), Refusal> {
        let TrustSetting::Keys(paths) = &self.setting else {
            return Ok(());
        };
        let mut state = self.state.lock().expect("trust state");
        reload_if_changed(paths, &mut state);
        match state.keys.check(key, record) {
            Ok(_) => {
                // Trusted now: a later refusal of the same record is news again.
                if state.last_refused.as_ref().is_some_and(|r| r.key == key) {
                    state.repeat = None;
                }
                Ok(())
            }
            Err(refusal) => {
                // The same record refused again (a slicing assignment read at every ring):
                // counted and logged once, so the heartbeat does not change at every look.
                let reason = refusal.to_string();
                let this = (key.to_string(), reason.clone());
                if state.repeat.as_ref() == Some(&this) {
                    return Err(refusal);
                }
                state.repeat = Some(this);
                tracing::error!(record = key, reason = %refusal, "refused an untrusted control record");
                state.refused_count += 1;
                state.last_refused = Some(RefusedRecord {
                    key: key.to_string(),
                    reason,
                    at: Utc::now(),
                });
                Err(refusal)
            }
        }
    }

    /// For the heartbeat. Also looks at the key files, so a rotation shows at once.
    pub fn facts(&self) -> TrustFacts {
        let mut state = self.state.lock().expect("trust state");
        if let TrustSetting::Keys(paths) = &self.setting {
            reload_if_changed(paths, &mut state);
        }
        TrustFacts {
            accepts_unsigned: self.setting == TrustSetting::AcceptUnsigned,
            keys: state.keys.fingerprints(),
            refused_count: state.refused_count,
            last_refused: state.last_refused.clone(),
            keys_error: state.keys_error.clone(),
        }
    }
}

fn stamp(path: &std::path::Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.modified().ok()?,
        (m.ctime(), m.ctime_nsec()),
        m.len(),
        m.ino(),
    ))
}

/// The keys of OpenSSH public-key files; an error names the file and every bad line.
pub fn read_key_files(paths: &[PathBuf]) -> Result<TrustedKeys, String> {
    read_all(paths).map(|(_, keys)| keys)
}

fn read_all(paths: &[PathBuf]) -> Result<(Vec<Stamp>, TrustedKeys), String> {
    let mut keys = TrustedKeys::default();
    let mut stamps = Vec::new();
    for path in paths {
        stamps.push(stamp(path));
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let parsed = TrustedKeys::parse(&text).map_err(|errors| {
            let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            format!("{}: {}", path.display(), lines.join("; "))
        })?;
        keys = keys.merge(parsed);
    }
    Ok((stamps, keys))
}

/// A file that changed is read again. One that cannot be read (deleted, emptied, a bad
/// line) makes the agent trust nothing until it can: removing a leaked key must take
/// effect even when the file was emptied or broken on the way. Why is in the heartbeat.
fn reload_if_changed(paths: &[PathBuf], state: &mut State) {
    let now: Vec<Stamp> = paths.iter().map(|p| stamp(p)).collect();
    if now == state.stamps {
        return;
    }
    match read_all(paths) {
        Ok((stamps, keys)) => {
            tracing::info!(keys = ?keys.fingerprints(), "trusted keys read again");
            state.stamps = stamps;
            state.keys = keys;
            state.keys_error = None;
        }
        Err(e) => {
            if state.keys_error.as_deref() != Some(e.as_str()) {
                tracing::error!(error = %e, "cannot read the trusted keys again; trusting no key until they can be read");
            }
            state.stamps = now;
            state.keys = TrustedKeys::default();
            state.keys_error = Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_schema::control::signature::Signer;

    #[test]
    fn a_rewritten_key_file_is_read_again_and_a_broken_one_trusts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("trusted");
        let (a, b) = (Signer::generate(), Signer::generate());
        let both = format!("{}\n{}\n", a.public_openssh("a"), b.public_openssh("b"));
        std::fs::write(&file, &both).unwrap();
        let trust = Trust::new(TrustSetting::Keys(vec![file.clone()])).unwrap();
        let op = serde_json::json!({"id": "x"});
        assert!(trust.check("k", &a.seal("k", &op)).is_ok());
        assert!(trust.check("k", &b.seal("k", &op)).is_ok());
        // Rotation: only b stays. A new file (new inode) is what an editor or a deploy writes.
        let next = dir.path().join("next");
        std::fs::write(&next, format!("{}\n", b.public_openssh("b"))).unwrap();
        std::fs::rename(&next, &file).unwrap();
        assert!(matches!(
            trust.check("k", &a.seal("k", &op)),
            Err(Refusal::UnknownKey { .. })
        ));
        assert!(trust.check("k", &b.seal("k", &op)).is_ok());
        std::fs::write(&file, "garbage\n").unwrap();
        assert!(matches!(
            trust.check("k", &b.seal("k", &op)),
            Err(Refusal::UnknownKey { .. })
        ));
        let facts = trust.facts();
        assert!(facts.keys.is_empty());
        assert_eq!(facts.refused_count, 2);
        assert!(facts.keys_error.unwrap().contains("line 1"));
        assert_eq!(facts.last_refused.unwrap().key, "k");
        // Repaired: trusted again without a restart.
        std::fs::write(&file, format!("{}\n", b.public_openssh("b"))).unwrap();
        assert!(trust.check("k", &b.seal("k", &op)).is_ok());
    }
}
