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

async fn remove_spool(s3: &S3Storage, id: &RecordingId) -> Result<(), String> {
    let (spool, id) = (s3.spool().clone(), id.clone());
    super::blocking(move || spool.remove(&id))
        .await
        .map_err(|e| e.to_string())
}

async fn scan(s3: &S3Storage) -> Vec<RecordingId> {
    let spool = s3.spool().clone();
    match super::blocking(move || spool.list()).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::error!(error = %e, "cannot list the recording spool");
            Vec::new()
        }
    }
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
    tokio::spawn(async move {
        let mut pending: BTreeSet<RecordingId> = scan(&s3).await.into_iter().collect();
        if !pending.is_empty() {
            tracing::info!(files = pending.len(), bucket = %s3.bucket(), "recordings in the spool at start: uploading");
        }
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
