//! Proof that a file rebuilt from an incremental chain is the one the restored backup
//! describes: its block hashes, compared with the manifest's. Only the blocks a range
//! wrote or a size cut are read back; the others hold the full copy's bytes, proved by its
//! checksum on download, so a restore reads no more than it wrote.

use tidemark_schema::chain::FilePlan;
use tidemark_schema::manifest::{ReplicaSetManifest, layout};

use crate::storage::StorageError;

pub async fn prove(
    url: &str,
    links: &[ReplicaSetManifest],
    plan: &FilePlan<'_>,
    dest: &std::path::Path,
) -> Result<(), StorageError> {
    let bs = links[0].incremental.as_ref().map_or(1, |i| i.block_size);
    let last = plan.last;
    let dirty = plan.dirty_blocks(bs);
    let mut mismatch =
        (last.blocks.len() != dirty.len()).then_some(dirty.len().min(last.blocks.len()));
    for (b, d) in dirty.iter().enumerate() {
        if mismatch.is_none() && !d && plan.full.1.blocks.get(b) != last.blocks.get(b) {
            mismatch = Some(b);
        }
    }
    for (start, end) in runs(&dirty) {
        if mismatch.is_some() {
            break;
        }
        let path = dest.to_path_buf();
        let (from, to) = (start as u64 * bs, (end as u64 * bs).min(last.size));
        let hashes =
            tokio::task::spawn_blocking(move || crate::storage::hash_blocks(&path, from, to, bs))
                .await
                .map_err(|e| io(dest, std::io::Error::other(e.to_string())))?
                .map_err(|e| io(dest, e))?;
        mismatch = (start..end).find(|&b| hashes.get(b - start) != last.blocks.get(b));
    }
    let Some(block) = mismatch else {
        return Ok(());
    };
    let backup = &links.last().expect("never empty").backup;
    Err(StorageError::Corrupt {
        url: url.to_string(),
        key: layout::rs_manifest_key(backup, &links[0].replica_set),
        path: plan.path.to_string(),
        why: format!(
            "rebuilt from its chain, block {block} (at {} B) does not match backup {backup}'s \
             hash",
            block as u64 * bs
        ),
    })
}

fn io(path: &std::path::Path, source: std::io::Error) -> StorageError {
    StorageError::Io {
        op: "cannot read back",
        path: path.to_path_buf(),
        source,
    }
}

/// The runs of `true` in `dirty`, as `[start, end)` block indexes.
fn runs(dirty: &[bool]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for b in (0..dirty.len()).filter(|&b| dirty[b]) {
        match out.last_mut() {
            Some(run) if run.1 == b => run.1 = b + 1,
            _ => out.push((b, b + 1)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::block_hash;
    use tidemark_schema::chain::file_plans;
    use tidemark_schema::manifest::{FileEntry, ManifestIncrement, RangeEntry};

    fn entry(data: &[u8], full: bool, ranges: &[(u64, u64)]) -> FileEntry {
        FileEntry {
            path: "a.wt".into(),
            size: data.len() as u64,
            stored_size: if full {
                1
            } else {
                ranges.iter().map(|r| r.1).sum()
            },
            uncompressed_size: if full {
                data.len() as u64
            } else {
                ranges.iter().map(|r| r.1).sum()
            },
            checksum: if full {
                "blake3:x".into()
            } else {
                String::new()
            },
            mode: 0o600,
            object: full.then(|| "o".into()),
            ranges: ranges
                .iter()
                .map(|&(offset, length)| RangeEntry {
                    offset,
                    length,
                    stored_size: length,
                    checksum: "blake3:r".into(),
                    object: format!("r{offset}"),
                })
                .collect(),
            blocks: data.chunks(4).map(block_hash).collect(),
        }
    }

    fn link(name: &str, source: Option<&str>, file: FileEntry) -> ReplicaSetManifest {
        let mut m: ReplicaSetManifest = serde_json::from_value(serde_json::json!({
            "format": tidemark_schema::manifest::MANIFEST_FORMAT, "backup": name,
            "cluster": "c", "replicaSet": "rs0", "node": "n", "type": "incremental",
            "compression": "none", "startedAt": "2026-03-01T00:00:00Z",
            "finishedAt": "2026-03-01T00:00:00Z", "backupId": "x",
            "checkpointTimestamp": {"t": 1, "i": 1}, "flavor": "psmdb", "storageOptions": {},
            "lastWrite": {"t": 1, "i": 1}, "mongodVersion": "7.0.14", "files": [],
            "uncompressedBytes": 0, "storedBytes": 0,
        }))
        .unwrap();
        m.incremental = Some(ManifestIncrement {
            this_name: name.into(),
            source: source.map(str::to_string),
            base: "b".into(),
            block_size: 4,
        });
        m.files = vec![file];
        m
    }

    #[tokio::test]
    async fn a_rebuilt_file_is_proved_by_the_blocks_a_range_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.wt");
        let (base, now) = (b"aaaabbbbcccc".to_vec(), b"aaaaBBBBcccc".to_vec());
        let chain = vec![
            link("b", None, entry(&base, true, &[])),
            link("i1", Some("b"), entry(&now, false, &[(4, 4)])),
        ];
        let plans = file_plans(&chain).unwrap();
        std::fs::write(&dest, &now).unwrap();
        prove("file://s", &chain, &plans[0], &dest).await.unwrap();
        // A wrong byte where the range was written is caught, naming the block.
        std::fs::write(&dest, b"aaaaBBBXcccc").unwrap();
        let err = prove("file://s", &chain, &plans[0], &dest)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("block 1 (at 4 B)"), "{err}");
        // A manifest whose unchanged block's hash is not the full copy's is caught too.
        let mut lying = chain.clone();
        lying[1].files[0].blocks[2] = block_hash(b"zzzz");
        let plans = file_plans(&lying).unwrap();
        std::fs::write(&dest, &now).unwrap();
        let err = prove("file://s", &lying, &plans[0], &dest)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("block 2"), "{err}");
    }
}
