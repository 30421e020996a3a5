//! One signing key pair per test process, as `tidemark keygen` writes it: the reconcilers
//! of the tests sign with it and their agents trust it, so every end-to-end test runs
//! with signed ops as a deployment does.

use std::path::PathBuf;
use std::sync::OnceLock;

use tidemark_schema::control::signature::Signer;

pub struct TestKeys {
    /// The private key file, for `reconcile --signing-key-file`.
    pub private: PathBuf,
    /// The public key file, for `agent --trusted-keys`.
    pub public: PathBuf,
    /// To seal records a test writes by hand.
    pub signer: Signer,
    _dir: tempfile::TempDir,
}

pub fn test_keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let signer = Signer::generate();
        let private = dir.path().join("signing");
        let public = dir.path().join("signing.pub");
        std::fs::write(&private, signer.to_openssh()).expect("private key written");
        std::fs::write(&public, signer.public_openssh("tests") + "\n").expect("public key written");
        TestKeys {
            private,
            public,
            signer,
            _dir: dir,
        }
    })
}
