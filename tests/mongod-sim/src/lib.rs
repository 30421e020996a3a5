//! mongod-sim
