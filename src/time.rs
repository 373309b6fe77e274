//! Calendar arithmetic on Unix milliseconds (UTC, proleptic Gregorian; H. Hinnant's
//! `civil_from_days` / `days_from_civil`), for display and for dates typed into the portal.

const DAY_MS: i64 = 86_400_000;

/// `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn utc(ms: i64) -> String {
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

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339_utc(ms: i64) -> String {
    format!("{}Z", utc(ms).replacen(' ', "T", 1))
}

/// Days since 1970-01-01 to (year, month, day).
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

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The start (00:00 UTC) of a `YYYY-MM-DD` date, in Unix ms; `None` if it is not a real date.
pub fn parse_date(s: &str) -> Option<i64> {
    let mut it = s.trim().splitn(3, '-');
    let (y, m, d) = (it.next()?, it.next()?, it.next()?);
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (i64, i64, i64) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if !(1..=12).contains(&m) || d < 1 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // 31 February and the like come back as another date.
    (civil_from_days(days) == (y, m, d)).then_some(days * DAY_MS)
}

/// One day in ms (a `to` date is inclusive: its end is the next day's start).
pub const ONE_DAY_MS: i64 = DAY_MS;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14 22:13:20");
        assert_eq!(utc(951_825_600_000), "2000-02-29 12:00:00");
        assert_eq!(utc(-1000), "1969-12-31 23:59:59");
        assert_eq!(rfc3339_utc(1_700_000_000_123), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn dates_parse_and_round_trip() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2023-11-14"), Some(1_699_920_000_000));
        assert_eq!(
            parse_date("2000-02-29").map(utc).as_deref(),
            Some("2000-02-29 00:00:00")
        );
        for bad in [
            "2001-02-29",
            "2023-13-01",
            "2023-00-10",
            "2023-1-1",
            "x",
            "",
            "2023-11-14T00",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
        for day in [-800_000i64, -1, 0, 1, 19_000, 2_932_896] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }
}
