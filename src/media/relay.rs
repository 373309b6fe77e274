//! The per-call media task: the IO shell around the media cores.
//!
//! Each call owns two RTP/RTCP socket pairs from the [`PortPool`]: one facing the caller, one
//! facing the agent. The task plays the announcement and ringback toward the caller (paced by
//! `AnnouncementPlayer`, time as input), relays RTP and RTCP both ways once bridged, latches to
//! the address packets really come from (symmetric RTP), and taps both directions into the
//! recording (`RecordTrack` → `RecordingWriter` → file, synced in batches by the [`Syncer`]).
//! It reports back to the signalling task through a bounded channel.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::collections::VecDeque;
use std::net::UdpSocket;

use tokio::sync::mpsc;

use crate::call::consent::{ConsentKey, ConsentKeys};
use crate::ids::{CallId, KeyId, Leg, RecordingId, Ssrc};
use crate::media::announcement::{Announcement, AnnouncementPlayer};
use crate::media::g711::G711;
use crate::media::rtp::{self, RtpPacket};
use crate::media::track::{RecordTrack, TrackOutput};
use crate::pci::delay::DelayLine;
use crate::pci::inband::InbandDetector;
use crate::pci::mask::{self, MaskStyle, Masker, PacketAction, PacketKind};
use crate::pci::rfc4733::EventTracker;
use crate::pci::sipinfo::InfoDigit;
use crate::pci::{PauseController, PauseEvent, PciConfig};
use crate::recording::container::{EndReason, GapKind, Header};
use crate::recording::keys::{Dek, WrappedDek};
use crate::recording::storage::Storage;
use crate::recording::writer::RecordingWriter;
use crate::store::{PauseSpan, RecordingRow, Store};

/// Even RTP ports (RTCP on the odd port above) handed out round-robin.
#[derive(Debug)]
pub struct PortPool {
    inner: Mutex<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    lo: u16,
    hi: u16,
    next: u16,
    used: BTreeSet<u16>,
}

/// An RTP/RTCP socket pair; its ports return to the pool when the owning pair is dropped.
///
/// A pair is either a call's own or a view of a media thread's shared pair
/// (`[media] shared_ports`): then every call on that thread sends from the same two sockets,
/// and the thread, not the call, reads them.
#[derive(Debug)]
pub struct PortPair {
    pub rtp: Arc<UdpSocket>,
    pub rtcp: Arc<UdpSocket>,
    pub port: u16,
    /// The pool the ports return to; `None` for a view of a shared pair.
    pool: Option<Arc<PortPool>>,
}

impl PortPair {
    /// A view of this (a media thread's shared) pair for one call: same sockets, and the ports
    /// stay with the thread when the call ends.
    pub(super) fn shared_view(&self) -> PortPair {
        PortPair { rtp: self.rtp.clone(), rtcp: self.rtcp.clone(), port: self.port, pool: None }
    }

    /// Whether this is a view of a media thread's shared pair (only views have no pool).
    pub(super) fn is_shared(&self) -> bool {
        self.pool.is_none()
    }
}

impl Drop for PortPair {
    fn drop(&mut self) {
        // A poisoned lock means a panic elsewhere; the ports are lost either way.
        if let Some(pool) = &self.pool
            && let Ok(mut p) = pool.inner.lock()
        {
            p.used.remove(&self.port);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("no free RTP port pair in the configured range")]
    PortsExhausted,
}

impl PortPool {
    pub fn new(lo: u16, hi: u16) -> Arc<PortPool> {
        let lo = lo + (lo % 2);
        Arc::new(PortPool { inner: Mutex::new(PoolInner { lo, hi, next: lo, used: BTreeSet::new() }) })
    }

    /// Binds the next free even port and the odd one above it on `ip`.
    pub fn bind_pair(self: &Arc<Self>, ip: IpAddr) -> Result<PortPair, MediaError> {
        let attempts = {
            let p = self.inner.lock().map_err(|_| MediaError::PortsExhausted)?;
            ((p.hi - p.lo) / 2 + 1) as usize
        };
        for _ in 0..attempts {
            let port = {
                let mut p = self.inner.lock().map_err(|_| MediaError::PortsExhausted)?;
                let port = p.next;
                p.next = if p.next + 3 > p.hi { p.lo } else { p.next + 2 };
                if p.used.contains(&port) {
                    continue;
                }
                p.used.insert(port);
                port
            };
            let bind = |port: u16| -> std::io::Result<UdpSocket> {
                let s = UdpSocket::bind(SocketAddr::new(ip, port))?;
                s.set_nonblocking(true)?;
                crate::sys::set_dont_fragment(&s)?;
                Ok(s)
            };
            match (bind(port), bind(port + 1)) {
                (Ok(rtp), Ok(rtcp)) => {
                    return Ok(PortPair { rtp: Arc::new(rtp), rtcp: Arc::new(rtcp), port, pool: Some(self.clone()) });
                }
                _ => {
                    // Taken by another process: skip it, keep it marked so we do not retry soon.
                    continue;
                }
            }
        }
        Err(MediaError::PortsExhausted)
    }
}

/// Recording files written since the last sync; one task syncs them all each flush interval,
/// so a thousand calls cost one wake-up per second, not a thousand.
#[derive(Clone, Default)]
pub struct Syncer {
    dirty: Arc<Mutex<HashMap<RecordingId, Arc<std::fs::File>>>>,
}

impl Syncer {
    pub fn mark(&self, id: &RecordingId, file: &Arc<std::fs::File>) {
        if let Ok(mut d) = self.dirty.lock() {
            d.entry(id.clone()).or_insert_with(|| file.clone());
        }
    }

    /// Syncs everything marked; returns how many files.
    pub async fn sync_all(&self) -> usize {
        let batch: Vec<Arc<std::fs::File>> = match self.dirty.lock() {
            Ok(mut d) => d.drain().map(|(_, f)| f).collect(),
            Err(_) => return 0,
        };
        let n = batch.len();
        if n > 0 {
            let _ = tokio::task::spawn_blocking(move || sync_files(&batch)).await;
        }
        n
    }

    /// Runs until `stop` fires, syncing every `every`.
    pub async fn run(self, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => { self.sync_all().await; }
                _ = stop.changed() => { self.sync_all().await; return; }
            }
        }
    }
}

/// From this many dirty recordings on one filesystem, one `syncfs` replaces their `fdatasync`s:
/// each `fdatasync` flushes the disk's cache on its own (a thousand calls, a thousand flushes a
/// second); `syncfs` writes them all back and flushes once. Below it, per-file syncs avoid
/// flushing other programs' data on a shared filesystem for the sake of a few files.
pub const SYNCFS_FROM: usize = 8;

