//! The uploader: moves finished recordings from the spool to the bucket (`serve` with S3).
//!
//! It learns of a finished recording from the media path ([`super::Storage::finished`]) and,
//! so that nothing depends on that message arriving, scans the spool at start and every
//! `[recording] upload_retry`: a crash, a full queue or a failed upload leaves the file in the spool, and a
//! later pass uploads it. A spool file is removed only after its object is stored. A recording
//! shredded meanwhile is never uploaded, and one shredded during its upload is deleted again.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::{S3Storage, StorageError};
use crate::ids::RecordingId;
use crate::store::{Store, deletion_state, recording_state};

/// Uploads in flight at once.
const PARALLEL: usize = 4;
/// Finished-recording messages waiting; beyond this the next scan catches up.
const QUEUE: usize = 4096;
/// At shutdown, how long queued uploads may still take; what is left waits for the next start.
const DRAIN_LIMIT: Duration = Duration::from_secs(15);

/// What to do with a spool file, from its recording row's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Still being written (a call in progress): its end will announce it.
    Wait,
    /// Finished, truncated or failed: whatever was sealed goes to the bucket.
    Upload,
    /// Crypto-shredded: the file is removed, never uploaded.
    Discard,
    /// No row: left in place (and reported), as nothing says whose it is.
    Orphan,
}

pub fn step_for(state: Option<&str>) -> Step {
    match state {
        None => Step::Orphan,
        Some(recording_state::RECORDING) => Step::Wait,
        Some(deletion_state::DELETING | deletion_state::DELETED) => Step::Discard,
        Some(_) => Step::Upload,
    }
}

/// What one pass over a spool file did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Uploaded(u64),
    Waiting,
    Discarded,
    Orphan,
}

/// Handles one spool file.
pub async fn upload_one(
    s3: &S3Storage,
    store: &Store,
    id: &RecordingId,
) -> Result<Outcome, String> {
    let state = |r: Option<crate::store::RecordingRow>| r.map(|r| r.state);
    let row = store
        .get_recording(id)
        .await
        .map_err(|e| format!("reading the recording row: {e}"))?;
    match step_for(state(row).as_deref()) {
        Step::Wait => return Ok(Outcome::Waiting),
        Step::Orphan => return Ok(Outcome::Orphan),
        Step::Discard => {
            remove_spool(s3, id).await?;
            return Ok(Outcome::Discarded);
        }
        Step::Upload => {}
    }
    let bytes = match s3.upload(id).await {
        Ok(n) => n,
        // Removed meanwhile (an erasure on this host): nothing left to do.
        Err(StorageError::NotFound { .. }) => return Ok(Outcome::Discarded),
        Err(e) => return Err(e.to_string()),
    };
    // A shred that ran while the bytes were in flight deleted an object that did not exist
    // yet: delete what was just stored.
    let after = store
        .get_recording(id)
        .await
        .map_err(|e| format!("re-reading the recording row after the upload: {e}"))?;
    if step_for(state(after).as_deref()) == Step::Discard {
        s3.remove(id).await.map_err(|e| e.to_string())?;
        return Ok(Outcome::Discarded);
    }
    remove_spool(s3, id).await?;
    Ok(Outcome::Uploaded(bytes))
}

/// A spool file from an earlier run whose row still says "recording" was cut off by a crash
/// (even one that hit before its call row named it): it is truncated, and uploadable.
async fn settle_interrupted(store: &Store, id: &RecordingId) -> Result<(), String> {
    let row = store
        .get_recording(id)
        .await
        .map_err(|e| format!("reading the recording row: {e}"))?;
    if let Some(mut row) = row.filter(|r| r.state == recording_state::RECORDING) {
        row.state = recording_state::TRUNCATED.into();
        store
            .upsert_recording(&row)
            .await
            .map_err(|e| format!("marking the recording truncated: {e}"))?;
    }
    Ok(())
}

async fn remove_spool(s3: &S3Storage, id: &RecordingId) -> Result<(), String> {
    let (spool, id) = (s3.spool().clone(), id.clone());
    super::blocking(move || spool.remove(&id))
        .await
        .map_err(|e| e.to_string())
}

/// The spool's recordings; an unreadable spool is logged and counts as empty (the next scan
/// tries again).
fn list_spool(spool: &super::DirStorage) -> Vec<RecordingId> {
    spool.list().unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot list the recording spool");
        Vec::new()
    })
}

async fn scan(s3: &S3Storage) -> Vec<RecordingId> {
    let spool = s3.spool().clone();
    tokio::task::spawn_blocking(move || list_spool(&spool))
        .await
        .unwrap_or_default()
}

