//! The checks on facts (sans-IO), and a bundle written and verified through real ZIP files
//! with a real recording made by the library.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use super::bundle::{BundleWriter, verify};
use super::*;
use crate::audit::{Actor, NewEntry, Role, seal};
use crate::ids::{KeyId, Leg, RecordingId};
use crate::media::g711::G711;
use crate::recording::container::Header;
use crate::recording::keys::Dek;
use crate::recording::reader::read;
use crate::recording::wav::render_stereo_wav;
use crate::recording::writer::RecordingWriter;

const KEY: [u8; 32] = [7; 32];

/// A 1 s recording (a 440 Hz tone on the caller leg), complete or cut before its last chunk.
fn recording(complete: bool) -> (RecordingId, Vec<u8>) {
    let id = RecordingId::new_random();
    let dek = Dek::from_bytes(KEY);
    let t0 = Instant::now();
    let flush = Duration::from_millis(200);
    let h = Header::new(id.clone(), KeyId::new_random(), 0, flush).unwrap();
    let mut w = RecordingWriter::new(h, &dek, t0, flush);
    let mut file = Vec::new();
    for p in 0..50u64 {
        w.handle_timeout(t0 + Duration::from_millis(p * 20));
        while let Some(b) = w.poll_output() {
            file.extend(b);
        }
        let pcm: Vec<u8> = (0..160u64)
            .map(|k| {
                let t = (p * 160 + k) as f64 / 8000.0;
                G711::Pcmu.encode((8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16)
            })
            .collect();
        w.push_audio(Leg::Caller, p * 160, G711::Pcmu, &pcm);
    }
    if complete {
        file.extend(w.finish().unwrap().bytes);
    }
    (id, file)
}

/// Writes a bundle for `rec` the way `callgate export` does (manifest, then the export
/// entry naming its hash, then the excerpt) and returns its path.
fn write(
    dir: &std::path::Path,
    rec: &RecordingId,
    file: &[u8],
    complete: bool,
) -> std::path::PathBuf {
    let out = dir.join("b.zip");
    let mut w = BundleWriter::create(&out).unwrap();
    w.add_bytes(README, b"readme").unwrap();
    let r = rec.as_str();
    w.add_bytes(&container_name(r), file).unwrap();
    let outcome = read(file, &Dek::from_bytes(KEY));
    let wav = dir.join("tmp.wav");
    render_stereo_wav(&outcome, &wav).unwrap();
    w.add_file(&wav_name(r), &wav).unwrap();
    let m = Manifest {
        format: FORMAT.into(),
        case: "INQ-1".into(),
        created_at_ms: 1,
        created_utc: "x".into(),
        exported_by: Exporter {
            actor: "ivy".into(),
            role: "investigator".into(),
        },
        generator: "test".into(),
        recordings: vec![RecordingFacts {
            recording_id: r.into(),
            call_id: "call-1".into(),
            ending: if complete {
                Ending::Complete
            } else {
                Ending::Truncated
            },
            chunks: outcome.chunks_ok,
            audio_seconds: 1.0,
            container: container_name(r),
            wav: wav_name(r),
            sha256_at_hangup: Some(sha256_hex(file)),
            data_key: hex(&KEY),
            held_for_case: true,
            tags: vec![],
            call: serde_json::Value::Null,
        }],
        files: w.files().to_vec(),
    };
    let mb = serde_json::to_vec_pretty(&m).unwrap();
    w.add_unlisted(MANIFEST, &mb).unwrap();
    let actor = Actor::new("ivy", Role::Investigator);
    let e1 = seal(
        &NewEntry::new(5, &actor, action::TAG_ADD).target(r),
        1,
        GENESIS_HASH,
    );
    let e2 = seal(
        &NewEntry::new(6, &actor, action::EXPORT)
            .target("INQ-1")
            .target(r)
            .details(serde_json::json!({"case": "INQ-1", "manifest_sha256": sha256_hex(&mb)})),
        2,
        &e1.hash,
    );
    let ex = AuditExcerpt {
        format: FORMAT.into(),
        entries: vec![e1, e2],
    };
    w.add_unlisted(AUDIT, &serde_json::to_vec(&ex).unwrap())
        .unwrap();
    w.publish().unwrap();
    out
}

use crate::audit::hex;

/// A copy of `src` with entry `name` transformed (or dropped when `edit` returns None), and
/// `extra` files added.
fn rewrite(
    src: &std::path::Path,
    dst: &std::path::Path,
    name: &str,
    edit: impl Fn(Vec<u8>) -> Option<Vec<u8>>,
    extra: &[(&str, &[u8])],
) {
    let mut a = zip::ZipArchive::new(std::fs::File::open(src).unwrap()).unwrap();
    let mut w = zip::ZipWriter::new(std::fs::File::create(dst).unwrap());
    let o =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..a.len() {
        let mut f = a.by_index(i).unwrap();
        let n = f.name().unwrap().to_string();
        let mut b = Vec::new();
        f.read_to_end(&mut b).unwrap();
        let b = if n == name { edit(b) } else { Some(b) };
        if let Some(b) = b {
            w.start_file(n, o).unwrap();
            w.write_all(&b).unwrap();
        }
    }
    for (n, b) in extra {
        w.start_file(*n, o).unwrap();
        w.write_all(b).unwrap();
    }
    w.finish().unwrap();
}

fn flip_last(mut b: Vec<u8>) -> Option<Vec<u8>> {
    let n = b.len();
    b[n - 3] ^= 0x40;
    Some(b)
}

#[test]
fn a_written_bundle_verifies_and_each_tampering_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, file) = recording(true);
    let out = write(dir.path(), &rec, &file, true);
    let v = verify(&out).unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert_eq!((v.files_ok, v.recordings_ok), (3, 1));
    assert_eq!(v.export.as_ref().unwrap().seq, 2);

    let r = rec.as_str();
    let bad = dir.path().join("bad.zip");
    let problems =
        |name: &str, edit: &dyn Fn(Vec<u8>) -> Option<Vec<u8>>, extra: &[(&str, &[u8])]| {
            let _ = std::fs::remove_file(&bad);
            rewrite(&out, &bad, name, edit, extra);
            verify(&bad).unwrap().problems
        };
    let wav = wav_name(r);
    let p = problems(&wav, &flip_last, &[]);
    assert_eq!(
        p,
        vec![Problem::FileChanged {
            name: wav.clone(),
            what: "SHA-256 differs from the manifest (content changed)"
        }]
    );
    let p = problems(&container_name(r), &flip_last, &[]);
    assert!(matches!(&p[..], [Problem::FileChanged { .. }]), "{p:?}");
    let p = problems(&wav, &|_| None, &[]);
    assert_eq!(p, vec![Problem::MissingFile(wav.clone())]);
    let p = problems(README, &|b| Some(b), &[("notes.txt", b"x")]);
    assert_eq!(p, vec![Problem::ExtraFile("notes.txt".into())]);
    let p = problems(README, &|b| Some(b), &[("../evil", b"x")]);
    assert_eq!(p, vec![Problem::UnsafeName("../evil".into())]);

    // The manifest edited (the WAV's listed hash follows a changed WAV): the export entry no
    // longer names it, and the WAV no longer re-renders from the container.
    let m: Manifest = serde_json::from_slice(&zip_entry(&out, MANIFEST)).unwrap();
    let changed_wav = flip_last(zip_entry(&out, &wav)).unwrap();
    let mut m2 = m.clone();
    m2.files.iter_mut().find(|f| f.name == wav).unwrap().sha256 = sha256_hex(&changed_wav);
    let _ = std::fs::remove_file(&bad);
    let tmp = dir.path().join("tmp1.zip");
    rewrite(&out, &tmp, &wav, |_| Some(changed_wav.clone()), &[]);
    rewrite(
        &tmp,
        &bad,
        MANIFEST,
        |_| Some(serde_json::to_vec(&m2).unwrap()),
        &[],
    );
    let p = verify(&bad).unwrap().problems;
    assert!(
        p.iter()
            .any(|x| matches!(x, Problem::Export(s) if s.contains("another manifest"))),
        "{p:?}"
    );
    assert!(
        p.iter().any(
            |x| matches!(x, Problem::Recording { problem, .. } if problem.contains("audio changed"))
        ),
        "{p:?}"
    );

    // An audit entry edited.
    let p = problems(
        AUDIT,
        &|b| {
            Some(
                String::from_utf8(b)
                    .unwrap()
                    .replace("\"ivy\"", "\"eve\"")
                    .into_bytes(),
            )
        },
        &[],
    );
    assert!(
        p.contains(&Problem::AuditEntry {
            seq: 1,
            problem: "its hash does not match its contents (edited)"
        }),
        "{p:?}"
    );

    // Not a ZIP at all.
    std::fs::write(&bad, b"hello").unwrap();
    let p = verify(&bad).unwrap().problems;
    assert!(
        matches!(&p[..], [Problem::Unreadable(s)] if s.contains("not a ZIP")),
        "{p:?}"
    );
}

