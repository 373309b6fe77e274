//! In-band DTMF detection on 8 kHz linear audio (decoded G.711), ITU-T Q.24 style.
//!
//! Audio is cut into blocks of [`BLOCK`] samples (13.125 ms). Each block is measured with the
//! Goertzel algorithm at the eight DTMF frequencies (one [`GoertzelBank`] pass) and classified:
//!
//! * **hit** (a DTMF digit is present across the block): the strongest row tone and the strongest
//!   column tone together carry at least [`HIT_RATIO`] of the block's total energy (this rejects
//!   speech, music, harmonics and noise, and half-filled blocks), each dominates the other tones
//!   of its group by [`REL_PEAK_DB`], the twist is within [`TWIST_NORMAL_DB`] (row louder) /
//!   [`TWIST_REVERSE_DB`] (column louder), and each tone is at least [`MIN_LEVEL_DBM0`].
//! * **suspect** (DTMF-like energy, not (yet) acceptable): the same tests with looser limits
//!   ([`SUSPECT_RATIO`], [`SUSPECT_MIN_LEVEL_DBM0`], [`SUSPECT_REL_PEAK_DB`], twist limits plus
//!   [`SUSPECT_TWIST_SLACK_DB`]). Every hit
//!   is also suspect.
//! * **quiet**: neither. A block with too little energy for any tone to reach the suspect level
//!   is quiet without running the filters (see [`InbandDetector::gate_energy`]): on a call most
//!   blocks of each direction are pauses or the listening party's line noise.
//!
//! A digit is accepted after [`ACCEPT_BLOCKS`] consecutive hits of the same key (a 40 ms tone
//! always contains two whole blocks; a 20 ms tone never yields two hits), ends after
//! [`END_BLOCKS`] consecutive non-matching blocks, and a new digit needs [`MIN_GAP_BLOCKS`]
//! non-hit blocks (≈ 40 ms) after the previous one.
//!
//! Events, in order for one key press: `Suspect`, `ToneStart`, `ToneEnd`, `SuspectCleared`;
//! uncertain energy gives `Suspect`, `SuspectCleared` only. `Suspect` comes on the first suspect
//! block and its `at` is the start of the block *before* it — the earliest instant the tone can
//! have begun — so the pause controller can start the pause before the tone's first sample.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::Digit;
use super::goertzel::{GoertzelBank, LANES, block_energy};

/// Samples per second.
pub const RATE: u32 = 8000;
/// Samples per analysis block (13.125 ms; puts adjacent DTMF row tones about one bin apart).
pub const BLOCK: usize = 105;
/// Duration of one block.
pub const BLOCK_DUR: Duration = Duration::from_nanos(BLOCK as u64 * 125_000);
/// Low-group (row) frequencies, Hz.
pub const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
/// High-group (column) frequencies, Hz.
pub const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
/// Share of block energy the two tones must carry for a hit.
pub const HIT_RATIO: f32 = 0.85;
/// Share of block energy for a suspect block.
pub const SUSPECT_RATIO: f32 = 0.7;
/// Relative peak for a suspect block, dB.
pub const SUSPECT_REL_PEAK_DB: f32 = 6.0;
/// Extra twist allowed for a suspect block beyond the acceptance limits, dB.
pub const SUSPECT_TWIST_SLACK_DB: f32 = 2.0;
/// Each group's strongest tone must exceed the others in its group by this much (hit).
pub const REL_PEAK_DB: f32 = 8.0;
/// Maximum normal twist (row tone louder than column tone), dB.
pub const TWIST_NORMAL_DB: f32 = 8.0;
/// Maximum reverse twist (column tone louder than row tone), dB.
pub const TWIST_REVERSE_DB: f32 = 4.0;
/// Minimum level of each tone for a hit, dBm0.
pub const MIN_LEVEL_DBM0: f32 = -28.0;
/// Minimum level of each tone for a suspect block, dBm0.
pub const SUSPECT_MIN_LEVEL_DBM0: f32 = -38.0;
/// Peak amplitude (16-bit linear) of a 0 dBm0 sine (G.711: +3.14/+3.17 dBm0 is full scale).
pub const DBM0_PEAK: f32 = 22_700.0;
/// Consecutive hits of one key to accept it.
pub const ACCEPT_BLOCKS: u32 = 2;
/// Consecutive non-matching blocks that end an accepted tone.
pub const END_BLOCKS: u32 = 2;
/// Non-hit blocks needed after an accepted tone before the next one may start.
pub const MIN_GAP_BLOCKS: u32 = 3;
/// Consecutive quiet blocks that clear suspicion.
pub const CLEAR_BLOCKS: u32 = 2;
/// Queued events kept if the owner never drains (it should after every frame).
pub const MAX_PENDING: usize = 256;
/// How far below the Cauchy–Schwarz bound the energy gate sits (see
/// [`InbandDetector::gate_energy`]): 3 dB, where float rounding is parts per million.
pub const GATE_MARGIN: f32 = 0.5;

