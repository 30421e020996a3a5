//! tidemark-agent: the node runtime (mongod control, backup, restore). Built in a later issue.
