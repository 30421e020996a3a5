//! End-to-end: a seconds-level schedule run by two `tidemark reconcile` processes sharing
//! one control plane. Backups appear on their slots, retention prunes them while a pending
//! Restore holds its source, exactly one process leads, a `kill -9` of the leader hands a
//! running backup to the other, which finishes it, and no slot ever runs twice.

#[path = "support/rig.rs"]
mod rig;
#[path = "support/world.rs"]
mod world;

use std::collections::BTreeMap;
use std::process::Child;
use std::time::Duration;

use serde_json::Value;
use world::*;

const SCHEDULE: &str = "every3s";

/// Backups of the schedule in the catalog, by name.
fn catalog(w: &World) -> BTreeMap<String, Value> {
    let dir = w.rig.control.path().join("catalog");
    std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let v: Value = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
                    Some((v["name"].as_str()?.to_string(), v))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn done_backups(w: &World) -> Vec<String> {
    catalog(w)
        .into_iter()
        .filter(|(_, v)| v["status"] == "done" && v["complete"] == true)
        .map(|(n, _)| n)
        .collect()
}

#[test]
fn a_schedule_under_two_reconcilers_runs_each_slot_once_and_survives_the_leader() {
    let mut w = World::new("sched");
    w.scheduled(
        SCHEDULE,
        0..20,
        "  rpo: 1h\n  retention:\n    keepLast: 2\n",
    );
    w.start_reconciler();
    let mut second: Option<Child> = Some(w.spawn_reconciler("reconciler-2.log"));

    // The first scheduled backup; then a Restore that cannot start (its cluster has no
    // agents) holds it, so retention must keep it while pruning the others.
    let first = w.wait_for("a first scheduled backup", 60, |_| {
        !done_backups(&w).is_empty()
    });
    let pinned = done_backups(&w)[0].clone();
    assert_eq!(first["leader"]["epoch"], 1, "{first:#}");
    w.write(
        "hold.yaml",
        &format!(
            "apiVersion: tidemark/v1\nkind: Cluster\nmetadata:\n  name: elsewhere\nspec:\n  \
             replicaSets:\n    - name: {}\n      members: [\"127.0.0.1:9\"]\n---\n\
             apiVersion: tidemark/v1\nkind: Restore\nmetadata:\n  name: hold\nspec:\n  \
             cluster: elsewhere\n  source:\n    backup: {pinned}\n",
            w.rig.rs.name
        ),
    );

    // A backup running: kill -9 whichever process leads, mid-backup.
    let v = w.wait_for("a scheduled backup running", 60, |v| {
        v["operations"]
            .as_array()
            .is_some_and(|ops| ops.iter().any(|o| o["status"] == "running"))
            && done_backups(&w).len() >= 2
    });
    let running: String = v["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["status"] == "running")
        .and_then(|o| o["name"].as_str())
        .unwrap()
        .to_string();
    let leader = holder_pid(&v).expect("a leader");
    let first_pid = w.reconciler.as_ref().unwrap().id();
    if leader == first_pid {
        w.kill_reconciler();
    } else {
        let mut c = second.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let v = w.wait_for("the other reconciler takes over", 30, |v| {
        v["leader"]["epoch"].as_u64() == Some(2)
    });
    assert_ne!(holder_pid(&v), Some(leader), "{v:#}");
    w.wait_for("the backup running at the kill finishes", 60, |_| {
        done_backups(&w).contains(&running)
    });
    // Retention: at most keepLast newest plus the pinned one remain, and the pinned one
    // is among them although older.
    let v = w.wait_for("retention prunes down to keepLast + the pinned", 60, |_| {
        let done = done_backups(&w);
        done.len() == 3
    });
    let done = done_backups(&w);
    assert!(done.contains(&pinned), "{done:?}\n{v:#}");

    // Every slot ran at most once: one op per backup name, ever.
    let mut per_backup: BTreeMap<String, usize> = BTreeMap::new();
    for e in std::fs::read_dir(w.rig.control.path().join("ops"))
        .unwrap()
        .flatten()
    {
        let id = e.file_name().to_string_lossy().to_string();
        if let Some((_, name)) = id.split_once("-backup-") {
            *per_backup.entry(name.to_string()).or_default() += 1;
        }
    }
    assert!(per_backup.len() >= 3, "{per_backup:?}");
    assert!(per_backup.values().all(|n| *n == 1), "{per_backup:?}");
    let ledger = w.rig.control.path().join("ledger/oneshots/backup");
    let claimed = std::fs::read_dir(&ledger).unwrap().count();
    assert_eq!(claimed, per_backup.len(), "one ledger claim per op");
    // Pruned backups are gone from storage, data and marker alike; kept ones are whole.
    let cat = catalog(&w);
    for name in per_backup.keys() {
        let dir = w.rig.storage_dir.path().join(name);
        if cat.contains_key(name) {
            assert!(
                dir.join("backup.json").exists() || !done.contains(name),
                "{name}"
            );
        } else {
            assert!(
                !dir.exists(),
                "{name} was pruned but {} remains",
                dir.display()
            );
        }
    }

    // status: the schedule's newest good backup is recent; the RPO holds: exit 0.
    let (v, code) = w.status();
    let s = &v["schedules"][0];
    assert_eq!(s["schedule"], SCHEDULE, "{v:#}");
    assert!(s["lastGoodBackup"].as_str().is_some(), "{v:#}");
    assert_eq!(s["rpoBreached"], false, "{v:#}");
    assert_eq!(code, 0, "{v:#}");
    let restore_waits = v["operations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["name"] == "hold" && o["status"] == "waiting");
    assert!(restore_waits, "the Restore shows as waiting: {v:#}");
    // A slot overtaken while it waited is missed, not waiting: at most the due one waits.
    let slot_waits = v["operations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| {
            o["status"] == "waiting"
                && o["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(&format!("{SCHEDULE}-")))
        })
        .count();
    assert!(slot_waits <= 1, "{v:#}");

    // Both reconcilers down over two slots; one comes back and runs only the latest.
    w.kill_reconciler();
    if let Some(mut c) = second.take() {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let down_at = chrono::Utc::now();
    std::thread::sleep(Duration::from_secs(7));
    let back_at = chrono::Utc::now();
    w.start_reconciler();
    let v = w.wait_for("the slot due at the return is taken", 60, |v| {
        v["schedules"][0]["lastGoodAt"]
            .as_str()
            .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
            .is_some_and(|t| t > down_at)
    });
    let in_gap: Vec<String> = catalog(&w)
        .into_iter()
        .filter_map(|(n, b)| {
            b["startedAt"].as_str()?;
            let slot = n.strip_prefix(&format!("{SCHEDULE}-"))?;
            let slot = chrono::NaiveDateTime::parse_from_str(slot, "%Y%m%dT%H%M%SZ").ok()?;
            let slot = slot.and_utc();
            (slot > down_at && slot <= back_at).then_some(n)
        })
        .collect();
    assert!(
        in_gap.len() <= 1,
        "only the latest slot of the outage runs: {in_gap:?}"
    );
    assert!(
        v["schedules"][0]["missedSlots"]
            .as_array()
            .is_some_and(|m| !m.is_empty()),
        "the slots of the outage are reported missed: {v:#}"
    );
}