/// What the detector reports. Times are capture times (see the module docs of `pci`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum InbandEvent {
    /// DTMF-like energy appeared; `at` is the earliest instant the tone can have begun.
    Suspect { at: Instant },
    /// The energy went away (`at`: end of the first quiet block).
    SuspectCleared { at: Instant },
    /// A digit was accepted; `at` is the earliest instant it can have begun.
    ToneStart { at: Instant },
    /// The accepted digit ended by `at` (end of the first block without it).
    ToneEnd { at: Instant, digit: Digit },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Hit(Digit),
    Suspect,
    Quiet,
}

#[derive(Clone, Copy, Debug)]
enum Tone {
    Idle {
        since_hit: u32,
        after_tone: bool,
    },
    Candidate {
        digit: Digit,
        start: Instant,
        hits: u32,
    },
    Active {
        digit: Digit,
        misses: u32,
        first_miss_end: Instant,
    },
}

/// In-band DTMF detector for one direction of a call. Feed frames in order with
/// [`push_frame`](Self::push_frame), drain [`poll_event`](Self::poll_event).
#[derive(Debug)]
pub struct InbandDetector {
    /// Row frequencies in lanes 0..4, columns in 4..8.
    bank: GoertzelBank,
    /// [`Self::gate_energy`], computed once.
    gate: f32,
    /// The block being filled: `buf[..filled]`, scaled to ±1.
    buf: [f32; BLOCK],
    filled: usize,
    block_start: Option<Instant>,
    tone: Tone,
    suspect_open: bool,
    quiet_run: u32,
    first_quiet_end: Option<Instant>,
    events: VecDeque<InbandEvent>,
    dropped_events: u64,
}

impl Default for InbandDetector {
    fn default() -> Self {
        Self::new()
    }
}

fn sample_offset(i: usize) -> Duration {
    Duration::from_nanos(i as u64 * 125_000)
}

fn db(ratio: f32) -> f32 {
    10.0 * ratio.max(1e-20).log10()
}

/// Mean square of full-scale-normalised sine of 0 dBm0: (peak/32768)² / 2.
fn ms0() -> f32 {
    (DBM0_PEAK / 32768.0).powi(2) / 2.0
}

impl InbandDetector {
    pub fn new() -> InbandDetector {
        let freqs: [f32; LANES] =
            std::array::from_fn(|k| if k < 4 { ROWS[k] } else { COLS[k - 4] });
        InbandDetector {
            bank: GoertzelBank::new(freqs, RATE as f32),
            gate: Self::gate_energy(),
            buf: [0.0; BLOCK],
            filled: 0,
            block_start: None,
            tone: Tone::Idle {
                since_hit: u32::MAX,
                after_tone: false,
            },
            suspect_open: false,
            quiet_run: 0,
            first_quiet_end: None,
            events: VecDeque::new(),
            dropped_events: 0,
        }
    }

    /// Forgets all state (a new SSRC, a re-INVITE): pending events are kept.
    pub fn reset(&mut self) {
        let events = std::mem::take(&mut self.events);
        *self = InbandDetector {
            events,
            ..InbandDetector::new()
        };
    }

