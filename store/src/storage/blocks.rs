//! Block hashes of an incremental chain: `blake3` of each fixed-size block of a file
//! (first 16 bytes, hex), computed while a file or range streams to storage, and over a
//! rebuilt file to prove it is the one the last backup of its chain describes.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::Path;

use super::codec::{CHUNK, read_full};

/// The hash of one block as manifests record it.
pub fn block_hash(data: &[u8]) -> String {
    finish(blake3::Hasher::new().update(data))
}

fn finish(h: &blake3::Hasher) -> String {
    h.finalize().to_hex()[..32].to_string()
}

/// Hashes a stream cut into blocks of `size` bytes (the last one may be shorter).
pub(crate) struct BlockHasher {
    size: u64,
    filled: u64,
    current: blake3::Hasher,
    pub(crate) blocks: Vec<String>,
}

impl BlockHasher {
    pub(crate) fn new(size: u64) -> BlockHasher {
        BlockHasher {
            size: size.max(1),
            filled: 0,
            current: blake3::Hasher::new(),
            blocks: Vec::new(),
        }
    }

    pub(crate) fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = ((self.size - self.filled) as usize).min(data.len());
            self.current.update(&data[..take]);
            self.filled += take as u64;
            data = &data[take..];
            if self.filled == self.size {
                self.blocks.push(finish(&self.current));
                self.current = blake3::Hasher::new();
                self.filled = 0;
            }
        }
    }

    pub(crate) fn finish(mut self) -> Vec<String> {
        if self.filled > 0 {
            self.blocks.push(finish(&self.current));
        }
        self.blocks
    }
}

/// The block hashes of `path` from byte `offset` (a multiple of `size`) to `end`.
/// Blocking: run it on a blocking thread.
pub fn hash_blocks(path: &Path, offset: u64, end: u64, size: u64) -> std::io::Result<Vec<String>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut hasher = BlockHasher::new(size);
    let mut buf = vec![0u8; CHUNK];
    let mut at = offset;
    while at < end {
        let want = (end - at).min(CHUNK as u64) as usize;
        let n = read_full(&mut file, &mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{} ends at {at} B, before {end} B", path.display()),
            ));
        }
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_do_not_depend_on_how_the_stream_is_cut() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut a = BlockHasher::new(4096);
        a.update(&data);
        let mut b = BlockHasher::new(4096);
        for piece in data.chunks(777) {
            b.update(piece);
        }
        let (a, b) = (a.finish(), b.finish());
        assert_eq!(a, b);
        assert_eq!(a.len(), 3);
        assert_eq!(a[2], block_hash(&data[8192..]));
    }
}
