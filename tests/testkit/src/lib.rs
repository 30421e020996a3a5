//! Test helpers shared by tidemark's crates. Real services only: `Moto` runs PyPI's
//! `moto[server]`, a real S3 API, on a free loopback port.

mod git;
mod moto;
mod proxy;
mod signing;

pub use git::{commit_and_push, commit_and_push_signed};

/// `median (min–max min–max)` of a benchmark figure over its rounds, as every benchmark
/// prints it.
pub fn spread(v: &[f64]) -> String {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    format!(
        "{:.3} (min–max {:.3}–{:.3})",
        v[v.len() / 2],
        v[0],
        v[v.len() - 1]
    )
}
pub use moto::Moto;
pub use proxy::{CountingProxy, Counts, HeaderDroppingProxy, s3_price};
pub use signing::{TestKeys, test_keys};

/// Polls `f` every 20 ms until it gives a value, for at most `timeout`; panics naming
/// `what` after that.
pub fn wait_until<T>(
    what: &str,
    timeout: std::time::Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let started = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A benchmark's setting from the environment, `default` when unset or unreadable.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A `BackupSchedule` named `pitr` that only slices `cluster`'s oplog into `storage`, one
/// chunk per `span` (its cron never comes due in a test).
pub fn pitr_schedule_yaml(cluster: &str, storage: &str, span: &str) -> String {
    format!(
        "apiVersion: tidemark/v1\nkind: BackupSchedule\nmetadata:\n  name: pitr\nspec:\n  \
         cluster: {cluster}\n  storage: {storage}\n  type: physical\n  cron: \"0 0 1 1 *\"\n  \
         pitr:\n    enabled: true\n    oplogSpan: {span}\n"
    )
}

/// A one-shot physical `Backup` document of `cluster` to `storage`, as YAML.
pub fn backup_yaml(name: &str, cluster: &str, storage: &str) -> String {
    format!(
        "apiVersion: tidemark/v1\nkind: Backup\nmetadata:\n  name: {name}\nspec:\n  cluster: \
         {cluster}\n  storage: {storage}\n  type: physical\n"
    )
}

/// For benchmarks: mongod-sim is another package's binary, which `cargo bench` does not
/// rebuild; built every time (a no-op when fresh) so no figure comes from a stale one.
pub fn build_release_sim() {
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--release",
                "-p",
                "mongod-sim",
                "--bin",
                "mongod-sim",
            ])
            .status()
            .unwrap();
    assert!(status.success(), "building mongod-sim");
}

/// `len` bytes like WiredTiger pages for a benchmark: every other 8 bytes random (a
/// xorshift from `seed`), the others repeated, so compression halves them.
pub fn half_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = vec![0u8; len];
    for (j, chunk) in out.chunks_mut(8).enumerate() {
        if j % 2 == 0 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        } else {
            chunk.copy_from_slice(&b"WTPAGE00"[..chunk.len()]);
        }
    }
    out
}
pub use ssh_key;
