//! Retention, holds, erasure, sweeper and audit chain against a real database (SQLite and,
//! with `CALLGATE_TEST_POSTGRES_URL`, PostgreSQL): run through `both_dialects!` in `tests.rs`.

use std::path::Path;

use super::Ctx;
use crate::audit::{Actor, ChainVerifier, NewEntry, Role, action};
use crate::config::{RetentionConfig, TagRetention};
use crate::ids::{CallId, KeyId, RecordingId};
use crate::pii::PhoneNumber;
use crate::recording::storage::{DirStorage, Storage};
use crate::retention::RetentionError;
use crate::retention::policy::Policy;
use crate::retention::service::{self, TagAdded};
use crate::retention::sweeper::{SweepOptions, sweep_once};
use crate::store::{CallRecord, RecordingRow, Store, consent_state, recording_state};

const DAY: i64 = 86_400_000;
const T0: i64 = 1_700_000_000_000;

fn cfg() -> RetentionConfig {
    let mut c = RetentionConfig::default();
    c.tags.insert(
        "training".into(),
        TagRetention::Period(std::time::Duration::from_secs(365 * 86_400)),
    );
    c
}

/// The row of call `n` before any recording (as for a call declined, unanswered or failed):
/// every call in this suite has the same customer numbers.
fn call_row(n: usize, started: i64) -> CallRecord {
    CallRecord::new(
        CallId::from_string(format!("call-{n:06}")),
        format!("sip-{n}@198.51.100.7"),
        PhoneNumber::new("+447700900123"),
        PhoneNumber::new("+441632960034"),
        PhoneNumber::new("2001"),
        "*",
        "sip:q@pbx",
        started,
    )
}

/// A recording row, its call, a key row and a small file.
async fn make_recording(store: &Store, dir: &Path, n: usize, created: i64) -> RecordingId {
    let rec = RecordingId::from_string(format!("rec-{n:06}"));
    let call = CallId::from_string(format!("call-{n:06}"));
    store
        .put_recording_key(&rec, &KeyId::from_string("kek-a"), &[n as u8; 40])
        .await
        .unwrap();
    store
        .upsert_recording(&RecordingRow {
            recording_id: rec.clone(),
            call_id: call.clone(),
            location: format!("{}/{rec}.cgrec", dir.display()),
            state: recording_state::OK.into(),
            bytes: 4,
            sha256: None,
            created_at_ms: created,
            finished_at_ms: Some(created + 1000),
        })
        .await
        .unwrap();
    let mut c = call_row(n, created);
    c.recording_id = Some(rec.clone());
    c.recording_state = recording_state::OK.into();
    store.upsert_call(&c).await.unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("{rec}.cgrec")), b"CGRx").unwrap();
    rec
}

/// The call of recording `n` (see [`make_recording`]) keeps its times and route but no number
/// and no SIP Call-ID, and a subject access search by its numbers no longer finds it.
async fn assert_call_redacted(store: &Store, n: usize) {
    let id = CallId::from_string(format!("call-{n:06}"));
    let call = store.get_call(&id).await.unwrap().unwrap();
    for (field, v) in [
        ("from_number", call.from_number.expose()),
        ("to_number", call.to_number.expose()),
        ("dialled", call.dialled.expose()),
        ("sip_call_id", call.sip_call_id.as_str()),
    ] {
        assert_eq!(v, crate::store::REDACTED, "{field} of call {n}");
    }
    assert_eq!(call.route, "*");
    assert!(call.started_at_ms > 0);
    for number in ["+447700900123", "+441632960034"] {
        let v = service::number_variants(number).unwrap();
        let found = store.calls_by_numbers(&v).await.unwrap();
        assert!(
            found.iter().all(|c| c.call_id != id),
            "call {n} found by {number}"
        );
    }
}

async fn verify_audit(store: &Store) -> i64 {
    let (seq, hash) = store.audit_head().await.unwrap();
    let entries = store.audit_entries(0, i64::MAX).await.unwrap();
    let mut v = ChainVerifier::default();
    for e in &entries {
        v.push(e).unwrap_or_else(|err| panic!("{err}"));
    }
    v.finish(seq, &hash).unwrap();
    seq
}

async fn count_action(store: &Store, act: &str) -> usize {
    store
        .audit_entries(0, i64::MAX)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.action == act)
        .count()
}

