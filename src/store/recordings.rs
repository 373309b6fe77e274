//! The `recordings` and `recording_keys` tables.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_ms};
use crate::ids::{CallId, KeyId, RecordingId};

/// One recording file and where it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingRow {
    pub recording_id: RecordingId,
    pub call_id: CallId,
    /// Storage location: a path under the recordings directory, or an `s3://` URL.
    pub location: String,
    /// Same vocabulary as `CallRecord::recording_state` (`recording`, `ok`, `truncated`, `failed`).
    pub state: String,
    /// Bytes written so far (final size once finished).
    pub bytes: i64,
    /// Hex SHA-256 of the whole file, once finished.
    pub sha256: Option<String>,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

macro_rules! select_recording {
    ($rest:literal) => {
        concat!(
            "SELECT recording_id, call_id, location, state, bytes, sha256, created_at_ms, \
             finished_at_ms FROM recordings ",
            $rest
        )
    };
}

fn recording_from_row(r: &AnyRow) -> Result<RecordingRow, sqlx::Error> {
    Ok(RecordingRow {
        recording_id: RecordingId::from_string(r.try_get::<String, _>("recording_id")?),
        call_id: CallId::from_string(r.try_get::<String, _>("call_id")?),
        location: r.try_get("location")?,
        state: r.try_get("state")?,
        bytes: r.try_get("bytes")?,
        sha256: r.try_get("sha256")?,
        created_at_ms: r.try_get("created_at_ms")?,
        finished_at_ms: r.try_get("finished_at_ms")?,
    })
}

