//! Test harness (placeholder until written).
