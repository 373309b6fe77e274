//! One direction of a call as the recorder sees it: RTP packets in (arrival order, with loss,
//! duplicates, reordering, SSRC changes), audio placed on the recording timeline out.
//!
//! Sans-IO. The relay's recorder tap calls [`RecordTrack::push`] with the arrival time of each
//! G.711 packet, and drains [`RecordTrack::poll`]; it wakes at [`RecordTrack::poll_timeout`] to
//! let the reorder window expire, and calls [`RecordTrack::flush`] on hangup.
//!
//! ## Clocks
//! * `now`: the arrival time of a packet (`Instant`), read by the shell.
//! * The recording timeline: sample index at 8 kHz since `recording_start` (`u64`, 160 per
//!   20 ms). Both tracks of a recording share it.
//! * RTP timestamps: the sender's 8 kHz media clock, 32-bit and wrapping.
//!
//! ## Mapping RTP time to the timeline
//! The first packet of each stream (SSRC) is *anchored* at its arrival time; later packets are
//! placed by their RTP timestamp relative to that anchor (wrapping arithmetic), so network jitter
//! does not smear the audio. A stream is re-anchored by arrival when the SSRC changes, or when the
//! timestamp jumps by more than [`MAX_TS_JUMP`] samples in a way neither the arrival time nor the
//! sequence number explains (a sender reset its clock). Silence suppression (timestamp jumps in
//! step with arrival time) and network stalls (timestamp in step with sequence number) are not
//! jumps. Output positions never go backwards: audio overlapping what was already released is
//! trimmed.
//!
//! ## Reordering and loss
//! Packets are released in sequence-number order: a packet goes out as soon as its predecessor has
//! been released, or when the oldest buffered packet has waited `reorder_window`. A gap in the
//! sequence that is released past becomes a [`TrackOutput::Loss`] covering the missing audio (the
//! writer fills and counts it). A packet arriving after its slot was released is dropped (`late`);
//! repeats are dropped (`duplicates`). At most [`MAX_BUFFERED`] packets are held; on overflow
//! the oldest is released early, and the gap before it counts as lost. Sequence jumps beyond
//! RFC 3550's `MAX_DROPOUT`/`MAX_MISORDER` are a sender restart once two consecutive packets
//! confirm it (RFC 3550 A.1 probation); a single stray is dropped as late.
//!
//! Payloads are G.711: one byte per sample, so a payload's length is its duration in samples.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::rtp::{seq_delta, ts_delta};
use crate::ids::Ssrc;

/// Samples per second on the recording timeline.
pub const TIMELINE_RATE: u64 = 8000;
/// Most packets held for reordering.
pub const MAX_BUFFERED: usize = 64;
/// A timestamp discontinuity larger than this (1 s) that neither arrival time nor sequence
/// number explains re-anchors the stream.
pub const MAX_TS_JUMP: i64 = 8000;
/// RFC 3550 A.1: largest forward sequence jump treated as loss rather than a restart.
pub const MAX_DROPOUT: i32 = 3000;
/// RFC 3550 A.1: largest backward sequence jump treated as reordering rather than a restart.
pub const MAX_MISORDER: i32 = 100;

/// Extended sequence numbers start here so that stepping back never underflows.
const EXT_BASE: u64 = 1 << 32;

/// What the track hands the recording writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackOutput {
    /// G.711 bytes (one per sample) starting at timeline sample `pos`.
    Audio { pos: u64, payload: Vec<u8> },
    /// Audio known lost (sequence gap), timeline samples `from..to`.
    Loss { from: u64, to: u64 },
}

/// Per-track counters for the call record and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackStats {
    /// Packets pushed.
    pub received: u64,
    /// Packets missing from the sequence when their slot was released.
    pub lost: u64,
    /// Packets that arrived after their slot was released (or with an inconsistent timestamp),
    /// dropped.
    pub late: u64,
    /// Repeated packets, dropped.
    pub duplicates: u64,
    /// Packets whose audio lay entirely before audio already released, dropped.
    pub overlapped: u64,
    /// Times the timeline mapping was re-anchored by arrival (SSRC change, clock jump, restart).
    pub reanchors: u64,
}

#[derive(Debug)]
struct Pending {
    pos: i64,
    payload: Vec<u8>,
    arrival: Instant,
}

#[derive(Debug)]
struct Stream {
    ssrc: Ssrc,
    /// Highest extended sequence number seen, and that packet's ts, arrival, length, position.
    highest: u64,
    highest_ts: u32,
    highest_arrival: i64,
    highest_len: i64,
    highest_pos: i64,
    /// Timeline position of RTP timestamp `anchor_ts`.
    anchor_ts: u32,
    anchor_pos: i64,
    /// Extended sequence number to release next; `None` until the first release.
    next_release: Option<u64>,
    /// Bit i set ⇔ sequence `next_release - 1 - i` was released with audio.
    history: u128,
}

/// A packet held while a sequence jump is on probation.
#[derive(Debug)]
struct Probation {
    ssrc: Ssrc,
    seq: u16,
    ts: u32,
    payload: Vec<u8>,
    arrival: Instant,
}

