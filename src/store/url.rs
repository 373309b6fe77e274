//! Database URL handling: which dialect, where a SQLite file lives, and a redacted form for
//! errors and logs (a password in the URL must never reach a log line or a terminal).

use std::path::PathBuf;

/// The SQL dialect behind a database URL.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dialect {
    /// `sqlite://path?mode=rwc` (the default: one file, no server).
    Sqlite,
    /// `postgres://user:password@host:port/db` (at scale).
    Postgres,
}

impl Dialect {
    /// The dialect named by the URL's scheme, if we support it.
    pub fn of_url(url: &str) -> Option<Dialect> {
        let lower = url.get(..11).unwrap_or(url).to_ascii_lowercase();
        if lower.starts_with("sqlite:") {
            Some(Dialect::Sqlite)
        } else if lower.starts_with("postgres://") || lower.starts_with("postgresql:") {
            Some(Dialect::Postgres)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }
}

/// The database file of a SQLite URL, or `None` for an in-memory database.
/// Mirrors sqlx's own parsing (`sqlite://` or `sqlite:` prefix, query after `?`).
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.get(7..)?; // after "sqlite:" (checked by Dialect::of_url; None if shorter)
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or(rest);
    let in_memory = url.contains("mode=memory");
    if path.is_empty() || path == ":memory:" || in_memory {
        return None;
    }
    Some(PathBuf::from(percent_decode(path)))
}

/// The parts of a URL that matter for redaction. The userinfo ends at the LAST `@`, so an
/// unencoded `@`, `/`, `:` or `?` inside a password is still treated as password.
struct Parts<'a> {
    scheme: Option<&'a str>,
    user: Option<&'a str>,
    password: Option<&'a str>,
    host_and_path: &'a str,
    query: Option<&'a str>,
}

fn parts(url: &str) -> Parts<'_> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let (userinfo, tail) = match rest.rfind('@') {
        Some(i) if scheme.is_some() => (Some(&rest[..i]), &rest[i + 1..]),
        _ => (None, rest),
    };
    let (user, password) = match userinfo {
        Some(ui) => match ui.split_once(':') {
            Some((u, p)) => (Some(u), Some(p)),
            None => (Some(ui), None),
        },
        None => (None, None),
    };
    let (host_and_path, query) = match tail.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (tail, None),
    };
    Parts {
        scheme,
        user,
        password,
        host_and_path,
        query,
    }
}

/// `url` with the password (userinfo and any `password`-like query parameter) replaced by `***`.
pub fn redact(url: &str) -> String {
    let p = parts(url);
    let mut out = String::with_capacity(url.len());
    if let Some(scheme) = p.scheme {
        out.push_str(scheme);
        out.push_str("://");
    }
    if let Some(user) = p.user {
        out.push_str(user);
        if p.password.is_some() {
            out.push_str(":***");
        }
        out.push('@');
    }
    out.push_str(p.host_and_path);
    if let Some(query) = p.query {
        out.push('?');
        let kvs: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if is_secret_key(k) => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out.push_str(&kvs.join("&"));
    }
    out
}

/// Every secret in `url` (raw and percent-decoded), to scrub from driver error text.
pub fn secrets(url: &str) -> Vec<String> {
    let p = parts(url);
    let mut found = Vec::new();
    if let Some(password) = p.password {
        found.push(password.to_string());
    }
    if let Some(query) = p.query {
        for kv in query.split('&') {
            if let Some((k, v)) = kv.split_once('=')
                && is_secret_key(k)
            {
                found.push(v.to_string());
            }
        }
    }
    let decoded: Vec<String> = found.iter().map(|s| percent_decode(s)).collect();
    found.extend(decoded);
    found.retain(|s| !s.is_empty());
    found.sort();
    found.dedup();
    // Longest first, so a secret containing another is scrubbed whole.
    found.sort_by_key(|s| std::cmp::Reverse(s.len()));
    found
}

/// `text` with every secret of `url` replaced by `***`.
pub fn scrub(text: &str, url: &str) -> String {
    let mut text = text.to_string();
    for secret in secrets(url) {
        text = text.replace(&secret, "***");
    }
    text
}

fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password") || k.contains("passwd") || k == "sslkey"
}

/// Minimal `%XX` decoding (invalid sequences are kept as they are).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialects() {
        assert_eq!(
            Dialect::of_url("sqlite://data/x.db?mode=rwc"),
            Some(Dialect::Sqlite)
        );
        assert_eq!(Dialect::of_url("sqlite::memory:"), Some(Dialect::Sqlite));
        assert_eq!(
            Dialect::of_url("postgres://u@h/db"),
            Some(Dialect::Postgres)
        );
        assert_eq!(
            Dialect::of_url("postgresql://u@h/db"),
            Some(Dialect::Postgres)
        );
        assert_eq!(Dialect::of_url("mysql://u@h/db"), None);
        assert_eq!(Dialect::of_url("data/x.db"), None);
        assert_eq!(Dialect::of_url(""), None);
    }

    #[test]
    fn sqlite_files() {
        assert_eq!(
            sqlite_file("sqlite://data/x.db?mode=rwc"),
            Some(PathBuf::from("data/x.db"))
        );
        assert_eq!(
            sqlite_file("sqlite:///var/lib/c.db"),
            Some(PathBuf::from("/var/lib/c.db"))
        );
        assert_eq!(
            sqlite_file("sqlite:a%20b.db"),
            Some(PathBuf::from("a b.db"))
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("sqlite://x.db?mode=memory"), None);
        assert_eq!(sqlite_file("sqlite:"), None);
    }

    #[test]
    fn passwords_are_redacted() {
        let url = "postgres://callgate:hunter%232@db.example:5432/callgate?sslmode=require&password=other";
        let r = redact(url);
        assert_eq!(
            r,
            "postgres://callgate:***@db.example:5432/callgate?sslmode=require&password=***"
        );
        let s = secrets(url);
        assert!(s.contains(&"hunter%232".to_string()));
        assert!(s.contains(&"hunter#2".to_string()));
        assert!(s.contains(&"other".to_string()));
        let text = scrub("failed for hunter#2 and hunter%232 and other", url);
        assert!(
            !text.contains("hunter") && !text.contains("other"),
            "{text}"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact("sqlite://data/x.db?mode=rwc"),
            "sqlite://data/x.db?mode=rwc"
        );
        // A password containing '@' and '/' (unencoded): the last '@' before the path ends userinfo.
        assert_eq!(redact("postgres://u:p@ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(
            redact("postgres://u:p/s?s@h/db?x=1"),
            "postgres://u:***@h/db?x=1"
        );
        assert_eq!(
            secrets("postgres://u:p/s?s@h/db"),
            vec!["p/s?s".to_string()]
        );
    }
}
