//! Micro-benchmarks of the per-packet hot paths (no tokio; no syscalls except in `kernel/`).
//!
//! `cargo bench --bench hot_paths` (criterion, wall time per packet or frame). For numbers that
//! do not depend on what else runs on the machine, the same loops run under callgrind:
//! `HOT_PATHS_CALLGRIND=NAME N` runs `N` iterations of one loop once and exits (see
//! BENCHMARKS.md, "Micro-benchmarks").
//!
//! Loops (each iteration = one 20 ms PCMU packet or frame of one direction):
//! * `relay/forward_decision`: what the relay does for every packet before the send: RTP parse,
//!   payload-type checks, keypad-masking decision.
//! * `relay/delay_line_alloc` / `relay/delay_line_pooled`: the 250 ms keypad-protection delay
//!   line, push and pop of one payload, with a fresh `Vec` per packet (the relay before
//!   optimisation) or with recycled buffers (as `media::relay` does now).
//! * `recording/write_per_packet`: `RecordTrack` push + poll, `RecordingWriter::push_audio`,
//!   and the once-a-second seal (AES-256-GCM) and output amortised over the 50 packets of that
//!   second; track buffers recycled as the relay does.
//! * `dtmf/inband_per_frame`: G.711 decode of 160 samples + `InbandDetector::push_frame`, on a
//!   loud 440 Hz tone (every block goes through the Goertzel filters).
//! * `dtmf/inband_quiet_frame`: the same on line noise at -50 dBm0 (a pause, or the direction
//!   of the party who is listening: most frames of a conversation on each leg).
//! * `dtmf/rfc4733_per_packet`: `EventTracker::handle_packet` + `poll_event` on an event stream.
//! * `track/count_only`: the loss-counting track every bridged call keeps per leg
//!   (`RecordTrack::counting`: push + poll, no payload kept); `track/recording` is the same
//!   packet through a recording track (payload copied, output taken and recycled).
//! * `kernel/udp_send_recv`: one 172-byte datagram sent on loopback and received with its source
//!   (`send_to` + `recv_from`): what the kernel costs for one relayed datagram with no wake-up,
//!   no epoll and a hot cache, the floor under any relay that owns a socket pair per call.

use std::hint::black_box;
use std::time::{Duration, Instant};

use callgate::ids::{KeyId, Leg, RecordingId, Ssrc};
use callgate::media::g711::G711;
use callgate::media::rtp::{self, RtpPacket, TelephoneEvent};
use callgate::media::track::{RecordTrack, TrackOutput};
use callgate::pci::delay::DelayLine;
use callgate::pci::inband::InbandDetector;
use callgate::pci::mask::{self, PacketAction, PacketKind};
use callgate::pci::rfc4733::EventTracker;
use callgate::recording::container::Header;
use callgate::recording::keys::Dek;
use callgate::recording::writer::RecordingWriter;
use criterion::{Criterion, Throughput, criterion_group};

const FRAME: Duration = Duration::from_millis(20);

fn packet(seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(12 + payload.len());
    rtp::write_rtp(&mut b, false, 0, seq, ts, Ssrc(0x1234_5678), payload).expect("valid RTP");
    b
}

