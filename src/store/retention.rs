//! Retention state: tags, legal holds, restriction, stored expiry, sweeper claims, tombstones
//! (migration 0002). The decisions themselves are made by [`crate::retention::policy`]; this
//! module only reads and writes rows. Changes go through an [`AuditTx`] so they commit with
//! their audit entries under the chain lock.

use serde::Serialize;
use sqlx::AnyConnection;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::audit::AuditTx;
use super::{Store, StoreError};
use crate::ids::{CallId, RecordingId};
use crate::retention::policy::{HoldState, Inputs, TagState};

/// SQL that sets the columns identifying a customer to `$1` ([`REDACTED`]), then `$where`
/// (literals only: sqlx takes only static SQL).
macro_rules! redact_call {
    ($($where:expr),+) => {
        concat!(
            "UPDATE calls SET from_number = $1, to_number = $1, dialled = $1, sip_call_id = $1",
            $($where),+
        )
    };
}

/// SQL condition on a `calls` row: no recording of it is left that is not deleted, whether the
/// row names it yet or not (a recording row exists before its call row is updated).
macro_rules! without_audio {
    () => {
        " NOT EXISTS (SELECT 1 FROM recordings r \
          WHERE (r.recording_id = calls.recording_id OR r.call_id = calls.call_id) \
          AND r.state <> 'deleted') "
    };
}

/// Values of `recordings.state` added by retention (see also `recording_state`).
pub mod deletion_state {
    /// Claimed by a sweeper or an erasure: the key is being (or has been) destroyed.
    pub const DELETING: &str = "deleting";
    /// Crypto-shredded, file removed, tombstone written.
    pub const DELETED: &str = "deleted";
}

/// A tag on a recording (current or removed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TagRow {
    pub recording_id: RecordingId,
    pub tag: String,
    pub added_by: String,
    pub added_at_ms: i64,
    pub note: Option<String>,
    pub removed_by: Option<String>,
    pub removed_at_ms: Option<i64>,
}

/// A legal hold (a case).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HoldRow {
    pub case_ref: String,
    pub reason: String,
    pub created_by: String,
    pub created_at_ms: i64,
    pub released_by: Option<String>,
    pub released_at_ms: Option<i64>,
    pub release_reason: Option<String>,
}

/// The retention columns of a recording.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RetentionRow {
    pub recording_id: RecordingId,
    pub call_id: CallId,
    pub state: String,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub retention_rule: Option<String>,
    pub retention_policy: Option<String>,
    pub held: bool,
    pub restricted_at_ms: Option<i64>,
    pub restricted_by: Option<String>,
    pub restricted_reason: Option<String>,
}

/// What is left of a deleted recording. No personal data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tombstone {
    pub recording_id: RecordingId,
    pub created_at_ms: i64,
    /// The expiry that made the sweeper delete it; `None` for an erasure.
    pub expired_at_ms: Option<i64>,
    pub deleted_at_ms: i64,
    /// The retention rule, or `erasure`.
    pub rule: String,
}

/// A recording the sweeper may delete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Candidate {
    pub recording_id: RecordingId,
    pub expires_at_ms: Option<i64>,
    pub retention_rule: Option<String>,
}

const RETENTION_COLS: &str = "recording_id, call_id, state, created_at_ms, expires_at_ms, \
     retention_rule, retention_policy, held, restricted_at_ms, restricted_by, restricted_reason";

fn retention_from_row(r: &AnyRow) -> Result<RetentionRow, sqlx::Error> {
    Ok(RetentionRow {
        recording_id: RecordingId::from_string(r.try_get::<String, _>("recording_id")?),
        call_id: CallId::from_string(r.try_get::<String, _>("call_id")?),
        state: r.try_get("state")?,
        created_at_ms: r.try_get("created_at_ms")?,
        expires_at_ms: r.try_get("expires_at_ms")?,
        retention_rule: r.try_get("retention_rule")?,
        retention_policy: r.try_get("retention_policy")?,
        held: r.try_get::<i64, _>("held")? != 0,
        restricted_at_ms: r.try_get("restricted_at_ms")?,
        restricted_by: r.try_get("restricted_by")?,
        restricted_reason: r.try_get("restricted_reason")?,
    })
}