    /// Feeds decoded audio; `at` is the capture time of `samples[0]`. Any length works; frames
    /// must come in order.
    pub fn push_frame(&mut self, at: Instant, samples: &[i16]) {
        // Whole runs up to the next block boundary: no per-sample bookkeeping.
        let mut done = 0;
        while done < samples.len() {
            if self.filled == 0 {
                self.block_start = Some(at + sample_offset(done));
            }
            let take = (BLOCK - self.filled).min(samples.len() - done);
            let dst = &mut self.buf[self.filled..self.filled + take];
            for (d, &s) in dst.iter_mut().zip(&samples[done..done + take]) {
                *d = s as f32 / 32768.0;
            }
            self.filled += take;
            done += take;
            if self.filled == BLOCK {
                self.filled = 0;
                let class = self.classify(&self.buf);
                // Invariant: block_start is set whenever the first sample of a block is stored.
                let start = self.block_start.unwrap_or(at);
                self.on_block(start, class);
            }
        }
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<InbandEvent> {
        self.events.pop_front()
    }

    /// Events lost because the owner did not drain (should stay 0).
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    fn emit(&mut self, ev: InbandEvent) {
        if self.events.len() >= MAX_PENDING {
            self.events.pop_front();
            self.dropped_events += 1;
        }
        self.events.push_back(ev);
    }

    /// Block energy below which a block is quiet whatever its spectrum.
    ///
    /// By Cauchy–Schwarz a Goertzel output at any frequency has |X|² ≤ N·Σx², so a filter's
    /// power 2|X|²/N is at most 2·E (E = Σx², the block energy). A suspect or hit block needs
    /// both tones at [`SUSPECT_MIN_LEVEL_DBM0`] (resp. [`MIN_LEVEL_DBM0`]) or more, i.e. a power
    /// of at least `p_min` (inverting the dBm0 `level` that classification uses); when
    /// 2·E < `p_min` no filter can reach it and the block is quiet. [`GATE_MARGIN`] puts the gate
    /// well clear of float rounding in E, in the filters and in `level` (measured on decoded
    /// audio: the f32 powers are within 1e-6 · 2E of exact ones).
    pub fn gate_energy() -> f32 {
        let min_dbm0 = SUSPECT_MIN_LEVEL_DBM0.min(MIN_LEVEL_DBM0);
        let p_min = BLOCK as f32 * ms0() * 10f32.powf(min_dbm0 / 10.0);
        GATE_MARGIN * p_min / 2.0
    }

    fn classify(&self, block: &[f32; BLOCK]) -> Class {
        let energy = block_energy(block);
        if energy < self.gate {
            return Class::Quiet;
        }
        let p = self.bank.powers(block);
        let rows = [p[0], p[1], p[2], p[3]];
        let cols = [p[4], p[5], p[6], p[7]];
        Self::classify_powers(energy, BLOCK as f32, rows, cols)
    }

    /// The decision from the block's energy, its length and the filter powers (no gate: with the
    /// scalar filters this is the classification as it was before the bank and the gate).
    fn classify_powers(energy: f32, n: f32, rp: [f32; 4], cp: [f32; 4]) -> Class {
        if energy <= 0.0 {
            return Class::Quiet;
        }
        let (ri, r) = strongest(&rp);
        let (ci, c) = strongest(&cp);
        let ratio = (r + c) / energy;
        if ratio < SUSPECT_RATIO.min(HIT_RATIO) {
            // Neither a hit nor a suspect can pass this test: skip the five logarithms (a loud
            // block that is not a key pair, such as speech or a single tone, ends here).
            return Class::Quiet;
        }
        let rel = |p: &[f32; 4], i: usize, v: f32| {
            let other = p
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, x)| *x)
                .fold(0.0f32, f32::max);
            db(v / other.max(1e-20))
        };
        let rel_row = rel(&rp, ri, r);
        let rel_col = rel(&cp, ci, c);
        let twist = db(r / c.max(1e-20)); // > 0: normal twist (row louder)
        let ms0 = ms0();
        let level = |p: f32| db((p / n) / ms0);
        let (lr, lc) = (level(r), level(c));
        let hit = ratio >= HIT_RATIO
            && rel_row >= REL_PEAK_DB
            && rel_col >= REL_PEAK_DB
            && twist <= TWIST_NORMAL_DB
            && -twist <= TWIST_REVERSE_DB
            && lr >= MIN_LEVEL_DBM0
            && lc >= MIN_LEVEL_DBM0;
        if hit && let Some(d) = Digit::from_row_col(ri, ci) {
            return Class::Hit(d);
        }
        let suspect = ratio >= SUSPECT_RATIO
            && rel_row >= SUSPECT_REL_PEAK_DB
            && rel_col >= SUSPECT_REL_PEAK_DB
            && twist <= TWIST_NORMAL_DB + SUSPECT_TWIST_SLACK_DB
            && -twist <= TWIST_REVERSE_DB + SUSPECT_TWIST_SLACK_DB
            && lr >= SUSPECT_MIN_LEVEL_DBM0
            && lc >= SUSPECT_MIN_LEVEL_DBM0;
        if suspect {
            Class::Suspect
        } else {
            Class::Quiet
        }
    }

    fn on_block(&mut self, start: Instant, class: Class) {
        let end = start + BLOCK_DUR;
        let earliest = start.checked_sub(BLOCK_DUR).unwrap_or(start);
        // Suspicion opens first so that `Suspect` always precedes `ToneStart`.
        if class != Class::Quiet {
            self.quiet_run = 0;
            self.first_quiet_end = None;
            if !self.suspect_open {
                self.suspect_open = true;
                self.emit(InbandEvent::Suspect { at: earliest });
            }
        }
        self.tone = match (self.tone, class) {
            (Tone::Active { digit, .. }, Class::Hit(d)) if d == digit => Tone::Active {
                digit,
                misses: 0,
                first_miss_end: end,
            },
            (
                Tone::Active {
                    digit,
                    misses,
                    first_miss_end,
                },
                _,
            ) => {
                let first_miss_end = if misses == 0 { end } else { first_miss_end };
                let misses = misses + 1;
                if misses >= END_BLOCKS {
                    self.emit(InbandEvent::ToneEnd {
                        at: first_miss_end,
                        digit,
                    });
                    Tone::Idle {
                        since_hit: misses,
                        after_tone: true,
                    }
                } else {
                    Tone::Active {
                        digit,
                        misses,
                        first_miss_end,
                    }
                }
            }
            (
                Tone::Candidate {
                    digit,
                    start: s,
                    hits,
                },
                Class::Hit(d),
            ) if d == digit => {
                let hits = hits + 1;
                if hits >= ACCEPT_BLOCKS {
                    self.emit(InbandEvent::ToneStart {
                        at: s.checked_sub(BLOCK_DUR).unwrap_or(s),
                    });
                    Tone::Active {
                        digit,
                        misses: 0,
                        first_miss_end: end,
                    }
                } else {
                    Tone::Candidate {
                        digit,
                        start: s,
                        hits,
                    }
                }
            }
            (Tone::Candidate { .. }, Class::Hit(d)) => Tone::Candidate {
                digit: d,
                start,
                hits: 1,
            },
            (Tone::Candidate { .. }, _) => Tone::Idle {
                since_hit: 1,
                after_tone: false,
            },
            (
                Tone::Idle {
                    since_hit,
                    after_tone,
                },
                Class::Hit(d),
            ) => {
                if !after_tone || since_hit >= MIN_GAP_BLOCKS {
                    Tone::Candidate {
                        digit: d,
                        start,
                        hits: 1,
                    }
                } else {
                    // Too soon after the last digit: the same key press (a drop-out), not a new one.
                    Tone::Idle {
                        since_hit: 0,
                        after_tone,
                    }
                }
            }
            (
                Tone::Idle {
                    since_hit,
                    after_tone,
                },
                _,
            ) => Tone::Idle {
                since_hit: since_hit.saturating_add(1),
                after_tone,
            },
        };
        if class == Class::Quiet && self.suspect_open {
            self.quiet_run += 1;
            if self.quiet_run == 1 {
                self.first_quiet_end = Some(end);
            }
            let tone_idle = matches!(self.tone, Tone::Idle { .. });
            if self.quiet_run >= CLEAR_BLOCKS && tone_idle {
                self.suspect_open = false;
                let at = self.first_quiet_end.unwrap_or(end);
                self.emit(InbandEvent::SuspectCleared { at });
            }
        }
    }
}

fn strongest(p: &[f32; 4]) -> (usize, f32) {
    let mut best = (0, p[0]);
    for (i, &v) in p.iter().enumerate().skip(1) {
        if v > best.1 {
            best = (i, v);
        }
    }
    best
}

#[cfg(test)]
mod tests;
