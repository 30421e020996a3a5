//! The rules of oplog slicing (`BackupSchedule.spec.pitr`): a span that can work, and one
//! slicing stream per cluster and storage, so no two slicers write one timeline.

use std::collections::BTreeMap;

use super::document::Document;
use super::error::ValidationError;
use crate::model::{BackupScheduleSpec, Resource};

/// Pushes the problems of one schedule's `pitr` settings.
pub fn check_pitr(doc: &Document, spec: &BackupScheduleSpec, out: &mut Vec<ValidationError>) {
    let Some(pitr) = &spec.pitr else {
        return;
    };
    if let Some(problem) = pitr.span_problem() {
        out.push(doc.error("spec.pitr.oplogSpan", problem));
    }
}

/// Two schedules slicing one cluster into one storage would write the same timeline twice.
pub fn check_pitr_streams(docs: &[Document], out: &mut Vec<ValidationError>) {
    let mut first: BTreeMap<(&str, &str), &Document> = BTreeMap::new();
    for doc in docs {
        let Resource::BackupSchedule(o) = &doc.resource else {
            continue;
        };
        if !o.spec.pitr.as_ref().is_some_and(|p| p.enabled) {
            continue;
        }
        let key = (o.spec.cluster.as_str(), o.spec.storage.as_str());
        match first.get(&key) {
            Some(earlier) => out.push(doc.error(
                "spec.pitr.enabled",
                format!(
                    "schedule {:?} already slices cluster {:?}'s oplog into storage {:?} \
                     ({}:{}); one cluster's oplog is sliced once per storage: enable pitr on \
                     one of them",
                    earlier.name(),
                    key.0,
                    key.1,
                    earlier.file,
                    earlier.pos("spec.pitr.enabled").line
                ),
            )),
            None => {
                first.insert(key, doc);
            }
        }
    }
}
