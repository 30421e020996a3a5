//! Every defect the validator must catch, each alone in an otherwise valid set, then all
//! together: each must be reported with its file and line, and none may hide another.

use tidemark_schema::validate::{SourceFile, ValidationError, validate_files};

const CLUSTER: &str = "\
apiVersion: tidemark/v1
kind: Cluster
metadata:
  name: prod
spec:
  replicaSets:
    - name: rs0
      members: [\"db1:27017\", \"db2:27017\", \"db3:27017\"]
";

const STORAGE: &str = "\
apiVersion: tidemark/v1
kind: BackupStorage
metadata:
  name: s3
spec:
  url: s3://bucket/prefix
  options:
    region: eu-west-1
";

const SCHEDULE: &str = "\
apiVersion: tidemark/v1
kind: BackupSchedule
metadata:
  name: nightly
spec:
  cluster: prod
  storage: s3
  type: physical
  cron: \"0 2 * * *\"
  timezone: Europe/Berlin
  retention:
    keepLast: 7
    maxAge: 30d
";

const RESTORE: &str = "\
apiVersion: tidemark/v1
kind: Restore
metadata:
  name: drill
spec:
  cluster: prod
  source:
    latestOf: nightly
  fallbackEnabled: true
";

const DRILL: &str = "\
apiVersion: tidemark/v1
kind: RestoreDrill
metadata:
  name: weekly-drill
spec:
  schedule: nightly
  cron: \"0 6 * * 0\"
  checks:
    collections:
      - namespace: shop.orders
        minDocuments: 1
    dbHash: [shop.products]
";

fn base() -> Vec<SourceFile> {
    [
        ("cluster.yaml", CLUSTER),
        ("storage.yaml", STORAGE),
        ("schedule.yaml", SCHEDULE),
        ("restore.yaml", RESTORE),
        ("drill.yaml", DRILL),
    ]
    .into_iter()
    .map(|(p, t)| SourceFile {
        path: p.into(),
        bytes: t.as_bytes().to_vec(),
    })
    .collect()
}

/// A defect: the file it replaces or adds, its content, and what the error must say.
struct Defect {
    what: &'static str,
    file: &'static str,
    content: Vec<u8>,
    line: u32,
    says: &'static [&'static str],
}

fn replace(text: &str, from: &str, to: &str) -> Vec<u8> {
    assert!(text.contains(from), "fixture lacks {from:?}");
    text.replacen(from, to, 1).into_bytes()
}

/// A copy of a base document under another name, so that each defect lives in a document
/// of its own and all of them can be present at once.
fn renamed(text: &str, old: &str, new: &str) -> String {
    text.replacen(&format!("name: {old}\n"), &format!("name: {new}\n"), 1)
}

