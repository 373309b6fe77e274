//! Metadata store: call records, recordings and their wrapped data keys.
//!
//! One code path for both dialects: an sqlx [`AnyPool`] with `$1`-style placeholders, which
//! SQLite (`$NNN` parameters) and PostgreSQL both accept, and only the types `Any` carries
//! (`i64`, `String`, `Vec<u8>` and `Option`s of them). Unsigned counts and times are stored as
//! `i64`; wall-clock times are Unix milliseconds taken by the caller (the shell), except the
//! `created`/`rewrapped` stamps of key rows, which the store takes itself.
//!
//! Schema migrations are embedded per dialect (`migrations/sqlite/`, `migrations/postgres/`)
//! and run by [`Store::connect`]; running them again is a no-op.
//!
//! The wrapped data key (DEK) of a recording lives **only** in `recording_keys`: deleting its
//! row ([`Store::delete_recording_key`]) crypto-shreds every copy of the audio. On SQLite the
//! store turns on `PRAGMA secure_delete` so the deleted bytes are overwritten in the file too;
//! on PostgreSQL the dead tuple stays on disk until `VACUUM` reclaims its page.
//!
//! Errors never show the database password: URLs are redacted and driver text from connecting
//! is scrubbed of it (see [`StoreError`]).

mod audit;
mod calls;
mod recordings;
mod retention;
pub mod url;
mod users;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{MigrateError, Migrator};

use crate::ids::{KeyId, RecordingId};

pub use calls::{CallRecord, MAX_NUMBER_VARIANTS, PauseSpan, announcement_state, consent_state, recording_state};
pub use audit::AuditTx;
pub use calls::{CallConsent, CallSearch};
pub use recordings::RecordingRow;
pub use retention::{
    Candidate, HoldRow, REDACTED, RetentionRow, TagRow, Tombstone, deletion_state,
};
pub use url::Dialect;
pub use users::UserRow;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// How long [`Store::connect`] and each query wait for a pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the store. `url` fields are always redacted (`user:***@host`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is neither `sqlite:` nor `postgres://`.
    #[error(
        "database url {url:?}: unsupported scheme (expected sqlite://PATH?mode=rwc or postgres://USER:PASSWORD@HOST/DB)"
    )]
    UnsupportedUrl { url: String },
    /// The directory for the SQLite file could not be created.
    #[error("database url {url}: cannot create directory {}: {source}", dir.display())]
    CreateDir {
        url: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Connecting failed. `cause` is the driver's message with any password scrubbed out (the
    /// driver error itself is not kept: its text may quote the URL).
    #[error("cannot connect to database {url}: {cause}")]
    Connect { url: String, cause: String },
    /// The embedded migrations could not be applied (or the database has migrations this build
    /// does not know, or an applied migration was edited).
    #[error("database {url}: schema migration failed: {source}")]
    Migrate {
        url: String,
        #[source]
        source: MigrateError,
    },
    /// A query failed; `op` names the store operation.
    #[error("database operation {op} failed: {source}")]
    Query {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// A different wrapped key is already stored for this recording. Replacing it would make
    /// the audio unreadable, so it is refused; use [`Store::rewrap_recording_key`] to rotate.
    #[error("recording {recording_id} already has a different wrapped data key")]
    KeyConflict { recording_id: RecordingId },
    /// [`Store::rewrap_recording_key`] found no key wrapped by the expected KEK.
    #[error("recording {recording_id}: no data key wrapped by {expected} (found {found:?})")]
    KeyNotWrappedBy {
        recording_id: RecordingId,
        expected: KeyId,
        found: Option<KeyId>,
    },
}

impl StoreError {
    pub(crate) fn query(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Query { op, source }
    }
}

/// Handle to the metadata database. Cheap to clone (a pool inside).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    /// The URL with its password redacted, for messages.
    url: String,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not derived: the pool's options hold the full URL, password included.
        f.debug_struct("Store")
            .field("dialect", &self.dialect)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (and for `sqlite:…?mode=rwc` creates, with its parent directory) the database at
    /// `url` and applies the embedded migrations of its dialect.
    ///
    /// `url` is `sqlite://PATH?mode=rwc`, `sqlite::memory:`, or `postgres://USER:PASSWORD@HOST:PORT/DB`.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let redacted = url::redact(url);
        let dialect = Dialect::of_url(url).ok_or_else(|| StoreError::UnsupportedUrl {
            url: redacted.clone(),
        })?;

        let mut options = AnyPoolOptions::new().acquire_timeout(ACQUIRE_TIMEOUT);
        if dialect == Dialect::Sqlite {
            match url::sqlite_file(url) {
                Some(file) => {
                    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                        tokio::fs::create_dir_all(dir).await.map_err(|source| {
                            StoreError::CreateDir {
                                url: redacted.clone(),
                                dir: dir.to_path_buf(),
                                source,
                            }
                        })?;
                    }
                    // Call records hold phone numbers: the file is the operator's alone. SQLite
                    // gives its -wal and -shm files the same mode. Only when creating it
                    // (`mode=rwc`); an existing file keeps whatever the operator chose.
                    #[cfg(unix)]
                    if url.contains("mode=rwc") && !file.exists() {
                        use std::os::unix::fs::OpenOptionsExt;
                        let _ = std::fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(0o600)
                            .open(&file);
                    }
                }
                None => {
                    // In memory: the database lives as long as a connection does, so keep
                    // exactly one, forever.
                    options = options
                        .max_connections(1)
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None);
                }
            }
            // Overwrite deleted rows (wrapped keys above all) in the file instead of merely
            // unlinking their cells.
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::query("PRAGMA secure_delete = ON")
                        .execute(&mut *conn)
                        .await?;
                    // WAL: writers no longer block readers and a commit costs one fsync, so a
                    // busy disk slows call records instead of failing them ("database is
                    // locked"). synchronous stays FULL: a wrapped key is never less durable than
                    // its audio. Writers wait up to 30 s for each other.
                    sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA synchronous = FULL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA busy_timeout = 30000").execute(&mut *conn).await?;
                    Ok(())
                })
            });
        }

        // Idempotent. It panics only if another part of the program installed a different
        // driver set with `install_drivers`; nothing in callgate does.
        sqlx::any::install_default_drivers();

        let pool = options
            .connect(url)
            .await
            .map_err(|e| StoreError::Connect {
                url: redacted.clone(),
                cause: url::scrub(&e.to_string(), url),
            })?;

        let migrator = match dialect {
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
            Dialect::Postgres => &POSTGRES_MIGRATIONS,
        };
        if let Err(source) = migrator.run(&pool).await {
            pool.close().await;
            return Err(StoreError::Migrate {
                url: redacted,
                source,
            });
        }
        tracing::debug!(url = %redacted, dialect = dialect.as_str(), "database ready");
        Ok(Store {
            pool,
            dialect,
            url: redacted,
        })
    }

    /// The dialect behind this store.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The database URL with its password redacted.
    pub fn redacted_url(&self) -> &str {
        &self.url
    }

    /// Closes every pooled connection (waits for queries in flight).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Wall clock in Unix milliseconds, for the store's own row stamps.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
