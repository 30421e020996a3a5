//! Signed commits: with `--verify-commits --allowed-signers FILE`, a commit is applied
//! only when it carries an SSH signature (`git config gpg.format ssh`) by a key listed in
//! FILE, in git's own allowed-signers format. A refused commit is reported like a revision
//! that does not validate: the last good revision stays in force.

use std::path::{Path, PathBuf};

use ssh_key::{HashAlg, PublicKey, SshSig};

/// The namespace git signs commits in.
const GIT_NAMESPACE: &str = "git";

/// One line of the allowed-signers file.
#[derive(Clone, Debug)]
struct Signer {
    principals: String,
    key: PublicKey,
    /// `namespaces="…"`: the key is valid only for these.
    namespaces: Option<Vec<String>>,
}

/// The keys whose commits are applied.
#[derive(Clone, Debug)]
pub struct AllowedSigners {
    path: PathBuf,
    signers: Vec<Signer>,
}

impl AllowedSigners {
    /// Reads FILE; every bad line is reported with its number.
    pub fn read(path: &Path) -> Result<AllowedSigners, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--allowed-signers {}: {e}", path.display()))?;
        Self::parse(path, &text).map_err(|errors| {
            format!(
                "--allowed-signers {}: {}",
                path.display(),
                errors.join("; ")
            )
        })
    }

    fn parse(path: &Path, text: &str) -> Result<AllowedSigners, Vec<String>> {
        let mut signers = Vec::new();
        let mut errors = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_line(line) {
                Ok(s) => signers.push(s),
                Err(e) => errors.push(format!("line {}: {e}", i + 1)),
            }
        }
        if signers.is_empty() && errors.is_empty() {
            errors.push("no signer in it: give `principal ssh-ed25519 AAAA…` lines".into());
        }
        match errors.is_empty() {
            true => Ok(AllowedSigners {
                path: path.to_path_buf(),
                signers,
            }),
            false => Err(errors),
        }
    }

    /// Whether `signature` over `signed` (as `git2::Repository::extract_signature`
    /// returns them; `None` for an unsigned commit) is by an allowed signer: its
    /// principals, or why not.
    pub fn verify(&self, commit: &str, signature: Option<(&str, &[u8])>) -> Result<String, String> {
        let short = &commit[..commit.len().min(12)];
        let Some((armored, signed)) = signature else {
            return Err(format!(
                "commit {short} is not signed; with --verify-commits only commits signed by a key \
                 of {} are applied",
                self.path.display()
            ));
        };
        if !armored
            .trim_start()
            .starts_with("-----BEGIN SSH SIGNATURE-----")
        {
            return Err(format!(
                "commit {short} has an OpenPGP or X.509 signature; tidemark verifies SSH \
                 signatures only (git config gpg.format ssh)"
            ));
        }
        let sig = SshSig::from_pem(armored.trim())
            .map_err(|e| format!("commit {short}: its signature cannot be read: {e}"))?;
        let key = PublicKey::from(sig.public_key().clone());
        let fingerprint = key.fingerprint(HashAlg::Sha256);
        let listed: Vec<&Signer> = self
            .signers
            .iter()
            .filter(|s| s.key.key_data() == key.key_data())
            .collect();
        let Some(first) = listed.first() else {
            return Err(format!(
                "commit {short} is signed by key {fingerprint}, which is not in {}",
                self.path.display()
            ));
        };
        // A key may have several lines (one for files, one for git): any allowing git.
        let for_git = listed.iter().find(|s| {
            s.namespaces
                .as_ref()
                .is_none_or(|n| n.iter().any(|n| n == GIT_NAMESPACE))
        });
        let Some(signer) = for_git else {
            return Err(format!(
                "commit {short} is signed by {} ({fingerprint}), whose line in {} does not \
                 allow the \"git\" namespace",
                first.principals,
                self.path.display()
            ));
        };
        if sig.namespace() != GIT_NAMESPACE {
            return Err(format!(
                "commit {short}: its signature is for namespace {:?}, not \"git\"",
                sig.namespace()
            ));
        }
        signer
            .key
            .verify(GIT_NAMESPACE, signed, &sig)
            .map_err(|_| {
                format!(
                    "commit {short}: its signature by {} ({fingerprint}) does not match the \
                     commit's content",
                    signer.principals
                )
            })?;
        Ok(signer.principals.clone())
    }
}

/// `principals [options] keytype base64 [comment]`, as `ssh-keygen -Y verify` reads it.
/// Options other than `namespaces` are refused rather than ignored: a `valid-before`
/// silently not enforced would trust a key its owner meant to expire.
fn parse_line(line: &str) -> Result<Signer, String> {
    let (principals, rest) = split_token(line);
    if rest.is_empty() {
        return Err("a principal and a key are needed".into());
    }
    // The key starts at the first token that reads as one; what is between is options.
    let tokens: Vec<&str> = rest.split_whitespace().collect();
    for start in 0..tokens.len() {
        if let Ok(key) = PublicKey::from_openssh(&tokens[start..].join(" ")) {
            let options = tokens[..start].join(" ");
            return Ok(Signer {
                principals: principals.trim_matches('"').to_string(),
                key,
                namespaces: namespaces(&options)?,
            });
        }
    }
    Err("no OpenSSH public key (such as `ssh-ed25519 AAAA…`) on the line".into())
}

