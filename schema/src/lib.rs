//! tidemark-schema
