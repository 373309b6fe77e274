//! Recordings: encrypted container format, sans-IO writer, reader, keys, WAV render, storage.
//!
//! * [`keys`]: per-recording DEK wrapped by a rotatable KEK (AES-KW); the key file.
//! * [`container`]: the byte format (`docs/recording-format.md`): header, STREAM chunks, records.
//! * [`writer`]: sans-IO; records in, sealed chunks out every `flush` (time is an input).
//! * [`reader`]: authenticates every chunk, tells complete / truncated / damaged apart.
//! * [`wav`]: stereo PCM16 8 kHz WAV, left caller, right agent.
//! * [`storage`]: where the files live (a directory or S3).
//! * [`open`]: key from the database, file from storage, every chunk authenticated.

pub mod container;
pub mod keys;
pub mod open;
pub mod reader;
pub mod storage;
pub mod wav;
pub mod writer;

#[cfg(test)]
mod interop_tests {
    //! The format documentation is tested by an independent implementation:
    //! `docs/decrypt_recording.py` (Python + `cryptography`) must agree with this crate.

    use std::path::Path;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use crate::ids::{KeyId, Leg, RecordingId};
    use crate::media::g711::G711;
    use crate::recording::container::{EndReason, GapKind, Header, Record};
    use crate::recording::keys::{Dek, Kek, hex};
    use crate::recording::reader::{ReadStatus, read};
    use crate::recording::wav::render_stereo_wav;
    use crate::recording::writer::RecordingWriter;

    fn python_with_cryptography() -> bool {
        Command::new("python3")
            .args(["-c", "import cryptography"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    fn record_line(r: &Record) -> String {
        match r {
            Record::Audio {
                leg,
                pos,
                codec,
                payload,
            } => format!(
                "audio {} {pos} {} {}",
                *leg as u8,
                codec.payload_type(),
                hex(payload)
            ),
            Record::Gap {
                leg,
                from,
                to,
                kind,
            } => {
                let (k, t, d) = match kind {
                    GapKind::Loss => (0, 0, 0),
                    GapKind::Pause { trigger, digits } => (1, *trigger, *digits),
                };
                format!("gap {} {from} {to} {k} {t} {d}", *leg as u8)
            }
            Record::End { reason } => format!("end {}", reason.code()),
        }
    }

    fn run_script(file: &Path, kek: &[u8; 32], wrapped: &str, wav: &Path) -> (bool, String) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/decrypt_recording.py");
        let out = Command::new("python3")
            .arg(script)
            .arg(file)
            .args(["--kek", &hex(kek), "--wrapped-dek", wrapped, "--wav"])
            .arg(wav)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.is_empty(), "script stderr: {stderr}");
        (out.status.success(), String::from_utf8(out.stdout).unwrap())
    }

    #[test]
    fn python_decrypter_agrees_with_rust_reader() {
        if !python_with_cryptography() {
            eprintln!(
                "NOTE: skipping python_decrypter_agrees_with_rust_reader: python3 with `cryptography` not found (pip install cryptography)"
            );
            return;
        }
        let kek_bytes = [0x5a; 32];
        let kek = Kek::from_bytes(KeyId::from_string("kek-interop"), kek_bytes);
        let dek = Dek::generate().unwrap();
        let wrapped = kek.wrap(&dek);
        let t0 = Instant::now();
        let h = Header::new(
            RecordingId::from_string("rec-interop"),
            kek.id().clone(),
            1_700_000_000_000,
            Duration::from_millis(100),
        )
        .unwrap();
        let mut w = RecordingWriter::new(h, &dek, t0, Duration::from_millis(100));
        let mut file = Vec::new();
        for p in 0..40u64 {
            w.handle_timeout(t0 + Duration::from_millis(p * 20));
            while let Some(b) = w.poll_output() {
                file.extend(b);
            }
            let caller: Vec<u8> = (0..160).map(|k| ((p * 31 + k) % 256) as u8).collect();
            w.push_audio(Leg::Caller, p * 160, G711::Pcmu, &caller);
            if p % 9 == 4 {
                w.push_gap(Leg::Agent, p * 160, p * 160 + 160, GapKind::Loss);
            } else {
                let agent: Vec<u8> = (0..160).map(|k| ((p * 17 + k * 3) % 256) as u8).collect();
                w.push_audio(Leg::Agent, p * 160 + 40, G711::Pcma, &agent);
            }
        }
        w.push_gap(
            Leg::Caller,
            1000,
            2000,
            GapKind::Pause {
                trigger: 3,
                digits: 16,
            },
        );
        w.push_end(EndReason::Hangup);
        while let Some(b) = w.poll_output() {
            file.extend(b);
        }
        let mid_len = file.len();
        file.extend(w.finish().unwrap().bytes);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.cgrec");
        std::fs::write(&path, &file).unwrap();

        let outcome = read(&file, &dek);
        assert_eq!(outcome.status, ReadStatus::Complete);
        assert!(outcome.chunks_ok >= 5);
        let mut expected = vec!["header rec-interop kek-interop 1700000000000 8000".to_owned()];
        expected.extend(outcome.records.iter().map(record_line));
        expected.push("status complete".to_owned());

        let py_wav = dir.path().join("py.wav");
        let (ok, stdout) = run_script(&path, &kek_bytes, &wrapped.to_hex(), &py_wav);
        assert!(ok, "{stdout}");
        assert_eq!(stdout.lines().collect::<Vec<_>>(), expected);

        let rs_wav = dir.path().join("rs.wav");
        render_stereo_wav(&outcome, &rs_wav).unwrap();
        let samples = |p: &Path| -> Vec<i16> {
            hound::WavReader::open(p)
                .unwrap()
                .samples::<i16>()
                .map(|s| s.unwrap())
                .collect()
        };
        let (a, b) = (samples(&py_wav), samples(&rs_wav));
        assert_eq!(a.len(), b.len());
        assert!(a == b, "Python and Rust renders differ");
        assert!(a.iter().any(|s| *s != 0));

        // Truncated and damaged files are reported as such by the script too.
        std::fs::write(&path, &file[..mid_len]).unwrap();
        let (ok, stdout) = run_script(&path, &kek_bytes, &wrapped.to_hex(), &py_wav);
        assert!(!ok);
        assert!(stdout.ends_with("status truncated\n"), "{stdout}");
        let mut bad = file.clone();
        let n = bad.len();
        bad[n - 20] ^= 4;
        std::fs::write(&path, &bad).unwrap();
        let (ok, stdout) = run_script(&path, &kek_bytes, &wrapped.to_hex(), &py_wav);
        assert!(!ok);
        assert!(stdout.contains("status damaged chunk"), "{stdout}");
    }
}
