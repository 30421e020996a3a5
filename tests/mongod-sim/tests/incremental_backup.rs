//! PSMDB's incremental `$backupCursor`, as a backup tool uses it: a base, increments listing
//! changed blocks, the two IDs WiredTiger remembers, their fate across restarts and
//! `kill -9`, `disableIncrementalBackup`, and the refusals. Every restore here is checked
//! byte for byte against a full copy taken under the same cursor.

use bson::{Bson, Document, doc};
use mongod_sim::harness::{Process, Standalone, fast_flags, free_port};
use mongodb::Client;
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);
const MB: i64 = 1 << 20;
/// Checkpoints only on `fsync` and clean shutdown, so a test decides when the history is
/// persisted.
const NO_TIMED_CHECKPOINTS: [&str; 2] = ["--sim-checkpoint-interval-ms", "3600000"];

/// An open backup cursor: its id, the metadata and the file documents.
struct Listing {
    id: i64,
    meta: Document,
    files: Vec<Document>,
}

/// Opens a backup cursor with `spec` and reads it to its first empty batch; the refusal's
/// reply when it fails.
fn open(p: &Process, spec: Document) -> Result<Listing, Document> {
    let r = p
        .command(
            "admin",
            doc! {"aggregate": 1, "pipeline": [{"$backupCursor": spec}], "cursor": {"batchSize": 2}},
        )
        .unwrap();
    if r.get_f64("ok").unwrap_or(0.0) != 1.0 {
        return Err(r);
    }
    let cur = r.get_document("cursor").unwrap();
    let id = cur.get_i64("id").unwrap();
    let mut docs = batch(cur, "firstBatch");
    loop {
        let r = p
            .command(
                "admin",
                doc! {"getMore": id, "collection": "$cmd.aggregate"},
            )
            .unwrap();
        let next = batch(r.get_document("cursor").unwrap(), "nextBatch");
        if next.is_empty() {
            break;
        }
        docs.extend(next);
    }
    let meta = docs.remove(0).get_document("metadata").unwrap().clone();
    Ok(Listing {
        id,
        meta,
        files: docs,
    })
}

fn batch(cursor: &Document, key: &str) -> Vec<Document> {
    cursor
        .get_array(key)
        .unwrap()
        .iter()
        .map(|d| d.as_document().unwrap().clone())
        .collect()
}

fn close(p: &Process, l: &Listing) {
    let r = p
        .command(
            "admin",
            doc! {"killCursors": "$cmd.aggregate", "cursors": [l.id]},
        )
        .unwrap();
    assert_eq!(r.get_array("cursorsKilled").unwrap().len(), 1, "{r}");
}

/// Opens, reads and closes: the listing of a cursor nobody copies from.
fn take(p: &Process, spec: Document) -> Listing {
    let l = open(p, spec.clone()).unwrap_or_else(|r| panic!("{spec} refused: {r}"));
    close(p, &l);
    l
}

fn refusal(p: &Process, spec: Document) -> (i32, String) {
    let r = open(p, spec.clone())
        .err()
        .unwrap_or_else(|| panic!("{spec} was accepted"));
    (
        r.get_i32("code").unwrap(),
        r.get_str("errmsg").unwrap().to_string(),
    )
}

fn incr(this: &str, src: Option<&str>) -> Document {
    let mut d = doc! {"incrementalBackup": true, "thisBackupName": this, "blockSize": 1};
    if let Some(src) = src {
        d.insert("srcBackupName", src);
    }
    d
}

fn checkpoint(p: &Process) {
    let r = p.command("admin", doc! {"fsync": 1}).unwrap();
    assert_eq!(r.get_f64("ok").unwrap(), 1.0, "{r}");
}

fn num(d: &Document, key: &str) -> Option<i64> {
    match d.get(key)? {
        Bson::Int64(n) => Some(*n),
        other => panic!("{key} is {other:?}, not an i64, in {d}"),
    }
}

/// A listed file's path relative to the dbPath.
fn relative(filename: &str, dbpath: &Path) -> PathBuf {
    let f = Path::new(filename);
    let canon = fs::canonicalize(dbpath).unwrap();
    f.strip_prefix(dbpath)
        .or_else(|_| f.strip_prefix(&canon))
        .unwrap_or_else(|_| panic!("{filename} is not under {}", dbpath.display()))
        .to_path_buf()
}

