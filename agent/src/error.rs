//! The agent's error type: one variant per seam, each message naming the node, the object
//! or the file, so a report says exactly what failed.

use crate::mongod::MongodError;
use crate::restore::FallbackError;
use crate::storage::StorageError;
use tidemark_store::control::ControlError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Mongod(#[from] MongodError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Fallback(#[from] FallbackError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A check refused the op before anything was touched.
    #[error("{0}")]
    Refused(String),
    #[error("configuration: {0}")]
    Config(String),
    /// A selective restore that stopped partway: why, and the state of every target.
    #[error("{error}; {state}")]
    Stopped {
        error: Box<AgentError>,
        state: String,
    },
}

impl AgentError {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> AgentError {
        AgentError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