fn tag_from_row(r: &AnyRow) -> Result<TagRow, sqlx::Error> {
    Ok(TagRow {
        recording_id: RecordingId::from_string(r.try_get::<String, _>("recording_id")?),
        tag: r.try_get("tag")?,
        added_by: r.try_get("added_by")?,
        added_at_ms: r.try_get("added_at_ms")?,
        note: r.try_get("note")?,
        removed_by: r.try_get("removed_by")?,
        removed_at_ms: r.try_get("removed_at_ms")?,
    })
}

fn hold_from_row(r: &AnyRow) -> Result<HoldRow, sqlx::Error> {
    Ok(HoldRow {
        case_ref: r.try_get("case_ref")?,
        reason: r.try_get("reason")?,
        created_by: r.try_get("created_by")?,
        created_at_ms: r.try_get("created_at_ms")?,
        released_by: r.try_get("released_by")?,
        released_at_ms: r.try_get("released_at_ms")?,
        release_reason: r.try_get("release_reason")?,
    })
}

// ---- reads shared by the pool and a transaction ----

async fn q_retention(
    c: &mut AnyConnection,
    rec: &RecordingId,
) -> Result<Option<RetentionRow>, StoreError> {
    let op = "get_retention";
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {RETENTION_COLS} FROM recordings WHERE recording_id = $1"
    ));
    let row = sqlx::query(sql)
        .bind(rec.as_str())
        .fetch_optional(&mut *c)
        .await
        .map_err(StoreError::query(op))?;
    row.as_ref()
        .map(retention_from_row)
        .transpose()
        .map_err(StoreError::query(op))
}

async fn q_tags(c: &mut AnyConnection, rec: &RecordingId) -> Result<Vec<TagRow>, StoreError> {
    let op = "tags_of";
    let rows = sqlx::query(
        "SELECT recording_id, tag, added_by, added_at_ms, note, removed_by, removed_at_ms \
         FROM recording_tags WHERE recording_id = $1 ORDER BY tag",
    )
    .bind(rec.as_str())
    .fetch_all(&mut *c)
    .await
    .map_err(StoreError::query(op))?;
    rows.iter()
        .map(tag_from_row)
        .collect::<Result<_, _>>()
        .map_err(StoreError::query(op))
}

async fn q_holds_of(c: &mut AnyConnection, rec: &RecordingId) -> Result<Vec<HoldRow>, StoreError> {
    let op = "holds_of";
    let rows = sqlx::query(
        "SELECT h.case_ref, h.reason, h.created_by, h.created_at_ms, h.released_by, \
         h.released_at_ms, h.release_reason FROM legal_holds h \
         JOIN legal_hold_items i ON i.case_ref = h.case_ref WHERE i.recording_id = $1 \
         ORDER BY h.case_ref",
    )
    .bind(rec.as_str())
    .fetch_all(&mut *c)
    .await
    .map_err(StoreError::query(op))?;
    rows.iter()
        .map(hold_from_row)
        .collect::<Result<_, _>>()
        .map_err(StoreError::query(op))
}

async fn q_hold(c: &mut AnyConnection, case_ref: &str) -> Result<Option<HoldRow>, StoreError> {
    let op = "get_hold";
    let row = sqlx::query(
        "SELECT case_ref, reason, created_by, created_at_ms, released_by, released_at_ms, \
         release_reason FROM legal_holds WHERE case_ref = $1",
    )
    .bind(case_ref)
    .fetch_optional(&mut *c)
    .await
    .map_err(StoreError::query(op))?;
    row.as_ref()
        .map(hold_from_row)
        .transpose()
        .map_err(StoreError::query(op))
}

async fn q_hold_items(
    c: &mut AnyConnection,
    case_ref: &str,
) -> Result<Vec<RecordingId>, StoreError> {
    let op = "hold_items";
    let rows = sqlx::query(
        "SELECT recording_id FROM legal_hold_items WHERE case_ref = $1 ORDER BY recording_id",
    )
    .bind(case_ref)
    .fetch_all(&mut *c)
    .await
    .map_err(StoreError::query(op))?;
    rows.iter()
        .map(|r| {
            r.try_get::<String, _>("recording_id")
                .map(RecordingId::from_string)
        })
        .collect::<Result<_, _>>()
        .map_err(StoreError::query(op))
}

