//! PBM's decision flow as two pure functions: `decide` turns every node's outcome into
//! the cluster's (Done, PartlyDone or Error), and `remedy` says what each node needs next,
//! from the decision and the last phase the node reached (the remedy table of
//! docs/reconciler.md).

use std::collections::BTreeMap;

use tidemark_schema::control::{NodeFate, Phase, Remedy, RunStatus};

/// One node's outcome as the decision sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeState {
    pub replica_set: String,
    pub node: String,
    pub fate: NodeFate,
    /// The last phase reached; for a failed node, the phase that failed.
    pub phase: Option<Phase>,
    /// Its reports prove mongod was stopped by the restore (`stop` done, or a later phase
    /// begun). A node without that proof may still serve its pre-restore data.
    pub stopped: bool,
}

impl NodeState {
    /// A node that may still serve its pre-restore data and that tidemark cannot reach
    /// to wipe: its agent went silent before proving mongod stopped. Restored members
    /// started beside it would be rolled back by its newer oplog, or elect it.
    fn may_serve_old_data(&self) -> bool {
        self.fate == NodeFate::Lost && !self.stopped
    }
}

/// What the Restore document declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub fallback_enabled: bool,
    pub allow_partly_done: bool,
}

/// The cluster outcome and the rule that gave it.
pub fn decide(nodes: &[NodeState], policy: Policy) -> (RunStatus, String) {
    let failed: Vec<&str> = nodes
        .iter()
        .filter(|n| n.fate != NodeFate::Done)
        .map(|n| n.node.as_str())
        .collect();
    if failed.is_empty() {
        return (
            RunStatus::Done,
            format!("all {} node(s) restored", nodes.len()),
        );
    }
    let mut done_per_rs: BTreeMap<&str, usize> = BTreeMap::new();
    for n in nodes {
        let c = done_per_rs.entry(n.replica_set.as_str()).or_default();
        if n.fate == NodeFate::Done {
            *c += 1;
        }
    }
    let without: Vec<&str> = done_per_rs
        .iter()
        .filter(|(_, c)| **c == 0)
        .map(|(rs, _)| *rs)
        .collect();
    if !without.is_empty() {
        return (
            RunStatus::Error,
            format!(
                "no node was restored in replica set(s) {}; failed: {}",
                without.join(", "),
                failed.join(", ")
            ),
        );
    }
    if !policy.allow_partly_done {
        return (
            RunStatus::Error,
            format!(
                "node(s) {} failed and allowPartlyDone is false",
                failed.join(", ")
            ),
        );
    }
    let unproven: Vec<&str> = nodes
        .iter()
        .filter(|n| n.may_serve_old_data())
        .map(|n| n.node.as_str())
        .collect();
    if !unproven.is_empty() {
        return (
            RunStatus::Error,
            format!(
                "node(s) {} went silent before proving mongod stopped and may still serve                  the data from before the restore: the restored members are not started                  beside them (their newer oplog would undo the restore)",
                unproven.join(", ")
            ),
        );
    }
    (
        RunStatus::PartlyDone,
        format!(
            "every replica set has a restored node; {} failed and will initial-sync from them",
            failed.join(", ")
        ),
    )
}

/// What a node needs after the decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRemedy {
    /// The follow-up steps tidemark runs on it, in order.
    pub steps: Vec<Remedy>,
    /// What the operator should know of it.
    pub note: String,
    /// The note asks the operator to act (tidemark cannot).
    pub needs_operator: bool,
}

/// What a node needs after the decision, in order, and a note for the operator.
pub fn remedy(status: RunStatus, policy: Policy, node: &NodeState) -> NodeRemedy {
    let (steps, note) = remedy_steps(status, policy, node);
    let partial = status.is_failure()
        && !policy.fallback_enabled
        && node.fate != NodeFate::Done
        && node.fate != NodeFate::Refused
        && node.phase.is_some_and(|p| p.touches_data());
    let lost = node.fate == NodeFate::Lost && (!steps.is_empty() || node.may_serve_old_data());
    let mut r = NodeRemedy {
        steps,
        note,
        needs_operator: partial || lost,
    };
    if node.may_serve_old_data() && status.is_failure() && !policy.fallback_enabled {
        r.steps.clear();
        r.note = "node lost before proving mongod stopped: it may still serve the data from \
                  before the restore. Stop its mongod and empty its dbPath (or restore it \
                  again) before starting the restored members, or they are rolled back"
            .into();
    } else if node.fate == NodeFate::Lost && !r.steps.is_empty() {
        let what: Vec<&str> = r.steps.iter().map(|s| s.as_str()).collect();
        r.note = format!(
            "node lost: its agent stopped reporting; when it returns it needs: {} (tidemark \
             cannot do it without the agent)",
            what.join(", ")
        );
        r.steps.clear();
    }
    r
}

