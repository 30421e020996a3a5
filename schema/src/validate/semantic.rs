//! The semantic pass: rules that need the typed values or other documents — names, URLs,
//! cron and time zones, cross-references, and PBM's restore rules.

use std::collections::{BTreeMap, BTreeSet};

use super::document::Document;
use super::error::{ValidationError, hint};
use crate::model::{
    BackupScheduleSpec, BackupStorageSpec, ClusterSpec, Kind, Resource, RestoreDrillSpec,
    RestoreSpec, StorageScheme, looks_like_credential, name_problem, namespace_problem, parse_cron,
    parse_max_age, parse_timezone, url_has_userinfo,
};

/// Checks every document alone, then across documents; pushes every problem found.
pub fn check(docs: &[Document], out: &mut Vec<ValidationError>) {
    check_duplicates(docs, out);
    super::pitr::check_pitr_streams(docs, out);
    check_incremental_chains(docs, out);
    let names = |kind: Kind| -> Vec<&str> {
        docs.iter()
            .filter(|d| d.kind() == kind)
            .map(|d| d.name())
            .collect()
    };
    let index = Index {
        docs,
        clusters: names(Kind::Cluster),
        storages: names(Kind::BackupStorage),
        schedules: names(Kind::BackupSchedule),
    };
    for doc in docs {
        if let Some(problem) = name_problem(doc.name()) {
            out.push(doc.error("metadata.name", format!("{:?} {problem}", doc.name())));
        }
        match &doc.resource {
            Resource::Cluster(o) => check_cluster(doc, &o.spec, out),
            Resource::BackupStorage(o) => check_storage(doc, &o.spec, out),
            Resource::BackupSchedule(o) => check_schedule(doc, &o.spec, &index, out),
            Resource::Backup(o) => {
                index.reference(doc, "spec.cluster", Kind::Cluster, &o.spec.cluster, out);
                index.reference(
                    doc,
                    "spec.storage",
                    Kind::BackupStorage,
                    &o.spec.storage,
                    out,
                );
                check_backup_incremental(doc, &o.spec, out);
            }
            Resource::Restore(o) => check_restore(doc, &o.spec, &index, out),
            Resource::RestoreDrill(o) => check_drill(doc, &o.spec, &index, out),
        }
    }
}

struct Index<'a> {
    docs: &'a [Document],
    clusters: Vec<&'a str>,
    storages: Vec<&'a str>,
    schedules: Vec<&'a str>,
}

impl Index<'_> {
    /// Reports `field` when it names a `kind` that no document declares.
    fn reference(
        &self,
        doc: &Document,
        field: &str,
        kind: Kind,
        target: &str,
        out: &mut Vec<ValidationError>,
    ) -> bool {
        let known = match kind {
            Kind::Cluster => &self.clusters,
            Kind::BackupStorage => &self.storages,
            Kind::BackupSchedule => &self.schedules,
            _ => return true,
        };
        if known.contains(&target) {
            return true;
        }
        let listing = if known.is_empty() {
            format!("no {kind} is declared")
        } else {
            format!("declared: {}", known.join(", "))
        };
        out.push(doc.error(
            field,
            format!(
                "{kind} {target:?} does not exist{}; {listing}",
                hint(target, known)
            ),
        ));
        false
    }

    /// Reports `field` unless it names a schedule that backs up `cluster`.
    fn schedule_of(
        &self,
        doc: &Document,
        field: &str,
        schedule: &str,
        cluster: &str,
        out: &mut Vec<ValidationError>,
    ) {
        if self.reference(doc, field, Kind::BackupSchedule, schedule, out)
            && let Some(s) = self.schedule(schedule)
            && s.cluster != cluster
        {
            out.push(doc.error(
                field,
                format!(
                    "schedule {schedule:?} backs up cluster {:?}, not {cluster:?}",
                    s.cluster
                ),
            ));
        }
    }

    fn schedule(&self, name: &str) -> Option<&BackupScheduleSpec> {
        self.docs.iter().find_map(|d| match &d.resource {
            Resource::BackupSchedule(o) if o.metadata.name == name => Some(&o.spec),
            _ => None,
        })
    }

    fn cluster(&self, name: &str) -> Option<&ClusterSpec> {
        self.docs.iter().find_map(|d| match &d.resource {
            Resource::Cluster(o) if o.metadata.name == name => Some(&o.spec),
            _ => None,
        })
    }
}

