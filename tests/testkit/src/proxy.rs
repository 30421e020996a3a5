//! HTTP proxies on loopback in front of a real server: one drops a request header (an
//! S3-compatible store that ignores `If-None-Match`, made from moto); one counts the
//! requests that pass, by kind (what a process costs at S3 prices).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};

/// Listens on a free port until dropped (the listener thread ends with the process).
pub struct HeaderDroppingProxy {
    pub port: u16,
}

impl HeaderDroppingProxy {
    /// Forwards every connection to `127.0.0.1:upstream`, without any `header` line
    /// (case-insensitive) in its request. Each connection carries one request (`Connection:
    /// close` is forced), so no later request on it escapes the filter.
    pub fn start(upstream: u16, header: &str) -> HeaderDroppingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let header = format!("{}:", header.to_ascii_lowercase());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let header = header.clone();
                std::thread::spawn(move || {
                    let _ = relay(client, upstream, &header, &|_| {});
                });
            }
        });
        HeaderDroppingProxy { port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Requests by kind (`list`, `get`, `put`, `head`, `delete`, `post`).
pub type Counts = std::collections::BTreeMap<String, u64>;

/// S3's list price of one request of `kind`, in dollars: GET and HEAD $0.0004 per 1,000,
/// every other kind (PUT, LIST, POST, DELETE billed as the first tier) $0.005 per 1,000.
pub fn s3_price(kind: &str) -> f64 {
    match kind {
        "get" | "head" => 0.0004 / 1000.0,
        _ => 0.005 / 1000.0,
    }
}

/// Counts every request it forwards whose request line contains `filter` (a key prefix,
/// say), by S3 request kind.
pub struct CountingProxy {
    pub port: u16,
    counts: std::sync::Arc<std::sync::Mutex<Counts>>,
}

impl CountingProxy {
    pub fn start(upstream: u16, filter: &str) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let counts = std::sync::Arc::new(std::sync::Mutex::new(Counts::new()));
        let (shared, filter) = (counts.clone(), filter.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (counts, filter) = (shared.clone(), filter.clone());
                std::thread::spawn(move || {
                    let count = |line: &str| {
                        if line.contains(&filter) {
                            *counts.lock().unwrap().entry(kind(line)).or_default() += 1;
                        }
                    };
                    let _ = relay(client, upstream, "x-nothing-dropped", &count);
                });
            }
        });
        CountingProxy { port, counts }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        self.counts.lock().unwrap().clone()
    }
}

/// `GET /bucket?list-type=2&prefix=…` is a LIST; other methods are themselves.
fn kind(request_line: &str) -> String {
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_ascii_lowercase();
    let target = parts.next().unwrap_or_default();
    if method == "get" && target.contains("list-type=") {
        "list".into()
    } else {
        method
    }
}

fn relay(
    mut client: TcpStream,
    upstream: u16,
    header: &str,
    on_request: &dyn Fn(&str),
) -> std::io::Result<()> {
    // The request head, byte by byte up to its blank line; the body follows as is.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    on_request(text.lines().next().unwrap_or_default());
    let mut kept: Vec<&str> = text
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .filter(|l| {
            let lower = l.to_ascii_lowercase();
            !lower.starts_with(header) && !lower.starts_with("connection:")
        })
        .collect();
    kept.push("Connection: close");
    let mut server = TcpStream::connect(("127.0.0.1", upstream))?;
    server.write_all(format!("{}\r\n\r\n", kept.join("\r\n")).as_bytes())?;
    let mut to_server = client.try_clone()?;
    let mut from_server = server.try_clone()?;
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut to_server, &mut from_server);
        let _ = from_server.shutdown(Shutdown::Write);
    });
    std::io::copy(&mut server, &mut client)?;
    let _ = client.shutdown(Shutdown::Both);
    let _ = up.join();
    Ok(())
}