/// The policy inputs of a recording (None if there is no such recording).
async fn q_inputs(
    c: &mut AnyConnection,
    rec: &RecordingId,
) -> Result<Option<(RetentionRow, Inputs)>, StoreError> {
    let Some(row) = q_retention(c, rec).await? else {
        return Ok(None);
    };
    let tags = q_tags(c, rec).await?;
    let holds = q_holds_of(c, rec).await?;
    let inputs = Inputs {
        created_at_ms: row.created_at_ms,
        tags: tags
            .into_iter()
            .map(|t| TagState {
                tag: t.tag,
                added_at_ms: t.added_at_ms,
                removed_at_ms: t.removed_at_ms,
            })
            .collect(),
        holds: holds
            .into_iter()
            .map(|h| HoldState {
                case_ref: h.case_ref,
                released_at_ms: h.released_at_ms,
            })
            .collect(),
    };
    Ok(Some((row, inputs)))
}

async fn q_set_retention(
    c: &mut AnyConnection,
    rec: &RecordingId,
    expires_at_ms: Option<i64>,
    rule: &str,
    policy: &str,
    held: bool,
    only_if_stale: bool,
) -> Result<bool, StoreError> {
    let sql = if only_if_stale {
        "UPDATE recordings SET expires_at_ms = $1, retention_rule = $2, retention_policy = $3, \
         held = $4 WHERE recording_id = $5 AND state <> 'deleting' AND state <> 'deleted' \
         AND (retention_policy IS NULL OR retention_policy <> $3)"
    } else {
        "UPDATE recordings SET expires_at_ms = $1, retention_rule = $2, retention_policy = $3, \
         held = $4 WHERE recording_id = $5 AND state <> 'deleting' AND state <> 'deleted'"
    };
    let n = sqlx::query(sql)
        .bind(expires_at_ms)
        .bind(rule)
        .bind(policy)
        .bind(i64::from(held))
        .bind(rec.as_str())
        .execute(&mut *c)
        .await
        .map_err(StoreError::query("set_retention"))?
        .rows_affected();
    Ok(n == 1)
}

async fn finish_one(c: &mut AnyConnection, t: &Tombstone) -> Result<(), StoreError> {
    let op = "finish_deletion";
    sqlx::query(
        "INSERT INTO recording_tombstones (recording_id, created_at_ms, expired_at_ms, \
         deleted_at_ms, rule) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (recording_id) DO NOTHING",
    )
    .bind(t.recording_id.as_str())
    .bind(t.created_at_ms)
    .bind(t.expired_at_ms)
    .bind(t.deleted_at_ms)
    .bind(t.rule.as_str())
    .execute(&mut *c)
    .await
    .map_err(StoreError::query(op))?;
    sqlx::query(
        "UPDATE recordings SET state = 'deleted', expires_at_ms = NULL, sweeping_by = NULL, \
         sweeping_at_ms = NULL, sha256 = NULL WHERE recording_id = $1",
    )
    .bind(t.recording_id.as_str())
    .execute(&mut *c)
    .await
    .map_err(StoreError::query(op))?;
    sqlx::query(
        "UPDATE calls SET recording_state = 'deleted', recording_location = NULL, \
         recording_sha256 = NULL, key_id = NULL WHERE recording_id = $1",
    )
    .bind(t.recording_id.as_str())
    .execute(&mut *c)
    .await
    .map_err(StoreError::query(op))?;
    Ok(())
}

impl Store {
    /// The retention columns of a recording.
    pub async fn get_retention(
        &self,
        rec: &RecordingId,
    ) -> Result<Option<RetentionRow>, StoreError> {
        let mut c = self.conn("get_retention").await?;
        q_retention(&mut c, rec).await
    }

    /// Every tag row of a recording (removed ones too), by tag name.
    pub async fn tags_of(&self, rec: &RecordingId) -> Result<Vec<TagRow>, StoreError> {
        let mut c = self.conn("tags_of").await?;
        q_tags(&mut c, rec).await
    }

    /// Every legal hold (open or released) covering a recording, by case reference.
    pub async fn holds_of(&self, rec: &RecordingId) -> Result<Vec<HoldRow>, StoreError> {
        let mut c = self.conn("holds_of").await?;
        q_holds_of(&mut c, rec).await
    }

    /// A legal hold by case reference.
    pub async fn get_hold(&self, case_ref: &str) -> Result<Option<HoldRow>, StoreError> {
        let mut c = self.conn("get_hold").await?;
        q_hold(&mut c, case_ref).await
    }

