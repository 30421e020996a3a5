//! The agent on real small disks: a tmpfs mounted inside a private mount namespace
//! (`unshare -m`), with mongod-sim's dbPath on it.

#[path = "support/rig.rs"]
mod rig;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bson::doc;
use tidemark_schema::control::Phase;
use tidemark_schema::model::Compression;

use rig::*;

fn fill(rig: &Rig, db: &str, bytes: u64) {
    let p = rig.primary();
    let r = rig
        .rs
        .process(p)
        .unwrap()
        .command(
            "admin",
            doc! {"simFill": 1, "db": db, "bytes": bytes as i64, "collections": 2},
        )
        .unwrap();
    assert_eq!(r.get_f64("ok").unwrap_or(0.0), 1.0, "{r}");
}

/// Writes a ballast file of `bytes` on the small disk (tmpfs allocates on write).
fn ballast(dir: &Path, bytes: u64) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("ballast")).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    f.sync_all().unwrap();
}

fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        total += if p.is_dir() {
            du(&p)
        } else {
            std::fs::metadata(&p).map_or(0, |m| m.len())
        };
    }
    total
}

#[test]
fn the_disk_evaluation_refuses_a_fallback_restore_on_a_small_disk() {
    in_mount_namespace("inner_disk_evaluation", Some("96m"));
}

/// Runs only inside `in_mount_namespace`; does nothing in a normal run.
#[test]
fn inner_disk_evaluation() {
    let Some(tmpfs) = std::env::var_os(TMPFS_VAR).map(PathBuf::from) else {
        return;
    };
    let mut rig = Rig::new("dsk", 1, &[]);
    rig.insert(0..10);
    fill(&rig, "big", 8 << 20);
    rig.start_agent(0);
    std::thread::sleep(Duration::from_millis(800));
    rig.backup("b1", 0, Compression::Zstd);
    let needed = rig.manifest("b1").uncompressed_bytes;
    // Fill the disk until 0.85 × total − used is half of what the backup needs.
    let facts = tidemark_agent::disk::disk_facts(&tmpfs).unwrap();
    let target_used = (facts.total_bytes as i128 * 85 / 100 - needed as i128 / 2) as u64;
    assert!(
        target_used > facts.used_bytes,
        "setup: the disk is already too full: {facts:?}"
    );
    ballast(&tmpfs, target_used - facts.used_bytes);

    let op = rig.restore_op("b1", true, &[0]);
    let r = rig.wait_final(&op, 0);
    assert_eq!(r.phase, Phase::Error, "{}", r.message);
    assert!(
        r.message
            .contains("not enough disk for a restore with fallback"),
        "{}",
        r.message
    );
    assert!(r.message.contains("nothing was touched"), "{}", r.message);
    let disk = rig
        .report(&op, 0, "disk")
        .expect("the disk phase reports its figures");
    assert_eq!(disk.details["fits"], false);
    let room = disk.details["roomBytes"].as_i64().unwrap();
    assert!(room < needed as i64, "{disk:?}");
    assert_eq!(disk.details["neededBytes"].as_u64(), Some(needed));
    assert!(
        disk.details["totalBytes"].as_u64().unwrap() > 0
            && disk.details["usedBytes"].as_u64().unwrap() > 0
    );
    assert!(
        rig.report(&op, 0, "stop").is_none(),
        "mongod was never stopped"
    );
    assert_eq!(
        rig.ids_on(0),
        (0..10).collect::<Vec<_>>(),
        "the node still serves its data"
    );
    println!("INNER OK inner_disk_evaluation");
}

#[test]
fn a_disk_that_fills_during_a_restore_without_fallback_is_a_clear_error() {
    in_mount_namespace("inner_disk_fills_during_download", Some("128m"));
}

/// Runs only inside `in_mount_namespace`; does nothing in a normal run.
#[test]
fn inner_disk_fills_during_download() {
    let Some(tmpfs) = std::env::var_os(TMPFS_VAR).map(PathBuf::from) else {
        return;
    };
    let mut rig = Rig::new("dfl", 1, &[]);
    rig.insert(0..10);
    fill(&rig, "big", 24 << 20);
    rig.start_agent(0);
    std::thread::sleep(Duration::from_millis(800));
    rig.backup("b1", 0, Compression::Zstd);
    let needed = rig.manifest("b1").uncompressed_bytes;
    // Shrink the live data below the backup's size, then take the free space away: once
    // the restore wipes the dbPath, the backup still does not fit.
    let p = rig.primary();
    for c in ["c0", "c1"] {
        rig.rs
            .process(p)
            .unwrap()
            .command("big", doc! {"drop": c})
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(1000)); // a checkpoint removes the files
    let dbsize = du(&rig.rs.dbpath(0));
    let free = tidemark_agent::disk::disk_facts(&tmpfs)
        .unwrap()
        .available_bytes;
    let weight = (free + dbsize + (4 << 20)).saturating_sub(needed);
    assert!(
        weight + (1 << 20) < free,
        "setup: backup {needed} B, dbPath {dbsize} B, free {free} B"
    );
    ballast(&tmpfs, weight);

    let op = rig.restore_op("b1", false, &[0]);
    let r = rig.wait_final(&op, 0);
    assert_eq!(r.phase, Phase::Error, "{}", r.message);
    assert!(r.message.contains("phase fetch"), "{}", r.message);
    assert!(
        r.message.contains("no space left on the device"),
        "says the disk is full: {}",
        r.message
    );
    println!("INNER OK inner_disk_fills_during_download");
}