/// Runs every pending upload, [`PARALLEL`] at a time. Returns how many are still waiting or
/// failed (they stay in the spool).
async fn run_pending(s3: &S3Storage, store: &Store, pending: &mut BTreeSet<RecordingId>) -> usize {
    let mut left = 0;
    let mut set = JoinSet::new();
    let mut todo = std::mem::take(pending).into_iter();
    loop {
        while set.len() < PARALLEL {
            let Some(id) = todo.next() else { break };
            let (s3, store) = (s3.clone(), store.clone());
            set.spawn(async move {
                let r = upload_one(&s3, &store, &id).await;
                (id, r)
            });
        }
        let Some(joined) = set.join_next().await else {
            break;
        };
        let Ok((id, r)) = joined else {
            left += 1;
            continue;
        };
        match r {
            Ok(Outcome::Uploaded(bytes)) => {
                tracing::debug!(recording = %id, bytes, location = %s3.url(&id), "recording uploaded")
            }
            Ok(Outcome::Discarded) => {
                tracing::info!(recording = %id, "shredded recording removed from the spool, not uploaded")
            }
            Ok(Outcome::Waiting) => left += 1,
            Ok(Outcome::Orphan) => {
                left += 1;
                tracing::warn!(recording = %id, spool = %s3.spool().root().display(), "spool file without a recording row: left in place");
            }
            Err(e) => {
                left += 1;
                tracing::warn!(recording = %id, error = %e, "upload failed; the file stays in the spool and is retried");
            }
        }
    }
    left
}

