use std::time::{Duration, Instant};

use super::*;
use crate::pci::DigitSeq;

struct T {
    base: Instant,
    c: PauseController,
}

fn d(c: char) -> Digit {
    Digit::from_char(c).unwrap()
}

impl T {
    fn new(cfg: PciConfig) -> T {
        T {
            base: Instant::now(),
            c: PauseController::new(cfg),
        }
    }
    fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }
    fn ms(&self, t: Instant) -> u64 {
        t.duration_since(self.base).as_millis() as u64
    }
    /// Advances to `ms`, firing timers on the way (as the shell would).
    fn run_to(&mut self, ms: u64) {
        let end = self.at(ms);
        while let Some(t) = self.c.poll_timeout() {
            if t > end {
                break;
            }
            self.c.handle_timeout(t);
        }
        self.c.handle_timeout(end);
    }
    /// A key press via RFC 4733 on `leg`, [start, start+dur).
    fn key(&mut self, leg: Leg, key: char, start: u64, dur: u64) {
        self.run_to(start);
        self.c.digit_started(self.at(start), leg, Source::Rfc4733);
        self.run_to(start + dur);
        self.c
            .digit_ended(self.at(start + dur), leg, Source::Rfc4733, d(key));
    }
    fn events(&mut self) -> Vec<PauseEvent> {
        std::iter::from_fn(|| self.c.poll_event()).collect()
    }
    fn ended(&mut self) -> Vec<(u64, u64, Trigger, Resume, u16)> {
        let mut v = Vec::new();
        for e in self.events() {
            if let PauseEvent::PauseEnded {
                started,
                at,
                trigger,
                resumed_by,
                digits,
            } = e
            {
                v.push((self.ms(started), self.ms(at), trigger, resumed_by, digits));
            }
        }
        v
    }
}

fn cfg() -> PciConfig {
    PciConfig::default()
}

#[test]
fn trigger_codes_are_stable() {
    for (t, c) in [
        (Trigger::AgentKeys, 1),
        (Trigger::Api, 2),
        (Trigger::CallerDigits, 3),
        (Trigger::Uncertain, 4),
    ] {
        assert_eq!(t.code(), c);
        assert_eq!(Trigger::from_code(c), Some(t));
    }
    assert_eq!(Trigger::from_code(0), None);
    let e = PauseEvent::PauseEnded {
        started: Instant::now(),
        at: Instant::now(),
        trigger: Trigger::Api,
        resumed_by: Resume::Api,
        digits: 3,
    };
    assert_eq!(
        e.gap_kind(),
        Some(GapKind::Pause {
            trigger: 2,
            digits: 3
        })
    );
}

#[test]
fn auto_pause_starts_before_the_tone_and_hash_resumes_after_it() {
    let mut t = T::new(cfg());
    t.key(Leg::Caller, '4', 1000, 80);
    assert!(t.c.is_paused_at(t.at(1000 - 40)));
    assert!(!t.c.is_paused_at(t.at(959)));
    t.key(Leg::Caller, '2', 1200, 80);
    t.key(Leg::Caller, '#', 1400, 80);
    // `#` ends at 1480; resume at 1480 + guard.
    t.run_to(1579);
    assert_eq!(
        t.c.state(),
        PauseState::Paused {
            since: t.at(960),
            trigger: Trigger::CallerDigits
        }
    );
    t.run_to(1580);
    assert_eq!(
        t.ended(),
        vec![(960, 1580, Trigger::CallerDigits, Resume::Hash, 2)]
    );
    assert!(t.c.is_paused_at(t.at(1579)));
    assert!(!t.c.is_paused_at(t.at(1580)));
}