    /// The recordings a legal hold covers.
    pub async fn hold_items(&self, case_ref: &str) -> Result<Vec<RecordingId>, StoreError> {
        let mut c = self.conn("hold_items").await?;
        q_hold_items(&mut c, case_ref).await
    }

    /// Every legal hold, open first, then by case reference.
    pub async fn list_holds(&self) -> Result<Vec<HoldRow>, StoreError> {
        let op = "list_holds";
        let rows = sqlx::query(
            "SELECT case_ref, reason, created_by, created_at_ms, released_by, released_at_ms, \
             release_reason FROM legal_holds ORDER BY (released_at_ms IS NOT NULL), case_ref",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query(op))?;
        rows.iter()
            .map(hold_from_row)
            .collect::<Result<_, _>>()
            .map_err(StoreError::query(op))
    }

    /// The policy inputs of a recording, read outside any transaction.
    pub async fn retention_inputs(
        &self,
        rec: &RecordingId,
    ) -> Result<Option<(RetentionRow, Inputs)>, StoreError> {
        let mut c = self.conn("retention_inputs").await?;
        q_inputs(&mut c, rec).await
    }

    /// Recordings whose stored expiry was not computed by the policy with fingerprint
    /// `policy` (new rows from the gateway, or a changed configuration), at most `limit`.
    pub async fn recordings_needing_policy(
        &self,
        policy: &str,
        limit: i64,
    ) -> Result<Vec<RecordingId>, StoreError> {
        let op = "recordings_needing_policy";
        let rows = sqlx::query(
            "SELECT recording_id FROM recordings WHERE (retention_policy IS NULL OR \
             retention_policy <> $1) AND state <> 'deleting' AND state <> 'deleted' LIMIT $2",
        )
        .bind(policy)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query(op))?;
        rows.iter()
            .map(|r| {
                r.try_get::<String, _>("recording_id")
                    .map(RecordingId::from_string)
            })
            .collect::<Result<_, _>>()
            .map_err(StoreError::query(op))
    }

    /// Stores a computed expiry unless a change under the current policy got there first
    /// (outside the audit lock: only fills in rows whose fingerprint differs). True if stored.
    pub async fn set_retention_if_stale(
        &self,
        rec: &RecordingId,
        expires_at_ms: Option<i64>,
        rule: &str,
        policy: &str,
        held: bool,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn("set_retention").await?;
        q_set_retention(&mut c, rec, expires_at_ms, rule, policy, held, true).await
    }

    /// Recordings expired at `now` under the policy `policy`, not held, soonest first: the
    /// sweeper's cheap query (index on `expires_at_ms`). In-progress recordings are skipped.
    pub async fn expired_recordings(
        &self,
        policy: &str,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<Candidate>, StoreError> {
        let op = "expired_recordings";
        let rows = sqlx::query(
            "SELECT recording_id, expires_at_ms, retention_rule FROM recordings \
             WHERE expires_at_ms <= $1 AND held = 0 AND retention_policy = $2 \
             AND state <> 'deleting' AND state <> 'deleted' AND state <> 'recording' \
             ORDER BY expires_at_ms, recording_id LIMIT $3",
        )
        .bind(now_ms)
        .bind(policy)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query(op))?;
        rows.iter()
            .map(|r| {
                Ok(Candidate {
                    recording_id: RecordingId::from_string(r.try_get::<String, _>("recording_id")?),
                    expires_at_ms: r.try_get("expires_at_ms")?,
                    retention_rule: r.try_get("retention_rule")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::query(op))
    }

    /// Calls started at or before `started_before_ms` that still carry numbers but have no
    /// audio left: never recorded (declined, unanswered, failed), or recorded and shredded
    /// before shredding redacted the row. Oldest first, at most `limit`.
    pub async fn unredacted_calls_without_audio(
        &self,
        started_before_ms: i64,
        limit: i64,
    ) -> Result<Vec<CallId>, StoreError> {
        let op = "unredacted_calls_without_audio";
        let rows = sqlx::query(concat!(
            "SELECT call_id FROM calls WHERE started_at_ms <= $1 AND from_number <> $2 AND",
            without_audio!(),
            "ORDER BY started_at_ms, call_id LIMIT $3"
        ))
        .bind(started_before_ms)
        .bind(REDACTED)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query(op))?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("call_id").map(CallId::from_string))
            .collect::<Result<_, _>>()
            .map_err(StoreError::query(op))
    }

    /// Deletions a crashed or stuck node left half done (claimed before `stale_before`).
    pub async fn stale_deletions(
        &self,
        stale_before_ms: i64,
        limit: i64,
    ) -> Result<Vec<RecordingId>, StoreError> {
        let op = "stale_deletions";
        let rows = sqlx::query(
            "SELECT recording_id FROM recordings WHERE state = 'deleting' \
             AND (sweeping_at_ms IS NULL OR sweeping_at_ms < $1) ORDER BY recording_id LIMIT $2",
        )
        .bind(stale_before_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query(op))?;
        rows.iter()
            .map(|r| {
                r.try_get::<String, _>("recording_id")
                    .map(RecordingId::from_string)
            })
            .collect::<Result<_, _>>()
            .map_err(StoreError::query(op))
    }

    /// The soonest stored expiry under `policy` among recordings not yet deleted.
    pub async fn next_expiry(&self, policy: &str) -> Result<Option<i64>, StoreError> {
        let op = "next_expiry";
        let row = sqlx::query(
            "SELECT MIN(expires_at_ms) AS next FROM recordings WHERE held = 0 \
             AND retention_policy = $1 AND state <> 'deleting' AND state <> 'deleted'",
        )
        .bind(policy)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::query(op))?;
        row.try_get::<Option<i64>, _>("next")
            .map_err(StoreError::query(op))
    }

    /// Takes over a stale half-done deletion. True if this node now owns it.
    pub async fn reclaim_deletion(
        &self,
        rec: &RecordingId,
        node: &str,
        now_ms: i64,
        stale_before_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE recordings SET sweeping_by = $1, sweeping_at_ms = $2 WHERE recording_id = $3 \
             AND state = 'deleting' AND (sweeping_at_ms IS NULL OR sweeping_at_ms < $4)",
        )
        .bind(node)
        .bind(now_ms)
        .bind(rec.as_str())
        .bind(stale_before_ms)
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("reclaim_deletion"))?
        .rows_affected();
        Ok(n == 1)
    }

    /// Stores computed expiries for many recordings in one transaction, each only if its
    /// fingerprint still differs from `policy` (see [`Store::set_retention_if_stale`]).
    /// Returns how many rows were stored.
    pub async fn set_retention_batch(
        &self,
        policy: &str,
        rows: &[(RecordingId, Option<i64>, String, bool)],
    ) -> Result<usize, StoreError> {
        let op = "set_retention_batch";
        let mut tx = self.pool.begin().await.map_err(StoreError::query(op))?;
        let mut n = 0;
        for (rec, exp, rule, held) in rows {
            if q_set_retention(&mut tx, rec, *exp, rule, policy, *held, true).await? {
                n += 1;
            }
        }
        tx.commit().await.map_err(StoreError::query(op))?;
        Ok(n)
    }

    /// Finishes a deletion after the key is gone and the file removed: the tombstone, the
    /// recording row marked `deleted`, the call's recording fields cleared. Idempotent.
    pub async fn finish_deletion(&self, t: &Tombstone) -> Result<(), StoreError> {
        self.finish_deletions(std::slice::from_ref(t)).await
    }

    /// [`Store::finish_deletion`] for many, in one transaction (a commit per row would cost an
    /// fsync each).
    pub async fn finish_deletions(&self, tombs: &[Tombstone]) -> Result<(), StoreError> {
        let op = "finish_deletion";
        let mut tx = self.pool.begin().await.map_err(StoreError::query(op))?;
        for t in tombs {
            finish_one(&mut tx, t).await?;
        }
        tx.commit().await.map_err(StoreError::query(op))
    }

    /// The tombstone of a deleted recording.
    pub async fn get_tombstone(&self, rec: &RecordingId) -> Result<Option<Tombstone>, StoreError> {
        let op = "get_tombstone";
        let row = sqlx::query(
            "SELECT recording_id, created_at_ms, expired_at_ms, deleted_at_ms, rule \
             FROM recording_tombstones WHERE recording_id = $1",
        )
        .bind(rec.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::query(op))?;
        row.map(|r| {
            Ok(Tombstone {
                recording_id: RecordingId::from_string(r.try_get::<String, _>("recording_id")?),
                created_at_ms: r.try_get("created_at_ms")?,
                expired_at_ms: r.try_get("expired_at_ms")?,
                deleted_at_ms: r.try_get("deleted_at_ms")?,
                rule: r.try_get("rule")?,
            })
        })
        .transpose()
        .map_err(StoreError::query(op))
    }

    /// Number of tombstones (for reports and tests).
    pub async fn count_tombstones(&self) -> Result<i64, StoreError> {
        let op = "count_tombstones";
        let row = sqlx::query("SELECT COUNT(*) AS n FROM recording_tombstones")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::query(op))?;
        row.try_get("n").map_err(StoreError::query(op))
    }

    async fn conn(
        &self,
        op: &'static str,
    ) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, StoreError> {
        self.pool.acquire().await.map_err(StoreError::query(op))
    }
}

