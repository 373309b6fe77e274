//! RFC 4733 telephone-event tracking: packets in, one start and one end per key press out.
//!
//! An event is identified by its RTP timestamp (§2.5.1.5: all packets of one event carry the
//! event's start timestamp; a new event gets a new timestamp). The tracker handles:
//! * the start (first packet of a new timestamp, marker or not — the marked one may be lost);
//! * continuation packets (same timestamp, duration growing) and long-event segments;
//! * the end packet (E bit), normally sent three times: one `DigitEnd` only;
//! * reordered and late packets of an event already finished (ignored, by timestamp);
//! * lost start packets: the first packet seen may be an update or even an end;
//! * a new event while the previous one never sent its end (the previous ends first);
//! * a lost end: the event ends [`EVENT_TIMEOUT`] after its last packet
//!   ([`EventTracker::handle_timeout`]).
//!
//! Non-DTMF events (flash, tones, codes above 15) are ignored.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::Digit;
use crate::media::rtp::{TelephoneEvent, TelephoneEventError, ts_delta};

/// An event with no packet for this long is over (its end packets were lost).
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(1);
/// Finished events remembered to drop their late duplicates.
pub const RECENT: usize = 8;
/// RTP clock of telephone-event at 8 kHz.
const RATE: u64 = 8000;

/// What the tracker reports. Times are capture (arrival) times.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Rfc4733Event {
    /// A key press began; `at` is the estimated onset (arrival minus the duration so far).
    DigitStart { at: Instant },
    /// The key press ended.
    DigitEnd { at: Instant, digit: Digit },
}

/// Why a telephone-event packet was rejected. Never carries the payload.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum Rfc4733Error {
    #[error("telephone-event payload too short ({0} bytes)")]
    TooShort(usize),
}

