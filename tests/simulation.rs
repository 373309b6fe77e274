//! Deterministic simulation of whole calls through the sans-IO B2BUA engine.
//!
//! A caller UA, the gateway engine and an agent UA exchange SIP over a seeded lossy network
//! (loss, jitter, reordering) on a virtual clock: minutes of retransmission timers run in
//! milliseconds, no sockets, no sleeps. The UAs are built from callgate's own transaction layer
//! and dialog builders. Media is a scripted `MediaHost` (the announcement "plays" for 1.5 s of
//! virtual time). Each scenario runs under hundreds of seeds; every run must end with the call
//! record the scenario implies, and the engine must forget the call afterwards.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callgate::call::b2bua::{B2bua, MediaHost, RecordingKeys, Setup};
use callgate::config::Config;
use callgate::ids::CallId;
use callgate::media::announcement::Announcement;
use callgate::media::relay::{MediaCmd, MediaEvent, MediaReport, RecordingResult};
use callgate::recording::keys::Keyring;
use callgate::sip::dialog::{Dialog, Local, UacInvite};
use callgate::sip::message;
use callgate::sip::transaction::{Peer, Transactions, Transport, TxEvent, TxKey};
use callgate::store::CallRecord;
use rsipstack::sip::{Header, Method, Request};

const GW: &str = "127.0.0.1:5070";
const CALLER: &str = "127.0.0.2:5060";
const AGENT: &str = "127.0.0.3:5080";
const SDP: &str = "v=0\r\no=ua 1 1 IN IP4 127.0.0.9\r\ns=-\r\nc=IN IP4 127.0.0.9\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";
const ANNOUNCEMENT: Duration = Duration::from_millis(1500);
/// The engine's wall clock at the start of a run (Unix ms).
const WALL_BASE: i64 = 1_800_000_000_000;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}
fn udp(s: &str) -> Peer {
    Peer { addr: addr(s), transport: Transport::Udp }
}

/// xorshift64*: seeded, reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 10_000) as f64 / 10_000.0 < p
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Datagrams in flight, delivered in time order (ties in send order).
struct Network {
    rng: Rng,
    loss: f64,
    in_flight: BTreeMap<(Instant, u64), (SocketAddr, SocketAddr, Vec<u8>)>,
    seq: u64,
    sent: usize,
    lost: usize,
}

impl Network {
    fn send(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.sent += 1;
        if self.rng.chance(self.loss) {
            self.lost += 1;
            return;
        }
        // 5-80 ms latency: enough spread to reorder back-to-back messages.
        let at = now + Duration::from_millis(5 + self.rng.below(75));
        self.seq += 1;
        self.in_flight.insert((at, self.seq), (from, to, bytes));
    }
    fn next_at(&self) -> Option<Instant> {
        self.in_flight.keys().next().map(|(t, _)| *t)
    }
    fn pop_due(&mut self, now: Instant) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
        let key = *self.in_flight.keys().next()?;
        if key.0 > now {
            return None;
        }
        self.in_flight.remove(&key)
    }
}

/// Scripted media: the announcement takes 1.5 s; Stop reports back 10 ms later.
#[derive(Default)]
struct ScriptedMedia {
    next_port: u16,
    due: Vec<(Instant, MediaEvent)>,
    pending: Vec<(CallId, MediaCmd)>,
    recording: HashMap<CallId, RecordingResult>,
    /// What the media threads report of their load, thousandths.
    load: u32,
}

impl MediaHost for ScriptedMedia {
    fn load_permille(&self) -> u32 {
        self.load
    }
    fn open(&mut self, _call: &CallId) -> Option<(u16, u16)> {
        self.next_port += 4;
        Some((20000 + self.next_port, 20002 + self.next_port))
    }
    fn command(&mut self, call: &CallId, cmd: MediaCmd) {
        self.pending.push((call.clone(), cmd));
    }
    fn bridge(&mut self, call: &CallId, recording: Option<RecordingKeys>) {
        if let Some(k) = recording {
            let result = RecordingResult {
                recording_id: k.recording_id,
                key_id: k.key_id,
                state: "ok",
                error: None,
                bytes: 1000,
                sha256: None,
                location: "sim".into(),
                audio_ms: 1,
            };
            self.recording.insert(call.clone(), result);
        }
    }
    fn start_recording(&mut self, call: &CallId, recording: RecordingKeys) {
        self.bridge(call, Some(recording));
    }
}