/// A packet's payload as the caller hands it over: borrowed (copied into a recycled buffer only
/// if it is kept) or already in a buffer of this track's (see [`RecordTrack::buffer_for`]),
/// which is kept as it is: a payload that waited in the keypad delay line is not copied again.
enum Bytes<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl Bytes<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Borrowed(b) => b,
            Bytes::Owned(v) => v,
        }
    }

    fn into_vec(self) -> Vec<u8> {
        match self {
            Bytes::Borrowed(b) => b.to_vec(),
            Bytes::Owned(v) => v,
        }
    }
}

/// Whether packet `ext` waits in the reorder buffer. `is_empty` first: an emptied BTreeMap keeps
/// its root node, and looking into it is a cache miss per packet on the in-order path, where
/// the buffer is nearly always empty. (A function of the map, not the track, so that it can be
/// asked while the stream is borrowed.)
fn buffered(buffer: &BTreeMap<u64, Pending>, ext: u64) -> bool {
    !buffer.is_empty() && buffer.contains_key(&ext)
}

/// The per-direction recording track. See the module docs.
#[derive(Debug)]
pub struct RecordTrack {
    start: Instant,
    window: Duration,
    stream: Option<Stream>,
    buffer: BTreeMap<u64, Pending>,
    probation: Option<Probation>,
    out: VecDeque<TrackOutput>,
    /// Timeline position just after the last audio released.
    end_pos: Option<u64>,
    stats: TrackStats,
    /// Payload buffers handed back with [`RecordTrack::recycle`], reused for the next packets
    /// so that a steady stream allocates nothing per packet (at most [`MAX_SPARE`] kept).
    spare: Vec<Vec<u8>>,
    /// Loss counting only ([`RecordTrack::counting`]): payloads are not kept and nothing is
    /// output.
    count_only: bool,
}

/// Most recycled payload buffers a track keeps. Larger pools (32, sized for a 16-datagram read)
/// removed malloc from the profile at 1,500 calls but not from the CPU time: a recycled buffer
/// is cold in the cache, a freshly freed one is not (BENCHMARKS.md, session 4).
const MAX_SPARE: usize = 4;

impl RecordTrack {
    /// A track whose timeline starts at `recording_start`, holding packets up to
    /// `reorder_window` (60 ms is a good default) for reordering.
    pub fn new(recording_start: Instant, reorder_window: Duration) -> RecordTrack {
        RecordTrack {
            start: recording_start,
            window: reorder_window,
            stream: None,
            buffer: BTreeMap::new(),
            probation: None,
            out: VecDeque::new(),
            end_pos: None,
            stats: TrackStats::default(),
            spare: Vec::new(),
            count_only: false,
        }
    }

