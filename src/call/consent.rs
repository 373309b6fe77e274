//! The consent step: after the recording announcement a short prompt offers keypad choices
//! ("press 9 if you do not want this call recorded", "press 1 if we may use this call to train
//! our staff"). Pure data and decisions; the [`Call`](super::Call) state machine runs the step.
//!
//! These keys are consent digits, not card digits: the media task compares each key the customer
//! presses during the announcement and the prompt with the configured ones and reports only a
//! [`ConsentKey`]. Any other key is dropped unrecorded, and none of them starts a PCI pause
//! (keypad protection starts at the bridge, after the choice is made).

use std::path::PathBuf;
use std::time::Duration;

use crate::pci::Digit;

/// A route's consent prompt and its choices (`[route.consent]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsentPolicy {
    /// The prompt's audio (WAV).
    pub prompt: PathBuf,
    /// `decline_digit` and `training_digit` (e.g. `"9"`, `"1"`); at least one is set.
    pub keys: ConsentKeys,
    /// How long after the prompt ends a key is still taken (`timeout`, default 5 s).
    pub timeout: Duration,
    /// No key pressed: recorded? (`record_by_default`, default true: an opt-out).
    pub record_by_default: bool,
    /// No key pressed: usable for training? (`training_by_default`, default false: an opt-in).
    pub training_by_default: bool,
}

/// What a key meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsentKey {
    DeclineRecording,
    AllowTraining,
}

/// How the choice was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsentSource {
    /// The customer pressed a key.
    Keypad,
    /// No key before the timeout: the route's default.
    Default,
}

impl ConsentSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentSource::Keypad => "keypad",
            ConsentSource::Default => "default",
        }
    }
}

/// The customer's choice, as stored on the call record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsentDecision {
    pub record: bool,
    /// `None` when the route offers no training choice (the published notice covers it).
    pub training: Option<bool>,
    pub source: ConsentSource,
}

impl ConsentPolicy {
    /// The decision for a key, or for no key (`None`: the defaults).
    pub fn decide(&self, key: Option<ConsentKey>) -> ConsentDecision {
        let (record, training, source) = match key {
            // Declining recording declines every use of the recording.
            Some(ConsentKey::DeclineRecording) => (false, false, ConsentSource::Keypad),
            // Agreeing to training use is agreeing to be recorded.
            Some(ConsentKey::AllowTraining) => (true, true, ConsentSource::Keypad),
            None => (self.record_by_default, self.record_by_default && self.training_by_default, ConsentSource::Default),
        };
        // A route that never asks about training leaves it open: the published notice covers it.
        ConsentDecision { record, training: self.keys.training.map(|_| training), source }
    }
}

/// The consent keys, handed to the media task (which sees digits; the engine never does).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsentKeys {
    pub decline: Option<Digit>,
    pub training: Option<Digit>,
}

impl ConsentKeys {
    /// The meaning of `digit`, if it is one of these keys.
    pub fn key_for(&self, digit: Digit) -> Option<ConsentKey> {
        if self.decline == Some(digit) {
            Some(ConsentKey::DeclineRecording)
        } else if self.training == Some(digit) {
            Some(ConsentKey::AllowTraining)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ConsentPolicy {
        ConsentPolicy {
            prompt: "p.wav".into(),
            keys: ConsentKeys { decline: Digit::from_char('9'), training: Digit::from_char('1') },
            timeout: Duration::from_secs(5),
            record_by_default: true,
            training_by_default: false,
        }
    }

    #[test]
    fn keys_map_to_choices_and_others_are_ignored() {
        let k = policy().keys;
        assert_eq!(k.key_for(Digit::from_char('9').unwrap()), Some(ConsentKey::DeclineRecording));
        assert_eq!(k.key_for(Digit::from_char('1').unwrap()), Some(ConsentKey::AllowTraining));
        for c in ['0', '2', '5', '*', '#'] {
            assert_eq!(k.key_for(Digit::from_char(c).unwrap()), None, "{c}");
        }
    }

    #[test]
    fn decisions() {
        let p = policy();
        let d = p.decide(Some(ConsentKey::DeclineRecording));
        assert!(!d.record && d.training == Some(false) && d.source == ConsentSource::Keypad);
        let d = p.decide(Some(ConsentKey::AllowTraining));
        assert!(d.record && d.training == Some(true));
        let d = p.decide(None);
        assert!(d.record && d.training == Some(false) && d.source == ConsentSource::Default);
        // A route that does not record by default cannot default to training use either.
        let q = ConsentPolicy { record_by_default: false, training_by_default: true, ..policy() };
        let d = q.decide(None);
        assert!(!d.record && d.training == Some(false));
        // A route that never asks about training leaves it open (the notice covers it): the
        // training tag must not be refused because of a question nobody was asked.
        let r = ConsentPolicy { keys: ConsentKeys { training: None, ..policy().keys }, ..policy() };
        assert_eq!(r.decide(None).training, None);
        assert_eq!(r.decide(Some(ConsentKey::DeclineRecording)).training, None);
    }
}
