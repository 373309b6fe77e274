//! Newtypes for identities, so a call id can never be passed where a recording id is meant.

use std::fmt;

/// Random lowercase hex of `bytes` bytes from the OS RNG.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // Invariant: the OS RNG is available on every platform we run on; without it no key is safe.
    getrandom::fill(&mut buf).expect("OS random number generator unavailable");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A fresh random id.
            pub fn new_random() -> Self {
                Self(format!(concat!($prefix, "{}"), random_hex(8)))
            }
            /// Wraps an id read back from storage or typed by a user.
            pub fn from_string(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

string_id!(
    /// One call through the gateway (both legs).
    CallId,
    "call-"
);
string_id!(
    /// One recording file (today one per call).
    RecordingId,
    "rec-"
);
string_id!(
    /// A key-encryption key's id; stored beside every wrapped data key.
    KeyId,
    "kek-"
);

/// RTP synchronisation source.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Ssrc(pub u32);

/// The two legs of a call, also the two tracks of a recording.
/// "Caller" is the customer side (trunk), "Agent" the staff side (PBX / queue).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Leg {
    Caller = 0,
    Agent = 1,
}

impl Leg {
    pub fn other(self) -> Leg {
        match self {
            Leg::Caller => Leg::Agent,
            Leg::Agent => Leg::Caller,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Leg::Caller => "caller",
            Leg::Agent => "agent",
        }
    }
}
