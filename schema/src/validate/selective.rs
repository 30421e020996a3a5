//! The rules of a selective restore (`Restore.spec.namespaces`): well-formed namespaces,
//! renames of listed collections only, no target in mongod's own databases, and none of
//! the whole-cluster settings that mean nothing when no node is stopped.

use std::collections::BTreeMap;

use super::document::Document;
use super::error::ValidationError;
use crate::model::{NsPattern, RestoreSpec, SYSTEM_DATABASES, namespace_problem, target_namespace};

/// Pushes every problem of `spec`'s selective settings; `sharded` when its cluster is.
pub fn check_selective(
    doc: &Document,
    spec: &RestoreSpec,
    sharded: bool,
    out: &mut Vec<ValidationError>,
) {
    let Some(namespaces) = &spec.namespaces else {
        for (set, field) in [
            (spec.rename_to.is_some(), "spec.renameTo"),
            (spec.on_existing.is_some(), "spec.onExisting"),
        ] {
            if set {
                out.push(doc.error(
                    field,
                    "applies only to a selective restore: list the collections in \
                     spec.namespaces",
                ));
            }
        }
        return;
    };
    whole_cluster_settings(doc, spec, sharded, out);
    if namespaces.is_empty() {
        out.push(doc.error(
            "spec.namespaces",
            "lists no namespace: give at least one (\"db.collection\" or \"db.*\"), or remove \
             it to restore the whole cluster",
        ));
    }
    let mut seen = BTreeMap::new();
    for (i, ns) in namespaces.iter().enumerate() {
        let field = format!("spec.namespaces.{i}");
        let Some(p) = pattern(ns) else {
            out.push(doc.error(
                &field,
                format!("{ns:?} is not of the form \"db.collection\" or \"db.*\""),
            ));
            continue;
        };
        if let Some(first) = seen.insert(ns.clone(), i) {
            out.push(doc.error(&field, format!("{ns:?} is listed twice (also at {first})")));
        }
        if p.collection.is_some()
            && let Some(problem) = collection_problem(ns)
        {
            out.push(doc.error(&field, format!("{ns:?} {problem}")));
        }
        let renamed = spec.rename_to.as_ref().is_some_and(|r| r.contains_key(ns));
        if !renamed && SYSTEM_DATABASES.contains(&p.db.as_str()) {
            out.push(doc.error(
                &field,
                format!(
                    "{ns:?} would be written into database {:?}, which is mongod's own; \
                     a selective restore writes only to user databases (renameTo can \
                     move a collection elsewhere)",
                    p.db
                ),
            ));
        }
    }
    if let Some(rename) = &spec.rename_to {
        check_renames(doc, namespaces, rename, out);
    }
}

/// What makes `db.coll` unusable as a selective restore's collection or target: mongod's
/// own `system.*` collections, tidemark's staging names, and a name too long for its
/// staging collection (`tidemark_restore_<10 hex>.<coll>` within mongod's 255 bytes).
fn collection_problem(ns: &str) -> Option<String> {
    let (db, coll) = ns.split_once('.')?;
    if coll.starts_with("system.") {
        return Some("is one of mongod's own collections (system.*)".into());
    }
    if coll.starts_with("tidemark_restore_") {
        return Some("is named like tidemark's staging collections (tidemark_restore_*)".into());
    }
    let staging = db.len() + 1 + "tidemark_restore_".len() + 11 + coll.len();
    (staging > 255).then(|| {
        format!(
            "is too long: its staging collection would be a {staging}-byte namespace, over \
             mongod's 255"
        )
    })
}

fn pattern(ns: &str) -> Option<NsPattern> {
    let p = NsPattern::parse(ns)?;
    let plain = format!("{}.{}", p.db, p.collection.as_deref().unwrap_or("x"));
    namespace_problem(&plain).is_none().then_some(p)
}

/// Settings of a whole-cluster restore that a selective one cannot honour.
fn whole_cluster_settings(
    doc: &Document,
    spec: &RestoreSpec,
    sharded: bool,
    out: &mut Vec<ValidationError>,
) {
    let stop_settings = [
        (spec.fallback_enabled, "spec.fallbackEnabled"),
        (spec.external, "spec.external"),
        (spec.post_restore.is_some(), "spec.postRestore"),
        (spec.replica_set_remap.is_some(), "spec.replicaSetRemap"),
    ];
    for (set, field) in stop_settings {
        if set {
            out.push(doc.error(
                field,
                "has no meaning for a selective restore, which stops no node and replaces no \
                 data directory: remove it, or remove spec.namespaces to restore the whole \
                 cluster",
            ));
        }
    }
    if sharded {
        out.push(doc.error(
            "spec.namespaces",
            format!(
                "cluster {:?} is sharded; a selective restore copies through a replica set's \
                 primary and is not supported for sharded clusters yet",
                spec.cluster
            ),
        ));
    }
}

fn check_renames(
    doc: &Document,
    namespaces: &[String],
    rename: &BTreeMap<String, String>,
    out: &mut Vec<ValidationError>,
) {
    let mut targets: BTreeMap<String, &str> = BTreeMap::new();
    for (from, to) in rename {
        let field = format!("spec.renameTo.{from}");
        if !namespaces.contains(from) || from.ends_with(".*") {
            out.push(doc.error(
                &field,
                format!(
                    "{from:?} is not one of the collections listed in spec.namespaces (a \
                     rename names one listed \"db.collection\")"
                ),
            ));
        }
        match NsPattern::parse(to) {
            Some(p) if p.collection.is_some() && namespace_problem(to).is_none() => {
                if let Some(problem) = collection_problem(to) {
                    out.push(doc.error(&field, format!("target {to:?} {problem}")));
                }
                if SYSTEM_DATABASES.contains(&p.db.as_str()) {
                    out.push(doc.error(
                        &field,
                        format!(
                            "target {to:?} is in database {:?}, which is mongod's own",
                            p.db
                        ),
                    ));
                }
            }
            _ => out.push(doc.error(
                &field,
                format!("target {to:?} is not of the form \"db.collection\""),
            )),
        }
        if let Some(other) = targets.insert(to.clone(), from) {
            out.push(doc.error(
                &field,
                format!("{from:?} and {other:?} are both renamed to {to:?}"),
            ));
        }
        let clash = namespaces.iter().find(|ns| {
            *ns != from && target_namespace(ns, Some(rename)) == *to && !ns.ends_with(".*")
        });
        if let Some(ns) = clash {
            out.push(doc.error(
                &field,
                format!("target {to:?} is also where {ns:?} is restored"),
            ));
        }
    }
}
