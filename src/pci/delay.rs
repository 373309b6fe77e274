//! A fixed delay line for the recording path (sans-IO).
//!
//! The relay pushes each recorded item with its capture time and pops it once
//! `captured_at + delay <= now`. The delay gives the pause controller time to decide that audio
//! already captured belongs in a paused span (the start of a tone is known only after it began).
//! Bounded: when full, `push` refuses the new item (fail closed: an item is never released
//! early to make room).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::ids::Leg;

/// `push` on a full line; the item comes back to the caller (count it as lost).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("recording delay line full ({capacity} items)")]
pub struct DelayFull<T> {
    pub capacity: usize,
    pub item: T,
}

/// Items in capture order, released `delay` after capture.
#[derive(Debug)]
pub struct DelayLine<T> {
    delay: Duration,
    capacity: usize,
    queue: VecDeque<(Instant, Leg, T)>,
}

impl<T> DelayLine<T> {
    /// `capacity` items at most (both legs of 20 ms frames: `2 * delay / 20 ms` plus slack;
    /// see [`DelayLine::for_frames`]).
    pub fn new(delay: Duration, capacity: usize) -> DelayLine<T> {
        DelayLine {
            delay,
            capacity: capacity.max(1),
            queue: VecDeque::new(),
        }
    }

    /// A line sized for two legs of 20 ms frames with 10× slack: a media task stalled for
    /// about 2.5 s (a starved CPU) catches up without dropping audio. Worst case ≈ 260 packets.
    pub fn for_frames(delay: Duration) -> DelayLine<T> {
        let per_leg = (delay.as_millis() / 20) as usize + 1;
        DelayLine::new(delay, per_leg * 2 * 10)
    }

    pub fn delay(&self) -> Duration {
        self.delay
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Queues an item captured at `captured_at`. Items should come in capture order; one that
    /// does not waits behind the newer items before it.
    pub fn push(&mut self, captured_at: Instant, leg: Leg, item: T) -> Result<(), DelayFull<T>> {
        if self.queue.len() >= self.capacity {
            return Err(DelayFull {
                capacity: self.capacity,
                item,
            });
        }
        self.queue.push_back((captured_at, leg, item));
        Ok(())
    }

    /// The oldest item whose delay has elapsed at `now`.
    pub fn pop(&mut self, now: Instant) -> Option<(Instant, Leg, T)> {
        let (t, _, _) = self.queue.front()?;
        if *t + self.delay <= now {
            self.queue.pop_front()
        } else {
            None
        }
    }

    /// When the oldest item is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.queue.front().map(|(t, _, _)| *t + self.delay)
    }

    /// Everything left, oldest first (at hangup; ask the controller about each as usual).
    pub fn drain_all(&mut self) -> impl Iterator<Item = (Instant, Leg, T)> + '_ {
        self.queue.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_after_delay_in_order_and_is_bounded() {
        let base = Instant::now();
        let ms = |m: u64| base + Duration::from_millis(m);
        let mut d = DelayLine::new(Duration::from_millis(250), 3);
        assert!(d.is_empty());
        d.push(ms(0), Leg::Caller, 1).unwrap();
        d.push(ms(0), Leg::Agent, 2).unwrap();
        d.push(ms(20), Leg::Caller, 3).unwrap();
        assert_eq!(
            d.push(ms(40), Leg::Caller, 4),
            Err(DelayFull {
                capacity: 3,
                item: 4
            })
        );
        assert_eq!(d.poll_timeout(), Some(ms(250)));
        assert_eq!(d.pop(ms(249)), None);
        assert_eq!(d.pop(ms(250)).map(|x| x.2), Some(1));
        assert_eq!(d.pop(ms(250)).map(|x| (x.1, x.2)), Some((Leg::Agent, 2)));
        assert_eq!(d.pop(ms(250)), None);
        assert_eq!(d.pop(ms(270)).map(|x| x.2), Some(3));
        d.push(ms(300), Leg::Caller, 5).unwrap();
        assert_eq!(d.drain_all().map(|x| x.2).collect::<Vec<_>>(), vec![5]);
        assert_eq!(
            DelayLine::<u8>::for_frames(Duration::from_millis(250)).capacity,
            260
        );
        assert_eq!(d.delay(), Duration::from_millis(250));
        assert_eq!(d.len(), 0);
    }
}
