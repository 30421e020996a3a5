//! Point-in-time recovery on a sharded cluster: the restorable window is the intersection
//! of the replica sets' windows, and a restore to one cluster time puts every shard and
//! the config server back to it.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "support/sharded.rs"]
mod sharded;
use sharded::*;

#[test]
fn a_sharded_clusters_pitr_window_is_the_intersection_of_its_replica_sets() {
    let (mut f, _one) = Fixture::new();
    f.backed_up(&[0..10, 0..10, 0..10]);
    f.write(
        "schedule.yaml",
        &tidemark_testkit::pitr_schedule_yaml(CLUSTER, "local", "2s"),
    );
    // Every replica set slices on its own node; the window needs all three.
    let started = Instant::now();
    let l = loop {
        let l = list(&f);
        let t = &l["timelines"][0];
        let sliced = t["replicaSets"].as_array().is_some_and(|r| {
            r.len() == 3
                && r.iter()
                    .all(|r| !r["segments"].as_array().is_none_or(|s| s.is_empty()))
        });
        if sliced && t["windows"].as_array().is_some_and(|w| w.len() == 1) {
            break l;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "a window over every replica set: {l:#}\n{}",
            f.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let t = &l["timelines"][0];
    let b1 = l["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "b1")
        .unwrap();
    let from = b1["lastWriteOptimes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| optime(&p["optime"]))
        .max()
        .unwrap();
    // Each replica set's reach: the end of the segment holding b1's point there.
    let to = t["replicaSets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let point = b1["lastWriteOptimes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["replicaSet"] == r["replicaSet"])
                .map(|p| optime(&p["optime"]))
                .unwrap();
            r["segments"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| optime(&s["first"]) <= point && point <= optime(&s["last"]))
                .map(|s| optime(&s["last"]))
                .unwrap_or_else(|| panic!("{point:?} in no segment of {r:#}"))
        })
        .collect::<Vec<_>>();
    let w = &t["windows"][0];
    assert_eq!(optime(&w["from"]), from, "{l:#}");
    assert_eq!(optime(&w["to"]), *to.iter().min().unwrap(), "{l:#}");
    assert_eq!(t["replicaSets"].as_array().map(Vec::len), Some(3));
}

/// Inserts `{_id: id}` into `app.items` on the primary of `rs`; the write's optime.
fn insert_at(rs: &mongod_sim::harness::ReplicaSet, id: i32) -> (u32, u32) {
    let p = rs.wait_for_primary(Duration::from_secs(60)).unwrap();
    let r = rs
        .process(p)
        .unwrap()
        .command(
            "app",
            bson::doc! {"insert": "items", "documents": [{"_id": id}]},
        )
        .unwrap();
    assert_eq!(r.get_f64("ok").unwrap_or(0.0), 1.0, "{r}");
    let t = r.get_timestamp("operationTime").unwrap();
    (t.time, t.increment)
}

#[test]
fn a_point_in_time_restore_puts_every_shard_and_the_config_server_back_to_one_cluster_time() {
    let (mut f, _one) = Fixture::new();
    f.backed_up(&[0..10, 0..10, 0..10]);
    f.write(
        "schedule.yaml",
        &tidemark_testkit::pitr_schedule_yaml(CLUSTER, "local", "2s"),
    );
    // Writes alternating between the shards; the target is the tenth.
    let writes: Vec<(usize, i32, (u32, u32))> = (0..20)
        .map(|n| {
            let k = 1 + n as usize % 2;
            let id = 100 + n;
            (k, id, insert_at(f.set(k), id))
        })
        .collect();
    let target = writes[9].2;
    f.write(
        "restore-back.yaml",
        &format!(
            "apiVersion: tidemark/v1\nkind: Restore\nmetadata:\n  name: back\nspec:\n  \
             cluster: {CLUSTER}\n  source:\n    pointInTime: {{t: {}, i: {}}}\n  \
             fallbackEnabled: true\n  postRestore:\n    startNodes: true\n",
            target.0, target.1
        ),
    );
    let v = f.wait_end("restore", "back");
    assert_eq!(v["status"], "done", "{v:#}\n{}", f.logs());
    for k in 1..=2 {
        let mut want: Vec<i32> = (0..10).collect();
        want.extend(
            writes
                .iter()
                .filter(|(shard, _, at)| *shard == k && *at <= target)
                .map(|(_, id, _)| *id),
        );
        assert!(
            want.len() < 10 + 10,
            "some writes on shard {k} are after the target"
        );
        wait_members(&f, f.set(k), &want);
    }
    wait_members(&f, f.set(0), &(0..10).collect::<Vec<_>>());
    // `describe-restore` names the replay of every node.
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["describe-restore", "back", "-o", "json", "--control"])
        .arg(f.control.path())
        .output()
        .unwrap();
    let d: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let replayed = d.to_string().matches("replayed the oplog").count();
    assert_eq!(
        replayed, 9,
        "every node of every replica set replayed: {d:#}"
    );
}
