//! Signing keys: `tidemark keygen`, the reconciler's private key (`TIDEMARK_SIGNING_KEY`
//! or `--signing-key-file`) and the agents' trusted public keys.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tidemark_schema::control::signature::Signer;

use super::args::KeygenArgs;
use super::exit::ExitStatus;

/// The variable that holds the private key itself (for secret stores that inject
/// variables, not files). Never logged, never passed on to a child process.
pub const SIGNING_KEY_VAR: &str = "TIDEMARK_SIGNING_KEY";

/// The reconciler's signing key, from `TIDEMARK_SIGNING_KEY` or the file, with the public
/// keys it signed with before (`--previous-signing-keys`); `None` when no key is given.
pub fn load_signer(file: Option<&Path>, previous: Option<&Path>) -> anyhow::Result<Option<Signer>> {
    match (load_key(file)?, previous) {
        (signer, None) => Ok(signer),
        (None, Some(_)) => {
            anyhow::bail!("--previous-signing-keys needs a signing key to go with it")
        }
        (Some(signer), Some(path)) => {
            let keys = tidemark_agent::trust::read_key_files(&[path.to_path_buf()])
                .map_err(|e| anyhow::anyhow!("--previous-signing-keys {e}"))?;
            Ok(Some(signer.with_previous(keys)))
        }
    }
}

/// Both `TIDEMARK_SIGNING_KEY` and a file is an error: which one signs must never be a
/// guess.
fn load_key(file: Option<&Path>) -> anyhow::Result<Option<Signer>> {
    let from_env = std::env::var(SIGNING_KEY_VAR)
        .ok()
        .filter(|v| !v.trim().is_empty());
    match (from_env, file) {
        (Some(_), Some(path)) => anyhow::bail!(
            "both {SIGNING_KEY_VAR} and --signing-key-file {} are set; give one",
            path.display()
        ),
        (Some(text), None) => {
            // SAFETY: called from `reconcile` before its runtime starts, while this
            // process has one thread. Removed so that no child process inherits the key.
            unsafe { std::env::remove_var(SIGNING_KEY_VAR) };
            Signer::from_openssh(&text)
                .map(Some)
                .context(SIGNING_KEY_VAR)
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--signing-key-file {}", path.display()))?;
            Signer::from_openssh(&text)
                .map(Some)
                .with_context(|| format!("--signing-key-file {}", path.display()))
        }
        (None, None) => Ok(None),
    }
}

/// Writes a new key pair: `PATH` (private, readable by its owner only, never
/// overwritten) and `PATH.pub` (one line for the agents' `--trusted-keys`).
pub fn write_key_pair(path: &Path, comment: &str) -> anyhow::Result<(Signer, PathBuf)> {
    let signer = Signer::generate();
    let public = PathBuf::from(format!("{}.pub", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("{}: not overwritten", path.display()))?;
    file.write_all(signer.to_openssh().as_bytes())
        .and_then(|_| file.sync_all())
        .with_context(|| path.display().to_string())?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&public)
        .and_then(|mut f| f.write_all(format!("{}\n", signer.public_openssh(comment)).as_bytes()))
        .with_context(|| format!("{}: not overwritten", public.display()))?;
    Ok((signer, public))
}

pub fn keygen(args: KeygenArgs) -> anyhow::Result<ExitStatus> {
    let (signer, public) = write_key_pair(&args.out, &args.comment)?;
    println!(
        "private key: {} (give it to the reconciler: --signing-key-file, or its content in {SIGNING_KEY_VAR})",
        args.out.display()
    );
    println!(
        "public key:  {} (give it to every agent: --trusted-keys)",
        public.display()
    );
    println!("fingerprint: {}", signer.fingerprint());
    Ok(ExitStatus::Ok)
}
