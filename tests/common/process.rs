//! The real gateway binary as a subprocess (`callgate --config F serve`), every byte of its
//! output captured, and its CLI.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, sleep};

/// The real binary, `serve`, every byte of its output captured.
pub struct GatewayProc {
    child: Child,
    pub sip_addr: SocketAddr,
    /// The HTTP listener (call-control API and portal).
    pub http_addr: SocketAddr,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes ANSI colour sequences (the fmt subscriber may colour even into a pipe).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            if it.peek() == Some(&'[') {
                it.next();
                for d in it.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

fn pump(
    mut from: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => lock(&into).extend_from_slice(&buf[..n]),
            }
        }
    })
}

impl GatewayProc {
    pub async fn start(config: &Path) -> GatewayProc {
        GatewayProc::start_with_env(config, &[]).await
    }

    /// As [`GatewayProc::start`], with extra environment variables.
    pub async fn start_with_env(config: &Path, envs: &[(&str, &str)]) -> GatewayProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_callgate"))
            .arg("--config")
            .arg(config)
            .arg("serve")
            .envs(envs.iter().copied())
            .env("RUST_LOG", "trace")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the callgate binary");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        // Invariant: both were requested as pipes above.
        let readers = vec![
            pump(child.stdout.take().expect("stdout pipe"), stdout.clone()),
            pump(child.stderr.take().expect("stderr pipe"), stderr.clone()),
        ];
        let deadline = Instant::now() + Duration::from_secs(15);
        let (sip_addr, http_addr) = loop {
            let text = strip_ansi(&String::from_utf8_lossy(&lock(&stderr)));
            let addr = |l: &str, key: &str| -> Option<SocketAddr> {
                let rest = &l[l.find(key)? + key.len()..];
                rest.split_whitespace().next()?.parse::<SocketAddr>().ok()
            };
            let found = text
                .lines()
                .filter(|l| l.contains("callgate serving"))
                .find_map(|l| Some((addr(l, "sip=")?, addr(l, "api=")?)));
            if let Some(a) = found {
                break a;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!("gateway exited at start ({st}): {text}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("gateway did not report its SIP address within 15 s: {text}");
            }
            sleep(Duration::from_millis(20)).await;
        };
        GatewayProc {
            child,
            sip_addr,
            http_addr,
            stdout,
            stderr,
            readers,
        }
    }

    /// SIGTERM (graceful drain), wait for exit, return (stdout, stderr).
    pub async fn stop(mut self) -> (Vec<u8>, Vec<u8>) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("gateway did not exit within 15 s of SIGTERM");
            }
            sleep(Duration::from_millis(20)).await;
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let (out, err) = (lock(&self.stdout).clone(), lock(&self.stderr).clone());
        assert!(
            status.success(),
            "gateway exit status {status}; stderr tail: {}",
            tail(&err)
        );
        (out, err)
    }
}

impl GatewayProc {
    /// SIGKILL: a crash, nothing drained.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }

    /// What it logged so far.
    pub fn stderr_text(&self) -> String {
        strip_ansi(&String::from_utf8_lossy(&lock(&self.stderr)))
    }
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        // Only our own child, by its handle.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn tail(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Runs a CLI command against the config (trace logging on); returns (ok, stdout, stderr).
pub async fn cli(config: &Path, args: &[&str]) -> (bool, Vec<u8>, Vec<u8>) {
    cli_with_env(config, args, &[]).await
}

/// As [`cli`], with extra environment variables.
pub async fn cli_with_env(
    config: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> (bool, Vec<u8>, Vec<u8>) {
    let config = config.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let envs: Vec<(String, String)> = envs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let o = Command::new(env!("CARGO_BIN_EXE_callgate"))
            .arg("--config")
            .arg(&config)
            .args(&args)
            .envs(envs)
            .env("RUST_LOG", "trace")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run the callgate binary");
        (o.status.success(), o.stdout, o.stderr)
    })
    .await
    .expect("CLI task")
}