fn check_duplicates(docs: &[Document], out: &mut Vec<ValidationError>) {
    let mut first: BTreeMap<(Kind, &str), &Document> = BTreeMap::new();
    for doc in docs {
        match first.get(&(doc.kind(), doc.name())) {
            Some(earlier) => out.push(doc.error(
                "metadata.name",
                format!(
                    "a second {} named {:?}; the first is in {}:{}",
                    doc.kind(),
                    doc.name(),
                    earlier.file,
                    earlier.pos("metadata.name").line
                ),
            )),
            None => {
                first.insert((doc.kind(), doc.name()), doc);
            }
        }
    }
}

fn check_cluster(doc: &Document, spec: &ClusterSpec, out: &mut Vec<ValidationError>) {
    if spec.replica_sets.is_empty() {
        out.push(doc.error(
            "spec.replicaSets",
            "a cluster needs at least one replica set",
        ));
    }
    let mut rs_names = BTreeSet::new();
    let mut members = BTreeSet::new();
    let sets = spec
        .replica_sets
        .iter()
        .enumerate()
        .map(|(i, rs)| (format!("spec.replicaSets.{i}"), rs))
        .chain(
            spec.config_server
                .iter()
                .map(|rs| ("spec.configServer".to_string(), rs)),
        );
    for (path, rs) in sets {
        if rs.name.is_empty() {
            out.push(doc.error(
                &format!("{path}.name"),
                "a replica set name must not be empty",
            ));
        } else if rs.name == crate::control::DRILL_REPLICA_SET {
            out.push(doc.error(
                &format!("{path}.name"),
                format!(
                    "the replica set name {:?} is kept for tidemark's own use: drill agents \
                     report under it",
                    rs.name
                ),
            ));
        } else if !rs_names.insert(rs.name.as_str()) {
            out.push(doc.error(
                &format!("{path}.name"),
                format!("the replica set name {:?} is used twice", rs.name),
            ));
        }
        if rs.members.is_empty() {
            out.push(doc.error(&format!("{path}.members"), "a replica set needs members"));
        }
        for (j, member) in rs.members.iter().enumerate() {
            let field = format!("{path}.members.{j}");
            if let Some(problem) = host_port_problem(member) {
                out.push(doc.error(&field, problem));
            } else if !members.insert(member.as_str()) {
                out.push(doc.error(&field, format!("the member {member:?} is listed twice")));
            }
        }
    }
}

