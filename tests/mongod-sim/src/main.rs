//! mongod-sim: a test tool that behaves like a PSMDB mongod.
fn main() {}