fn split_token(line: &str) -> (&str, &str) {
    if let Some(quoted) = line.strip_prefix('"')
        && let Some(end) = quoted.find('"')
    {
        return (&line[..end + 2], line[end + 2..].trim());
    }
    match line.split_once(char::is_whitespace) {
        Some((a, b)) => (a, b.trim()),
        None => (line, ""),
    }
}

/// The options before the key: `name` or `name=value` / `name="value"`, separated by
/// commas outside quotes; names are case-insensitive, as OpenSSH reads them.
fn namespaces(options: &str) -> Result<Option<Vec<String>>, String> {
    let mut found = None;
    for option in split_options(options)? {
        let (name, value) = option.split_once('=').unwrap_or((&option, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "namespaces" => {
                let value = value.trim().trim_matches('"');
                found = Some(value.split(',').map(|s| s.trim().to_string()).collect());
            }
            "" => {}
            other => {
                return Err(format!(
                    "option {other:?} is not supported (only namespaces=\"…\")"
                ));
            }
        }
    }
    Ok(found)
}

fn split_options(options: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in options.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if quoted {
        return Err("an option's quote is not closed".into());
    }
    out.push(current);
    Ok(out.into_iter().filter(|o| !o.trim().is_empty()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICPY6+RN6QZEoBLSrgl7HQLvWgiCmlypSig9E+/jb7Oo";

    #[test]
    fn lines_with_options_quotes_and_comments_are_read() {
        let text = format!(
            "# ops team\nalice@example.com {KEY} laptop\n\"bob@example.com,carol@example.com\" namespaces=\"git,file\" {KEY}\n"
        );
        let signers = AllowedSigners::parse(Path::new("allowed"), &text).unwrap();
        assert_eq!(signers.signers.len(), 2);
        assert_eq!(signers.signers[0].principals, "alice@example.com");
        assert_eq!(
            signers.signers[1].namespaces,
            Some(vec!["git".to_string(), "file".to_string()])
        );
    }

    #[test]
    fn options_split_at_commas_outside_quotes_and_names_ignore_case() {
        assert_eq!(
            namespaces("NAMESPACES=\"git,file\"").unwrap(),
            Some(vec!["git".to_string(), "file".to_string()])
        );
        let err = namespaces("cert-authority,namespaces=\"git\"").unwrap_err();
        assert!(err.contains("\"cert-authority\""), "{err}");
    }

    #[test]
    fn bad_lines_are_named_and_unsupported_options_refused() {
        let text = format!("alice\nbob valid-before=\"20300101\" {KEY}\n");
        let errors = AllowedSigners::parse(Path::new("allowed"), &text).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("line 1:"), "{errors:?}");
        assert!(errors[1].contains("valid-before"), "{errors:?}");
    }

    /// Signed by git 2.47 with `gpg.format ssh` and an ssh-keygen key; the key is listed
    /// in the fixture's allowed signers.
    const REAL_COMMIT: &[u8] = include_bytes!("fixtures/ssh-signed-commit.raw");

    fn extract(raw: &[u8]) -> (String, String, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let oid = repo
            .odb()
            .unwrap()
            .write(git2::ObjectType::Commit, raw)
            .unwrap();
        let (sig, data) = repo.extract_signature(&oid, None).unwrap();
        (
            oid.to_string(),
            sig.as_str().unwrap().to_string(),
            data.to_vec(),
        )
    }

    #[test]
    fn a_commit_signed_by_git_verifies_and_an_edited_one_does_not() {
        let allowed = AllowedSigners::parse(
            Path::new("allowed"),
            include_str!("fixtures/allowed-signers"),
        )
        .unwrap();
        let (id, sig, data) = extract(REAL_COMMIT);
        assert_eq!(
            allowed.verify(&id, Some((&sig, &data))).unwrap(),
            "alice@example.com"
        );
        let edited = String::from_utf8(REAL_COMMIT.to_vec())
            .unwrap()
            .replace("signed by a real git", "signed by a real git, edited");
        let (id, sig, data) = extract(edited.as_bytes());
        let why = allowed.verify(&id, Some((&sig, &data))).unwrap_err();
        assert!(why.contains("does not match the commit's content"), "{why}");
        let other = AllowedSigners::parse(Path::new("allowed"), &format!("a {KEY}\n")).unwrap();
        let (id, sig, data) = extract(REAL_COMMIT);
        let why = other.verify(&id, Some((&sig, &data))).unwrap_err();
        assert!(why.contains("which is not in allowed"), "{why}");
    }

    #[test]
    fn an_unsigned_or_pgp_signed_commit_is_refused_with_the_reason() {
        let signers = AllowedSigners::parse(Path::new("allowed"), &format!("a {KEY}\n")).unwrap();
        let unsigned = signers.verify("0123456789abcdef", None).unwrap_err();
        assert!(
            unsigned.contains("commit 0123456789ab is not signed"),
            "{unsigned}"
        );
        let pgp = signers
            .verify(
                "0123",
                Some(("-----BEGIN PGP SIGNATURE-----\nx\n", b"data")),
            )
            .unwrap_err();
        assert!(pgp.contains("SSH signatures only"), "{pgp}");
    }
}
