//! Store tests. Every test in `both_dialects!` runs on SQLite (a fresh file in a tempdir) and,
//! when `CALLGATE_TEST_POSTGRES_URL` is set, on PostgreSQL (a fresh database per test, created
//! and dropped through that URL, whose user therefore needs CREATEDB; see
//! `tests/support/start-postgres.sh`). Without the variable the PostgreSQL variants print a
//! note and pass.

use super::*;
use crate::ids::CallId;
use crate::pii::PhoneNumber;

mod retention_suite;
use retention_suite::*;

const PG_ENV: &str = "CALLGATE_TEST_POSTGRES_URL";

/// A store under test plus the URL it was opened with (to connect again).
struct Ctx {
    url: String,
    store: Store,
}

async fn sqlite_ctx() -> (Ctx, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    // A nested directory that does not exist yet: connect must create it.
    let url = format!(
        "sqlite://{}/nested/dir/callgate.db?mode=rwc",
        dir.path().display()
    );
    let store = Store::connect(&url).await.expect("connect sqlite");
    (Ctx { url, store }, dir)
}

/// `url` with its database name replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("postgres url has a scheme");
    let host_start = rest.rfind('@').map(|i| i + 1).unwrap_or(0);
    let (userinfo, tail) = rest.split_at(host_start);
    let (tail, query) = match tail.split_once('?') {
        Some((t, q)) => (t, format!("?{q}")),
        None => (tail, String::new()),
    };
    let host = tail.split('/').next().unwrap_or(tail);
    format!("{scheme}://{userinfo}{host}/{db}{query}")
}

struct PgCtx {
    ctx: Ctx,
    admin_url: String,
    db: String,
}

impl PgCtx {
    async fn drop_database(self) {
        self.ctx.store.close().await;
        let admin = sqlx::AnyPool::connect(&self.admin_url)
            .await
            .expect("admin connect");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.db
        )))
        .execute(&admin)
        .await
        .expect("drop test database");
        admin.close().await;
    }
}

async fn postgres_ctx(test: &str) -> Option<PgCtx> {
    let Ok(admin_url) = std::env::var(PG_ENV) else {
        eprintln!("note: {PG_ENV} not set; skipping PostgreSQL variant of {test}");
        return None;
    };
    sqlx::any::install_default_drivers();
    let db = format!("callgate_test_{}", crate::ids::random_hex(6));
    let admin = sqlx::AnyPool::connect(&admin_url)
        .await
        .expect("admin connect");
    // The name is ours (random hex), not input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&admin)
        .await
        .expect("create test database (does the user have CREATEDB?)");
    admin.close().await;
    let url = with_database(&admin_url, &db);
    let store = Store::connect(&url).await.expect("connect postgres");
    Some(PgCtx {
        ctx: Ctx { url, store },
        admin_url,
        db,
    })
}

macro_rules! both_dialects {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (ctx, _dir) = super::sqlite_ctx().await;
                    super::$name(&ctx).await;
                    ctx.store.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(pg) = super::postgres_ctx(stringify!($name)).await else { return };
                    super::$name(&pg.ctx).await;
                    pg.drop_database().await;
                }
            )*
        }
    };
}

both_dialects!(
    call_round_trip_all_none,
    call_round_trip_all_some_then_update,
    missing_rows_are_none,
    list_calls_newest_first,
    calls_in_state_filters,
    recording_rows,
    recording_keys_put_get_delete,
    recording_key_rotation,
    migrations_are_idempotent,
    concurrent_upserts,
    store_debug_hides_password,
    retention_lifecycle,
    erasure_and_restriction,
    two_sweepers_at_once,
    stale_deletion_is_finished,
    audit_chain_concurrent_and_append_only,
    calls_by_number_spellings,
    consent_of_recording,
    training_tag_needs_consent,
    calls_without_audio_are_redacted_after_the_default_period,
    a_call_without_a_recording_is_erased_on_request,
    audit_entries_by_target,
    recorded_call_search,
    portal_users,
);

