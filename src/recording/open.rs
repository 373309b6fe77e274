//! Opening a stored recording for reading: its wrapped data key from the database, unwrapped
//! by the key file, the file from storage, every chunk authenticated. Shared by the command
//! line (`recording decrypt | verify`, `export`) and the portal's playback.

use crate::ids::{KeyId, RecordingId};
use crate::recording::keys::{Dek, KeyError, Keyring, WrappedDek};
use crate::recording::reader::{ReadOutcome, read, read_header};
use crate::recording::storage::{Storage, StorageError};
use crate::store::{Store, StoreError};

/// A recording read whole: its stored bytes, its data key and what they read to.
pub struct Opened {
    pub id: RecordingId,
    pub bytes: Vec<u8>,
    pub dek: Dek,
    pub outcome: ReadOutcome,
}

/// Why a recording could not be opened (a damaged file is not an error here: it is an
/// [`Opened`] whose outcome says so).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(
        "recording {0}: its data key has been deleted (crypto-shredded); the audio can no longer be decrypted"
    )]
    Shredded(RecordingId),
    #[error("recording {id}: cannot unwrap its data key with key {key_id}: {source}")]
    Unwrap {
        id: RecordingId,
        key_id: KeyId,
        #[source]
        source: KeyError,
    },
    #[error("recording {id}: the file's header names recording {found}; refusing to use it")]
    WrongFile { id: RecordingId, found: RecordingId },
}

/// Unwraps the data key of `id` with `keyring`, reads the file and authenticates it.
pub async fn open_recording(
    store: &Store,
    storage: &Storage,
    keyring: &Keyring,
    id: RecordingId,
) -> Result<Opened, OpenError> {
    let (key_id, wrapped) = store
        .get_recording_key(&id)
        .await?
        .ok_or_else(|| OpenError::Shredded(id.clone()))?;
    let dek = keyring
        .unwrap_dek(&key_id, &WrappedDek(wrapped))
        .map_err(|source| OpenError::Unwrap {
            id: id.clone(),
            key_id: key_id.clone(),
            source,
        })?;
    let bytes = storage.read_all(&id).await?;
    // A file copied in under the wrong name: say so plainly rather than "authentication failed".
    if let Ok(h) = read_header(&bytes)
        && h.recording_id != id
    {
        return Err(OpenError::WrongFile {
            id,
            found: h.recording_id,
        });
    }
    let outcome = read(&bytes, &dek);
    Ok(Opened {
        id,
        bytes,
        dek,
        outcome,
    })
}
