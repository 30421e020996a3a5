//! Whole-object retries with exponential backoff. object_store already retries single
//! HTTP requests; this layer restarts a whole upload or download (a multipart upload
//! cannot resume after its client gave up, and a download's decoder state cannot either),
//! and turns a storage that stays down into `StorageError::Unavailable`.

use std::future::Future;
use std::time::Duration;

use super::error::StorageError;

/// How often and how patiently a whole-object operation is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included (0 is treated as 1).
    pub attempts: u32,
    /// Backoff after the first failure; doubled after each further failure.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The pause after failed attempt number `failed` (1-based).
    fn backoff(&self, failed: u32) -> Duration {
        let factor = 2u32.saturating_pow(failed.saturating_sub(1));
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// The outcome of one failed attempt.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth another attempt; the text is kept for the final `Unavailable`.
    Transient(String),
    /// Final: retrying cannot help.
    Fatal(StorageError),
}

impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Self {
        Failure::Fatal(e)
    }
}

/// Sorts an object_store error into transient or final. `Generic` covers network errors,
/// timeouts and 5xx answers that object_store's own request retries did not get past
/// (it also covers the rare 4xx that is not one of the typed variants; retrying those a
/// few times is harmless).
pub(crate) fn classify(
    url: &str,
    key: &str,
    op: &'static str,
    err: object_store::Error,
) -> Failure {
    match err {
        object_store::Error::Generic { .. } | object_store::Error::JoinError { .. } => {
            Failure::Transient(err.to_string())
        }
        other => Failure::Fatal(StorageError::from_store(url, key, op, other)),
    }
}

/// Runs `attempt` until it succeeds, fails for good, or the policy's attempts are spent.
/// `attempt` receives the 1-based attempt number.
pub(crate) async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    url: &str,
    key: &str,
    op: &'static str,
    mut attempt: F,
) -> Result<T, StorageError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let attempts = policy.attempts.max(1);
    let mut n = 1;
    loop {
        match attempt(n).await {
            Ok(v) => return Ok(v),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Transient(last_error)) if n >= attempts => {
                return Err(StorageError::Unavailable {
                    url: url.to_string(),
                    key: key.to_string(),
                    op,
                    attempts: n,
                    last_error,
                });
            }
            Err(Failure::Transient(why)) => {
                let pause = policy.backoff(n);
                tracing::warn!(
                    storage = url,
                    key,
                    op,
                    attempt = n,
                    of = attempts,
                    retry_in_ms = pause.as_millis() as u64,
                    error = %why,
                    "backup storage operation failed, retrying"
                );
                tokio::time::sleep(pause).await;
                n += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy {
            attempts: 10,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
        };
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(3), Duration::from_millis(350));
        assert_eq!(p.backoff(40), Duration::from_millis(350));
    }
}