/// Makes `files` durable: grouped per filesystem, `syncfs` for large groups, `fdatasync` else.
fn sync_files(files: &[Arc<std::fs::File>]) {
    use std::os::unix::fs::MetadataExt;
    let mut by_dev: HashMap<u64, Vec<&std::fs::File>> = HashMap::new();
    for f in files {
        match f.metadata() {
            Ok(m) => by_dev.entry(m.dev()).or_default().push(f),
            Err(e) => tracing::warn!(error = %e, "recording sync failed"),
        }
    }
    for group in by_dev.values() {
        if group.len() >= SYNCFS_FROM {
            if let Err(e) = crate::sys::syncfs(group[0]) {
                tracing::warn!(error = %e, files = group.len(), "recording sync failed");
            }
            continue;
        }
        for f in group {
            if let Err(e) = f.sync_data() {
                tracing::warn!(error = %e, "recording sync failed");
            }
        }
    }
}

/// Everything needed to record a call.
pub struct RecordingPlan {
    pub recording_id: RecordingId,
    pub key_id: KeyId,
    pub dek: Dek,
    pub wrapped: WrappedDek,
    pub storage: Arc<Storage>,
    pub store: Store,
    pub flush: Duration,
    pub syncer: Syncer,
}

/// Where a leg's media goes and in what codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remote {
    pub rtp: SocketAddr,
    pub rtcp: SocketAddr,
    pub codec: G711,
    pub telephone_event: Option<u8>,
    /// The leg put us on hold (it may stop sending: no media timeout then).
    pub on_hold: bool,
}

pub enum MediaCmd {
    SetRemote { leg: Leg, remote: Remote },
    PlayAnnouncement(Arc<Announcement>),
    PlayRingback,
    /// Outbound: a short repeating tone toward the agent while the customer hears the prompts.
    PlayWaitTone,
    /// Listen for these consent keys from the customer until the bridge.
    ListenConsent(ConsentKeys),
    PlayConsentPrompt(Arc<Announcement>),
    /// Cut the consent prompt short (a key decided).
    StopPrompt,
    Bridge { recording: Option<Box<RecordingPlan>> },
    /// On-demand: start recording now.
    StartRecording { plan: Box<RecordingPlan> },
    /// A DTMF digit a leg sent by SIP INFO (consumed by keypad protection, never logged).
    Info { leg: Leg, digit: InfoDigit },
    /// Pause or resume the recording from the API (a payment screen); the reply says whether
    /// it took effect.
    Control { pause: bool, reply: tokio::sync::oneshot::Sender<Result<(), ControlRefused>> },
    Stop { reason: EndReason },
    /// Fault injection for the media threads' panic containment.
    #[cfg(test)]
    Panic,
    /// Holds the media thread (a stand-in for a pass that runs long), so datagrams queue up.
    #[cfg(test)]
    Stall(Duration),
}

/// Why an API pause or resume was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ControlRefused {
    #[error("the call is not connected yet")]
    NotBridged,
    #[error("{0}")]
    State(#[from] crate::pci::ControlError),
}

#[derive(Debug)]
pub enum MediaEvent {
    AnnouncementDone { call: CallId, started_ms: i64, ended_ms: i64 },
    /// The agent keyed `record_digits` (an on-demand start; the engine decides).
    RecordRequested { call: CallId },
    /// The customer pressed one of the consent keys (other keys are never reported).
    ConsentKey { call: CallId, key: ConsentKey },
    ConsentPromptDone { call: CallId },
    AnnouncementFailed { call: CallId, cause: String },
    MediaTimeout { call: CallId, leg: Leg },
    Finished { call: CallId, report: MediaReport },
}

/// Counters and the recording's fate, for the call record.
#[derive(Debug, Default, Clone)]
pub struct MediaReport {
    pub caller_packets: u64,
    pub caller_lost: u64,
    pub agent_packets: u64,
    pub agent_lost: u64,
    pub recording: Option<RecordingResult>,
    /// Keypad-protection pauses, in order (counts and times only: never digits).
    pub pauses: Vec<PauseSpan>,
}


#[derive(Debug, Clone)]
pub struct RecordingResult {
    pub recording_id: RecordingId,
    pub key_id: KeyId,
    /// `ok` or `failed`.
    pub state: &'static str,
    pub error: Option<String>,
    pub bytes: u64,
    pub sha256: Option<String>,
    pub location: String,
    pub audio_ms: u64,
}

/// Handle kept by the signalling task.
pub struct MediaHandle {
    pub cmd: mpsc::Sender<MediaCmd>,
    pub caller_port: u16,
    pub agent_port: u16,
}

/// Settings shared by every call's media task.
#[derive(Clone, Debug)]
pub struct MediaSettings {
    pub timeout: Duration,
    /// Keypad protection (pause triggers, masking, delay line).
    pub pci: PciConfig,
    /// How long the reorder buffer waits for a missing packet before declaring it lost.
    pub reorder_window: Duration,
}


/// What plays toward a side before the bridge.
enum Prompt {
    None,
    Announcement { player: AnnouncementPlayer, started_ms: i64 },
    Consent { player: AnnouncementPlayer },
    /// A tone cadence looped until the bridge (ringback to the customer, the wait tone to the
    /// agent of an outbound call).
    Loop { player: AnnouncementPlayer, tone: fn() -> Arc<[i16]> },
}

impl Prompt {
    fn player_mut(&mut self) -> Option<&mut AnnouncementPlayer> {
        match self {
            Prompt::None => None,
            Prompt::Announcement { player, .. } | Prompt::Consent { player } | Prompt::Loop { player, .. } => Some(player),
        }
    }

    fn player(&self) -> Option<&AnnouncementPlayer> {
        match self {
            Prompt::None => None,
            Prompt::Announcement { player, .. } | Prompt::Consent { player } | Prompt::Loop { player, .. } => Some(player),
        }
    }
}

/// Our own RTP stream toward one side (announcement, prompts, tones).
struct OutStream {
    ssrc: Ssrc,
    seq: u16,
    ts: u32,
}

impl OutStream {
    fn random() -> OutStream {
        let mut r = [0u8; 10];
        let _ = getrandom::fill(&mut r);
        OutStream {
            ssrc: Ssrc(u32::from_be_bytes([r[0], r[1], r[2], r[3]])),
            seq: u16::from_be_bytes([r[4], r[5]]),
            ts: u32::from_be_bytes([r[6], r[7], r[8], r[9]]),
        }
    }
}