pub(super) async fn retention_lifecycle(ctx: &Ctx) {
    let store = &ctx.store;
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::Dir(DirStorage::new(dir.path()));
    let cfg = cfg();
    let rec = make_recording(store, dir.path(), 1, T0).await;
    let sup = Actor::new("sam", Role::Supervisor);
    let inv = Actor::new("ivy", Role::Investigator);
    let dpo = Actor::new("dee", Role::Dpo);
    let now = T0 + DAY;

    // Tag: expiry recomputed and stored.
    let TagAdded::Added(d) =
        service::tag_add(store, &cfg, &sup, &rec, "training", Some("good call"), now)
            .await
            .unwrap()
    else {
        panic!("not added")
    };
    assert_eq!(d.expires_at_ms, Some(T0 + 365 * DAY));
    let row = store.get_retention(&rec).await.unwrap().unwrap();
    assert_eq!(row.expires_at_ms, Some(T0 + 365 * DAY));
    assert_eq!(row.retention_rule.as_deref(), Some("tag:training:365d"));
    // Idempotent second add; sensitive tag refused to a supervisor; unknown tag refused.
    assert!(matches!(
        service::tag_add(store, &cfg, &sup, &rec, "training", None, now)
            .await
            .unwrap(),
        TagAdded::AlreadyTagged(_)
    ));
    assert!(matches!(
        service::tag_add(store, &cfg, &sup, &rec, "abusive", None, now).await,
        Err(RetentionError::Forbidden { .. })
    ));
    assert!(matches!(
        service::tag_add(store, &cfg, &inv, &rec, "spam", None, now).await,
        Err(RetentionError::UnknownTag { .. })
    ));
    service::tag_add(store, &cfg, &inv, &rec, "abusive", None, now)
        .await
        .unwrap();
    assert_eq!(
        store
            .get_retention(&rec)
            .await
            .unwrap()
            .unwrap()
            .expires_at_ms,
        None
    );

    // Hold: erasure refused naming the case; release; tag removal starts the grace.
    let h = service::hold_create(
        store,
        &cfg,
        &inv,
        "INQ-7",
        "Inquiries Act 2005 s.21",
        std::slice::from_ref(&rec),
        now,
    )
    .await
    .unwrap();
    assert!(h.new_case && h.attached == vec![rec.clone()]);
    let row = store.get_retention(&rec).await.unwrap().unwrap();
    assert!(row.held);
    assert_eq!(row.retention_rule.as_deref(), Some("hold:INQ-7"));
    match service::erase(store, &storage, &cfg, &dpo, &rec, "subject request", now).await {
        Err(RetentionError::Held { case_ref, .. }) => assert_eq!(case_ref, "INQ-7"),
        other => panic!("erase of a held recording: {other:?}"),
    }
    assert!(store.get_recording_key(&rec).await.unwrap().is_some());
    // Sweeping far in the future deletes nothing held.
    let policy = Policy::from_config(&cfg);
    let sys = Actor::new("sweeper@test", Role::System);
    let r = sweep_once(
        store,
        &storage,
        &policy,
        &sys,
        &SweepOptions::new("n1"),
        T0 + 9999 * DAY,
        None,
    )
    .await
    .unwrap();
    assert!(r.deleted.is_empty());

    let released = T0 + 400 * DAY;
    service::hold_release(store, &cfg, &inv, "INQ-7", Some("inquiry closed"), released)
        .await
        .unwrap();
    assert!(matches!(
        service::hold_release(store, &cfg, &inv, "INQ-7", None, released).await,
        Err(RetentionError::HoldReleased(_))
    ));
    assert!(matches!(
        service::hold_create(
            store,
            &cfg,
            &inv,
            "INQ-7",
            "again",
            std::slice::from_ref(&rec),
            released
        )
        .await,
        Err(RetentionError::HoldReleased(_))
    ));
    // Still under the open abusive tag.
    assert_eq!(
        store
            .get_retention(&rec)
            .await
            .unwrap()
            .unwrap()
            .expires_at_ms,
        None
    );
    let d = service::tag_remove(
        store,
        &cfg,
        &inv,
        &rec,
        "abusive",
        Some("done"),
        released + DAY,
    )
    .await
    .unwrap();
    // Release of the hold (400 d + 30 d grace) vs tag removal (401 d + 30 d): the later wins.
    assert_eq!(d.expires_at_ms, Some(T0 + 431 * DAY));
    assert_eq!(d.rule.to_string(), "tag-released:abusive+grace:30d");

    // Clock edges through the store: 1 ms before nothing, exactly at expiry it goes.
    let exp = T0 + 431 * DAY;
    let r = sweep_once(
        store,
        &storage,
        &policy,
        &sys,
        &SweepOptions::new("n1"),
        exp - 1,
        None,
    )
    .await
    .unwrap();
    assert!(r.deleted.is_empty());
    assert_eq!(r.next_expiry_ms, Some(exp));
    let r = sweep_once(
        store,
        &storage,
        &policy,
        &sys,
        &SweepOptions::new("n1"),
        exp,
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.deleted.len(), 1);
    assert!(r.deleted[0].finished);
    assert!(store.get_recording_key(&rec).await.unwrap().is_none());
    assert!(!dir.path().join(format!("{rec}.cgrec")).exists());
    let t = store.get_tombstone(&rec).await.unwrap().unwrap();
    assert_eq!((t.created_at_ms, t.expired_at_ms), (T0, Some(exp)));
    assert_eq!(t.rule, "tag-released:abusive+grace:30d");
    let call = store
        .get_call(&CallId::from_string("call-000001"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(call.recording_state, "deleted");
    assert_eq!(call.key_id, None);
    assert_eq!(call.recording_location, None);
    assert_call_redacted(store, 1).await;
    // Deleted: no more tags, no erasure.
    assert!(matches!(
        service::tag_add(store, &cfg, &sup, &rec, "complaint", None, exp).await,
        Err(RetentionError::Deleted(_))
    ));
    assert!(matches!(
        service::erase(store, &storage, &cfg, &dpo, &rec, "again", exp).await,
        Err(RetentionError::Deleted(_))
    ));

    // Every change is in the chain, which verifies.
    for (act, n) in [
        (action::TAG_ADD, 2),
        (action::HOLD_CREATE, 1),
        (action::HOLD_RELEASE, 1),
        (action::TAG_REMOVE, 1),
        (action::SWEEP_DELETE, 1),
    ] {
        assert_eq!(count_action(store, act).await, n, "{act}");
    }
    assert_eq!(verify_audit(store).await, 6);
}

pub(super) async fn erasure_and_restriction(ctx: &Ctx) {
    let store = &ctx.store;
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::Dir(DirStorage::new(dir.path()));
    let cfg = cfg();
    let rec = make_recording(store, dir.path(), 2, T0).await;
    // Another call from the same customer, not erased.
    make_recording(store, dir.path(), 3, T0).await;
    let dpo = Actor::new("dee", Role::Dpo);
    let sup = Actor::new("sam", Role::Supervisor);
    let admin = Actor::new("ada", Role::Admin);

    assert!(matches!(
        service::authorize_playback(store, &admin, &rec).await,
        Err(RetentionError::Forbidden { .. })
    ));
    service::authorize_playback(store, &sup, &rec)
        .await
        .unwrap();
    assert!(matches!(
        service::set_restricted(store, &sup, &rec, true, Some("x"), T0).await,
        Err(RetentionError::Forbidden { .. })
    ));
    service::set_restricted(store, &dpo, &rec, true, Some("art. 18 request"), T0)
        .await
        .unwrap();
    assert!(matches!(
        service::authorize_playback(store, &sup, &rec).await,
        Err(RetentionError::Restricted(_))
    ));
    service::authorize_playback(store, &dpo, &rec)
        .await
        .unwrap();
    service::set_restricted(store, &dpo, &rec, false, None, T0)
        .await
        .unwrap();
    service::authorize_playback(store, &sup, &rec)
        .await
        .unwrap();

    assert!(matches!(
        service::erase(store, &storage, &cfg, &admin, &rec, "x", T0).await,
        Err(RetentionError::Forbidden { .. })
    ));
    assert!(matches!(
        service::erase(store, &storage, &cfg, &dpo, &rec, "  ", T0).await,
        Err(RetentionError::BadText { .. })
    ));
    let t = service::erase(
        store,
        &storage,
        &cfg,
        &dpo,
        &rec,
        "subject request 42",
        T0 + 5,
    )
    .await
    .unwrap();
    assert_eq!(t.rule, "erasure");
    assert!(store.get_recording_key(&rec).await.unwrap().is_none());
    assert_call_redacted(store, 2).await;
    // Only the erased recording's call: the other one keeps its numbers.
    let v = service::number_variants("07700 900123").unwrap();
    let found = store.calls_by_numbers(&v).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].call_id.as_str(), "call-000003");
    assert!(!dir.path().join(format!("{rec}.cgrec")).exists());
    assert_eq!(store.get_tombstone(&rec).await.unwrap(), Some(t));
    assert_eq!(count_action(store, action::ERASE).await, 1);
    assert_eq!(count_action(store, action::RESTRICT).await, 1);
    assert_eq!(count_action(store, action::UNRESTRICT).await, 1);
    verify_audit(store).await;
}

