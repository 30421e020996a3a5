//! Push webhooks from GitHub, GitLab and Gitea (or Forgejo): is this request signed with
//! our secret, and is it a push to the branch we follow? Pure: headers and body in, a
//! verdict out, so every case is unit-tested.
//!
//! - GitHub signs the body with HMAC-SHA256: `X-Hub-Signature-256: sha256=<hex>`.
//! - Gitea and Forgejo sign it the same way: `X-Gitea-Signature: <hex>`
//!   (`X-Forgejo-Signature`).
//! - GitLab sends the secret itself: `X-Gitlab-Token: <secret>` (its model; compared in
//!   constant time).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What to do with a webhook request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A push to the followed branch: fetch and run a pass now.
    Sync { forge: &'static str },
    /// Signed, but nothing to do (a ping, another event, another branch): why.
    Ignore(String),
    /// Not signed with our secret: refused, and why (never which part matched).
    Refuse(String),
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

fn hmac_matches(secret: &[u8], body: &[u8], hex_signature: &str) -> bool {
    let Ok(expected) = hex::decode(hex_signature) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any size");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Equal inputs have equal MACs under any key; `verify_slice` compares in constant time.
    let key = b"tidemark: compare a token";
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any size");
    m.update(a);
    let tag = m.finalize().into_bytes();
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any size");
    m.update(b);
    m.verify_slice(&tag).is_ok()
}

/// Checks a webhook request. `branch` is the ref the reconciler follows (`main`, or
/// `refs/heads/main`); `None` accepts a push to any branch.
pub fn verify(
    secret: &str,
    headers: &[(String, String)],
    body: &[u8],
    branch: Option<&str>,
) -> Verdict {
    let (forge, event) = if let Some(sig) = header(headers, "X-Hub-Signature-256") {
        let Some(hex) = sig.strip_prefix("sha256=") else {
            return Verdict::Refuse("X-Hub-Signature-256 is not sha256=<hex>".into());
        };
        if !hmac_matches(secret.as_bytes(), body, hex) {
            return Verdict::Refuse("the GitHub signature does not match the secret".into());
        }
        (
            "github",
            header(headers, "X-GitHub-Event").unwrap_or_default(),
        )
    } else if let Some(sig) =
        header(headers, "X-Gitea-Signature").or(header(headers, "X-Forgejo-Signature"))
    {
        if !hmac_matches(secret.as_bytes(), body, sig) {
            return Verdict::Refuse("the Gitea signature does not match the secret".into());
        }
        (
            "gitea",
            header(headers, "X-Gitea-Event")
                .or(header(headers, "X-Forgejo-Event"))
                .unwrap_or_default(),
        )
    } else if let Some(token) = header(headers, "X-Gitlab-Token") {
        if !constant_time_eq(token.as_bytes(), secret.as_bytes()) {
            return Verdict::Refuse("the GitLab token does not match the secret".into());
        }
        (
            "gitlab",
            header(headers, "X-Gitlab-Event").unwrap_or_default(),
        )
    } else {
        return Verdict::Refuse(
            "no signature (X-Hub-Signature-256, X-Gitea-Signature or X-Gitlab-Token)".into(),
        );
    };
    let is_push = matches!(event, "push" | "Push Hook");
    if !is_push {
        return Verdict::Ignore(format!("{forge} event {event:?} is not a push"));
    }
    let pushed = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["ref"].as_str().map(str::to_string));
    if let (Some(want), Some(got)) = (branch, pushed.as_deref()) {
        let want_full = if want.starts_with("refs/") {
            want.to_string()
        } else {
            format!("refs/heads/{want}")
        };
        if got != want_full {
            return Verdict::Ignore(format!("a push to {got}, not {want_full}"));
        }
    }
    Verdict::Sync { forge }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cret";
    const BODY: &[u8] = br#"{"ref":"refs/heads/main","after":"abc"}"#;

    fn sign(body: &[u8]) -> String {
        let mut m = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        m.update(body);
        hex::encode(m.finalize().into_bytes())
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn each_forge_signed_push_syncs() {
        let gh = h(&[
            ("x-hub-signature-256", &format!("sha256={}", sign(BODY))),
            ("X-GitHub-Event", "push"),
        ]);
        assert_eq!(
            verify(SECRET, &gh, BODY, Some("main")),
            Verdict::Sync { forge: "github" }
        );
        let gitea = h(&[
            ("X-Gitea-Signature", &sign(BODY)),
            ("X-Gitea-Event", "push"),
        ]);
        assert_eq!(
            verify(SECRET, &gitea, BODY, Some("main")),
            Verdict::Sync { forge: "gitea" }
        );
        let gitlab = h(&[("X-Gitlab-Token", SECRET), ("X-Gitlab-Event", "Push Hook")]);
        assert_eq!(
            verify(SECRET, &gitlab, BODY, Some("refs/heads/main")),
            Verdict::Sync { forge: "gitlab" }
        );
    }

    #[test]
    fn unsigned_or_badly_signed_is_refused() {
        assert!(matches!(
            verify(SECRET, &[], BODY, None),
            Verdict::Refuse(_)
        ));
        let tampered = h(&[
            (
                "X-Hub-Signature-256",
                &format!("sha256={}", sign(b"other body")),
            ),
            ("X-GitHub-Event", "push"),
        ]);
        assert!(matches!(
            verify(SECRET, &tampered, BODY, None),
            Verdict::Refuse(_)
        ));
        let not_hex = h(&[("X-Gitea-Signature", "zz"), ("X-Gitea-Event", "push")]);
        assert!(matches!(
            verify(SECRET, &not_hex, BODY, None),
            Verdict::Refuse(_)
        ));
        let wrong_token = h(&[
            ("X-Gitlab-Token", "s3cres"),
            ("X-Gitlab-Event", "Push Hook"),
        ]);
        assert!(matches!(
            verify(SECRET, &wrong_token, BODY, None),
            Verdict::Refuse(_)
        ));
        let sha1 = h(&[("X-Hub-Signature-256", &sign(BODY))]);
        assert!(matches!(
            verify(SECRET, &sha1, BODY, None),
            Verdict::Refuse(_)
        ));
    }

    #[test]
    fn other_events_and_branches_are_ignored() {
        let ping = h(&[
            ("X-Hub-Signature-256", &format!("sha256={}", sign(BODY))),
            ("X-GitHub-Event", "ping"),
        ]);
        assert!(matches!(
            verify(SECRET, &ping, BODY, None),
            Verdict::Ignore(_)
        ));
        let gh = h(&[
            ("X-Hub-Signature-256", &format!("sha256={}", sign(BODY))),
            ("X-GitHub-Event", "push"),
        ]);
        assert!(matches!(
            verify(SECRET, &gh, BODY, Some("release")),
            Verdict::Ignore(_)
        ));
    }
}
