//! The sweeper: deletes recordings whose retention has expired.
//!
//! One pass ([`sweep_once`]):
//! 1. **Reconcile**: recordings whose stored expiry was not computed under the current policy
//!    (new rows from the gateway, or a changed `[retention]`) get it computed and stored.
//! 2. **Finish stale deletions**: a deletion claimed more than [`STALE_CLAIM_MS`] ago and not
//!    finished (a node crashed between shredding and tombstoning) is taken over and finished.
//! 3. **Delete**, in batches of the soonest-expired recordings (`expires_at_ms <= now`, not
//!    held: an indexed query). Per batch, one transaction holding the audit chain lock
//!    re-decides each recording from its tags and holds (so a hold or tag committed a moment
//!    ago is honoured), claims it (`state = 'deleting'`, this node, now), **deletes its
//!    wrapped data key** (crypto-shredding every copy of the audio) and appends the audit
//!    entry; commit. Then the **files** are removed, then the **tombstones** written and the
//!    call rows marked `deleted`.
//!
//! Several nodes may sweep at once: the claim is a conditional `UPDATE` under the chain lock,
//! so each recording is shredded exactly once; a node that dies mid-way leaves `deleting`
//! rows that step 2 finishes on the next pass (no lost deletions).
//!
//! [`run_sweeper`] is the loop for `serve`: a pass, then sleep until the next stored expiry
//! (at most [`MAX_SLEEP`], so rows written meanwhile by the gateway or other nodes are seen),
//! until `stop` turns true.

use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use super::RetentionError;
use super::policy::Policy;
use crate::audit::{Actor, NewEntry, Role, action};
use crate::config::RetentionConfig;
use crate::ids::{CallId, RecordingId};
use crate::recording::storage::{Storage, StorageError};
use crate::store::{Candidate, Store, Tombstone, deletion_state};

/// A deletion claimed longer ago than this (and not finished) is taken over by another pass.
pub const STALE_CLAIM_MS: i64 = 10 * 60 * 1000;
/// The loop never sleeps longer than this.
pub const MAX_SLEEP: Duration = Duration::from_secs(15 * 60);
/// Nor shorter (after an error, or when the next expiry is already due).
pub const MIN_SLEEP: Duration = Duration::from_secs(1);

/// Tuning of one pass.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// Name of this node in claims (`sweeping_by`).
    pub node: String,
    /// Recordings per deletion transaction.
    pub batch: i64,
    /// List what would be deleted; delete nothing.
    pub dry_run: bool,
}

impl SweepOptions {
    pub fn new(node: impl Into<String>) -> SweepOptions {
        SweepOptions {
            node: node.into(),
            batch: 200,
            dry_run: false,
        }
    }
}

/// One deleted recording.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Deleted {
    pub tombstone: Tombstone,
    /// False if the file could not be removed (the key is gone all the same; a later pass
    /// retries the file and the tombstone).
    pub finished: bool,
}

/// What a pass did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SweepReport {
    /// Expiries (re)computed.
    pub reconciled: usize,
    /// Half-done deletions finished.
    pub recovered: usize,
    pub deleted: Vec<Deleted>,
    /// `--dry-run`: what would be deleted.
    pub would_delete: Vec<Candidate>,
    /// Call rows without audio whose numbers were removed (the default retention period
    /// after the call started); with `--dry-run`, how many would be.
    pub calls_redacted: usize,
    /// Errors (logged); the pass went on.
    pub errors: usize,
    /// The soonest stored expiry still ahead.
    pub next_expiry_ms: Option<i64>,
}

/// A node name for claims: host name and process id.
pub fn node_name() -> String {
    format!("{}:{}", crate::config::host_name(), std::process::id())
}