#[test]
fn resume_never_mid_tone_and_waits_for_suspicion() {
    let mut t = T::new(cfg());
    t.c.api_pause(t.at(100)).unwrap();
    assert_eq!(t.c.api_pause(t.at(110)), Err(ControlError::AlreadyPaused));
    t.run_to(500);
    t.c.digit_started(t.at(500), Leg::Caller, Source::InBand);
    t.c.api_resume(t.at(520)).unwrap();
    t.run_to(2000);
    assert!(t.ended().is_empty(), "resumed while a tone sounds");
    t.c.digit_ended(t.at(2000), Leg::Caller, Source::InBand, d('7'));
    // Uncertain energy right after: stay paused while it lasts.
    t.c.suspect(t.at(2050), Leg::Caller);
    t.run_to(5000);
    assert!(t.ended().is_empty(), "resumed during suspicion");
    t.c.suspect_cleared(t.at(5000), Leg::Caller);
    t.run_to(5099);
    assert!(t.ended().is_empty());
    t.run_to(5100);
    assert_eq!(t.ended(), vec![(100, 5100, Trigger::Api, Resume::Api, 1)]);
    assert_eq!(t.c.api_resume(t.at(6000)), Err(ControlError::NotPaused));
}

#[test]
fn max_pause() {
    let mut c = cfg();
    c.max_pause = Duration::from_secs(5);
    let mut t = T::new(c);
    t.c.api_pause(t.at(1000)).unwrap();
    assert_eq!(t.c.poll_timeout(), Some(t.at(6000)));
    t.run_to(10_000);
    assert_eq!(
        t.ended(),
        vec![(1000, 6000, Trigger::Api, Resume::MaxPause, 0)]
    );
}

#[test]
fn digit_count_rule_counts_16_plus_3() {
    let mut c = cfg();
    c.resume_after_digits = Some(19);
    let mut t = T::new(c);
    let mut ms = 1000;
    for (i, k) in "4929123456781234".chars().chain("123".chars()).enumerate() {
        t.key(Leg::Caller, k, ms, 70);
        ms += if i == 15 { 3000 } else { 150 };
        if i < 18 {
            assert!(
                matches!(t.c.state(), PauseState::Paused { .. }),
                "digit {i}"
            );
        }
    }
    t.run_to(ms + 1000);
    let e = t.ended();
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].2, e[0].3, e[0].4),
        (Trigger::CallerDigits, Resume::DigitCount, 19)
    );
}

#[test]
fn agent_sequences_pause_and_resume_and_are_not_counted() {
    let mut c = cfg();
    c.auto_pause_on_caller_digits = false;
    let mut t = T::new(c);
    t.key(Leg::Agent, '*', 1000, 80);
    // Agent keying a possible sequence: held (fail closed) but not yet paused.
    assert!(matches!(t.c.state(), PauseState::Holding { .. }));
    t.key(Leg::Agent, '1', 1150, 80);
    assert_eq!(
        t.c.state(),
        PauseState::Paused {
            since: t.at(960),
            trigger: Trigger::AgentKeys
        }
    );
    t.key(Leg::Caller, '5', 2000, 80);
    t.key(Leg::Caller, '6', 2200, 80);
    t.key(Leg::Agent, '*', 3000, 80);
    t.key(Leg::Agent, '2', 3150, 80);
    t.run_to(4000);
    assert_eq!(
        t.ended(),
        vec![(960, 3330, Trigger::AgentKeys, Resume::AgentKeys, 2)]
    );
}

#[test]
fn agent_digit_that_is_not_a_sequence_is_recorded() {
    let mut c = cfg();
    c.auto_pause_on_caller_digits = false;
    let mut t = T::new(c);
    t.key(Leg::Agent, '5', 1000, 80);
    t.run_to(1100);
    assert_eq!(t.c.state(), PauseState::Recording);
    assert!(!t.c.is_paused_at(t.at(1000)));
    assert!(t.events().is_empty());
}

