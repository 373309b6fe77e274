//! The routing table: which route a new call takes. Pure functions over the configured routes.
//!
//! A route matches on the called number (`match`) and optionally the calling number (`from`).
//! Patterns are `*` (anything), an exact number (`2001`), or a prefix ending in `*` (`0800*`,
//! `+44161*`). Numbers are compared after dropping visual separators (spaces, `-`, `.`, `(`,
//! `)`), so `0800 123 456` dialled matches `0800123456`. The first matching route wins; no
//! match is a 404 with a reason.

/// A number pattern from the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NumberPattern {
    Any,
    Exact(String),
    Prefix(String),
}

/// Why a pattern in the config is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a number pattern: use \"*\", a number like \"2001\", or a prefix like \"0800*\"")]
pub struct PatternError(pub String);

fn normalise(n: &str) -> String {
    n.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect()
}

impl NumberPattern {
    pub fn parse(s: &str) -> Result<NumberPattern, PatternError> {
        let s = s.trim();
        if s == "*" {
            return Ok(NumberPattern::Any);
        }
        let (body, prefix) = match s.strip_suffix('*') {
            Some(b) => (b, true),
            None => (s, false),
        };
        let body = normalise(body);
        let ok_char = |(i, c): (usize, char)| c.is_ascii_digit() || (i == 0 && c == '+') || c.is_ascii_alphabetic();
        let has_digit_or_letter = body.chars().any(|c| c.is_ascii_alphanumeric());
        if !has_digit_or_letter || body.len() > 64 || !body.chars().enumerate().all(ok_char) {
            return Err(PatternError(s.to_string()));
        }
        Ok(if prefix { NumberPattern::Prefix(body) } else { NumberPattern::Exact(body) })
    }

    pub fn matches(&self, number: &str) -> bool {
        let n = normalise(number);
        match self {
            NumberPattern::Any => true,
            NumberPattern::Exact(e) => n == *e,
            NumberPattern::Prefix(p) => n.starts_with(p.as_str()),
        }
    }
}

/// The part of a route the table looks at.
pub trait Routable {
    fn called(&self) -> &NumberPattern;
    fn calling(&self) -> Option<&NumberPattern>;
}

/// Why no route was found (the 404's reason, for logs and the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no route for the dialled number")]
pub struct NoRoute;

/// The first route matching the called and calling numbers.
pub fn select<'a, R: Routable>(routes: &'a [R], called: &str, calling: &str) -> Result<&'a R, NoRoute> {
    routes
        .iter()
        .find(|r| r.called().matches(called) && r.calling().is_none_or(|p| p.matches(calling)))
        .ok_or(NoRoute)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct R(NumberPattern, Option<NumberPattern>, &'static str);
    impl Routable for R {
        fn called(&self) -> &NumberPattern {
            &self.0
        }
        fn calling(&self) -> Option<&NumberPattern> {
            self.1.as_ref()
        }
    }
    fn p(s: &str) -> NumberPattern {
        NumberPattern::parse(s).unwrap()
    }

    #[test]
    fn patterns() {
        for (pat, number, want) in [
            ("*", "anything", true),
            ("*", "", true),
            ("2001", "2001", true),
            ("2001", "20011", false),
            ("2001", "200", false),
            ("0800*", "0800123456", true),
            ("0800*", "0800", true),
            ("0800*", "0845123456", false),
            ("0800 123*", "0800-123-456", true),
            ("+44161*", "+441619998888", true),
            ("+44161*", "01619998888", false),
            ("0161 999 8888", "(0161) 999-8888", true),
        ] {
            assert_eq!(p(pat).matches(number), want, "{pat} vs {number}");
        }
        for bad in ["", "**", "08*00*", "12#3", "+", "0800*1*"] {
            assert!(NumberPattern::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn first_match_wins_and_calling_number_narrows() {
        let routes = [
            R(p("0800*"), Some(p("+4477*")), "mobiles to freephone"),
            R(p("0800*"), None, "freephone"),
            R(p("2001"), None, "rent line"),
            R(p("*"), Some(p("999*")), "test numbers anywhere"),
        ];
        let pick = |called: &str, calling: &str| select(&routes, called, calling).map(|r| r.2);
        assert_eq!(pick("0800111222", "+447700900123"), Ok("mobiles to freephone"));
        assert_eq!(pick("0800111222", "01619998888"), Ok("freephone"));
        assert_eq!(pick("2001", "+447700900123"), Ok("rent line"));
        assert_eq!(pick("3001", "9990001"), Ok("test numbers anywhere"));
        assert_eq!(pick("3001", "01619998888"), Err(NoRoute));
        assert_eq!(pick("", ""), Err(NoRoute));
    }
}
