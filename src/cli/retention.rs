//! `callgate tag | hold | sweep | erase | restrict | unrestrict | retention show`: thin
//! wrappers over [`crate::retention::service`] and the sweeper.

use std::fmt::Write as _;

use super::calls::utc;
use super::recording::{parse_target, resolve, storage};
use super::{CliError, Ctx, DEFAULT_ROLE, open_existing_store, out};
use crate::config::Config;
use crate::ids::RecordingId;
use crate::retention::policy::{Decision, Policy};
use crate::retention::service::{self, Permission, TagAdded};
use crate::retention::sweeper::{SweepOptions, node_name, sweep_once};
use crate::store::{Store, now_ms};

fn when(ms: Option<i64>) -> String {
    match ms {
        Some(ms) => format!("{} UTC", utc(ms)),
        None => "never (kept while held or under investigation)".into(),
    }
}

fn describe(d: &Decision) -> String {
    format!("expires {} (rule {})", when(d.expires_at_ms), d.rule)
}

/// Resolves many ids with one store.
async fn resolve_ids(store: &Store, ids: &[String]) -> Result<Vec<RecordingId>, CliError> {
    let mut out = Vec::new();
    for id in ids {
        out.push(resolve(store, parse_target(id)?).await?.recording_id);
    }
    Ok(out)
}

/// Opens the store, runs `f`, closes the store whatever happened.
macro_rules! with_store {
    ($config:expr, |$store:ident| $body:expr) => {{
        let $store = open_existing_store($config).await?;
        let res: Result<u8, CliError> = async { $body }.await;
        $store.close().await;
        res
    }};
}

pub(super) async fn tag_add(
    config: &Config,
    ctx: &Ctx,
    id: &str,
    tag: &str,
    note: Option<&str>,
) -> Result<u8, CliError> {
    let target = parse_target(id)?;
    with_store!(config, |store| {
        let rec = resolve(&store, target).await?.recording_id;
        let actor = ctx.actor(DEFAULT_ROLE);
        match service::tag_add(&store, &config.retention, &actor, &rec, tag, note, now_ms()).await?
        {
            TagAdded::Added(d) => out(&format!("{rec}: tagged {tag}; {}\n", describe(&d)))?,
            TagAdded::AlreadyTagged(t) => out(&format!(
                "{rec}: already tagged {tag} (by {} at {}); unchanged\n",
                t.added_by,
                when(Some(t.added_at_ms))
            ))?,
        }
        Ok(0)
    })
}

pub(super) async fn tag_remove(
    config: &Config,
    ctx: &Ctx,
    id: &str,
    tag: &str,
    reason: Option<&str>,
) -> Result<u8, CliError> {
    let target = parse_target(id)?;
    with_store!(config, |store| {
        let rec = resolve(&store, target).await?.recording_id;
        let actor = ctx.actor(DEFAULT_ROLE);
        let d = service::tag_remove(
            &store,
            &config.retention,
            &actor,
            &rec,
            tag,
            reason,
            now_ms(),
        )
        .await?;
        out(&format!("{rec}: tag {tag} removed; {}\n", describe(&d)))?;
        Ok(0)
    })
}

pub(super) async fn hold_create(
    config: &Config,
    ctx: &Ctx,
    case_ref: &str,
    reason: &str,
    ids: &[String],
) -> Result<u8, CliError> {
    for id in ids {
        parse_target(id)?;
    }
    with_store!(config, |store| {
        let recs = resolve_ids(&store, ids).await?;
        let actor = ctx.actor(DEFAULT_ROLE);
        let r = service::hold_create(
            &store,
            &config.retention,
            &actor,
            case_ref,
            reason,
            &recs,
            now_ms(),
        )
        .await?;
        let mut text = format!(
            "legal hold {case_ref} {}: {} recording(s) attached\n",
            if r.new_case { "created" } else { "extended" },
            r.attached.len()
        );
        for rec in &r.attached {
            let _ = writeln!(
                text,
                "  {rec}: held (never swept nor erased while the hold is open)"
            );
        }
        out(&text)?;
        Ok(0)
    })
}

