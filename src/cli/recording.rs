//! `callgate recording verify | decrypt`: read the database and the files directly, so they work
//! while the gateway is stopped. Both are read-only towards the database and the recording.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{CliError, Ctx, EXIT_BAD, open_existing_store, out};
use crate::audit::Role;
use crate::config::Config;
use crate::ids::{CallId, RecordingId};
use crate::recording::container::SAMPLE_RATE;
use crate::recording::keys::Keyring;
use crate::recording::open::open_recording;
use crate::recording::reader::{ReadOutcome, ReadStatus};
use crate::recording::storage::Storage;
use crate::recording::wav::render_stereo_wav;
use crate::store::{RecordingRow, Store};

/// The recording storage named by `[recording] storage`.
pub(super) fn storage(config: &Config) -> Result<Storage, CliError> {
    Ok(Storage::from_config(&config.recording)?)
}

/// What the user typed as ID.
pub(super) enum Target {
    Recording(RecordingId),
    Call(CallId),
}

/// `rec-…` or `call-…`; checked before anything is opened.
pub(super) fn parse_target(id: &str) -> Result<Target, CliError> {
    if id.starts_with("rec-") {
        Ok(Target::Recording(RecordingId::from_string(id)))
    } else if id.starts_with("call-") {
        Ok(Target::Call(CallId::from_string(id)))
    } else {
        Err(CliError::InvalidId { id: id.to_owned() })
    }
}

/// The recording row of a recording id, or of a call's recording.
pub(super) async fn resolve(store: &Store, target: Target) -> Result<RecordingRow, CliError> {
    let rec_id = match target {
        Target::Recording(r) => r,
        Target::Call(call_id) => {
            let call = store
                .get_call(&call_id)
                .await?
                .ok_or_else(|| CliError::UnknownCall(call_id.clone()))?;
            match call.recording_id {
                Some(r) => r,
                None => {
                    return store.recording_for_call(&call_id).await?.ok_or(
                        CliError::CallNotRecorded {
                            call_id,
                            state: call.recording_state,
                        },
                    );
                }
            }
        }
    };
    store
        .get_recording(&rec_id)
        .await?
        .ok_or(CliError::UnknownRecording(rec_id))
}

/// Looks up, unwraps and reads a recording: (id, outcome).
async fn open(config: &Config, id: &str) -> Result<(RecordingId, ReadOutcome), CliError> {
    let target = parse_target(id)?;
    let storage = storage(config)?;
    let store = open_existing_store(config).await?;
    let res = open_with(config, &store, &storage, target).await;
    store.close().await;
    res
}

async fn open_with(
    config: &Config,
    store: &Store,
    storage: &Storage,
    target: Target,
) -> Result<(RecordingId, ReadOutcome), CliError> {
    let row = resolve(store, target).await?;
    open_row(config, store, storage, row).await
}

/// Unwraps and reads the recording of `row`.
pub(super) async fn open_row(
    config: &Config,
    store: &Store,
    storage: &Storage,
    row: RecordingRow,
) -> Result<(RecordingId, ReadOutcome), CliError> {
    let o = open_row_full(config, store, storage, row).await?;
    Ok((o.id, o.outcome))
}

pub(super) use crate::recording::open::Opened;

/// [`open_row`], keeping the container bytes and the data key (for export bundles).
pub(super) async fn open_row_full(
    config: &Config,
    store: &Store,
    storage: &Storage,
    row: RecordingRow,
) -> Result<Opened, CliError> {
    let keyring = Keyring::load(&config.keys.kek_file)?;
    if keyring.permissions_too_open() {
        tracing::warn!(
            file = %config.keys.kek_file.display(),
            "key file is readable or writable by group or others; chmod 600 it"
        );
    }
    Ok(open_recording(store, storage, &keyring, row.recording_id).await?)
}