/// `None` when `member` is a `host:port` with a port in 1..=65535.
pub fn host_port_problem(member: &str) -> Option<String> {
    let Some((host, port)) = member.rsplit_once(':') else {
        return Some(format!("{member:?} is not host:port"));
    };
    if host.is_empty() {
        return Some(format!("{member:?} has no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => None,
        _ => Some(format!("{member:?} has port {port:?}; expected 1-65535")),
    }
}

fn check_storage(doc: &Document, spec: &BackupStorageSpec, out: &mut Vec<ValidationError>) {
    if let Err(problem) = StorageScheme::of_url(&spec.url) {
        out.push(doc.error("spec.url", problem));
    }
    if url_has_userinfo(&spec.url) || spec.url.contains("?") && looks_like_credential(&spec.url) {
        out.push(doc.error(
            "spec.url",
            "the URL carries credentials; keep them out of git and set them in the \
             environment of tidemark (for S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)",
        ));
    }
    match (spec.compression.level_range(), spec.compression_level) {
        (None, Some(_)) => out.push(doc.error(
            "spec.compressionLevel",
            "a compression level makes no sense with compression: none",
        )),
        (Some((lo, hi)), Some(level)) if level < lo || level > hi => out.push(doc.error(
            "spec.compressionLevel",
            format!("{level} is out of range for this compression; use {lo}-{hi}"),
        )),
        _ => {}
    }
    for key in spec.options.iter().flat_map(|o| o.keys()) {
        if looks_like_credential(key) {
            out.push(doc.error(
                &format!("spec.options.{key}"),
                format!(
                    "{key:?} looks like a credential; credentials never go in git — set them \
                     in tidemark's environment instead"
                ),
            ));
        }
    }
}

fn check_schedule(
    doc: &Document,
    spec: &BackupScheduleSpec,
    index: &Index,
    out: &mut Vec<ValidationError>,
) {
    let cluster_ok = index.reference(doc, "spec.cluster", Kind::Cluster, &spec.cluster, out);
    index.reference(doc, "spec.storage", Kind::BackupStorage, &spec.storage, out);
    if let Err(problem) = parse_cron(&spec.cron) {
        out.push(doc.error("spec.cron", problem));
    }
    if let Err(problem) = parse_timezone(&spec.timezone) {
        out.push(doc.error("spec.timezone", problem));
    }
    if let Some(Err(problem)) = spec.rpo.as_deref().map(parse_max_age) {
        out.push(doc.error("spec.rpo", problem));
    }
    super::pitr::check_pitr(doc, spec, out);
    check_schedule_incremental(doc, spec, out);
    if let Some(retention) = &spec.retention {
        let counts = [
            ("keepLast", retention.keep_last),
            ("keepHourly", retention.keep_hourly),
            ("keepDaily", retention.keep_daily),
            ("keepWeekly", retention.keep_weekly),
            ("keepMonthly", retention.keep_monthly),
            ("keepYearly", retention.keep_yearly),
        ];
        for (field, count) in counts {
            if count == Some(0) {
                out.push(doc.error(
                    &format!("spec.retention.{field}"),
                    format!("{field} must be at least 1 (leave it out to not use it)"),
                ));
            }
        }
        if counts.iter().all(|(_, c)| c.is_none()) && retention.max_age.is_none() {
            out.push(doc.error(
                "spec.retention",
                "retention needs at least one of keepLast, keepHourly, keepDaily, keepWeekly, \
                 keepMonthly, keepYearly or maxAge (leave retention out to keep every backup)",
            ));
        }
        if let Some(Err(problem)) = retention.max_age.as_deref().map(parse_max_age) {
            out.push(doc.error("spec.retention.maxAge", problem));
        }
    }
    if let (true, Some(priority)) = (cluster_ok, &spec.priority)
        && let Some(cluster) = index.cluster(&spec.cluster)
    {
        let members: Vec<&str> = cluster
            .all_replica_sets()
            .flat_map(|rs| rs.members.iter().map(String::as_str))
            .collect();
        for (node, score) in priority {
            let field = format!("spec.priority.{node}");
            if !members.contains(&node.as_str()) {
                out.push(doc.error(
                    &field,
                    format!(
                        "{node:?} is not a member of cluster {:?}{}",
                        spec.cluster,
                        hint(node, &members)
                    ),
                ));
            } else if !score.is_finite() || *score < 0.0 {
                out.push(doc.error(&field, format!("{score} is not a score >= 0")));
            }
        }
    }
}

/// Two incremental schedules of one cluster into different storages would each replace
/// the other's block-tracking history on the nodes, so every run of both would be a full
/// base: refused, naming the first.
fn check_incremental_chains(docs: &[Document], out: &mut Vec<ValidationError>) {
    let mut first: BTreeMap<&str, &Document> = BTreeMap::new();
    for doc in docs {
        let Resource::BackupSchedule(o) = &doc.resource else {
            continue;
        };
        if o.spec.backup_type != crate::model::BackupType::Incremental {
            continue;
        }
        match first.get(o.spec.cluster.as_str()) {
            Some(earlier) => {
                let Resource::BackupSchedule(e) = &earlier.resource else {
                    continue;
                };
                if e.spec.storage != o.spec.storage {
                    out.push(doc.error(
                        "spec.storage",
                        format!(
                            "schedule {:?} already takes incremental backups of cluster {:?} into \
                             storage {:?} ({}:{}); the nodes track changes for one chain at a \
                             time, so two chains in two storages would make every run of both a \
                             full base: use one storage, or type: physical here",
                            earlier.name(),
                            o.spec.cluster,
                            e.spec.storage,
                            earlier.file,
                            earlier.pos("spec.storage").line
                        ),
                    ));
                }
            }
            None => {
                first.insert(&o.spec.cluster, doc);
            }
        }
    }
}

/// `base` and `blockSizeMB` belong to incremental backups only.
fn check_backup_incremental(
    doc: &Document,
    spec: &crate::model::BackupSpec,
    out: &mut Vec<ValidationError>,
) {
    let incremental = spec.backup_type == crate::model::BackupType::Incremental;
    if spec.base && !incremental {
        out.push(doc.error(
            "spec.base",
            format!(
                "base applies to type: incremental only; this backup is {}",
                spec.backup_type
            ),
        ));
    }
    if let Some(mb) = spec.block_size_mb {
        if !incremental {
            out.push(doc.error(
                "spec.blockSizeMB",
                format!(
                    "blockSizeMB applies to type: incremental only; this backup is {}",
                    spec.backup_type
                ),
            ));
        } else if let Some(problem) = crate::model::block_size_problem(mb) {
            out.push(doc.error("spec.blockSizeMB", problem));
        }
    }
}

/// `incremental:` belongs to `type: incremental`, with rules that can be applied.
fn check_schedule_incremental(
    doc: &Document,
    spec: &BackupScheduleSpec,
    out: &mut Vec<ValidationError>,
) {
    let Some(inc) = &spec.incremental else {
        return;
    };
    if spec.backup_type != crate::model::BackupType::Incremental {
        out.push(doc.error(
            "spec.incremental",
            format!(
                "incremental settings apply to type: incremental only; this schedule takes {} \
                 backups",
                spec.backup_type
            ),
        ));
    }
    if inc.max_increments == Some(0) {
        out.push(doc.error(
            "spec.incremental.maxIncrements",
            "maxIncrements must be at least 1 (leave it out for the default, 24)",
        ));
    }
    if let Some(Err(problem)) = inc.new_base_after.as_deref().map(parse_max_age) {
        out.push(doc.error("spec.incremental.newBaseAfter", problem));
    }
    if let Some(problem) = inc.block_size_mb.and_then(crate::model::block_size_problem) {
        out.push(doc.error("spec.incremental.blockSizeMB", problem));
    }
}

/// A drill names a schedule, a cron and namespaces in the user's own words.
fn check_drill(
    doc: &Document,
    spec: &RestoreDrillSpec,
    index: &Index,
    out: &mut Vec<ValidationError>,
) {
    if index.reference(
        doc,
        "spec.schedule",
        Kind::BackupSchedule,
        &spec.schedule,
        out,
    ) && let Some(s) = index.schedule(&spec.schedule)
        && s.backup_type == crate::model::BackupType::External
    {
        out.push(doc.error(
            "spec.schedule",
            format!(
                "schedule {:?} takes external (snapshot) backups, whose files are not in \
                 storage; a drill restores from storage, so it needs a physical schedule",
                spec.schedule
            ),
        ));
    }
    if let Err(problem) = parse_cron(&spec.cron) {
        out.push(doc.error("spec.cron", problem));
    }
    if let Err(problem) = parse_timezone(&spec.timezone) {
        out.push(doc.error("spec.timezone", problem));
    }
    if spec.checks.is_empty() {
        out.push(doc.error(
            "spec.checks",
            "a drill needs at least one check (checks.collections or checks.dbHash): a \
             drill that checks nothing proves only that mongod starts",
        ));
    }
    for (i, c) in spec.checks.collections.iter().enumerate() {
        if let Some(problem) = namespace_problem(&c.namespace) {
            out.push(doc.error(
                &format!("spec.checks.collections.{i}.namespace"),
                format!("{:?} {problem}", c.namespace),
            ));
        }
    }
    for (i, ns) in spec.checks.db_hash.iter().enumerate() {
        if let Some(problem) = namespace_problem(ns) {
            out.push(doc.error(
                &format!("spec.checks.dbHash.{i}"),
                format!("{ns:?} {problem}"),
            ));
        }
    }
}

/// `pointInTime`: a time that parses, a base chosen by it (never `latestOf`), and a
/// whole-cluster restore.
fn check_point_in_time(
    doc: &Document,
    spec: &RestoreSpec,
    pit: &crate::model::PointInTime,
    out: &mut Vec<ValidationError>,
) {
    if let Err(e) = pit.target() {
        out.push(doc.error("spec.source.pointInTime", e));
    }
    if spec.source.latest_of.is_some() {
        out.push(doc.error(
            "spec.source.latestOf",
            "latestOf cannot go with pointInTime: the base is the newest good backup whose \
             timeline reaches the target; pin one with backup: <name>",
        ));
    }
    if spec.is_selective() {
        out.push(doc.error(
            "spec.source.pointInTime",
            "a selective restore (namespaces) copies a backup as it was taken; pointInTime \
             restores the whole cluster",
        ));
    }
}

fn check_restore(
    doc: &Document,
    spec: &RestoreSpec,
    index: &Index,
    out: &mut Vec<ValidationError>,
) {
    index.reference(doc, "spec.cluster", Kind::Cluster, &spec.cluster, out);
    let sharded = index
        .cluster(&spec.cluster)
        .is_some_and(ClusterSpec::is_sharded);
    super::selective::check_selective(doc, spec, sharded, out);
    if let Some(pit) = &spec.source.point_in_time {
        check_point_in_time(doc, spec, pit, out);
    }
    let pitr = spec.source.point_in_time.is_some();
    match (&spec.source.backup, &spec.source.latest_of) {
        (Some(_), Some(_)) => out.push(doc.error(
            "spec.source",
            "give either backup or latestOf, not both: a restore has exactly one source",
        )),
        (None, None) if pitr => {}
        (None, None) => out.push(doc.error(
            "spec.source",
            "give the source: backup: <name>, latestOf: <schedule> or pointInTime: <time>",
        )),
        (Some(backup), None) => {
            let same_named = index.docs.iter().find_map(|d| match &d.resource {
                Resource::Backup(o) if o.metadata.name == *backup => Some(&o.spec),
                _ => None,
            });
            if let Some(b) = same_named
                && b.cluster != spec.cluster
            {
                out.push(doc.error(
                    "spec.source.backup",
                    format!(
                        "backup {backup:?} is of cluster {:?}, not {:?}",
                        b.cluster, spec.cluster
                    ),
                ));
            }
        }
        (None, Some(schedule)) => {
            index.schedule_of(doc, "spec.source.latestOf", schedule, &spec.cluster, out);
        }
    }
    if !spec.allow_partly_done && !spec.fallback_enabled && !spec.is_selective() {
        out.push(doc.error(
            "spec.allowPartlyDone",
            "allowPartlyDone: false needs fallbackEnabled: true — without a fallback, a \
             restore that fails on some nodes could be neither accepted nor rolled back",
        ));
    }
    if let (Some(remap), Some(cluster)) = (&spec.replica_set_remap, index.cluster(&spec.cluster)) {
        let names: Vec<&str> = cluster
            .all_replica_sets()
            .map(|r| r.name.as_str())
            .collect();
        let mut seen = BTreeSet::new();
        for (from, to) in remap {
            let field = format!("spec.replicaSetRemap.{from}");
            if from.is_empty() {
                out.push(doc.error(
                    "spec.replicaSetRemap",
                    "a backup replica-set name must not be empty",
                ));
            }
            if !names.contains(&to.as_str()) {
                out.push(doc.error(
                    &field,
                    format!(
                        "{from:?} maps to {to:?}, which is not a replica set of cluster {:?} \
                         (it has: {}){}",
                        spec.cluster,
                        names.join(", "),
                        hint(to, &names)
                    ),
                ));
            } else if !seen.insert(to.as_str()) {
                out.push(doc.error(
                    &field,
                    format!("{to:?} is the target of two replica sets of the backup"),
                ));
            }
        }
    }
    if let Some(post) = &spec.post_restore
        && let Some(schedule) = &post.fresh_backup
    {
        index.schedule_of(
            doc,
            "spec.postRestore.freshBackup",
            schedule,
            &spec.cluster,
            out,
        );
        if !post.start_nodes {
            out.push(doc.error(
                "spec.postRestore.freshBackup",
                "a fresh backup needs running nodes; set postRestore.startNodes: true",
            ));
        }
    }
}
