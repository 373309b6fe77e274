//! The `callgate` binary, end to end: a real encrypted recording made with the library (no
//! gateway), a real SQLite database and key file, then the commands run as a subprocess.

use std::path::Path;
use std::process::Output;

use callgate::ids::KeyId;
use callgate::media::announcement::goertzel_power;
use callgate::recording::keys::Keyring;
use callgate::store::{CallRecord, Store};

#[path = "support/recording_fixture.rs"]
mod recording_fixture;
use recording_fixture::*;

/// A failure: the given exit code, exactly one line on stderr containing every `needles`, and
/// no Rust Debug or panic output.
fn assert_one_line_error(o: &Output, exit: i32, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(code(o), exit, "stdout: {} stderr: {err}", stdout(o));
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("callgate: error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in {err:?}");
    }
    for bad in ["panicked", "Error {", "Os {", "RUST_BACKTRACE"] {
        assert!(!err.contains(bad), "{bad:?} in {err:?}");
    }
}

/// (left, right) channels of a stereo 8 kHz PCM16 WAV, checking the format.
fn read_wav(p: &Path) -> (Vec<i16>, Vec<i16>) {
    let mut r = hound::WavReader::open(p).unwrap();
    let spec = r.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 8000, 16)
    );
    assert_eq!(spec.sample_format, hound::SampleFormat::Int);
    let s: Vec<i16> = r.samples::<i16>().map(|x| x.unwrap()).collect();
    let left = s.iter().step_by(2).copied().collect();
    let right = s.iter().skip(1).step_by(2).copied().collect();
    (left, right)
}

fn assert_tones(p: &Path, min_samples: usize) {
    let (left, right) = read_wav(p);
    assert!(left.len() >= min_samples, "{} samples", left.len());
    let l440 = goertzel_power(&left, 8000, 440.0);
    let l1k = goertzel_power(&left, 8000, 1000.0);
    let r440 = goertzel_power(&right, 8000, 440.0);
    let r1k = goertzel_power(&right, 8000, 1000.0);
    assert!(l440 > 100.0 * l1k, "left: 440 Hz {l440}, 1 kHz {l1k}");
    assert!(r1k > 100.0 * r440, "right: 1 kHz {r1k}, 440 Hz {r440}");
    assert!(l440 > 1e3 && r1k > 1e3, "tones too weak: {l440} {r1k}");
}

fn no_temp_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp-"), "leftover temporary file {name}");
    }
}

#[test]
fn verify_decrypt_and_list_a_complete_recording() {
    let f = fixture();
    let rec = f.rec_id.as_str();

    let o = f.run(&["recording", "verify", rec]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 1);
    assert!(stdout(&o).contains(&format!("{rec}: ok")), "{}", stdout(&o));

    // A call id resolves to its recording.
    let o = f.run(&["recording", "verify", f.call_id.as_str()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("{rec}: ok")));

    let wav = f.path("x.wav");
    let o = f.decrypt(rec, &wav);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    assert_tones(&wav, (SECS * 8000) as usize);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&wav).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "decrypted audio readable by others: {mode:o}"
        );
    }
    no_temp_files(f.dir.path());

    // By call id too, replacing the existing file.
    let o = f.decrypt(f.call_id.as_str(), &wav);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_tones(&wav, (SECS * 8000) as usize);

    // JSON: an array of call records, with our call.
    let o = f.run(&["calls", "list", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let arr = v.as_array().expect("a JSON array");
    assert_eq!(arr.len(), 1);
    let parsed: CallRecord = serde_json::from_value(arr[0].clone()).unwrap();
    assert_eq!(parsed.call_id, f.call_id);
    assert_eq!(parsed.recording_id.as_ref(), Some(&f.rec_id));
    assert_eq!(parsed.recording_state, "ok");

    // Table: aligned, numbers redacted to their last two digits.
    let o = f.run(&["calls", "list"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("CALL ID"), "{out}");
    let row = lines[1];
    for want in [
        f.call_id.as_str(),
        "2023-11-14 22:13:20",
        "***23",
        "***34",
        "normal",
        "caller",
        "ok",
    ] {
        assert!(row.contains(want), "{want:?} not in {row:?}");
    }
    assert!(!out.contains(FROM) && !out.contains("900123"), "{out}");
    assert!(!out.contains(TO), "{out}");
    // Columns line up: the STARTED heading sits over the start time.
    assert_eq!(lines[0].find("STARTED"), row.find("2023-11-14"));

    // --limit is honoured and validated.
    let o = f.run(&["calls", "list", "--json", "--limit", "1"]);
    assert_eq!(code(&o), 0);
    let o = f.run(&["calls", "list", "--limit", "0"]);
    assert_eq!(code(&o), 2);
}

#[test]
fn truncated_recording_verifies_as_truncated_and_renders_with_a_warning() {
    let f = fixture();
    let len = std::fs::metadata(&f.rec_file).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&f.rec_file)
        .unwrap();
    file.set_len(len - 10).unwrap();
    drop(file);

    let o = f.run(&["recording", "verify", f.rec_id.as_str()]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains("truncated after") && out.contains("chunks"),
        "{out}"
    );
    assert!(!out.contains(": ok"), "{out}");

    let wav = f.path("t.wav");
    let o = f.decrypt(f.rec_id.as_str(), &wav);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("warning") && stderr(&o).contains("truncated"),
        "{}",
        stderr(&o)
    );
    // Everything but the final (cut) chunk's 100 ms or so is there.
    assert_tones(&wav, (SECS * 8000 - 1600) as usize);
}

