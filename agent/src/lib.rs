//! tidemark-agent: the node runtime (mongod control, backup, restore, fallback).
pub mod storage;