impl AuditTx {
    /// The retention columns, read under the lock.
    pub async fn retention(
        &mut self,
        rec: &RecordingId,
    ) -> Result<Option<RetentionRow>, StoreError> {
        q_retention(self.conn(), rec).await
    }

    /// The policy inputs, read under the lock.
    pub async fn retention_inputs(
        &mut self,
        rec: &RecordingId,
    ) -> Result<Option<(RetentionRow, Inputs)>, StoreError> {
        q_inputs(self.conn(), rec).await
    }

    pub async fn tags_of(&mut self, rec: &RecordingId) -> Result<Vec<TagRow>, StoreError> {
        q_tags(self.conn(), rec).await
    }

    pub async fn get_hold(&mut self, case_ref: &str) -> Result<Option<HoldRow>, StoreError> {
        q_hold(self.conn(), case_ref).await
    }

    pub async fn hold_items(&mut self, case_ref: &str) -> Result<Vec<RecordingId>, StoreError> {
        q_hold_items(self.conn(), case_ref).await
    }

    /// Stores the computed expiry (not on rows being or already deleted).
    pub async fn set_retention(
        &mut self,
        rec: &RecordingId,
        expires_at_ms: Option<i64>,
        rule: &str,
        policy: &str,
        held: bool,
    ) -> Result<bool, StoreError> {
        q_set_retention(self.conn(), rec, expires_at_ms, rule, policy, held, false).await
    }

