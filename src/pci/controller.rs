//! The pause controller: decides when the recording pauses and resumes, and when the agent's
//! audio is masked. Sans-IO; every input carries its time.
//!
//! # Inputs (all times on the capture clock, see `pci` module docs)
//! * detector events per leg: [`suspect`](PauseController::suspect) /
//!   [`suspect_cleared`](PauseController::suspect_cleared) (uncertain in-band energy),
//!   [`digit_started`](PauseController::digit_started) /
//!   [`digit_ended`](PauseController::digit_ended) from any [`Source`] (helpers:
//!   [`handle_inband`](PauseController::handle_inband),
//!   [`handle_rfc4733`](PauseController::handle_rfc4733),
//!   [`handle_info`](PauseController::handle_info));
//! * [`api_pause`](PauseController::api_pause) / [`api_resume`](PauseController::api_resume);
//! * [`handle_timeout`](PauseController::handle_timeout) at [`poll_timeout`](PauseController::poll_timeout);
//! * [`finish`](PauseController::finish) at hangup.
//!
//! # Outputs
//! [`poll_event`](PauseController::poll_event) gives [`PauseEvent`]s (times, trigger, a count —
//! never a digit); [`is_paused_at`](PauseController::is_paused_at) /
//! [`overlaps_pause`](PauseController::overlaps_pause) answer the delayed recording path;
//! [`mask_to_agent`](PauseController::mask_to_agent) answers the live caller → agent path.
//!
//! # Model
//! * **Hold** (internal, fail closed): DTMF-like energy on the caller leg (with auto-pause) or
//!   any key on the agent leg (a pause sequence may be starting) opens a provisional span at
//!   `onset - lead`. It is cancelled — without a trace, the audio is recorded — if the energy goes
//!   away before `start + delay - DECIDE_MARGIN`; otherwise it becomes a pause (trigger
//!   `Uncertain`). Because the recording path runs `delay` behind, nothing of a held span has
//!   been written when it is cancelled.
//! * **Pause**: starts by a trigger ([`Trigger`]). A confirmed caller digit (auto-pause), the
//!   agent's `pause_digits`, or the API turns a hold into a pause from the hold's start.
//! * **Resume**: requested by the agent's `resume_digits`, the API, `#`, the digit count,
//!   `max_pause`, idleness, or (for `Uncertain`) the energy going away. It takes effect only when
//!   no tone is active and no energy is suspect on either leg, `guard` after the last one ended.
//! * Digits keyed during a pause are consumed here: `PauseEnded` carries their count only
//!   (excluding the agent's `resume_digits` and the `#` that ended the pause).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::inband::InbandEvent;
use super::rfc4733::Rfc4733Event;
use super::sipinfo::InfoDigit;
use super::{Digit, PciConfig, Source};
use crate::ids::Leg;
use crate::recording::container::GapKind;

/// A hold must be decided this long before the recording path reaches its start.
pub const DECIDE_MARGIN: Duration = Duration::from_millis(30);
/// Paused spans kept for [`PauseController::is_paused_at`]; beyond it the oldest two merge.
pub const MAX_SPANS: usize = 32;
/// Closed spans are forgotten this long after the recording path has passed them.
pub const SPAN_KEEP: Duration = Duration::from_secs(2);

/// Why a pause started. `code()` is the `trigger` byte of `GapKind::Pause` in recordings.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum Trigger {
    /// The agent keyed `pause_digits`.
    AgentKeys = 1,
    /// `POST /api/calls/{id}/pause` or the CLI.
    Api = 2,
    /// The caller started keying (`auto_pause_on_caller_digits`).
    CallerDigits = 3,
    /// DTMF-like energy that was never confirmed nor ruled out in time (fail closed).
    Uncertain = 4,
}

