//! How busy a media thread is: the share of wall time it spends working rather than waiting
//! for packets, over fixed windows. Sans-IO: the thread reports when it woke and when it went
//! back to waiting; time is an input.
//!
//! Admission control reads it: a thread busy nearly all the time has no slack left for one more
//! call, and accepting one anyway would make every call on it late and, past that, lossy. The
//! trunk can send a refused call elsewhere; a call already up cannot be saved that way.
//!
//! Wall time, not CPU time: a thread that is runnable but waiting for a core (the machine is
//! saturated by something else) is just as unable to serve its packets in time.

use std::time::{Duration, Instant};

/// Length of one measuring window. Long enough to hold thousands of wake-ups at load, short
/// enough that a ramp of new calls is noticed within a fraction of a second.
pub const WINDOW: Duration = Duration::from_millis(250);

/// Busy share of a media thread's recent windows.
#[derive(Debug)]
pub struct LoadMeter {
    window_start: Instant,
    busy: Duration,
    /// Share of the last complete window, in thousandths.
    last: u32,
    /// Share of the window before it: the reading is the larger of the two, so one quiet
    /// window in a saturated stretch does not open the gate.
    previous: u32,
}

impl LoadMeter {
    pub fn new(now: Instant) -> LoadMeter {
        LoadMeter {
            window_start: now,
            busy: Duration::ZERO,
            last: 0,
            previous: 0,
        }
    }

    /// The thread worked from `from` (it woke) to `to` (it is about to wait again).
    pub fn busy(&mut self, from: Instant, to: Instant) {
        let mut from = from.max(self.window_start);
        while to >= self.window_start + WINDOW {
            let end = self.window_start + WINDOW;
            self.busy += end.saturating_duration_since(from);
            self.close_window();
            from = from.max(self.window_start);
        }
        self.busy += to.saturating_duration_since(from);
    }

    /// Time passes with the thread waiting (call before a long wait is accounted: windows that
    /// ended while it slept were idle).
    pub fn idle_until(&mut self, now: Instant) {
        while now >= self.window_start + WINDOW {
            self.close_window();
        }
    }

    fn close_window(&mut self) {
        let share = self.busy.as_micros() * 1000 / WINDOW.as_micros();
        self.previous = self.last;
        self.last = share.min(1000) as u32;
        self.busy = Duration::ZERO;
        self.window_start += WINDOW;
    }

    /// Busy share of the recent windows, in thousandths (0 = always waiting, 1000 = never).
    pub fn permille(&self) -> u32 {
        self.last.max(self.previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, m: u64) -> Instant {
        t0 + Duration::from_millis(m)
    }

    /// Busy `on` ms of every `period` ms, from `from` to `to` ms.
    fn duty(m: &mut LoadMeter, t0: Instant, from: u64, to: u64, on: u64, period: u64) {
        let mut t = from;
        while t < to {
            m.idle_until(ms(t0, t));
            m.busy(ms(t0, t), ms(t0, t + on));
            t += period;
        }
    }

    #[test]
    fn reads_the_busy_share_of_the_last_windows() {
        let t0 = Instant::now();
        let mut m = LoadMeter::new(t0);
        assert_eq!(m.permille(), 0);
        duty(&mut m, t0, 0, 1000, 3, 10);
        assert_eq!(m.permille(), 300);
        duty(&mut m, t0, 1000, 2000, 9, 10);
        assert_eq!(m.permille(), 900);
    }

    #[test]
    fn a_quiet_window_does_not_hide_a_busy_one() {
        let t0 = Instant::now();
        let mut m = LoadMeter::new(t0);
        duty(&mut m, t0, 0, 500, 24, 25);
        assert_eq!(m.permille(), 960);
        // One idle window: the one before still counts.
        m.idle_until(ms(t0, 750));
        assert_eq!(m.permille(), 960);
        // Two: the thread has slack again.
        m.idle_until(ms(t0, 1000));
        assert_eq!(m.permille(), 0);
    }

    #[test]
    fn a_long_busy_stretch_fills_every_window_it_spans() {
        let t0 = Instant::now();
        let mut m = LoadMeter::new(t0);
        // Busy from 100 ms to 700 ms in one go: windows 0 (150 of 250), 1 (all), 2 (200 so far).
        m.busy(ms(t0, 100), ms(t0, 700));
        assert_eq!(m.permille(), 1000);
        m.idle_until(ms(t0, 750));
        assert_eq!(m.permille(), 1000); // window 2 closed (800), window 1 still counts
        m.idle_until(ms(t0, 1000));
        assert_eq!(m.permille(), 800); // windows 2 (200 of 250) and 3 (idle)
        m.idle_until(ms(t0, 1250));
        assert_eq!(m.permille(), 0);
    }
}
