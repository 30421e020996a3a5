//! A minimal wire-protocol client: async for member-to-member traffic (heartbeats, oplog pull,
//! initial sync), blocking for the test harness.

use crate::wire::{self, Header, Message, WireError};
use bson::{Document, doc};
use std::io::{Read, Write};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Decodes one reply: the OP_MSG body or the first OP_REPLY document.
fn reply_doc(header: Header, body: &[u8]) -> Result<Document, WireError> {
    match wire::decode(header.op_code, body)? {
        Message::Msg { body, .. } => Ok(body),
        Message::Reply { mut documents } if !documents.is_empty() => Ok(documents.remove(0)),
        other => Err(WireError::Malformed(format!("unexpected reply {other:?}"))),
    }
}

fn with_db(db: &str, cmd: Document) -> Document {
    let mut cmd = cmd;
    cmd.insert("$db", db);
    cmd
}

pub struct AsyncConn {
    stream: tokio::net::TcpStream,
    next_id: i32,
}

impl AsyncConn {
    pub async fn connect(host: &str, timeout: Duration) -> Result<AsyncConn, WireError> {
        let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(host))
            .await
            .map_err(|_| {
                WireError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                ))
            })??;
        stream.set_nodelay(true)?;
        Ok(AsyncConn { stream, next_id: 1 })
    }

    /// Runs one command; replies with `ok: 0` are returned as documents, not errors.
    pub async fn command(
        &mut self,
        db: &str,
        cmd: Document,
        timeout: Duration,
    ) -> Result<Document, WireError> {
        self.next_id += 1;
        let bytes = wire::encode_msg(self.next_id, 0, &with_db(db, cmd))?;
        let fut = async {
            self.stream.write_all(&bytes).await?;
            let mut h = [0u8; 16];
            self.stream.read_exact(&mut h).await?;
            let header = Header::parse(&h);
            let mut body = vec![0u8; (header.length as usize).saturating_sub(16)];
            self.stream.read_exact(&mut body).await?;
            reply_doc(header, &body)
        };
        tokio::time::timeout(timeout, fut).await.map_err(|_| {
            WireError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "command timed out",
            ))
        })?
    }
}

pub struct BlockingConn {
    stream: std::net::TcpStream,
    next_id: i32,
}

impl BlockingConn {
    pub fn connect(host: &str, timeout: Duration) -> Result<BlockingConn, WireError> {
        let addr = std::net::ToSocketAddrs::to_socket_addrs(host)?
            .next()
            .ok_or_else(|| WireError::Malformed(format!("cannot resolve {host}")))?;
        let stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_nodelay(true)?;
        Ok(BlockingConn { stream, next_id: 1 })
    }

    pub fn set_read_timeout(&self, t: Duration) -> Result<(), WireError> {
        Ok(self.stream.set_read_timeout(Some(t))?)
    }

    /// Sends raw bytes and reads one reply message (any opCode).
    pub fn roundtrip(&mut self, bytes: &[u8]) -> Result<(Header, Vec<u8>), WireError> {
        self.stream.write_all(bytes)?;
        let mut h = [0u8; 16];
        self.stream.read_exact(&mut h)?;
        let header = Header::parse(&h);
        let mut body = vec![0u8; (header.length as usize).saturating_sub(16)];
        self.stream.read_exact(&mut body)?;
        Ok((header, body))
    }

    pub fn command(&mut self, db: &str, cmd: Document) -> Result<Document, WireError> {
        self.next_id += 1;
        let bytes = wire::encode_msg(self.next_id, 0, &with_db(db, cmd))?;
        let (header, body) = self.roundtrip(&bytes)?;
        reply_doc(header, &body)
    }

    /// `hello` against `admin`.
    pub fn hello(&mut self) -> Result<Document, WireError> {
        self.command("admin", doc! {"hello": 1})
    }

    /// The integer `_id`s of `db.coll` on this node (a secondary too), sorted: what tests
    /// compare after a restore. `None` when the node does not answer a find.
    pub fn ids(&mut self, db: &str, coll: &str) -> Option<Vec<i32>> {
        let reply = self
            .command(
                db,
                doc! {"find": coll, "filter": {}, "batchSize": 100000, "sort": {"_id": 1}, "$readPreference": {"mode": "secondaryPreferred"}},
            )
            .ok()?;
        let batch = reply
            .get_document("cursor")
            .ok()?
            .get_array("firstBatch")
            .ok()?;
        Some(
            batch
                .iter()
                .filter_map(|d| d.as_document()?.get_i32("_id").ok())
                .collect(),
        )
    }
}
