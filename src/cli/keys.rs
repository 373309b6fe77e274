//! `callgate keys init | rotate | list | retire`. Key ids only, never key material. Every
//! change is an audit entry (`key.init`, `key.rotate`, `key.retire`).

use std::path::Path;

use serde_json::json;

use super::{CliError, Ctx, DEFAULT_ROLE, open_existing_store, out};
use crate::audit::{NewEntry, action};
use crate::config::Config;
use crate::ids::{KeyId, RecordingId};
use crate::recording::open::OpenError;
use crate::recording::keys::{KEK_LINE_TAG, Keyring, WrappedDek};
use crate::store::{Store, now_ms};

/// `keys init` runs before the gateway ever did: it may create the database (to audit).
pub(super) async fn init(config: &Config, ctx: &Ctx) -> Result<u8, CliError> {
    let path = &config.keys.kek_file;
    // The database first: if it is unreachable, no unaudited key is created.
    let store = Store::connect(&config.database.url).await?;
    let ring = match Keyring::create(path) {
        Ok(r) => r,
        Err(e) => {
            store.close().await;
            return Err(e.into());
        }
    };
    let actor = ctx.actor(DEFAULT_ROLE);
    let t = now_ms();
    let res = store
        .audit_append(
            t,
            &[NewEntry::new(t, &actor, action::KEY_INIT)
                .target(ring.active().id().as_str())
                .details(json!({ "file": path.display().to_string() }))],
        )
        .await;
    store.close().await;
    res?;
    out(&format!(
        "created key file {} (mode 0600) with active key {}\nback it up separately from the recordings: without it no recording can be decrypted\n",
        path.display(),
        ring.active().id()
    ))?;
    Ok(0)
}

pub(super) async fn rotate(config: &Config, ctx: &Ctx) -> Result<u8, CliError> {
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
    let actor = ctx.actor(DEFAULT_ROLE);
    let t = now_ms();
    let mut entry = NewEntry::new(t, &actor, action::KEY_ROTATE)
        .target(new_id.as_str())
        .details(json!({
            "new_key": new_id.as_str(),
            "rewrapped": rewrapped,
            "failed": failed,
            "from": per_key.iter().map(|(k, n)| json!({"key": k.as_str(), "rewrapped": n})).collect::<Vec<_>>(),
        }));
    entry.targets.extend(old_ids.iter().map(|k| k.to_string()));
    let audited = store.audit_append(t, &[entry]).await;
    store.close().await;
    audited?;

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
        .map_err(|source| OpenError::Unwrap {
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

/// Removes a non-active key from the key file once no recording key is wrapped by it.
///
/// A gateway started before the last rotation still wraps new recordings with its old active
/// key until restarted; the check below counts what the database holds *now*, so restart the
/// gateway after rotating and before retiring. Retiring also makes database backups taken
/// before the rotation undecryptable (their wrapped keys need the retired key): that is the
/// point of retiring.
pub(super) async fn retire(config: &Config, ctx: &Ctx, key_id: &str) -> Result<u8, CliError> {
    let path = &config.keys.kek_file;
    let ring = Keyring::load(path)?;
    let key_id = KeyId::from_string(key_id);
    if ring.get(&key_id).is_none() {
        return Err(CliError::UnknownKeyId {
            key_id,
            file: path.clone(),
        });
    }
    if ring.active().id() == &key_id {
        return Err(CliError::RetireActive(key_id));
    }
    let store = open_existing_store(config).await?;
    let res = async {
        let count = store.recordings_wrapped_by(&key_id).await?.len();
        if count > 0 {
            return Err(CliError::KeyInUse {
                key_id: key_id.clone(),
                count,
            });
        }
        let actor = ctx.actor(DEFAULT_ROLE);
        let t = now_ms();
        // Audit first: if the entry cannot be written, the key stays.
        store
            .audit_append(
                t,
                &[NewEntry::new(t, &actor, action::KEY_RETIRE)
                    .target(key_id.as_str())
                    .details(json!({ "file": path.display().to_string() }))],
            )
            .await?;
        remove_key_line(path, &key_id)
    }
    .await;
    store.close().await;
    res?;
    out(&format!(
        "retired key {key_id}: removed from {} (no recording key was wrapped by it)\n",
        path.display()
    ))?;
    Ok(0)
}

/// Rewrites the key file without `key_id`'s line: temporary file (0600), fsync, check it
/// loads, rename.
fn remove_key_line(path: &Path, key_id: &KeyId) -> Result<(), CliError> {
    use std::io::Write as _;
    let io_err = |source| CliError::Output {
        path: path.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(io_err)?;
    let mut kept = String::new();
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        if f.next() == Some(KEK_LINE_TAG) && f.next() == Some(key_id.as_str()) {
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", crate::ids::random_hex(4)));
    let tmp = std::path::PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let mut f = o.open(&tmp)?;
        f.write_all(kept.as_bytes())?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(e));
    }
    // The result must still be a valid key file with the active key in it.
    if let Err(e) = Keyring::load(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(e));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}
