//! The `audit_log` and `audit_head` tables, and [`AuditTx`]: a transaction that holds the
//! audit chain lock, so every audited change and its entries commit (or roll back) together.
//!
//! Serialisation: the first statement of an [`AuditTx`] is an `UPDATE` of the single
//! `audit_head` row. On PostgreSQL that takes the row lock (like `SELECT … FOR UPDATE`) until
//! commit; on SQLite a write as the first statement takes the database write lock at once (as
//! `BEGIN IMMEDIATE` would), waiting up to the busy timeout instead of failing on a lock
//! upgrade. So appends never interleave, on one node or several, and the state every audited
//! change reads (tags, holds, keys) is the latest committed one.

use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{Store, StoreError};
use crate::audit::{Entry, NewEntry, seal};

/// A transaction holding the audit chain lock. Dropping it without [`AuditTx::commit`] rolls
/// everything back, entries included.
pub struct AuditTx {
    tx: Transaction<'static, Any>,
    seq: i64,
    hash: String,
    appended: Vec<Entry>,
}

fn entry_from_row(r: &AnyRow) -> Result<Entry, sqlx::Error> {
    Ok(Entry {
        seq: r.try_get("seq")?,
        at_ms: r.try_get("at_ms")?,
        actor: r.try_get("actor")?,
        role: r.try_get("role")?,
        action: r.try_get("action")?,
        targets: r.try_get("targets")?,
        reason: r.try_get("reason")?,
        details: r.try_get("details")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

impl Store {
    /// Begins a transaction and takes the audit chain lock (see the module docs).
    pub async fn begin_audited(&self, now_ms: i64) -> Result<AuditTx, StoreError> {
        let op = "begin_audited";
        let mut tx = self.pool.begin().await.map_err(StoreError::query(op))?;
        sqlx::query("UPDATE audit_head SET locked_at_ms = $1 WHERE id = 1")
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(op))?;
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::query(op))?;
        let seq: i64 = row.try_get("seq").map_err(StoreError::query(op))?;
        let hash: String = row.try_get("hash").map_err(StoreError::query(op))?;
        Ok(AuditTx {
            tx,
            seq,
            hash,
            appended: Vec::new(),
        })
    }

    /// Appends entries in a transaction of their own.
    pub async fn audit_append(
        &self,
        now_ms: i64,
        entries: &[NewEntry],
    ) -> Result<Vec<Entry>, StoreError> {
        let mut tx = self.begin_audited(now_ms).await?;
        for e in entries {
            tx.append(e).await?;
        }
        tx.commit().await
    }

    /// The chain head: (number of entries, hash of the newest).
    pub async fn audit_head(&self) -> Result<(i64, String), StoreError> {
        let op = "audit_head";
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::query(op))?;
        Ok((
            row.try_get("seq").map_err(StoreError::query(op))?,
            row.try_get("hash").map_err(StoreError::query(op))?,
        ))
    }

    /// Entries with `seq > after` (oldest first), at most `limit`.
    pub async fn audit_entries(&self, after: i64, limit: i64) -> Result<Vec<Entry>, StoreError> {
        let op = "audit_entries";
        let rows = sqlx::query(
            "SELECT seq, at_ms, actor, role, action, targets, reason, details, prev_hash, hash \
             FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query(op))?;
        rows.iter()
            .map(entry_from_row)
            .collect::<Result<_, _>>()
            .map_err(StoreError::query(op))
    }
}

impl Store {
    /// The entry at `seq`, if any.
    pub async fn audit_entry(&self, seq: i64) -> Result<Option<Entry>, StoreError> {
        Ok(self
            .audit_entries(seq - 1, 1)
            .await?
            .into_iter()
            .find(|e| e.seq == seq))
    }

    /// Entries up to `max_seq` (oldest first) whose targets include any of `ids` exactly.
    pub async fn audit_entries_targeting(
        &self,
        ids: &[String],
        max_seq: i64,
    ) -> Result<Vec<Entry>, StoreError> {
        let op = "audit_entries_targeting";
        let mut found = std::collections::BTreeMap::new();
        for id in ids {
            // A coarse filter in SQL (`_` in a case reference is a LIKE wildcard, so it may
            // match more), then the exact test on the parsed targets.
            let rows = sqlx::query(
                "SELECT seq, at_ms, actor, role, action, targets, reason, details, prev_hash, hash \
                 FROM audit_log WHERE seq <= $1 AND targets LIKE $2 ORDER BY seq",
            )
            .bind(max_seq)
            .bind(format!("%\"{id}\"%"))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query(op))?;
            for r in &rows {
                let e = entry_from_row(r).map_err(StoreError::query(op))?;
                let targets: Vec<String> = serde_json::from_str(&e.targets).unwrap_or_default();
                if targets.iter().any(|t| t == id) {
                    found.insert(e.seq, e);
                }
            }
        }
        Ok(found.into_values().collect())
    }
}

impl AuditTx {
    /// The connection of the transaction, for the changes being audited.
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// Appends one entry (chained after the previous one in this transaction).
    pub async fn append(&mut self, new: &NewEntry) -> Result<Entry, StoreError> {
        let e = seal(new, self.seq + 1, &self.hash);
        sqlx::query(
            "INSERT INTO audit_log (seq, at_ms, actor, role, action, targets, reason, details, \
             prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(e.seq)
        .bind(e.at_ms)
        .bind(e.actor.as_str())
        .bind(e.role.as_str())
        .bind(e.action.as_str())
        .bind(e.targets.as_str())
        .bind(e.reason.as_deref())
        .bind(e.details.as_str())
        .bind(e.prev_hash.as_str())
        .bind(e.hash.as_str())
        .execute(&mut *self.tx)
        .await
        .map_err(StoreError::query("audit_append"))?;
        self.seq = e.seq;
        self.hash = e.hash.clone();
        self.appended.push(e.clone());
        Ok(e)
    }

    /// Moves the chain head and commits the changes and their entries together.
    pub async fn commit(mut self) -> Result<Vec<Entry>, StoreError> {
        let op = "audit_commit";
        if !self.appended.is_empty() {
            sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(self.seq)
                .bind(self.hash.as_str())
                .execute(&mut *self.tx)
                .await
                .map_err(StoreError::query(op))?;
        }
        self.tx.commit().await.map_err(StoreError::query(op))?;
        Ok(self.appended)
    }

    /// Rolls back every change and entry of this transaction.
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.tx
            .rollback()
            .await
            .map_err(StoreError::query("audit_rollback"))
    }
}