/// The steps a node needs by the decision and the last phase it reached (the table of
/// `docs/reconciler.md`), before a lost node's are turned into a note.
fn remedy_steps(status: RunStatus, policy: Policy, node: &NodeState) -> (Vec<Remedy>, String) {
    // A node lost before it reported `stop` may still have stopped mongod: treat it as
    // stopped. Refused nodes reached no further than their checks.
    let phase = node.phase.unwrap_or(Phase::Precheck);
    let touched_node = node.fate == NodeFate::Done
        || (node.fate != NodeFate::Refused
            && (phase.touches_node() || node.fate == NodeFate::Lost));
    let touched_data = node.fate == NodeFate::Done || (touched_node && phase.touches_data());
    let fb = policy.fallback_enabled;
    let (remedies, note) = match status {
        RunStatus::Done | RunStatus::PartlyDone if node.fate == NodeFate::Done => {
            (fallback_removal(fb, true), String::new())
        }
        RunStatus::PartlyDone => {
            // A node that refused after `go` still runs with its old data beside the
            // restored members: it is wiped like a touched one (the wipe stops mongod).
            if touched_node || node.fate == NodeFate::Refused {
                // Its old data (even intact, after only a stop) would diverge from the
                // restored members: it must initial-sync from them.
                let mut r = vec![Remedy::Wipe];
                r.extend(fallback_removal(fb, touched_data));
                (
                    r,
                    "wiped; it initial-syncs from the restored members".into(),
                )
            } else {
                (Vec::new(), "untouched".into())
            }
        }
        _ => {
            // Error: put back what can be put back.
            if !touched_node {
                (Vec::new(), "untouched: it never stopped".into())
            } else if !touched_data {
                (
                    vec![Remedy::Start],
                    "stopped with its data intact; started again".into(),
                )
            } else if fb {
                (
                    vec![Remedy::Revert, Remedy::Start],
                    "its data is moved back from the fallback directory".into(),
                )
            } else if node.fate == NodeFate::Done {
                (
                    Vec::new(),
                    "holds the restored data while the restore as a whole failed (fallback is \
                     off, so its previous data is gone); mongod is left stopped"
                        .into(),
                )
            } else {
                (
                    Vec::new(),
                    format!(
                        "holds PARTIAL data (failed in {phase} with fallback off); mongod is left \
                         stopped: restore it again or wipe it and let it initial-sync"
                    ),
                )
            }
        }
    };
    (remedies, note)
}

fn fallback_removal(fallback_enabled: bool, touched_data: bool) -> Vec<Remedy> {
    if fallback_enabled && touched_data {
        vec![Remedy::RemoveFallback]
    } else {
        Vec::new()
    }
}

/// The follow-up stages in the order they run: every node's revert or wipe first, then
/// the removal of fallback directories, then the starts.
pub const STAGES: [Remedy; 4] = [
    Remedy::Revert,
    Remedy::Wipe,
    Remedy::RemoveFallback,
    Remedy::Start,
];

#[cfg(test)]
mod tests {
    use super::*;
    use NodeFate::*;

    fn n(rs: &str, node: &str, fate: NodeFate, phase: Option<Phase>) -> NodeState {
        NodeState {
            replica_set: rs.into(),
            node: node.into(),
            fate,
            phase,
            stopped: fate != Refused && phase.is_some_and(|p| p.touches_data()),
        }
    }

    const PARTLY: Policy = Policy {
        fallback_enabled: true,
        allow_partly_done: true,
    };
    const STRICT: Policy = Policy {
        fallback_enabled: true,
        allow_partly_done: false,
    };
    const NO_FB: Policy = Policy {
        fallback_enabled: false,
        allow_partly_done: true,
    };

    #[test]
    fn decision_table() {
        let done = |rs, node| n(rs, node, Done, Some(Phase::Done));
        let failed = |rs, node, p| n(rs, node, Failed, Some(p));
        let cases: Vec<(Vec<NodeState>, Policy, RunStatus)> = vec![
            (
                vec![done("a", "1"), done("a", "2")],
                PARTLY,
                RunStatus::Done,
            ),
            (
                vec![done("a", "1"), done("a", "2")],
                STRICT,
                RunStatus::Done,
            ),
            (
                vec![done("a", "1"), failed("a", "2", Phase::Recover)],
                PARTLY,
                RunStatus::PartlyDone,
            ),
            (
                vec![done("a", "1"), failed("a", "2", Phase::Recover)],
                STRICT,
                RunStatus::Error,
            ),
            (
                vec![done("a", "1"), n("a", "2", Lost, Some(Phase::Fetch))],
                PARTLY,
                RunStatus::PartlyDone,
            ),
            // Every replica set needs one restored node.
            (
                vec![
                    done("a", "1"),
                    failed("b", "3", Phase::Fetch),
                    failed("b", "4", Phase::Stop),
                ],
                PARTLY,
                RunStatus::Error,
            ),
            (
                vec![failed("a", "1", Phase::Fetch)],
                PARTLY,
                RunStatus::Error,
            ),
            (
                vec![done("a", "1"), n("a", "2", Refused, Some(Phase::Disk))],
                NO_FB,
                RunStatus::PartlyDone,
            ),
            // Lost before proving mongod stopped: it may serve old data, so no member of
            // the set is started beside it, whatever partial results allow.
            (
                vec![done("a", "1"), n("a", "2", Lost, Some(Phase::Stop))],
                PARTLY,
                RunStatus::Error,
            ),
            (
                vec![done("a", "1"), n("a", "2", Lost, Some(Phase::Stop))],
                NO_FB,
                RunStatus::Error,
            ),
            // Lost once its stop was proven (it reported fetch): partly done.
            (
                vec![done("a", "1"), n("a", "2", Lost, Some(Phase::Fetch))],
                NO_FB,
                RunStatus::PartlyDone,
            ),
        ];
        for (i, (nodes, policy, want)) in cases.into_iter().enumerate() {
            let (got, why) = decide(&nodes, policy);
            assert_eq!(got, want, "case {i}: {why}");
            assert!(!why.is_empty());
        }
    }