/// The key detectors of one leg: in-band tones and RFC 4733 events.
struct KeyDetectors {
    inband: InbandDetector,
    events: EventTracker,
}

impl KeyDetectors {
    fn new() -> KeyDetectors {
        KeyDetectors { inband: InbandDetector::new(), events: EventTracker::new() }
    }

    /// Runs the detector for this packet's kind; `pcm` is scratch space for the decoded audio.
    fn feed(&mut self, now: Instant, codec: G711, p: &RtpPacket<'_>, is_event: bool, pcm: &mut Vec<i16>) {
        if is_event {
            let _ = self.events.handle_packet(now, p.timestamp(), p.marker(), p.payload());
        } else {
            pcm.clear();
            pcm.extend(p.payload().iter().map(|b| codec.decode(*b)));
            self.inband.push_frame(now, pcm);
        }
    }
}

/// Listens for the consent keys on the customer's side before the bridge. Its detectors move
/// into keypad protection at the bridge, so the tail of a consent key (RFC 4733 end packets are
/// repeated) is never taken for a new key press that would start a PCI pause.
struct ConsentListener {
    keys: ConsentKeys,
    det: KeyDetectors,
    pcm: Vec<i16>,
}

impl ConsentListener {
    /// Runs the detectors on a customer packet; completed consent keys go to `found`.
    fn packet(&mut self, now: Instant, codec: G711, p: &RtpPacket<'_>, is_event: bool, found: &mut Vec<ConsentKey>) {
        self.det.feed(now, codec, p, is_event, &mut self.pcm);
        self.poll(found);
    }

    fn poll(&mut self, found: &mut Vec<ConsentKey>) {
        // Only completed presses of configured keys leave here; every other key is dropped.
        while let Some(ev) = self.det.events.poll_event() {
            if let crate::pci::Rfc4733Event::DigitEnd { digit, .. } = ev {
                found.extend(self.keys.key_for(digit));
            }
        }
        while let Some(ev) = self.det.inband.poll_event() {
            if let crate::pci::InbandEvent::ToneEnd { digit, .. } = ev {
                found.extend(self.keys.key_for(digit));
            }
        }
    }
}

struct Recorder {
    id: RecordingId,
    key_id: KeyId,
    writer: Option<RecordingWriter>,
    /// Created once the database confirmed the key; `None` before (chunks wait in `held`).
    file: Option<Arc<std::fs::File>>,
    location: String,
    tracks: [RecordTrack; 2],
    store: Store,
    syncer: Syncer,
    bytes: u64,
    error: Option<String>,
    start: Instant,
    codecs: [G711; 2],
    call: CallId,
    created_at_ms: i64,
    /// Answers once the wrapped key (and the recording row) are in the database. Until then
    /// sealed chunks wait in `held` and no file exists: never audio without its key.
    key_stored: Option<tokio::sync::oneshot::Receiver<Result<(), String>>>,
    held: Vec<Vec<u8>>,
    storage: Arc<Storage>,
}

/// Sealed chunks held while the database is slow to confirm the key (about a minute at the
/// default 1 s flush); beyond that the recording fails rather than grow without bound.
const MAX_HELD_CHUNKS: usize = 64;

/// Events a call keeps while the signalling channel is full.
const MAX_PENDING_EVENTS: usize = 64;

/// How late recording-path work may run (see [`MediaTask::poll_timeout`]): one packet interval.
const LAZY_SLACK: Duration = Duration::from_millis(20);

