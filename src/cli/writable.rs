//! Opens the control plane for writing: a local directory is created when missing.

use tidemark_store::control::ControlPlane;

pub fn open_writable_control(url: &str) -> anyhow::Result<ControlPlane> {
    Ok(ControlPlane::open_writable(url)?)
}
