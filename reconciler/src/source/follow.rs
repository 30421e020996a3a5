//! Following a source: a revision that does not validate is reported, and the last good
//! desired state stays in force.

use tidemark_schema::validate::{DesiredState, ValidationError, validate_files};

use super::seam::{DesiredStateSource, SourceError};

pub struct Follower<S> {
    source: S,
    current: Option<(String, DesiredState)>,
    last_seen: Option<String>,
    /// What [`Follower::check`] found, for the next [`Follower::poll`] to report.
    pending: Option<PollOutcome>,
    /// The last revision the source refused as a whole (an unsigned commit), and why:
    /// reported once, and looked at again at every poll, since the refusal may be lifted
    /// (a signer added) without a new commit.
    last_refused: Option<(String, String)>,
}

#[derive(Debug)]
pub enum PollOutcome {
    /// The revision in force is still the newest.
    Unchanged,
    /// A new revision validated and is now in force.
    Applied { revision: String },
    /// A new revision did not validate; the previous one (if any) stays in force.
    Rejected {
        revision: String,
        errors: Vec<ValidationError>,
    },
    /// The source could not be read; nothing changes.
    SourceFailed(SourceError),
}

impl<S: DesiredStateSource> Follower<S> {
    pub fn new(source: S) -> Self {
        Follower {
            source,
            current: None,
            last_seen: None,
            pending: None,
            last_refused: None,
        }
    }

    pub fn source(&self) -> &S {
        &self.source
    }

    /// The revision in force and its desired state.
    pub fn current(&self) -> Option<(&str, &DesiredState)> {
        self.current.as_ref().map(|(r, s)| (r.as_str(), s))
    }

    /// Loads the source between passes: whether a new revision came (or the source
    /// failed), which the next [`Follower::poll`] then reports as its own outcome. Lets
    /// the loop follow git at its interval without reading the control plane each time.
    pub fn check(&mut self) -> bool {
        if self.pending.is_some() {
            return true;
        }
        match self.poll() {
            PollOutcome::Unchanged => false,
            other => {
                self.pending = Some(other);
                true
            }
        }
    }

    /// Forgets what [`Follower::check`] found, what was seen and what was in force, so
    /// that the next [`Follower::poll`] reads the source afresh and reports its revision
    /// again: for a process that does not lead, whose first leading pass must act on the
    /// newest valid revision (or the ledger's), never on one it held before another
    /// process led; and after a revision's ledger record could not be written.
    pub fn forget_seen(&mut self) {
        self.forget_seen_revision();
        self.current = None;
    }

    /// Forgets only which revision was seen last, so that the next poll reports it again
    /// (its refusal could not be recorded); what is in force stays.
    pub fn forget_seen_revision(&mut self) {
        self.pending = None;
        self.last_seen = None;
        self.last_refused = None;
    }

    /// Loads the source; applies the revision if it is new and valid.
    pub fn poll(&mut self) -> PollOutcome {
        if let Some(outcome) = self.pending.take() {
            return outcome;
        }
        let revision = match self.source.load() {
            Ok(r) => r,
            Err(e) => return PollOutcome::SourceFailed(e),
        };
        if self.last_seen.as_deref() == Some(revision.id.as_str()) {
            return PollOutcome::Unchanged;
        }
        if let Some(why) = revision.refused {
            let refusal = (revision.id.clone(), why.clone());
            if self.last_refused.as_ref() == Some(&refusal) {
                return PollOutcome::Unchanged;
            }
            self.last_refused = Some(refusal);
            return PollOutcome::Rejected {
                revision: revision.id,
                errors: vec![ValidationError::whole(why)],
            };
        }
        self.last_refused = None;
        self.last_seen = Some(revision.id.clone());
        let validation = validate_files(&revision.files);
        if validation.is_valid() {
            self.current = Some((revision.id.clone(), validation.state));
            PollOutcome::Applied {
                revision: revision.id,
            }
        } else {
            PollOutcome::Rejected {
                revision: revision.id,
                errors: validation.errors,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{DirSource, Revision};

    const CLUSTER: &str = "apiVersion: tidemark/v1\nkind: Cluster\nmetadata:\n  name: c1\nspec:\n  replicaSets:\n    - name: rs0\n      members: [\"h:1\"]\n";

    /// A source whose next revision the test sets.
    struct Scripted(std::sync::Arc<std::sync::Mutex<Revision>>);

    impl DesiredStateSource for Scripted {
        fn describe(&self) -> String {
            "scripted".into()
        }
        fn load(&mut self) -> Result<Revision, SourceError> {
            Ok(self.0.lock().unwrap().clone())
        }
        fn changes(&self) -> Result<crate::source::Changes, SourceError> {
            unreachable!("not watched")
        }
    }

    /// A commit refused (its signer not listed yet) is reported once, then applied as
    /// soon as it verifies, with no new commit.
    #[test]
    fn a_refused_revision_is_reported_once_and_applied_once_it_verifies() {
        let next = std::sync::Arc::new(std::sync::Mutex::new(Revision {
            id: "c1".into(),
            files: vec![tidemark_schema::validate::SourceFile {
                path: "c.yaml".into(),
                bytes: CLUSTER.as_bytes().to_vec(),
            }],
            refused: Some("commit c1 is signed by key SHA256:x, which is not in allowed".into()),
        }));
        let mut f = Follower::new(Scripted(next.clone()));
        assert!(matches!(f.poll(), PollOutcome::Rejected { .. }));
        assert!(matches!(f.poll(), PollOutcome::Unchanged), "reported once");
        next.lock().unwrap().refused = None;
        assert!(matches!(f.poll(), PollOutcome::Applied { revision } if revision == "c1"));
    }

    #[test]
    fn a_revision_found_between_passes_is_applied_by_the_next_poll_once() {
        let dir = tempfile::TempDir::new().unwrap();
        std::fs::write(dir.path().join("c.yaml"), CLUSTER).unwrap();
        let mut f = Follower::new(DirSource::new(dir.path()));
        assert!(f.check(), "a first revision is news");
        assert!(f.check(), "still news until a pass takes it");
        assert!(matches!(f.poll(), PollOutcome::Applied { .. }));
        assert!(matches!(f.poll(), PollOutcome::Unchanged));
        assert!(!f.check(), "nothing new");
        std::fs::write(dir.path().join("c.yaml"), CLUSTER.replace("h:1", "h:2")).unwrap();
        assert!(f.check());
        assert!(matches!(f.poll(), PollOutcome::Applied { .. }));
    }

    #[test]
    fn a_process_that_followed_reads_the_source_afresh_when_it_leads() {
        let dir = tempfile::TempDir::new().unwrap();
        std::fs::write(dir.path().join("c.yaml"), CLUSTER).unwrap();
        let mut f = Follower::new(DirSource::new(dir.path()));
        assert!(f.check());
        // It follows; the source moves on meanwhile.
        f.forget_seen();
        assert!(f.current().is_none(), "nothing it held stays in force");
        std::fs::write(dir.path().join("c.yaml"), CLUSTER.replace("h:1", "h:2")).unwrap();
        let PollOutcome::Applied { revision } = f.poll() else {
            panic!("the newest revision is applied");
        };
        let (current, _) = f.current().unwrap();
        assert_eq!(current, revision);
        assert!(
            f.current()
                .unwrap()
                .1
                .clusters()
                .any(|(_, c)| c.replica_sets[0].members == ["h:2"])
        );
    }
}
