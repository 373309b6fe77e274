//! The routing table: which route a new call takes. Pure functions over the configured routes.
//!
//! A route matches on the called number (`match`) and optionally the calling number (`from`).
//! Patterns are `*` (anything), an exact number (`2001`), or a prefix ending in `*` (`0800*`,
//! `+44161*`). Numbers are compared after dropping visual separators (spaces, `-`, `.`, `(`,
//! `)`), so `0800 123 456` dialled matches `0800123456`. The first matching route wins; no
//! match is a 404 with a reason.
//!
//! A route is for one direction. Which directions a call may take comes from its source: the
//! trunk networks (`[sip] trusted`) place inbound calls, the agents' networks (`[sip] agents`)
//! outbound ones; a source in both may take either, and the first matching route decides.

use super::CallDirection;

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
    fn direction(&self) -> CallDirection;
}

/// The directions a call's source may take (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sources {
    pub inbound: bool,
    pub outbound: bool,
}

impl Sources {
    fn allows(self, d: CallDirection) -> bool {
        match d {
            CallDirection::Inbound => self.inbound,
            CallDirection::Outbound => self.outbound,
        }
    }
}

/// Why no route was found: the refusal's status and reason, for logs and the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoRoute {
    #[error("source is neither a trunk nor an agent network")]
    UntrustedSource,
    #[error("no route for the dialled number")]
    NoMatch,
}

impl NoRoute {
    pub fn sip_status(self) -> u16 {
        match self {
            NoRoute::UntrustedSource => 403,
            NoRoute::NoMatch => 404,
        }
    }
}

/// The first route of an allowed direction matching the called and calling numbers.
pub fn select<'a, R: Routable>(routes: &'a [R], from: Sources, called: &str, calling: &str) -> Result<&'a R, NoRoute> {
    if !from.inbound && !from.outbound {
        return Err(NoRoute::UntrustedSource);
    }
    routes
        .iter()
        .filter(|r| from.allows(r.direction()))
        .find(|r| r.called().matches(called) && r.calling().is_none_or(|p| p.matches(calling)))
        .ok_or(NoRoute::NoMatch)
}

/// The request URI toward a route's target: a target without a user part
/// (`sip:trunk.example:5060`) carries the dialled number as its user.
pub fn target_uri(target: &str, dialled: &str) -> String {
    let rest = target.strip_prefix("sip:").unwrap_or(target);
    let host_part = rest.split(';').next().unwrap_or(rest);
    let user_ok = !dialled.is_empty()
        && dialled.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '*' | '#'));
    if host_part.contains('@') || !user_ok {
        return target.to_string();
    }
    // `#` is not allowed unescaped in a SIP URI user part (RFC 3261 §25.1).
    let user = dialled.replace('#', "%23");
    format!("sip:{user}@{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct R(NumberPattern, Option<NumberPattern>, &'static str, CallDirection);
    impl Routable for R {
        fn called(&self) -> &NumberPattern {
            &self.0
        }
        fn calling(&self) -> Option<&NumberPattern> {
            self.1.as_ref()
        }
        fn direction(&self) -> CallDirection {
            self.3
        }
    }
    const IN: CallDirection = CallDirection::Inbound;
    const OUT: CallDirection = CallDirection::Outbound;
    const TRUNK: Sources = Sources { inbound: true, outbound: false };
    const AGENTS: Sources = Sources { inbound: false, outbound: true };
    const BOTH: Sources = Sources { inbound: true, outbound: true };
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
            R(p("0800*"), Some(p("+4477*")), "mobiles to freephone", IN),
            R(p("0800*"), None, "freephone", IN),
            R(p("2001"), None, "rent line", IN),
            R(p("*"), Some(p("999*")), "test numbers anywhere", IN),
        ];
        let pick = |called: &str, calling: &str| select(&routes, TRUNK, called, calling).map(|r| r.2);
        assert_eq!(pick("0800111222", "+447700900123"), Ok("mobiles to freephone"));
        assert_eq!(pick("0800111222", "01619998888"), Ok("freephone"));
        assert_eq!(pick("2001", "+447700900123"), Ok("rent line"));
        assert_eq!(pick("3001", "9990001"), Ok("test numbers anywhere"));
        assert_eq!(pick("3001", "01619998888"), Err(NoRoute::NoMatch));
        assert_eq!(pick("", ""), Err(NoRoute::NoMatch));
    }

    #[test]
    fn direction_comes_from_the_source_and_routes_are_per_direction() {
        let routes = [
            R(p("2001"), None, "rent line", IN),
            R(p("07*"), Some(p("3*")), "agents to mobiles", OUT),
            R(p("*"), Some(p("4*")), "team 4 anywhere, unrecorded", OUT),
            R(p("*"), None, "everything else inbound", IN),
        ];
        let pick = |from, called: &str, calling: &str| select(&routes, from, called, calling).map(|r| r.2);
        // The trunk never reaches an outbound route, however well the numbers match.
        assert_eq!(pick(TRUNK, "07700900123", "3001"), Ok("everything else inbound"));
        assert_eq!(pick(AGENTS, "07700900123", "3001"), Ok("agents to mobiles"));
        assert_eq!(pick(AGENTS, "01619998888", "4002"), Ok("team 4 anywhere, unrecorded"));
        // An agent's call that no outbound route takes is a 404, not an inbound call.
        assert_eq!(pick(AGENTS, "01619998888", "3001"), Err(NoRoute::NoMatch));
        assert_eq!(pick(AGENTS, "2001", "3001"), Err(NoRoute::NoMatch));
        // A shared network: first match over both directions, in config order.
        assert_eq!(pick(BOTH, "2001", "3001"), Ok("rent line"));
        assert_eq!(pick(BOTH, "07700900123", "3001"), Ok("agents to mobiles"));
        // Neither network: refused before any route is looked at.
        let nobody = Sources { inbound: false, outbound: false };
        assert_eq!(pick(nobody, "2001", "1"), Err(NoRoute::UntrustedSource));
        assert_eq!(NoRoute::UntrustedSource.sip_status(), 403);
        assert_eq!(NoRoute::NoMatch.sip_status(), 404);
    }

    #[test]
    fn target_takes_the_dialled_number_when_it_has_no_user() {
        assert_eq!(target_uri("sip:trunk.example:5060", "07700900123"), "sip:07700900123@trunk.example:5060");
        assert_eq!(target_uri("sip:10.0.0.1;transport=tcp", "+4416"), "sip:+4416@10.0.0.1;transport=tcp");
        assert_eq!(target_uri("sip:queue@pbx.example:5060", "2001"), "sip:queue@pbx.example:5060");
        // Nothing usable to put there: the target as configured.
        assert_eq!(target_uri("sip:trunk.example", ""), "sip:trunk.example");
        assert_eq!(target_uri("sip:trunk.example", "a b@c"), "sip:trunk.example");
        assert_eq!(target_uri("sip:trunk.example", "123#"), "sip:123%23@trunk.example");
    }
}
