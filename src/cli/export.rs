//! `callgate export --case REF --out BUNDLE.zip ID...` and `callgate export verify BUNDLE.zip`
//! (the bundle format and what verify proves: [`crate::export`]).
//!
//! Export (investigator or dpo; a restricted recording: dpo only) is all or nothing: every id is
//! resolved and authorised, and every recording read and authenticated, before the bundle is
//! published; a deleted, crypto-shredded or damaged recording refuses the whole export. The
//! bundle is built in a private temporary file beside `--out`, the `export.create` audit entry
//! (naming the manifest's SHA-256) is appended, and only then is the file linked to `--out`,
//! which is never overwritten. No entry, no bundle.

use std::path::Path;

use serde_json::json;

use super::calls::utc;
use super::recording::{open_row_full, parse_target, resolve, storage};
use super::{CliError, Ctx, DEFAULT_ROLE, EXIT_BAD, open_existing_store, out};
use crate::audit::{Actor, NewEntry, action, hex};
use crate::config::Config;
use crate::export::bundle::{self, BundleWriter, PrivateTemp, temp_beside};
use crate::export::{
    AUDIT, AuditExcerpt, Ending, Exporter, FORMAT, MANIFEST, Manifest, Problem, README,
    RecordingFacts, TagFact, container_name, sha256_hex, wav_name,
};
use crate::recording::container::SAMPLE_RATE;
use crate::recording::reader::ReadStatus;
use crate::recording::storage::Storage;
use crate::recording::wav::render_stereo_wav;
use crate::retention::RetentionError;
use crate::retention::service::{self, Permission};
use crate::store::{CallRecord, RecordingRow, Store, now_ms};

pub(super) async fn create(
    config: &Config,
    ctx: &Ctx,
    case_ref: &str,
    reason: Option<&str>,
    out_path: &Path,
    ids: &[String],
) -> Result<u8, CliError> {
    let actor = ctx.actor(DEFAULT_ROLE);
    service::require(&actor, Permission::Export)?;
    service::check_case_ref(case_ref)?;
    if let Some(r) = reason {
        service::check_text("--reason", r, true)?;
    }
    let targets = ids
        .iter()
        .map(|id| parse_target(id))
        .collect::<Result<Vec<_>, _>>()?;
    if out_path.exists() {
        return Err(bundle::BundleError::Exists(out_path.to_owned()).into());
    }
    let storage = storage(config)?;
    let store = open_existing_store(config).await?;
    let res = async {
        // All ids resolved and authorised before any audio is touched.
        let mut rows: Vec<RecordingRow> = Vec::new();
        for t in targets {
            let row = resolve(&store, t).await?;
            if rows.iter().any(|r| r.recording_id == row.recording_id) {
                continue;
            }
            if store.get_tombstone(&row.recording_id).await?.is_some() {
                return Err(RetentionError::Deleted(row.recording_id).into());
            }
            service::authorize_playback(&store, &actor, &row.recording_id).await?;
            rows.push(row);
        }
        if rows.len() > crate::export::MAX_RECORDINGS {
            return Err(CliError::TooManyRecordings(rows.len()));
        }
        write_bundle(
            config, &store, &storage, &actor, case_ref, reason, out_path, rows,
        )
        .await
    }
    .await;
    store.close().await;
    let (n, size, entry_seq, entry_hash) = res?;
    out(&format!(
        "{}: case {case_ref}, {n} recording(s), {size} bytes; audit entry #{entry_seq} {entry_hash}\n\
         (give this line to whoever receives the bundle: `callgate export verify` shows the same entry)\n",
        out_path.display()
    ))?;
    Ok(0)
}

