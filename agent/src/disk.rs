//! Disk figures of the file system holding the dbPath, and PBM's fallback rule on them.

use std::path::Path;

use tidemark_schema::control::DiskFacts;

/// `statvfs` of the file system that holds `path`.
pub fn disk_facts(path: &Path) -> std::io::Result<DiskFacts> {
    let s = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let frag = s.fragment_size() as u64;
    let total = s.blocks() as u64 * frag;
    let free = s.blocks_free() as u64 * frag;
    Ok(DiskFacts {
        total_bytes: total,
        used_bytes: total.saturating_sub(free),
        available_bytes: s.blocks_available() as u64 * frag,
    })
}

/// The outcome of the fallback disk evaluation, with every figure for the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskVerdict {
    pub facts: DiskFacts,
    /// `0.85 × total − used`, signed.
    pub room: i128,
    pub needed: u64,
    pub fits: bool,
}

impl DiskVerdict {
    pub fn evaluate(facts: DiskFacts, needed: u64) -> DiskVerdict {
        DiskVerdict {
            facts,
            room: facts.fallback_room(),
            needed,
            fits: facts.allows_fallback(needed),
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "total {} B, used {} B, room for the restore 0.85 × total − used = {} B, the backup \
             needs {} B uncompressed: {}",
            self.facts.total_bytes,
            self.facts.used_bytes,
            self.room,
            self.needed,
            if self.fits { "fits" } else { "does NOT fit" }
        )
    }
}