/// Starts the uploader for `s3` (and tells `s3` where finished recordings are announced). It
/// stops when `stop` turns true, after at most [`DRAIN_LIMIT`] finishing what is queued.
pub fn spawn(
    s3: S3Storage,
    store: Store,
    rescan: Duration,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let (tx, mut rx) = mpsc::channel(QUEUE);
    if !s3.set_upload_queue(tx) {
        tracing::error!("a second uploader was started for the same storage; it does nothing");
        return tokio::spawn(async {});
    }
    // Listed before any call can start: every file here was left by an earlier run.
    let left_over = list_spool(s3.spool());
    tokio::spawn(async move {
        if !left_over.is_empty() {
            tracing::info!(files = left_over.len(), bucket = %s3.bucket(), "recordings in the spool at start: uploading");
        }
        for id in &left_over {
            if let Err(e) = settle_interrupted(&store, id).await {
                tracing::warn!(recording = %id, error = %e, "could not mark an interrupted recording truncated");
            }
        }
        let mut pending: BTreeSet<RecordingId> = left_over.into_iter().collect();
        let mut next_scan = tokio::time::Instant::now() + rescan;
        loop {
            if !pending.is_empty() {
                run_pending(&s3, &store, &mut pending).await;
            }
            tokio::select! {
                got = rx.recv() => match got {
                    Some(id) => {
                        pending.insert(id);
                        while let Ok(id) = rx.try_recv() {
                            pending.insert(id);
                        }
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(next_scan) => {
                    pending.extend(scan(&s3).await);
                    next_scan = tokio::time::Instant::now() + rescan;
                }
                _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => break,
            }
        }
        while let Ok(id) = rx.try_recv() {
            pending.insert(id);
        }
        let queued = pending.len();
        let left =
            match tokio::time::timeout(DRAIN_LIMIT, run_pending(&s3, &store, &mut pending)).await {
                Ok(left) => left,
                Err(_) => queued,
            };
        if left > 0 {
            tracing::warn!(files = left, spool = %s3.spool().root().display(), "recordings left in the spool at shutdown; they are uploaded at the next start");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::CallId;
    use crate::recording::storage::{DirStorage, Storage};
    use crate::store::RecordingRow;
    use object_store::memory::InMemory;
    use std::io::Write as _;
    use std::sync::Arc;

    async fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display());
        let store = Store::connect(&url).await.unwrap();
        (dir, store)
    }

    async fn row(store: &Store, id: &str, state: &str) {
        let r = RecordingRow {
            recording_id: RecordingId::from_string(id),
            call_id: CallId::from_string(format!("call-{id}")),
            location: format!("s3://calls/{id}.cgrec"),
            state: state.into(),
            bytes: 3,
            sha256: None,
            created_at_ms: 1,
            finished_at_ms: None,
        };
        store.upsert_recording(&r).await.unwrap();
    }

    async fn state(store: &Store, id: &str) -> String {
        store
            .get_recording(&RecordingId::from_string(id))
            .await
            .unwrap()
            .unwrap()
            .state
    }

    async fn settle(mut cond: impl AsyncFnMut() -> bool) {
        for _ in 0..200 {
            if cond().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the uploader did not get there in 2 s");
    }

    #[tokio::test]
    async fn the_uploader_moves_finished_recordings_and_never_uploads_shredded_or_live_ones() {
        let (dir, store) = temp_store().await;
        let s3 = S3Storage::with_store(
            Arc::new(InMemory::new()),
            "calls",
            "",
            DirStorage::new(dir.path().join("spool")),
        );
        let spool = |id: &str| {
            s3.spool()
                .create(&RecordingId::from_string(id))
                .unwrap()
                .write_all(b"abc")
                .unwrap();
        };
        let id = RecordingId::from_string;
        // Left by an earlier run: cut off by a crash, finished, shredded, and unknown.
        for (name, st) in [
            ("rec-cut", Some("recording")),
            ("rec-done", Some("ok")),
            ("rec-gone", Some("deleted")),
            ("rec-who", None),
        ] {
            spool(name);
            if let Some(st) = st {
                row(&store, name, st).await;
            }
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = spawn(
            s3.clone(),
            store.clone(),
            Duration::from_secs(3600),
            stop_rx,
        );
        settle(async || {
            s3.object_exists(&id("rec-cut")).await.unwrap()
                && s3.object_exists(&id("rec-done")).await.unwrap()
        })
        .await;
        assert_eq!(
            state(&store, "rec-cut").await,
            "truncated",
            "an interrupted recording is marked truncated"
        );
        assert!(
            !s3.spool().exists(&id("rec-cut")).unwrap()
                && !s3.spool().exists(&id("rec-done")).unwrap()
        );
        settle(async || !s3.spool().exists(&id("rec-gone")).unwrap()).await;
        assert!(
            !s3.object_exists(&id("rec-gone")).await.unwrap(),
            "a shredded recording is never uploaded"
        );
        assert!(
            s3.spool().exists(&id("rec-who")).unwrap(),
            "a file without a row stays"
        );
        assert!(!s3.object_exists(&id("rec-who")).await.unwrap());

        // A call in progress: announced early (or found by a scan), it waits for its row.
        spool("rec-live");
        row(&store, "rec-live", "recording").await;
        let storage = Storage::S3(s3.clone());
        storage.finished(&id("rec-live"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            s3.spool().exists(&id("rec-live")).unwrap(),
            "a live recording is not uploaded"
        );
        assert!(!s3.object_exists(&id("rec-live")).await.unwrap());
        row(&store, "rec-live", "ok").await;
        storage.finished(&id("rec-live"));
        settle(async || s3.object_exists(&id("rec-live")).await.unwrap()).await;
        assert_eq!(
            state(&store, "rec-live").await,
            "ok",
            "a finished recording keeps its state"
        );

        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_shred_during_the_upload_deletes_the_object_again() {
        let (dir, store) = temp_store().await;
        // The store's answer changes between the check before and the check after the upload:
        // a throttled object store gives the shred time to land while the bytes are in flight.
        let mem = Arc::new(object_store::throttle::ThrottledStore::new(
            InMemory::new(),
            object_store::throttle::ThrottleConfig {
                wait_put_per_call: Duration::from_millis(300),
                ..Default::default()
            },
        ));
        let s3 = S3Storage::with_store(mem, "calls", "", DirStorage::new(dir.path().join("spool")));
        let rec = RecordingId::from_string("rec-raced");
        s3.spool().create(&rec).unwrap().write_all(b"abc").unwrap();
        row(&store, "rec-raced", "ok").await;
        let (s3b, storeb, recb) = (s3.clone(), store.clone(), rec.clone());
        let upload = tokio::spawn(async move { upload_one(&s3b, &storeb, &recb).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        row(&store, "rec-raced", "deleting").await;
        assert_eq!(upload.await.unwrap().unwrap(), Outcome::Discarded);
        assert!(
            !s3.object_exists(&rec).await.unwrap(),
            "the object stored meanwhile is deleted"
        );
        assert!(!s3.spool().exists(&rec).unwrap());
    }

    #[test]
    fn steps_follow_the_recording_row() {
        assert_eq!(step_for(Some("recording")), Step::Wait);
        for s in ["ok", "truncated", "failed"] {
            assert_eq!(step_for(Some(s)), Step::Upload, "{s}");
        }
        for s in ["deleting", "deleted"] {
            assert_eq!(step_for(Some(s)), Step::Discard, "{s}");
        }
        assert_eq!(step_for(None), Step::Orphan);
    }
}
