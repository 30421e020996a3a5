//! The point-in-time section of `diff`: per slicing schedule, its slicers, lag, windows
//! and the gaps no backup bridges yet.

use std::fmt::Write;

use super::model::Plan;
use super::timeline::optime_text;

/// Appends the section when any schedule slices the oplog.
pub fn pitr_section(out: &mut String, plan: &Plan) {
    if plan.pitr.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nPoint-in-time recovery:");
    for p in &plan.pitr {
        let lag = p
            .lag_seconds
            .map_or("nothing sliced yet".to_string(), |l| format!("lag {l}s"));
        let _ = writeln!(
            out,
            "  {} ({} into {}, a chunk every {}s): {lag}, {} chunk(s), {} gap(s)",
            p.schedule,
            p.cluster,
            p.storage,
            p.span_seconds,
            p.timeline.chunks(),
            p.timeline.gaps()
        );
        for s in &p.slicers {
            let _ = writeln!(
                out,
                "    slicer {}: {} ({})",
                s.replica_set,
                s.node.as_deref().unwrap_or("none"),
                s.reason
            );
            if let Some(e) = &s.error {
                let _ = writeln!(out, "      x failing: {e}");
            }
        }
        for w in &p.timeline.windows {
            let _ = writeln!(
                out,
                "    restorable {} .. {} (from {})",
                optime_text(w.from),
                optime_text(w.to),
                w.bases.join(", ")
            );
        }
        for g in &p.timeline.open_gaps {
            let _ = writeln!(
                out,
                "    x gap on {}: the oplog between {} and {} was lost before it was sliced; no \
                 restore reaches past it until a backup is taken after it",
                g.replica_set,
                optime_text(g.gap.from),
                optime_text(g.gap.to)
            );
        }
    }
}