    /// A track that only counts: the same `received` and `lost` as [`RecordTrack::new`] for the
    /// same packets, but it keeps no payload and outputs nothing. For the call record's loss
    /// figures, which every call needs, recorded or not. (A repeat of a released packet counts
    /// as `late` here, not `duplicates`: telling them apart needs the payloads.)
    pub fn counting(start: Instant, reorder_window: Duration) -> RecordTrack {
        RecordTrack {
            count_only: true,
            ..RecordTrack::new(start, reorder_window)
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> TrackStats {
        self.stats
    }

    /// Timeline position (8 kHz samples since the recording started) of instant `t`.
    pub fn timeline_pos(&self, t: Instant) -> u64 {
        let ns = t.saturating_duration_since(self.start).as_nanos();
        u64::try_from(ns * TIMELINE_RATE as u128 / 1_000_000_000).unwrap_or(u64::MAX)
    }

    fn arrival_pos(&self, now: Instant) -> i64 {
        i64::try_from(self.timeline_pos(now)).unwrap_or(i64::MAX / 2)
    }

    /// One RTP packet of this direction, received at `now`. `payload` is G.711 (PCMU/PCMA).
    pub fn push(&mut self, now: Instant, ssrc: Ssrc, seq: u16, rtp_ts: u32, payload: &[u8]) {
        self.push_bytes(now, ssrc, seq, rtp_ts, Bytes::Borrowed(payload));
    }

    /// [`push`](Self::push) with the payload already in a buffer from
    /// [`buffer_for`](Self::buffer_for): kept without a copy.
    pub fn push_owned(&mut self, now: Instant, ssrc: Ssrc, seq: u16, rtp_ts: u32, payload: Vec<u8>) {
        self.push_bytes(now, ssrc, seq, rtp_ts, Bytes::Owned(payload));
    }

    /// A copy of `payload` in one of this track's recycled buffers, for a caller that holds the
    /// packet a while (the keypad delay line) before [`push_owned`](Self::push_owned).
    pub fn buffer_for(&mut self, payload: &[u8]) -> Vec<u8> {
        match self.spare.pop() {
            Some(mut v) => {
                v.clear();
                v.extend_from_slice(payload);
                v
            }
            None => payload.to_vec(),
        }
    }

    fn push_bytes(&mut self, now: Instant, ssrc: Ssrc, seq: u16, rtp_ts: u32, payload: Bytes<'_>) {
        self.stats.received += 1;
        if payload.as_slice().is_empty() {
            return;
        }
        let same_ssrc = self.stream.as_ref().map(|s| s.ssrc == ssrc);
        match same_ssrc {
            None => self.start_stream(now, ssrc, seq, rtp_ts, payload),
            Some(false) => {
                self.probation = None;
                self.release_all();
                self.start_stream(now, ssrc, seq, rtp_ts, payload);
            }
            Some(true) => {
                // Invariant: same_ssrc is Some only when a stream exists.
                let s = self.stream.as_ref().expect("stream exists");
                let d = seq_delta(s.highest as u16, seq);
                if !(-MAX_MISORDER..=MAX_DROPOUT).contains(&d) {
                    self.on_sequence_jump(now, ssrc, seq, rtp_ts, payload);
                } else {
                    if self.probation.take().is_some() {
                        self.stats.late += 1; // the stray that started a probation
                    }
                    let ext = (s.highest as i64 + d as i64) as u64;
                    self.insert(now, ext, rtp_ts, payload);
                }
            }
        }
        self.drive(now);
    }

    /// A packet of this direction that is not audio (an RFC 4733 telephone-event sharing the
    /// audio's sequence numbers): it fills its sequence slot, so it is not counted as lost audio,
    /// and produces no output. Packets of another SSRC, duplicates and stale ones are ignored.
    pub fn skip(&mut self, now: Instant, ssrc: Ssrc, seq: u16) {
        let Some(s) = self.stream.as_ref().filter(|s| s.ssrc == ssrc) else {
            return;
        };
        let d = seq_delta(s.highest as u16, seq);
        if !(-MAX_MISORDER..=MAX_DROPOUT).contains(&d) {
            return;
        }
        let ext = (s.highest as i64 + d as i64) as u64;
        if s.next_release.is_some_and(|nr| ext < nr) || buffered(&self.buffer, ext) {
            return;
        }
        let pos = s.highest_pos + s.highest_len;
        self.buffer.insert(ext, Pending { pos, payload: Vec::new(), arrival: now });
        while self.buffer.len() > MAX_BUFFERED {
            self.release_head();
        }
        self.drive(now);
    }

    fn on_sequence_jump(&mut self, now: Instant, ssrc: Ssrc, seq: u16, ts: u32, payload: Bytes<'_>) {
        match self.probation.take() {
            Some(p) if p.ssrc == ssrc && p.seq.wrapping_add(1) == seq => {
                // Two consecutive packets agree: the sender restarted its sequence.
                self.release_all();
                self.start_stream(p.arrival, p.ssrc, p.seq, p.ts, Bytes::Owned(p.payload));
                // Invariant: start_stream just set the stream; seq = p.seq + 1.
                let ext = self.stream.as_ref().expect("stream just started").highest + 1;
                self.insert(now, ext, ts, payload);
            }
            stale => {
                if stale.is_some() {
                    self.stats.late += 1;
                }
                self.probation = Some(Probation {
                    ssrc,
                    seq,
                    ts,
                    // The real bytes even when only counting: the restart's length anchors
                    // the new stream.
                    payload: payload.into_vec(),
                    arrival: now,
                });
            }
        }
    }

    /// Anchors a new stream by arrival (never before audio already released) and buffers its
    /// first packet.
    fn start_stream(&mut self, now: Instant, ssrc: Ssrc, seq: u16, ts: u32, payload: Bytes<'_>) {
        let arrival = self.arrival_pos(now);
        let floor = self
            .end_pos
            .map_or(0, |e| i64::try_from(e).unwrap_or(i64::MAX / 2));
        let pos = arrival.max(floor);
        if self.stream.is_some() {
            self.stats.reanchors += 1;
        }
        let ext = EXT_BASE + seq as u64;
        self.stream = Some(Stream {
            ssrc,
            highest: ext,
            highest_ts: ts,
            highest_arrival: arrival,
            highest_len: payload.as_slice().len() as i64,
            highest_pos: pos,
            anchor_ts: ts,
            anchor_pos: pos,
            next_release: None,
            history: 0,
        });
        let payload = self.copy_payload(payload);
        self.buffer.insert(ext, Pending { pos, payload, arrival: now });
    }

    /// `payload` in a buffer of this track's: as it is if it already is one, else copied into a
    /// recycled buffer if there is one (an empty one when only counting: it is released like a
    /// skipped slot, which counts the same and outputs nothing).
    fn copy_payload(&mut self, payload: Bytes<'_>) -> Vec<u8> {
        match payload {
            _ if self.count_only => Vec::new(),
            Bytes::Owned(v) => v,
            Bytes::Borrowed(b) => self.buffer_for(b),
        }
    }

    fn insert(&mut self, now: Instant, ext: u64, ts: u32, payload: Bytes<'_>) {
        let arrival = self.arrival_pos(now);
        let Some(s) = self.stream.as_mut() else {
            return;
        };
        if let Some(nr) = s.next_release
            && ext < nr
        {
            let i = nr - 1 - ext;
            let had_audio = i < 128 && s.history & (1u128 << i) != 0;
            if had_audio {
                self.stats.duplicates += 1;
            } else {
                self.stats.late += 1;
            }
            return;
        }
        if buffered(&self.buffer, ext) {
            self.stats.duplicates += 1;
            return;
        }
        let len = payload.as_slice().len() as i64;
        let seq_d = ext as i64 - s.highest as i64;
        let ts_d = ts_delta(s.highest_ts, ts);
        let arr_d = arrival - s.highest_arrival;
        let explained = (ts_d - arr_d).abs() <= MAX_TS_JUMP
            || (ts_d - seq_d * s.highest_len).abs() <= MAX_TS_JUMP;
        let pos;
        if seq_d > 0 {
            if explained {
                pos = s.anchor_pos + ts_delta(s.anchor_ts, ts);
            } else {
                // The sender's clock jumped: place by arrival, after its predecessor.
                pos = arrival.max(s.highest_pos + s.highest_len);
                self.stats.reanchors += 1;
            }
            s.anchor_ts = ts;
            s.anchor_pos = pos;
            s.highest = ext;
            s.highest_ts = ts;
            s.highest_arrival = arrival;
            s.highest_len = len;
            s.highest_pos = pos;
        } else {
            if !explained {
                self.stats.late += 1;
                return;
            }
            pos = s.anchor_pos + ts_delta(s.anchor_ts, ts);
        }
        let in_order = self.buffer.is_empty() && s.next_release == Some(ext);
        let payload = self.copy_payload(payload);
        let p = Pending { pos, payload, arrival: now };
        if in_order {
            // The next packet expected and nothing held: `drive` would release it at once, so
            // skip the round trip through the reorder buffer.
            self.release(ext, p);
            return;
        }
        self.buffer.insert(ext, p);
        while self.buffer.len() > MAX_BUFFERED {
            self.release_head();
        }
    }

    /// Releases what is due at `now`.
    fn drive(&mut self, now: Instant) {
        loop {
            if self.buffer.is_empty() {
                return; // without touching the emptied root node (see `buffered`)
            }
            let Some((&head, _)) = self.buffer.first_key_value() else {
                return;
            };
            let in_order = self.stream.as_ref().and_then(|s| s.next_release) == Some(head);
            let expired = self.deadline().is_some_and(|d| d <= now);
            if !(in_order || expired) {
                return;
            }
            self.release_head();
        }
    }

    /// When the oldest buffered packet's reorder window expires.
    fn deadline(&self) -> Option<Instant> {
        if self.buffer.is_empty() {
            return None;
        }
        // A window so large it overflows `Instant` never expires.
        self.buffer
            .values()
            .map(|p| p.arrival)
            .min()
            .and_then(|a| a.checked_add(self.window))
    }

    fn release_head(&mut self) {
        let Some((ext, p)) = self.buffer.pop_first() else {
            return;
        };
        self.release(ext, p);
    }

    /// Releases packet `ext` (the lowest not yet released): loss before it, then its audio.
    fn release(&mut self, ext: u64, mut p: Pending) {
        let Some(s) = self.stream.as_mut() else {
            return;
        };
        if let Some(nr) = s.next_release
            && ext > nr
        {
            let missing = ext - nr;
            self.stats.lost += missing;
            s.history = u32::try_from(missing)
                .ok()
                .and_then(|m| s.history.checked_shl(m))
                .unwrap_or(0);
            if let Some(from) = self.end_pos {
                let to = u64::try_from(p.pos).unwrap_or(0);
                if to > from {
                    self.out.push_back(TrackOutput::Loss { from, to });
                }
            }
        }
        s.next_release = Some(ext + 1);
        if p.payload.is_empty() {
            // A skipped (non-audio) slot: accounted for, nothing to output.
            s.history <<= 1;
            return;
        }
        // Never go backwards on the timeline: trim what overlaps released audio (or precedes 0).
        let floor = self
            .end_pos
            .map_or(0, |e| i64::try_from(e).unwrap_or(i64::MAX / 2));
        let skip = usize::try_from(floor.saturating_sub(p.pos)).unwrap_or(0);
        if skip >= p.payload.len() {
            s.history <<= 1;
            self.stats.overlapped += 1;
            return;
        }
        s.history = (s.history << 1) | 1;
        let pos = u64::try_from(p.pos.max(floor)).unwrap_or(0);
        let payload = if skip == 0 {
            p.payload
        } else {
            p.payload.drain(..skip);
            p.payload
        };
        self.end_pos = Some(pos + payload.len() as u64);
        self.out.push_back(TrackOutput::Audio { pos, payload });
    }

    fn release_all(&mut self) {
        while !self.buffer.is_empty() {
            self.release_head();
        }
    }

    /// Hands back the buffer of a [`TrackOutput::Audio`] once its bytes are consumed, so the
    /// next packet can reuse it instead of allocating (optional: dropping it is fine).
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < MAX_SPARE && buf.capacity() > 0 {
            self.spare.push(buf);
        }
    }

    /// The next output, after releasing whatever is due at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<TrackOutput> {
        self.drive(now);
        self.out.pop_front()
    }

