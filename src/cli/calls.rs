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

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS` (UTC, proleptic Gregorian).
pub(super) fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to (year, month, day); H. Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14 22:13:20");
        assert_eq!(utc(951_825_600_000), "2000-02-29 12:00:00");
        assert_eq!(utc(-1000), "1969-12-31 23:59:59");
    }
}
