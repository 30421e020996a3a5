//! Prints how long a 3-member replica set takes to start (processes up, initiated, primary
//! elected, secondaries synced) and whether 12 members run at once (4 sets of 3).
//! Run: `cargo build -p mongod-sim && cargo run -p mongod-sim --example startup`.

use bson::doc;
use mongod_sim::harness::ReplicaSet;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for round in 1..=3 {
        let t = Instant::now();
        let rs = ReplicaSet::start(&format!("bench{round}"), 3)?;
        println!("3-member set ready in {:?} (round {round})", t.elapsed());
        drop(rs);
    }
    let t = Instant::now();
    let sets: Vec<ReplicaSet> = (0..4)
        .map(|i| ReplicaSet::start(&format!("many{i}"), 3))
        .collect::<Result<_, _>>()?;
    println!("12 members (4 sets x 3) ready in {:?}", t.elapsed());
    // Every member must be alive and replicating: write to each primary, read on every member.
    for rs in &sets {
        let p = rs.wait_for_primary(Duration::from_secs(10))?;
        rs.process(p)?
            .command("bench", doc! {"insert": "c", "documents": [{"_id": 1}]})?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pending = 12;
    while pending > 0 && Instant::now() < deadline {
        pending = 0;
        for rs in &sets {
            for i in 0..3 {
                let n = rs
                    .process(i)?
                    .command("bench", doc! {"count": "c"})?
                    .get_i64("n")
                    .unwrap_or(0);
                pending += usize::from(n != 1);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "12 members replicating: {} of 12 have the write",
        12 - pending
    );
    let rs = &sets[0];
    let p = rs.wait_for_primary(Duration::from_secs(10))?;
    let t = Instant::now();
    let r = rs.process(p)?.command(
        "admin",
        doc! {"simFill": 1, "db": "fill", "collections": 4, "bytes": 64i64 << 20},
    )?;
    println!(
        "simFill of {} bytes in {:?}",
        r.get_i64("bytes").unwrap_or(0),
        t.elapsed()
    );
    Ok(())
}