/// Runs blocking file IO without stalling the other calls' tasks on this worker thread (on a
/// media thread it runs inline: appending a chunk a second to the page cache does not block).
fn blocking_io<R>(f: impl FnOnce() -> R) -> R {
    if super::reactor::on_media_thread() {
        return f();
    }
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

pub(super) struct MediaTask {
    call: CallId,
    socks: [PortPair; 2],
    settings: MediaSettings,
    events: mpsc::Sender<MediaEvent>,
    remote: [Option<Remote>; 2],
    /// Latched source addresses (symmetric RTP / RTCP).
    latched: [Option<SocketAddr>; 2],
    latched_rtcp: [Option<SocketAddr>; 2],
    packets: [u64; 2],
    last_rx: [Option<Instant>; 2],
    bridged: Option<Instant>,
    timed_out: bool,
    /// What plays toward each side before the bridge.
    prompt: [Prompt; 2],
    /// Our own RTP stream toward each side.
    out: [OutStream; 2],
    consent: Option<ConsentListener>,
    /// Consent keys found by the (synchronous) packet path, reported by the next timeout pass.
    consent_found: Vec<ConsentKey>,
    recorder: Option<Recorder>,
    /// Loss counted by the tracks even when not recording.
    tracks: Option<[RecordTrack; 2]>,
    /// Keypad protection, from the bridge on.
    pci: Option<Pci>,
    send_buf: Vec<u8>,
    /// Events waiting for room in the signalling channel.
    pending: VecDeque<MediaEvent>,
}

/// A packet waiting in the recording delay line (an empty payload marks a telephone-event).
struct Delayed {
    ssrc: Ssrc,
    seq: u16,
    ts: u32,
    payload: Vec<u8>,
}

impl Delayed {
    /// Into the recording track, whose buffer the payload already is (no second copy).
    fn feed(self, track: &mut RecordTrack, captured: Instant) {
        if self.payload.is_empty() {
            track.skip(captured, self.ssrc, self.seq);
        } else {
            track.push_owned(captured, self.ssrc, self.seq, self.ts, self.payload);
        }
    }
}

/// Drains a track whose output is not recorded (loss counting only), recycling its buffers.
fn discard_output(track: &mut RecordTrack, now: Instant) {
    while let Some(out) = track.poll(now) {
        if let TrackOutput::Audio { payload, .. } = out {
            track.recycle(payload);
        }
    }
}

/// Keypad protection state of one call: detectors per leg, the pause controller, the delay line
/// that gives the controller time to decide before audio reaches the recording, the masker.
struct Pci {
    ctl: PauseController,
    det: [KeyDetectors; 2],
    /// Payloads wait here in buffers of the recording track they go to (`RecordTrack::buffer_for`),
    /// which recycles them once written: a steady call allocates nothing per packet.
    delay: DelayLine<Delayed>,
    masker: Masker,
    pcm: Vec<i16>,
    spans: Vec<PauseSpan>,
    /// Audio that could not be delayed (queue full) is dropped, never recorded undelayed.
    overflow: u64,
}

impl Pci {
    fn new(cfg: &PciConfig, codec: G711) -> Pci {
        Pci {
            delay: DelayLine::for_frames(cfg.delay),
            ctl: PauseController::new(cfg.clone()),
            det: [KeyDetectors::new(), KeyDetectors::new()],
            masker: Masker::new(codec, MaskStyle::ComfortNoise),
            pcm: Vec::with_capacity(320),
            spans: Vec::new(),
            overflow: 0,
        }
    }

    /// Runs the detectors on one packet of `leg`.
    fn detect(&mut self, now: Instant, leg: Leg, codec: G711, p: &RtpPacket<'_>, is_event: bool) {
        self.ctl.handle_timeout(now);
        let det = &mut self.det[idx(leg)];
        det.feed(now, codec, p, is_event, &mut self.pcm);
        while let Some(ev) = det.events.poll_event() {
            self.ctl.handle_rfc4733(leg, ev);
        }
        while let Some(ev) = det.inband.poll_event() {
            self.ctl.handle_inband(leg, ev);
        }
    }
}

fn idx(leg: Leg) -> usize {
    leg as usize
}

impl MediaTask {
    pub(super) fn new(
        call: CallId,
        caller: PortPair,
        agent: PortPair,
        settings: MediaSettings,
        events: mpsc::Sender<MediaEvent>,
    ) -> Self {
        MediaTask {
            call,
            socks: [caller, agent],
            settings,
            events,
            remote: [None, None],
            latched: [None, None],
            latched_rtcp: [None, None],
            packets: [0, 0],
            last_rx: [None, None],
            bridged: None,
            timed_out: false,
            prompt: [Prompt::None, Prompt::None],
            out: [OutStream::random(), OutStream::random()],
            consent: None,
            consent_found: Vec::new(),
            recorder: None,
            tracks: None,
            pci: None,
            send_buf: Vec::with_capacity(256),
            pending: VecDeque::new(),
        }
    }

    /// When the call next needs [`handle_timeout`](Self::handle_timeout). Prompt pacing and
    /// keypad timers are exact. The recording path (delay line, reorder tracks, the writer's
    /// flush) only moves audio toward the file, where a little later is always safe (more time
    /// for the pause decision, never less): its deadlines get [`LAZY_SLACK`], so while packets
    /// flow every 20 ms they do that work and the timer itself rarely fires.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        let mut exact: Option<Instant> = None;
        let mut lazy: Option<Instant> = None;
        for p in &self.prompt {
            exact = earliest(exact, p.player().and_then(|p| p.poll_timeout()));
        }
        if let Some(c) = &self.consent {
            exact = earliest(exact, c.det.events.poll_timeout());
        }
        // With keypad protection the recording tracks run on the delayed clock.
        let shift = self.pci.as_ref().map(|p| p.delay.delay()).unwrap_or_default();
        if let Some(rec) = &self.recorder {
            lazy = earliest(lazy, rec.writer.as_ref().and_then(|w| w.poll_timeout()));
            for tr in &rec.tracks {
                lazy = earliest(lazy, tr.poll_timeout().map(|t| t + shift));
            }
        }
        if let Some(pci) = &self.pci {
            exact = earliest(exact, pci.ctl.poll_timeout());
            lazy = earliest(lazy, pci.delay.poll_timeout());
            for d in &pci.det {
                exact = earliest(exact, d.events.poll_timeout());
            }
        }
        if let Some(tracks) = &self.tracks {
            for tr in tracks {
                lazy = earliest(lazy, tr.poll_timeout());
            }
        }
        earliest(exact, lazy.map(|t| t + LAZY_SLACK))
    }

    pub(super) fn command(&mut self, cmd: MediaCmd) {
        match cmd {
            MediaCmd::SetRemote { leg, remote } => {
                if self.remote[idx(leg)].map(|r| r.rtp) != Some(remote.rtp) {
                    // A new address from SDP replaces any latched one (re-INVITE moved the media).
                    self.latched[idx(leg)] = None;
                    self.latched_rtcp[idx(leg)] = None;
                }
                self.remote[idx(leg)] = Some(remote);
                if let Some(rec) = &mut self.recorder {
                    // A re-INVITE changed the codec: label what is recorded from now on.
                    rec.codecs[idx(leg)] = remote.codec;
                }
            }
            MediaCmd::PlayAnnouncement(a) => {
                let Some(remote) = self.remote[0] else {
                    self.emit(MediaEvent::AnnouncementFailed {
                        call: self.call.clone(),
                        cause: "no caller media address".into(),
                    });
                    return;
                };
                let player = AnnouncementPlayer::for_announcement(&a, remote.codec, Instant::now());
                self.prompt[0] = Prompt::Announcement { player, started_ms: crate::store::now_ms() };
            }
            MediaCmd::PlayConsentPrompt(a) => {
                if let Some(remote) = self.remote[0] {
                    let player = AnnouncementPlayer::for_announcement(&a, remote.codec, Instant::now());
                    self.prompt[0] = Prompt::Consent { player };
                }
            }
            MediaCmd::StopPrompt => {
                if matches!(self.prompt[0], Prompt::Consent { .. }) {
                    self.prompt[0] = Prompt::None;
                }
            }
            MediaCmd::ListenConsent(keys) => {
                self.consent = Some(ConsentListener { keys, det: KeyDetectors::new(), pcm: Vec::with_capacity(320) });
            }
            MediaCmd::PlayRingback => self.play_loop(Leg::Caller, ringback),
            MediaCmd::PlayWaitTone => self.play_loop(Leg::Agent, wait_tone),
            MediaCmd::Bridge { recording } => {
                let now = Instant::now();
                self.prompt = [Prompt::None, Prompt::None];
                self.bridged = Some(now);
                self.last_rx = [Some(now), Some(now)];
                let window = self.settings.reorder_window;
                self.tracks = Some([RecordTrack::counting(now, window), RecordTrack::counting(now, window)]);
                let codec = self.remote[0].map(|r| r.codec).unwrap_or(G711::Pcmu);
                let mut pci = Pci::new(&self.settings.pci, codec);
                if let Some(c) = self.consent.take() {
                    pci.det[0] = c.det;
                }
                self.pci = Some(pci);
                if let Some(plan) = recording {
                    self.recorder = Some(self.start_recording(*plan, now));
                }
            }
            MediaCmd::StartRecording { plan } => {
                if self.bridged.is_some() && self.recorder.is_none() {
                    self.recorder = Some(self.start_recording(*plan, Instant::now()));
                }
            }
            MediaCmd::Info { leg, digit } => {
                if let Some(pci) = &mut self.pci {
                    pci.ctl.handle_info(Instant::now(), leg, digit);
                } else if let (Some(c), Leg::Caller) = (&self.consent, leg) {
                    self.consent_found.extend(c.keys.key_for(digit.digit));
                }
            }
            MediaCmd::Control { pause, reply } => {
                let now = Instant::now();
                let result = match &mut self.pci {
                    None => Err(ControlRefused::NotBridged),
                    Some(pci) if pause => pci.ctl.api_pause(now).map_err(ControlRefused::from),
                    Some(pci) => pci.ctl.api_resume(now).map_err(ControlRefused::from),
                };
                let _ = reply.send(result);
            }
            MediaCmd::Stop { .. } => {}
            #[cfg(test)]
            MediaCmd::Panic => panic!("injected fault"),
            #[cfg(test)]
            MediaCmd::Stall(d) => std::thread::sleep(d),
        }
    }

    /// Loops a tone toward `side` until the bridge, unless something else is playing there.
    fn play_loop(&mut self, side: Leg, tone: fn() -> Arc<[i16]>) {
        let i = idx(side);
        if let (Prompt::None, Some(remote), None) = (&self.prompt[i], self.remote[i], self.bridged) {
            let player = AnnouncementPlayer::new(tone(), remote.codec, Instant::now());
            self.prompt[i] = Prompt::Loop { player, tone };
        }
    }

    fn start_recording(&mut self, plan: RecordingPlan, now: Instant) -> Recorder {
        let codecs = [
            self.remote[0].map(|r| r.codec).unwrap_or(G711::Pcmu),
            self.remote[1].map(|r| r.codec).unwrap_or(G711::Pcmu),
        ];
        let window = self.settings.reorder_window;
        let location = plan.storage.location(&plan.recording_id);
        let mut rec = Recorder {
            id: plan.recording_id.clone(),
            key_id: plan.key_id.clone(),
            writer: None,
            file: None,
            location,
            tracks: [RecordTrack::new(now, window), RecordTrack::new(now, window)],
            store: plan.store.clone(),
            syncer: plan.syncer.clone(),
            bytes: 0,
            error: None,
            start: now,
            codecs,
            call: self.call.clone(),
            created_at_ms: crate::store::now_ms(),
            key_stored: None,
            held: Vec::new(),
            storage: plan.storage.clone(),
        };
        // The wrapped key goes to the database before any audio reaches a file: a crash can
        // leave a key without audio, never audio without its key. The database may be slow
        // (a busy disk): that must not stall this task's relaying, so another task stores it
        // and sealed chunks wait in memory until it answers.
        let row = RecordingRow {
            recording_id: plan.recording_id.clone(),
            call_id: self.call.clone(),
            location: rec.location.clone(),
            state: "recording".into(),
            bytes: 0,
            sha256: None,
            created_at_ms: rec.created_at_ms,
            finished_at_ms: None,
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let store = plan.store.clone();
        let (id, key_id, wrapped) = (plan.recording_id.clone(), plan.key_id.clone(), plan.wrapped.0.clone());
        tokio::spawn(async move {
            let r = match store.put_recording_key(&id, &key_id, &wrapped).await {
                Err(e) => Err(format!("storing the recording key failed: {e}")),
                Ok(()) => store
                    .upsert_recording(&row)
                    .await
                    .map_err(|e| format!("storing the recording row failed: {e}")),
            };
            let _ = tx.send(r);
        });
        rec.key_stored = Some(rx);
        rec.storage = plan.storage.clone();
        let header = match Header::new(plan.recording_id.clone(), plan.key_id.clone(), crate::store::now_ms(), plan.flush) {
            Ok(h) => h,
            Err(e) => {
                rec.error = Some(format!("random nonce unavailable: {e:?}"));
                return rec;
            }
        };
        rec.writer = Some(RecordingWriter::new(header, &plan.dek, now, plan.flush));
        rec.drain_writer();
        rec
    }

    pub(super) fn on_rtp(&mut self, leg: Leg, pkt: &[u8], src: SocketAddr) {
        let now = Instant::now();
        if rtp::is_rtcp(pkt) {
            // rtcp-mux peers send RTCP on the RTP port.
            self.on_rtcp(leg, pkt, src);
            return;
        }
        let Ok(p) = RtpPacket::parse(pkt) else { return };
        let Some(remote) = self.remote[idx(leg)] else { return };
        let is_audio = p.payload_type() == remote.codec.payload_type();
        let is_event = Some(p.payload_type()) == remote.telephone_event;
        if !is_audio && !is_event {
            return; // comfort noise or an unnegotiated type: neither relayed nor recorded
        }
        self.latched[idx(leg)] = Some(src);
        self.packets[idx(leg)] += 1;
        self.last_rx[idx(leg)] = Some(now);
        if self.bridged.is_none() {
            // Nothing crosses before the bridge and nothing is recorded; the customer's keys
            // are listened to for the consent choice.
            if let (Some(c), Leg::Caller) = (&mut self.consent, leg) {
                c.packet(now, remote.codec, &p, is_event, &mut self.consent_found);
            }
            return;
        }
        // Detectors see every packet before anything is forwarded or recorded.
        let mut action = PacketAction::Pass;
        if let Some(pci) = &mut self.pci {
            pci.detect(now, leg, remote.codec, &p, is_event);
            if leg == Leg::Caller && pci.ctl.config().mask_dtmf_to_agent {
                let kind = if is_event { PacketKind::TelephoneEvent } else { PacketKind::Audio };
                action = mask::decide(pci.ctl.mask_to_agent(now), kind);
            }
        }
        let other = leg.other();
        if let Some(dest) = self.latched[idx(other)].or(self.remote[idx(other)].map(|r| r.rtp)) {
            match action {
                PacketAction::Pass => {
                    let _ = self.socks[idx(other)].rtp.send_to(pkt, dest);
                }
                PacketAction::ReplacePayload => {
                    // The caller is keying: the agent hears comfort noise, never the tones.
                    let mut masked = Vec::with_capacity(p.payload().len());
                    if let Some(pci) = &mut self.pci {
                        pci.masker.fill(p.payload().len(), &mut masked);
                    }
                    self.send_buf.clear();
                    let ok = rtp::write_rtp(&mut self.send_buf, p.marker(), p.payload_type(), p.sequence(),
                        p.timestamp(), p.ssrc(), &masked);
                    if ok.is_ok() {
                        let _ = self.socks[idx(other)].rtp.send_to(&self.send_buf, dest);
                    }
                }
                PacketAction::Drop => {}
            }
        }
        if is_event {
            // Events share the audio's sequence numbers: their slots are not lost audio.
            if let Some(tracks) = &mut self.tracks {
                tracks[idx(leg)].skip(now, p.ssrc(), p.sequence());
            }
            if let Some(rec) = &mut self.recorder {
                match &mut self.pci {
                    Some(pci) => {
                        let d = Delayed { ssrc: p.ssrc(), seq: p.sequence(), ts: p.timestamp(), payload: Vec::new() };
                        if pci.delay.push(now, leg, d).is_err() {
                            pci.overflow += 1;
                        }
                    }
                    None => rec.tracks[idx(leg)].skip(now, p.ssrc(), p.sequence()),
                }
            }
        }
        if is_audio {
            if let Some(tracks) = &mut self.tracks {
                tracks[idx(leg)].push(now, p.ssrc(), p.sequence(), p.timestamp(), p.payload());
            }
            if let Some(rec) = &mut self.recorder {
                match &mut self.pci {
                    // Through the delay line: the pause controller decides before audio is written.
                    Some(pci) => {
                        let track = &mut rec.tracks[idx(leg)];
                        let payload = track.buffer_for(p.payload());
                        let d = Delayed { ssrc: p.ssrc(), seq: p.sequence(), ts: p.timestamp(), payload };
                        if let Err(full) = pci.delay.push(now, leg, d) {
                            pci.overflow += 1;
                            track.recycle(full.item.payload);
                        }
                    }
                    None => {
                        rec.tracks[idx(leg)].push(now, p.ssrc(), p.sequence(), p.timestamp(), p.payload());
                        rec.drain_tracks(now, &|_, _| false);
                    }
                }
            }
        }
    }

    pub(super) fn on_rtcp(&mut self, leg: Leg, pkt: &[u8], src: SocketAddr) {
        if pkt.len() < 8 {
            return;
        }
        self.latched_rtcp[idx(leg)] = Some(src);
        if self.bridged.is_none() {
            return;
        }
        let other = leg.other();
        let dest = self.latched_rtcp[idx(other)].or(self.remote[idx(other)].map(|r| r.rtcp));
        if let Some(dest) = dest {
            let _ = self.socks[idx(other)].rtcp.send_to(pkt, dest);
        }
    }

    pub(super) fn handle_timeout(&mut self, now: Instant) {
        // Prompt frames due now, toward each side.
        let mut announcement_done = None;
        let mut consent_done = false;
        for side in [Leg::Caller, Leg::Agent] {
            let i = idx(side);
            let dest = self.latched[i].or(self.remote[i].map(|r| r.rtp));
            let codec = self.remote[i].map(|r| r.codec);
            let Some(player) = self.prompt[i].player_mut() else { continue };
            while let Some(frame) = player.poll_frame(now) {
                if let (Some(dest), Some(codec)) = (dest, codec) {
                    send_frame(&self.socks[i].rtp, &mut self.send_buf, dest, codec.payload_type(), frame.marker,
                        &mut self.out[i], &frame.payload);
                }
            }
            if !player.is_done() {
                continue;
            }
            match &mut self.prompt[i] {
                Prompt::Announcement { started_ms, .. } => {
                    announcement_done = Some(*started_ms);
                    self.prompt[i] = Prompt::None;
                }
                Prompt::Consent { .. } => {
                    consent_done = true;
                    self.prompt[i] = Prompt::None;
                }
                Prompt::Loop { player, tone } => {
                    if let Some(codec) = codec {
                        *player = AnnouncementPlayer::new(tone(), codec, now);
                    }
                }
                Prompt::None => {}
            }
        }
        if let Some(started_ms) = announcement_done {
            let ev = MediaEvent::AnnouncementDone { call: self.call.clone(), started_ms, ended_ms: crate::store::now_ms() };
            self.emit(ev);
        }
        if consent_done {
            self.emit(MediaEvent::ConsentPromptDone { call: self.call.clone() });
        }
        if let Some(c) = &mut self.consent {
            c.det.events.handle_timeout(now);
            c.poll(&mut self.consent_found);
        }
        for key in std::mem::take(&mut self.consent_found) {
            self.emit(MediaEvent::ConsentKey { call: self.call.clone(), key });
        }
        if self.pci.as_mut().is_some_and(|p| p.ctl.take_record_request()) {
            self.emit(MediaEvent::RecordRequested { call: self.call.clone() });
        }
        if let Some(tracks) = &mut self.tracks {
            for t in tracks.iter_mut() {
                discard_output(t, now);
            }
        }
        self.pci_timeout(now);
        if let Some(rec) = &mut self.recorder {
            let (rec_now, pci) = match &self.pci {
                Some(p) => (now.checked_sub(p.delay.delay()).unwrap_or(now), Some(&p.ctl)),
                None => (now, None),
            };
            rec.drain_tracks(rec_now, &|a, b| pci.is_some_and(|c| c.overlaps_pause(a, b)));
            if let Some(w) = &mut rec.writer {
                w.handle_timeout(now);
            }
            rec.drain_writer();
        }
    }

    /// Keypad protection timers: controller, trackers, pause spans into the recording, and the
    /// delay line releasing audio into the recording tracks.
    fn pci_timeout(&mut self, now: Instant) {
        let Some(pci) = &mut self.pci else { return };
        for leg in [Leg::Caller, Leg::Agent] {
            let events = &mut pci.det[idx(leg)].events;
            events.handle_timeout(now);
            while let Some(ev) = events.poll_event() {
                pci.ctl.handle_rfc4733(leg, ev);
            }
        }
        pci.ctl.handle_timeout(now);
        drain_pauses(pci, &mut self.recorder);
        if let Some(rec) = &mut self.recorder {
            while let Some((captured, leg, d)) = pci.delay.pop(now) {
                d.feed(&mut rec.tracks[idx(leg)], captured);
            }
        }
    }

    pub(super) fn check_media_timeout(&mut self, now: Instant) {
        if self.timed_out || self.bridged.is_none() {
            return;
        }
        for leg in [Leg::Caller, Leg::Agent] {
            let held = self.remote[idx(leg)].is_some_and(|r| r.on_hold);
            let silent = self.last_rx[idx(leg)].is_some_and(|t| now.duration_since(t) > self.settings.timeout);
            if silent && !held {
                self.timed_out = true;
                self.emit(MediaEvent::MediaTimeout { call: self.call.clone(), leg });
                return;
            }
        }
    }

    /// Ends the call's media: reports what is still queued, finishes the recording (file sync
    /// and database: runs on the async runtime, off the media thread), reports `Finished`.
    pub(super) async fn stop(mut self, reason: EndReason) {
        // The sockets go back to the pool now; nothing more is relayed.
        drop(self.socks);
        for ev in std::mem::take(&mut self.pending) {
            let _ = self.events.send(ev).await;
        }
        let now = Instant::now();
        let mut report = MediaReport {
            caller_packets: self.packets[0],
            agent_packets: self.packets[1],
            ..Default::default()
        };
        if let Some(tracks) = &mut self.tracks {
            for t in tracks.iter_mut() {
                t.flush(now);
                discard_output(t, now);
            }
            report.caller_lost = tracks[0].stats().lost;
            report.agent_lost = tracks[1].stats().lost;
        }
        if let Some(pci) = &mut self.pci {
            pci.ctl.finish(now);
            drain_pauses(pci, &mut self.recorder);
            if let Some(rec) = &mut self.recorder {
                for (captured, leg, d) in pci.delay.drain_all() {
                    d.feed(&mut rec.tracks[idx(leg)], captured);
                }
            }
            if pci.overflow > 0 {
                tracing::warn!(call = %self.call, dropped = pci.overflow, "recording delay line overflowed; audio dropped");
            }
            report.pauses = std::mem::take(&mut pci.spans);
        }
        if let Some(mut rec) = self.recorder.take() {
            let ctl = self.pci.as_ref().map(|p| &p.ctl);
            let paused = |a: Instant, b: Instant| ctl.is_some_and(|c| c.overlaps_pause(a, b));
            report.recording = Some(rec.finish(now, reason, &paused).await);
        }
        let ev = MediaEvent::Finished { call: self.call.clone(), report };
        let _ = self.events.send(ev).await;
    }

    /// Queues an event for the signalling task. A call produces a handful (announcement done,
    /// a few keys, a timeout), never one per packet; the cap holds against a peer sending key
    /// events as fast as it can while signalling is stalled.
    fn emit(&mut self, ev: MediaEvent) {
        if self.pending.len() >= MAX_PENDING_EVENTS {
            tracing::warn!(call = %self.call, "signalling is not taking media events; one dropped");
            return;
        }
        self.pending.push_back(ev);
    }

    /// Hands queued events to the (bounded) signalling channel; what does not fit waits for the
    /// next pass. Returns whether some are still waiting.
    pub(super) fn flush_events(&mut self) -> bool {
        while let Some(ev) = self.pending.pop_front() {
            match self.events.try_send(ev) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(ev)) => {
                    self.pending.push_front(ev);
                    return true;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => self.pending.clear(),
            }
        }
        false
    }

    /// The call's sockets, for the media thread's poller.
    pub(super) fn sockets(&self) -> [&UdpSocket; 4] {
        [&self.socks[0].rtp, &self.socks[1].rtp, &self.socks[0].rtcp, &self.socks[1].rtcp]
    }

    /// Whether the call sends from its media thread's shared ports (the thread reads them and
    /// finds the call by the peer's address).
    pub(super) fn on_shared_ports(&self) -> bool {
        self.socks[0].is_shared()
    }

    /// The peers' addresses from SDP, in the order of [`sockets`](Self::sockets): caller RTP,
    /// agent RTP, caller RTCP, agent RTCP. On shared ports a datagram is this call's only if it
    /// comes from one of them. A leg on hold (`0.0.0.0`) or not yet negotiated has none.
    pub(super) fn peer_addrs(&self) -> [Option<SocketAddr>; 4] {
        let addr = |leg: usize, rtcp: bool| {
            self.remote[leg]
                .map(|r| if rtcp { r.rtcp } else { r.rtp })
                .filter(|a| !a.ip().is_unspecified() && a.port() != 0)
        };
        [addr(0, false), addr(1, false), addr(0, true), addr(1, true)]
    }
}

