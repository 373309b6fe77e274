//! `callgate calls list`.

use std::fmt::Write as _;

use super::{CliError, open_existing_store, out};
use crate::config::Config;
use crate::store::CallRecord;

pub(super) async fn list(config: &Config, json: bool, limit: u32) -> Result<u8, CliError> {
    let store = open_existing_store(config).await?;
    let calls = store.list_calls(limit).await?;
    store.close().await;
    if json {
        // Invariant: CallRecord holds only strings, integers and options of them, which
        // serde_json always serialises.
        let mut text = serde_json::to_string_pretty(&calls).expect("CallRecord serialises");
        text.push('\n');
        return out(&text).map(|()| 0);
    }
    out(&table(&calls)).map(|()| 0)
}

/// An aligned table; phone numbers redacted to their last two digits.
pub(super) fn table(calls: &[CallRecord]) -> String {
    const HEADINGS: [&str; 7] = [
        "CALL ID",
        "STARTED (UTC)",
        "FROM",
        "TO",
        "CAUSE",
        "SIDE",
        "RECORDING",
    ];
    let rows: Vec<[String; 7]> = calls
        .iter()
        .map(|c| {
            [
                c.call_id.to_string(),
                utc(c.started_at_ms),
                // PhoneNumber's Display is the redacted form.
                c.from_number.to_string(),
                c.to_number.to_string(),
                c.hangup_cause.clone().unwrap_or_else(|| "-".into()),
                c.hangup_side.clone().unwrap_or_else(|| "-".into()),
                c.recording_state.clone(),
            ]
        })
        .collect();
    let mut widths = HEADINGS.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut s = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        s.push_str(l.trim_end());
        s.push('\n');
    };
    line(&HEADINGS);
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        line(&cells);
    }
    if rows.is_empty() {
        s.push_str("(no calls)\n");
    }
    s
}

pub(super) use crate::time::utc;