impl Trigger {
    pub fn code(self) -> u8 {
        self as u8
    }
    pub fn from_code(c: u8) -> Option<Trigger> {
        Some(match c {
            1 => Trigger::AgentKeys,
            2 => Trigger::Api,
            3 => Trigger::CallerDigits,
            4 => Trigger::Uncertain,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::AgentKeys => "agent_keys",
            Trigger::Api => "api",
            Trigger::CallerDigits => "caller_digits",
            Trigger::Uncertain => "uncertain",
        }
    }
}

/// Why a pause ended (for the call record; not stored in the recording).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum Resume {
    AgentKeys = 1,
    Api = 2,
    Hash = 3,
    DigitCount = 4,
    MaxPause = 5,
    /// An `Uncertain` pause whose energy went away.
    Cleared = 6,
    /// `resume_after_idle` elapsed since the caller's last key.
    Idle = 7,
    /// The call ended ([`PauseController::finish`]).
    Hangup = 8,
}

impl Resume {
    pub fn code(self) -> u8 {
        self as u8
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Resume::AgentKeys => "agent_keys",
            Resume::Api => "api",
            Resume::Hash => "hash",
            Resume::DigitCount => "digit_count",
            Resume::MaxPause => "max_pause",
            Resume::Cleared => "cleared",
            Resume::Idle => "idle",
            Resume::Hangup => "hangup",
        }
    }
}

/// What the controller reports. Counts and times only.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PauseEvent {
    /// Audio captured from `at` on is not recorded (`at` may be slightly in the past).
    PauseStarted { at: Instant, trigger: Trigger },
    /// The span `[started, at)` is over. `trigger` is what (finally) justified the pause;
    /// `digits` how many keys were pressed in it.
    PauseEnded {
        started: Instant,
        at: Instant,
        trigger: Trigger,
        resumed_by: Resume,
        digits: u16,
    },
}

impl PauseEvent {
    /// The recording gap record for an ended pause.
    pub fn gap_kind(&self) -> Option<GapKind> {
        match *self {
            PauseEvent::PauseEnded {
                trigger, digits, ..
            } => Some(GapKind::Pause {
                trigger: trigger.code(),
                digits,
            }),
            PauseEvent::PauseStarted { .. } => None,
        }
    }
}

/// Why an API request was refused (the REST shell maps both to 409).
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the recording is already paused")]
    AlreadyPaused,
    #[error("the recording is not paused")]
    NotPaused,
}

/// The controller's state, for status pages.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PauseState {
    Recording,
    /// Provisional: DTMF-like energy or an agent sequence is being decided.
    Holding {
        since: Instant,
    },
    Paused {
        since: Instant,
        trigger: Trigger,
    },
}

#[derive(Clone, Copy, Debug)]
struct Pause {
    start: Instant,
    trigger: Trigger,
    digits: u16,
    /// Agent presses counted in `digits` (a resume sequence removes its own).
    agent_digits: u16,
    resume: Option<(Resume, Instant)>,
    last_caller_press: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Recording,
    Hold {
        start: Instant,
        deadline: Instant,
        digits: u16,
    },
    Paused(Pause),
}

#[derive(Clone, Copy, Debug, Default)]
struct LegState {
    active: [bool; 3],
    suspect: bool,
    /// Latest end of a tone or of suspicion.
    quiet_since: Option<Instant>,
    /// Latest end of an accepted tone (mask hangover).
    last_tone_end: Option<Instant>,
    /// The digit of the press in progress (several sources may report one press).
    press: Option<Digit>,
}

impl LegState {
    fn any_active(&self) -> bool {
        self.active.iter().any(|a| *a)
    }
    fn busy(&self) -> bool {
        self.suspect || self.any_active()
    }
}

#[derive(Clone, Copy, Debug)]
struct Span {
    start: Instant,
    end: Option<Instant>,
}