#[test]
fn damaged_recording_is_reported_and_refused() {
    let f = fixture();
    let mut bytes = std::fs::read(&f.rec_file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&f.rec_file, &bytes).unwrap();

    let o = f.run(&["recording", "verify", f.rec_id.as_str()]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("damaged at chunk "), "{out}");
    assert!(out.contains("authentication failed"), "{out}");
    // Not chunk 0: the flip is mid-file.
    assert!(!out.contains("damaged at chunk 0:"), "{out}");

    let wav = f.path("d.wav");
    let o = f.decrypt(f.rec_id.as_str(), &wav);
    assert_one_line_error(&o, 1, &["damaged at chunk", f.rec_id.as_str()]);
    assert!(!wav.exists(), "a WAV was written for a damaged recording");
    no_temp_files(f.dir.path());

    // An existing output file is left alone.
    std::fs::write(&wav, b"keep me").unwrap();
    let o = f.decrypt(f.rec_id.as_str(), &wav);
    assert_eq!(code(&o), 1);
    assert_eq!(std::fs::read(&wav).unwrap(), b"keep me");
}

#[test]
fn deleted_key_row_means_crypto_shredded() {
    let f = fixture();
    rt().block_on(async {
        let store = Store::connect(&f.db_url).await.unwrap();
        assert!(store.delete_recording_key(&f.rec_id).await.unwrap());
        store.close().await;
    });
    let o = f.run(&["recording", "verify", f.rec_id.as_str()]);
    assert_one_line_error(&o, 1, &["crypto-shredded", f.rec_id.as_str()]);
    assert!(stdout(&o).is_empty());

    let wav = f.path("s.wav");
    let o = f.decrypt(f.call_id.as_str(), &wav);
    assert_one_line_error(&o, 1, &["crypto-shredded"]);
    assert!(!wav.exists());
}