/// The listing's documents by file, in order.
fn by_file(l: &Listing) -> BTreeMap<String, Vec<Document>> {
    let mut out: BTreeMap<String, Vec<Document>> = BTreeMap::new();
    for d in &l.files {
        let name = d.get_str("filename").unwrap().to_string();
        out.entry(name).or_default().push(d.clone());
    }
    out
}

/// Copies every listed file whole from the live dbPath into `dir` (while the cursor is open).
fn full_copy(l: &Listing, dbpath: &Path, dir: &Path) {
    for name in by_file(l).keys() {
        let to = dir.join(relative(name, dbpath));
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(name, to).unwrap();
    }
}

/// Applies an increment onto `dir` (holding the previous backup): each listed range is
/// copied from the live file at its offset, each file cut to `fileSize`, and files the
/// increment does not list are removed.
fn apply(l: &Listing, dbpath: &Path, dir: &Path) {
    let files = by_file(l);
    for (name, docs) in &files {
        let to = dir.join(relative(name, dbpath));
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        let mut out = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&to)
            .unwrap();
        let mut live = fs::File::open(name).unwrap();
        for d in docs {
            let (Some(offset), Some(length)) = (num(d, "offset"), num(d, "length")) else {
                assert!(
                    to.exists(),
                    "{name} unchanged but not in the previous backup"
                );
                continue;
            };
            let mut buf = Vec::new();
            live.seek(SeekFrom::Start(offset as u64)).unwrap();
            (&mut live)
                .take(length as u64)
                .read_to_end(&mut buf)
                .unwrap();
            out.seek(SeekFrom::Start(offset as u64)).unwrap();
            out.write_all(&buf).unwrap();
        }
        out.set_len(num(&docs[0], "fileSize").unwrap() as u64)
            .unwrap();
    }
    let listed: Vec<PathBuf> = files.keys().map(|n| relative(n, dbpath)).collect();
    for f in walk(dir) {
        if !listed.contains(&f) {
            fs::remove_file(dir.join(f)).unwrap();
        }
    }
}

/// Every file under `dir`, relative to it.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                todo.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

fn assert_same_files(a: &Path, b: &Path) {
    assert_eq!(walk(a), walk(b), "not the same files");
    for f in walk(a) {
        assert!(
            fs::read(a.join(&f)).unwrap() == fs::read(b.join(&f)).unwrap(),
            "{} differs",
            f.display()
        );
    }
}

/// The listing's documents of the only file whose name starts with `prefix` and whose size
/// is in `sizes`.
fn docs_of(l: &Listing, prefix: &str, sizes: std::ops::Range<i64>) -> Vec<Document> {
    let mut hits: Vec<Vec<Document>> = by_file(l)
        .into_iter()
        .filter(|(n, d)| {
            let base = Path::new(n).file_name().unwrap().to_string_lossy();
            base.starts_with(prefix) && sizes.contains(&num(&d[0], "fileSize").unwrap())
        })
        .map(|(_, d)| d)
        .collect();
    assert_eq!(hits.len(), 1, "{prefix} files of size {sizes:?}: {hits:?}");
    hits.remove(0)
}

async fn fill(p: &Process, coll: &str, n: i32) {
    let c = Client::with_uri_str(p.uri()).await.unwrap();
    let docs = (0..n).map(|i| doc! {"_id": i, "v": 0, "pad": "x".repeat(1000)});
    c.database("app")
        .collection::<Document>(coll)
        .insert_many(docs)
        .await
        .unwrap();
}

fn restart(s: &Standalone, log: &str, extra: &[&str]) -> Process {
    let mut args = fast_flags();
    args.extend(extra.iter().map(|a| a.to_string()));
    let log = s.dir.path().join(log);
    let mut p = Process::spawn(&s.process.dbpath, &log, free_port().unwrap(), &args).unwrap();
    p.wait_ready(LONG).unwrap();
    p
}

