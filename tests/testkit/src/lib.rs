//! Test helpers shared by tidemark's crates. Real services only: `Moto` runs PyPI's
//! `moto[server]`, a real S3 API, on a free loopback port.

mod git;
mod moto;

pub use git::commit_and_push;
pub use moto::Moto;