    /// When to call [`poll`](Self::poll) next for the reorder window; `None` when nothing is
    /// waiting. (Outputs already queued are available immediately.)
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline()
    }

    /// Releases everything held (hangup). Drain with [`poll`](Self::poll) afterwards.
    pub fn flush(&mut self, now: Instant) {
        if let Some(p) = self.probation.take() {
            // A restart seen once at the very end: keep its audio rather than lose it.
            self.release_all();
            self.start_stream(p.arrival, p.ssrc, p.seq, p.ts, Bytes::Owned(p.payload));
        }
        self.drive(now);
        self.release_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_millis(60);
    const S: Ssrc = Ssrc(0x1234);

    fn ms(t0: Instant, m: u64) -> Instant {
        t0 + Duration::from_millis(m)
    }

    /// Packet `k` of a 20 ms stream: seq `seq0 + k`, ts `ts0 + 160 k`, payload byte = k.
    fn pkt(seq0: u16, ts0: u32, k: u32) -> (u16, u32, Vec<u8>) {
        (
            seq0.wrapping_add(k as u16),
            ts0.wrapping_add(160 * k),
            vec![k as u8; 160],
        )
    }

    fn drain(t: &mut RecordTrack, now: Instant) -> Vec<TrackOutput> {
        std::iter::from_fn(|| t.poll(now)).collect()
    }

    fn audio_positions(out: &[TrackOutput]) -> Vec<(u64, u8)> {
        out.iter()
            .filter_map(|o| match o {
                TrackOutput::Audio { pos, payload } => Some((*pos, payload[0])),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn in_order_stream_follows_rtp_time() {
        let t0 = Instant::now();
        let mut t = RecordTrack::new(t0, W);
        // First packet arrives 1 s into the recording; later ones with ±5 ms jitter.
        let mut out = Vec::new();
        for k in 0..10u32 {
            let jitter = [0, 5, 2, 7, 1, 4, 0, 6, 3, 5][k as usize];
            let now = ms(t0, 1000 + 20 * k as u64 + jitter);
            let (seq, ts, p) = pkt(100, 5000, k);
            t.push(now, S, seq, ts, &p);
            out.extend(drain(&mut t, now));
        }
        // The first packet waits for the window (no predecessor known); then each goes at once.
        assert!(t.poll_timeout().is_none());
        let exp: Vec<(u64, u8)> = (0..10).map(|k| (8000 + 160 * k as u64, k as u8)).collect();
        assert_eq!(
            audio_positions(&out),
            exp,
            "positions follow RTP timestamps, not jitter"
        );
        assert_eq!(
            t.stats(),
            TrackStats {
                received: 10,
                ..TrackStats::default()
            }
        );
    }

    #[test]
    fn first_packet_waits_for_window_then_releases() {
        let t0 = Instant::now();
        let mut t = RecordTrack::new(t0, W);
        let (seq, ts, p) = pkt(7, 0, 0);
        t.push(t0, S, seq, ts, &p);
        assert_eq!(t.poll(ms(t0, 59)), None);
        assert_eq!(t.poll_timeout(), Some(ms(t0, 60)));
        assert_eq!(
            t.poll(ms(t0, 60)),
            Some(TrackOutput::Audio { pos: 0, payload: p })
        );
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn reordered_packets_come_out_in_order() {
        let t0 = Instant::now();
        let mut t = RecordTrack::new(t0, W);
        let order = [0u32, 2, 1, 3, 5, 4, 6];
        let mut out = Vec::new();
        for (i, &k) in order.iter().enumerate() {
            let now = ms(t0, 20 * i as u64);
            let (seq, ts, p) = pkt(1, 0, k);
            t.push(now, S, seq, ts, &p);
            out.extend(drain(&mut t, now));
        }
        t.flush(ms(t0, 200));
        out.extend(drain(&mut t, ms(t0, 200)));
        let exp: Vec<(u64, u8)> = (0..7).map(|k| (160 * k as u64, k as u8)).collect();
        assert_eq!(audio_positions(&out), exp);
        assert!(out.iter().all(|o| matches!(o, TrackOutput::Audio { .. })));
        let s = t.stats();
        assert_eq!((s.received, s.lost, s.late, s.duplicates), (7, 0, 0, 0));
    }

    #[test]
    fn telephone_events_in_the_stream_are_not_lost_audio() {
        let t0 = Instant::now();
        let mut t = RecordTrack::new(t0, Duration::from_millis(60));
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // Audio 100..=102, then four event packets 103..=106 (one end packet repeated), audio 107.
        for (i, seq) in (100u16..=102).enumerate() {
            t.push(ms(20 * i as u64), Ssrc(9), seq, 160 * seq as u32, &[0x55; 160]);
        }
        for (i, seq) in [103u16, 104, 105, 106, 106].into_iter().enumerate() {
            t.skip(ms(60 + 20 * i as u64), Ssrc(9), seq);
        }
        t.push(ms(160), Ssrc(9), 107, 160 * 107, &[0x55; 160]);
        t.flush(ms(400));
        let out: Vec<TrackOutput> = std::iter::from_fn(|| t.poll(ms(400))).collect();
        assert!(out.iter().all(|o| matches!(o, TrackOutput::Audio { .. })), "{out:?}");
        assert_eq!(out.len(), 4);
        assert_eq!(t.stats().lost, 0, "{:?}", t.stats());
        // Without skip, the same stream loses four packets: the test above would fail.
        let mut u = RecordTrack::new(t0, Duration::from_millis(60));
        for seq in [100u16, 101, 102, 107] {
            u.push(ms(20 * (seq as u64 - 100)), Ssrc(9), seq, 160 * seq as u32, &[0x55; 160]);
        }
        u.flush(ms(400));
        while u.poll(ms(400)).is_some() {}
        assert_eq!(u.stats().lost, 4);
    }

    #[test]
    fn duplicates_dropped_buffered_or_released() {
        let t0 = Instant::now();
        let mut t = RecordTrack::new(t0, W);
        for (i, k) in [0u32, 1, 1, 2, 0, 3].into_iter().enumerate() {
            let now = ms(t0, 100 + 20 * i as u64);
            let (seq, ts, p) = pkt(500, 0, k);
            t.push(now, S, seq, ts, &p);
        }
        t.flush(ms(t0, 300));
        let out = drain(&mut t, ms(t0, 300));
        assert_eq!(
            audio_positions(&out)
                .iter()
                .map(|a| a.1)
                .collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert_eq!(t.stats().duplicates, 2);
        assert_eq!(t.stats().late, 0);
    }

    #[test]
    fn gap_becomes_loss_after_window_and_late_packet_is_dropped() {
        let t0 = Instant::now();
        let mut t = RecordTrack::new(t0, W);
        let mut out = Vec::new();
        // Packets 0,1 then 2 and 3 lost, 4,5 arrive.
        for k in [0u32, 1, 4, 5] {
            let now = ms(t0, 20 * k as u64);
            let (seq, ts, p) = pkt(10, 0, k);
            t.push(now, S, seq, ts, &p);
            out.extend(drain(&mut t, now));
        }
        // 0 and 1 released once 0's window expired (at 60 ms, during the push of 4 at 80 ms).
        assert_eq!(audio_positions(&out), vec![(0, 0), (160, 1)]);
        // 4 arrived at 80 ms: released at 140 ms, not before.
        assert_eq!(t.poll_timeout(), Some(ms(t0, 140)));
        assert_eq!(t.poll(ms(t0, 139)), None);
        let out = drain(&mut t, ms(t0, 140));
        assert_eq!(
            out,
            vec![
                TrackOutput::Loss { from: 320, to: 640 },
                TrackOutput::Audio {
                    pos: 640,
                    payload: vec![4; 160]
                },
                TrackOutput::Audio {
                    pos: 800,
                    payload: vec![5; 160]
                },
            ]
        );
        assert_eq!(t.stats().lost, 2);
        // 3 turns up after its slot was released: dropped, counted late, nothing output.
        let (seq, ts, p) = pkt(10, 0, 3);
        t.push(ms(t0, 150), S, seq, ts, &p);
        assert_eq!(drain(&mut t, ms(t0, 150)), vec![]);
        assert_eq!(t.stats().late, 1);
        assert_eq!(t.stats().duplicates, 0);
    }

    #[test]
    fn sequence_and_timestamp_wrap() {
        let t0 = Instant::now();
        let mut t = RecordTrack::new(t0, W);
        let mut out = Vec::new();
        // seq crosses 65535 → 0 and ts crosses u32::MAX at the same time; 65535/0 swapped.
        let ts0 = u32::MAX - 160 * 3 + 1;
        for (i, k) in [0u32, 1, 3, 2, 4, 5].into_iter().enumerate() {
            let now = ms(t0, 20 * i as u64);
            let (seq, ts, p) = pkt(65533, ts0, k);
            t.push(now, S, seq, ts, &p);
            out.extend(drain(&mut t, now));
        }
        t.flush(ms(t0, 500));
        out.extend(drain(&mut t, ms(t0, 500)));
        let exp: Vec<(u64, u8)> = (0..6).map(|k| (160 * k as u64, k as u8)).collect();
        assert_eq!(audio_positions(&out), exp);
        assert_eq!(
            (t.stats().lost, t.stats().late, t.stats().reanchors),
            (0, 0, 0)
        );
    }

    #[test]
    fn ssrc_change_reanchors_by_arrival() {
        let t0 = Instant::now();
        let mut t = RecordTrack::new(t0, W);
        let mut out = Vec::new();
        for k in 0..5u32 {
            let now = ms(t0, 20 * k as u64);
            let (seq, ts, p) = pkt(100, 1_000_000, k);
            t.push(now, S, seq, ts, &p);
            out.extend(drain(&mut t, now));
        }
        // A transfer: new SSRC, unrelated seq/ts, first packet arrives at 2 s.
        for k in 0..3u32 {
            let now = ms(t0, 2000 + 20 * k as u64);
            let (seq, ts, p) = pkt(9, 77, 10 + k);
            t.push(now, Ssrc(99), seq, ts, &p);
            out.extend(drain(&mut t, now));
        }
        t.flush(ms(t0, 3000));
        out.extend(drain(&mut t, ms(t0, 3000)));
        let got = audio_positions(&out);
        assert_eq!(
            &got[..5],
            &(0..5)
                .map(|k| (160 * k as u64, k as u8))
                .collect::<Vec<_>>()[..]
        );
        assert_eq!(&got[5..], &[(16000, 10), (16160, 11), (16320, 12)]);
        assert!(
            out.iter().all(|o| matches!(o, TrackOutput::Audio { .. })),
            "an SSRC change is not loss"
        );
        assert_eq!(t.stats().reanchors, 1);
        assert_eq!(t.stats().lost, 0);
    }

    #[test]
    fn timestamp_jump_reanchors_but_silence_suppression_does_not() {
        let t0 = Instant::now();
        let mut t = RecordTrack::new(t0, W);
        let push = |t: &mut RecordTrack, at: u64, seq: u16, ts: u32, b: u8| {
            t.push(ms(t0, at), S, seq, ts, &[b; 160]);
        };
        push(&mut t, 0, 1, 0, 1);
        push(&mut t, 20, 2, 160, 2);
        // DTX: 3 s of silence, next talkspurt's ts advanced in step with time (seq + 1 only).
        push(&mut t, 3040, 3, 160 + 24160, 3);
        // Sender clock reset: ts jumps by ~2^31 with seq + 1 and 20 ms later.
        push(&mut t, 3060, 4, 0x8000_0000, 4);
        push(&mut t, 3080, 5, 0x8000_0000 + 160, 5);
        // Network stall: 4 s pause, then a burst whose ts is in step with seq.
        push(&mut t, 7080, 6, 0x8000_0000 + 320, 6);
        push(&mut t, 7081, 7, 0x8000_0000 + 480, 7);
        t.flush(ms(t0, 8000));
        let out = drain(&mut t, ms(t0, 8000));
        assert_eq!(
            audio_positions(&out),
            vec![
                (0, 1),
                (160, 2),
                (24320, 3),
                (24480, 4),
                (24640, 5),
                (24800, 6),
                (24960, 7)
            ]
        );
        assert_eq!(t.stats().reanchors, 1);
        assert_eq!(t.stats().lost, 0);
    }

    #[test]
    fn sender_restart_needs_two_consecutive_packets() {
        let t0 = Instant::now();
        let mut t = RecordTrack::new(t0, W);
        for k in 0..3u32 {
            let (seq, ts, p) = pkt(1000, 0, k);
            t.push(ms(t0, 20 * k as u64), S, seq, ts, &p);
        }
        // A stray from far away: held on probation, then dropped when the stream continues.
        t.push(ms(t0, 60), S, 30000, 480, &[50; 160]);
        let (seq, ts, p) = pkt(1000, 0, 3);
        t.push(ms(t0, 61), S, seq, ts, &p);
        assert_eq!(t.stats().late, 1);
        // A real restart: seq 20000, 20001 (ts continuous).
        t.push(ms(t0, 80), S, 20000, 640, &[60; 160]);
        t.push(ms(t0, 100), S, 20001, 800, &[61; 160]);
        t.flush(ms(t0, 200));
        let out = drain(&mut t, ms(t0, 200));
        assert_eq!(
            audio_positions(&out),
            vec![(0, 0), (160, 1), (320, 2), (480, 3), (640, 60), (800, 61)]
        );
        assert!(
            out.iter().all(|o| matches!(o, TrackOutput::Audio { .. })),
            "a restart is not 17000 lost packets"
        );
        assert_eq!(t.stats().lost, 0);
    }

    #[test]
    fn buffer_is_bounded_and_overflow_counts_as_loss() {
        let t0 = Instant::now();
        let mut t = RecordTrack::new(t0, Duration::from_secs(10)); // window never expires here
        let (seq, ts, p) = pkt(0, 0, 0);
        t.push(t0, S, seq, ts, &p);
        t.flush(t0);
        drain(&mut t, t0);
        // Packet 1 is lost; 2..=65 arrive within one millisecond: all held (no predecessor).
        for k in 2..=65u32 {
            let (seq, ts, p) = pkt(0, 0, k);
            t.push(t0 + Duration::from_micros(k as u64), S, seq, ts, &p);
        }
        assert_eq!(drain(&mut t, t0 + Duration::from_millis(1)), vec![]);
        assert_eq!(t.buffer.len(), MAX_BUFFERED);
        // One more overflows: the oldest is released early and packet 1 counts as lost; then
        // 3.. follow in order, so nothing needs holding any more.
        let (seq, ts, p) = pkt(0, 0, 66);
        t.push(t0 + Duration::from_millis(1), S, seq, ts, &p);
        let out = drain(&mut t, t0 + Duration::from_millis(1));
        assert_eq!(out.first(), Some(&TrackOutput::Loss { from: 160, to: 320 }));
        assert_eq!(
            audio_positions(&out),
            (2..=66)
                .map(|k| (160 * k as u64, k as u8))
                .collect::<Vec<_>>()
        );
        assert_eq!(t.stats().lost, 1);
        assert!(t.buffer.is_empty());
    }

    #[test]
    fn positions_never_go_backwards() {
        let t0 = Instant::now();
        let mut t = RecordTrack::new(t0, W);
        // Old stream runs ahead of arrival (its ts claims 1 s of audio in 100 ms).
        for k in 0..5u32 {
            t.push(
                ms(t0, 20 * k as u64),
                S,
                k as u16,
                2000 * k,
                &[k as u8; 160],
            );
        }
        // New SSRC arrives at 120 ms, earlier than where the old stream's audio ended.
        t.push(ms(t0, 120), Ssrc(2), 0, 0, &[9; 160]);
        t.flush(ms(t0, 500));
        let out = drain(&mut t, ms(t0, 500));
        let mut end = 0;
        for o in &out {
            if let TrackOutput::Audio { pos, payload } = o {
                assert!(*pos >= end, "{out:?}");
                end = pos + payload.len() as u64;
            }
        }
        assert_eq!(audio_positions(&out).last(), Some(&(8160, 9)));
    }

    /// The counting track (no payloads) reports the loss the recording track reports, packet
    /// by packet, over random streams with jitter, loss, repeats, reordering, telephone-events,
    /// sequence restarts, SSRC changes and clock jumps; and it outputs nothing.
    #[test]
    fn counting_track_counts_what_the_recording_track_counts() {
        let mut total_lost = 0;
        let t0 = Instant::now();
        for call in random_streams() {
            let mut rec = RecordTrack::new(t0, W);
            let mut cnt = RecordTrack::counting(t0, W);
            for (now_ms, packets) in &call {
                let now = ms(t0, *now_ms);
                for &Pkt { ssrc, seq, ts, audio } in packets {
                    for t in [&mut rec, &mut cnt] {
                        if audio {
                            t.push(now, ssrc, seq, ts, &[seq as u8; 160]);
                        } else {
                            t.skip(now, ssrc, seq);
                        }
                    }
                }
                let _ = drain(&mut rec, now);
                assert_eq!(drain(&mut cnt, now), vec![]);
                let (a, b) = (rec.stats(), cnt.stats());
                assert_eq!((a.received, a.lost), (b.received, b.lost));
            }
            let end = ms(t0, call.last().map_or(0, |c| c.0) + 1000);
            rec.flush(end);
            cnt.flush(end);
            let _ = drain(&mut rec, end);
            assert_eq!(drain(&mut cnt, end), vec![]);
            assert_eq!(rec.stats().lost, cnt.stats().lost);
            assert!(cnt.buffer.values().all(|p| p.payload.is_empty()));
            total_lost += cnt.stats().lost;
        }
        // The streams did lose packets: the comparison is not between two zeros.
        assert!(total_lost > 1000, "{total_lost}");
    }

    #[test]
    fn owned_payloads_come_out_as_copied_ones_and_buffers_go_round() {
        let t0 = Instant::now();
        let (mut outputs, mut reused) = (0, 0);
        for call in random_streams() {
            let mut copied = RecordTrack::new(t0, W);
            let mut owned = RecordTrack::new(t0, W);
            let mut recycled: Vec<*const u8> = Vec::new();
            let check = |copied: &mut RecordTrack, owned: &mut RecordTrack, now, recycled: &mut Vec<_>| {
                let (a, b) = (drain(copied, now), drain(owned, now));
                assert_eq!(a, b);
                for out in b {
                    if let TrackOutput::Audio { payload, .. } = out {
                        recycled.push(payload.as_ptr());
                        owned.recycle(payload);
                    }
                }
                assert_eq!(copied.stats(), owned.stats());
                a.len()
            };
            for (now_ms, packets) in &call {
                let now = ms(t0, *now_ms);
                for &Pkt { ssrc, seq, ts, audio } in packets {
                    let payload = [seq as u8; 160];
                    if audio {
                        copied.push(now, ssrc, seq, ts, &payload);
                        let buf = owned.buffer_for(&payload);
                        if recycled.contains(&buf.as_ptr()) {
                            reused += 1;
                        }
                        owned.push_owned(now, ssrc, seq, ts, buf);
                    } else {
                        copied.skip(now, ssrc, seq);
                        owned.skip(now, ssrc, seq);
                    }
                }
                outputs += check(&mut copied, &mut owned, now, &mut recycled);
            }
            let end = ms(t0, call.last().map_or(0, |c| c.0) + 1000);
            copied.flush(end);
            owned.flush(end);
            outputs += check(&mut copied, &mut owned, end, &mut recycled);
        }
        assert!(outputs > 40_000, "{outputs}");
        // Steady audio runs on buffers handed back, not fresh ones.
        assert!(reused > outputs / 2, "{reused} of {outputs}");
    }

    #[derive(Clone, Copy)]
    struct Pkt {
        ssrc: Ssrc,
        seq: u16,
        ts: u32,
        /// Audio, or a telephone-event (`skip`).
        audio: bool,
    }

    /// 200 calls of 300 steps of 15–25 ms: per step, the packets arriving then. Loss,
    /// reordering, repeats, sequence restarts, SSRC changes, clock jumps and telephone-events.
    fn random_streams() -> Vec<Vec<(u64, Vec<Pkt>)>> {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut calls = Vec::new();
        for _ in 0..200 {
            let mut steps = Vec::new();
            let (mut ssrc, mut seq, mut ts) = (Ssrc(1), rnd(65536) as u16, rnd(1 << 32) as u32);
            let mut held: Option<(u16, u32)> = None;
            let mut now_ms = 0u64;
            for _ in 0..300 {
                now_ms += 15 + rnd(11);
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(160);
                match rnd(100) {
                    0..=4 => continue, // lost
                    5..=7 => {
                        // reordered: sent after the next one
                        held = Some((seq, ts));
                        continue;
                    }
                    8 => seq = seq.wrapping_add(5000), // restart (needs two to confirm)
                    9 => ssrc = Ssrc(ssrc.0 + 1),
                    10 => ts = ts.wrapping_add(80_000), // clock jump
                    11..=13 => {
                        steps.push((now_ms, vec![Pkt { ssrc, seq, ts, audio: false }]));
                        continue;
                    }
                    _ => {}
                }
                let mut sends = vec![(seq, ts)];
                if let Some(h) = held.take() {
                    sends.push(h);
                }
                if rnd(20) == 0 {
                    sends.push((seq.wrapping_sub(rnd(4) as u16), ts)); // a repeat
                }
                let pkts = sends.into_iter().map(|(seq, ts)| Pkt { ssrc, seq, ts, audio: true });
                steps.push((now_ms, pkts.collect()));
            }
            calls.push(steps);
        }
        calls
    }
}