#[allow(clippy::too_many_arguments)]
async fn write_bundle(
    config: &Config,
    store: &Store,
    storage: &Storage,
    actor: &Actor,
    case_ref: &str,
    reason: Option<&str>,
    out_path: &Path,
    rows: Vec<RecordingRow>,
) -> Result<(usize, u64, i64, String), CliError> {
    let mut w = BundleWriter::create(out_path)?;
    w.add_bytes(README, readme(case_ref).as_bytes())?;
    let mut facts = Vec::new();
    let mut touched: Vec<String> = vec![case_ref.to_owned()];
    for row in rows {
        let call = store.get_call(&row.call_id).await?;
        let sha256_at_hangup = row.sha256.clone();
        let o = open_row_full(config, store, storage, row.clone()).await?;
        let ending = match &o.outcome.status {
            ReadStatus::Complete => Ending::Complete,
            ReadStatus::Truncated { .. } => Ending::Truncated,
            ReadStatus::Damaged { .. } => {
                return Err(CliError::Damaged {
                    id: o.id,
                    status: o.outcome.status,
                });
            }
        };
        let rec = o.id.as_str().to_owned();
        w.add_bytes(&container_name(&rec), &o.bytes)?;
        let tmp_path = temp_beside(out_path, "wav");
        let tmp = PrivateTemp::create(tmp_path.clone()).map_err(|source| CliError::Output {
            path: tmp_path,
            source,
        })?;
        let report = render_stereo_wav(&o.outcome, tmp.path()).map_err(|source| CliError::Wav {
            id: o.id.clone(),
            source,
        })?;
        w.add_file(&wav_name(&rec), tmp.path())?;
        drop(tmp);
        let tags = store
            .tags_of(&o.id)
            .await?
            .into_iter()
            .filter(|t| t.removed_at_ms.is_none())
            .map(|t| TagFact {
                tag: t.tag,
                added_utc: utc(t.added_at_ms),
            })
            .collect();
        let held_for_case = store
            .holds_of(&o.id)
            .await?
            .iter()
            .any(|h| h.case_ref == case_ref && h.released_at_ms.is_none());
        touched.push(rec.clone());
        touched.push(row.call_id.to_string());
        facts.push(RecordingFacts {
            recording_id: rec.clone(),
            call_id: row.call_id.to_string(),
            ending,
            chunks: o.outcome.chunks_ok,
            audio_seconds: report.frames as f64 / f64::from(SAMPLE_RATE),
            container: container_name(&rec),
            wav: wav_name(&rec),
            sha256_at_hangup,
            data_key: hex(o.dek.as_bytes()),
            held_for_case,
            tags,
            call: call
                .as_ref()
                .map(call_facts)
                .unwrap_or(serde_json::Value::Null),
        });
        if ending == Ending::Truncated {
            eprintln!(
                "callgate: warning: recording {rec} is truncated after {} chunks; exported as such",
                o.outcome.chunks_ok
            );
        }
    }

    let t = now_ms();
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        case: case_ref.to_owned(),
        created_at_ms: t,
        created_utc: utc(t),
        exported_by: Exporter {
            actor: actor.name.clone(),
            role: actor.role.as_str().to_owned(),
        },
        generator: format!("callgate {}", env!("CARGO_PKG_VERSION")),
        recordings: facts,
        files: w.files().to_vec(),
    };
    // Invariant: plain serialisable data.
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    let manifest_sha = sha256_hex(&manifest_bytes);
    w.add_unlisted(MANIFEST, &manifest_bytes)?;

    let n = manifest.recordings.len();
    let file_name = out_path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let entry = store
        .audit_append(
            t,
            &[NewEntry::new(t, actor, action::EXPORT)
                .target(case_ref)
                .targets(manifest.recordings.iter().map(|r| r.recording_id.clone()))
                .reason(reason)
                .details(json!({
                    "case": case_ref,
                    "manifest_sha256": manifest_sha,
                    "bundle": file_name,
                    "recordings": n,
                }))],
        )
        .await?
        .pop()
        // Invariant: one entry appended, one returned.
        .expect("appended entry returned");
    let mut entries = store
        .audit_entries_targeting(&touched, entry.seq - 1)
        .await?;
    entries.push(entry.clone());
    let excerpt = AuditExcerpt {
        format: FORMAT.to_owned(),
        entries,
    };
    let excerpt_bytes = serde_json::to_vec_pretty(&excerpt).expect("excerpt serialises");
    w.add_unlisted(AUDIT, &excerpt_bytes)?;
    let size = w.publish().map_err(|e| CliError::ExportUnpublished {
        seq: entry.seq,
        source: e,
    })?;
    Ok((n, size, entry.seq, entry.hash))
}