    /// Puts a tag on (or back on) a recording.
    pub async fn put_tag(
        &mut self,
        rec: &RecordingId,
        tag: &str,
        by: &str,
        at_ms: i64,
        note: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO recording_tags (recording_id, tag, added_by, added_at_ms, note) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (recording_id, tag) DO UPDATE SET \
             added_by = excluded.added_by, added_at_ms = excluded.added_at_ms, \
             note = excluded.note, removed_by = NULL, removed_at_ms = NULL",
        )
        .bind(rec.as_str())
        .bind(tag)
        .bind(by)
        .bind(at_ms)
        .bind(note)
        .execute(self.conn())
        .await
        .map_err(StoreError::query("put_tag"))?;
        Ok(())
    }

    /// Marks a current tag removed (the row stays: its removal time starts a grace period).
    /// False if the tag was not on the recording.
    pub async fn remove_tag(
        &mut self,
        rec: &RecordingId,
        tag: &str,
        by: &str,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE recording_tags SET removed_by = $1, removed_at_ms = $2 \
             WHERE recording_id = $3 AND tag = $4 AND removed_at_ms IS NULL",
        )
        .bind(by)
        .bind(at_ms)
        .bind(rec.as_str())
        .bind(tag)
        .execute(self.conn())
        .await
        .map_err(StoreError::query("remove_tag"))?
        .rows_affected();
        Ok(n == 1)
    }

    /// Creates an open legal hold.
    pub async fn create_hold(
        &mut self,
        case_ref: &str,
        reason: &str,
        by: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO legal_holds (case_ref, reason, created_by, created_at_ms) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(case_ref)
        .bind(reason)
        .bind(by)
        .bind(at_ms)
        .execute(self.conn())
        .await
        .map_err(StoreError::query("create_hold"))?;
        Ok(())
    }

    /// Attaches a recording to a hold (idempotent). True if newly attached.
    pub async fn add_hold_item(
        &mut self,
        case_ref: &str,
        rec: &RecordingId,
        by: &str,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "INSERT INTO legal_hold_items (case_ref, recording_id, added_by, added_at_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (case_ref, recording_id) DO NOTHING",
        )
        .bind(case_ref)
        .bind(rec.as_str())
        .bind(by)
        .bind(at_ms)
        .execute(self.conn())
        .await
        .map_err(StoreError::query("add_hold_item"))?
        .rows_affected();
        Ok(n == 1)
    }

    /// Releases an open hold. False if it was not open.
    pub async fn release_hold(
        &mut self,
        case_ref: &str,
        by: &str,
        at_ms: i64,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE legal_holds SET released_by = $1, released_at_ms = $2, release_reason = $3 \
             WHERE case_ref = $4 AND released_at_ms IS NULL",
        )
        .bind(by)
        .bind(at_ms)
        .bind(reason)
        .bind(case_ref)
        .execute(self.conn())
        .await
        .map_err(StoreError::query("release_hold"))?
        .rows_affected();
        Ok(n == 1)
    }

    /// Sets (`Some((by, at, reason))`) or clears the restriction flag.
    pub async fn set_restriction(
        &mut self,
        rec: &RecordingId,
        restriction: Option<(&str, i64, &str)>,
    ) -> Result<(), StoreError> {
        let (by, at, reason) = match restriction {
            Some((b, a, r)) => (Some(b), Some(a), Some(r)),
            None => (None, None, None),
        };
        sqlx::query(
            "UPDATE recordings SET restricted_by = $1, restricted_at_ms = $2, \
             restricted_reason = $3 WHERE recording_id = $4",
        )
        .bind(by)
        .bind(at)
        .bind(reason)
        .bind(rec.as_str())
        .execute(self.conn())
        .await
        .map_err(StoreError::query("set_restriction"))?;
        Ok(())
    }

    /// Claims a recording for deletion (state `deleting`, this node, now). False if it is
    /// held, already being deleted by someone else, or deleted.
    pub async fn claim_deletion(
        &mut self,
        rec: &RecordingId,
        node: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE recordings SET state = 'deleting', sweeping_by = $1, sweeping_at_ms = $2 \
             WHERE recording_id = $3 AND held = 0 AND state <> 'deleting' AND state <> 'deleted'",
        )
        .bind(node)
        .bind(now_ms)
        .bind(rec.as_str())
        .execute(self.conn())
        .await
        .map_err(StoreError::query("claim_deletion"))?
        .rows_affected();
        Ok(n == 1)
    }

    /// Crypto-shreds: deletes the wrapped data key. True if there was one.
    pub async fn delete_recording_key(&mut self, rec: &RecordingId) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM recording_keys WHERE recording_id = $1")
            .bind(rec.as_str())
            .execute(self.conn())
            .await
            .map_err(StoreError::query("delete_recording_key"))?
            .rows_affected();
        Ok(n > 0)
    }

    /// [`AuditTx::redact_call_of`] by call id, for a call without audio (see
    /// [`Store::unredacted_calls_without_audio`]); re-checked here, under the lock, so a
    /// recording started meanwhile keeps its call's numbers. True if the row was redacted.
    pub async fn redact_call_without_audio(&mut self, call: &CallId) -> Result<bool, StoreError> {
        let n = sqlx::query(redact_call!(
            " WHERE call_id = $2 AND from_number <> $1 AND",
            without_audio!()
        ))
        .bind(REDACTED)
        .bind(call.as_str())
        .execute(self.conn())
        .await
        .map_err(StoreError::query("redact_call_without_audio"))?
        .rows_affected();
        Ok(n > 0)
    }

    /// Removes what identifies the customer from the call row of a recording being shredded:
    /// its numbers and SIP Call-ID (which often carries a host address) become
    /// [`REDACTED`]. Times, route, outcome and packet counts stay, for the hub's statistics.
    /// In the shredding transaction, so no number outlives its audio, even by a crash.
    /// True if there was such a row.
    pub async fn redact_call_of(&mut self, rec: &RecordingId) -> Result<bool, StoreError> {
        let n = sqlx::query(redact_call!(" WHERE recording_id = $2"))
            .bind(REDACTED)
            .bind(rec.as_str())
            .execute(self.conn())
            .await
            .map_err(StoreError::query("redact_call_of"))?
            .rows_affected();
        Ok(n > 0)
    }
}

/// What a redacted call row holds instead of phone numbers and the SIP Call-ID.
pub const REDACTED: &str = "redacted";
