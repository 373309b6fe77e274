//! Personal data wrappers: phone numbers and IP addresses print redacted in logs.
//!
//! `Display`/`Debug` never show the full value; code that must use the value (SIP headers,
//! database) calls `expose()`, which makes every such place greppable.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// A phone number or SIP user part. Logs show only the last two characters.
#[derive(Clone, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The real value, for protocol and storage use only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.chars().count();
        if n <= 4 {
            return f.write_str("***");
        }
        let tail: String = self.0.chars().skip(n - 2).collect();
        write!(f, "***{tail}")
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({self})")
    }
}

/// A peer's network address. Logs show the address family and port only.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.ip() {
            IpAddr::V4(_) => write!(f, "v4:***:{}", self.0.port()),
            IpAddr::V6(_) => write!(f, "v6:***:{}", self.0.port()),
        }
    }
}

impl fmt::Debug for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerAddr({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_addresses_are_redacted() {
        let n = PhoneNumber::new("+441632960123");
        assert_eq!(n.to_string(), "***23");
        assert!(!format!("{n:?}").contains("1632960"));
        let a = PeerAddr("192.0.2.7:5060".parse().unwrap());
        assert_eq!(a.to_string(), "v4:***:5060");
        assert!(!format!("{a:?}").contains("192.0.2.7"));
    }
}
