//! `Cluster`: a replica set or a sharded cluster and its members.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    /// The replica sets; with `configServer` present they are the shards.
    pub replica_sets: Vec<ReplicaSetSpec>,
    /// The config server replica set. Its presence makes the cluster sharded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_server: Option<ReplicaSetSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaSetSpec {
    /// The replica set name, as in mongod's `--replSet`.
    pub name: String,
    /// Members as `host:port`.
    pub members: Vec<String>,
}

impl ClusterSpec {
    /// Every replica set, config server first, as a restore walks them.
    pub fn all_replica_sets(&self) -> impl Iterator<Item = &ReplicaSetSpec> {
        self.config_server.iter().chain(self.replica_sets.iter())
    }

    pub fn is_sharded(&self) -> bool {
        self.config_server.is_some()
    }
}
