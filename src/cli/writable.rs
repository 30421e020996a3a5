//! Opens the control plane for writing: a local directory is created when missing.

use std::sync::Arc;

use object_store::ObjectStore;
use tidemark_reconciler::control::open_control;

pub fn open_writable_control(url: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let local = url
        .strip_prefix("file://")
        .or((!url.contains("://")).then_some(url));
    if let Some(path) = local {
        std::fs::create_dir_all(path)
            .map_err(|e| anyhow::anyhow!("control plane directory {path}: {e}"))?;
    }
    open_control(url)?
        .store
        .ok_or_else(|| anyhow::anyhow!("control plane {url} cannot be opened"))
}
