//! MongoDB wire protocol framing: OP_MSG (section kinds 0 and 1), legacy OP_QUERY and OP_REPLY.

use bson::{Bson, Document};
use thiserror::Error;

pub const OP_REPLY: i32 = 1;
pub const OP_QUERY: i32 = 2004;
pub const OP_MSG: i32 = 2013;
/// Real mongod refuses messages above 48 MB; we mirror its advertised limit.
pub const MAX_MESSAGE_SIZE: usize = 48_000_000;
const CHECKSUM_PRESENT: u32 = 1;

#[derive(Debug, Error)]
pub enum WireError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("bson: {0}")]
    Bson(#[from] bson::error::Error),
}

/// The 16-byte header every message starts with.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub length: i32,
    pub request_id: i32,
    pub response_to: i32,
    pub op_code: i32,
}

impl Header {
    pub fn parse(b: &[u8; 16]) -> Header {
        let f = |i: usize| i32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Header {
            length: f(0),
            request_id: f(4),
            response_to: f(8),
            op_code: f(12),
        }
    }
}

/// A decoded request (or reply, for our own client).
#[derive(Debug)]
pub enum Message {
    /// OP_MSG, with kind-1 document sequences merged into the body as arrays.
    Msg { flags: u32, body: Document },
    /// Legacy OP_QUERY.
    Query { collection: String, query: Document },
    /// Legacy OP_REPLY (only our test client decodes these).
    Reply { documents: Vec<Document> },
}

fn read_cstring(b: &[u8], pos: &mut usize) -> Result<String, WireError> {
    let end = b[*pos..]
        .iter()
        .position(|&c| c == 0)
        .ok_or_else(|| WireError::Malformed("unterminated cstring".into()))?;
    let s = String::from_utf8_lossy(&b[*pos..*pos + end]).into_owned();
    *pos += end + 1;
    Ok(s)
}

fn read_i32(b: &[u8], pos: &mut usize) -> Result<i32, WireError> {
    let s = b
        .get(*pos..*pos + 4)
        .ok_or_else(|| WireError::Malformed("truncated".into()))?;
    *pos += 4;
    Ok(i32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn read_doc(b: &[u8], pos: &mut usize) -> Result<Document, WireError> {
    let mut peek = *pos;
    let len = read_i32(b, &mut peek)? as usize;
    let s = b
        .get(*pos..*pos + len)
        .ok_or_else(|| WireError::Malformed("truncated document".into()))?;
    *pos += len;
    Ok(Document::from_reader(s)?)
}

/// Decodes a message body (everything after the header).
pub fn decode(op_code: i32, body: &[u8]) -> Result<Message, WireError> {
    let mut pos = 0;
    match op_code {
        OP_MSG => {
            let flags = read_i32(body, &mut pos)? as u32;
            let end = if flags & CHECKSUM_PRESENT != 0 {
                body.len().saturating_sub(4)
            } else {
                body.len()
            };
            let mut main: Option<Document> = None;
            let mut sequences: Vec<(String, Vec<Bson>)> = Vec::new();
            while pos < end {
                let kind = body[pos];
                pos += 1;
                match kind {
                    0 => main = Some(read_doc(body, &mut pos)?),
                    1 => {
                        let start = pos;
                        let size = read_i32(body, &mut pos)? as usize;
                        let id = read_cstring(body, &mut pos)?;
                        let mut docs = Vec::new();
                        while pos < start + size {
                            docs.push(Bson::Document(read_doc(body, &mut pos)?));
                        }
                        sequences.push((id, docs));
                    }
                    k => return Err(WireError::Malformed(format!("unknown section kind {k}"))),
                }
            }
            let mut body =
                main.ok_or_else(|| WireError::Malformed("OP_MSG without a body section".into()))?;
            for (id, docs) in sequences {
                body.insert(id, docs);
            }
            Ok(Message::Msg { flags, body })
        }
        OP_QUERY => {
            let _flags = read_i32(body, &mut pos)?;
            let collection = read_cstring(body, &mut pos)?;
            let _skip = read_i32(body, &mut pos)?;
            let _n = read_i32(body, &mut pos)?;
            let query = read_doc(body, &mut pos)?;
            Ok(Message::Query { collection, query })
        }
        OP_REPLY => {
            pos = 4 + 8 + 4;
            let n = read_i32(body, &mut pos)?;
            let mut documents = Vec::new();
            for _ in 0..n {
                documents.push(read_doc(body, &mut pos)?);
            }
            Ok(Message::Reply { documents })
        }
        other => Err(WireError::Malformed(format!("unsupported opCode {other}"))),
    }
}

fn frame(request_id: i32, response_to: i32, op_code: i32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + payload.len());
    out.extend_from_slice(&((16 + payload.len()) as i32).to_le_bytes());
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&response_to.to_le_bytes());
    out.extend_from_slice(&op_code.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// An OP_MSG with a single kind-0 section.
pub fn encode_msg(request_id: i32, response_to: i32, doc: &Document) -> Result<Vec<u8>, WireError> {
    let mut payload = 0u32.to_le_bytes().to_vec();
    payload.push(0);
    doc.to_writer(&mut payload)?;
    Ok(frame(request_id, response_to, OP_MSG, &payload))
}

/// An OP_REPLY carrying one document, as mongod answers a legacy OP_QUERY command.
pub fn encode_reply(
    request_id: i32,
    response_to: i32,
    doc: &Document,
) -> Result<Vec<u8>, WireError> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&8i32.to_le_bytes()); // AwaitCapable, as mongod sets it
    payload.extend_from_slice(&0i64.to_le_bytes());
    payload.extend_from_slice(&0i32.to_le_bytes());
    payload.extend_from_slice(&1i32.to_le_bytes());
    doc.to_writer(&mut payload)?;
    Ok(frame(request_id, response_to, OP_REPLY, &payload))
}

