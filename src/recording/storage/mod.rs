//! Where recording files live: a local directory ([`DirStorage`]) or an S3 bucket
//! ([`S3Storage`]), chosen by `[recording] storage`.
//!
//! With S3 a recording is written to a local spool while the call lasts (the same sealed,
//! flushed chunks: a crash loses at most `flush` of audio), then [`upload`] copies it to the
//! bucket and removes the spool file. Readers look in the spool first, then the bucket, so a
//! recording is readable the moment its call ends, uploaded or not.

pub mod dir;
pub mod s3;
pub mod upload;

use std::fs::File;
use std::path::PathBuf;

pub use dir::DirStorage;
pub use s3::S3Storage;

use crate::config::RecordingConfig;
use crate::ids::RecordingId;

/// File extension of recording containers (also of their objects).
pub const EXTENSION: &str = "cgrec";

/// Storage errors; each names the recording, path or object.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("recording id {0:?} is not a valid file name (allowed: A-Z a-z 0-9 _ -)")]
    InvalidId(String),
    #[error("recording {id} already exists at {location}")]
    AlreadyExists { id: RecordingId, location: String },
    #[error("recording {id} not found at {location}")]
    NotFound { id: RecordingId, location: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{location}: {source}")]
    Object {
        location: String,
        #[source]
        source: object_store::Error,
    },
    #[error("recording storage: {0}")]
    Setup(String),
    #[error(
        "data key destroyed, but {location} or its tombstone could not be finished; `callgate sweep` retries"
    )]
    Leftover { location: String },
}

/// A storage backend.
#[derive(Clone, Debug)]
pub enum Storage {
    Dir(DirStorage),
    S3(S3Storage),
}

impl Storage {
    /// The backend `[recording] storage` names. S3 credentials come from the environment.
    pub fn from_config(c: &RecordingConfig) -> Result<Storage, StorageError> {
        match &c.s3 {
            Some(s3) => Ok(Storage::S3(S3Storage::from_config(s3)?)),
            None => Ok(Storage::Dir(DirStorage::new(&c.storage))),
        }
    }

    /// Creates the file a new recording is written to (S3: in the spool). Blocking.
    pub fn create(&self, id: &RecordingId) -> Result<File, StorageError> {
        match self {
            Storage::Dir(d) => d.create(id),
            Storage::S3(s) => s.spool().create(id),
        }
    }

    /// Where the recording is kept for good: a path, or an `s3://` URL.
    pub fn location(&self, id: &RecordingId) -> String {
        match self {
            Storage::Dir(d) => d
                .path_for(id)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| id.to_string()),
            Storage::S3(s) => s.url(id),
        }
    }

    /// Reads a whole recording into memory.
    pub async fn read_all(&self, id: &RecordingId) -> Result<Vec<u8>, StorageError> {
        match self {
            Storage::Dir(d) => {
                let (d, id) = (d.clone(), id.clone());
                blocking(move || d.read_all(&id)).await
            }
            Storage::S3(s) => s.read_all(id).await,
        }
    }

    /// Removes recordings (already gone is fine); one result per id, in order.
    pub async fn remove_many(&self, ids: &[RecordingId]) -> Vec<Result<(), StorageError>> {
        match self {
            Storage::Dir(d) => {
                let (d, ids2) = (d.clone(), ids.to_vec());
                let n = ids.len();
                match tokio::task::spawn_blocking(move || {
                    ids2.iter().map(|id| d.remove(id)).collect::<Vec<_>>()
                })
                .await
                {
                    Ok(r) => r,
                    Err(e) => (0..n).map(|_| Err(join_error(e.to_string()))).collect(),
                }
            }
            Storage::S3(s) => s.remove_many(ids).await,
        }
    }

    /// The recording's file is complete (sealed and synced, or abandoned): S3 queues its
    /// upload. Never blocks; a full queue is caught by the uploader's next spool scan.
    pub fn finished(&self, id: &RecordingId) {
        if let Storage::S3(s) = self {
            s.queue_upload(id);
        }
    }
}

fn join_error(e: String) -> StorageError {
    StorageError::Io {
        path: PathBuf::new(),
        source: std::io::Error::other(format!("storage task failed: {e}")),
    }
}

/// Runs blocking file work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(join_error(e.to_string())))
}
