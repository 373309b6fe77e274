//! A real encrypted recording made with the library (no gateway), a real SQLite database and
//! key file, and helpers to run the `callgate` binary on them. Shared by `tests/cli.rs` and
//! `tests/retention.rs` (each includes it with `#[path]`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use callgate::ids::{CallId, Leg, RecordingId};
use callgate::media::g711::G711;
use callgate::pii::PhoneNumber;
use callgate::recording::container::{EndReason, Header};
use callgate::recording::keys::{Dek, Keyring};
use callgate::recording::storage::{DirStorage, Storage};
use callgate::recording::writer::RecordingWriter;
use callgate::store::{CallRecord, RecordingRow, Store};

pub const FROM: &str = "+447700900123";
pub const TO: &str = "+441632960034";
/// Seconds of audio in the test recording.
pub const SECS: u64 = 2;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub db_url: String,
    pub kek_file: PathBuf,
    pub rec_file: PathBuf,
    pub rec_id: RecordingId,
    pub call_id: CallId,
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub fn tone(freq: f64, amp: f64, start: u64, n: usize) -> Vec<i16> {
    (0..n)
        .map(|k| {
            let t = (start + k as u64) as f64 / 8000.0;
            (amp * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
        })
        .collect()
}

pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("callgate.toml");
    let text = format!(
        "[database]\nurl = \"sqlite://{db}?mode=rwc\"\n[keys]\nkek_file = \"{kek}\"\n{extra}",
        db = dir.join("data/callgate.db").display(),
        kek = dir.join("data/kek.key").display(),
    );
    let text = if extra.contains("[recording]") {
        text
    } else {
        format!(
            "{text}[recording]\nstorage = \"{}\"\n",
            dir.join("recordings").display()
        )
    };
    std::fs::write(&p, text).unwrap();
    p
}

/// Key file, database, and one complete 2 s recording: 440 Hz on the caller leg, 1 kHz on the
/// agent leg, sealed every 100 ms (so about 20 chunks).
pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let db_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("data/callgate.db").display()
    );
    let kek_file = dir.path().join("data/kek.key");
    let ring = Keyring::create(&kek_file).unwrap();
    let kek = ring.active();

    let rec_id = RecordingId::new_random();
    let call_id = CallId::new_random();
    let dek = Dek::generate().unwrap();
    let wrapped = kek.wrap(&dek);

    let flush = Duration::from_millis(100);
    let t0 = Instant::now();
    let header = Header::new(rec_id.clone(), kek.id().clone(), 1_700_000_000_000, flush).unwrap();
    let mut w = RecordingWriter::new(header, &dek, t0, flush);
    let mut bytes = Vec::new();
    let packets = SECS * 50;
    let caller = tone(440.0, 8000.0, 0, (packets * 160) as usize);
    let agent = tone(1000.0, 8000.0, 0, (packets * 160) as usize);
    for p in 0..packets {
        w.handle_timeout(t0 + Duration::from_millis(p * 20));
        while let Some(b) = w.poll_output() {
            bytes.extend(b);
        }
        let range = (p * 160) as usize..((p + 1) * 160) as usize;
        let c: Vec<u8> = caller[range.clone()]
            .iter()
            .map(|s| G711::Pcmu.encode(*s))
            .collect();
        let a: Vec<u8> = agent[range].iter().map(|s| G711::Pcmu.encode(*s)).collect();
        w.push_audio(Leg::Caller, p * 160, G711::Pcmu, &c);
        w.push_audio(Leg::Agent, p * 160, G711::Pcmu, &a);
    }
    w.push_end(EndReason::Hangup);
    while let Some(b) = w.poll_output() {
        bytes.extend(b);
    }
    let fin = w.finish().unwrap();
    bytes.extend(&fin.bytes);
    assert!(
        fin.chunks >= 10,
        "want a multi-chunk file, got {}",
        fin.chunks
    );

    let storage = DirStorage::new(dir.path().join("recordings"));
    let rec_file = storage.path_for(&rec_id).unwrap();
    {
        use std::io::Write;
        let mut f = Storage::Dir(storage).create(&rec_id).unwrap();
        f.write_all(&bytes).unwrap();
    }

    rt().block_on(async {
        let store = Store::connect(&db_url).await.unwrap();
        store
            .put_recording_key(&rec_id, kek.id(), wrapped.as_bytes())
            .await
            .unwrap();
        store
            .upsert_recording(&RecordingRow {
                recording_id: rec_id.clone(),
                call_id: call_id.clone(),
                location: rec_file.display().to_string(),
                state: "ok".into(),
                bytes: bytes.len() as i64,
                sha256: None,
                created_at_ms: 1_700_000_000_000,
                finished_at_ms: Some(1_700_000_002_000),
            })
            .await
            .unwrap();
        let mut call = CallRecord::new(
            call_id.clone(),
            "sip-call-id-1@test",
            PhoneNumber::new(FROM),
            PhoneNumber::new(TO),
            PhoneNumber::new("2001"),
            "*",
            "sip:queue@127.0.0.1:5080",
            1_700_000_000_000,
        );
        call.ended_at_ms = Some(1_700_000_002_000);
        call.hangup_cause = Some("normal".into());
        call.hangup_side = Some("caller".into());
        call.recording_id = Some(rec_id.clone());
        call.recording_state = "ok".into();
        call.key_id = Some(kek.id().clone());
        store.upsert_call(&call).await.unwrap();
        store.close().await;
    });

    Fixture {
        dir,
        config,
        db_url,
        kek_file,
        rec_file,
        rec_id,
        call_id,
    }
}

pub fn callgate(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

impl Fixture {
    pub fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["--config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        callgate(self.dir.path(), &all)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn decrypt(&self, id: &str, out: &Path) -> Output {
        self.run(&["recording", "decrypt", id, "--out", out.to_str().unwrap()])
    }
    /// Stores the customer's choice at a consent prompt on the call row (recording allowed;
    /// `training` as given, `None` = the prompt offered no training choice), made by `source`
    /// (`keypad` or `default`) at `at_ms`. Returns the prompt's SHA-256 (hex).
    pub fn set_consent(&self, training: Option<bool>, source: &str, at_ms: i64) -> String {
        let sha = "5eed".repeat(16);
        rt().block_on(async {
            let store = Store::connect(&self.db_url).await.unwrap();
            let mut call = store.get_call(&self.call_id).await.unwrap().unwrap();
            call.consent_prompt_sha256 = Some(sha.clone());
            call.consent_state = Some("decided".into());
            call.consent_recording = Some(true);
            call.consent_training = training;
            call.consent_source = Some(source.into());
            call.consent_at_ms = Some(at_ms);
            store.upsert_call(&call).await.unwrap();
            store.close().await;
        });
        sha
    }
}

pub fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed by a signal")
}
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