fn defects() -> Vec<Defect> {
    let schedule = |n: &str| renamed(SCHEDULE, "nightly", n);
    let restore = |n: &str| renamed(RESTORE, "drill", n);
    let storage = |n: &str| renamed(STORAGE, "s3", n);
    let cluster = |n: &str| renamed(CLUSTER, "prod", n);
    let drill = |n: &str| renamed(DRILL, "weekly-drill", n);
    vec![
        Defect {
            what: "drill namespace without a collection",
            file: "d-drill-ns.yaml",
            content: replace(
                &drill("d-drill-ns"),
                "namespace: shop.orders",
                "namespace: orders",
            ),
            line: 10,
            says: &["\"orders\" is not of the form db.collection"],
        },
        Defect {
            what: "drill of an unknown schedule",
            file: "d-drill-schedule.yaml",
            content: replace(
                &drill("d-drill-schedule"),
                "schedule: nightly",
                "schedule: nighty",
            ),
            line: 6,
            says: &["BackupSchedule \"nighty\" does not exist", "nightly"],
        },
        Defect {
            what: "drill that checks nothing",
            file: "d-drill-checks.yaml",
            content: replace(
                &drill("d-drill-checks"),
                "  checks:\n    collections:\n      - namespace: shop.orders\n        minDocuments: 1\n    dbHash: [shop.products]\n",
                "",
            ),
            // A left-out field points at its parent's content: `spec`'s first line.
            line: 6,
            says: &["at least one check"],
        },
        Defect {
            what: "replica set name reserved for drill agents",
            file: "d-rs-underscore.yaml",
            content: replace(&cluster("d-rs-underscore"), "- name: rs0", "- name: _drill"),
            line: 7,
            says: &["\"_drill\" is kept for tidemark's own use"],
        },
        Defect {
            what: "duplicate key",
            file: "d-dupkey.yaml",
            content: replace(
                &schedule("d-dupkey"),
                "  type: physical\n",
                "  type: physical\n  type: external\n",
            ),
            line: 9,
            says: &["duplicate", "type"],
        },
        Defect {
            what: "unknown field with a close match",
            file: "d-unknown.yaml",
            content: replace(&schedule("d-unknown"), "  timezone:", "  timeZone:"),
            line: 10,
            says: &["unknown field \"timeZone\"", "did you mean \"timezone\""],
        },
        Defect {
            what: "wrong type",
            file: "d-type.yaml",
            content: replace(
                &restore("d-type"),
                "fallbackEnabled: true",
                "fallbackEnabled: [yes]",
            ),
            line: 9,
            says: &["fallbackEnabled", "expected true or false, found a list"],
        },
        Defect {
            what: "missing required field",
            file: "d-required.yaml",
            content: replace(&storage("d-required"), "  url: s3://bucket/prefix\n", ""),
            line: 6,
            says: &["missing required field \"url\""],
        },
        Defect {
            what: "wrong apiVersion",
            file: "d-api.yaml",
            content: replace(&cluster("d-api"), "tidemark/v1", "tidemark/v2"),
            line: 1,
            says: &[
                "apiVersion",
                "must be \"tidemark/v1\", found \"tidemark/v2\"",
            ],
        },
        Defect {
            what: "invalid cron",
            file: "d-cron.yaml",
            content: replace(&schedule("d-cron"), "\"0 2 * * *\"", "\"0 25 * * *\""),
            line: 9,
            says: &["spec.cron", "not a valid cron expression"],
        },
        Defect {
            what: "invalid time zone",
            file: "d-tz.yaml",
            content: replace(&schedule("d-tz"), "Europe/Berlin", "Europe/Berln"),
            line: 10,
            says: &["not an IANA time zone", "did you mean \"Europe/Berlin\""],
        },
        Defect {
            what: "reference to a missing cluster",
            file: "d-refcluster.yaml",
            content: replace(&schedule("d-refcluster"), "cluster: prod", "cluster: prdo"),
            line: 6,
            says: &["Cluster \"prdo\" does not exist", "did you mean \"prod\""],
        },
        Defect {
            what: "reference to a missing storage",
            file: "d-refstorage.yaml",
            content: replace(&schedule("d-refstorage"), "storage: s3", "storage: gcs"),
            line: 7,
            says: &["BackupStorage \"gcs\" does not exist"],
        },
        Defect {
            what: "reference to a missing schedule",
            file: "d-refschedule.yaml",
            content: replace(
                &restore("d-refschedule"),
                "latestOf: nightly",
                "latestOf: weekly",
            ),
            line: 8,
            says: &["BackupSchedule \"weekly\" does not exist"],
        },
        Defect {
            what: "two documents of one kind with one name",
            file: "d-samename.yaml",
            content: CLUSTER.as_bytes().to_vec(),
            line: 4,
            says: &["a second Cluster named \"prod\"", "cluster.yaml:4"],
        },
        Defect {
            what: "allowPartlyDone false without fallback",
            file: "d-partly.yaml",
            content: replace(
                &restore("d-partly"),
                "fallbackEnabled: true",
                "fallbackEnabled: false\n  allowPartlyDone: false",
            ),
            line: 10,
            says: &["allowPartlyDone: false needs fallbackEnabled: true"],
        },
        Defect {
            what: "selective restore into mongod's own database",
            file: "d-sel-admin.yaml",
            content: replace(
                &restore("d-sel-admin"),
                "fallbackEnabled: true",
                "namespaces: [shop.orders, admin.users]",
            ),
            line: 9,
            says: &["\"admin.users\" would be written into database \"admin\""],
        },
        Defect {
            what: "selective restore renaming an unlisted collection",
            file: "d-sel-rename.yaml",
            content: replace(
                &restore("d-sel-rename"),
                "fallbackEnabled: true",
                "namespaces: [shop.orders]\n  renameTo:\n    shop.carts: shop.carts2",
            ),
            line: 11,
            says: &["\"shop.carts\" is not one of the collections listed in spec.namespaces"],
        },
        Defect {
            what: "selective restore renamed onto a system collection",
            file: "d-sel-system.yaml",
            content: replace(
                &restore("d-sel-system"),
                "fallbackEnabled: true",
                "namespaces: [shop.orders]\n  renameTo:\n    shop.orders: shop.system.views",
            ),
            line: 11,
            says: &["target \"shop.system.views\" is one of mongod's own collections"],
        },
        Defect {
            what: "selective restore with a fallback",
            file: "d-sel-fallback.yaml",
            content: replace(
                &restore("d-sel-fallback"),
                "fallbackEnabled: true",
                "fallbackEnabled: true\n  namespaces: [shop.orders]",
            ),
            line: 9,
            says: &["has no meaning for a selective restore"],
        },
        Defect {
            what: "onExisting without namespaces",
            file: "d-sel-onexisting.yaml",
            content: replace(
                &restore("d-sel-onexisting"),
                "fallbackEnabled: true",
                "fallbackEnabled: true\n  onExisting: merge",
            ),
            line: 10,
            says: &["applies only to a selective restore"],
        },
        Defect {
            what: "both backup and latestOf",
            file: "d-bothsources.yaml",
            content: replace(
                &restore("d-bothsources"),
                "latestOf: nightly",
                "latestOf: nightly\n    backup: b1",
            ),
            line: 8,
            says: &["either backup or latestOf, not both"],
        },
        Defect {
            what: "a point in time that is not a time",
            file: "d-pit-bad.yaml",
            content: replace(
                &restore("d-pit-bad"),
                "latestOf: nightly",
                "pointInTime: \"2026-12-04 14:02\"",
            ),
            line: 8,
            says: &[
                "\"2026-12-04 14:02\" is not an RFC 3339 time",
                "{t: <seconds>, i: <ordinal>}",
            ],
        },
        Defect {
            what: "a point in time with latestOf",
            file: "d-pit-latest.yaml",
            content: replace(
                &restore("d-pit-latest"),
                "latestOf: nightly",
                "latestOf: nightly\n    pointInTime: {t: 1796392936, i: 4}",
            ),
            line: 8,
            says: &["latestOf cannot go with pointInTime"],
        },
        Defect {
            what: "a selective point-in-time restore",
            file: "d-pit-sel.yaml",
            content: replace(
                &restore("d-pit-sel"),
                "latestOf: nightly\n  fallbackEnabled: true",
                "pointInTime: \"2026-12-04T14:02:16.9Z\"\n  namespaces: [\"app.items\"]",
            ),
            line: 8,
            says: &["pointInTime restores the whole cluster"],
        },
        Defect {
            what: "keepLast 0",
            file: "d-keeplast.yaml",
            content: replace(&schedule("d-keeplast"), "keepLast: 7", "keepLast: 0"),
            line: 12,
            says: &["keepLast must be at least 1"],
        },
        Defect {
            what: "retention with no rule",
            file: "d-norule.yaml",
            content: replace(
                &schedule("d-norule"),
                "    keepLast: 7\n    maxAge: 30d\n",
                "    keepDaily: 0\n",
            ),
            line: 12,
            says: &["keepDaily must be at least 1"],
        },
        Defect {
            what: "keepLast left empty",
            file: "d-null-keeplast.yaml",
            content: replace(&schedule("d-null-keeplast"), "keepLast: 7", "keepLast:"),
            line: 12,
            says: &["keepLast"],
        },
        Defect {
            what: "retention empty",
            file: "d-empty-retention.yaml",
            content: replace(
                &schedule("d-empty-retention"),
                "  retention:\n    keepLast: 7\n    maxAge: 30d\n",
                "  retention: {}\n",
            ),
            line: 11,
            says: &["retention needs at least one of keepLast"],
        },
        Defect {
            what: "bad storage URL scheme",
            file: "d-scheme.yaml",
            content: replace(
                &storage("d-scheme"),
                "s3://bucket/prefix",
                "ftp://bucket/prefix",
            ),
            line: 6,
            says: &["scheme \"ftp\" is not supported"],
        },
        Defect {
            what: "inline credentials",
            file: "d-creds.yaml",
            content: replace(
                &storage("d-creds"),
                "region: eu-west-1",
                "region: eu-west-1\n    secret_access_key: abc",
            ),
            line: 9,
            says: &["\"secret_access_key\" looks like a credential"],
        },
        Defect {
            what: "non-UTF-8 file",
            file: "d-latin1.yaml",
            content: b"# caf\xe9\napiVersion: tidemark/v1\n".to_vec(),
            line: 1,
            says: &["not valid UTF-8"],
        },
        Defect {
            what: "root that is not a mapping",
            file: "d-list.yaml",
            content: b"- apiVersion: tidemark/v1\n- kind: Cluster\n".to_vec(),
            line: 1,
            says: &["must be a mapping"],
        },
        Defect {
            what: "unknown kind",
            file: "d-kind.yaml",
            content: b"apiVersion: tidemark/v1\nkind: Clustr\nmetadata: {name: x}\nspec: {}\n"
                .to_vec(),
            line: 2,
            says: &["\"Clustr\" is not a known kind", "did you mean \"Cluster\""],
        },
        Defect {
            what: "oplogSpan outside 1s..1d",
            file: "d-pitr-span.yaml",
            content: format!(
                "{}  pitr:\n    enabled: false\n    oplogSpan: 2d\n",
                schedule("d-pitr-span")
            )
            .into_bytes(),
            line: 16,
            says: &["oplogSpan \"2d\" is outside 1s..1d"],
        },
        Defect {
            what: "two schedules slicing one cluster into one storage",
            file: "d-pitr-twice.yaml",
            content: format!(
                "{}  pitr:\n    enabled: true\n---\n{}  pitr:\n    enabled: true\n",
                schedule("d-pitr-a"),
                schedule("d-pitr-b")
            )
            .into_bytes(),
            line: 31,
            says: &[
                "schedule \"d-pitr-a\" already slices cluster \"prod\"'s oplog into storage \"s3\"",
                "d-pitr-twice.yaml:15",
            ],
        },
        Defect {
            what: "two incremental chains of one cluster in two storages",
            file: "d-incr-twice.yaml",
            content: format!(
                "{}---\n{}---\n{}",
                storage("s3-other"),
                SCHEDULE
                    .replace("name: nightly", "name: d-incr-a")
                    .replace("physical", "incremental"),
                SCHEDULE
                    .replace("name: nightly", "name: d-incr-b")
                    .replace("physical", "incremental")
                    .replace("storage: s3", "storage: s3-other")
            )
            .into_bytes(),
            line: 30,
            says: &[
                "schedule \"d-incr-a\" already takes incremental backups of cluster \"prod\"",
                "d-incr-twice.yaml:16",
            ],
        },
        Defect {
            what: "incremental settings on a physical schedule",
            file: "d-incr-type.yaml",
            content: format!(
                "{}  incremental:\n    maxIncrements: 0\n",
                schedule("d-incr-type")
            )
            .into_bytes(),
            line: 15,
            says: &["incremental settings apply to type: incremental only"],
        },
        Defect {
            what: "bad name",
            file: "d-name.yaml",
            content: cluster("Prod_1").into_bytes(),
            line: 4,
            says: &["\"Prod_1\" contains 'P'"],
        },
    ]
}

