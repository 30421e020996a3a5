//! Test helpers shared by tidemark's crates. Real services only: `Moto` runs PyPI's
//! `moto[server]`, a real S3 API, on a free loopback port.

mod moto;

pub use moto::Moto;