impl ScriptedMedia {
    fn schedule(&mut self, now: Instant) {
        for (call, cmd) in self.pending.drain(..) {
            match cmd {
                MediaCmd::PlayAnnouncement(_) => {
                    // The media thread stamps the prompt with the system clock, which need not
                    // agree with the engine's: here it runs an hour ahead (a stepped clock). The
                    // record must still show the prompt ending no later than the bridge.
                    let ahead = WALL_BASE + 3_600_000;
                    let started_ms = ahead - ANNOUNCEMENT.as_millis() as i64;
                    let ev = MediaEvent::AnnouncementDone { call, started_ms, ended_ms: ahead };
                    self.due.push((now + ANNOUNCEMENT, ev));
                }
                MediaCmd::Stop { .. } => {
                    let report = MediaReport { recording: self.recording.remove(&call), ..Default::default() };
                    self.due.push((now + Duration::from_millis(10), MediaEvent::Finished { call, report }));
                }
                _ => {}
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Scenario {
    /// The caller hangs up 5 s after the answer.
    CallerHangsUp,
    /// The agent hangs up 4 s after it answered.
    AgentHangsUp,
    /// The agent answers 486.
    Busy,
    /// The caller CANCELs 2.5 s in, while the agent rings.
    Cancel,
}

/// A caller phone: our own transaction layer and dialog builders, driven by the simulation.
struct CallerUa {
    txs: Transactions,
    uac: UacInvite,
    invite_key: TxKey,
    answered_at: Option<Instant>,
    final_status: Option<u16>,
    /// A provisional arrived: only then may a CANCEL be sent (RFC 3261 §9.1).
    provisional: bool,
    bye_sent: bool,
    cancel_sent: bool,
    got_bye: bool,
    done: bool,
}

/// An agent phone.
struct AgentUa {
    txs: Transactions,
    scenario: Scenario,
    invite: Option<(TxKey, Request)>,
    invite_at: Option<Instant>,
    dialog: Option<Dialog>,
    answered_at: Option<Instant>,
    bye_sent: bool,
    got_cancel: bool,
    got_bye: bool,
}

struct World {
    start: Instant,
    now: Instant,
    net: Network,
    gw: B2bua<ScriptedMedia>,
    caller: CallerUa,
    agent: AgentUa,
    records: Vec<CallRecord>,
}

fn gateway(now: Instant, dir: &Path) -> B2bua<ScriptedMedia> {
    gateway_with(now, dir, "")
}

/// The gateway with `media` added to its `[media]` section.
fn gateway_with(now: Instant, dir: &Path, media: &str) -> B2bua<ScriptedMedia> {
    let toml = format!(
        "[sip]\nlisten = \"{GW}\"\nadvertise = \"127.0.0.1\"\ntrusted = [\"127.0.0.0/8\"]\n\
         [media]\nadvertise = \"127.0.0.1\"\n{media}\n\
         [[route]]\nmatch = \"2001\"\ntarget = \"sip:agent@{AGENT}\"\nannouncement = \"notice.wav\"\n\
         [call]\nagent_answer_timeout = \"20s\"\n"
    );
    let config = Config::parse(&toml, Path::new("sim.toml")).unwrap();
    let keyring = Keyring::create(&dir.join(format!("kek-{}.key", callgate::ids::random_hex(6)))).unwrap();
    let mut announcements = HashMap::new();
    announcements.insert(
        "notice.wav".into(),
        Ok(Arc::new(Announcement::from_samples_8k(vec![0; 12_000]))),
    );
    let mut targets = HashMap::new();
    targets.insert(format!("sip:agent@{AGENT}"), Some(addr(AGENT)));
    B2bua::new(Setup {
        config: Arc::new(config),
        local: Local { advertise: "127.0.0.1".parse().unwrap(), port: 5070 },
        keyring: Arc::new(keyring),
        announcements,
        targets,
        host: ScriptedMedia::default(),
        base: (now, WALL_BASE),
    })
}

impl World {
    fn new(seed: u64, scenario: Scenario, loss: f64, dir: &Path) -> World {
        let now = Instant::now();
        let mut caller_txs = Transactions::new();
        let local = Local { advertise: "127.0.0.2".parse().unwrap(), port: 5060 };
        let uac = UacInvite::new(&local, &format!("sip:2001@{GW}"), "07700900123", udp(GW), SDP, vec![]);
        let invite_key = caller_txs.send_request(now, uac.invite.clone(), udp(GW));
        World {
            start: now,
            now,
            net: Network { rng: Rng(seed | 1), loss, in_flight: BTreeMap::new(), seq: 0, sent: 0, lost: 0 },
            gw: gateway(now, dir),
            caller: CallerUa {
                txs: caller_txs,
                uac,
                invite_key,
                answered_at: None,
                final_status: None,
                provisional: false,
                bye_sent: false,
                cancel_sent: false,
                got_bye: false,
                done: false,
            },
            agent: AgentUa {
                txs: Transactions::new(),
                scenario,
                invite: None,
                invite_at: None,
                dialog: None,
                answered_at: None,
                bye_sent: false,
                got_cancel: false,
                got_bye: false,
            },
            records: vec![],
        }
    }

    /// Moves every output onto the network and every due event into its node.
    fn step(&mut self) {
        let now = self.now;
        let caller_local = Local { advertise: "127.0.0.2".parse().unwrap(), port: 5060 };
        let agent_local = Local { advertise: "127.0.0.3".parse().unwrap(), port: 5080 };
        while let Some((from, to, bytes)) = self.net.pop_due(now) {
            if to == addr(GW) {
                self.gw.handle_bytes(now, &bytes, Peer { addr: from, transport: Transport::Udp });
            } else {
                let msg = message::parse(&bytes, 65_535).expect("the gateway sends well-formed SIP");
                let peer = Peer { addr: from, transport: Transport::Udp };
                if to == addr(CALLER) {
                    self.caller.txs.handle_incoming(now, msg, peer);
                } else {
                    self.agent.txs.handle_incoming(now, msg, peer);
                }
            }
        }
        self.gw.handle_timeout(now);
        self.caller.txs.handle_timeout(now);
        self.agent.txs.handle_timeout(now);
        let due: Vec<MediaEvent> = {
            let host = self.gw.host_mut();
            host.schedule(now);
            let (ready, later): (Vec<_>, Vec<_>) = host.due.drain(..).partition(|(t, _)| *t <= now);
            host.due = later;
            ready.into_iter().map(|(_, e)| e).collect()
        };
        for ev in due {
            self.gw.handle_media(now, ev);
        }
        self.caller_logic(&caller_local);
        self.agent_logic(&agent_local);
        while let Some(t) = self.gw.poll_transmit() {
            self.net.send(now, addr(GW), t.peer.addr, t.bytes);
        }
        while let Some(t) = self.caller.txs.poll_transmit() {
            self.net.send(now, addr(CALLER), t.peer.addr, t.bytes);
        }
        while let Some(t) = self.agent.txs.poll_transmit() {
            self.net.send(now, addr(AGENT), t.peer.addr, t.bytes);
        }
        while let Some(r) = self.gw.poll_record() {
            self.records.push(r);
        }
    }

    fn caller_logic(&mut self, local: &Local) {
        let now = self.now;
        let c = &mut self.caller;
        while let Some(ev) = c.txs.poll_event() {
            match ev {
                TxEvent::Response { key, resp } if key == c.invite_key => {
                    let status = resp.status_code.code();
                    c.provisional |= status < 200;
                    if (200..300).contains(&status) {
                        if c.answered_at.is_none() {
                            c.uac.confirm(&resp);
                            c.answered_at = Some(now);
                            c.final_status = Some(status);
                        }
                        let ack = c.uac.dialog.ack(local, c.uac.invite_seq);
                        c.txs.send_ack_2xx(&key, ack, udp(GW));
                    } else if status >= 300 {
                        c.final_status = Some(status);
                        c.done = true;
                    }
                }
                TxEvent::Response { resp, .. } => {
                    if message::cseq(&resp).1 == Method::Bye && resp.status_code.code() == 200 {
                        c.done = true;
                    }
                }
                TxEvent::Request { key, req, .. } => {
                    if req.method == Method::Bye {
                        c.got_bye = true;
                        c.done = true;
                    }
                    let resp = message::response(&req, 200, None, vec![], None);
                    c.txs.send_response(now, &key, resp);
                }
                _ => {}
            }
        }
        let scenario = self.agent.scenario;
        if scenario == Scenario::CallerHangsUp && !c.bye_sent {
            if let Some(t) = c.answered_at {
                if now >= t + Duration::from_secs(5) {
                    c.bye_sent = true;
                    let (bye, _) = c.uac.dialog.request(local, Method::Bye, vec![], None);
                    c.txs.send_request(now, bye, udp(GW));
                }
            }
        }
        let may_cancel = c.provisional && c.answered_at.is_none() && c.final_status.is_none();
        if scenario == Scenario::Cancel && !c.cancel_sent && may_cancel {
            if now >= self.start + Duration::from_millis(2500) {
                c.cancel_sent = true;
                c.txs.send_request(now, c.uac.cancel(), udp(GW));
            }
        }
    }

    fn agent_logic(&mut self, local: &Local) {
        let now = self.now;
        let a = &mut self.agent;
        while let Some(ev) = a.txs.poll_event() {
            match ev {
                TxEvent::Request { key, req, peer } => match req.method {
                    Method::Invite if a.invite.is_none() => {
                        let ringing = message::response(&req, 180, Some("agenttag"), vec![], None);
                        a.txs.send_response(now, &key, ringing);
                        a.invite = Some((key, req.clone()));
                        a.invite_at = Some(now);
                        a.dialog = Some(Dialog::uas(&req, "agenttag", peer));
                    }
                    Method::Bye => {
                        a.got_bye = true;
                        let resp = message::response(&req, 200, None, vec![], None);
                        a.txs.send_response(now, &key, resp);
                    }
                    _ => {
                        let resp = message::response(&req, 200, None, vec![], None);
                        a.txs.send_response(now, &key, resp);
                    }
                },
                TxEvent::Cancelled { invite } => {
                    a.got_cancel = true;
                    if let Some((k, req)) = &a.invite {
                        if *k == invite {
                            let resp = message::response(req, 487, Some("agenttag"), vec![], None);
                            a.txs.send_response(now, k, resp);
                        }
                    }
                }
                _ => {}
            }
        }
        // Answer (or refuse) 1 s after the INVITE arrived: while the announcement still plays.
        if let (Some((key, req)), Some(at)) = (a.invite.clone(), a.invite_at) {
            if a.answered_at.is_none() && !a.got_cancel && now >= at + Duration::from_secs(1) {
                let status = if a.scenario == Scenario::Busy { 486 } else { 200 };
                let contact = Header::Contact(rsipstack::sip::Contact::from(format!("<sip:agent@{AGENT}>")));
                let sdp = (status == 200).then_some(SDP);
                // The agent rings forever in the cancel scenario.
                if a.scenario != Scenario::Cancel {
                    a.answered_at = Some(now);
                    let resp = message::response(&req, status, Some("agenttag"), vec![contact], sdp);
                    a.txs.send_response(now, &key, resp);
                }
            }
        }
        if a.scenario == Scenario::AgentHangsUp && !a.bye_sent {
            if let (Some(t), Some(d)) = (a.answered_at, a.dialog.as_mut()) {
                if now >= t + Duration::from_secs(4) {
                    a.bye_sent = true;
                    let (bye, _) = d.request(local, Method::Bye, vec![], None);
                    a.txs.send_request(now, bye, udp(GW));
                }
            }
        }
    }

    fn next_time(&self) -> Option<Instant> {
        let media = self.gw.host().due.iter().map(|(t, _)| *t).min();
        [
            self.net.next_at(),
            self.gw.poll_timeout(),
            self.caller.txs.poll_timeout(),
            self.agent.txs.poll_timeout(),
            media,
            // UA-level timers: hang-up and cancel moments.
            self.caller.answered_at.map(|t| t + Duration::from_secs(5)),
            self.agent.answered_at.map(|t| t + Duration::from_secs(4)),
            self.agent.invite_at.map(|t| t + Duration::from_secs(1)),
            Some(self.start + Duration::from_millis(2500)),
        ]
        .into_iter()
        .flatten()
        .filter(|t| *t > self.now)
        .min()
    }
}

/// Runs one call to the end (or 3 virtual minutes) and returns the world for inspection.
fn run(seed: u64, scenario: Scenario, loss: f64, dir: &Path) -> World {
    let mut w = World::new(seed, scenario, loss, dir);
    let end = w.start + Duration::from_secs(180);
    loop {
        w.step();
        match w.next_time() {
            Some(t) if t <= end => w.now = t,
            _ => break,
        }
    }
    w
}

fn check(seed: u64, scenario: Scenario, w: &World) {
    let ctx = format!("seed {seed} {scenario:?}: {} of {} datagrams lost", w.net.lost, w.net.sent);
    let last = w.records.last().unwrap_or_else(|| panic!("{ctx}: no call record"));
    assert!(last.ended_at_ms.is_some(), "{ctx}: the last record is not final: {last:?}");
    // One call, and the engine forgot it (and every transaction) once the linger time passed.
    assert!(w.records.iter().all(|r| r.call_id == last.call_id), "{ctx}");
    assert_eq!(w.gw.tracked(), (0, 0), "{ctx}: engine still tracks the call");
    assert_eq!(w.gw.live_calls(), 0, "{ctx}");
    let c = &w.caller;
    let a = &w.agent;
    match scenario {
        Scenario::CallerHangsUp | Scenario::AgentHangsUp => {
            assert_eq!(c.final_status, Some(200), "{ctx}");
            assert!(a.got_bye || scenario == Scenario::AgentHangsUp, "{ctx}: agent never got the BYE");
            assert!(c.got_bye || scenario == Scenario::CallerHangsUp, "{ctx}: caller never got the BYE");
            let side = if scenario == Scenario::CallerHangsUp { "caller" } else { "agent" };
            assert_eq!(last.hangup_side.as_deref(), Some(side), "{ctx}: {last:?}");
            assert_eq!(last.hangup_cause.as_deref(), Some("normal"), "{ctx}: {last:?}");
            assert_eq!(last.recording_state, "ok", "{ctx}: {last:?}");
            assert_eq!(last.announcement_state, "played", "{ctx}: {last:?}");
            // Recording starts only after the announcement played in full.
            let (ann_end, bridged) = (last.announcement_ended_at_ms, last.bridged_at_ms);
            assert!(ann_end.is_some() && bridged >= ann_end, "{ctx}: bridged before the prompt ended: {last:?}");
            // Moved back onto the engine's clock with its length kept.
            let ann_start = last.announcement_started_at_ms;
            assert_eq!(ann_end.zip(ann_start).map(|(e, s)| e - s), Some(1500), "{ctx}: {last:?}");
        }
        Scenario::Busy => {
            assert_eq!(c.final_status, Some(486), "{ctx}");
            assert_eq!(last.final_status, Some(486), "{ctx}: {last:?}");
            assert_eq!(last.hangup_cause.as_deref(), Some("busy"), "{ctx}: {last:?}");
            assert!(last.answered_at_ms.is_none(), "{ctx}");
        }
        Scenario::Cancel => {
            assert_eq!(c.final_status, Some(487), "{ctx}");
            assert!(a.got_cancel, "{ctx}: the agent leg was never cancelled");
            assert_eq!(last.hangup_cause.as_deref(), Some("cancelled"), "{ctx}: {last:?}");
            assert_eq!(last.final_status, Some(487), "{ctx}: {last:?}");
        }
    }
}

fn sweep(scenario: Scenario, loss: f64, seeds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut lost = 0;
    for seed in 1..=seeds {
        let w = run(seed * 7919, scenario, loss, dir.path());
        lost += w.net.lost;
        check(seed, scenario, &w);
    }
    // The network really was lossy (a sweep without loss would prove less than it claims).
    if loss > 0.0 {
        assert!(lost > seeds as usize, "only {lost} datagrams lost over {seeds} runs");
    }
}

#[test]
fn calls_survive_a_lossless_network() {
    for s in [Scenario::CallerHangsUp, Scenario::AgentHangsUp, Scenario::Busy, Scenario::Cancel] {
        sweep(s, 0.0, 5);
    }
}

#[test]
fn caller_hangup_survives_20_percent_loss() {
    sweep(Scenario::CallerHangsUp, 0.2, 150);
}

#[test]
fn agent_hangup_survives_20_percent_loss() {
    sweep(Scenario::AgentHangsUp, 0.2, 150);
}

#[test]
fn busy_survives_20_percent_loss() {
    sweep(Scenario::Busy, 0.2, 150);
}

#[test]
fn cancel_survives_20_percent_loss() {
    sweep(Scenario::Cancel, 0.2, 150);
}

/// The gateway's first response to a fresh INVITE from the caller for `user`.
fn first_response(gw: &mut B2bua<ScriptedMedia>, now: Instant, user: &str) -> String {
    let local = Local { advertise: "127.0.0.2".parse().unwrap(), port: 5060 };
    let uac = UacInvite::new(&local, &format!("sip:{user}@{GW}"), "07700900123", udp(GW), SDP, vec![]);
    gw.handle_bytes(now, &uac.invite.to_bytes(), udp(CALLER));
    let t = gw.poll_transmit().expect("a response");
    assert_eq!(t.peer.addr, addr(CALLER));
    String::from_utf8(t.bytes).unwrap()
}

#[test]
fn unknown_number_gets_404_with_its_reason_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let mut gw = gateway(now, dir.path());
    let text = first_response(&mut gw, now, "9999");
    assert!(text.starts_with("SIP/2.0 404"), "{text}");
    assert!(text.contains("Warning: 399 callgate \"no route for the dialled number\""), "{text}");
    assert_eq!(gw.tracked().0, 0, "no call is created for a refused INVITE");
    assert!(gw.poll_record().is_none(), "no call record for a refused INVITE");
}

#[test]
fn overloaded_media_refuses_new_calls_with_503_and_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let mut gw = gateway(now, dir.path());
    // 95 % busy against the default limit of 90 %.
    gw.host_mut().load = 950;
    let text = first_response(&mut gw, now, "2001");
    assert!(text.starts_with("SIP/2.0 503"), "{text}");
    assert!(text.contains("Warning: 399 callgate \"media overloaded\""), "{text}");
    assert!(text.contains("Retry-After: 1"), "{text}");
    assert_eq!(gw.tracked().0, 0, "no call is created for a refused INVITE");
    assert_eq!(gw.host_mut().next_port, 0, "no media was opened");
    assert!(gw.poll_record().is_none(), "no call record for a refused INVITE");
    // Below the limit the same INVITE is taken.
    gw.host_mut().load = 850;
    let text = first_response(&mut gw, now, "2001");
    assert!(!text.starts_with("SIP/2.0 5"), "{text}");
    assert_eq!(gw.tracked().0, 1);
    assert_ne!(gw.host_mut().next_port, 0, "media was opened");
}

#[test]
fn max_load_100_never_refuses_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let mut gw = gateway_with(now, dir.path(), "max_load = 100");
    gw.host_mut().load = 1000;
    let text = first_response(&mut gw, now, "2001");
    assert!(!text.starts_with("SIP/2.0 5"), "{text}");
    assert_eq!(gw.tracked().0, 1);
}