/// Removes the files of shredded recordings (off the async threads), then writes their
/// tombstones. Returns them with `finished` set.
async fn finish(store: &Store, storage: &Storage, tombs: Vec<Tombstone>) -> (Vec<Deleted>, usize) {
    let ids: Vec<RecordingId> = tombs.iter().map(|t| t.recording_id.clone()).collect();
    let removed = storage.remove_many(&ids).await;
    let mut out = Vec::with_capacity(tombs.len());
    let mut errors = 0;
    let mut removed_ok = Vec::new();
    for (t, r) in tombs.iter().zip(removed) {
        match r {
            Ok(()) => removed_ok.push(t.clone()),
            Err(e) => {
                errors += 1;
                tracing::error!(recording_id = %t.recording_id, error = %e, "key destroyed (audio unreadable) but the file could not be removed; a later pass retries");
            }
        }
    }
    // One transaction for the batch's tombstones.
    let tombstoned = match store.finish_deletions(&removed_ok).await {
        Ok(()) => true,
        Err(e) => {
            errors += 1;
            tracing::error!(error = %e, count = removed_ok.len(), "keys destroyed, files removed, tombstones not written; a later pass retries");
            false
        }
    };
    let ok: std::collections::HashSet<RecordingId> =
        removed_ok.into_iter().map(|t| t.recording_id).collect();
    for t in tombs {
        let finished = tombstoned && ok.contains(&t.recording_id);
        out.push(Deleted {
            tombstone: t,
            finished,
        });
    }
    (out, errors)
}

/// Step 1: computes expiries not computed under `policy`. Returns how many were stored.
pub async fn reconcile(store: &Store, policy: &Policy) -> Result<usize, RetentionError> {
    let fp = policy.fingerprint();
    let mut done = 0;
    loop {
        let ids = store.recordings_needing_policy(&fp, 500).await?;
        if ids.is_empty() {
            return Ok(done);
        }
        let mut rows = Vec::with_capacity(ids.len());
        for rec in &ids {
            let Some((_, inputs)) = store.retention_inputs(rec).await? else {
                continue;
            };
            let d = policy.decide(&inputs);
            rows.push((
                rec.clone(),
                d.expires_at_ms,
                d.rule.to_string(),
                d.held_by.is_some(),
            ));
        }
        // One transaction per page: a commit per row would cost an fsync each.
        let progress = store.set_retention_batch(&fp, &rows).await?;
        done += progress;
        if progress == 0 {
            // Every row was taken care of by someone else meanwhile, or is not updatable.
            return Ok(done);
        }
    }
}

/// Shreds a batch under the audit chain lock: re-decide, claim, delete the key, audit. Returns
/// the tombstones to finish. `policy_now_ms` is the policy clock; audit times are `audit_ms`.
async fn shred_batch(
    store: &Store,
    policy: &Policy,
    actor: &Actor,
    node: &str,
    ids: &[RecordingId],
    policy_now_ms: i64,
    audit_ms: i64,
) -> Result<Vec<Tombstone>, RetentionError> {
    let fp = policy.fingerprint();
    let mut tx = store.begin_audited(audit_ms).await?;
    let mut tombs = Vec::new();
    for rec in ids {
        let Some((row, inputs)) = tx.retention_inputs(rec).await? else {
            continue;
        };
        if row.state == deletion_state::DELETING || row.state == deletion_state::DELETED {
            continue; // another node got there first
        }
        let d = policy.decide(&inputs);
        if !d.is_expired(policy_now_ms) {
            // Changed since the candidate query (a tag, a hold): store the new decision.
            tx.set_retention(
                rec,
                d.expires_at_ms,
                &d.rule.to_string(),
                &fp,
                d.held_by.is_some(),
            )
            .await?;
            continue;
        }
        if !tx.claim_deletion(rec, node, policy_now_ms).await? {
            continue;
        }
        let had_key = tx.delete_recording_key(rec).await?;
        let call_redacted = tx.redact_call_of(rec).await?;
        let rule = d.rule.to_string();
        tx.append(
            &NewEntry::new(audit_ms, actor, action::SWEEP_DELETE)
                .target(rec.as_str())
                .target(row.call_id.as_str())
                .details(json!({
                    "rule": rule,
                    "expired_at_ms": d.expires_at_ms,
                    "policy_now_ms": policy_now_ms,
                    "key_destroyed": had_key,
                    "call_redacted": call_redacted,
                    "node": node,
                })),
        )
        .await?;
        tombs.push(Tombstone {
            recording_id: rec.clone(),
            created_at_ms: row.created_at_ms,
            expired_at_ms: d.expires_at_ms,
            deleted_at_ms: audit_ms,
            rule,
        });
    }
    tx.commit().await?;
    // With SQLite in WAL mode the deleted keys' old pages sit in the log until a checkpoint.
    store.shred_sqlite_log().await?;
    Ok(tombs)
}

