//! Deleting every document of a collection with a unique secondary index replicates: each
//! secondary ends with what the primary holds.

mod common;

use bson::{Document, doc};
use common::*;
use mongod_sim::harness::ReplicaSet;

#[test]
fn a_delete_of_every_document_replicates_to_every_member() {
    let rs = ReplicaSet::start("delrepl", 3).unwrap();
    let p = rs.wait_for_primary(LONG).unwrap();
    let primary = rs.process(p).unwrap();
    assert!(ok(&cmd(
        primary,
        "shop",
        doc! {"create": "orders", "validator": {"qty": {"$gte": 0}}}
    )));
    assert!(ok(&cmd(
        primary,
        "shop",
        doc! {"createIndexes": "orders", "indexes": [{"key": {"sku": 1}, "name": "sku_1", "unique": true}]}
    )));
    for start in [0, 1000, 2000] {
        let batch: Vec<Document> = (start..start + 1000)
            .map(|i| doc! {"_id": i, "sku": format!("s{i}"), "qty": i})
            .collect();
        let r = cmd(
            primary,
            "shop",
            doc! {"insert": "orders", "documents": batch},
        );
        assert!(ok(&r), "{r}");
    }
    let r = cmd(
        primary,
        "shop",
        doc! {"delete": "orders", "deletes": [{"q": {}, "limit": 0}]},
    );
    assert!(ok(&r), "{r}");
    for i in 0..3 {
        wait_for(&format!("member {i} holds no order"), || {
            let n = cmd(rs.process(i).unwrap(), "shop", doc! {"count": "orders"})
                .get_i64("n")
                .ok()?;
            (n == 0).then_some(())
        });
    }
}