fn tone(k: usize) -> [u8; 160] {
    let mut p = [0u8; 160];
    for (i, b) in p.iter_mut().enumerate() {
        let t = (k * 160 + i) as f64 / 8000.0;
        *b = G711::Pcmu.encode((8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16);
    }
    p
}

/// State of the forward-decision loop.
struct Forward {
    pkts: Vec<Vec<u8>>,
    i: usize,
}

impl Forward {
    fn new() -> Forward {
        let pkts = (0..50).map(|k| packet(k as u16, k * 160, &tone(k as usize))).collect();
        Forward { pkts, i: 0 }
    }
    fn step(&mut self) -> usize {
        let buf = &self.pkts[self.i % self.pkts.len()];
        self.i += 1;
        if rtp::is_rtcp(buf) {
            return 0;
        }
        let Ok(p) = RtpPacket::parse(buf) else { return 0 };
        let is_audio = p.payload_type() == G711::Pcmu.payload_type();
        let is_event = p.payload_type() == 101;
        if !is_audio && !is_event {
            return 0;
        }
        let kind = if is_event { PacketKind::TelephoneEvent } else { PacketKind::Audio };
        match mask::decide(false, kind) {
            PacketAction::Pass => p.as_bytes().len(),
            _ => 0,
        }
    }
}

/// Delay-line loop: the relay keeps the payload of each packet for 250 ms.
struct Delay {
    line: DelayLine<Vec<u8>>,
    spare: Vec<Vec<u8>>,
    /// Recycle payload buffers (as `media::relay` does) or allocate one per packet.
    pool: bool,
    now: Instant,
    payload: [u8; 160],
}

impl Delay {
    fn new(pool: bool) -> Delay {
        Delay {
            line: DelayLine::for_frames(Duration::from_millis(250)),
            spare: Vec::new(),
            pool,
            now: Instant::now(),
            payload: tone(0),
        }
    }
    fn step(&mut self) -> usize {
        self.now += FRAME;
        let mut v = self.spare.pop().unwrap_or_default();
        v.clear();
        v.extend_from_slice(&self.payload);
        let _ = self.line.push(self.now, Leg::Caller, v);
        let mut n = 0;
        while let Some((_, _, v)) = self.line.pop(self.now) {
            n += v.len();
            if self.pool {
                self.spare.push(v);
            }
        }
        n
    }
}

/// Recording loop: one direction into a track and a writer, sealed once a second.
struct Record {
    track: RecordTrack,
    writer: RecordingWriter,
    now: Instant,
    seq: u16,
    ts: u32,
    payloads: Vec<[u8; 160]>,
    k: usize,
    written: u64,
}

impl Record {
    fn new() -> Record {
        let now = Instant::now();
        let header = Header::new(RecordingId::new_random(), KeyId::new_random(), 0, Duration::from_secs(1))
            .expect("random nonce");
        let mut writer = RecordingWriter::new(header, &Dek::from_bytes([7; 32]), now, Duration::from_secs(1));
        while writer.poll_output().is_some() {}
        Record {
            track: RecordTrack::new(now, Duration::from_millis(60)),
            writer,
            now,
            seq: 1000,
            ts: 4000,
            payloads: (0..50).map(tone).collect(),
            k: 0,
            written: 0,
        }
    }
    fn step(&mut self) -> u64 {
        self.now += FRAME;
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(160);
        let payload = &self.payloads[self.k % self.payloads.len()];
        self.k += 1;
        self.track.push(self.now, Ssrc(1), self.seq, self.ts, payload);
        while let Some(out) = self.track.poll(self.now) {
            match out {
                TrackOutput::Audio { pos, payload } => {
                    self.writer.push_audio(Leg::Caller, pos, G711::Pcmu, &payload);
                    self.track.recycle(payload);
                }
                TrackOutput::Loss { .. } => {}
            }
        }
        self.writer.handle_timeout(self.now);
        while let Some(bytes) = self.writer.poll_output() {
            self.written += bytes.len() as u64;
        }
        self.written
    }
}

/// Low-level white noise, µ-law (-50 dBm0: the noise floor of a quiet line), from a fixed seed.
fn line_noise(k: usize) -> [u8; 160] {
    // xorshift64: deterministic and dependency-free; uniform in ±88 has an RMS of 51, i.e. a
    // 0 dBm0 sine's RMS (22,700 / √2) 50 dB down.
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (k as u64 + 1);
    let mut p = [0u8; 160];
    for b in p.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = G711::Pcmu.encode((x % 177) as i16 - 88);
    }
    p
}

/// In-band DTMF detection of one 20 ms frame (no digit).
struct Inband {
    det: InbandDetector,
    now: Instant,
    frames: Vec<[u8; 160]>,
    pcm: Vec<i16>,
    k: usize,
}

impl Inband {
    /// A loud speech-like tone.
    fn new() -> Inband {
        Inband::with(tone)
    }
    /// Line noise only.
    fn quiet() -> Inband {
        Inband::with(line_noise)
    }
    fn with(frame: fn(usize) -> [u8; 160]) -> Inband {
        Inband { det: InbandDetector::new(), now: Instant::now(), frames: (0..50).map(frame).collect(), pcm: Vec::with_capacity(160), k: 0 }
    }
    fn step(&mut self) -> usize {
        self.now += FRAME;
        let f = &self.frames[self.k % self.frames.len()];
        self.k += 1;
        self.pcm.clear();
        self.pcm.extend(f.iter().map(|b| G711::Pcmu.decode(*b)));
        self.det.push_frame(self.now, &self.pcm);
        let mut n = 0;
        while self.det.poll_event().is_some() {
            n += 1;
        }
        n
    }
}

/// RFC 4733: a digit every 200 ms (8 packets: start, updates, 3 end packets), 50 ms apart.
struct Events {
    trk: EventTracker,
    now: Instant,
    k: u32,
}

impl Events {
    fn new() -> Events {
        Events { trk: EventTracker::new(), now: Instant::now(), k: 0 }
    }
    fn step(&mut self) -> usize {
        self.now += FRAME;
        let digit = self.k / 8;
        let i = self.k % 8;
        self.k += 1;
        let ev = TelephoneEvent { event: (digit % 10) as u8, end: i >= 5, volume: 10, duration: (160 * (i.min(5) + 1)) as u16 };
        let _ = self.trk.handle_packet(self.now, digit.wrapping_mul(1600), i == 0, &ev.to_bytes());
        let mut n = 0;
        while self.trk.poll_event().is_some() {
            n += 1;
        }
        n
    }
}

/// The loss-counting track (or, with `recording`, a recording track) fed one packet per step.
struct Count {
    track: RecordTrack,
    now: Instant,
    seq: u16,
    ts: u32,
    payload: [u8; 160],
    recording: bool,
}