fn send_frame(sock: &UdpSocket, buf: &mut Vec<u8>, dest: SocketAddr, pt: u8, marker: bool, out: &mut OutStream, payload: &[u8]) {
    buf.clear();
    if rtp::write_rtp(buf, marker, pt, out.seq, out.ts, out.ssrc, payload).is_ok() {
        let _ = sock.send_to(buf, dest);
    }
    out.seq = out.seq.wrapping_add(1);
    out.ts = out.ts.wrapping_add(payload.len() as u32);
}

impl Recorder {
    /// Moves track output into the writer; audio whose capture span is `paused` is dropped (the
    /// pause's gap record stands for it).
    fn drain_tracks(&mut self, now: Instant, paused: &dyn Fn(Instant, Instant) -> bool) {
        for leg in [Leg::Caller, Leg::Agent] {
            while let Some(out) = self.tracks[idx(leg)].poll(now) {
                let Some(w) = &mut self.writer else { continue };
                match out {
                    TrackOutput::Audio { pos, payload } => {
                        let from = self.start + Duration::from_micros(pos * 125);
                        let to = from + Duration::from_micros(payload.len() as u64 * 125);
                        if !paused(from, to) {
                            w.push_audio(leg, pos, self.codecs[idx(leg)], &payload);
                        }
                        self.tracks[idx(leg)].recycle(payload);
                    }
                    TrackOutput::Loss { from, to } => w.push_gap(leg, from, to, GapKind::Loss),
                }
            }
        }
    }

