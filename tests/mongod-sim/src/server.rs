//! The TCP side: listeners, one task per connection speaking OP_MSG and legacy OP_QUERY,
//! and the background loops (checkpoints, cursor timeouts, replication).

use crate::commands::{self, Outcome};
use crate::node::Node;
use crate::slog;
use crate::wire::{self, Header, MAX_MESSAGE_SIZE, Message};
use bson::{Document, doc};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MORE_TO_COME: u32 = 2;

/// Binds every `bind_ip` address; mongod exits when it cannot.
pub async fn bind(node: &Node) -> std::io::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for ip in node
        .opts
        .bind_ip
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let ip = if ip == "localhost" { "127.0.0.1" } else { ip };
        out.push(TcpListener::bind((ip, node.opts.port)).await?);
    }
    Ok(out)
}

/// Serves until a `shutdown` command or SIGTERM/SIGINT (a clean shutdown, as mongod
/// does on those signals), then checkpoints and returns.
pub async fn serve(node: Arc<Node>, listeners: Vec<TcpListener>) {
    for l in listeners {
        tokio::spawn(accept_loop(node.clone(), l));
    }
    tokio::spawn(checkpoint_loop(node.clone()));
    tokio::spawn(reaper_loop(node.clone()));
    if node.opts.repl_set.is_some() {
        crate::replloop::spawn(node.clone());
    }
    slog!(
        I,
        "NETWORK",
        23016,
        "listener",
        "Waiting for connections",
        doc! {"port": node.opts.port as i32, "ssl": "off"}
    );
    let signals = async {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => 15,
                _ = int.recv() => 2,
            },
            _ => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = node.shutdown.notified() => {}
        sig = signals => {
            slog!(I, "CONTROL", 23377, "SignalHandler", "Received signal", doc! {"signal": sig, "error": if sig == 15 { "Terminated" } else { "Interrupt" }});
            node.request_shutdown();
        }
    }
    node.finish_shutdown();
}

async fn accept_loop(node: Arc<Node>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let id = node.next_conn_id();
                slog!(
                    I,
                    "NETWORK",
                    22943,
                    "listener",
                    "Connection accepted",
                    doc! {"remote": peer.to_string(), "connectionId": id as i64}
                );
                tokio::spawn(connection(node.clone(), stream, id));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn checkpoint_loop(node: Arc<Node>) {
    let every = Duration::from_millis(node.opts.checkpoint_interval_ms.max(10));
    loop {
        tokio::time::sleep(every).await;
        if node.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        node.crash_point("checkpoint");
        if let Err(e) = node.lock().maybe_checkpoint() {
            slog!(
                E,
                "STORAGE",
                22320,
                "Checkpointer",
                "Checkpoint failed",
                doc! {"error": e.to_string()}
            );
        }
    }
}

async fn reaper_loop(node: Arc<Node>) {
    let every = Duration::from_millis((node.opts.cursor_timeout_ms() / 4).clamp(10, 1000));
    loop {
        tokio::time::sleep(every).await;
        crate::backup::reap(&node);
    }
}

async fn connection(node: Arc<Node>, mut stream: TcpStream, conn_id: u64) {
    let _ = stream.set_nodelay(true);
    let ctx = format!("conn{conn_id}");
    let mut reply_id = 1i32;
    loop {
        let mut h = [0u8; 16];
        if stream.read_exact(&mut h).await.is_err() {
            break;
        }
        let header = Header::parse(&h);
        let len = header.length as usize;
        if !(16..=MAX_MESSAGE_SIZE).contains(&len) {
            slog!(
                W,
                "NETWORK",
                22988,
                &ctx,
                "Error receiving request from client. Ending connection from remote",
                doc! {"error": format!("invalid message length {len}")}
            );
            break;
        }
        let mut body = vec![0u8; len - 16];
        if stream.read_exact(&mut body).await.is_err() {
            break;
        }
        reply_id += 1;
        let out = match wire::decode(header.op_code, &body) {
            Ok(Message::Msg { flags, body }) => {
                if !body.contains_key("$db") {
                    Some(wire::encode_msg(
                        reply_id,
                        header.request_id,
                        &doc! {"ok": 0.0, "errmsg": "OP_MSG requests require a $db argument", "code": 40571, "codeName": "Location40571"},
                    ))
                } else {
                    match commands::run(&node, body, conn_id).await {
                        Outcome::Reply(doc) if flags & MORE_TO_COME == 0 => {
                            Some(wire::encode_msg(reply_id, header.request_id, &doc))
                        }
                        Outcome::Reply(_) => None,
                        Outcome::Close => break,
                    }
                }
            }
            Ok(Message::Query { collection, query }) => Some(wire::encode_reply(
                reply_id,
                header.request_id,
                &legacy_query(&node, &collection, query, conn_id),
            )),
            Ok(Message::Reply { .. }) | Err(_) => {
                slog!(
                    W,
                    "NETWORK",
                    22988,
                    &ctx,
                    "Error receiving request from client. Ending connection from remote",
                    doc! {"opCode": header.op_code}
                );
                break;
            }
        };
        if let Some(Ok(bytes)) = out
            && stream.write_all(&bytes).await.is_err()
        {
            break;
        }
    }
}

/// mongod still answers the OP_QUERY handshake (`isMaster`/`hello` on `admin.$cmd`) and nothing else.
fn legacy_query(node: &Node, collection: &str, query: Document, conn_id: u64) -> Document {
    let cmd = match query.get_document("$query") {
        Ok(q) => q.clone(),
        Err(_) => query,
    };
    let name = cmd.keys().next().cloned().unwrap_or_default();
    if collection.ends_with(".$cmd") && matches!(name.as_str(), "isMaster" | "ismaster" | "hello") {
        return commands::hello(node, &cmd, conn_id);
    }
    doc! {
        "ok": 0.0,
        "errmsg": format!("Unsupported OP_QUERY command: {name}. The client driver may require an upgrade. For more details see https://dochub.mongodb.org/core/legacy-opcode-removal"),
        "code": 352,
        "codeName": "UnsupportedOpQueryCommand",
    }
}