/// What a third party needs of the call: parties, times, the announcement (consent), and the
/// keypad-protection pauses (counts and times only, never digits). Not the route target, SIP
/// Call-ID or codecs: internal plumbing.
fn call_facts(c: &CallRecord) -> serde_json::Value {
    let t = |ms: Option<i64>| ms.map(utc);
    json!({
        "direction": c.direction,
        "customer_leg": c.customer_leg,
        "from": c.from_number.expose(),
        "to": c.to_number.expose(),
        "dialled": c.dialled.expose(),
        "started_utc": utc(c.started_at_ms),
        "answered_utc": t(c.answered_at_ms),
        "bridged_utc": t(c.bridged_at_ms),
        "ended_utc": t(c.ended_at_ms),
        "hangup_cause": c.hangup_cause,
        "hangup_side": c.hangup_side,
        "announcement": {
            "state": c.announcement_state,
            "sha256": c.announcement_sha256,
            "started_utc": t(c.announcement_started_at_ms),
            "ended_utc": t(c.announcement_ended_at_ms),
        },
        "keypad_pauses": c.pauses,
        "packets": {
            "caller": c.caller_packets, "caller_lost": c.caller_lost,
            "agent": c.agent_packets, "agent_lost": c.agent_lost,
        },
    })
}

fn readme(case_ref: &str) -> String {
    format!(
        "callgate investigation bundle ({FORMAT}), case {case_ref}\n\
         \n\
         recordings/<id>.wav    stereo PCM16 8 kHz, left = customer, right = agent\n\
         recordings/<id>.cgrec  the encrypted recording as stored by the gateway\n\
         manifest.json          the case, the exporter, each recording's facts and data key,\n\
         \x20                      and every file's size and SHA-256\n\
         audit.json             the audit log's entries about these recordings, ending with\n\
         \x20                      the export entry that names manifest.json's SHA-256\n\
         \n\
         Check it: callgate export verify BUNDLE.zip\n\
         It authenticates each recording under its data key, re-renders each WAV and compares,\n\
         checks every file against the manifest and every audit entry's hash. Compare the\n\
         export entry's number and hash it prints with the line given at export time.\n\
         \n\
         This bundle holds personal data (voices, phone numbers). Keep it only as long as the\n\
         case needs it.\n"
    )
}

/// `export verify BUNDLE.zip [--log]`: exit 0 intact, 1 with one line per problem.
pub(super) async fn verify(
    config: &Config,
    ctx: &Ctx,
    path: &Path,
    against_log: bool,
) -> Result<u8, CliError> {
    if against_log {
        service::require(&ctx.actor(DEFAULT_ROLE), Permission::ReadAudit)?;
    }
    let mut v = bundle::verify(path)?;
    let mut log_line = None;
    if against_log && let Some(ex) = v.excerpt.clone() {
        let store = open_existing_store(config).await?;
        let res = async {
            let (count, head) = super::audit::verify_store(&store).await?;
            for e in &ex.entries {
                match store.audit_entry(e.seq).await? {
                    Some(stored) if stored == *e => {}
                    Some(_) => v.problems.push(Problem::Log(format!(
                        "entry #{} differs from this gateway's entry #{}",
                        e.seq, e.seq
                    ))),
                    None => v.problems.push(Problem::Log(format!(
                        "entry #{} is not in this gateway's log",
                        e.seq
                    ))),
                }
            }
            Ok::<_, CliError>(format!(
                "this gateway's audit log is intact ({count} entries, head {head}) and holds every entry of audit.json unchanged"
            ))
        }
        .await;
        store.close().await;
        log_line = Some(res?);
    }
    let name = path.display();
    let mut text = String::new();
    for p in &v.problems {
        text.push_str(&format!("{name}: {p}\n"));
    }
    let intact = match (&v.manifest, &v.export) {
        (Some(m), Some(e)) if v.problems.is_empty() => Some((m, e)),
        _ => None,
    };
    let Some((m, e)) = intact else {
        text.push_str(&format!(
            "{name}: NOT INTACT: {} problem(s); {} file(s) and {} recording(s) checked out\n",
            v.problems.len(),
            v.files_ok,
            v.recordings_ok
        ));
        out(&text)?;
        return Ok(EXIT_BAD);
    };
    text.push_str(&format!(
        "{name}: ok: case {}, {} recording(s) authenticated and re-rendered to their WAV, {} file(s) match the manifest\n\
         exported by {} ({}) at {} UTC; audit entry #{} {}\n",
        m.case,
        v.recordings_ok,
        v.files_ok,
        e.actor,
        e.role,
        utc(e.at_ms),
        e.seq,
        e.hash
    ));
    if let Some(l) = log_line {
        text.push_str(&format!("{l}\n"));
    }
    out(&text)?;
    Ok(0)
}
