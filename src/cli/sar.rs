//! `callgate sar --number N [--out DIR]`: a subject access export (dpo only).
//!
//! Finds every call whose from, to or dialled number is a spelling of N
//! ([`number_variants`]), and writes into a new private directory (mode 0700, files 0600):
//! `call-….json` (the call record, its recording's retention facts and tags) and, where the
//! audio still exists, `call-….wav` (stereo PCM16: left caller, right agent); then
//! `index.json` listing every call found and what was exported. Progress goes to stderr. The
//! audit entry is written before any file: no entry, no export.
//!
//! The export is for the DPO to review before release (third parties' data, staff notes).

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::calls::utc;
use super::recording::{open_row, storage, write_wav};
use super::{CliError, Ctx, DEFAULT_ROLE, open_existing_store, out};
use crate::audit::{NewEntry, action};
use crate::config::Config;
use crate::pii::PhoneNumber;
use crate::recording::reader::ReadStatus;
use crate::retention::RetentionError;
use crate::retention::service::{self, Permission, number_variants};
use crate::store::{Store, now_ms};

pub(super) async fn run(
    config: &Config,
    ctx: &Ctx,
    number: &str,
    out_dir: Option<&Path>,
) -> Result<u8, CliError> {
    let actor = ctx.actor(DEFAULT_ROLE);
    service::require(&actor, Permission::DataSubject)?;
    let Some(variants) = number_variants(number) else {
        return Err(CliError::Retention(RetentionError::BadText {
            field: "--number",
            problem: "not a phone number (digits, optionally + and spaces)",
        }));
    };
    let dir = match out_dir {
        Some(d) => d.to_path_buf(),
        None => {
            let stamp = utc(now_ms()).replace(['-', ':'], "").replace(' ', "-");
            PathBuf::from(format!("sar-{stamp}"))
        }
    };
    let storage = storage(config)?;
    let store = open_existing_store(config).await?;
    let res = export(config, &store, &storage, &actor, number, &variants, &dir).await;
    store.close().await;
    res
}

fn private_dir(dir: &Path) -> Result<(), CliError> {
    if dir.exists() {
        let empty = fs::read_dir(dir)
            .map(|mut d| d.next().is_none())
            .map_err(|source| CliError::Output {
                path: dir.to_path_buf(),
                source,
            })?;
        if !empty {
            return Err(CliError::SarOut {
                path: dir.to_path_buf(),
                problem: "exists and is not empty; give a new directory",
            });
        }
        return Ok(());
    }
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(|source| CliError::Output {
        path: dir.to_path_buf(),
        source,
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    use std::io::Write as _;
    let mut o = fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|source| CliError::Output {
            path: path.to_path_buf(),
            source,
        })
}

async fn export(
    config: &Config,
    store: &Store,
    storage: &crate::recording::storage::Storage,
    actor: &crate::audit::Actor,
    number: &str,
    variants: &[String],
    dir: &Path,
) -> Result<u8, CliError> {
    let calls = store.calls_by_numbers(variants).await?;
    private_dir(dir)?;
    let t = now_ms();
    store
        .audit_append(
            t,
            &[NewEntry::new(t, actor, action::SAR)
                .targets(calls.iter().map(|c| c.call_id.to_string()))
                .details(json!({
                    // Redacted: the audit log cannot be erased, so it holds no full number.
                    "number": PhoneNumber::new(number).to_string(),
                    "calls": calls.len(),
                    "out": dir.display().to_string(),
                }))],
        )
        .await?;

    let n = calls.len();
    let mut index = Vec::new();
    let mut wavs = 0usize;
    for (i, call) in calls.iter().enumerate() {
        let call_id = call.call_id.as_str();
        let rec_row = match &call.recording_id {
            Some(r) => store.get_recording(r).await?,
            None => store.recording_for_call(&call.call_id).await?,
        };
        let mut recording = serde_json::Value::Null;
        let mut wav_name = None;
        let mut status = "no recording".to_string();
        if let Some(row) = rec_row {
            let rec_id = row.recording_id.clone();
            let ret = store.get_retention(&rec_id).await?;
            let tags: Vec<_> = store
                .tags_of(&rec_id)
                .await?
                .into_iter()
                .map(|t| {
                    json!({
                        "tag": t.tag, "added_at_ms": t.added_at_ms,
                        "removed_at_ms": t.removed_at_ms, "note": t.note,
                    })
                })
                .collect();
            let tomb = store.get_tombstone(&rec_id).await?;
            recording = json!({
                "recording_id": rec_id.as_str(),
                "state": row.state,
                "created_at_ms": row.created_at_ms,
                "finished_at_ms": row.finished_at_ms,
                "expires_at_ms": ret.as_ref().and_then(|r| r.expires_at_ms),
                "restricted": ret.as_ref().is_some_and(|r| r.restricted_at_ms.is_some()),
                "tags": tags,
                "deleted": tomb.as_ref().map(|t| json!({"deleted_at_ms": t.deleted_at_ms, "rule": t.rule})),
            });
            status = if tomb.is_some() {
                "recording deleted".into()
            } else {
                match store.get_recording_key(&rec_id).await? {
                    None => "recording crypto-shredded".into(),
                    Some(_) => match open_row(config, store, storage, row).await {
                        Ok((rid, outcome))
                            if !matches!(outcome.status, ReadStatus::Damaged { .. }) =>
                        {
                            let name = format!("{call_id}.wav");
                            let secs = write_wav(&rid, &outcome, &dir.join(&name))?;
                            wav_name = Some(name);
                            wavs += 1;
                            format!("wav {secs:.1} s")
                        }
                        Ok(_) => "recording damaged; not exported".into(),
                        Err(e) => format!("recording not exported: {e}"),
                    },
                }
            };
        }
        let meta = json!({ "call": call, "recording": recording, "wav": wav_name });
        // Invariant: built from serialisable values only.
        let text = serde_json::to_string_pretty(&meta).expect("JSON value serialises");
        write_private(&dir.join(format!("{call_id}.json")), text.as_bytes())?;
        eprintln!("sar: [{}/{n}] {call_id}: {status}", i + 1);
        index.push(json!({
            "call_id": call_id,
            "started_utc": utc(call.started_at_ms),
            "metadata": format!("{call_id}.json"),
            "wav": wav_name,
            "status": status,
        }));
    }
    let idx = json!({
        "number": number,
        "spellings_matched": variants,
        "generated_utc": utc(now_ms()),
        "calls": index,
    });
    let text = serde_json::to_string_pretty(&idx).expect("JSON value serialises");
    write_private(&dir.join("index.json"), text.as_bytes())?;
    out(&format!(
        "subject access export in {}: {n} call(s), {wavs} recording(s) as WAV, index.json\n",
        dir.display()
    ))?;
    Ok(0)
}