fn zip_entry(path: &std::path::Path, name: &str) -> Vec<u8> {
    let mut a = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut b = Vec::new();
    a.by_name(name).unwrap().read_to_end(&mut b).unwrap();
    b
}

#[test]
fn a_truncated_recording_verifies_as_truncated_and_its_ending_cannot_be_restated() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, file) = recording(false);
    let out = write(dir.path(), &rec, &file, false);
    let v = verify(&out).unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert_eq!(v.manifest.unwrap().recordings[0].ending, Ending::Truncated);

    // The same truncated container claimed complete: named, whatever the hashes say.
    let dir2 = tempfile::tempdir().unwrap();
    let out2 = write(dir2.path(), &rec, &file, true);
    let p = verify(&out2).unwrap().problems;
    assert!(
        p.iter().any(|x| matches!(x, Problem::Recording { problem, .. } if problem.contains("the manifest says complete"))),
        "{p:?}"
    );
}

#[test]
fn an_existing_file_is_never_overwritten_and_a_dropped_writer_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b.zip");
    std::fs::write(&out, b"evidence").unwrap();
    assert!(matches!(
        BundleWriter::create(&out),
        Err(bundle::BundleError::Exists(_))
    ));
    assert_eq!(std::fs::read(&out).unwrap(), b"evidence");

    let out2 = dir.path().join("c.zip");
    let mut w = BundleWriter::create(&out2).unwrap();
    w.add_bytes(README, b"x").unwrap();
    drop(w);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["b.zip".to_string()]);

    // Published, then someone else's file appears at the name: the link refuses.
    let mut w = BundleWriter::create(&out2).unwrap();
    w.add_bytes(README, b"x").unwrap();
    std::fs::write(&out2, b"theirs").unwrap();
    assert!(matches!(w.publish(), Err(bundle::BundleError::Exists(_))));
    assert_eq!(std::fs::read(&out2).unwrap(), b"theirs");
}

