//! Which replica sets the playground runs: one (`pg`), or with `--sharded` a config
//! server (`pgcfg`) and two shards (`pgsh0`, `pgsh1`), each of `--nodes` members. Nodes
//! are numbered across all of them, in that order; node `i` listens on base port + `i`.

use super::layout::REPLICA_SET;

/// One replica set of the playground.
#[derive(Clone, Debug)]
pub struct Set {
    pub name: String,
    /// `--configsvr` or `--shardsvr` for a sharded layout.
    pub role_flag: Option<&'static str>,
    /// The global numbers of its nodes.
    pub nodes: std::ops::Range<usize>,
}

pub fn sets(nodes: usize, sharded: bool) -> Vec<Set> {
    if !sharded {
        return vec![Set {
            name: REPLICA_SET.to_string(),
            role_flag: None,
            nodes: 0..nodes,
        }];
    }
    let mut out = vec![Set {
        name: format!("{REPLICA_SET}cfg"),
        role_flag: Some("--configsvr"),
        nodes: 0..nodes,
    }];
    for s in 0..2 {
        out.push(Set {
            name: format!("{REPLICA_SET}sh{s}"),
            role_flag: Some("--shardsvr"),
            nodes: nodes * (s + 1)..nodes * (s + 2),
        });
    }
    out
}

/// The set node `i` belongs to.
pub fn set_of(sets: &[Set], i: usize) -> &Set {
    sets.iter()
        .find(|s| s.nodes.contains(&i))
        .expect("every node is in a set")
}