impl Count {
    fn new(recording: bool) -> Count {
        let now = Instant::now();
        let w = Duration::from_millis(60);
        Count {
            track: if recording { RecordTrack::new(now, w) } else { RecordTrack::counting(now, w) },
            now,
            seq: 1000,
            ts: 4000,
            payload: tone(0),
            recording,
        }
    }
    fn step(&mut self) -> u64 {
        self.now += FRAME;
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(160);
        self.track.push(self.now, Ssrc(1), self.seq, self.ts, &self.payload);
        let mut n = 0;
        while let Some(out) = self.track.poll(self.now) {
            if let TrackOutput::Audio { payload, .. } = out {
                n += payload.len() as u64;
                if self.recording {
                    self.track.recycle(payload);
                }
            }
        }
        n + self.track.stats().received
    }
}

/// One datagram through the kernel: sent on one loopback socket, received on another.
struct Udp {
    tx: std::net::UdpSocket,
    rx: std::net::UdpSocket,
    to: std::net::SocketAddr,
    pkt: [u8; 172],
    buf: [u8; 2048],
}

impl Udp {
    fn new() -> Udp {
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
        let to = rx.local_addr().expect("bound");
        Udp { tx, rx, to, pkt: [0x55; 172], buf: [0; 2048] }
    }
    fn step(&mut self) -> usize {
        self.tx.send_to(&self.pkt, self.to).expect("send on loopback");
        // Loopback delivers inside send_to: the datagram is queued when it returns.
        self.rx.recv_from(&mut self.buf).expect("receive on loopback").0
    }
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("relay");
    g.throughput(Throughput::Elements(1));
    let mut f = Forward::new();
    g.bench_function("forward_decision", |b| b.iter(|| black_box(f.step())));
    let mut d = Delay::new(false);
    g.bench_function("delay_line_alloc", |b| b.iter(|| black_box(d.step())));
    let mut d = Delay::new(true);
    g.bench_function("delay_line_pooled", |b| b.iter(|| black_box(d.step())));
    g.finish();

    let mut g = c.benchmark_group("recording");
    g.throughput(Throughput::Elements(1));
    let mut r = Record::new();
    g.bench_function("write_per_packet", |b| b.iter(|| black_box(r.step())));
    g.finish();

    let mut g = c.benchmark_group("dtmf");
    g.throughput(Throughput::Elements(1));
    let mut i = Inband::new();
    g.bench_function("inband_per_frame", |b| b.iter(|| black_box(i.step())));
    let mut q = Inband::quiet();
    g.bench_function("inband_quiet_frame", |b| b.iter(|| black_box(q.step())));
    let mut e = Events::new();
    g.bench_function("rfc4733_per_packet", |b| b.iter(|| black_box(e.step())));
    g.finish();

    let mut g = c.benchmark_group("track");
    g.throughput(Throughput::Elements(1));
    let mut t = Count::new(false);
    g.bench_function("count_only", |b| b.iter(|| black_box(t.step())));
    let mut t = Count::new(true);
    g.bench_function("recording", |b| b.iter(|| black_box(t.step())));
    g.finish();

    let mut g = c.benchmark_group("kernel");
    g.throughput(Throughput::Elements(1));
    let mut u = Udp::new();
    g.bench_function("udp_send_recv", |b| b.iter(|| black_box(u.step())));
    g.finish();
}

criterion_group! {
    name = hot_paths;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    targets = benches
}

/// `HOT_PATHS_CALLGRIND=NAME N`: run one loop N times (for `valgrind --tool=callgrind`; the
/// set-up is the same for every N, so the difference between two N gives instructions per
/// iteration).
fn callgrind(name: &str, n: u64) {
    let mut acc = 0u64;
    match name {
        "forward_decision" => { let mut s = Forward::new(); for _ in 0..n { acc += s.step() as u64; } }
        "delay_line_alloc" => { let mut s = Delay::new(false); for _ in 0..n { acc += s.step() as u64; } }
        "delay_line_pooled" => { let mut s = Delay::new(true); for _ in 0..n { acc += s.step() as u64; } }
        "write_per_packet" => { let mut s = Record::new(); for _ in 0..n { acc += s.step(); } }
        "inband_per_frame" => { let mut s = Inband::new(); for _ in 0..n { acc += s.step() as u64; } }
        "inband_quiet_frame" => { let mut s = Inband::quiet(); for _ in 0..n { acc += s.step() as u64; } }
        "rfc4733_per_packet" => { let mut s = Events::new(); for _ in 0..n { acc += s.step() as u64; } }
        "count_only" => { let mut s = Count::new(false); for _ in 0..n { acc += s.step(); } }
        "recording" => { let mut s = Count::new(true); for _ in 0..n { acc += s.step(); } }
        other => {
            eprintln!("unknown loop {other}");
            std::process::exit(2);
        }
    }
    println!("{name} x {n}: {}", black_box(acc));
}

fn main() {
    if let Ok(spec) = std::env::var("HOT_PATHS_CALLGRIND") {
        let mut it = spec.split_whitespace();
        let name = it.next().unwrap_or("");
        let n = it.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
        callgrind(name, n);
        return;
    }
    hot_paths();
    Criterion::default().configure_from_args().final_summary();
}