#[tokio::test]
async fn an_increment_lists_only_changed_blocks_and_restores_byte_identical() {
    let s = Standalone::start(&[]).unwrap();
    let p = &s.process;
    fill(p, "big", 6000).await;
    fill(p, "small", 50).await;
    checkpoint(p);
    let base_dir = s.dir.path().join("base");
    let base = open(p, incr("base", None)).unwrap();
    assert_eq!(base.meta.get_bool("incrementalBackup").ok(), Some(true));
    assert_eq!(base.meta.get_str("thisBackupName").ok(), Some("base"));
    assert_eq!(base.meta.get_i64("blockSize").ok(), Some(1), "as asked");
    for d in &base.files {
        let size = num(d, "fileSize").unwrap();
        let range = (num(d, "offset"), num(d, "length"));
        let want = if size == 0 {
            (None, None)
        } else {
            (Some(0), Some(size))
        };
        assert_eq!(range, want, "a base lists every file whole: {d}");
        assert!(
            !d.get_str("filename")
                .unwrap()
                .ends_with("WiredTigerIncr.sim")
        );
    }
    full_copy(&base, &p.dbpath, &base_dir);
    close(p, &base);

    // Same-size updates in place: the big collection's file changes in a few blocks.
    let c = Client::with_uri_str(p.uri()).await.unwrap();
    c.database("app")
        .collection::<Document>("big")
        .update_many(
            doc! {"_id": {"$gte": 3000, "$lt": 3020}},
            doc! {"$set": {"v": 1}},
        )
        .await
        .unwrap();
    checkpoint(p);
    let inc = open(p, incr("inc1", Some("base"))).unwrap();
    let big = docs_of(&inc, "collection-", 5 * MB..100 * MB);
    let blocks = (num(&big[0], "fileSize").unwrap() + MB - 1) / MB;
    assert!(big.len() <= 3 && (big.len() as i64) < blocks, "{big:?}");
    for d in &big {
        assert_eq!(num(d, "length"), Some(MB), "{d}");
        assert_eq!(num(d, "offset").unwrap() % MB, 0, "{d}");
    }
    let small = docs_of(&inc, "collection-", 0..MB);
    assert_eq!(small.len(), 1);
    assert!(
        !small[0].contains_key("offset"),
        "unchanged: {:?}",
        small[0]
    );
    let whole = docs_of(&inc, "WiredTiger.wt", 0..MB);
    assert_eq!(num(&whole[0], "length"), num(&whole[0], "fileSize"));

    let full_dir = s.dir.path().join("full");
    full_copy(&inc, &p.dbpath, &full_dir);
    apply(&inc, &p.dbpath, &base_dir);
    close(p, &inc);
    assert_same_files(&base_dir, &full_dir);
}

#[test]
fn a_node_restored_from_a_backup_starts_without_history() {
    let s = Standalone::start(&[]).unwrap();
    let p = &s.process;
    p.command("app", doc! {"insert": "c", "documents": [{"_id": 1}]})
        .unwrap();
    checkpoint(p);
    let base = open(p, incr("base", None)).unwrap();
    let restored = s.dir.path().join("restored");
    full_copy(&base, &p.dbpath, &restored);
    close(p, &base);
    let log = s.dir.path().join("restored.log");
    let mut r = Process::spawn(&restored, &log, free_port().unwrap(), &fast_flags()).unwrap();
    r.wait_ready(LONG).unwrap();
    assert_eq!(refusal(&r, incr("next", Some("base"))).0, 8);
    assert_eq!(
        refusal(p, incr("base", None)).0,
        2,
        "the source still knows it"
    );
}

#[test]
fn refusals_carry_mongods_codes() {
    let s = Standalone::start(&[]).unwrap();
    let p = &s.process;
    let no_source = refusal(p, incr("x", Some("nope")));
    assert_eq!(no_source, (8, "2: No such file or directory".to_string()));
    let names_alone = "'thisBackupName' and 'srcBackupName' parameters are only allowed when 'incrementalBackup' is true";
    assert_eq!(
        refusal(p, doc! {"thisBackupName": "a"}),
        (72, names_alone.to_string())
    );
    assert_eq!(refusal(p, doc! {"srcBackupName": "a"}).0, 72);
    let both = refusal(
        p,
        doc! {"incrementalBackup": true, "disableIncrementalBackup": true, "thisBackupName": "a"},
    );
    assert_eq!(both.0, 72);
    assert!(both.1.contains("mutually exclusive"), "{}", both.1);
    assert_eq!(
        refusal(p, doc! {"incrementalBackup": true}),
        (
            72,
            "'thisBackupName' needs to exist when incrementalBackup=true".to_string()
        )
    );
    let mut zero = incr("z", None);
    zero.insert("blockSize", 0);
    assert_eq!(refusal(p, zero).0, 2);
    assert_eq!(refusal(p, doc! {"incrementalBackup": 1}).0, 14);
    take(p, incr("a", None));
    let reused = (2, "22: Invalid argument".to_string());
    assert_eq!(refusal(p, incr("a", None)), reused);
    assert_eq!(refusal(p, incr("a", Some("a"))), reused);
    // No refusal left a cursor open.
    take(p, doc! {});
}