#[test]
fn uncertain_energy_cancelled_in_time_leaves_no_trace_else_fails_closed() {
    let mut t = T::new(cfg());
    t.c.suspect(t.at(1000), Leg::Caller);
    assert!(t.c.is_paused_at(t.at(1000)), "held while undecided");
    assert!(t.c.mask_to_agent(t.at(1000)));
    t.run_to(1030);
    t.c.suspect_cleared(t.at(1030), Leg::Caller);
    assert_eq!(t.c.state(), PauseState::Recording);
    assert!(!t.c.is_paused_at(t.at(1000)));
    assert!(t.events().is_empty());
    // Energy that lasts past the decision deadline becomes an Uncertain pause.
    t.c.suspect(t.at(5000), Leg::Caller);
    t.run_to(6000);
    assert_eq!(
        t.c.state(),
        PauseState::Paused {
            since: t.at(4960),
            trigger: Trigger::Uncertain
        }
    );
    t.c.suspect_cleared(t.at(6000), Leg::Caller);
    t.run_to(7000);
    assert_eq!(
        t.ended(),
        vec![(4960, 6100, Trigger::Uncertain, Resume::Cleared, 0)]
    );
}

#[test]
fn is_paused_at_over_several_spans_and_bounded() {
    let mut t = T::new(cfg());
    for i in 0..50u64 {
        t.c.api_pause(t.at(10_000 * i)).unwrap();
        t.c.api_resume(t.at(10_000 * i + 1000)).unwrap();
    }
    assert!(t.c.spans.len() <= MAX_SPANS);
    let last = 49 * 10_000;
    assert!(t.c.is_paused_at(t.at(last + 500)));
    assert!(!t.c.is_paused_at(t.at(last + 1000)));
    assert!(!t.c.is_paused_at(t.at(last - 5000)));
    assert!(t.c.overlaps_pause(t.at(last - 10), t.at(last + 10)));
    assert!(!t.c.overlaps_pause(t.at(last + 1000), t.at(last + 1020)));
    // A few spans, queried before pruning.
    let mut t = T::new(cfg());
    t.c.api_pause(t.at(100)).unwrap();
    t.c.api_resume(t.at(200)).unwrap();
    t.c.api_pause(t.at(300)).unwrap();
    t.c.api_resume(t.at(400)).unwrap();
    let paused: Vec<bool> = [50, 100, 150, 200, 250, 300, 399, 400]
        .iter()
        .map(|&m| t.c.is_paused_at(t.at(m)))
        .collect();
    assert_eq!(paused, [false, true, true, false, false, true, true, false]);
}

#[test]
fn masking_follows_caller_keying_and_hangover() {
    let mut c = cfg();
    c.auto_pause_on_caller_digits = false;
    let mut t = T::new(c);
    assert!(!t.c.mask_to_agent(t.at(900)));
    t.key(Leg::Caller, '3', 1000, 80);
    assert!(t.c.mask_to_agent(t.at(1080)));
    assert!(t.c.mask_to_agent(t.at(2079)));
    assert!(!t.c.mask_to_agent(t.at(2080)));
    let mut c = cfg();
    c.mask_dtmf_to_agent = false;
    let mut t = T::new(c);
    t.c.digit_started(t.at(1000), Leg::Caller, Source::Rfc4733);
    assert!(!t.c.mask_to_agent(t.at(1000)));
}

#[test]
fn two_sources_for_one_press_count_once_and_info_works() {
    let mut t = T::new(cfg());
    t.c.digit_started(t.at(1000), Leg::Caller, Source::InBand);
    t.c.digit_started(t.at(1010), Leg::Caller, Source::Rfc4733);
    t.c.digit_ended(t.at(1080), Leg::Caller, Source::Rfc4733, d('9'));
    t.c.digit_ended(t.at(1090), Leg::Caller, Source::InBand, d('9'));
    t.c.handle_info(
        t.at(1500),
        Leg::Caller,
        crate::pci::InfoDigit {
            digit: d('8'),
            duration: Duration::from_millis(160),
        },
    );
    t.c.api_resume(t.at(1600)).unwrap();
    t.run_to(3000);
    // Resume waits for the INFO key's duration (1660) + guard.
    assert_eq!(
        t.ended(),
        vec![(960, 1760, Trigger::CallerDigits, Resume::Api, 2)]
    );
}