    fn pos(&self, t: Instant) -> u64 {
        self.tracks[0].timeline_pos(t)
    }

    /// Takes sealed chunks from the writer; writes them once the key is safely stored.
    fn drain_writer(&mut self) {
        let Some(w) = &mut self.writer else { return };
        while let Some(bytes) = w.poll_output() {
            if self.error.is_none() {
                self.held.push(bytes);
            }
        }
        self.check_key();
        if self.key_stored.is_some() || self.error.is_some() {
            if self.held.len() > MAX_HELD_CHUNKS && self.error.is_none() {
                self.error = Some("the database did not confirm the recording key in time".into());
            }
            if self.error.is_some() {
                self.held.clear();
            }
            return;
        }
        if self.held.is_empty() {
            return;
        }
        let Some(file) = self.file.clone() else {
            // Unreachable by construction: the key is confirmed, so check_key created the file.
            self.error = Some("no recording file after the key was stored".into());
            self.held.clear();
            return;
        };
        let held = std::mem::take(&mut self.held);
        let result = blocking_io(|| {
            let mut n = 0u64;
            for b in &held {
                (&*file).write_all(b)?;
                n += b.len() as u64;
            }
            Ok::<u64, std::io::Error>(n)
        });
        match result {
            Ok(n) => {
                self.bytes += n;
                self.syncer.mark(&self.id, &file);
            }
            Err(e) => self.error = Some(format!("writing the recording failed: {e}")),
        }
    }

