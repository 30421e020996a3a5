//! mongod-sim: a test tool that behaves like a Percona Server for MongoDB `mongod` for what
//! tidemark relies on, plus a harness that runs replica sets of it for tests.

pub mod applyops;
pub mod backup;
pub mod backup_opts;
pub mod catalog;
pub mod client;
pub mod commands;
pub mod commit;
pub mod crud;
pub mod crypt;
pub mod ddl;
pub mod diff;
pub mod harness;
pub mod incr;
pub mod indexes;
pub mod log;
pub mod node;
pub mod oplog;
pub mod options;
pub mod process;
pub mod query;
pub mod repl;
pub mod replloop;
pub mod server;
pub mod storage;
pub mod txn;
pub mod wire;