/// Erasure of one recording (see [`super::service::erase`], which checks the role).
pub(crate) async fn erase_one(
    store: &Store,
    storage: &Storage,
    policy: &Policy,
    actor: &Actor,
    rec: &RecordingId,
    reason: &str,
    now_ms: i64,
) -> Result<Tombstone, RetentionError> {
    let mut tx = store.begin_audited(now_ms).await?;
    let (row, inputs) = tx
        .retention_inputs(rec)
        .await?
        .ok_or_else(|| RetentionError::UnknownRecording(rec.clone()))?;
    if row.state == deletion_state::DELETING || row.state == deletion_state::DELETED {
        return Err(RetentionError::Deleted(rec.clone()));
    }
    let d = policy.decide(&inputs);
    if let Some(case_ref) = d.held_by {
        return Err(RetentionError::Held {
            recording_id: rec.clone(),
            case_ref,
        });
    }
    if !tx
        .claim_deletion(rec, &format!("erase:{}", actor.name), now_ms)
        .await?
    {
        return Err(RetentionError::Deleted(rec.clone()));
    }
    let had_key = tx.delete_recording_key(rec).await?;
    let call_redacted = tx.redact_call_of(rec).await?;
    tx.append(
        &NewEntry::new(now_ms, actor, action::ERASE)
            .target(rec.as_str())
            .target(row.call_id.as_str())
            .reason(Some(reason))
            .details(json!({ "key_destroyed": had_key, "call_redacted": call_redacted })),
    )
    .await?;
    tx.commit().await?;
    store.shred_sqlite_log().await?;
    let tomb = Tombstone {
        recording_id: rec.clone(),
        created_at_ms: row.created_at_ms,
        expired_at_ms: None,
        deleted_at_ms: now_ms,
        rule: "erasure".into(),
    };
    let (done, _) = finish(store, storage, vec![tomb.clone()]).await;
    if !done.first().is_some_and(|d| d.finished) {
        // The key is gone (the audio is unreadable); say so, but report the leftover file.
        return Err(RetentionError::Storage(StorageError::Leftover {
            location: storage.location(rec),
        }));
    }
    Ok(tomb)
}

