//! A real S3-compatible server for tests: `s3s-fs` (crates.io), which keeps each object as a
//! plain file under `<root>/<bucket>/<key>`, so a test can look at (and damage) what the
//! gateway stored. The binary comes from `CALLGATE_TEST_S3FS` or `s3s-fs` on the PATH;
//! `.ci/run` installs it. Without it the S3 tests say they were skipped (and fail under CI).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "callgate-test-access";
pub const SECRET_KEY: &str = "callgate-test-secret-not-a-real-one";
pub const BUCKET: &str = "callgate-test";

/// The environment the gateway and CLI need to reach the server.
pub fn aws_env() -> [(&'static str, &'static str); 3] {
    [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_REGION", "us-east-1"),
    ]
}

/// The s3s-fs binary, or `None` (after saying so) when it is not installed. Under CI a
/// missing binary is a failure, not a skip.
pub fn s3fs_binary(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("CALLGATE_TEST_S3FS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("s3s-fs"))
                    .find(|p| p.is_file())
            })
        });
    match found {
        Some(p) if p.is_file() => Some(p),
        other => {
            let msg = format!(
                "{test}: no s3s-fs binary ({other:?}); install it with \
                 `cargo install s3s-fs --version 0.14.1 --features binary --locked` and set \
                 CALLGATE_TEST_S3FS"
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}");
            }
            eprintln!("skipped: {msg}");
            None
        }
    }
}

/// A free loopback TCP port (bound and released: a small race, fine on a test host).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// A running s3s-fs with the test bucket.
pub struct S3Server {
    child: Child,
    pub port: u16,
    pub root: PathBuf,
}

impl S3Server {
    /// Starts s3s-fs on `port` over `root` (the bucket directory is created) and waits until
    /// it accepts connections.
    pub fn start(binary: &Path, root: &Path, port: u16) -> S3Server {
        std::fs::create_dir_all(root.join(BUCKET)).expect("bucket directory");
        let child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn s3s-fs");
        let mut server = S3Server {
            child,
            port,
            root: root.to_path_buf(),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(st)) = server.child.try_wait() {
                panic!("s3s-fs exited at start: {st}");
            }
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not listen on {addr} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where s3s-fs keeps the object `key` of the test bucket.
    pub fn object_file(&self, key: &str) -> PathBuf {
        self.root.join(BUCKET).join(key)
    }

    /// Stops the server (our own child, by its handle).
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until `cond` holds (checked every 50 ms) or panics with `what` after `within`.
pub async fn wait_for(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