#[test]
fn finish_closes_a_pause_and_idle_resume() {
    let mut t = T::new(cfg());
    t.key(Leg::Caller, '1', 1000, 50);
    t.c.finish(t.at(2000));
    assert_eq!(
        t.ended(),
        vec![(960, 2000, Trigger::CallerDigits, Resume::Hangup, 1)]
    );
    let mut c = cfg();
    c.resume_after_idle = Some(Duration::from_secs(4));
    let mut t = T::new(c);
    t.key(Leg::Caller, '1', 1000, 50);
    t.run_to(10_000);
    assert_eq!(
        t.ended(),
        vec![(960, 5050, Trigger::CallerDigits, Resume::Idle, 1)]
    );
    assert_eq!(DigitSeq::parse("*1").map(|s| s.len()), Some(2));
}

#[test]
fn arbitrary_input_sequences_never_panic_and_spans_stay_consistent() {
    let mut x: u64 = 99;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..200 {
        let mut t = T::new(cfg());
        let mut ms = 0u64;
        for _ in 0..200 {
            ms += next() % 300;
            let leg = if next() % 2 == 0 {
                Leg::Caller
            } else {
                Leg::Agent
            };
            let src = Source::ALL[(next() % 3) as usize];
            let dg = Digit::from_event((next() % 16) as u8).unwrap();
            let at = t.at(ms.saturating_sub(next() % 60));
            match next() % 9 {
                0 => t.c.suspect(at, leg),
                1 => t.c.suspect_cleared(at, leg),
                2 => t.c.digit_started(at, leg, src),
                3 => t.c.digit_ended(at, leg, src, dg),
                4 => drop(t.c.api_pause(at)),
                5 => drop(t.c.api_resume(at)),
                6 => t.run_to(ms),
                7 => t.c.handle_timeout(at),
                _ => drop(t.c.mask_to_agent(at)),
            }
        }
        t.c.finish(t.at(ms + 1));
        assert_eq!(t.c.state(), PauseState::Recording);
        for e in t.events() {
            if let PauseEvent::PauseEnded { started, at, .. } = e {
                assert!(started <= at);
            }
        }
        let spans: Vec<_> = t.c.spans.iter().copied().collect();
        for w in spans.windows(2) {
            assert!(w[0].end.is_some_and(|e| e <= w[1].start), "{spans:?}");
        }
    }
}

#[test]
fn agent_record_digits_ask_for_an_on_demand_start_once_and_pause_nothing() {
    let mut c = cfg();
    c.auto_pause_on_caller_digits = false;
    let mut t = T::new(c);
    t.key(Leg::Agent, '*', 1000, 80);
    assert!(!t.c.take_record_request(), "not before the sequence is complete");
    t.key(Leg::Agent, '3', 1150, 80);
    assert!(t.c.take_record_request());
    assert!(!t.c.take_record_request(), "taken once");
    // The `*` held the recording while it could still become `*1`; once it is `*3` nothing is
    // paused for it (the hold resolved before the delay line reached it, or as a cleared span).
    t.run_to(4000);
    assert!(t.ended().iter().all(|e| e.2 == Trigger::Uncertain), "no agent-keys pause");
    // The caller keying the same sequence is not the agent.
    t.key(Leg::Caller, '*', 5000, 80);
    t.key(Leg::Caller, '3', 5150, 80);
    assert!(!t.c.take_record_request());
    // Disabled with an empty sequence.
    let mut c = cfg();
    c.record_digits = DigitSeq::parse("").unwrap();
    let mut t = T::new(c);
    t.key(Leg::Agent, '*', 1000, 80);
    t.key(Leg::Agent, '3', 1150, 80);
    assert!(!t.c.take_record_request());
}