#[test]
fn manifest_checks_name_what_is_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, file) = recording(true);
    let out = write(dir.path(), &rec, &file, true);
    let m: Manifest = serde_json::from_slice(&zip_entry(&out, MANIFEST)).unwrap();
    assert!(check_manifest(&m).is_empty());

    let mut bad = m.clone();
    bad.format = "other".into();
    bad.case = "a b".into();
    bad.recordings[0].data_key = "zz".into();
    bad.recordings[0].wav = "recordings/other.wav".into();
    bad.files.push(bad.files[0].clone());
    let p = check_manifest(&bad);
    assert!(
        p.contains(&Problem::Format {
            file: MANIFEST,
            found: "other".into()
        }),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|x| matches!(x, Problem::Manifest(s) if s.contains("case"))),
        "{p:?}"
    );
    assert!(
        p.iter().any(
            |x| matches!(x, Problem::Recording { problem, .. } if problem.contains("data_key"))
        ),
        "{p:?}"
    );
    assert!(p.iter().any(|x| matches!(x, Problem::Recording { problem, .. } if problem.contains("follow the recording id"))), "{p:?}");
    assert!(
        p.iter().any(|x| matches!(x, Problem::DuplicateName(_))),
        "{p:?}"
    );

    for (name, ok) in [
        ("recordings/rec-1.wav", true),
        ("README.txt", true),
        ("../x", false),
        ("/etc/passwd", false),
        ("a//b", false),
        (".hidden", false),
        ("a\\b", false),
        ("", false),
    ] {
        assert_eq!(safe_name(name), ok, "{name}");
    }
}

#[test]
fn the_export_entry_must_name_this_case_these_recordings_and_be_last() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, file) = recording(true);
    let out = write(dir.path(), &rec, &file, true);
    let mb = zip_entry(&out, MANIFEST);
    let m: Manifest = serde_json::from_slice(&mb).unwrap();
    let ex: AuditExcerpt = serde_json::from_slice(&zip_entry(&out, AUDIT)).unwrap();
    let sha = sha256_hex(&mb);
    let (facts, p) = check_audit(&m, &sha, &ex);
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(facts.unwrap().actor, "ivy");

    // Another case in the manifest.
    let mut m2 = m.clone();
    m2.case = "INQ-2".into();
    let (_, p) = check_audit(&m2, &sha, &ex);
    assert!(
        p.iter()
            .any(|x| matches!(x, Problem::Export(s) if s.contains("not for case"))),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|x| matches!(x, Problem::Export(s) if s.contains("targets"))),
        "{p:?}"
    );
    // Someone else named as exporter.
    let mut m3 = m.clone();
    m3.exported_by.actor = "eve".into();
    let (_, p) = check_audit(&m3, &sha, &ex);
    assert!(
        p.iter()
            .any(|x| matches!(x, Problem::Export(s) if s.contains("someone else"))),
        "{p:?}"
    );
    // The export entry dropped: the last entry is the tag.
    let mut ex2 = ex.clone();
    ex2.entries.pop();
    let (facts, p) = check_audit(&m, &sha, &ex2);
    assert!(facts.is_none());
    assert!(
        p.iter()
            .any(|x| matches!(x, Problem::Export(s) if s.contains("not \"export.create\""))),
        "{p:?}"
    );
    // An entry between the two removed and re-linked by hand: the link check names it.
    let mut ex3 = ex.clone();
    ex3.entries[1].prev_hash = GENESIS_HASH.into();
    ex3.entries[1].hash = ex3.entries[1].compute_hash(GENESIS_HASH).unwrap();
    let (_, p) = check_audit(&m, &sha, &ex3);
    assert!(
        p.contains(&Problem::AuditEntry {
            seq: 2,
            problem: "does not follow the entry before it (chain broken)"
        }),
        "{p:?}"
    );
}