fn minimal_call(id: &str, started: i64) -> CallRecord {
    CallRecord::new(
        CallId::from_string(id),
        format!("sip-{id}@trunk.example"),
        PhoneNumber::new("+441632960001"),
        PhoneNumber::new("+441632960999"),
        PhoneNumber::new("01632960999"),
        "*",
        "sip:queue@pbx.example:5060",
        started,
    )
}

/// Every optional field Some, every value distinct, awkward strings.
fn full_call(id: &str) -> CallRecord {
    CallRecord {
        call_id: CallId::from_string(id),
        sip_call_id: "a84b4c76e66710@pc33.atlanta.example 'quoted' \"double\" ünïcødé".into(),
        direction: "outbound".into(),
        from_number: PhoneNumber::new("+441632960123"),
        to_number: PhoneNumber::new("+441632960456"),
        dialled: PhoneNumber::new("01632960456"),
        route: "01632960456".into(),
        target: "sip:rent@pbx.example:5060;transport=tcp".into(),
        started_at_ms: 1_760_000_000_001,
        answered_at_ms: Some(1_760_000_000_002),
        bridged_at_ms: Some(1_760_000_000_003),
        ended_at_ms: Some(1_760_000_000_004),
        hangup_cause: Some("media-timeout".into()),
        hangup_side: Some("gateway".into()),
        final_status: Some(487),
        caller_codec: Some("PCMA".into()),
        agent_codec: Some("PCMU".into()),
        caller_packets: 150_000,
        caller_lost: 7,
        agent_packets: i64::MAX,
        agent_lost: -1,
        announcement_sha256: Some("ab".repeat(32)),
        announcement_started_at_ms: Some(1_760_000_000_005),
        announcement_ended_at_ms: Some(1_760_000_000_006),
        announcement_state: announcement_state::INTERRUPTED.into(),
        announcement_error: Some("caller hung up during announcement".into()),
        recording_id: Some(RecordingId::from_string("rec-0011223344556677")),
        recording_state: recording_state::TRUNCATED.into(),
        recording_error: Some("disk full; sealed 12 chunks".into()),
        key_id: Some(KeyId::from_string("kek-8899aabbccddeeff")),
        recording_bytes: Some(4_294_967_296),
        recording_sha256: Some("cd".repeat(32)),
        recording_location: Some("recordings/2025/10/rec-0011223344556677.cgr".into()),
        audio_ms: Some(i64::MIN),
        pauses: vec![
            crate::store::PauseSpan {
                started_ms: 1,
                ended_ms: 2,
                trigger: "caller-digits".into(),
                resumed_by: "hash".into(),
                digits: 19,
            },
            crate::store::PauseSpan {
                started_ms: 3,
                ended_ms: 4,
                trigger: "api".into(),
                resumed_by: "api".into(),
                digits: 0,
            },
        ],
        customer_leg: "called".into(),
        record_policy: "on-demand".into(),
        recording_started_at_ms: Some(1_760_000_000_007),
        recording_started_by: Some("api:payments-desk".into()),
        consent_prompt_sha256: Some("ef".repeat(32)),
        consent_state: Some(crate::store::consent_state::DECIDED.into()),
        consent_recording: Some(true),
        consent_training: Some(false),
        consent_source: Some("keypad".into()),
        consent_at_ms: Some(1_760_000_000_008),
        node: Some("node-1.example".into()),
    }
}

async fn call_round_trip_all_none(ctx: &Ctx) {
    let call = minimal_call("call-none", 42);
    assert_eq!(call.direction, "inbound");
    assert_eq!(call.recording_state, "none");
    assert_eq!(call.announcement_state, "none");
    ctx.store.upsert_call(&call).await.unwrap();
    let back = ctx.store.get_call(&call.call_id).await.unwrap();
    assert_eq!(back.as_ref(), Some(&call));
    // The JSON of `calls list --json` round-trips too, with numbers in full.
    let json = serde_json::to_string(&call).unwrap();
    assert!(json.contains("\"from_number\":\"+441632960001\""), "{json}");
    assert!(json.contains("\"recording_id\":null"), "{json}");
    assert_eq!(serde_json::from_str::<CallRecord>(&json).unwrap(), call);
}

