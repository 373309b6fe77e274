//! `callgate keys init | rotate | list`. Key ids only, never key material.

use super::{CliError, open_existing_store, out};
use crate::config::Config;
use crate::ids::{KeyId, RecordingId};
use crate::recording::keys::{Keyring, WrappedDek};
use crate::store::Store;

pub(super) fn init(config: &Config) -> Result<u8, CliError> {
    let path = &config.keys.kek_file;
    let ring = Keyring::create(path)?;
    out(&format!(
        "created key file {} (mode 0600) with active key {}\nback it up separately from the recordings: without it no recording can be decrypted\n",
        path.display(),
        ring.active().id()
    ))?;
    Ok(0)
}

pub(super) async fn rotate(config: &Config) -> Result<u8, CliError> {
    let path = &config.keys.kek_file;
    // Everything that can fail before the key file changes is checked first: a valid key file
    // and a reachable database.
    Keyring::load(path)?;
    let store = open_existing_store(config).await?;
    let ring = Keyring::rotate(path)?;
    let new_id = ring.active().id().clone();
    tracing::info!(key_id = %new_id, "appended new active key-encryption key");

    let mut rewrapped = 0usize;
    let mut failed = 0usize;
    let mut per_key: Vec<(KeyId, usize)> = Vec::new();
    let old_ids: Vec<KeyId> = ring.ids().filter(|k| **k != new_id).cloned().collect();
    for old in &old_ids {
        let recs = store.recordings_wrapped_by(old).await?;
        let mut done = 0usize;
        for rec in &recs {
            match rewrap_one(&store, &ring, rec, old, &new_id).await {
                Ok(true) => done += 1,
                Ok(false) => {} // shredded or re-wrapped meanwhile
                Err(e) => {
                    failed += 1;
                    tracing::error!(recording_id = %rec, key_id = %old, error = %e, "cannot re-wrap data key");
                }
            }
        }
        rewrapped += done;
        per_key.push((old.clone(), done));
    }
    store.close().await;

    let mut text = format!("new active key {new_id} (in {})\n", path.display());
    for (k, n) in &per_key {
        text.push_str(&format!("re-wrapped {n} recording key(s) from {k}\n"));
    }
    text.push_str(&format!("total: {rewrapped} re-wrapped, {failed} failed\n"));
    out(&text)?;
    if failed > 0 {
        return Err(CliError::RotateIncomplete {
            new_key: new_id,
            failed,
        });
    }
    Ok(0)
}

/// Re-wraps one recording's DEK from `old` to `new`. `Ok(false)` if its key row is gone or no
/// longer wrapped by `old` (a concurrent shred or rotation).
async fn rewrap_one(
    store: &Store,
    ring: &Keyring,
    rec: &RecordingId,
    old: &KeyId,
    new: &KeyId,
) -> Result<bool, CliError> {
    let Some((key_id, wrapped)) = store.get_recording_key(rec).await? else {
        return Ok(false);
    };
    if &key_id != old {
        return Ok(false);
    }
    let dek = ring
        .unwrap_dek(old, &WrappedDek(wrapped))
        .map_err(|source| CliError::Unwrap {
            id: rec.clone(),
            key_id: old.clone(),
            source,
        })?;
    let new_wrapped = ring.active().wrap(&dek);
    debug_assert_eq!(ring.active().id(), new);
    store
        .rewrap_recording_key(rec, old, new, new_wrapped.as_bytes())
        .await?;
    Ok(true)
}

pub(super) async fn list(config: &Config) -> Result<u8, CliError> {
    let ring = Keyring::load(&config.keys.kek_file)?;
    let store = open_existing_store(config).await?;
    let active = ring.active().id().clone();
    let mut rows = Vec::new();
    for id in ring.ids() {
        let n = store.recordings_wrapped_by(id).await?.len();
        let status = if *id == active { "active" } else { "retired" };
        rows.push((id.to_string(), status, n));
    }
    store.close().await;
    let w = rows
        .iter()
        .map(|r| r.0.len())
        .max()
        .unwrap_or(0)
        .max("KEY ID".len());
    let mut text = format!("{:<w$}  {:<7}  RECORDINGS\n", "KEY ID", "STATUS");
    for (id, status, n) in rows {
        text.push_str(&format!("{id:<w$}  {status:<7}  {n}\n"));
    }
    out(&text)?;
    if ring.permissions_too_open() {
        tracing::warn!(
            file = %config.keys.kek_file.display(),
            "key file is readable or writable by group or others; chmod 600 it"
        );
    }
    Ok(0)
}