/// One line on stdout; exit 0 only for a complete recording.
pub(super) async fn verify(config: &Config, id: &str) -> Result<u8, CliError> {
    let (rec_id, outcome) = open(config, id).await?;
    let (line, code) = match &outcome.status {
        ReadStatus::Complete => (
            format!(
                "{rec_id}: ok ({} chunks authenticated, complete)",
                outcome.chunks_ok
            ),
            0,
        ),
        ReadStatus::Truncated { chunks_ok } => (
            format!(
                "{rec_id}: truncated after {chunks_ok} chunks (each of them authenticates; the end is missing)"
            ),
            EXIT_BAD,
        ),
        ReadStatus::Damaged {
            chunk_index: Some(i),
            cause,
        } => (format!("{rec_id}: damaged at chunk {i}: {cause}"), EXIT_BAD),
        ReadStatus::Damaged {
            chunk_index: None,
            cause,
        } => (format!("{rec_id}: damaged header: {cause}"), EXIT_BAD),
    };
    out(&format!("{line}\n"))?;
    Ok(code)
}

/// Role of `recording decrypt` when `--role` is not given (backwards compatible: it worked
/// without a role before roles existed; admins may not listen to calls).
pub(super) const DECRYPT_DEFAULT_ROLE: Role = Role::Supervisor;

/// Checks role and restriction, unwraps, audits, then renders the WAV via a private temporary
/// file renamed into place: a refused or failed render leaves no (partial) output behind, and
/// an existing file is replaced only by a whole one.
pub(super) async fn decrypt(
    config: &Config,
    ctx: &Ctx,
    id: &str,
    out_path: &Path,
) -> Result<u8, CliError> {
    let actor = ctx.actor(DECRYPT_DEFAULT_ROLE);
    let target = parse_target(id)?;
    let storage = storage(config)?;
    let store = open_existing_store(config).await?;
    let res = async {
        let row = resolve(&store, target).await?;
        crate::retention::service::authorize_playback(&store, &actor, &row.recording_id).await?;
        let (rec_id, outcome) = open_row(config, &store, &storage, row).await?;
        if let ReadStatus::Damaged { .. } = outcome.status {
            return Err(CliError::Damaged {
                id: rec_id,
                status: outcome.status,
            });
        }
        // Audited before any audio is written: no entry, no audio.
        crate::retention::service::record_playback(
            &store,
            &actor,
            &rec_id,
            serde_json::json!({ "out": out_path.display().to_string() }),
            crate::store::now_ms(),
        )
        .await?;
        Ok((rec_id, outcome))
    }
    .await;
    store.close().await;
    let (rec_id, outcome) = res?;
    let secs = write_wav(&rec_id, &outcome, out_path)?;
    out(&format!(
        "{}: {secs:.1} s, stereo PCM16 8 kHz (left caller, right agent) from {rec_id}\n",
        out_path.display()
    ))?;
    Ok(0)
}

/// Renders `outcome` to `out_path` atomically (mode 0600); returns the seconds of audio. A
/// truncated recording is rendered with a warning on stderr.
pub(super) fn write_wav(
    rec_id: &RecordingId,
    outcome: &ReadOutcome,
    out_path: &Path,
) -> Result<f64, CliError> {
    let rec_id = rec_id.clone();
    let tmp = temp_path(out_path);
    create_private(&tmp).map_err(|source| CliError::Output {
        path: tmp.clone(),
        source,
    })?;
    let report = match render_stereo_wav(outcome, &tmp) {
        Ok(r) => r,
        Err(source) => {
            let _ = fs::remove_file(&tmp);
            return Err(CliError::Wav { id: rec_id, source });
        }
    };
    if let Err(source) = fs::rename(&tmp, out_path) {
        let _ = fs::remove_file(&tmp);
        return Err(CliError::Output {
            path: out_path.to_owned(),
            source,
        });
    }
    let secs = report.frames as f64 / f64::from(SAMPLE_RATE);
    if report.truncated {
        let _ = writeln!(
            std::io::stderr(),
            "callgate: warning: recording {rec_id} is truncated after {} chunks; the WAV holds only the {secs:.1} s before the cut",
            outcome.chunks_ok
        );
    }
    Ok(secs)
}

fn temp_path(out_path: &Path) -> PathBuf {
    let name = out_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "recording.wav".into());
    out_path.with_file_name(format!(".{name}.tmp-{}", crate::ids::random_hex(4)))
}

/// Creates `path` exclusively, mode 0600: decrypted call audio is personal data.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut o = fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path).map(drop)
}