impl Store {
    /// Inserts the recording, or replaces every field of the row with the same `recording_id`.
    pub async fn upsert_recording(&self, rec: &RecordingRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO recordings (recording_id, call_id, location, state, bytes, sha256, \
             created_at_ms, finished_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (recording_id) DO UPDATE SET call_id = excluded.call_id, \
             location = excluded.location, state = excluded.state, bytes = excluded.bytes, \
             sha256 = excluded.sha256, created_at_ms = excluded.created_at_ms, \
             finished_at_ms = excluded.finished_at_ms",
        )
        .bind(rec.recording_id.as_str())
        .bind(rec.call_id.as_str())
        .bind(rec.location.as_str())
        .bind(rec.state.as_str())
        .bind(rec.bytes)
        .bind(rec.sha256.as_deref())
        .bind(rec.created_at_ms)
        .bind(rec.finished_at_ms)
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("upsert_recording"))?;
        Ok(())
    }

    /// The recording with this id, if any.
    pub async fn get_recording(
        &self,
        recording_id: &RecordingId,
    ) -> Result<Option<RecordingRow>, StoreError> {
        let row = sqlx::query(select_recording!("WHERE recording_id = $1"))
            .bind(recording_id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::query("get_recording"))?;
        row.as_ref()
            .map(recording_from_row)
            .transpose()
            .map_err(StoreError::query("get_recording"))
    }

    /// The recording of a call (the most recently created one, should there be several).
    pub async fn recording_for_call(
        &self,
        call_id: &CallId,
    ) -> Result<Option<RecordingRow>, StoreError> {
        let row = sqlx::query(select_recording!(
            "WHERE call_id = $1 ORDER BY created_at_ms DESC, recording_id DESC LIMIT 1"
        ))
        .bind(call_id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::query("recording_for_call"))?;
        row.as_ref()
            .map(recording_from_row)
            .transpose()
            .map_err(StoreError::query("recording_for_call"))
    }

    /// Stores the wrapped data key of a recording. Idempotent when the same key is stored
    /// again; a *different* key for the same recording is refused with
    /// [`StoreError::KeyConflict`] (it would make the audio unreadable).
    pub async fn put_recording_key(
        &self,
        recording_id: &RecordingId,
        key_id: &KeyId,
        wrapped_dek: &[u8],
    ) -> Result<(), StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO recording_keys (recording_id, key_id, wrapped_dek, created_at_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (recording_id) DO NOTHING",
        )
        .bind(recording_id.as_str())
        .bind(key_id.as_str())
        .bind(wrapped_dek)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("put_recording_key"))?
        .rows_affected();
        if inserted == 1 {
            return Ok(());
        }
        match self.get_recording_key(recording_id).await? {
            Some((k, w)) if &k == key_id && w == wrapped_dek => Ok(()),
            _ => Err(StoreError::KeyConflict {
                recording_id: recording_id.clone(),
            }),
        }
    }

    /// The KEK id and wrapped data key of a recording; `None` once shredded (or never stored).
    pub async fn get_recording_key(
        &self,
        recording_id: &RecordingId,
    ) -> Result<Option<(KeyId, Vec<u8>)>, StoreError> {
        let row =
            sqlx::query("SELECT key_id, wrapped_dek FROM recording_keys WHERE recording_id = $1")
                .bind(recording_id.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::query("get_recording_key"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let key_id: String = row
            .try_get("key_id")
            .map_err(StoreError::query("get_recording_key"))?;
        let wrapped: Vec<u8> = row
            .try_get("wrapped_dek")
            .map_err(StoreError::query("get_recording_key"))?;
        Ok(Some((KeyId::from_string(key_id), wrapped)))
    }

    /// Crypto-shreds a recording: deletes its wrapped data key, the only copy. Returns whether
    /// a key was there. Irreversible.
    pub async fn delete_recording_key(
        &self,
        recording_id: &RecordingId,
    ) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM recording_keys WHERE recording_id = $1")
            .bind(recording_id.as_str())
            .execute(&self.pool)
            .await
            .map_err(StoreError::query("delete_recording_key"))?
            .rows_affected();
        if deleted > 0 {
            self.shred_sqlite_log().await?;
        }
        Ok(deleted > 0)
    }

    /// SQLite in WAL mode keeps a deleted row's old page in the write-ahead log (and the main
    /// file keeps it until a checkpoint): checkpoint now and truncate the log, so the wrapped
    /// key is overwritten in the database file (`secure_delete`) and gone from the log.
    pub async fn shred_sqlite_log(&self) -> Result<(), StoreError> {
        if self.dialect() == crate::store::Dialect::Sqlite {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await
                .map_err(StoreError::query("wal_checkpoint"))?;
        }
        Ok(())
    }

    /// KEK rotation: replaces the wrapped key of a recording with the same DEK wrapped by
    /// `new_key_id`, only if it is currently wrapped by `old_key_id` (compare-and-swap, so two
    /// rotations cannot interleave). The caller must have unwrapped with the old KEK and
    /// re-wrapped the *same* DEK.
    pub async fn rewrap_recording_key(
        &self,
        recording_id: &RecordingId,
        old_key_id: &KeyId,
        new_key_id: &KeyId,
        wrapped_dek: &[u8],
    ) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE recording_keys SET key_id = $1, wrapped_dek = $2, rewrapped_at_ms = $3 \
             WHERE recording_id = $4 AND key_id = $5",
        )
        .bind(new_key_id.as_str())
        .bind(wrapped_dek)
        .bind(now_ms())
        .bind(recording_id.as_str())
        .bind(old_key_id.as_str())
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("rewrap_recording_key"))?
        .rows_affected();
        if updated == 1 {
            return Ok(());
        }
        let found = self.get_recording_key(recording_id).await?.map(|(k, _)| k);
        Err(StoreError::KeyNotWrappedBy {
            recording_id: recording_id.clone(),
            expected: old_key_id.clone(),
            found,
        })
    }

    /// Recordings whose data key is wrapped by `key_id` (for rotation), in id order.
    pub async fn recordings_wrapped_by(
        &self,
        key_id: &KeyId,
    ) -> Result<Vec<RecordingId>, StoreError> {
        let rows = sqlx::query(
            "SELECT recording_id FROM recording_keys WHERE key_id = $1 ORDER BY recording_id",
        )
        .bind(key_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("recordings_wrapped_by"))?;
        rows.iter()
            .map(|r| {
                r.try_get::<String, _>("recording_id")
                    .map(RecordingId::from_string)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::query("recordings_wrapped_by"))
    }
}