/// The per-call pause controller. See the module docs.
#[derive(Debug)]
pub struct PauseController {
    cfg: PciConfig,
    now: Option<Instant>,
    mode: Mode,
    legs: [LegState; 2],
    agent_keys: Vec<Digit>,
    agent_last: Option<Instant>,
    spans: VecDeque<Span>,
    events: VecDeque<PauseEvent>,
    /// The agent keyed `record_digits` (taken by [`PauseController::take_record_request`]).
    record_requested: bool,
}

fn li(leg: Leg) -> usize {
    leg as usize
}

fn later(a: Option<Instant>, b: Instant) -> Instant {
    a.map_or(b, |a| a.max(b))
}

impl PauseController {
    /// A controller for one call. `cfg` should have passed [`PciConfig::validate`].
    pub fn new(cfg: PciConfig) -> PauseController {
        PauseController {
            cfg,
            now: None,
            mode: Mode::Recording,
            legs: [LegState::default(); 2],
            agent_keys: Vec::new(),
            agent_last: None,
            spans: VecDeque::new(),
            events: VecDeque::new(),
            record_requested: false,
        }
    }

    pub fn config(&self) -> &PciConfig {
        &self.cfg
    }

    // ---- inputs ------------------------------------------------------------------------------

    /// DTMF-like energy appeared on `leg`; `at` is the earliest instant it can have begun.
    pub fn suspect(&mut self, at: Instant, leg: Leg) {
        self.observe(at);
        self.legs[li(leg)].suspect = true;
        self.update(Some(at));
    }

    /// The energy on `leg` went away at `at` without (further) digits.
    pub fn suspect_cleared(&mut self, at: Instant, leg: Leg) {
        self.observe(at);
        let l = &mut self.legs[li(leg)];
        l.suspect = false;
        l.quiet_since = Some(later(l.quiet_since, at));
        self.update(None);
    }

    /// A key press began on `leg` at `at` (its estimated onset).
    pub fn digit_started(&mut self, at: Instant, leg: Leg, source: Source) {
        self.observe(at);
        self.legs[li(leg)].active[source as usize] = true;
        if leg == Leg::Caller && self.cfg.auto_pause_on_caller_digits {
            let start = at.checked_sub(self.cfg.lead).unwrap_or(at);
            self.pause(Trigger::CallerDigits, start);
        }
        self.update(Some(at));
    }

    /// A key press ended on `leg` at `at`. The digit is consumed here: only counts come out.
    pub fn digit_ended(&mut self, at: Instant, leg: Leg, source: Source, digit: Digit) {
        self.digit_ended_quiet_at(at, at, leg, source, digit);
    }

    fn digit_ended_quiet_at(
        &mut self,
        at: Instant,
        quiet: Instant,
        leg: Leg,
        source: Source,
        digit: Digit,
    ) {
        self.observe(at);
        if !self.legs[li(leg)].active[source as usize] {
            // An end without a start (a source that reports presses whole): start it now.
            self.digit_started(at, leg, source);
        }
        let l = &mut self.legs[li(leg)];
        l.active[source as usize] = false;
        l.press = Some(digit);
        l.quiet_since = Some(later(l.quiet_since, quiet));
        l.last_tone_end = Some(later(l.last_tone_end, quiet));
        if !l.any_active() {
            // Several sources reporting one press (in-band + RFC 4733) count once.
            if let Some(d) = l.press.take() {
                self.on_press(at, leg, d);
            }
        }
        self.update(None);
    }

    /// Feeds an in-band detector event for `leg`.
    pub fn handle_inband(&mut self, leg: Leg, ev: InbandEvent) {
        match ev {
            InbandEvent::Suspect { at } => self.suspect(at, leg),
            InbandEvent::SuspectCleared { at } => self.suspect_cleared(at, leg),
            InbandEvent::ToneStart { at } => self.digit_started(at, leg, Source::InBand),
            InbandEvent::ToneEnd { at, digit } => self.digit_ended(at, leg, Source::InBand, digit),
        }
    }