/// Two nodes (two pools on one database) sweep the same expired recordings at once: each is
/// shredded exactly once, none is left.
pub(super) async fn two_sweepers_at_once(ctx: &Ctx) {
    const N: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::Dir(DirStorage::new(dir.path()));
    for i in 0..N {
        make_recording(&ctx.store, dir.path(), 1000 + i, T0 + i as i64).await;
    }
    let policy = Policy::from_config(&cfg());
    let now = T0 + 1000 * DAY;
    let mut tasks = Vec::new();
    for node in ["node-a", "node-b"] {
        let store = Store::connect(&ctx.url).await.unwrap();
        let storage = storage.clone();
        let policy = policy.clone();
        tasks.push(tokio::spawn(async move {
            let actor = Actor::new(format!("sweeper@{node}"), Role::System);
            let mut opts = SweepOptions::new(node);
            opts.batch = 25;
            let r = sweep_once(&store, &storage, &policy, &actor, &opts, now, None)
                .await
                .unwrap();
            store.close().await;
            r
        }));
    }
    let mut total = 0;
    let mut per_node = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.errors, 0);
        total += r.deleted.len();
        per_node.push(r.deleted.len());
    }
    assert_eq!(total, N, "per node {per_node:?}");
    assert_eq!(ctx.store.count_tombstones().await.unwrap(), N as i64);
    assert!(
        ctx.store
            .recordings_wrapped_by(&KeyId::from_string("kek-a"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let entries = ctx.store.audit_entries(0, i64::MAX).await.unwrap();
    let mut targets: Vec<&str> = entries
        .iter()
        .filter(|e| e.action == action::SWEEP_DELETE)
        .map(|e| e.targets.as_str())
        .collect();
    assert_eq!(targets.len(), N);
    targets.sort();
    targets.dedup();
    assert_eq!(targets.len(), N, "a recording was deleted twice");
    verify_audit(&ctx.store).await;
}

/// A node that died after shredding (state `deleting`, stale claim) is finished by the next pass.
pub(super) async fn stale_deletion_is_finished(ctx: &Ctx) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::Dir(DirStorage::new(dir.path()));
    let rec = make_recording(&ctx.store, dir.path(), 3, T0).await;
    sqlx::query(
        "UPDATE recordings SET state = 'deleting', sweeping_by = 'dead', sweeping_at_ms = $1, \
         retention_rule = 'default:183d', expires_at_ms = $2 WHERE recording_id = $3",
    )
    .bind(T0 + 200 * DAY)
    .bind(T0 + 183 * DAY)
    .bind(rec.as_str())
    .execute(&ctx.store.pool)
    .await
    .unwrap();
    ctx.store.delete_recording_key(&rec).await.unwrap();
    let policy = Policy::from_config(&cfg());
    let sys = Actor::new("sweeper@b", Role::System);
    // Not yet stale: left alone.
    let r = sweep_once(
        &ctx.store,
        &storage,
        &policy,
        &sys,
        &SweepOptions::new("b"),
        T0 + 200 * DAY + 1000,
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.recovered, 0);
    let r = sweep_once(
        &ctx.store,
        &storage,
        &policy,
        &sys,
        &SweepOptions::new("b"),
        T0 + 201 * DAY,
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.recovered, 1);
    assert!(!dir.path().join(format!("{rec}.cgrec")).exists());
    let t = ctx.store.get_tombstone(&rec).await.unwrap().unwrap();
    assert_eq!(t.rule, "default:183d");
}

/// Appends from many tasks on two pools serialise into one intact chain; the table refuses
/// edits.
pub(super) async fn audit_chain_concurrent_and_append_only(ctx: &Ctx) {
    let other = Store::connect(&ctx.url).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 {
            ctx.store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            let a = Actor::new(format!("user{i}"), Role::Dpo);
            for j in 0..10 {
                let t = T0 + j;
                store
                    .audit_append(
                        t,
                        &[NewEntry::new(t, &a, action::SAR).target(format!("call-{i}-{j}"))],
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    other.close().await;
    assert_eq!(verify_audit(&ctx.store).await, 80);
    let upd = sqlx::query("UPDATE audit_log SET reason = 'x' WHERE seq = 3")
        .execute(&ctx.store.pool)
        .await;
    assert!(upd.is_err(), "audit_log accepted an UPDATE");
    let del = sqlx::query("DELETE FROM audit_log WHERE seq = 80")
        .execute(&ctx.store.pool)
        .await;
    assert!(del.is_err(), "audit_log accepted a DELETE");
    assert_eq!(verify_audit(&ctx.store).await, 80);
}

pub(super) async fn calls_by_number_spellings(ctx: &Ctx) {
    let dir = tempfile::tempdir().unwrap();
    make_recording(&ctx.store, dir.path(), 4, T0).await;
    let v = service::number_variants("07700 900123").unwrap();
    let calls = ctx.store.calls_by_numbers(&v).await.unwrap();
    assert_eq!(calls.len(), 1);
    let v = service::number_variants("+44 1632 960034").unwrap();
    assert_eq!(ctx.store.calls_by_numbers(&v).await.unwrap().len(), 1);
    let v = service::number_variants("+44 1632 960035").unwrap();
    assert!(ctx.store.calls_by_numbers(&v).await.unwrap().is_empty());
}

/// Sets the consent columns of the call that made recording `n` (see [`make_recording`]).
async fn set_consent(store: &Store, n: usize, training: Option<bool>, source: &str, at: i64) {
    let call = CallId::from_string(format!("call-{n:06}"));
    let mut c = store.get_call(&call).await.unwrap().unwrap();
    c.consent_prompt_sha256 = Some(format!("{n:02x}").repeat(32));
    c.consent_state = Some(consent_state::DECIDED.into());
    c.consent_recording = Some(true);
    c.consent_training = training;
    c.consent_source = Some(source.into());
    c.consent_at_ms = Some(at);
    store.upsert_call(&c).await.unwrap();
}

/// `consent_of_recording`: found through the call row's `recording_id` or the recording row's
/// `call_id`; the booleans and the rest round-trip; `None` without a linked call.
pub(super) async fn consent_of_recording(ctx: &Ctx) {
    let store = &ctx.store;
    let dir = tempfile::tempdir().unwrap();
    let rec = make_recording(store, dir.path(), 1, T0).await;

    // No prompt on the route: a row, every consent column empty.
    let c = store.consent_of_recording(&rec).await.unwrap().unwrap();
    assert_eq!(c.call_id.as_str(), "call-000001");
    assert_eq!(
        (
            c.prompt_sha256,
            c.state,
            c.recording,
            c.training,
            c.source,
            c.at_ms
        ),
        (None, None, None, None, None, None)
    );

    set_consent(store, 1, Some(false), "keypad", T0 + 4_000).await;
    let c = store.consent_of_recording(&rec).await.unwrap().unwrap();
    assert_eq!(c.prompt_sha256.as_deref(), Some("01".repeat(32).as_str()));
    assert_eq!(c.state.as_deref(), Some(consent_state::DECIDED));
    assert_eq!((c.recording, c.training), (Some(true), Some(false)));
    assert_eq!(c.source.as_deref(), Some("keypad"));
    assert_eq!(c.at_ms, Some(T0 + 4_000));
    // Read inside an audited transaction too (what tag_add does).
    let mut tx = store.begin_audited(T0).await.unwrap();
    assert_eq!(
        tx.consent_of_recording(&rec)
            .await
            .unwrap()
            .unwrap()
            .training,
        Some(false)
    );
    tx.rollback().await.unwrap();

    set_consent(store, 1, Some(true), "default", T0 + 9_000).await;
    let c = store.consent_of_recording(&rec).await.unwrap().unwrap();
    assert_eq!(
        (c.training, c.source.as_deref()),
        (Some(true), Some("default"))
    );

    // The call row does not (yet) name the recording: found through the recording's row.
    let mut call = store
        .get_call(&CallId::from_string("call-000001"))
        .await
        .unwrap()
        .unwrap();
    call.recording_id = None;
    call.consent_training = Some(false);
    store.upsert_call(&call).await.unwrap();
    let c = store.consent_of_recording(&rec).await.unwrap().unwrap();
    assert_eq!(c.training, Some(false));

    // No such recording, and a recording whose call row does not exist.
    let nothing = RecordingId::from_string("rec-none");
    assert!(
        store
            .consent_of_recording(&nothing)
            .await
            .unwrap()
            .is_none()
    );
    let orphan = RecordingId::from_string("rec-orphan");
    store
        .upsert_recording(&RecordingRow {
            recording_id: orphan.clone(),
            call_id: CallId::from_string("call-missing"),
            location: "x".into(),
            state: recording_state::OK.into(),
            bytes: 0,
            sha256: None,
            created_at_ms: T0,
            finished_at_ms: None,
        })
        .await
        .unwrap();
    assert!(store.consent_of_recording(&orphan).await.unwrap().is_none());
}

/// A customer who declined training use: `training` is refused (any role, typed error naming
/// the consent, nothing stored, nothing audited), other tags are not; agreed or not asked:
/// allowed.
pub(super) async fn training_tag_needs_consent(ctx: &Ctx) {
    let store = &ctx.store;
    let dir = tempfile::tempdir().unwrap();
    let cfg = cfg();
    let sup = Actor::new("sam", Role::Supervisor);
    let dpo = Actor::new("dee", Role::Dpo);
    let now = T0 + DAY;
    let declined = make_recording(store, dir.path(), 1, T0).await;
    let agreed = make_recording(store, dir.path(), 2, T0).await;
    let not_asked = make_recording(store, dir.path(), 3, T0).await;
    // 2026-11-22T10:00:00Z
    let decided_at = 1_795_341_600_000;
    set_consent(store, 1, Some(false), "default", decided_at).await;
    set_consent(store, 2, Some(true), "keypad", decided_at).await;
    let seq_before = verify_audit(store).await;

    for actor in [&sup, &dpo] {
        match service::tag_add(store, &cfg, actor, &declined, "training", None, now).await {
            Err(e @ RetentionError::TrainingDeclined { .. }) => {
                let msg = e.to_string();
                for needle in [
                    "rec-000001",
                    "call-000001",
                    "did not consent to training use",
                    "consent prompt sha256 01010101…",
                    "choice by default at 2026-11-22T10:00:00Z",
                    "the training tag cannot be added",
                ] {
                    assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
                }
                let RetentionError::TrainingDeclined {
                    prompt_sha256,
                    choice_source,
                    at_ms,
                    ..
                } = e
                else {
                    unreachable!()
                };
                assert_eq!(prompt_sha256, Some("01".repeat(32)));
                assert_eq!(choice_source.as_deref(), Some("default"));
                assert_eq!(at_ms, Some(decided_at));
            }
            other => panic!(
                "training on a declined recording ({}): {other:?}",
                actor.role
            ),
        }
    }
    // Nothing stored, nothing audited (refusals are not audit entries), expiry untouched.
    assert!(store.tags_of(&declined).await.unwrap().is_empty());
    assert_eq!(verify_audit(store).await, seq_before);
    assert_eq!(count_action(store, action::TAG_ADD).await, 0);

    // Other tags still go on the declined recording.
    assert!(matches!(
        service::tag_add(store, &cfg, &sup, &declined, "complaint", None, now)
            .await
            .unwrap(),
        TagAdded::Added(_)
    ));
    assert!(matches!(
        service::tag_add(store, &cfg, &dpo, &declined, "abusive", None, now)
            .await
            .unwrap(),
        TagAdded::Added(_)
    ));
    // Agreed at the prompt, or no prompt on the route: training allowed.
    for rec in [&agreed, &not_asked] {
        let TagAdded::Added(d) = service::tag_add(store, &cfg, &sup, rec, "training", None, now)
            .await
            .unwrap()
        else {
            panic!("{rec}: not added")
        };
        assert_eq!(d.expires_at_ms, Some(T0 + 365 * DAY));
    }
    assert_eq!(count_action(store, action::TAG_ADD).await, 4);
    // Still refused afterwards (the other tags changed nothing).
    assert!(matches!(
        service::tag_add(store, &cfg, &sup, &declined, "training", None, now).await,
        Err(RetentionError::TrainingDeclined { .. })
    ));
    let tags: Vec<String> = store
        .tags_of(&declined)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.tag)
        .collect();
    assert_eq!(tags, ["abusive", "complaint"]);
    verify_audit(store).await;
}

/// Calls that never had a recording keep their numbers for the default period from the call's
/// start, then the sweeper redacts them (one audited batch); a call whose recording is kept (a
/// legal hold) keeps its numbers however old, and loses them with its audio.
pub(super) async fn calls_without_audio_are_redacted_after_the_default_period(ctx: &Ctx) {
    let store = &ctx.store;
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::Dir(DirStorage::new(dir.path()));
    let policy = Policy::from_config(&cfg());
    let default = policy.default_ms;
    let sys = Actor::new("sweeper@test", Role::System);
    // 10: declined at T0; 11: unanswered 100 days later; 12: recorded then, and held.
    store.upsert_call(&call_row(10, T0)).await.unwrap();
    store
        .upsert_call(&call_row(11, T0 + 100 * DAY))
        .await
        .unwrap();
    let rec12 = make_recording(store, dir.path(), 12, T0 + 100 * DAY).await;
    let inv = Actor::new("ivy", Role::Investigator);
    let hold = std::slice::from_ref(&rec12);
    service::hold_create(
        store,
        &cfg(),
        &inv,
        "CASE-12",
        "inquiry",
        hold,
        T0 + 101 * DAY,
    )
    .await
    .unwrap();
    let found = |n: usize| {
        let id = CallId::from_string(format!("call-{n:06}"));
        async move { store.get_call(&id).await.unwrap().unwrap() }
    };
    let sweep = |now: i64, dry_run: bool| {
        let mut opts = SweepOptions::new("n1");
        opts.dry_run = dry_run;
        let (storage, policy, sys) = (&storage, &policy, &sys);
        async move {
            sweep_once(store, storage, policy, sys, &opts, now, None)
                .await
                .unwrap()
        }
    };

    // One millisecond early: nothing.
    assert_eq!(sweep(T0 + default - 1, false).await.calls_redacted, 0);
    assert_eq!(found(10).await.from_number.expose(), "+447700900123");
    // A dry run counts and changes nothing.
    assert_eq!(sweep(T0 + default, true).await.calls_redacted, 1);
    assert_eq!(found(10).await.from_number.expose(), "+447700900123");
    // Exactly at the period: call 10 only.
    let r = sweep(T0 + default, false).await;
    assert_eq!(r.calls_redacted, 1);
    assert!(r.deleted.is_empty());
    assert_call_redacted(store, 10).await;
    assert_eq!(found(11).await.from_number.expose(), "+447700900123");
    assert_eq!(found(12).await.from_number.expose(), "+447700900123");
    let entries = store.audit_entries(0, i64::MAX).await.unwrap();
    let e = entries
        .iter()
        .find(|e| e.action == action::CALL_REDACT)
        .expect("audited");
    let targets: Vec<String> = serde_json::from_str(&e.targets).unwrap();
    assert_eq!(targets, vec!["call-000010".to_string()]);
    assert!(
        !e.details.contains("900123"),
        "no number in the audit entry: {}",
        e.details
    );
    // Again: nothing left to do.
    assert_eq!(sweep(T0 + default, false).await.calls_redacted, 0);

    // Long past both periods: 11 goes; 12 is held, so its audio and its numbers stay.
    let r = sweep(T0 + 500 * DAY, false).await;
    assert!(r.deleted.is_empty());
    assert_eq!(r.calls_redacted, 1);
    assert_call_redacted(store, 11).await;
    assert_eq!(found(12).await.from_number.expose(), "+447700900123");
    // Released: the recording goes (after the grace period), and its call's numbers with it.
    service::hold_release(
        store,
        &cfg(),
        &inv,
        "CASE-12",
        Some("closed"),
        T0 + 500 * DAY,
    )
    .await
    .unwrap();
    let r = sweep(T0 + 600 * DAY, false).await;
    assert_eq!(r.deleted.len(), 1);
    assert_eq!(
        r.calls_redacted, 0,
        "redacted with its audio, not by this step"
    );
    assert_call_redacted(store, 12).await;
    assert_eq!(count_action(store, action::CALL_REDACT).await, 2);
    verify_audit(store).await;
}

/// A call without a recording is erased on request at once (dpo only, reason required, one
/// `call.erase` entry without numbers); a recorded call is refused (its recording is what to
/// erase), as are a second erasure and an unknown call.
pub(super) async fn a_call_without_a_recording_is_erased_on_request(ctx: &Ctx) {
    let store = &ctx.store;
    let dir = tempfile::tempdir().unwrap();
    let declined = CallId::from_string("call-000020");
    store.upsert_call(&call_row(20, T0)).await.unwrap();
    let rec = make_recording(store, dir.path(), 21, T0).await;
    let (dpo, sup) = (
        Actor::new("dee", Role::Dpo),
        Actor::new("sam", Role::Supervisor),
    );
    assert!(matches!(
        service::erase_call(store, &sup, &declined, "x", T0).await,
        Err(RetentionError::Forbidden { .. })
    ));
    assert!(matches!(
        service::erase_call(store, &dpo, &declined, " ", T0).await,
        Err(RetentionError::BadText { .. })
    ));
    service::erase_call(store, &dpo, &declined, "art. 17 request 9", T0 + 1)
        .await
        .unwrap();
    assert_call_redacted(store, 20).await;
    assert!(matches!(
        service::erase_call(store, &dpo, &declined, "again", T0 + 2).await,
        Err(RetentionError::CallErased(_))
    ));
    match service::erase_call(store, &dpo, &CallId::from_string("call-000021"), "x", T0).await {
        Err(RetentionError::CallHasRecording { recording_id, .. }) => assert_eq!(recording_id, rec),
        other => panic!("{other:?}"),
    }
    // A recording whose call row does not name it yet (the row is updated after the
    // recording row is written) still protects the call.
    let unlinked = make_recording(store, dir.path(), 22, T0).await;
    store.upsert_call(&call_row(22, T0)).await.unwrap();
    match service::erase_call(store, &dpo, &CallId::from_string("call-000022"), "x", T0).await {
        Err(RetentionError::CallHasRecording { recording_id, .. }) => {
            assert_eq!(recording_id, unlinked)
        }
        other => panic!("{other:?}"),
    }
    let kept = store
        .get_call(&CallId::from_string("call-000021"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.from_number.expose(), "+447700900123");
    assert!(matches!(
        service::erase_call(store, &dpo, &CallId::from_string("call-nope"), "x", T0).await,
        Err(RetentionError::UnknownCall(_))
    ));
    let entries = store.audit_entries(0, i64::MAX).await.unwrap();
    let e: Vec<_> = entries
        .iter()
        .filter(|e| e.action == action::CALL_ERASE)
        .collect();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].reason.as_deref(), Some("art. 17 request 9"));
    assert!(!e[0].details.contains("900123") && !e[0].targets.contains("900123"));
    verify_audit(store).await;
}

/// The export's audit excerpt: entries naming an id exactly (a LIKE wildcard in a case
/// reference, `_`, matches nothing extra), up to a sequence number; and one entry by number.
pub(super) async fn audit_entries_by_target(ctx: &Ctx) {
    let a = Actor::new("ivy", Role::Investigator);
    let s = &ctx.store;
    let add = |targets: Vec<&'static str>| {
        let e = NewEntry::new(T0, &a, action::TAG_ADD).targets(targets);
        async move { s.audit_append(T0, &[e]).await.unwrap() }
    };
    add(vec!["rec-1"]).await; // 1
    add(vec!["rec-10"]).await; // 2: contains "rec-1" as text, not as a target
    add(vec!["CASE_1", "rec-2"]).await; // 3
    add(vec!["CASEx1"]).await; // 4: matches CASE_1 under LIKE only
    add(vec!["rec-2", "rec-1"]).await; // 5
    let seqs = |v: Vec<crate::audit::Entry>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        seqs(
            s.audit_entries_targeting(&ids(&["rec-1"]), 99)
                .await
                .unwrap()
        ),
        [1, 5]
    );
    assert_eq!(
        seqs(
            s.audit_entries_targeting(&ids(&["CASE_1"]), 99)
                .await
                .unwrap()
        ),
        [3]
    );
    assert_eq!(
        seqs(
            s.audit_entries_targeting(&ids(&["rec-1", "CASE_1", "rec-2"]), 4)
                .await
                .unwrap()
        ),
        [1, 3]
    );
    let e = s.audit_entry(3).await.unwrap().unwrap();
    assert_eq!((e.seq, e.targets.as_str()), (3, r#"["CASE_1","rec-2"]"#));
    assert!(s.audit_entry(6).await.unwrap().is_none());
}

/// The portal's search: time window (from inclusive, to exclusive), number spellings, a tag
/// in force (a removed one no longer matches), newest first, the limit.
pub(super) async fn recorded_call_search(ctx: &Ctx) {
    use crate::store::CallSearch;
    let s = &ctx.store;
    let dir = tempfile::tempdir().unwrap();
    for n in 1..=4 {
        make_recording(s, dir.path(), n, T0 + n as i64 * DAY).await;
    }
    // A call that was not recorded is never listed.
    s.upsert_call(&call_row(9, T0 + 2 * DAY)).await.unwrap();
    let mut other = call_row(5, T0 + 5 * DAY);
    other.from_number = PhoneNumber::new("+441632960777");
    other.to_number = PhoneNumber::new("+441632960778");
    s.upsert_call(&other).await.unwrap();
    let mut c5 = s.get_call(&other.call_id).await.unwrap().unwrap();
    c5.recording_id = Some(RecordingId::from_string("rec-000005"));
    s.upsert_call(&c5).await.unwrap();

    let ids = |v: Vec<CallRecord>| v.into_iter().map(|c| c.call_id.to_string()).collect::<Vec<_>>();
    let q = |f: &dyn Fn(&mut CallSearch)| {
        let mut q = CallSearch { limit: 100, ..CallSearch::default() };
        f(&mut q);
        q
    };
    let all = ids(s.search_recorded_calls(&q(&|_| {})).await.unwrap());
    assert_eq!(all, ["call-000005", "call-000004", "call-000003", "call-000002", "call-000001"]);
    let window = q(&|q| {
        q.from_ms = Some(T0 + 2 * DAY);
        q.to_ms = Some(T0 + 4 * DAY);
    });
    assert_eq!(ids(s.search_recorded_calls(&window).await.unwrap()), ["call-000003", "call-000002"]);
    let by_number = q(&|q| q.numbers = service::number_variants("07700 900123").unwrap());
    assert_eq!(ids(s.search_recorded_calls(&by_number).await.unwrap()).len(), 4);
    let by_other = q(&|q| q.numbers = service::number_variants("01632 960778").unwrap());
    assert_eq!(ids(s.search_recorded_calls(&by_other).await.unwrap()), ["call-000005"]);
    let limited = q(&|q| q.limit = 2);
    assert_eq!(ids(s.search_recorded_calls(&limited).await.unwrap()), ["call-000005", "call-000004"]);

    let cfg = RetentionConfig::default();
    let ivy = Actor::new("ivy", Role::Investigator);
    let rec2 = RecordingId::from_string("rec-000002");
    service::tag_add(s, &cfg, &ivy, &rec2, "complaint", None, T0).await.unwrap();
    let tagged = q(&|q| q.tag = Some("complaint".into()));
    assert_eq!(ids(s.search_recorded_calls(&tagged).await.unwrap()), ["call-000002"]);
    service::tag_remove(s, &cfg, &ivy, &rec2, "complaint", None, T0 + 1).await.unwrap();
    assert!(s.search_recorded_calls(&tagged).await.unwrap().is_empty());
}

/// Portal accounts: created once (names stay reserved), admin only, password changes and
/// disabling audited, hashes never in `Debug`.
pub(super) async fn portal_users(ctx: &Ctx) {
    use crate::portal::users::{self, UserError};
    let s = &ctx.store;
    let root = Actor::new("root", Role::Admin);
    users::add(s, &root, "sam", Role::Supervisor, "a long password", T0).await.unwrap();
    assert!(matches!(
        users::add(s, &root, "sam", Role::Dpo, "another password", T0).await,
        Err(UserError::Exists(_))
    ));
    assert!(matches!(
        users::add(s, &Actor::new("dee", Role::Dpo), "kim", Role::Supervisor, "a long password", T0).await,
        Err(UserError::Forbidden(Role::Dpo))
    ));
    let u = s.get_user("sam").await.unwrap().unwrap();
    assert_eq!((u.role.as_str(), u.created_by.as_str(), u.password_set_at_ms), ("supervisor", "root", T0));
    assert!(users::verify_password(&u.password_hash, "a long password"));
    assert!(!format!("{u:?}").contains("argon2"));

    users::set_password(s, &root, "sam", "a newer password", T0 + 5).await.unwrap();
    let u = s.get_user("sam").await.unwrap().unwrap();
    assert_eq!(u.password_set_at_ms, T0 + 5);
    assert!(users::verify_password(&u.password_hash, "a newer password"));
    users::disable(s, &root, "sam", Some("left"), T0 + 6).await.unwrap();
    assert!(matches!(users::disable(s, &root, "sam", None, T0 + 7).await, Err(UserError::Unknown(_))));
    assert!(matches!(
        users::set_password(s, &root, "sam", "a third password", T0 + 8).await,
        Err(UserError::Unknown(_))
    ));
    assert!(matches!(
        users::add(s, &root, "sam", Role::Supervisor, "a long password", T0).await,
        Err(UserError::Exists(_))
    ));
    let list = s.list_users().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].disabled_at_ms, Some(T0 + 6));
    let log = s.audit_entries(0, 100).await.unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, [action::USER_ADD, action::USER_PASSWORD, action::USER_DISABLE]);
    assert!(log.iter().all(|e| e.targets.contains("sam") && !e.details.contains("password ")));
}