fn with(defect: &Defect) -> Vec<SourceFile> {
    let mut files = base();
    match files.iter_mut().find(|f| f.path == defect.file) {
        Some(f) => f.bytes = defect.content.clone(),
        None => files.push(SourceFile {
            path: defect.file.into(),
            bytes: defect.content.clone(),
        }),
    }
    files
}

fn find<'a>(errors: &'a [ValidationError], d: &Defect) -> Option<&'a ValidationError> {
    errors.iter().find(|e| {
        let text = e.to_string();
        e.file == d.file && e.line == d.line && d.says.iter().all(|s| text.contains(s))
    })
}

#[test]
fn the_base_set_is_valid() {
    let v = validate_files(&base());
    assert!(v.is_valid(), "{:#?}", v.errors);
    assert_eq!(v.state.documents.len(), 5);
}

#[test]
fn each_defect_alone_is_reported_with_file_and_line() {
    let mut failures = Vec::new();
    for d in defects() {
        let v = validate_files(&with(&d));
        if v.is_valid() {
            failures.push(format!("{}: accepted", d.what));
        } else if find(&v.errors, &d).is_none() {
            let got: Vec<String> = v.errors.iter().map(ToString::to_string).collect();
            failures.push(format!(
                "{}: expected {}:{} saying {:?}, got {got:#?}",
                d.what, d.file, d.line, d.says
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn all_defects_together_are_all_reported_in_one_run() {
    let all = defects();
    let mut files = base();
    files.extend(all.iter().map(|d| SourceFile {
        path: d.file.into(),
        bytes: d.content.clone(),
    }));
    let v = validate_files(&files);
    let missing: Vec<&str> = all
        .iter()
        .filter(|d| find(&v.errors, d).is_none())
        .map(|d| d.what)
        .collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?} from {:#?}",
        v.errors
    );
    // Nothing else: the base set contributes no errors, each defect exactly its own.
    assert!(
        v.errors.iter().all(|e| e.file.starts_with("d-")),
        "{:#?}",
        v.errors
    );
}

#[test]
fn several_errors_in_one_document_are_all_reported() {
    let text = SCHEDULE
        .replace("  timezone:", "  timeZone:")
        .replace("keepLast: 7", "keepLast: many")
        .replace("type: physical", "type: logical");
    let v = validate_files(&[SourceFile {
        path: "s.yaml".into(),
        bytes: text.into_bytes(),
    }]);
    let text: Vec<String> = v.errors.iter().map(ToString::to_string).collect();
    let all = text.join("\n");
    assert!(all.contains("unknown field \"timeZone\""), "{all}");
    assert!(
        all.contains("keepLast: expected an integer, found \"many\""),
        "{all}"
    );
    assert!(
        all.contains("\"logical\" is not one of physical, external, incremental"),
        "{all}"
    );
    assert!(
        all.contains("BackupSchedule \"nightly\""),
        "errors name the document: {all}"
    );
}

#[test]
fn a_billion_laughs_fails_fast_in_bounded_memory() {
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let mut prev = 'a';
    for name in 'b'..='j' {
        bomb.push_str(&format!(
            "{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
        prev = name;
    }
    let started = std::time::Instant::now();
    let v = validate_files(&[SourceFile {
        path: "bomb.yaml".into(),
        bytes: bomb.into_bytes(),
    }]);
    assert!(!v.is_valid());
    assert_eq!(v.errors[0].file, "bomb.yaml");
    // Not a timing test: a full expansion would be 9^10 nodes and never end at all.
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn empty_documents_are_skipped_and_several_per_file_are_read() {
    let text = format!("---\n---\n{CLUSTER}---\n{STORAGE}---\n");
    let v = validate_files(&[SourceFile {
        path: "all.yaml".into(),
        bytes: text.into_bytes(),
    }]);
    assert!(v.is_valid(), "{:#?}", v.errors);
    assert_eq!(v.state.documents.len(), 2);
}