/// One pass of the sweeper at policy time `now_ms`. `stop` (if given) is checked between
/// batches.
pub async fn sweep_once(
    store: &Store,
    storage: &Storage,
    policy: &Policy,
    actor: &Actor,
    opts: &SweepOptions,
    now_ms: i64,
    stop: Option<&watch::Receiver<bool>>,
) -> Result<SweepReport, RetentionError> {
    let fp = policy.fingerprint();
    let mut report = SweepReport {
        reconciled: reconcile(store, policy).await?,
        ..Default::default()
    };
    let stopped = || stop.is_some_and(|s| *s.borrow());

    // Calls without audio keep their numbers for the default period, counted from the call.
    let calls_before = now_ms.saturating_sub(policy.default_ms);
    if opts.dry_run {
        report.would_delete = store.expired_recordings(&fp, now_ms, 1_000_000).await?;
        report.calls_redacted = store
            .unredacted_calls_without_audio(calls_before, 1_000_000)
            .await?
            .len();
        report.next_expiry_ms = store.next_expiry(&fp).await?;
        return Ok(report);
    }

    // Step 2: half-done deletions.
    let stale_before = now_ms.saturating_sub(STALE_CLAIM_MS);
    for rec in store.stale_deletions(stale_before, 10_000).await? {
        if !store
            .reclaim_deletion(&rec, &opts.node, now_ms, stale_before)
            .await?
        {
            continue;
        }
        // The claim and the key deletion commit together, so the key is already gone; deleting
        // again is a no-op kept for rows marked `deleting` by hand or by a future code path.
        let _ = store.delete_recording_key(&rec).await?;
        let Some(row) = store.get_retention(&rec).await? else {
            continue;
        };
        let tomb = Tombstone {
            recording_id: rec,
            created_at_ms: row.created_at_ms,
            expired_at_ms: row.expires_at_ms,
            deleted_at_ms: crate::store::now_ms(),
            rule: row.retention_rule.unwrap_or_else(|| "unknown".into()),
        };
        let (done, errors) = finish(store, storage, vec![tomb]).await;
        report.errors += errors;
        report.recovered += done.iter().filter(|d| d.finished).count();
    }

    // Step 3: batches of expired recordings.
    let mut previous: Vec<RecordingId> = Vec::new();
    while !stopped() {
        let cands = store.expired_recordings(&fp, now_ms, opts.batch).await?;
        if cands.is_empty() {
            break;
        }
        let ids: Vec<RecordingId> = cands.into_iter().map(|c| c.recording_id).collect();
        if ids == previous {
            // No progress on the same rows (persistent errors): leave them for the next pass.
            break;
        }
        let audit_ms = crate::store::now_ms();
        match shred_batch(store, policy, actor, &opts.node, &ids, now_ms, audit_ms).await {
            Ok(tombs) => {
                let (done, errors) = finish(store, storage, tombs).await;
                report.errors += errors;
                report.deleted.extend(done);
            }
            Err(e) => {
                report.errors += 1;
                tracing::error!(error = %e, "sweep batch failed (rolled back)");
            }
        }
        previous = ids;
    }

    // Step 4: call rows without audio, past the default period: their numbers go.
    while !stopped() {
        let calls = store
            .unredacted_calls_without_audio(calls_before, opts.batch)
            .await?;
        if calls.is_empty() {
            break;
        }
        match redact_calls(store, actor, &opts.node, &calls, calls_before).await {
            Ok(0) => break, // every one changed meanwhile (a recording began): next pass
            Ok(n) => report.calls_redacted += n,
            Err(e) => {
                report.errors += 1;
                tracing::error!(error = %e, "call redaction batch failed (rolled back)");
                break;
            }
        }
    }
    report.next_expiry_ms = store.next_expiry(&fp).await?;
    Ok(report)
}

/// Redacts a batch of call rows without audio under the audit chain lock, with one audit
/// entry naming them. Returns how many were redacted.
async fn redact_calls(
    store: &Store,
    actor: &Actor,
    node: &str,
    calls: &[CallId],
    started_before_ms: i64,
) -> Result<usize, RetentionError> {
    let audit_ms = crate::store::now_ms();
    let mut tx = store.begin_audited(audit_ms).await?;
    let mut done = Vec::new();
    for call in calls {
        if tx.redact_call_without_audio(call).await? {
            done.push(call.as_str());
        }
    }
    if done.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    let n = done.len();
    let mut entry = NewEntry::new(audit_ms, actor, action::CALL_REDACT).details(json!({
        "calls": n,
        "started_before_ms": started_before_ms,
        "node": node,
    }));
    for id in done {
        entry = entry.target(id);
    }
    tx.append(&entry).await?;
    tx.commit().await?;
    Ok(n)
}

/// How long the loop sleeps after a pass at `now_ms`.
pub fn next_sleep(now_ms: i64, next_expiry_ms: Option<i64>) -> Duration {
    let max_ms = MAX_SLEEP.as_millis() as i64;
    let ms = next_expiry_ms
        .map(|e| e.saturating_sub(now_ms))
        .unwrap_or(max_ms)
        .clamp(MIN_SLEEP.as_millis() as i64, max_ms);
    Duration::from_millis(ms as u64)
}

