//! `[pci]` settings, checked when loaded. Every field documents its default.

use std::time::Duration;

use super::DigitSeq;

/// The pause controller's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciConfig {
    /// Agent keys this to pause (`pause_digits`, default `"*1"`; empty disables).
    pub pause_digits: DigitSeq,
    /// Agent keys this to start recording an on-demand line (`record_digits`, default `"*3"`;
    /// empty disables; refused on other lines).
    pub record_digits: DigitSeq,
    /// Agent keys this to resume (`resume_digits`, default `"*2"`; empty disables).
    pub resume_digits: DigitSeq,
    /// The caller's first digit pauses the recording (`auto_pause_on_caller_digits`, default true).
    pub auto_pause_on_caller_digits: bool,
    /// Replace the caller's tones/events toward the agent (`mask_dtmf_to_agent`, default true).
    pub mask_dtmf_to_agent: bool,
    /// A pause ends by itself after this (`max_pause`, default 10 min, 1 s ..= 4 h).
    pub max_pause: Duration,
    /// The caller's `#` ends the pause (`resume_on_hash`, default true).
    pub resume_on_hash: bool,
    /// Resume after this many key presses (`resume_after_digits`, e.g. 19 = 16 + CVV; default
    /// none, 1 ..= 64).
    pub resume_after_digits: Option<u16>,
    /// Resume an auto-pause when the caller has not keyed for this long (`resume_after_idle`,
    /// default none).
    pub resume_after_idle: Option<Duration>,
    /// The delay line on the recording path (`delay`, default 250 ms, ≥ `lead` + 100 ms, ≤ 2 s).
    pub delay: Duration,
    /// A pause starts this long before a tone's estimated onset (`lead`, default 40 ms, ≤ 200 ms).
    pub lead: Duration,
    /// A resume waits for every tone to be over for this long (`guard`, default 100 ms).
    pub guard: Duration,
    /// Masking toward the agent continues this long after the caller's last tone
    /// (`mask_hangover`, default 1 s), so the agent hears one flat span for a keyed sequence.
    pub mask_hangover: Duration,
    /// Gap that breaks an agent key sequence (`sequence_timeout`, default 3 s).
    pub sequence_timeout: Duration,
}

impl Default for PciConfig {
    fn default() -> Self {
        PciConfig {
            // Invariant: constant keypad strings within DigitSeq::MAX.
            pause_digits: DigitSeq::parse("*1").unwrap_or_default(),
            resume_digits: DigitSeq::parse("*2").unwrap_or_default(),
            record_digits: DigitSeq::parse("*3").unwrap_or_default(),
            auto_pause_on_caller_digits: true,
            mask_dtmf_to_agent: true,
            max_pause: Duration::from_secs(600),
            resume_on_hash: true,
            resume_after_digits: None,
            resume_after_idle: None,
            delay: Duration::from_millis(250),
            lead: Duration::from_millis(40),
            guard: Duration::from_millis(100),
            mask_hangover: Duration::from_secs(1),
            sequence_timeout: Duration::from_secs(3),
        }
    }
}

/// A bad `[pci]` value; names the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("[pci] {key}: {message}")]
pub struct PciConfigError {
    pub key: String,
    pub message: String,
}

fn err(key: &str, message: impl Into<String>) -> PciConfigError {
    PciConfigError {
        key: key.into(),
        message: message.into(),
    }
}