async fn call_round_trip_all_some_then_update(ctx: &Ctx) {
    let call = full_call("call-full");
    ctx.store.upsert_call(&call).await.unwrap();
    assert_eq!(
        ctx.store.get_call(&call.call_id).await.unwrap(),
        Some(call.clone())
    );
    let json = serde_json::to_string(&call).unwrap();
    assert_eq!(serde_json::from_str::<CallRecord>(&json).unwrap(), call);

    // Upsert replaces every field, Some -> None included.
    let mut changed = minimal_call("call-full", 7);
    changed.sip_call_id = "other".into();
    changed.caller_packets = 3;
    ctx.store.upsert_call(&changed).await.unwrap();
    assert_eq!(
        ctx.store.get_call(&call.call_id).await.unwrap(),
        Some(changed.clone())
    );
    // And None -> Some again.
    ctx.store.upsert_call(&call).await.unwrap();
    assert_eq!(ctx.store.get_call(&call.call_id).await.unwrap(), Some(call));
    assert_eq!(ctx.store.list_calls(10).await.unwrap().len(), 1);
}

async fn missing_rows_are_none(ctx: &Ctx) {
    assert_eq!(
        ctx.store
            .get_call(&CallId::from_string("call-nope"))
            .await
            .unwrap(),
        None
    );
    let rid = RecordingId::from_string("rec-nope");
    assert_eq!(ctx.store.get_recording(&rid).await.unwrap(), None);
    assert_eq!(ctx.store.get_recording_key(&rid).await.unwrap(), None);
    assert!(!ctx.store.delete_recording_key(&rid).await.unwrap());
    assert_eq!(
        ctx.store
            .recording_for_call(&CallId::from_string("call-nope"))
            .await
            .unwrap(),
        None
    );
    assert!(ctx.store.list_calls(10).await.unwrap().is_empty());
}

