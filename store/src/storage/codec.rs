//! Compression and the blocking/async bridges of the streaming pipelines: an encoder
//! over any writer, a decoder over any reader, a writer that hands compressed chunks to
//! an async task, and a reader that takes downloaded chunks from one. All of it runs on
//! blocking threads; only channel hand-offs touch the async side.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tidemark_schema::model::Compression;
use tokio::sync::mpsc;

/// Size of file reads, of writes to the disk, and of chunks passed between threads.
pub(crate) const CHUNK: usize = 1024 * 1024;

/// zstd's level when the storage sets none (zstd's own default).
pub(crate) const ZSTD_DEFAULT_LEVEL: i32 = 3;

/// A compressing writer. lz4_flex's frame encoder has no levels, so an lz4 level is
/// accepted and ignored.
pub(crate) enum Encoder<W: Write> {
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Lz4(lz4_flex::frame::FrameEncoder<W>),
    None(W),
}

impl<W: Write> Encoder<W> {
    pub(crate) fn new(compression: Compression, level: Option<i32>, inner: W) -> io::Result<Self> {
        Ok(match compression {
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(
                inner,
                level.unwrap_or(ZSTD_DEFAULT_LEVEL),
            )?),
            Compression::Lz4 => Encoder::Lz4(lz4_flex::frame::FrameEncoder::new(inner)),
            Compression::None => Encoder::None(inner),
        })
    }

    /// Writes the end of the frame and returns the inner writer, flushed.
    pub(crate) fn finish(self) -> io::Result<W> {
        let mut inner = match self {
            Encoder::Zstd(e) => e.finish()?,
            Encoder::Lz4(e) => e.finish().map_err(io::Error::other)?,
            Encoder::None(w) => w,
        };
        inner.flush()?;
        Ok(inner)
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Lz4(e) => e.write(buf),
            Encoder::None(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Zstd(e) => e.flush(),
            Encoder::Lz4(e) => e.flush(),
            Encoder::None(w) => w.flush(),
        }
    }
}

/// A decompressing reader over `inner`.
pub(crate) fn decoder<R: Read + Send + 'static>(
    compression: Compression,
    inner: R,
) -> io::Result<Box<dyn Read + Send>> {
    Ok(match compression {
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(inner)?),
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(inner)),
        Compression::None => Box::new(inner),
    })
}

/// Collects written bytes into `CHUNK`-sized `Bytes` and sends them to an async task.
/// Blocks (it runs on a blocking thread) while the channel is full, which is what bounds
/// memory: the reader of the file can never run ahead of the upload.
pub(crate) struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: BytesMut,
}

impl ChannelWriter {
    pub(crate) fn new(tx: mpsc::Sender<Bytes>) -> Self {
        ChannelWriter {
            tx,
            buf: BytesMut::with_capacity(CHUNK),
        }
    }

    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK);
        // The receiver is gone only when the upload failed; its error is reported there.
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "upload stopped"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() >= CHUNK {
            self.send_buffered()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffered()
    }
}

/// Where a `ChannelReader` leaves the storage error that ended its stream, so the caller
/// can tell a network failure (retry) from bad data (corrupt) after a decoder wrapped it.
pub(crate) type StreamFailure = Arc<Mutex<Option<object_store::Error>>>;

/// Reads the chunks an async task receives from storage.
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, object_store::Error>>,
    current: Bytes,
    failure: StreamFailure,
}

impl ChannelReader {
    pub(crate) fn new(
        rx: mpsc::Receiver<Result<Bytes, object_store::Error>>,
    ) -> (Self, StreamFailure) {
        let failure = StreamFailure::default();
        let reader = ChannelReader {
            rx,
            current: Bytes::new(),
            failure: failure.clone(),
        };
        (reader, failure)
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => {
                    let text = e.to_string();
                    *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    return Err(io::Error::other(format!("storage stream failed: {text}")));
                }
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Reads until `buf` is full or the reader ends; returns how much was read. A short
/// count means end of input.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in [Compression::Zstd, Compression::Lz4, Compression::None] {
            let mut enc = Encoder::new(c, Some(5), Vec::new()).unwrap();
            enc.write_all(&data).unwrap();
            let packed = enc.finish().unwrap();
            let mut out = Vec::new();
            decoder(c, io::Cursor::new(packed))
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data, "{c:?}");
        }
    }
}
