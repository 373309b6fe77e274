//! Retention end to end with the real binary on a real recording (built with the library, as
//! tests/cli.rs does): tag, hold, refused erasure, release, the clock advanced
//! (`CALLGATE_NOW_MS`), sweep; then the file, the key row and a copy of the file taken
//! beforehand are all useless, the tombstone and audit entries exist, `audit verify` passes,
//! and an edited audit row makes it fail naming that entry. Also subject access, erasure,
//! restriction and key retirement.
#![allow(dead_code)]

use std::process::{Command, Output};

use callgate::ids::RecordingId;

use callgate::recording::keys::Keyring;
use callgate::store::Store;

#[path = "support/recording_fixture.rs"]
mod recording_fixture;
use recording_fixture::*;

#[track_caller]
fn ok(o: &Output) -> String {
    assert_eq!(code(o), 0, "stdout: {} stderr: {}", stdout(o), stderr(o));
    stdout(o)
}

/// A failure: the exit code and one line on stderr containing every needle.
#[track_caller]
fn fails(o: &Output, exit: i32, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(code(o), exit, "stdout: {} stderr: {err}", stdout(o));
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("callgate: error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in {err:?}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

const DAY: i64 = 86_400_000;

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

impl Fixture {
    fn run_at(&self, now_ms: i64, args: &[&str]) -> Output {
        let mut all = vec!["--config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        Command::new(env!("CARGO_BIN_EXE_callgate"))
            .args(&all)
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .env("CALLGATE_NOW_MS", now_ms.to_string())
            .output()
            .unwrap()
    }
    fn audit_json(&self) -> Vec<serde_json::Value> {
        let o = self.run(&["--role", "dpo", "audit", "list", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
        v.as_array().unwrap().clone()
    }
}

/// `call_id`'s row in `calls list --json`: it must exist, and hold neither number nor Call-ID.
#[track_caller]
fn assert_row_redacted(f: &Fixture, call_id: &str) {
    let calls: serde_json::Value =
        serde_json::from_str(&ok(&f.run(&["calls", "list", "--json"]))).unwrap();
    let row = calls
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["call_id"] == call_id)
        .expect("the call row stays");
    for field in ["from_number", "to_number", "dialled", "sip_call_id"] {
        assert_eq!(row[field], "redacted", "{field}: {row}");
    }
    assert!(row["started_at_ms"].as_i64().is_some(), "{row}");
}

fn actions(entries: &[serde_json::Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn tag_hold_release_sweep_then_the_audio_is_gone_and_the_log_is_tamper_evident() {
    let f = fixture();
    // The documented example's rules (config/callgate.toml), with the grace spelled out.
    write_config(
        f.dir.path(),
        "[retention]\ndefault = \"183d\"\ngrace = \"30d\"\n\
         tags = { training = \"365d\", complaint = \"2y\", abusive = \"until-released\" }\n",
    );
    let rec = f.rec_id.as_str();
    let backup = f.path("backup.cgrec");
    std::fs::copy(&f.rec_file, &backup).unwrap();

    // Tags: training by a supervisor (by call id), abusive only by an investigator.
    let out = ok(&f.run(&[
        "--actor",
        "sam",
        "--role",
        "supervisor",
        "tag",
        "add",
        f.call_id.as_str(),
        "training",
        "--note",
        "good greeting",
    ]));
    assert!(out.contains("tag:training:365d"), "{out}");
    fails(
        &f.run(&["--role", "supervisor", "tag", "add", rec, "abusive"]),
        2,
        &["role supervisor may not"],
    );
    fails(
        &f.run(&["--role", "investigator", "tag", "add", rec, "spam"]),
        2,
        &["unknown tag `spam`"],
    );
    let out = ok(&f.run(&[
        "--actor",
        "ivy",
        "--role",
        "investigator",
        "tag",
        "add",
        rec,
        "abusive",
        "--note",
        "threats to staff",
    ]));
    assert!(
        out.contains("never") && out.contains("tag-open:abusive"),
        "{out}"
    );

    // Legal hold; erasure refused naming the case; the audio still plays.
    let out = ok(&f.run(&[
        "--actor",
        "ivy",
        "--role",
        "investigator",
        "hold",
        "create",
        "--case",
        "INQ-2005-14",
        "--reason",
        "Inquiries Act 2005 s.21 notice",
        rec,
    ]));
    assert!(out.contains("INQ-2005-14 created"), "{out}");
    fails(
        &f.run(&[
            "--actor",
            "dee",
            "--role",
            "dpo",
            "erase",
            rec,
            "--reason",
            "subject request",
        ]),
        1,
        &["INQ-2005-14", rec, "legal hold"],
    );
    fails(
        &f.run(&["erase", rec, "--reason", "x"]),
        2,
        &["role admin may not"],
    );
    let far = wall_ms() + 10_000 * DAY;
    let out = ok(&f.run_at(far, &["sweep"]));
    assert!(out.contains("0 deleted"), "{out}");
    assert!(f.rec_file.exists());

    // Restriction: a supervisor may not play it, the DPO may; admins never play.
    ok(&f.run(&[
        "--actor",
        "dee",
        "--role",
        "dpo",
        "restrict",
        rec,
        "--reason",
        "art. 18 request",
    ]));
    let wav = f.path("r.wav");
    fails(&f.decrypt(rec, &wav), 1, &["restricted", rec]);
    assert!(!wav.exists());
    ok(&f.run(&[
        "--role",
        "dpo",
        "recording",
        "decrypt",
        rec,
        "--out",
        wav.to_str().unwrap(),
    ]));
    assert!(wav.exists());
    fails(
        &f.run(&[
            "--role",
            "admin",
            "recording",
            "decrypt",
            rec,
            "--out",
            wav.to_str().unwrap(),
        ]),
        2,
        &["role admin may not play"],
    );
    ok(&f.run(&["--role", "dpo", "unrestrict", rec]));

    // Release the hold, then close the investigation: grace runs from now.
    let out = ok(&f.run(&[
        "--actor",
        "ivy",
        "--role",
        "investigator",
        "hold",
        "release",
        "--case",
        "INQ-2005-14",
        "--reason",
        "inquiry closed",
    ]));
    assert!(out.contains("released"), "{out}");
    let removed_at = wall_ms();
    let out = ok(&f.run(&[
        "--actor",
        "ivy",
        "--role",
        "investigator",
        "tag",
        "remove",
        rec,
        "abusive",
        "--reason",
        "investigation complete",
    ]));
    assert!(out.contains("tag-released:abusive+grace:30d"), "{out}");

    // Not yet: now, and one day before the grace ends.
    let out = ok(&f.run(&["sweep"]));
    assert!(out.contains("0 deleted"), "{out}");
    let out = ok(&f.run_at(removed_at + 29 * DAY, &["sweep"]));
    assert!(out.contains("0 deleted"), "{out}");
    assert!(f.rec_file.exists());
    let out = ok(&f.run_at(removed_at + 31 * DAY, &["sweep", "--dry-run"]));
    assert!(out.contains(&format!("would delete {rec}")), "{out}");
    assert!(f.rec_file.exists(), "dry run deleted the file");

    // The clock moves past the grace: swept.
    let out = ok(&f.run_at(removed_at + 31 * DAY, &["--actor", "cron", "sweep"]));
    assert!(
        out.contains(&format!("deleted {rec}")) && out.contains("1 deleted"),
        "{out}"
    );
    assert!(!f.rec_file.exists(), "file still there");
    let (key, tomb, call) = rt().block_on(async {
        let store = Store::connect(&f.db_url).await.unwrap();
        let k = store.get_recording_key(&f.rec_id).await.unwrap();
        let t = store.get_tombstone(&f.rec_id).await.unwrap();
        let c = store.get_call(&f.call_id).await.unwrap().unwrap();
        store.close().await;
        (k, t, c)
    });
    assert!(key.is_none(), "wrapped key row survived");
    let tomb = tomb.expect("tombstone");
    assert_eq!(tomb.rule, "tag-released:abusive+grace:30d");
    assert_eq!(tomb.created_at_ms, 1_700_000_000_000);
    assert_eq!(call.recording_state, "deleted");
    assert!(call.key_id.is_none() && call.recording_location.is_none());

    // The copy taken beforehand, put back: no key, no audio.
    std::fs::copy(&backup, &f.rec_file).unwrap();
    fails(&f.decrypt(rec, &wav), 1, &["crypto-shredded"]);
    fails(
        &f.run(&["recording", "verify", rec]),
        1,
        &["crypto-shredded"],
    );
    // The header of the copy names the recording, but no wrapped data key for it exists
    // anywhere any more (the key file holds only KEKs): nothing can open it.
    let bytes = std::fs::read(&backup).unwrap();
    let header = callgate::recording::reader::read_header(&bytes).unwrap();
    assert_eq!(header.recording_id, f.rec_id);

    // The audit log has every step, and verifies.
    let entries = f.audit_json();
    let acts = actions(&entries);
    for want in [
        "tag.add",
        "hold.create",
        "recording.restrict",
        "recording.decrypt",
        "recording.unrestrict",
        "hold.release",
        "tag.remove",
        "recording.sweep-delete",
    ] {
        assert!(acts.iter().any(|a| a == want), "{want} not in {acts:?}");
    }
    assert_eq!(acts.iter().filter(|a| *a == "tag.add").count(), 2);
    let sweep_entry = entries
        .iter()
        .find(|e| e["action"] == "recording.sweep-delete")
        .unwrap();
    assert!(sweep_entry["targets"].as_str().unwrap().contains(rec));
    assert_eq!(sweep_entry["actor"], "cron");
    let hold = entries
        .iter()
        .find(|e| e["action"] == "hold.create")
        .unwrap();
    assert_eq!(hold["actor"], "ivy");
    assert_eq!(hold["role"], "investigator");
    assert_eq!(hold["reason"], "Inquiries Act 2005 s.21 notice");
    let out = ok(&f.run(&["audit", "verify"]));
    assert!(
        out.contains(&format!("intact: {} entries", entries.len())),
        "{out}"
    );
    // Reading the log needs a role that may.
    fails(
        &f.run(&["--role", "supervisor", "audit", "list"]),
        2,
        &["may not read the audit log"],
    );

    // Edit one row in the database: verify fails naming it.
    let target_seq = entries
        .iter()
        .find(|e| e["action"] == "hold.create")
        .unwrap()["seq"]
        .as_i64()
        .unwrap();
    rt().block_on(async {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&f.db_url).await.unwrap();
        // The table refuses edits...
        assert!(
            sqlx::query("UPDATE audit_log SET reason = 'nothing to see' WHERE seq = $1")
                .bind(target_seq)
                .execute(&pool)
                .await
                .is_err()
        );
        // ...unless someone with database access removes the guard: the chain still tells.
        sqlx::query("DROP TRIGGER audit_log_no_update")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("UPDATE audit_log SET reason = 'nothing to see' WHERE seq = $1")
            .bind(target_seq)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    });
    fails(
        &f.run(&["audit", "verify"]),
        1,
        &[&format!("audit entry {target_seq}:"), "modified"],
    );
}

#[test]
fn subject_access_then_erasure() {
    let f = fixture();
    let rec = f.rec_id.as_str();
    let out_dir = f.path("sar-out");
    fails(
        &f.run(&["--role", "supervisor", "sar", "--number", FROM]),
        2,
        &["data protection officer"],
    );
    let o = f.run(&[
        "--actor",
        "dee",
        "--role",
        "dpo",
        "sar",
        "--number",
        "07700 900123",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let out = ok(&o);
    assert!(out.contains("1 call(s), 1 recording(s)"), "{out}");
    assert!(stderr(&o).contains("[1/1]"), "no progress: {}", stderr(&o));
    let wav = out_dir.join(format!("{}.wav", f.call_id));
    let (l, r) = {
        let mut rd = hound::WavReader::open(&wav).unwrap();
        assert_eq!((rd.spec().channels, rd.spec().sample_rate), (2, 8000));
        let s: Vec<i16> = rd.samples::<i16>().map(|x| x.unwrap()).collect();
        (s.len() / 2, s.len())
    };
    assert!(l >= (SECS * 8000) as usize && r > 0);
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out_dir.join(format!("{}.json", f.call_id))).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["call"]["from_number"], FROM);
    assert_eq!(meta["recording"]["recording_id"], rec);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["calls"].as_array().unwrap().len(), 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out_dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        let mode = std::fs::metadata(&wav).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }
    // An existing non-empty directory is refused.
    fails(
        &f.run(&[
            "--role",
            "dpo",
            "sar",
            "--number",
            FROM,
            "--out",
            out_dir.to_str().unwrap(),
        ]),
        2,
        &["not empty"],
    );
    // Another number: nothing.
    let other = f.path("sar-2");
    let out = ok(&f.run(&[
        "--role",
        "dpo",
        "sar",
        "--number",
        "+44 20 7946 0000",
        "--out",
        other.to_str().unwrap(),
    ]));
    assert!(out.contains("0 call(s)"), "{out}");

    // Erasure.
    let out = ok(&f.run(&[
        "--actor",
        "dee",
        "--role",
        "dpo",
        "erase",
        f.call_id.as_str(),
        "--reason",
        "art. 17 request 42",
    ]));
    assert!(out.contains("erased"), "{out}");
    assert!(!f.rec_file.exists());
    fails(&f.decrypt(rec, &f.path("x.wav")), 1, &["crypto-shredded"]);
    fails(
        &f.run(&["--role", "dpo", "erase", rec, "--reason", "again"]),
        1,
        &["has been deleted"],
    );
    let third = f.path("sar-3");
    let o = f.run(&[
        "--role",
        "dpo",
        "sar",
        "--number",
        FROM,
        "--out",
        third.to_str().unwrap(),
    ]);
    // The erased recording's call row lost its numbers with the audio: not found any more.
    assert!(ok(&o).contains("0 call(s), 0 recording(s)"), "{}", stdout(&o));
    assert_row_redacted(&f, f.call_id.as_str());

    let entries = f.audit_json();
    let acts = actions(&entries);
    assert_eq!(
        acts.iter().filter(|a| *a == "sar.export").count(),
        3,
        "{acts:?}"
    );
    assert_eq!(
        acts.iter().filter(|a| *a == "recording.erase").count(),
        1,
        "{acts:?}"
    );
    let erase = entries
        .iter()
        .find(|e| e["action"] == "recording.erase")
        .unwrap();
    assert_eq!(erase["reason"], "art. 17 request 42");
    // No full phone number in the audit log.
    let text = serde_json::to_string(&entries).unwrap();
    assert!(!text.contains("900123"), "{text}");
    ok(&f.run(&["audit", "verify"]));
}

#[test]
fn keys_are_audited_and_retired_only_when_unused() {
    let f = fixture();
    let old = Keyring::load(&f.kek_file).unwrap().active().id().clone();
    fails(
        &f.run(&["keys", "retire", old.as_str()]),
        2,
        &["active key"],
    );
    ok(&f.run(&["--actor", "ops", "keys", "rotate"]));
    let new = Keyring::load(&f.kek_file).unwrap().active().id().clone();
    fails(
        &f.run(&["keys", "retire", "kek-nope"]),
        2,
        &["not in the key file"],
    );
    // A key row still wrapped by the old key (a gateway not restarted since the rotation).
    let straggler = RecordingId::new_random();
    rt().block_on(async {
        let store = Store::connect(&f.db_url).await.unwrap();
        store
            .put_recording_key(&straggler, &old, &[7u8; 40])
            .await
            .unwrap();
        store.close().await;
    });
    fails(
        &f.run(&["keys", "retire", old.as_str()]),
        1,
        &[old.as_str(), "still wraps 1"],
    );
    rt().block_on(async {
        let store = Store::connect(&f.db_url).await.unwrap();
        store.delete_recording_key(&straggler).await.unwrap();
        store.close().await;
    });
    let out = ok(&f.run(&["--actor", "ops", "keys", "retire", old.as_str()]));
    assert!(out.contains("retired"), "{out}");
    let ring = Keyring::load(&f.kek_file).unwrap();
    assert!(ring.get(&old).is_none());
    assert_eq!(ring.active().id(), &new);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&f.kek_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    // Still decrypts (re-wrapped under the new key).
    let wav = f.path("k.wav");
    ok(&f.decrypt(f.rec_id.as_str(), &wav));
    let acts = actions(&f.audit_json());
    for want in ["key.rotate", "key.retire", "recording.decrypt"] {
        assert!(acts.iter().any(|a| a == want), "{want} not in {acts:?}");
    }
    ok(&f.run(&["audit", "verify"]));
}

/// A customer who declined training use at the consent prompt: `tag add … training` fails with
/// one line naming the consent (by call id and by recording id, whatever the role), nothing is
/// stored or audited, other tags still go on; once the call says yes, training is allowed.
#[test]
fn declined_training_consent_refuses_the_training_tag() {
    let f = fixture();
    write_config(
        f.dir.path(),
        "[retention]\ntags = { training = \"365d\", complaint = \"2y\" }\n",
    );
    let rec = f.rec_id.as_str();
    // 2026-11-22T10:00:00Z
    let sha = f.set_consent(Some(false), "default", 1_795_341_600_000);
    let short = format!("consent prompt sha256 {}…", &sha[..8]);
    let needles = [
        "did not consent to training use",
        short.as_str(),
        "choice by default at 2026-11-22T10:00:00Z",
        "the training tag cannot be added",
        rec,
    ];
    for (role, id) in [("supervisor", f.call_id.as_str()), ("dpo", rec)] {
        let o = f.run(&["--role", role, "tag", "add", id, "training"]);
        fails(&o, 2, &needles);
        assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    }
    let out = ok(&f.run(&["--role", "supervisor", "tag", "add", rec, "complaint"]));
    assert!(out.contains("tagged complaint"), "{out}");
    let show = ok(&f.run(&["retention", "show", rec]));
    assert!(show.contains("tag complaint"), "{show}");
    assert!(!show.contains("tag training"), "{show}");
    // Refusals are not audit entries (only what happened is).
    assert_eq!(actions(&f.audit_json()), ["tag.add"]);

    // The consent is read at each attempt: a call that says yes may be tagged.
    f.set_consent(Some(true), "keypad", 1_795_341_600_000);
    let out = ok(&f.run(&["--role", "supervisor", "tag", "add", rec, "training"]));
    assert!(out.contains("tagged training"), "{out}");
    ok(&f.run(&["audit", "verify"]));
}

/// `erase CALL` for a call that was never recorded redacts its row at once (dpo only, with a
/// reason, audited without the number); a second erase is refused.
#[test]
fn a_call_without_a_recording_is_erased_by_its_call_id() {
    let f = fixture();
    let declined = "call-declined-1";
    rt().block_on(async {
        let store = Store::connect(&f.db_url).await.unwrap();
        let c = callgate::store::CallRecord::new(
            callgate::ids::CallId::from_string(declined),
            "abc@192.0.2.9",
            callgate::pii::PhoneNumber::new("+447700900555"),
            callgate::pii::PhoneNumber::new("+441632960034"),
            callgate::pii::PhoneNumber::new("2001"),
            "*",
            "sip:q@pbx",
            1_700_000_000_000,
        );
        store.upsert_call(&c).await.unwrap();
    });
    fails(
        &f.run(&["--role", "supervisor", "erase", declined, "--reason", "x"]),
        2,
        &["may not"],
    );
    let out = ok(&f.run(&[
        "--actor", "dee", "--role", "dpo", "erase", declined, "--reason", "art. 17 request 7",
    ]));
    assert!(out.contains("erased (no recording"), "{out}");
    assert_row_redacted(&f, declined);
    fails(
        &f.run(&["--role", "dpo", "erase", declined, "--reason", "again"]),
        1,
        &["already been erased"],
    );
    let entries = f.audit_json();
    let e = entries
        .iter()
        .find(|e| e["action"] == "call.erase")
        .expect("audited");
    assert_eq!(e["reason"], "art. 17 request 7");
    assert!(!serde_json::to_string(&entries).unwrap().contains("900555"));
    ok(&f.run(&["audit", "verify"]));
}