    /// Feeds an RFC 4733 tracker event for `leg`.
    pub fn handle_rfc4733(&mut self, leg: Leg, ev: Rfc4733Event) {
        match ev {
            Rfc4733Event::DigitStart { at } => self.digit_started(at, leg, Source::Rfc4733),
            Rfc4733Event::DigitEnd { at, digit } => {
                self.digit_ended(at, leg, Source::Rfc4733, digit)
            }
        }
    }

    /// Feeds a SIP INFO digit that arrived at `now` on `leg`. The key may still sound for
    /// `info.duration`: resume waits for that too.
    pub fn handle_info(&mut self, now: Instant, leg: Leg, info: InfoDigit) {
        self.digit_started(now, leg, Source::SipInfo);
        self.digit_ended_quiet_at(now, now + info.duration, leg, Source::SipInfo, info.digit);
    }

    /// Pause by API (REST or CLI). An `Uncertain` pause or a hold becomes an API pause; a pause
    /// waiting to resume stays paused.
    pub fn api_pause(&mut self, now: Instant) -> Result<(), ControlError> {
        self.observe(now);
        if let Mode::Paused(p) = &mut self.mode {
            if p.trigger == Trigger::Uncertain || p.resume.is_some() {
                p.trigger = if p.trigger == Trigger::Uncertain {
                    Trigger::Api
                } else {
                    p.trigger
                };
                p.resume = None;
                return Ok(());
            }
            return Err(ControlError::AlreadyPaused);
        }
        self.pause(Trigger::Api, now);
        self.fire(now);
        Ok(())
    }

    /// Resume by API; takes effect when no tone is sounding (see module docs).
    pub fn api_resume(&mut self, now: Instant) -> Result<(), ControlError> {
        self.observe(now);
        if !matches!(self.mode, Mode::Paused(_)) {
            return Err(ControlError::NotPaused);
        }
        self.request_resume(Resume::Api, now);
        self.fire(now);
        Ok(())
    }