    /// Has the database answered for the key? On success the file is created.
    fn check_key(&mut self) {
        let Some(rx) = &mut self.key_stored else { return };
        let answer = match rx.try_recv() {
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => return,
            Ok(r) => r,
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => Err("the key store task ended".into()),
        };
        self.key_stored = None;
        let created = answer.and_then(|()| {
            blocking_io(|| self.storage.create(&self.id))
                .map_err(|e| format!("creating the recording file failed: {e}"))
        });
        match created {
            Ok(f) => self.file = Some(Arc::new(f)),
            Err(e) => self.error = Some(e),
        }
    }

    async fn finish(&mut self, now: Instant, reason: EndReason, paused: &(dyn Fn(Instant, Instant) -> bool + Sync)) -> RecordingResult {
        for t in self.tracks.iter_mut() {
            t.flush(now);
        }
        self.drain_tracks(now, paused);
        let audio_ms = now.duration_since(self.start).as_millis() as u64;
        // At hangup the key may still be on its way to the database: wait for it (bounded).
        if let Some(rx) = self.key_stored.take() {
            let answer = match tokio::time::timeout(Duration::from_secs(30), rx).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err("the key store task ended".into()),
                Err(_) => Err("the database did not confirm the recording key in time".into()),
            };
            let (tx, rx) = tokio::sync::oneshot::channel();
            let _ = tx.send(answer);
            self.key_stored = Some(rx);
            self.drain_writer();
        }
        let mut sha = None;
        if let Some(mut w) = self.writer.take() {
            w.push_end(reason);
            match w.finish() {
                Ok(fin) => {
                    if self.error.is_none() {
                        let written = match self.file.clone() {
                            Some(file) => blocking_io(|| (&*file).write_all(&fin.bytes).and_then(|_| file.sync_data())),
                            None => Err(std::io::Error::other("no recording file after the key was stored")),
                        };
                        match written {
                            Ok(()) => {
                                self.bytes = fin.total_len;
                                sha = Some(fin.sha256.iter().map(|b| format!("{b:02x}")).collect::<String>());
                            }
                            Err(e) => self.error = Some(format!("writing the recording failed: {e}")),
                        }
                    }
                }
                Err(e) => self.error = Some(format!("sealing the recording failed: {e}")),
            }
        }
        let state = if self.error.is_none() { "ok" } else { "failed" };
        let row = RecordingRow {
            recording_id: self.id.clone(),
            call_id: self.call.clone(),
            location: self.location.clone(),
            state: state.into(),
            bytes: self.bytes as i64,
            sha256: sha.clone(),
            created_at_ms: self.created_at_ms,
            finished_at_ms: Some(crate::store::now_ms()),
        };
        if let Err(e) = self.store.upsert_recording(&row).await {
            tracing::warn!(recording = %self.id, error = %e, "could not update the recording row");
        }
        if self.file.is_some() {
            // Sealed and synced (or abandoned): S3 storage uploads it from the spool now.
            self.storage.finished(&self.id);
        }
        if let Some(e) = &self.error {
            tracing::warn!(recording = %self.id, error = %e, "recording failed");
        }
        RecordingResult {
            recording_id: self.id.clone(),
            key_id: self.key_id.clone(),
            state,
            error: self.error.clone(),
            bytes: self.bytes,
            sha256: sha,
            location: self.location.clone(),
            audio_ms,
        }
    }
}