async fn list_calls_newest_first(ctx: &Ctx) {
    // Inserted out of order; two share a start time (tie broken by call id, descending).
    for (id, t) in [
        ("call-c", 300),
        ("call-a", 100),
        ("call-e", 500),
        ("call-d", 300),
        ("call-b", 200),
    ] {
        ctx.store.upsert_call(&minimal_call(id, t)).await.unwrap();
    }
    let ids = |v: Vec<CallRecord>| {
        v.into_iter()
            .map(|c| c.call_id.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(ctx.store.list_calls(100).await.unwrap()),
        ["call-e", "call-d", "call-c", "call-b", "call-a"]
    );
    assert_eq!(
        ids(ctx.store.list_calls(2).await.unwrap()),
        ["call-e", "call-d"]
    );
    assert!(ctx.store.list_calls(0).await.unwrap().is_empty());
    assert_eq!(ctx.store.list_calls(u32::MAX).await.unwrap().len(), 5);
}

async fn calls_in_state_filters(ctx: &Ctx) {
    let mut a = minimal_call("call-a", 2);
    a.recording_state = recording_state::RECORDING.into();
    let mut b = minimal_call("call-b", 1);
    b.recording_state = recording_state::RECORDING.into();
    let mut c = minimal_call("call-c", 3);
    c.recording_state = recording_state::OK.into();
    for call in [&a, &b, &c] {
        ctx.store.upsert_call(call).await.unwrap();
    }
    let recording = ctx
        .store
        .calls_in_state(recording_state::RECORDING)
        .await
        .unwrap();
    assert_eq!(recording, vec![b.clone(), a.clone()], "oldest first");
    assert_eq!(ctx.store.calls_in_state("ok").await.unwrap(), vec![c]);
    assert!(ctx.store.calls_in_state("failed").await.unwrap().is_empty());
    // The start-up fix-up the serve shell does: mark and re-read.
    let mut fixed = a.clone();
    fixed.recording_state = recording_state::TRUNCATED.into();
    ctx.store.upsert_call(&fixed).await.unwrap();
    assert_eq!(
        ctx.store.calls_in_state("recording").await.unwrap(),
        vec![b]
    );
}

async fn recording_rows(ctx: &Ctx) {
    let call = CallId::from_string("call-r");
    let mut first = RecordingRow {
        recording_id: RecordingId::from_string("rec-1"),
        call_id: call.clone(),
        location: "recordings/rec-1.cgr".into(),
        state: recording_state::RECORDING.into(),
        bytes: 0,
        sha256: None,
        created_at_ms: 1000,
        finished_at_ms: None,
    };
    ctx.store.upsert_recording(&first).await.unwrap();
    assert_eq!(
        ctx.store.get_recording(&first.recording_id).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        ctx.store.recording_for_call(&call).await.unwrap(),
        Some(first.clone())
    );

    first.state = recording_state::OK.into();
    first.bytes = 9_000_000_000;
    first.sha256 = Some("ef".repeat(32));
    first.finished_at_ms = Some(61_000);
    ctx.store.upsert_recording(&first).await.unwrap();
    assert_eq!(
        ctx.store.get_recording(&first.recording_id).await.unwrap(),
        Some(first.clone())
    );

    let second = RecordingRow {
        recording_id: RecordingId::from_string("rec-0"),
        created_at_ms: 2000,
        ..first.clone()
    };
    ctx.store.upsert_recording(&second).await.unwrap();
    assert_eq!(
        ctx.store.recording_for_call(&call).await.unwrap(),
        Some(second)
    );
    assert_eq!(
        ctx.store
            .recording_for_call(&CallId::from_string("call-other"))
            .await
            .unwrap(),
        None
    );
}

async fn recording_keys_put_get_delete(ctx: &Ctx) {
    let rid = RecordingId::from_string("rec-k");
    let kek = KeyId::from_string("kek-1");
    // 40 bytes like an AES-KW-wrapped 256-bit key, with NULs and high bytes.
    let wrapped: Vec<u8> = (0u8..40)
        .map(|i| i.wrapping_mul(97) ^ 0xA5)
        .chain([0, 0xff])
        .collect();
    ctx.store
        .put_recording_key(&rid, &kek, &wrapped)
        .await
        .unwrap();
    assert_eq!(
        ctx.store.get_recording_key(&rid).await.unwrap(),
        Some((kek.clone(), wrapped.clone()))
    );
    // Same key again: fine (retry after an unknown outcome).
    ctx.store
        .put_recording_key(&rid, &kek, &wrapped)
        .await
        .unwrap();
    // A different key: refused, the stored one untouched.
    let err = ctx
        .store
        .put_recording_key(&rid, &kek, &[1, 2, 3])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::KeyConflict { .. }), "{err}");
    assert!(err.to_string().contains("rec-k"), "{err}");
    let err = ctx
        .store
        .put_recording_key(&rid, &KeyId::from_string("kek-2"), &wrapped)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::KeyConflict { .. }), "{err}");
    assert_eq!(
        ctx.store.get_recording_key(&rid).await.unwrap(),
        Some((kek.clone(), wrapped.clone()))
    );
    // Another recording's key is independent.
    let other = RecordingId::from_string("rec-k2");
    ctx.store
        .put_recording_key(&other, &kek, &[9; 40])
        .await
        .unwrap();

    assert!(ctx.store.delete_recording_key(&rid).await.unwrap());
    assert_eq!(ctx.store.get_recording_key(&rid).await.unwrap(), None);
    assert!(!ctx.store.delete_recording_key(&rid).await.unwrap());
    assert_eq!(
        ctx.store.get_recording_key(&other).await.unwrap(),
        Some((kek, vec![9; 40]))
    );
}