/// A legacy OP_QUERY command, as older drivers send their first `isMaster`.
pub fn encode_query(
    request_id: i32,
    collection: &str,
    query: &Document,
) -> Result<Vec<u8>, WireError> {
    let mut payload = 0i32.to_le_bytes().to_vec();
    payload.extend_from_slice(collection.as_bytes());
    payload.push(0);
    payload.extend_from_slice(&0i32.to_le_bytes());
    payload.extend_from_slice(&(-1i32).to_le_bytes());
    query.to_writer(&mut payload)?;
    Ok(frame(request_id, 0, OP_QUERY, &payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn op_msg_round_trip_merges_sequences() {
        let mut payload = 0u32.to_le_bytes().to_vec();
        payload.push(0);
        doc! {"insert": "c", "$db": "d"}
            .to_writer(&mut payload)
            .unwrap();
        payload.push(1);
        let mut seq = Vec::new();
        seq.extend_from_slice(b"documents\0");
        doc! {"a": 1}.to_writer(&mut seq).unwrap();
        doc! {"a": 2}.to_writer(&mut seq).unwrap();
        payload.extend_from_slice(&((seq.len() + 4) as i32).to_le_bytes());
        payload.extend_from_slice(&seq);
        match decode(OP_MSG, &payload).unwrap() {
            Message::Msg { body, .. } => {
                assert_eq!(body.get_array("documents").unwrap().len(), 2);
                assert_eq!(body.get_str("insert").unwrap(), "c");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reply_decodes() {
        let bytes = encode_reply(1, 2, &doc! {"ok": 1}).unwrap();
        let h = Header::parse(bytes[..16].try_into().unwrap());
        assert_eq!(h.length as usize, bytes.len());
        match decode(h.op_code, &bytes[16..]).unwrap() {
            Message::Reply { documents } => assert_eq!(documents[0].get_i32("ok").unwrap(), 1),
            other => panic!("{other:?}"),
        }
    }
}