    #[test]
    fn remedy_table() {
        use Remedy::*;
        let cases: Vec<(RunStatus, Policy, NodeState, Vec<Remedy>)> = vec![
            // Error with fallback: by the phase reached.
            (
                RunStatus::Error,
                STRICT,
                n("a", "1", Refused, Some(Phase::Disk)),
                vec![],
            ),
            (
                RunStatus::Error,
                STRICT,
                n("a", "1", Failed, Some(Phase::Stop)),
                vec![Start],
            ),
            (
                RunStatus::Error,
                STRICT,
                n("a", "1", Failed, Some(Phase::Fallback)),
                vec![Revert, Start],
            ),
            (
                RunStatus::Error,
                STRICT,
                n("a", "1", Failed, Some(Phase::Fetch)),
                vec![Revert, Start],
            ),
            (
                RunStatus::Error,
                STRICT,
                n("a", "1", Failed, Some(Phase::Recover)),
                vec![Revert, Start],
            ),
            // A node that finished is reverted too: the cluster goes back as a whole.
            (
                RunStatus::Error,
                STRICT,
                n("a", "1", Done, Some(Phase::Done)),
                vec![Revert, Start],
            ),
            // Error without fallback: nothing to move back.
            (
                RunStatus::Error,
                NO_FB,
                n("a", "1", Failed, Some(Phase::Fetch)),
                vec![],
            ),
            (
                RunStatus::Error,
                NO_FB,
                n("a", "1", Failed, Some(Phase::Stop)),
                vec![Start],
            ),
            // PartlyDone: failed nodes are wiped, whatever they reached after the checks.
            (
                RunStatus::PartlyDone,
                PARTLY,
                n("a", "1", Failed, Some(Phase::Stop)),
                vec![Wipe],
            ),
            (
                RunStatus::PartlyDone,
                PARTLY,
                n("a", "1", Failed, Some(Phase::Recover)),
                vec![Wipe, RemoveFallback],
            ),
            (
                RunStatus::PartlyDone,
                PARTLY,
                n("a", "1", Done, Some(Phase::Done)),
                vec![RemoveFallback],
            ),
            (
                RunStatus::PartlyDone,
                NO_FB,
                n("a", "1", Failed, Some(Phase::Fetch)),
                vec![Wipe],
            ),
            (
                RunStatus::Done,
                PARTLY,
                n("a", "1", Done, Some(Phase::Done)),
                vec![RemoveFallback],
            ),
            (
                RunStatus::Done,
                NO_FB,
                n("a", "1", Done, Some(Phase::Done)),
                vec![],
            ),
            // Refused after `go`: still running with its old data beside the restored
            // members, so it is wiped (the wipe stops its mongod first).
            (
                RunStatus::PartlyDone,
                PARTLY,
                n("a", "1", Refused, Some(Phase::Ready)),
                vec![Wipe],
            ),
            // A lost node gets nothing (its agent is gone) but a note saying what it needs.
            (
                RunStatus::PartlyDone,
                PARTLY,
                n("a", "1", Lost, Some(Phase::Fetch)),
                vec![],
            ),
        ];
        for (i, (status, policy, node, want)) in cases.into_iter().enumerate() {
            let NodeRemedy {
                steps: got, note, ..
            } = remedy(status, policy, &node);
            assert_eq!(got, want, "case {i}: {status} {node:?} ({note})");
        }
        let NodeRemedy {
            note,
            needs_operator,
            ..
        } = remedy(
            RunStatus::PartlyDone,
            PARTLY,
            &n("a", "1", Lost, Some(Phase::Fetch)),
        );
        assert!(needs_operator);
        assert!(
            note.contains("node lost") && note.contains("wipe"),
            "{note}"
        );
        let partial = remedy(
            RunStatus::Error,
            NO_FB,
            &n("a", "1", Failed, Some(Phase::Fetch)),
        );
        assert!(
            partial.note.contains("PARTIAL") && partial.needs_operator,
            "{partial:?}"
        );
        let unproven = remedy(
            RunStatus::Error,
            NO_FB,
            &n("a", "1", Lost, Some(Phase::Stop)),
        );
        assert!(unproven.steps.is_empty() && unproven.needs_operator);
        assert!(unproven.note.contains("may still serve"), "{unproven:?}");
        // A node that finished is nothing the operator must act on.
        assert!(
            !remedy(
                RunStatus::Done,
                PARTLY,
                &n("a", "1", Done, Some(Phase::Done))
            )
            .needs_operator
        );
    }
}