#[test]
fn rotate_rewraps_every_data_key_and_decrypt_still_works() {
    let f = fixture();
    let old_id = Keyring::load(&f.kek_file).unwrap().active().id().clone();

    let o = f.run(&["keys", "list"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    let line = out.lines().find(|l| l.contains(old_id.as_str())).unwrap();
    assert!(
        line.contains("active") && line.trim_end().ends_with(" 1"),
        "{out}"
    );

    let o = f.run(&["keys", "rotate"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!("re-wrapped 1 recording key(s) from {old_id}")),
        "{out}"
    );
    assert!(out.contains("1 re-wrapped, 0 failed"), "{out}");

    let ring = Keyring::load(&f.kek_file).unwrap();
    let ids: Vec<KeyId> = ring.ids().cloned().collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], old_id);
    let new_id = ring.active().id().clone();
    assert_ne!(new_id, old_id);
    assert!(out.contains(new_id.as_str()), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&f.kek_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    // The database row now names the new key.
    let (kid, _) = rt().block_on(async {
        let store = Store::connect(&f.db_url).await.unwrap();
        let k = store.get_recording_key(&f.rec_id).await.unwrap().unwrap();
        store.close().await;
        k
    });
    assert_eq!(kid, new_id);

    let o = f.run(&["keys", "list"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let old_line = lines.iter().find(|l| l.contains(old_id.as_str())).unwrap();
    let new_line = lines.iter().find(|l| l.contains(new_id.as_str())).unwrap();
    assert!(
        !old_line.contains("active") && old_line.trim_end().ends_with(" 0"),
        "{out}"
    );
    assert!(
        new_line.contains("active") && new_line.trim_end().ends_with(" 1"),
        "{out}"
    );

    // Never key material: no 64-hex-digit key from the file appears in any output.
    let key_text = std::fs::read_to_string(&f.kek_file).unwrap();
    let secrets: Vec<&str> = key_text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(secrets.len(), 2);

    let wav = f.path("r.wav");
    let o = f.decrypt(f.rec_id.as_str(), &wav);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_tones(&wav, (SECS * 8000) as usize);

    let o2 = f.run(&["keys", "list"]);
    for o in [&o, &o2] {
        for s in &secrets {
            assert!(!stdout(o).contains(s) && !stderr(o).contains(s));
        }
    }

    // A second rotation moves it on again; the oldest key then wraps nothing.
    let o = f.run(&["keys", "rotate"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("re-wrapped 1 recording key(s) from {new_id}")));
    let o = f.run(&["recording", "verify", f.rec_id.as_str()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn keys_init_creates_a_private_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let cfg = config.to_str().unwrap();
    let o = callgate(dir.path(), &["--config", cfg, "keys", "init"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let kek = dir.path().join("data/kek.key");
    let ring = Keyring::load(&kek).unwrap();
    assert!(stdout(&o).contains(ring.active().id().as_str()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kek).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let before = std::fs::read(&kek).unwrap();
    let o = callgate(dir.path(), &["--config", cfg, "keys", "init"]);
    assert_one_line_error(&o, 2, &["already exists", "kek.key"]);
    assert_eq!(std::fs::read(&kek).unwrap(), before, "key file was touched");

    // No --config and no config/callgate.toml: the embedded defaults (data/kek.key under cwd).
    let empty = tempfile::tempdir().unwrap();
    let o = callgate(empty.path(), &["keys", "init"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(empty.path().join("data/kek.key").exists());
}

#[test]
fn bad_input_gives_one_line_errors() {
    let f = fixture();

    // Bad config value: names the key and the file.
    let dir = tempfile::tempdir().unwrap();
    let bad = write_config(dir.path(), "[media]\nrtp_ports = \"30000\"\n");
    let o = callgate(
        dir.path(),
        &["--config", bad.to_str().unwrap(), "calls", "list"],
    );
    assert_one_line_error(&o, 2, &["media.rtp_ports", bad.to_str().unwrap()]);
    // Unknown config key.
    let bad = write_config(dir.path(), "[sip]\nlisen = \"0.0.0.0:5060\"\n");
    let o = callgate(
        dir.path(),
        &["--config", bad.to_str().unwrap(), "keys", "list"],
    );
    assert_one_line_error(&o, 2, &["lisen", bad.to_str().unwrap()]);

    // An explicit config path must exist.
    let o = callgate(
        dir.path(),
        &["--config", "/nonexistent.toml", "calls", "list"],
    );
    assert_one_line_error(&o, 2, &["/nonexistent.toml"]);

    // Ids.
    let o = f.run(&["recording", "verify", "rec-0000000000000000"]);
    assert_one_line_error(&o, 2, &["no recording rec-0000000000000000"]);
    let o = f.run(&[
        "recording",
        "decrypt",
        "call-0000000000000000",
        "--out",
        "y.wav",
    ]);
    assert_one_line_error(&o, 2, &["no call call-0000000000000000"]);
    let o = f.run(&["recording", "verify", "../../etc/passwd"]);
    assert_one_line_error(&o, 2, &["neither a recording id"]);

    // Missing key file.
    std::fs::rename(&f.kek_file, f.path("kek.moved")).unwrap();
    let o = f.run(&["recording", "verify", f.rec_id.as_str()]);
    assert_one_line_error(&o, 2, &["key file", "kek.key"]);
    let o = f.run(&["keys", "list"]);
    assert_one_line_error(&o, 2, &["key file"]);
    std::fs::rename(f.path("kek.moved"), &f.kek_file).unwrap();

    // Missing recording file.
    std::fs::rename(&f.rec_file, f.path("moved.cgrec")).unwrap();
    let o = f.run(&["recording", "verify", f.rec_id.as_str()]);
    assert_one_line_error(&o, 2, &["not found", f.rec_id.as_str()]);
    std::fs::rename(f.path("moved.cgrec"), &f.rec_file).unwrap();

    // A malformed S3 URL names the key and the file.
    let s3 = write_config(
        dir.path(),
        "[recording]\nstorage = \"s3://Bad_Bucket/prefix\"\n",
    );
    let o = callgate(
        dir.path(),
        &[
            "--config",
            s3.to_str().unwrap(),
            "recording",
            "verify",
            f.rec_id.as_str(),
        ],
    );
    assert_one_line_error(
        &o,
        2,
        &["recording.storage", "callgate.toml", "Bad_Bucket", "3-63 characters"],
    );

    // A database file that does not exist is not created by the tools.
    let nodb = write_config(dir.path(), "");
    let o = callgate(
        dir.path(),
        &["--config", nodb.to_str().unwrap(), "calls", "list"],
    );
    assert_one_line_error(&o, 2, &["does not exist", "callgate.db"]);
    assert!(!dir.path().join("data/callgate.db").exists());

    // Unreachable database: one line, password never shown.
    let pg = write_config(dir.path(), "");
    let text = std::fs::read_to_string(&pg).unwrap().replace(
        &format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("data/callgate.db").display()
        ),
        "postgres://callgate:s3cretPW@127.0.0.1:1/callgate",
    );
    std::fs::write(&pg, text).unwrap();
    let o = callgate(
        dir.path(),
        &["--config", pg.to_str().unwrap(), "calls", "list"],
    );
    assert_one_line_error(&o, 2, &["127.0.0.1:1"]);
    assert!(!stderr(&o).contains("s3cretPW"), "{}", stderr(&o));

    // Usage errors are clap's (exit 2).
    let o = f.run(&["recording", "decrypt", f.rec_id.as_str()]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("--out"));
}
