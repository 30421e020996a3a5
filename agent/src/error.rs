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
    /// The op's author ended it (a cancel, or a decision taken without this node) and this
    /// agent stopped its work.
    #[error("{0}")]
    EndedByAuthor(String),
    /// A selective restore that stopped partway: why, and the state of every target.
    #[error("{error}; {state}")]
    Stopped {
        error: Box<AgentError>,
        state: String,
    },
}

impl AgentError {
    /// Whether the work stopped because its author ended the op (reported to the
    /// reconciler as `endedByAuthor`, so that a cancel is told from a failure by a flag,
    /// never by the message).
    pub fn ended_by_author(&self) -> bool {
        match self {
            AgentError::EndedByAuthor(_) => true,
            AgentError::Stopped { error, .. } => error.ended_by_author(),
            _ => false,
        }
    }

    pub fn io(path: &std::path::Path, source: std::io::Error) -> AgentError {
        AgentError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
