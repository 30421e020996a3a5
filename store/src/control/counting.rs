//! Every request the control plane makes, counted by kind: the figures behind
//! `tidemark_control_requests_total{op}` and the idle-cost benchmark. Counted below the
//! retries, as the object store bills them.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// A request kind as object stores bill it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RequestKind {
    List,
    Get,
    Put,
    Head,
    Delete,
}

impl RequestKind {
    pub const ALL: [RequestKind; 5] = [
        RequestKind::List,
        RequestKind::Get,
        RequestKind::Put,
        RequestKind::Head,
        RequestKind::Delete,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::List => "list",
            RequestKind::Get => "get",
            RequestKind::Put => "put",
            RequestKind::Head => "head",
            RequestKind::Delete => "delete",
        }
    }
}

/// Requests made so far, by kind.
#[derive(Debug, Default)]
pub struct RequestCounts([AtomicU64; 5]);

impl RequestCounts {
    fn add(&self, kind: RequestKind) {
        self.0[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request and traces it (`TIDEMARK_LOG=control_requests=trace` shows
    /// what an idle process asks for).
    fn note(&self, kind: RequestKind, key: Option<&Path>) {
        self.add(kind);
        tracing::trace!(target: "control_requests", op = kind.as_str(), key = %key.map(|k| k.as_ref()).unwrap_or(""));
    }

    pub fn get(&self, kind: RequestKind) -> u64 {
        self.0[kind as usize].load(Ordering::Relaxed)
    }
}

/// The control-plane requests of this process (a reconciler, an agent or a CLI command
/// each open one control plane).
pub fn control_requests() -> &'static RequestCounts {
    static COUNTS: std::sync::OnceLock<RequestCounts> = std::sync::OnceLock::new();
    COUNTS.get_or_init(RequestCounts::default)
}

/// An object store that counts what it is asked before passing it on.
#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    counts: &'static RequestCounts,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn ObjectStore>, counts: &'static RequestCounts) -> CountingStore {
        CountingStore { inner, counts }
    }
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.counts.note(RequestKind::Put, Some(location));
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        // Control records are small: one request to start; the parts are not counted.
        self.counts.note(RequestKind::Put, Some(location));
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let kind = match options.head {
            true => RequestKind::Head,
            false => RequestKind::Get,
        };
        self.counts.note(kind, Some(location));
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        for _ in ranges {
            self.counts.note(RequestKind::Get, Some(location));
        }
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let counts = self.counts;
        let counted = locations
            .map(move |l| {
                counts.note(RequestKind::Delete, l.as_ref().ok());
                l
            })
            .boxed();
        self.inner.delete_stream(counted)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        // One request per page of up to 1,000 keys; a control-plane prefix rarely has more.
        self.counts.note(RequestKind::List, prefix);
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.counts.note(RequestKind::List, prefix);
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.counts.note(RequestKind::List, prefix);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.counts.note(RequestKind::Put, Some(to));
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.counts.note(RequestKind::Put, Some(to));
        self.counts.note(RequestKind::Delete, Some(from));
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn each_kind_of_request_is_counted_once() {
        static COUNTS: std::sync::OnceLock<RequestCounts> = std::sync::OnceLock::new();
        let counts = COUNTS.get_or_init(RequestCounts::default);
        let store = CountingStore::new(Arc::new(InMemory::new()), counts);
        let key = Path::from("a/b.json");
        store
            .put(&key, PutPayload::from_static(b"{}"))
            .await
            .unwrap();
        store.get(&key).await.unwrap();
        store.head(&key).await.unwrap();
        let _ = store.list(Some(&Path::from("a"))).collect::<Vec<_>>().await;
        store.list_with_delimiter(None).await.unwrap();
        store.delete(&key).await.unwrap();
        let got: Vec<(&str, u64)> = RequestKind::ALL
            .iter()
            .map(|k| (k.as_str(), counts.get(*k)))
            .collect();
        assert_eq!(
            got,
            [
                ("list", 2),
                ("get", 1),
                ("put", 1),
                ("head", 1),
                ("delete", 1)
            ]
        );
    }
}