impl PciConfig {
    /// Checks the relations between fields.
    pub fn validate(&self) -> Result<(), PciConfigError> {
        if self.lead > Duration::from_millis(200) {
            return Err(err("lead", "at most 200ms"));
        }
        if self.delay < self.lead + Duration::from_millis(100)
            || self.delay > Duration::from_secs(2)
        {
            return Err(err(
                "delay",
                "between lead + 100ms and 2s (the decision needs that long)",
            ));
        }
        if self.max_pause < Duration::from_secs(1) || self.max_pause > Duration::from_secs(4 * 3600)
        {
            return Err(err("max_pause", "between 1s and 4h"));
        }
        if matches!(self.resume_after_digits, Some(n) if n == 0 || n > 64) {
            return Err(err("resume_after_digits", "between 1 and 64"));
        }
        if self.guard > Duration::from_secs(2) {
            return Err(err("guard", "at most 2s"));
        }
        if self.pause_digits == self.resume_digits && !self.pause_digits.is_empty() {
            return Err(err("resume_digits", "must differ from pause_digits"));
        }
        if !self.record_digits.is_empty()
            && (self.record_digits == self.pause_digits || self.record_digits == self.resume_digits)
        {
            return Err(err("record_digits", "must differ from pause_digits and resume_digits"));
        }
        Ok(())
    }

    /// Reads the `[pci]` table (unknown keys are errors) over the defaults, then validates.
    pub fn from_table(t: &toml::Table) -> Result<PciConfig, PciConfigError> {
        let mut c = PciConfig::default();
        for (k, v) in t {
            let key = k.as_str();
            let s = || v.as_str().ok_or_else(|| err(key, "expected a string"));
            let b = || {
                v.as_bool()
                    .ok_or_else(|| err(key, "expected true or false"))
            };
            let dur = || crate::config::parse_duration(s()?).map_err(|m| err(key, m));
            let seq = || {
                DigitSeq::parse(s()?)
                    .ok_or_else(|| err(key, "keypad characters 0-9 * # A-D, at most 8"))
            };
            match key {
                "pause_digits" => c.pause_digits = seq()?,
                "resume_digits" => c.resume_digits = seq()?,
                "record_digits" => c.record_digits = seq()?,
                "auto_pause_on_caller_digits" => c.auto_pause_on_caller_digits = b()?,
                "mask_dtmf_to_agent" => c.mask_dtmf_to_agent = b()?,
                "resume_on_hash" => c.resume_on_hash = b()?,
                "max_pause" => c.max_pause = dur()?,
                "resume_after_idle" => c.resume_after_idle = Some(dur()?),
                "delay" => c.delay = dur()?,
                "lead" => c.lead = dur()?,
                "guard" => c.guard = dur()?,
                "mask_hangover" => c.mask_hangover = dur()?,
                "sequence_timeout" => c.sequence_timeout = dur()?,
                "resume_after_digits" => {
                    let n = v
                        .as_integer()
                        .ok_or_else(|| err(key, "expected an integer"))?;
                    c.resume_after_digits =
                        Some(u16::try_from(n).map_err(|_| err(key, "between 1 and 64"))?);
                }
                _ => return Err(err(key, "unknown key")),
            }
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_table() {
        assert_eq!(PciConfig::default().validate(), Ok(()));
        let t: toml::Table = toml::from_str(
            "pause_digits = \"*1\"\nresume_digits = \"*2\"\nauto_pause_on_caller_digits = true\n\
             mask_dtmf_to_agent = true\nmax_pause = \"10m\"\nresume_after_digits = 19\ndelay = \"300ms\"",
        )
        .unwrap();
        let c = PciConfig::from_table(&t).unwrap();
        assert_eq!(c.resume_after_digits, Some(19));
        assert_eq!(c.delay, Duration::from_millis(300));
        assert_eq!(c.max_pause, Duration::from_secs(600));
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, key) in [
            ("pause_digits = \"*x\"", "pause_digits"),
            ("delay = \"50ms\"", "delay"),
            ("max_pause = \"10q\"", "max_pause"),
            ("max_pause = 5", "max_pause"),
            ("resume_after_digits = 0", "resume_after_digits"),
            ("resume_after_digits = -3", "resume_after_digits"),
            ("resume_digits = \"*1\"", "resume_digits"),
            ("colour = \"red\"", "colour"),
        ] {
            let t: toml::Table = toml::from_str(text).unwrap();
            assert_eq!(PciConfig::from_table(&t).unwrap_err().key, key, "{text}");
        }
    }
}