/// The sweeper loop for `serve`: wall clock, this host as node name. Returns when `stop`
/// becomes true (or its sender is dropped). Needs no keys: deleting never decrypts.
///
/// ```ignore
/// let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
/// let sweeper = tokio::spawn(callgate::retention::sweeper::run_sweeper(
///     store.clone(), storage.clone(), config.retention.clone(), stop_rx));
/// // on shutdown:
/// let _ = stop_tx.send(true);
/// let _ = sweeper.await;
/// ```
pub async fn run_sweeper(
    store: Store,
    storage: Storage,
    config: RetentionConfig,
    stop: watch::Receiver<bool>,
) {
    run_sweeper_with_clock(
        store,
        storage,
        config,
        node_name(),
        stop,
        crate::store::now_ms,
    )
    .await
}

/// [`run_sweeper`] with an injected policy clock (Unix ms) and node name, for tests.
pub async fn run_sweeper_with_clock(
    store: Store,
    storage: Storage,
    config: RetentionConfig,
    node: String,
    mut stop: watch::Receiver<bool>,
    clock: impl Fn() -> i64,
) {
    let policy = Policy::from_config(&config);
    let actor = Actor::new(format!("sweeper@{node}"), Role::System);
    let opts = SweepOptions::new(node);
    loop {
        if *stop.borrow() {
            return;
        }
        let now = clock();
        let next =
            match sweep_once(&store, &storage, &policy, &actor, &opts, now, Some(&stop)).await {
                Ok(r) => {
                    if !r.deleted.is_empty() || r.errors > 0 {
                        tracing::info!(
                            deleted = r.deleted.len(),
                            recovered = r.recovered,
                            errors = r.errors,
                            "retention sweep"
                        );
                    }
                    r.next_expiry_ms
                }
                Err(e) => {
                    tracing::warn!(error = %e, "retention sweep failed; retrying in a minute");
                    Some(clock().saturating_add(60_000))
                }
            };
        let wait = next_sleep(clock(), next);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_until_the_next_expiry_within_bounds() {
        assert_eq!(next_sleep(1000, Some(61_000)), Duration::from_secs(60));
        assert_eq!(next_sleep(1000, Some(0)), MIN_SLEEP);
        assert_eq!(next_sleep(1000, None), MAX_SLEEP);
        assert_eq!(next_sleep(0, Some(i64::MAX)), MAX_SLEEP);
        assert_eq!(next_sleep(i64::MIN, Some(i64::MAX)), MAX_SLEEP);
    }

    /// The loop (as `serve` will run it) sweeps an expired recording, sleeps, and stops
    /// promptly when told.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_loop_sweeps_then_stops_on_signal() {
        use crate::ids::{CallId, KeyId};
        use crate::recording::storage::DirStorage;
        use crate::store::RecordingRow;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display());
        let store = Store::connect(&url).await.unwrap();
        let rec = RecordingId::from_string("rec-loop");
        store
            .put_recording_key(&rec, &KeyId::from_string("kek-x"), &[1; 40])
            .await
            .unwrap();
        store
            .upsert_recording(&RecordingRow {
                recording_id: rec.clone(),
                call_id: CallId::from_string("call-loop"),
                location: "x".into(),
                state: "ok".into(),
                bytes: 1,
                sha256: None,
                created_at_ms: 0,
                finished_at_ms: Some(1),
            })
            .await
            .unwrap();
        std::fs::write(dir.path().join("rec-loop.cgrec"), b"x").unwrap();
        let storage = Storage::Dir(DirStorage::new(dir.path()));
        let (stop_tx, stop_rx) = watch::channel(false);
        // Policy clock: a year after the recording was made (default retention 183 d).
        let task = tokio::spawn(run_sweeper_with_clock(
            store.clone(),
            storage,
            RetentionConfig::default(),
            "test-node".into(),
            stop_rx,
            || 365 * 86_400_000,
        ));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while store.get_tombstone(&rec).await.unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "not swept");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(store.get_recording_key(&rec).await.unwrap().is_none());
        assert!(!dir.path().join("rec-loop.cgrec").exists());
        let t = std::time::Instant::now();
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the loop did not stop")
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
        let entries = store.audit_entries(0, 10).await.unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].actor, "sweeper@test-node");
        assert_eq!(entries[0].role, "system");
        store.close().await;
    }
}