impl From<TelephoneEventError> for Rfc4733Error {
    fn from(e: TelephoneEventError) -> Self {
        match e {
            TelephoneEventError::TooShort(n) => Rfc4733Error::TooShort(n),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Current {
    ts: u32,
    digit: Digit,
    last_seen: Instant,
}

/// Tracks one leg's telephone-event stream (one SSRC; call [`reset`](Self::reset) on a change).
#[derive(Debug, Default)]
pub struct EventTracker {
    current: Option<Current>,
    /// Timestamps of finished events (newest last).
    done: VecDeque<u32>,
    events: VecDeque<Rfc4733Event>,
}

impl EventTracker {
    pub fn new() -> EventTracker {
        EventTracker::default()
    }

    /// Forgets the stream (new SSRC). A running event ends now.
    pub fn reset(&mut self, now: Instant) {
        self.finish_current(now);
        self.done.clear();
    }

    /// Feeds one telephone-event packet: `rtp_ts` and `marker` from the RTP header, `payload` the
    /// RTP payload. `now` is the arrival time.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        rtp_ts: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<(), Rfc4733Error> {
        let ev = TelephoneEvent::parse(payload)?;
        let _ = marker; // the timestamp identifies events; the marker may be lost with the start
        let Some(digit) = Digit::from_event(ev.event) else {
            return Ok(());
        };
        if self.done.contains(&rtp_ts) {
            return Ok(()); // a repeated end packet or a late packet of a finished event
        }
        if let Some(cur) = &mut self.current {
            let d = ts_delta(cur.ts, rtp_ts);
            if d == 0 {
                cur.last_seen = now;
                if ev.end {
                    self.finish_current(now);
                }
                return Ok(());
            }
            if d < 0 {
                return Ok(()); // late packet of an older event
            }
            // A newer event while this one never ended: its end packets were lost.
            self.finish_current(now);
        } else if let Some(&last) = self.done.back()
            && ts_delta(last, rtp_ts) < 0
        {
            return Ok(()); // older than the newest finished event
        }
        let so_far = Duration::from_micros(ev.duration as u64 * 1_000_000 / RATE);
        let at = now.checked_sub(so_far).unwrap_or(now);
        self.events.push_back(Rfc4733Event::DigitStart { at });
        self.current = Some(Current {
            ts: rtp_ts,
            digit,
            last_seen: now,
        });
        if ev.end {
            self.finish_current(now); // start and update packets all lost
        }
        Ok(())
    }

    /// Ends an event whose end packets never came.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(cur) = self.current
            && now >= cur.last_seen + EVENT_TIMEOUT
        {
            self.finish_current(cur.last_seen + EVENT_TIMEOUT);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.current.map(|c| c.last_seen + EVENT_TIMEOUT)
    }

    /// True while a key press is in progress.
    pub fn is_active(&self) -> bool {
        self.current.is_some()
    }

    pub fn poll_event(&mut self) -> Option<Rfc4733Event> {
        self.events.pop_front()
    }

    fn finish_current(&mut self, at: Instant) {
        if let Some(cur) = self.current.take() {
            self.events.push_back(Rfc4733Event::DigitEnd {
                at,
                digit: cur.digit,
            });
            if self.done.len() >= RECENT {
                self.done.pop_front();
            }
            self.done.push_back(cur.ts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(code: u8, end: bool, duration: u16) -> [u8; 4] {
        TelephoneEvent {
            event: code,
            end,
            volume: 10,
            duration,
        }
        .to_bytes()
    }

    fn drain(t: &mut EventTracker, base: Instant) -> Vec<(char, u128, Option<Digit>)> {
        let mut v = Vec::new();
        while let Some(e) = t.poll_event() {
            v.push(match e {
                Rfc4733Event::DigitStart { at } => ('+', at.duration_since(base).as_millis(), None),
                Rfc4733Event::DigitEnd { at, digit } => {
                    ('-', at.duration_since(base).as_millis(), Some(digit))
                }
            });
        }
        v
    }

    fn ms(base: Instant, m: u64) -> Instant {
        base + Duration::from_millis(m)
    }

    /// A normal event: start (marker), updates every 50 ms, three end packets.
    fn send_event(t: &mut EventTracker, base: Instant, at_ms: u64, ts: u32, code: u8) {
        t.handle_packet(ms(base, at_ms), ts, true, &pkt(code, false, 400))
            .unwrap();
        t.handle_packet(ms(base, at_ms + 50), ts, false, &pkt(code, false, 800))
            .unwrap();
        for i in 0..3 {
            t.handle_packet(
                ms(base, at_ms + 100 + i * 20),
                ts,
                false,
                &pkt(code, true, 1040),
            )
            .unwrap();
        }
    }

    #[test]
    fn triple_end_packets_give_one_digit() {
        let base = Instant::now();
        let mut t = EventTracker::new();
        send_event(&mut t, base, 1000, 8000, 5);
        let ev = drain(&mut t, base);
        // Onset estimated from the first packet's duration (400 units = 50 ms).
        assert_eq!(
            ev,
            vec![('+', 950, None), ('-', 1100, Digit::from_event(5))]
        );
        assert!(!t.is_active());
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn same_digit_twice_with_distinct_timestamps_is_two_digits() {
        let base = Instant::now();
        let mut t = EventTracker::new();
        send_event(&mut t, base, 1000, 8000, 7);
        send_event(&mut t, base, 1300, 10400, 7);
        let ends = drain(&mut t, base).iter().filter(|e| e.0 == '-').count();
        assert_eq!(ends, 2);
    }

    #[test]
    fn reordered_and_late_packets() {
        let base = Instant::now();
        let mut t = EventTracker::new();
        // Update arrives before the marked start.
        t.handle_packet(ms(base, 100), 1000, false, &pkt(1, false, 800))
            .unwrap();
        t.handle_packet(ms(base, 105), 1000, true, &pkt(1, false, 400))
            .unwrap();
        t.handle_packet(ms(base, 200), 1000, false, &pkt(1, true, 1200))
            .unwrap();
        // Next event; then a late duplicate end of the first one, and a late update of it.
        t.handle_packet(ms(base, 400), 5000, true, &pkt(2, false, 160))
            .unwrap();
        t.handle_packet(ms(base, 410), 1000, false, &pkt(1, true, 1200))
            .unwrap();
        t.handle_packet(ms(base, 415), 1000, false, &pkt(1, false, 800))
            .unwrap();
        t.handle_packet(ms(base, 500), 5000, false, &pkt(2, true, 900))
            .unwrap();
        let ev = drain(&mut t, base);
        let kinds: String = ev.iter().map(|e| e.0).collect();
        assert_eq!(kinds, "+-+-");
        assert_eq!(ev[1].2, Digit::from_event(1));
        assert_eq!(ev[3].2, Digit::from_event(2));
        // An older timestamp than the newest finished event starts nothing.
        t.handle_packet(ms(base, 600), 3000, true, &pkt(3, false, 160))
            .unwrap();
        assert!(drain(&mut t, base).is_empty());
    }

    #[test]
    fn lost_start_and_only_end_seen() {
        let base = Instant::now();
        let mut t = EventTracker::new();
        // Only the end packets arrive: one start and one end, onset estimated from duration.
        for i in 0..3 {
            t.handle_packet(ms(base, 1000 + i * 20), 42, false, &pkt(11, true, 800))
                .unwrap();
        }
        let ev = drain(&mut t, base);
        assert_eq!(ev, vec![('+', 900, None), ('-', 1000, Some(Digit::HASH))]);
    }

    #[test]
    fn lost_end_times_out_and_new_event_ends_the_old() {
        let base = Instant::now();
        let mut t = EventTracker::new();
        t.handle_packet(ms(base, 0), 100, true, &pkt(4, false, 160))
            .unwrap();
        assert_eq!(t.poll_timeout(), Some(ms(base, 1000)));
        t.handle_timeout(ms(base, 999));
        assert_eq!(drain(&mut t, base).len(), 1);
        t.handle_timeout(ms(base, 1000));
        assert_eq!(drain(&mut t, base), vec![('-', 1000, Digit::from_event(4))]);
        // A late end for it changes nothing.
        t.handle_packet(ms(base, 1100), 100, false, &pkt(4, true, 800))
            .unwrap();
        assert!(drain(&mut t, base).is_empty());
        // New event without end, then another: the first ends when the second starts.
        t.handle_packet(ms(base, 2000), 9000, true, &pkt(6, false, 160))
            .unwrap();
        t.handle_packet(ms(base, 2500), 13000, true, &pkt(6, false, 160))
            .unwrap();
        let kinds: String = drain(&mut t, base).iter().map(|e| e.0).collect();
        assert_eq!(kinds, "+-+");
        t.reset(ms(base, 2600));
        assert_eq!(drain(&mut t, base).len(), 1);
    }

    #[test]
    fn garbage_is_an_error_or_ignored_never_a_panic() {
        let base = Instant::now();
        let mut t = EventTracker::new();
        assert_eq!(
            t.handle_packet(base, 1, true, &[1, 2]),
            Err(Rfc4733Error::TooShort(2))
        );
        t.handle_packet(base, 1, true, &pkt(16, false, 1)).unwrap(); // flash: not a digit
        t.handle_packet(base, 1, true, &pkt(200, true, 65535))
            .unwrap();
        assert!(t.poll_event().is_none());
        let mut x: u32 = 12345;
        for i in 0..2000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let b = x.to_be_bytes();
            let _ = t.handle_packet(
                base + Duration::from_millis(i as u64),
                x >> 20,
                b[0] & 1 == 1,
                &b[..(i % 5) as usize],
            );
            t.handle_timeout(base + Duration::from_millis(i as u64));
        }
        while t.poll_event().is_some() {}
    }
}
