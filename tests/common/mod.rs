//! Shared harness for the in-process call-path tests: simulated phones ([`phone`]), their SIP
//! text ([`sip`]), test signals and correlation ([`audio`]), and a per-test gateway environment
//! (temp dir, config text, reading back call records and decrypting the recording).
#![allow(dead_code)]

pub mod audio;
pub mod dtmf;
pub mod phone;
pub mod process;
pub mod s3;
pub mod sip;
pub mod toy_gateway;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use callgate::config::Config;
use callgate::recording::keys::{Keyring, WrappedDek};
use callgate::recording::storage::DirStorage;
use callgate::store::CallRecord;
use callgate::store::Store;
use phone::{AgentPhone, CallerPhone};
use tokio::time::sleep;

/// The number every test dials.
pub const DIALLED: &str = "2001";
/// The caller's number (Ofcom drama range).
pub const CALLER_NUMBER: &str = "07700900123";

/// Short waits for SIP steps; long enough for a loaded CI host, short enough that a broken
/// gateway fails the test well inside 30 s.
pub const SIP_WAIT: Duration = Duration::from_secs(5);

/// Everything one gateway instance under test keeps on disk.
pub struct GatewayEnv {
    pub dir: tempfile::TempDir,
    pub announcement: PathBuf,
    pub storage: PathBuf,
    pub kek: PathBuf,
    pub db_url: String,
}

/// What goes into the config beyond the shared defaults.
pub struct GatewayOpts<'a> {
    /// Inclusive RTP port range, unique per test so parallel tests never collide.
    pub rtp_ports: (u16, u16),
    /// `[[route]] target` (the agent phone's URI).
    pub target: &'a str,
    /// `[sip] trusted`.
    pub trusted: &'a [&'a str],
}

impl GatewayEnv {
    /// A temp dir with the announcement written at 16 kHz (so the gateway resamples it).
    pub fn new(announcement_16k: &[i16]) -> GatewayEnv {
        // Invariant: the host has a writable temp dir.
        let dir = tempfile::tempdir().expect("temp dir");
        let announcement = dir.path().join("notice.wav");
        audio::write_wav(&announcement, 16_000, announcement_16k);
        let storage = dir.path().join("recordings");
        std::fs::create_dir_all(&storage).expect("recordings dir");
        let kek = dir.path().join("kek.key");
        let db_url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("db.sqlite").display()
        );
        GatewayEnv {
            announcement,
            storage,
            kek,
            db_url,
            dir,
        }
    }

    pub fn config_text(&self, o: &GatewayOpts<'_>) -> String {
        let trusted: Vec<String> = o.trusted.iter().map(|t| format!("\"{t}\"")).collect();
        format!(
            r#"
[sip]
listen = "127.0.0.1:0"
advertise = "127.0.0.1"
trusted = [{trusted}]

[media]
rtp_ports = "{lo}-{hi}"
advertise = "127.0.0.1"

[[route]]
match = "{DIALLED}"
target = "{target}"
announcement = "{ann}"
record = true

[recording]
storage = "{storage}"
flush = "1s"

[keys]
kek_file = "{kek}"

[portal]
listen = "127.0.0.1:0"
api_tokens_file = "{dir}/api-tokens"
[database]
url = "{db}"
"#,
            trusted = trusted.join(", "),
            lo = o.rtp_ports.0,
            hi = o.rtp_ports.1,
            target = o.target,
            ann = self.announcement.display(),
            storage = self.storage.display(),
            kek = self.kek.display(),
            db = self.db_url,
            dir = self.dir.path().display(),
        )
    }

    pub fn config(&self, o: &GatewayOpts<'_>) -> Config {
        let text = self.config_text(o);
        match Config::parse(&text, Path::new("test.toml")) {
            Ok(c) => c,
            Err(e) => panic!("test config does not parse: {e}\n{text}"),
        }
    }

    /// Every call record, newest first.
    pub async fn calls(&self) -> Vec<CallRecord> {
        let store = Store::connect(&self.db_url)
            .await
            .expect("open the gateway's database");
        let calls = store.list_calls(10).await.expect("list calls");
        store.close().await;
        calls
    }

    /// Reads and authenticates the call's recording file in-process (records, gaps, status).
    pub async fn read_recording(
        &self,
        call: &CallRecord,
    ) -> callgate::recording::reader::ReadOutcome {
        let rec_id = call
            .recording_id
            .clone()
            .expect("call record has a recording id");
        let store = Store::connect(&self.db_url)
            .await
            .expect("open the gateway's database");
        let (key_id, wrapped) = store
            .get_recording_key(&rec_id)
            .await
            .expect("query recording key")
            .expect("the recording's wrapped DEK is in the database");
        store.close().await;
        let keyring = Keyring::load(&self.kek).expect("load KEK file");
        let dek = keyring
            .unwrap_dek(&key_id, &WrappedDek(wrapped))
            .expect("unwrap DEK");
        let bytes = DirStorage::new(&self.storage)
            .read_all(&rec_id)
            .expect("read recording file");
        callgate::recording::reader::read(&bytes, &dek)
    }

    /// Decrypts the call's recording in-process and renders it as the CLI would: stereo 8 kHz
    /// WAV, left caller, right agent. Returns (left, right).
    pub async fn decrypt_recording(&self, call: &CallRecord) -> (Vec<i16>, Vec<i16>) {
        let outcome = self.read_recording(call).await;
        assert!(
            outcome.status.is_complete(),
            "recording must authenticate completely: {:?}",
            outcome.status
        );
        let wav = self.dir.path().join("decrypted.wav");
        callgate::recording::wav::render_stereo_wav(&outcome, &wav).expect("render stereo WAV");
        let (rate, left, right) = audio::read_stereo_wav(&wav);
        assert_eq!(rate, 8000, "rendered recording is 8 kHz");
        (left, right)
    }
}