pub(super) async fn hold_release(
    config: &Config,
    ctx: &Ctx,
    case_ref: &str,
    reason: Option<&str>,
) -> Result<u8, CliError> {
    with_store!(config, |store| {
        let actor = ctx.actor(DEFAULT_ROLE);
        let recs = service::hold_release(
            &store,
            &config.retention,
            &actor,
            case_ref,
            reason,
            now_ms(),
        )
        .await?;
        let mut text = format!(
            "legal hold {case_ref} released ({} recording(s))\n",
            recs.len()
        );
        for (rec, d) in &recs {
            let _ = writeln!(text, "  {rec}: {}", describe(d));
        }
        out(&text)?;
        Ok(0)
    })
}

pub(super) async fn hold_list(config: &Config) -> Result<u8, CliError> {
    with_store!(config, |store| {
        let holds = store.list_holds().await?;
        let mut text = String::new();
        for h in &holds {
            let n = store.hold_items(&h.case_ref).await?.len();
            let state = match h.released_at_ms {
                None => "open".to_string(),
                Some(t) => format!(
                    "released {} by {}",
                    when(Some(t)),
                    h.released_by.as_deref().unwrap_or("?")
                ),
            };
            let _ = writeln!(
                text,
                "{}  {state}  {n} recording(s)  created {} by {}: {}",
                h.case_ref,
                when(Some(h.created_at_ms)),
                h.created_by,
                h.reason.replace(['\n', '\r'], " ")
            );
        }
        if holds.is_empty() {
            text.push_str("(no legal holds)\n");
        }
        out(&text)?;
        Ok(0)
    })
}

pub(super) async fn sweep(
    config: &Config,
    ctx: &Ctx,
    dry_run: bool,
    policy_now_ms: i64,
) -> Result<u8, CliError> {
    let actor = ctx.actor(DEFAULT_ROLE);
    service::require(&actor, Permission::Sweep)?;
    let storage = storage(config)?;
    with_store!(config, |store| {
        let policy = Policy::from_config(&config.retention);
        let mut opts = SweepOptions::new(format!("cli:{}", node_name()));
        opts.dry_run = dry_run;
        let r = sweep_once(
            &store,
            &storage,
            &policy,
            &actor,
            &opts,
            policy_now_ms,
            None,
        )
        .await?;
        let mut text = String::new();
        for c in &r.would_delete {
            let _ = writeln!(
                text,
                "would delete {} (rule {}, expired {})",
                c.recording_id,
                c.retention_rule.as_deref().unwrap_or("?"),
                when(c.expires_at_ms)
            );
        }
        for d in &r.deleted {
            let t = &d.tombstone;
            let _ = writeln!(
                text,
                "deleted {} (rule {}, expired {}){}",
                t.recording_id,
                t.rule,
                when(t.expired_at_ms),
                if d.finished {
                    ""
                } else {
                    ": key destroyed, file removal pending"
                }
            );
        }
        if r.calls_redacted > 0 {
            let _ = writeln!(
                text,
                "{} the numbers of {} call row(s) without audio (older than the default retention)",
                if dry_run { "would redact" } else { "redacted" },
                r.calls_redacted
            );
        }
        let _ = writeln!(
            text,
            "sweep{}: {} {}, {} recovered, {} expiries computed, {} error(s); next expiry {}",
            if dry_run { " (dry run)" } else { "" },
            if dry_run {
                r.would_delete.len()
            } else {
                r.deleted.len()
            },
            if dry_run {
                "would be deleted"
            } else {
                "deleted"
            },
            r.recovered,
            r.reconciled,
            r.errors,
            match r.next_expiry_ms {
                Some(t) => when(Some(t)),
                None => "none".into(),
            }
        );
        out(&text)?;
        Ok(if r.errors > 0 { super::EXIT_BAD } else { 0 })
    })
}