#[test]
fn only_two_ids_are_remembered() {
    let s = Standalone::start(&[]).unwrap();
    let p = &s.process;
    take(p, incr("A", None));
    take(p, incr("B", Some("A")));
    // A full backup leaves the history as it is.
    take(p, doc! {});
    take(p, incr("C", Some("B")));
    assert_eq!(refusal(p, incr("D", Some("A"))).0, 8, "A dropped out");
    take(p, incr("D", Some("B")));
    // A name that dropped out may be taken again.
    take(p, incr("A", Some("B")));
}

#[test]
fn ids_survive_a_clean_restart_and_kill_9_keeps_those_of_the_last_checkpoint() {
    let s = Standalone::start(&NO_TIMED_CHECKPOINTS).unwrap();
    let p = &s.process;
    p.command("app", doc! {"insert": "c", "documents": [{"_id": 1}]})
        .unwrap();
    take(p, incr("A", None));
    take(p, incr("B", Some("A")));
    let mut s = s;
    assert_eq!(s.process.shutdown(false).unwrap().code(), Some(0));
    let mut p = restart(&s, "2.log", &NO_TIMED_CHECKPOINTS);
    // Both known: B is a source, A a name in use.
    assert_eq!(refusal(&p, incr("A", Some("B"))).0, 2);
    take(&p, incr("C", Some("B")));
    checkpoint(&p);
    // D is registered but no checkpoint has persisted it when the node dies.
    take(&p, incr("D", Some("C")));
    p.kill();
    let p = restart(&s, "3.log", &NO_TIMED_CHECKPOINTS);
    assert_eq!(refusal(&p, incr("E", Some("D"))).0, 8, "D was lost");
    assert_eq!(refusal(&p, incr("C", Some("B"))).0, 2, "B and C were kept");
    take(&p, incr("E", Some("C")));
}

#[test]
fn disable_drops_every_id_at_once_and_lists_only_the_metadata() {
    let s = Standalone::start(&NO_TIMED_CHECKPOINTS).unwrap();
    let p = &s.process;
    take(p, incr("A", None));
    take(p, incr("B", Some("A")));
    checkpoint(p);
    let off = open(p, doc! {"disableIncrementalBackup": true}).unwrap();
    assert!(off.files.is_empty(), "{:?}", off.files);
    assert_eq!(
        off.meta.get_bool("disableIncrementalBackup").ok(),
        Some(true)
    );
    assert_ne!(off.id, 0, "still a cursor to close");
    assert_eq!(refusal(p, doc! {}).0, 50886);
    close(p, &off);
    assert_eq!(refusal(p, incr("C", Some("B"))).0, 8);
    // Durable without a checkpoint: a kill -9 does not bring the IDs back.
    let mut s = s;
    s.process.kill();
    let p = restart(&s, "2.log", &NO_TIMED_CHECKPOINTS);
    assert_eq!(refusal(&p, incr("C", Some("A"))).0, 8);
    assert_eq!(refusal(&p, incr("C", Some("B"))).0, 8);
    take(&p, incr("A", None));
}

#[tokio::test]
async fn a_collection_created_after_the_source_is_listed_whole() {
    let s = Standalone::start(&[]).unwrap();
    let p = &s.process;
    fill(p, "old", 10).await;
    checkpoint(p);
    let base_dir = s.dir.path().join("base");
    let base = open(p, incr("base", None)).unwrap();
    full_copy(&base, &p.dbpath, &base_dir);
    close(p, &base);
    fill(p, "fresh", 2500).await;
    checkpoint(p);
    let inc = open(p, incr("inc", Some("base"))).unwrap();
    // As WiredTiger reports a file created after the source: every block it holds.
    let fresh = docs_of(&inc, "collection-", 2 * MB..10 * MB);
    let size = num(&fresh[0], "fileSize").unwrap();
    let offsets: Vec<i64> = fresh.iter().map(|d| num(d, "offset").unwrap()).collect();
    let want: Vec<i64> = (0..(size + MB - 1) / MB).map(|b| b * MB).collect();
    assert_eq!(offsets, want);
    assert!(
        !by_file(&base).contains_key(fresh[0].get_str("filename").unwrap()),
        "new since the base"
    );
    let full_dir = s.dir.path().join("full");
    full_copy(&inc, &p.dbpath, &full_dir);
    apply(&inc, &p.dbpath, &base_dir);
    close(p, &inc);
    assert_same_files(&base_dir, &full_dir);
}
