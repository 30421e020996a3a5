//! tidemark-reconciler