async fn recording_key_rotation(ctx: &Ctx) {
    let old = KeyId::from_string("kek-old");
    let new = KeyId::from_string("kek-new");
    let (r1, r2, r3) = (
        RecordingId::from_string("rec-1"),
        RecordingId::from_string("rec-2"),
        RecordingId::from_string("rec-3"),
    );
    ctx.store
        .put_recording_key(&r2, &old, &[2; 40])
        .await
        .unwrap();
    ctx.store
        .put_recording_key(&r1, &old, &[1; 40])
        .await
        .unwrap();
    ctx.store
        .put_recording_key(&r3, &new, &[3; 40])
        .await
        .unwrap();
    assert_eq!(
        ctx.store.recordings_wrapped_by(&old).await.unwrap(),
        vec![r1.clone(), r2.clone()]
    );

    ctx.store
        .rewrap_recording_key(&r1, &old, &new, &[11; 40])
        .await
        .unwrap();
    assert_eq!(
        ctx.store.get_recording_key(&r1).await.unwrap(),
        Some((new.clone(), vec![11; 40]))
    );
    // A second rotation expecting the old KEK loses the race cleanly.
    let err = ctx
        .store
        .rewrap_recording_key(&r1, &old, &new, &[12; 40])
        .await
        .unwrap_err();
    match &err {
        StoreError::KeyNotWrappedBy { found, .. } => assert_eq!(found.as_ref(), Some(&new)),
        other => panic!("unexpected {other}"),
    }
    assert_eq!(
        ctx.store.get_recording_key(&r1).await.unwrap().unwrap().1,
        vec![11; 40]
    );
    // Shredded recordings cannot be re-wrapped.
    let gone = RecordingId::from_string("rec-gone");
    let err = ctx
        .store
        .rewrap_recording_key(&gone, &old, &new, &[0; 40])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::KeyNotWrappedBy { found: None, .. }),
        "{err}"
    );
    assert_eq!(
        ctx.store.recordings_wrapped_by(&old).await.unwrap(),
        vec![r2]
    );
    assert_eq!(
        ctx.store.recordings_wrapped_by(&new).await.unwrap(),
        vec![r1, r3]
    );
}

async fn migrations_are_idempotent(ctx: &Ctx) {
    let call = full_call("call-persist");
    ctx.store.upsert_call(&call).await.unwrap();
    // Connecting again re-runs the migrator: nothing to apply, data kept.
    for _ in 0..2 {
        let again = Store::connect(&ctx.url).await.expect("second connect");
        assert_eq!(
            again.get_call(&call.call_id).await.unwrap(),
            Some(call.clone())
        );
        again.close().await;
    }
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&ctx.store.pool)
        .await
        .unwrap();
    let embedded = match ctx.store.dialect() {
        Dialect::Sqlite => SQLITE_MIGRATIONS.iter().count(),
        Dialect::Postgres => POSTGRES_MIGRATIONS.iter().count(),
    };
    assert_eq!(applied, embedded as i64);
}

