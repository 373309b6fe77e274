//! Benchmark: sweeping 100,000 expired recordings (recording rows, call rows, wrapped-key
//! rows and small files) on SQLite. Kept out of `cargo test` (`#[ignore]`); run with
//!
//! ```sh
//! cargo test --release --test retention_bench -- --ignored --nocapture
//! ```
//!
//! `CALLGATE_BENCH_N` changes the count; `CALLGATE_BENCH_POSTGRES_URL` (a fresh, empty
//! database) runs it on PostgreSQL instead. Figures in BENCHMARKS.md.

use std::time::Instant;

use callgate::audit::{Actor, Role};
use callgate::config::RetentionConfig;
use callgate::recording::storage::{DirStorage, Storage};
use callgate::retention::policy::Policy;
use callgate::retention::sweeper::{SweepOptions, reconcile, sweep_once};
use callgate::store::Store;

#[test]
#[ignore = "benchmark: cargo test --release --test retention_bench -- --ignored --nocapture"]
fn sweep_100k_expired_recordings() {
    let n: usize = std::env::var("CALLGATE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let url = std::env::var("CALLGATE_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| format!("sqlite://{}/bench.db?mode=rwc", dir.path().display()));
    let rec_dir = dir.path().join("recordings");
    std::fs::create_dir_all(&rec_dir).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::connect(&url).await.unwrap();
        // Bulk setup through a plain pool: one transaction.
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        let t = Instant::now();
        let mut tx = pool.begin().await.unwrap();
        let created = 1_600_000_000_000i64;
        for i in 0..n {
            let rec = format!("rec-{i:016x}");
            let call = format!("call-{i:016x}");
            sqlx::query(
                "INSERT INTO recordings (recording_id, call_id, location, state, bytes, created_at_ms) \
                 VALUES ($1, $2, $3, 'ok', 64, $4)",
            )
            .bind(&rec)
            .bind(&call)
            .bind(format!("{}/{rec}.cgrec", rec_dir.display()))
            .bind(created + i as i64)
            .execute(&mut *tx)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO recording_keys (recording_id, key_id, wrapped_dek, created_at_ms) \
                 VALUES ($1, 'kek-bench', $2, $3)",
            )
            .bind(&rec)
            .bind(vec![0xA5u8; 40])
            .bind(created)
            .execute(&mut *tx)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO calls (call_id, sip_call_id, direction, from_number, to_number, dialled, \
                 route, target, started_at_ms, recording_id, recording_state, key_id, recording_location) \
                 VALUES ($1, $1, 'inbound', '+447700900123', '+441632960034', '2001', '*', 'sip:q@pbx', \
                 $2, $3, 'ok', 'kek-bench', $4)",
            )
            .bind(&call)
            .bind(created + i as i64)
            .bind(&rec)
            .bind(format!("{}/{rec}.cgrec", rec_dir.display()))
            .execute(&mut *tx)
            .await
            .unwrap();
            std::fs::write(rec_dir.join(format!("{rec}.cgrec")), [0u8; 64]).unwrap();
        }
        tx.commit().await.unwrap();
        pool.close().await;
        eprintln!("setup: {n} recordings, key rows, call rows and files in {:.1?}", t.elapsed());

        let storage = Storage::Dir(DirStorage::new(&rec_dir));
        let policy = Policy::from_config(&RetentionConfig::default());
        let actor = Actor::new("sweeper@bench", Role::System);
        let opts = SweepOptions::new("bench");
        let now = created + 400 * 86_400_000;

        let t = Instant::now();
        let computed = reconcile(&store, &policy).await.unwrap();
        let reconcile_time = t.elapsed();
        assert_eq!(computed, n);

        let t = Instant::now();
        let r = sweep_once(&store, &storage, &policy, &actor, &opts, now, None)
            .await
            .unwrap();
        let sweep_time = t.elapsed();
        assert_eq!(r.deleted.len(), n);
        assert_eq!(r.errors, 0);
        assert_eq!(store.count_tombstones().await.unwrap(), n as i64);
        assert_eq!(std::fs::read_dir(&rec_dir).unwrap().count(), 0);
        let (seq, _) = store.audit_head().await.unwrap();
        assert_eq!(seq, n as i64);
        store.close().await;
        let rate = n as f64 / sweep_time.as_secs_f64();
        eprintln!(
            "reconcile (expiry computed for {n}): {reconcile_time:.1?}\n\
             sweep (shred key + audit entry, remove file, tombstone + call row, for {n}): {sweep_time:.1?} \
             = {rate:.0} recordings/s (batch {})",
            opts.batch
        );
    });
}