/// Sends raw bytes (built from the sending socket's address, for the Via) from a fresh socket
/// and returns the first final (≥ 200) response's text, skipping provisional ones; `None` if
/// nothing final arrives within `within`.
pub async fn send_raw_expect_final(
    to: SocketAddr,
    build: impl FnOnce(SocketAddr) -> Vec<u8>,
    within: Duration,
) -> Option<String> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.ok()?;
    let me = sock.local_addr().ok()?;
    sock.send_to(&build(me), to).await.ok()?;
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, _) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with("SIP/2.0 1") {
            continue;
        }
        return Some(text);
    }
}

/// A bare loopback UDP socket and its address (a stand-in peer in harness tests).
pub async fn raw_socket() -> (tokio::net::UdpSocket, SocketAddr) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind raw socket");
    let addr = sock.local_addr().expect("raw socket address");
    (sock, addr)
}

// Shared by the tests that make one real recorded call through the gateway binary.

/// Unwraps a test step's result, panicking with its message.
pub fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// Caller and agent talk for `talk_s` seconds (A from the caller, B from the agent); the
/// caller hangs up unless `hang_up` is false. Returns (A, B).
pub async fn talk(
    gw: std::net::SocketAddr,
    agent: &AgentPhone,
    talk_s: f64,
    hang_up: bool,
) -> (Vec<i16>, Vec<i16>, CallerPhone) {
    let mut caller = CallerPhone::new(gw, CALLER_NUMBER).await;
    let fin = ok(caller.call(DIALLED, Duration::from_secs(10)).await);
    assert_eq!(
        fin.status(),
        Some(200),
        "caller answered: {}",
        caller.summary()
    );
    ok(agent
        .wait_until(SIP_WAIT, "the agent's 200 ACKed", |s| s.acked.is_some())
        .await);
    let a = audio::signal_a(talk_s);
    let b = audio::signal_b(talk_s);
    let send_a = ok(caller.start_audio(a.clone()));
    let send_b = ok(agent.start_audio(b.clone()));
    let _ = (send_a.await, send_b.await);
    sleep(Duration::from_millis(300)).await;
    if hang_up {
        let bye = ok(caller.bye(SIP_WAIT).await);
        assert_eq!(bye.status(), Some(200));
    }
    (a, b, caller)
}

pub async fn only_call(env: &GatewayEnv) -> callgate::store::CallRecord {
    let calls = env.calls().await;
    assert_eq!(calls.len(), 1, "one call record: {calls:?}");
    calls.into_iter().next().expect("one call")
}

/// The only call, once its recording row is final (at most 5 s after hangup); it must be "ok".
pub async fn finished_call(env: &GatewayEnv) -> callgate::store::CallRecord {
    let mut call = only_call(env).await;
    for _ in 0..100 {
        if call.recording_state != "recording" {
            break;
        }
        sleep(Duration::from_millis(50)).await;
        call = only_call(env).await;
    }
    assert_eq!(call.recording_state, "ok", "{call:?}");
    call
}