async fn concurrent_upserts(ctx: &Ctx) {
    let mut tasks = Vec::new();
    for i in 0..32 {
        let store = ctx.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut call = minimal_call(&format!("call-{i:02}"), i);
            store.upsert_call(&call).await.unwrap();
            call.recording_state = recording_state::OK.into();
            store.upsert_call(&call).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = ctx.store.list_calls(100).await.unwrap();
    assert_eq!(all.len(), 32);
    assert!(all.iter().all(|c| c.recording_state == "ok"));
}

async fn store_debug_hides_password(ctx: &Ctx) {
    let debug = format!("{:?}", ctx.store);
    for secret in url::secrets(&ctx.url) {
        assert!(!debug.contains(&secret), "{debug}");
    }
    assert!(
        debug.contains(ctx.store.dialect().as_str())
            || debug.contains("Sqlite")
            || debug.contains("Postgres")
    );
}

// ---- dialect-specific and error tests ----

#[tokio::test]
async fn unsupported_urls_are_clear_errors() {
    for bad in ["mysql://u:hunter2@h/db", "data/callgate.db", "", "http://x"] {
        let err = Store::connect(bad).await.unwrap_err();
        assert!(
            matches!(err, StoreError::UnsupportedUrl { .. }),
            "{bad}: {err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("sqlite://") && msg.contains("postgres://"),
            "{msg}"
        );
        assert!(
            !msg.contains("hunter2") && !format!("{err:?}").contains("hunter2"),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn sqlite_directory_that_cannot_be_created() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let url = format!("sqlite://{}/sub/callgate.db?mode=rwc", file.display());
    let err = Store::connect(&url).await.unwrap_err();
    assert!(matches!(err, StoreError::CreateDir { .. }), "{err}");
    assert!(err.to_string().contains("cannot create directory"), "{err}");
}

#[tokio::test]
async fn sqlite_missing_file_without_rwc() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/absent.db", dir.path().display());
    let err = Store::connect(&url).await.unwrap_err();
    assert!(matches!(err, StoreError::Connect { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("cannot connect to database sqlite://"),
        "{err}"
    );
}

#[tokio::test]
async fn sqlite_in_memory_works() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    store.upsert_call(&minimal_call("call-m", 1)).await.unwrap();
    assert_eq!(store.list_calls(5).await.unwrap().len(), 1);
}

#[tokio::test]
async fn unreachable_postgres_error_hides_password() {
    // Port 1 on loopback: connection refused, quickly.
    let url = "postgres://callgate:hunter2%40secret@127.0.0.1:1/callgate?password=alsosecret";
    let err = Store::connect(url).await.unwrap_err();
    assert!(matches!(err, StoreError::Connect { .. }), "{err}");
    let shown = format!("{err} {err:?}");
    for secret in ["hunter2", "secret", "alsosecret"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert!(shown.contains("callgate:***@127.0.0.1:1"), "{shown}");
}

#[tokio::test]
async fn postgres_wrong_password_error_hides_it() {
    let Ok(url) = std::env::var(PG_ENV) else {
        eprintln!("note: {PG_ENV} not set; skipping postgres_wrong_password_error_hides_it");
        return;
    };
    let (scheme, rest) = url.split_once("://").unwrap();
    let at = rest.rfind('@').expect("test url has user:password@");
    let user = rest[..at].split(':').next().unwrap();
    let bad = format!("{scheme}://{user}:WrongPassw0rd-xyzzy@{}", &rest[at + 1..]);
    let err = Store::connect(&bad).await.unwrap_err();
    assert!(matches!(err, StoreError::Connect { .. }), "{err}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("WrongPassw0rd-xyzzy"), "{shown}");
    assert!(shown.contains(":***@"), "{shown}");
}

#[tokio::test]
async fn sqlite_delete_overwrites_the_wrapped_key_in_the_file() {
    let (ctx, _dir) = sqlite_ctx().await;
    let file = url::sqlite_file(&ctx.url).unwrap();
    let marker: Vec<u8> = b"WRAPPED-DEK-MARKER-0123456789abcdef-0123".to_vec();
    let rid = RecordingId::from_string("rec-shred");
    ctx.store
        .put_recording_key(&rid, &KeyId::from_string("kek-1"), &marker)
        .await
        .unwrap();
    let contains = |hay: &[u8]| hay.windows(marker.len()).any(|w| w == marker.as_slice());
    // The database is in WAL mode: its bytes are the main file plus the write-ahead log.
    let wal = std::path::PathBuf::from(format!("{}-wal", file.display()));
    let db_bytes = || {
        let mut b = std::fs::read(&file).unwrap();
        b.extend(std::fs::read(&wal).unwrap_or_default());
        b
    };
    assert!(contains(&db_bytes()), "marker should be in the database before delete");
    assert!(ctx.store.delete_recording_key(&rid).await.unwrap());
    // Checked while the store is still open (no close-time checkpoint to help), file and log.
    assert!(!contains(&db_bytes()), "deleted key still readable in the database file or its log");
    ctx.store.close().await;
    assert!(!contains(&db_bytes()), "deleted key readable after close");
}

#[test]
fn with_database_rewrites_the_path() {
    assert_eq!(
        with_database("postgres://u:p@h:5/db?sslmode=disable", "x"),
        "postgres://u:p@h:5/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_sqlite_database_and_its_log_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let (ctx, _dir) = sqlite_ctx().await;
    ctx.store
        .put_recording_key(&RecordingId::from_string("rec-perm"), &KeyId::from_string("kek-1"), b"x")
        .await
        .unwrap();
    let file = url::sqlite_file(&ctx.url).unwrap();
    let wal = std::path::PathBuf::from(format!("{}-wal", file.display()));
    for f in [&file, &wal] {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", f.display());
    }
}
