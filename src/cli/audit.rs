//! `callgate audit verify | list`.

use std::fmt::Write as _;

use super::calls::utc;
use super::{CliError, Ctx, DEFAULT_ROLE, open_existing_store, out};
use crate::audit::{ChainVerifier, Entry};
use crate::config::Config;
use crate::retention::service::{self, Permission};
use crate::store::Store;

/// Entries fetched per query.
const PAGE: i64 = 5000;

/// Recomputes the whole chain, page by page. Any role may verify: the answer reveals nothing
/// but the chain's integrity and head.
pub(super) async fn verify(config: &Config) -> Result<u8, CliError> {
    let store = open_existing_store(config).await?;
    let res = verify_store(&store).await;
    store.close().await;
    let (count, head) = res?;
    out(&format!(
        "audit log intact: {count} entries, head {head}\n(record this line elsewhere: a later verify must show the same head or a longer chain)\n"
    ))?;
    Ok(0)
}

pub(super) async fn verify_store(store: &Store) -> Result<(i64, String), CliError> {
    // The head first: entries appended while we read are beyond it and ignored.
    let (head_seq, head_hash) = store.audit_head().await?;
    let mut v = ChainVerifier::default();
    let mut after = 0;
    'pages: loop {
        let page = store.audit_entries(after, PAGE).await?;
        if page.is_empty() {
            break;
        }
        for e in &page {
            if e.seq > head_seq {
                break 'pages;
            }
            v.push(e).map_err(CliError::AuditBroken)?;
            after = e.seq;
        }
    }
    v.finish(head_seq, &head_hash)
        .map_err(CliError::AuditBroken)?;
    Ok((v.count(), head_hash))
}

pub(super) async fn list(
    config: &Config,
    ctx: &Ctx,
    json: bool,
    limit: Option<u32>,
) -> Result<u8, CliError> {
    service::require(&ctx.actor(DEFAULT_ROLE), Permission::ReadAudit)?;
    let store = open_existing_store(config).await?;
    let res = async {
        let (head, _) = store.audit_head().await?;
        let after = match limit {
            Some(n) => (head - i64::from(n)).max(0),
            None => 0,
        };
        let mut all: Vec<Entry> = Vec::new();
        let mut cursor = after;
        loop {
            let page = store.audit_entries(cursor, PAGE).await?;
            let Some(last) = page.last() else { break };
            cursor = last.seq;
            all.extend(page);
        }
        Ok::<_, CliError>(all)
    }
    .await;
    store.close().await;
    let entries = res?;
    if json {
        // Invariant: Entry holds strings and integers only.
        let mut text = serde_json::to_string_pretty(&entries).expect("Entry serialises");
        text.push('\n');
        out(&text)?;
        return Ok(0);
    }
    let mut text = String::from("SEQ  TIME (UTC)           ACTOR/ROLE  ACTION  TARGETS  REASON\n");
    for e in &entries {
        let targets: Vec<String> = serde_json::from_str(&e.targets).unwrap_or_default();
        let _ = writeln!(
            text,
            "{}  {}  {}/{}  {}  {}  {}",
            e.seq,
            utc(e.at_ms),
            e.actor,
            e.role,
            e.action,
            targets.join(","),
            e.reason
                .as_deref()
                .unwrap_or("-")
                .replace(['\n', '\r'], " ")
        );
    }
    if entries.is_empty() {
        text.push_str("(no entries)\n");
    }
    out(&text)?;
    Ok(0)
}
