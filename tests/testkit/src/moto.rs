//! A moto S3 server on 127.0.0.1, started per test and killed on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};

pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    /// Starts moto on a free port and waits until it answers. The port is free when
    /// picked, not when moto binds it: a test running beside this one (another moto, a
    /// mongod-sim) may take it meanwhile and answer in moto's place while this moto fails
    /// to bind and exits. So the wait is for this very process to listen, and a moto that
    /// exits is started again on another port.
    pub fn start() -> Moto {
        for _ in 0..5 {
            if let Some(moto) = Self::try_start() {
                return moto;
            }
        }
        panic!("moto_server did not start on any of 5 ports");
    }

    fn try_start() -> Option<Moto> {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // `python3 -m moto.server` works wherever pip put moto, shim or no shim.
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is needed to run moto_server");
        let mut moto = Moto { child, port };
        let started = Instant::now();
        while !listens(moto.child.id(), port) {
            if let Ok(Some(status)) = moto.child.try_wait() {
                // Another process took the port first, or moto is not installed.
                assert!(
                    TcpStream::connect(("127.0.0.1", port)).is_ok(),
                    "moto_server exited ({status}): install it with \
                     python3 -m pip install 'moto[server]' (scripts/test does)"
                );
                return None;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto_server did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket with a plain HTTP PUT (object_store does not create buckets).
    pub fn create_bucket(&self, bucket: &str) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }

    /// The environment a tidemark process needs to reach this moto as S3.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ]
    }

    /// The same environment, reaching moto through `endpoint` (a counting proxy, say).
    pub fn env_via(&self, endpoint: String) -> Vec<(&'static str, String)> {
        self.env()
            .into_iter()
            .map(|(k, v)| match k {
                "AWS_ENDPOINT" => (k, endpoint.clone()),
                _ => (k, v),
            })
            .collect()
    }

    /// An object_store client for `bucket` (created first), configured on the builder so
    /// parallel tests never race on process-wide environment variables.
    pub fn store(&self, bucket: &str) -> AmazonS3 {
        self.create_bucket(bucket);
        AmazonS3Builder::new()
            .with_url(format!("s3://{bucket}"))
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .unwrap()
    }

    /// Stops the server, for "storage is down" tests.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port`: the listening
/// socket's inode in `/proc/net/tcp` is one of the process's open files.
fn listens(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return TcpStream::connect(("127.0.0.1", port)).is_ok();
    };
    let wanted = format!(":{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local address, state 0A (LISTEN), inode
            (fields.get(1)?.ends_with(&wanted) && *fields.get(3)? == "0A")
                .then(|| fields.get(9).map(|s| s.to_string()))?
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| {
            inodes
                .iter()
                .any(|inode| target.to_string_lossy() == format!("socket:[{inode}]"))
        })
    })
}
