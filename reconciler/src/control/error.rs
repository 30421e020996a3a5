//! Errors at the control-plane seam, each naming the URL or the object involved.

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control plane URL {url:?}: {message}")]
    BadUrl { url: String, message: String },
    #[error("control plane {url}: cannot list {prefix:?}: {source}")]
    List {
        url: String,
        prefix: String,
        #[source]
        source: object_store::Error,
    },
    #[error("control plane {url}: cannot read {key:?}: {source}")]
    Read {
        url: String,
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error("control plane {url}: object {key:?} is corrupt: {message}")]
    Corrupt {
        url: String,
        key: String,
        message: String,
    },
}