pub(super) async fn erase(
    config: &Config,
    ctx: &Ctx,
    id: &str,
    reason: &str,
) -> Result<u8, CliError> {
    let target = parse_target(id)?;
    let storage = storage(config)?;
    with_store!(config, |store| {
        let actor = ctx.actor(DEFAULT_ROLE);
        let rec = match resolve(&store, target).await {
            Ok(r) => r.recording_id,
            // A call that was never recorded: its numbers are what there is to erase.
            Err(CliError::CallNotRecorded { call_id, .. }) => {
                service::erase_call(&store, &actor, &call_id, reason, now_ms()).await?;
                out(&format!(
                    "{call_id}: erased (no recording; numbers and Call-ID redacted)\n"
                ))?;
                return Ok(0);
            }
            Err(e) => return Err(e),
        };
        let open_tags: Vec<String> = store
            .tags_of(&rec)
            .await?
            .into_iter()
            .filter(|t| t.removed_at_ms.is_none())
            .map(|t| t.tag)
            .collect();
        let t = service::erase(
            &store,
            &storage,
            &config.retention,
            &actor,
            &rec,
            reason,
            now_ms(),
        )
        .await?;
        if !open_tags.is_empty() {
            eprintln!(
                "callgate: note: {rec} had tags {} when erased",
                open_tags.join(", ")
            );
        }
        out(&format!(
            "{}: erased (data key destroyed, file removed, tombstone at {})\n",
            t.recording_id,
            when(Some(t.deleted_at_ms))
        ))?;
        Ok(0)
    })
}

pub(super) async fn restrict(
    config: &Config,
    ctx: &Ctx,
    id: &str,
    on: bool,
    reason: Option<&str>,
) -> Result<u8, CliError> {
    let target = parse_target(id)?;
    with_store!(config, |store| {
        let rec = resolve(&store, target).await?.recording_id;
        let actor = ctx.actor(DEFAULT_ROLE);
        service::set_restricted(&store, &actor, &rec, on, reason, now_ms()).await?;
        out(&format!(
            "{rec}: {}\n",
            if on {
                "restricted (playback and export only for the dpo role)"
            } else {
                "restriction lifted"
            }
        ))?;
        Ok(0)
    })
}

pub(super) async fn show(config: &Config, id: &str, json: bool, now: i64) -> Result<u8, CliError> {
    let target = parse_target(id)?;
    with_store!(config, |store| {
        let rec = resolve(&store, target).await?.recording_id;
        let s = service::status(&store, &config.retention, &rec, now).await?;
        if json {
            // Invariant: Status holds strings, integers, booleans and options of them.
            let mut text = serde_json::to_string_pretty(&s).expect("Status serialises");
            text.push('\n');
            out(&text)?;
            return Ok(0);
        }
        let mut text = format!(
            "{rec} (call {}): state {}\n",
            s.recording.call_id, s.recording.state
        );
        if let Some(t) = &s.tombstone {
            let _ = writeln!(
                text,
                "  deleted {} (rule {})",
                when(Some(t.deleted_at_ms)),
                t.rule
            );
        } else {
            let _ = writeln!(
                text,
                "  expires {} (rule {}){}",
                when(s.expires_at_ms),
                s.rule,
                if s.expired {
                    ": expired, the next sweep deletes it"
                } else {
                    ""
                }
            );
        }
        if let Some(at) = s.recording.restricted_at_ms {
            let _ = writeln!(
                text,
                "  restricted since {} by {}",
                when(Some(at)),
                s.recording.restricted_by.as_deref().unwrap_or("?")
            );
        }
        for t in &s.tags {
            let _ = writeln!(
                text,
                "  tag {}: added {} by {}{}{}",
                t.tag,
                when(Some(t.added_at_ms)),
                t.added_by,
                match t.removed_at_ms {
                    Some(r) => format!(
                        ", removed {} by {}",
                        when(Some(r)),
                        t.removed_by.as_deref().unwrap_or("?")
                    ),
                    None => String::new(),
                },
                match &t.note {
                    Some(n) => format!(" — {}", n.replace(['\n', '\r'], " ")),
                    None => String::new(),
                }
            );
        }
        for h in &s.holds {
            let _ = writeln!(
                text,
                "  hold {}: {}",
                h.case_ref,
                match h.released_at_ms {
                    None => "open".to_string(),
                    Some(r) => format!("released {}", when(Some(r))),
                }
            );
        }
        out(&text)?;
        Ok(0)
    })
}
