//! End-to-end with the backup storage on S3 (moto): the reconciler reads each replica
//! set's manifest to complete a backup, with the credentials of its own environment, as
//! the agents write with theirs.

#[path = "support/rig.rs"]
mod rig;
#[path = "support/world.rs"]
mod world;

use tidemark_testkit::Moto;
use world::*;

#[test]
fn a_backup_to_s3_storage_completes_through_the_reconciler() {
    let moto = Moto::start();
    let mut w = World::new("s3-storage");
    w.rig.use_s3(&moto, "backups");
    w.write("cluster.yaml", &w.rig.cluster_yaml());
    w.rig.insert(0..50);
    for i in 0..3 {
        w.rig.start_agent(i);
    }
    w.start_reconciler();
    w.backup_yaml("b1", "physical");
    let v = w.wait_end("backup", "b1");
    assert_eq!(v["status"], "done", "{v:#}\n{}", w.logs());
    let reader = w.rig.reader.as_ref().unwrap();
    let marker = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(reader.exists("b1/backup.json"))
        .unwrap();
    assert!(marker, "the completion marker is in S3");
}
