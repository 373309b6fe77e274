//! PCI DSS keypad protection: DTMF detection, the pause controller, masking, the delay line.
//!
//! Everything here is sans-IO: plain structs fed `(time, input)` that expose `poll_*()`. No
//! sockets, no tokio, no clock reads. The media task (`media::relay`) owns one set per call.
//!
//! # Clocks
//! All times are `std::time::Instant` on the **capture clock**: the instant the relay received
//! the RTP packet carrying a frame (for in-band audio, sample `i` of a frame received at `t` is
//! at `t + i/8000 s`). Detector events carry the capture time of what they describe (`at`);
//! that is usually a little earlier than the relay's current time. The recording path runs
//! `delay` behind the capture clock (see [`delay::DelayLine`]), so the controller can decide to
//! pause *before* the first millisecond of a tone reaches the recording.
//!
//! # No card digits anywhere
//! A keyed digit is a [`Digit`]: its `Debug`/`Display` always print `•`, it has no public
//! accessor for its value, and no public output of the controller carries one: only counts and
//! times leave [`controller::PauseController`]. Parser errors never echo their input.
//!
//! # Pieces
//! * [`inband::InbandDetector`]: Goertzel DTMF detector (ITU-T Q.24 style acceptance) on 8 kHz
//!   linear audio, with an early `Suspect` signal.
//! * [`rfc4733::EventTracker`]: RFC 4733 telephone-event packets → one start/end per key press.
//! * [`sipinfo::parse_info`]: SIP INFO bodies (`application/dtmf-relay`, `application/dtmf`).
//! * [`controller::PauseController`]: the pause/resume/mask policy.
//! * [`delay::DelayLine`]: the fixed delay on the recording path.
//! * [`mask`]: masked audio toward the agent and the per-packet pass/replace/drop decision.
//!
//! See `docs/pci.md` for the model, the trigger codes and the timing constants.

pub mod config;
pub mod controller;
pub mod delay;
pub mod goertzel;
pub mod inband;
pub mod mask;
pub mod rfc4733;
pub mod sipinfo;

#[cfg(test)]
mod sim_tests;
#[cfg(test)]
pub(crate) mod testsig;

pub use config::{PciConfig, PciConfigError};
pub use controller::{ControlError, PauseController, PauseEvent, PauseState, Resume, Trigger};
pub use delay::{DelayFull, DelayLine};
pub use inband::{InbandDetector, InbandEvent};
pub use rfc4733::{EventTracker, Rfc4733Error, Rfc4733Event};
pub use sipinfo::{InfoDigit, InfoError, parse_info};

use std::fmt;

/// How a digit reached us.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Source {
    /// Tones in the G.711 audio, found by [`inband::InbandDetector`].
    InBand = 0,
    /// RFC 4733 telephone-event packets.
    Rfc4733 = 1,
    /// SIP INFO requests.
    SipInfo = 2,
}

impl Source {
    #[cfg(test)]
    pub(crate) const ALL: [Source; 3] = [Source::InBand, Source::Rfc4733, Source::SipInfo];
}

/// One DTMF key (RFC 4733 event codes 0–15: `0`–`9`, `*` = 10, `#` = 11, `A`–`D` = 12–15).
///
/// The value never leaves the crate: `Debug` and `Display` print `•`, and the accessors are
/// crate-private. Only the pause controller looks at it (to match `#` and the agent's
/// sequences) and it reports counts only.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digit(u8);

impl Digit {
    /// The digit for an RFC 4733 event code, if it is a DTMF key (0–15).
    pub fn from_event(code: u8) -> Option<Digit> {
        (code <= 15).then_some(Digit(code))
    }

    /// The digit for a keypad character (`0-9`, `*`, `#`, `A-D`, case-insensitive).
    pub fn from_char(c: char) -> Option<Digit> {
        let code = match c {
            '0'..='9' => c as u8 - b'0',
            '*' => 10,
            '#' => 11,
            'A'..='D' => c as u8 - b'A' + 12,
            'a'..='d' => c as u8 - b'a' + 12,
            _ => return None,
        };
        Some(Digit(code))
    }

    /// The `#` key.
    pub const HASH: Digit = Digit(11);

    /// RFC 4733 event code. Crate-private on purpose: digit values do not leave the crate.
    #[allow(dead_code)]
    pub(crate) fn code(self) -> u8 {
        self.0
    }

    /// Row (low group) and column (high group) index into the DTMF frequency table.
    pub(crate) fn from_row_col(row: usize, col: usize) -> Option<Digit> {
        const KEYS: [[char; 4]; 4] = [
            ['1', '2', '3', 'A'],
            ['4', '5', '6', 'B'],
            ['7', '8', '9', 'C'],
            ['*', '0', '#', 'D'],
        ];
        KEYS.get(row)
            .and_then(|r| r.get(col))
            .and_then(|&c| Digit::from_char(c))
    }

    /// (row, column) of this key in the DTMF table.
    #[cfg(test)]
    pub(crate) fn row_col(self) -> (usize, usize) {
        match self.0 {
            1..=9 => (((self.0 - 1) / 3) as usize, ((self.0 - 1) % 3) as usize),
            0 => (3, 1),
            10 => (3, 0),
            11 => (3, 2),
            c => ((c - 12) as usize, 3),
        }
    }
}

impl fmt::Debug for Digit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digit(•)")
    }
}

impl fmt::Display for Digit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("•")
    }
}

/// A keyed sequence (`pause_digits`, `resume_digits`), at most [`DigitSeq::MAX`] keys.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct DigitSeq(Vec<Digit>);

impl DigitSeq {
    /// Longest accepted sequence.
    pub const MAX: usize = 8;

    /// Parses `"*1"`; `None` if empty of keypad characters, too long, or not a keypad string.
    pub fn parse(s: &str) -> Option<DigitSeq> {
        let s = s.trim();
        if s.chars().count() > Self::MAX {
            return None;
        }
        let v: Option<Vec<Digit>> = s.chars().map(Digit::from_char).collect();
        v.map(DigitSeq)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn digits(&self) -> &[Digit] {
        &self.0
    }
}

impl fmt::Debug for DigitSeq {
    // Configured sequences are not card data, but keep one rule for every digit container.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DigitSeq(len {})", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_never_prints_its_value() {
        for c in "0123456789*#ABCD".chars() {
            let d = Digit::from_char(c).unwrap();
            assert_eq!(format!("{d:?}"), "Digit(•)");
            assert_eq!(format!("{d}"), "•");
            let (r, col) = d.row_col();
            assert_eq!(Digit::from_row_col(r, col), Some(d), "{c}");
        }
        assert_eq!(Digit::from_event(16), None);
        assert_eq!(Digit::from_char('x'), None);
    }

    #[test]
    fn digit_seq_parse() {
        assert_eq!(DigitSeq::parse("*1").map(|s| s.len()), Some(2));
        assert!(DigitSeq::parse("*x").is_none());
        assert!(DigitSeq::parse("123456789").is_none());
        assert!(DigitSeq::parse("").unwrap().is_empty());
    }
}
