//! Desired-state sources: a directory of YAML files, or a git repository. Both sit behind
//! one seam ([`DesiredStateSource`]) that yields a revision id plus the files.

mod dir;
mod follow;
mod git;
mod seam;
mod signed;

pub use dir::DirSource;
pub use follow::{Follower, PollOutcome};
pub use git::{GitOptions, GitSource};
pub use seam::{Changes, DesiredStateSource, Revision, SourceError};
pub use signed::AllowedSigners;
