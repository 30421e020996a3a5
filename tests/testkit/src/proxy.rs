//! An HTTP proxy on loopback that drops one request header before passing each request to
//! a real server: an S3-compatible store that ignores `If-None-Match`, made from moto.

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
                    let _ = relay(client, upstream, &header);
                });
            }
        });
        HeaderDroppingProxy { port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn relay(mut client: TcpStream, upstream: u16, header: &str) -> std::io::Result<()> {
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