    /// Runs timers due at `now` (hold decisions, max_pause, guards, sequence timeouts). Call it
    /// before popping the recording delay line at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.observe(now);
        self.fire(now);
    }

    /// The call ended: any hold or pause ends at `now` (even mid-tone).
    pub fn finish(&mut self, now: Instant) {
        self.observe(now);
        if let Mode::Hold { .. } = self.mode {
            self.promote();
        }
        if let Mode::Paused(p) = self.mode {
            self.end_pause(p, now.max(p.start), Resume::Hangup);
        }
    }

    // ---- outputs -----------------------------------------------------------------------------

    /// Whether the agent keyed `record_digits` since the last call (an on-demand start).
    pub fn take_record_request(&mut self) -> bool {
        std::mem::take(&mut self.record_requested)
    }

    pub fn poll_event(&mut self) -> Option<PauseEvent> {
        self.events.pop_front()
    }

    /// The next instant [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut consider = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        if let (Some(last), false) = (self.agent_last, self.agent_keys.is_empty()) {
            consider(last + self.cfg.sequence_timeout);
        }
        match self.mode {
            Mode::Recording => {}
            Mode::Hold { deadline, .. } => consider(deadline),
            Mode::Paused(p) => match p.resume {
                None => {
                    consider(p.start + self.cfg.max_pause);
                    if let Some(idle) = self.idle_deadline(&p) {
                        consider(idle);
                    }
                }
                Some(_) => {
                    if let Some(ready) = self.ready_at(&p) {
                        consider(ready);
                    }
                }
            },
        }
        t
    }

    /// Whether audio captured at `t` falls in a paused (or provisionally held) span.
    pub fn is_paused_at(&self, t: Instant) -> bool {
        self.spans
            .iter()
            .any(|s| s.start <= t && s.end.is_none_or(|e| t < e))
    }

    /// Whether any of `[from, to)` falls in a paused span (for a whole 20 ms frame).
    pub fn overlaps_pause(&self, from: Instant, to: Instant) -> bool {
        self.spans.iter().any(|s| {
            s.start < to.max(from + Duration::from_nanos(1)) && s.end.is_none_or(|e| from < e)
        })
    }

    /// Whether the caller's audio toward the agent must be masked at `now`, and the caller's
    /// telephone-events and INFO digits withheld: while the caller keys (tones, suspect energy,
    /// `mask_hangover` after the last tone) and during a caller-triggered or uncertain pause.
    pub fn mask_to_agent(&self, now: Instant) -> bool {
        if !self.cfg.mask_dtmf_to_agent {
            return false;
        }
        let c = &self.legs[li(Leg::Caller)];
        let keying = c.busy()
            || c.last_tone_end
                .is_some_and(|e| now < e + self.cfg.mask_hangover);
        let caller_pause = match self.mode {
            Mode::Paused(p) => matches!(p.trigger, Trigger::CallerDigits | Trigger::Uncertain),
            Mode::Hold { .. } => c.busy(),
            Mode::Recording => false,
        };
        keying || caller_pause
    }

    /// The current state.
    pub fn state(&self) -> PauseState {
        match self.mode {
            Mode::Recording => PauseState::Recording,
            Mode::Hold { start, .. } => PauseState::Holding { since: start },
            Mode::Paused(p) => PauseState::Paused {
                since: p.start,
                trigger: p.trigger,
            },
        }
    }

    // ---- internals ---------------------------------------------------------------------------

    fn observe(&mut self, t: Instant) {
        let now = later(self.now, t);
        self.now = Some(now);
        // Forget closed spans the recording path has long passed; bound the rest by merging.
        let keep = self.cfg.delay + SPAN_KEEP;
        while let Some(s) = self.spans.front() {
            match s.end {
                Some(e) if e + keep < now => {
                    self.spans.pop_front();
                }
                _ => break,
            }
        }
        while self.spans.len() > MAX_SPANS {
            // Merging widens coverage (fail closed); it never drops a paused instant.
            if let (Some(a), Some(b)) = (self.spans.pop_front(), self.spans.pop_front()) {
                self.spans.push_front(Span {
                    start: a.start.min(b.start),
                    end: b.end,
                });
            }
        }
    }

    /// `t` moved out of the last closed span, so spans never overlap.
    fn clamp(&self, t: Instant) -> Instant {
        match self.spans.back() {
            Some(Span { end: Some(e), .. }) => t.max(*e),
            _ => t,
        }
    }

    /// Pause start for a tone with onset `at`: `lead` earlier, never inside the previous span.
    fn start_for(&self, at: Instant) -> Instant {
        self.clamp(at.checked_sub(self.cfg.lead).unwrap_or(at))
    }

    fn open_span(&mut self, start: Instant) {
        self.spans.push_back(Span { start, end: None });
    }

    fn set_open_start(&mut self, start: Instant) {
        if let Some(s) = self.spans.back_mut()
            && s.end.is_none()
        {
            s.start = s.start.min(start);
        }
    }

    /// Pauses from `start` (already `lead`-adjusted by the caller), or upgrades a hold / an
    /// uncertain pause.
    fn pause(&mut self, trigger: Trigger, start: Instant) {
        let start = self.clamp(start);
        match self.mode {
            Mode::Recording => {
                self.open_span(start);
                self.mode = Mode::Paused(Pause::new(start, trigger, 0));
                self.events
                    .push_back(PauseEvent::PauseStarted { at: start, trigger });
            }
            Mode::Hold {
                start: held,
                digits,
                ..
            } => {
                let start = held.min(start);
                self.set_open_start(start);
                self.mode = Mode::Paused(Pause::new(start, trigger, digits));
                self.events
                    .push_back(PauseEvent::PauseStarted { at: start, trigger });
            }
            Mode::Paused(ref mut p) => {
                if p.trigger == Trigger::Uncertain {
                    p.trigger = trigger;
                    if matches!(p.resume, Some((Resume::Cleared, _))) {
                        p.resume = None;
                    }
                }
            }
        }
    }

    fn promote(&mut self) {
        if let Mode::Hold { start, digits, .. } = self.mode {
            self.mode = Mode::Paused(Pause::new(start, Trigger::Uncertain, digits));
            self.events.push_back(PauseEvent::PauseStarted {
                at: start,
                trigger: Trigger::Uncertain,
            });
        }
    }

    fn hold_wanted(&self) -> bool {
        let caller = self.cfg.auto_pause_on_caller_digits && self.legs[li(Leg::Caller)].busy();
        let agent = !self.cfg.pause_digits.is_empty()
            && (self.legs[li(Leg::Agent)].busy() || self.agent_prefix_pending());
        caller || agent
    }

    /// The agent's recent keys end in a proper, non-empty prefix of `pause_digits`.
    fn agent_prefix_pending(&self) -> bool {
        let seq = self.cfg.pause_digits.digits();
        (1..seq.len()).any(|n| self.agent_keys.ends_with(&seq[..n]))
    }

    fn update(&mut self, onset: Option<Instant>) {
        let wanted = self.hold_wanted();
        match self.mode {
            Mode::Recording if wanted => {
                // Invariant: every public input observes a time first, so `self.now` is set.
                let Some(at) = onset.or(self.now) else { return };
                let start = self.start_for(at);
                self.open_span(start);
                let deadline = start + self.cfg.delay.saturating_sub(DECIDE_MARGIN);
                self.mode = Mode::Hold {
                    start,
                    deadline,
                    digits: 0,
                };
            }
            Mode::Hold { deadline, .. } if !wanted => {
                if self.now.is_some_and(|n| n < deadline) {
                    // Decided before the recording path reached the span: it never existed.
                    self.spans.pop_back();
                    self.mode = Mode::Recording;
                } else {
                    self.promote();
                }
            }
            Mode::Hold { start, .. } => {
                if let Some(at) = onset {
                    let s = self.start_for(at);
                    if s < start {
                        self.set_open_start(s);
                        if let Mode::Hold { start, .. } = &mut self.mode {
                            *start = s;
                        }
                    }
                }
            }
            _ => {}
        }
        if let Mode::Paused(p) = self.mode
            && p.trigger == Trigger::Uncertain
            && !wanted
            && p.resume.is_none()
        {
            let at = self.now.unwrap_or(p.start);
            self.request_resume(Resume::Cleared, at);
        }
        if let Some(now) = self.now {
            self.fire(now);
        }
    }

    fn on_press(&mut self, at: Instant, leg: Leg, d: Digit) {
        match leg {
            Leg::Agent => {
                if self
                    .agent_last
                    .is_some_and(|l| at > l + self.cfg.sequence_timeout)
                {
                    self.agent_keys.clear();
                }
                self.agent_last = Some(at);
                if self.agent_keys.len() >= super::DigitSeq::MAX {
                    self.agent_keys.remove(0);
                }
                self.agent_keys.push(d);
                match &mut self.mode {
                    Mode::Paused(p) if p.trigger != Trigger::Uncertain => {
                        p.digits = p.digits.saturating_add(1);
                        p.agent_digits = p.agent_digits.saturating_add(1);
                        let seq = self.cfg.resume_digits.digits();
                        if !seq.is_empty() && self.agent_keys.ends_with(seq) {
                            let own = (seq.len() as u16).min(p.agent_digits);
                            p.digits -= own.min(p.digits);
                            p.agent_digits -= own;
                            self.agent_keys.clear();
                            self.request_resume(Resume::AgentKeys, at);
                        }
                    }
                    // Not (really) paused yet: the agent may be keying `pause_digits`.
                    _ => {
                        let seq = self.cfg.pause_digits.digits();
                        let rec = self.cfg.record_digits.digits();
                        if !seq.is_empty() && self.agent_keys.ends_with(seq) {
                            self.agent_keys.clear();
                            let start = at.checked_sub(self.cfg.lead).unwrap_or(at);
                            self.pause(Trigger::AgentKeys, start);
                        } else if !rec.is_empty() && self.agent_keys.ends_with(rec) {
                            self.agent_keys.clear();
                            self.record_requested = true;
                        }
                    }
                }
            }
            Leg::Caller => match &mut self.mode {
                Mode::Paused(p) => {
                    p.last_caller_press = Some(at);
                    if self.cfg.resume_on_hash && d == Digit::HASH {
                        self.request_resume(Resume::Hash, at);
                    } else {
                        p.digits = p.digits.saturating_add(1);
                        if self.cfg.resume_after_digits.is_some_and(|n| p.digits >= n) {
                            self.request_resume(Resume::DigitCount, at);
                        }
                    }
                }
                Mode::Hold { digits, .. } => *digits = digits.saturating_add(1),
                Mode::Recording => {}
            },
        }
    }

    fn request_resume(&mut self, why: Resume, at: Instant) {
        if let Mode::Paused(p) = &mut self.mode
            && p.resume.is_none()
        {
            p.resume = Some((why, at));
        }
    }

    fn idle_deadline(&self, p: &Pause) -> Option<Instant> {
        let idle = self.cfg.resume_after_idle?;
        (p.trigger == Trigger::CallerDigits).then(|| p.last_caller_press.unwrap_or(p.start) + idle)
    }

    /// When a requested resume may take effect, or None while a tone or suspicion is active.
    fn ready_at(&self, p: &Pause) -> Option<Instant> {
        let (_, req) = p.resume?;
        if self.legs.iter().any(|l| l.busy()) {
            return None;
        }
        let mut ready = req;
        for l in &self.legs {
            if let Some(q) = l.quiet_since {
                ready = ready.max(q + self.cfg.guard);
            }
        }
        Some(ready.max(p.start))
    }

    fn fire(&mut self, now: Instant) {
        if self
            .agent_last
            .is_some_and(|l| now >= l + self.cfg.sequence_timeout)
            && !self.agent_keys.is_empty()
        {
            self.agent_keys.clear();
            self.update(None);
            return; // update() fires again
        }
        if let Mode::Hold { deadline, .. } = self.mode
            && now >= deadline
        {
            self.promote();
            self.update(None);
            return;
        }
        if let Mode::Paused(p) = self.mode
            && p.resume.is_none()
        {
            let max_at = p.start + self.cfg.max_pause;
            if now >= max_at {
                self.request_resume(Resume::MaxPause, max_at);
            } else if let Some(idle) = self.idle_deadline(&p)
                && now >= idle
            {
                self.request_resume(Resume::Idle, idle);
            }
        }
        if let Mode::Paused(p) = self.mode
            && let Some(ready) = self.ready_at(&p)
            && now >= ready
        {
            let why = p.resume.map_or(Resume::Api, |r| r.0);
            self.end_pause(p, ready, why);
        }
    }

    fn end_pause(&mut self, p: Pause, at: Instant, why: Resume) {
        if let Some(s) = self.spans.back_mut()
            && s.end.is_none()
        {
            s.end = Some(at);
        }
        self.mode = Mode::Recording;
        self.agent_keys.clear();
        self.events.push_back(PauseEvent::PauseEnded {
            started: p.start,
            at,
            trigger: p.trigger,
            resumed_by: why,
            digits: p.digits,
        });
    }
}

impl Pause {
    fn new(start: Instant, trigger: Trigger, digits: u16) -> Pause {
        Pause {
            start,
            trigger,
            digits,
            agent_digits: 0,
            resume: None,
            last_caller_press: None,
        }
    }
}

#[cfg(test)]
mod tests;