/// A tone cadence as 8 kHz samples: (on, milliseconds) steps of `freqs` summed.
fn cadence(freqs: &[f64], steps: &[(bool, u32)]) -> Arc<[i16]> {
    let total: u32 = steps.iter().map(|(_, ms)| ms * 8).sum();
    let mut out = Vec::with_capacity(total as usize);
    let mut n = 0u32;
    for &(on, ms) in steps {
        for _ in 0..ms * 8 {
            let t = n as f64 / 8000.0;
            let s: f64 = if on { freqs.iter().map(|f| 4000.0 * (2.0 * std::f64::consts::PI * f * t).sin()).sum() } else { 0.0 };
            out.push(s as i16);
            n += 1;
        }
    }
    out.into()
}

/// UK ringback (400 + 450 Hz, 0.4 s on, 0.2 s off, 0.4 s on, 2 s off).
fn ringback() -> Arc<[i16]> {
    static TONE: std::sync::OnceLock<Arc<[i16]>> = std::sync::OnceLock::new();
    TONE.get_or_init(|| cadence(&[400.0, 450.0], &[(true, 400), (false, 200), (true, 400), (false, 2000)])).clone()
}

/// What the agent of an outbound call hears while the customer is told about recording: a
/// short 440 Hz pip every 2 s, unlike ringback so the agent knows the customer has answered.
fn wait_tone() -> Arc<[i16]> {
    static TONE: std::sync::OnceLock<Arc<[i16]>> = std::sync::OnceLock::new();
    TONE.get_or_init(|| cadence(&[440.0], &[(true, 150), (false, 1850)])).clone()
}

/// Ended pauses become gap records on both tracks and spans for the call record.
fn drain_pauses(pci: &mut Pci, recorder: &mut Option<Recorder>) {
    while let Some(ev) = pci.ctl.poll_event() {
        let PauseEvent::PauseEnded { started, at, trigger, resumed_by, digits } = ev else { continue };
        let wall = |t: Instant| {
            let now_i = Instant::now();
            let now_w = crate::store::now_ms();
            if t <= now_i {
                now_w - now_i.duration_since(t).as_millis() as i64
            } else {
                now_w + t.duration_since(now_i).as_millis() as i64
            }
        };
        pci.spans.push(PauseSpan {
            started_ms: wall(started),
            ended_ms: wall(at),
            trigger: trigger.as_str().into(),
            resumed_by: resumed_by.as_str().into(),
            digits,
        });
        if let (Some(rec), Some(kind)) = (recorder.as_mut(), ev.gap_kind()) {
            let (from, to) = (rec.pos(started), rec.pos(at));
            if let Some(w) = &mut rec.writer {
                for leg in [Leg::Caller, Leg::Agent] {
                    w.push_gap(leg, from, to, kind);
                }
            }
        }
    }
}
