//! The B2BUA engine, sans-IO: SIP transactions, dialogs and every call's state machine.
//!
//! It is fed SIP bytes, media events and time ([`B2bua::handle_bytes`],
//! [`B2bua::handle_media`], [`B2bua::handle_timeout`]) and produces bytes to send
//! ([`B2bua::poll_transmit`]), call records to store ([`B2bua::poll_record`]) and media commands
//! through the [`MediaHost`] it owns. It never reads a clock: `now` comes with every input and
//! wall-clock times on records derive from the `(Instant, Unix ms)` base given at construction.
//! `serve` runs it over real sockets; `tests/simulation.rs` runs it over a lossy virtual network.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rsipstack::sip::{self as rsip, Header, HeadersExt, Method, Request, SipMessage};

use crate::call::{Call, CallDirection, CallPolicy, Command, HangupCause, Input, RecordPolicy, StartRefused};
use crate::config::{Config, Route};
use crate::ids::{CallId, KeyId, Leg, RecordingId, random_hex};
use crate::media::announcement::Announcement;
use crate::media::g711::G711;
use crate::media::relay::{MediaCmd, MediaEvent, Remote};
use crate::media::sdp::{self, BuildSdp, Direction, SessionMedia};
use crate::pii::{PeerAddr, PhoneNumber};
use crate::recording::container::EndReason;
use crate::recording::keys::{Dek, Keyring, WrappedDek};
use crate::sip::dialog::{Dialog, Local, UacInvite};
use crate::sip::message;
use crate::sip::transaction::{Peer, Transactions, Transmit, Transport, TxEvent, TxKey};
use crate::store::{CallRecord, announcement_state, consent_state, recording_state};

/// The media side of calls, as the engine sees it. `serve` binds sockets and runs relay tasks;
/// a simulation records the commands and answers with scripted events.
pub trait MediaHost {
    /// Allocates media for a new call: our RTP ports toward the caller and the agent.
    fn open(&mut self, call: &CallId) -> Option<(u16, u16)>;
    /// A command for the call's media (after `Stop` the call's media is gone).
    fn command(&mut self, call: &CallId, cmd: MediaCmd);
    /// Connect the legs; record with these keys when given.
    fn bridge(&mut self, call: &CallId, recording: Option<RecordingKeys>);
    /// Start recording a bridged call now (on-demand lines).
    fn start_recording(&mut self, call: &CallId, recording: RecordingKeys);
    /// How busy the media a new call would get is, in thousandths of its time (admission
    /// control, `media.max_load`); 0 where nothing is measured.
    fn load_permille(&self) -> u32 {
        0
    }
}

/// A recording starts now (at the bridge or on demand): its identity on the call record, or why
/// it could not start.
fn note_recording_start(record: &mut CallRecord, plan: Option<&RecordingKeys>, wall: i64) {
    match plan {
        Some(p) => {
            record.recording_id = Some(p.recording_id.clone());
            record.key_id = Some(p.key_id.clone());
            record.recording_state = recording_state::RECORDING.into();
            record.recording_started_at_ms = Some(wall);
        }
        None => {
            record.recording_state = recording_state::FAILED.into();
            record.recording_error = Some("no data key could be made".into());
        }
    }
}

/// The media side a SIP leg is on. Media, recordings and call records speak of roles: `Caller`
/// is the customer, `Agent` the staff member. For an outbound call the SIP caller is the agent,
/// so the roles swap (the mapping is its own inverse).
fn side(direction: CallDirection, sip_leg: Leg) -> Leg {
    match direction {
        CallDirection::Inbound => sip_leg,
        CallDirection::Outbound => sip_leg.other(),
    }
}

/// A fresh recording's identity and keys (the wrapped DEK goes to the database).
pub struct RecordingKeys {
    pub recording_id: RecordingId,
    pub key_id: KeyId,
    pub dek: Dek,
    pub wrapped: WrappedDek,
}

/// What the engine is built from.
pub struct Setup<H> {
    pub config: Arc<Config>,
    /// Our SIP address as advertised (port from the bound socket).
    pub local: Local,
    pub keyring: Arc<Keyring>,
    /// Loaded announcements and consent prompts by path (an error is a reason to fail closed).
    pub announcements: HashMap<PathBuf, Result<Arc<Announcement>, String>>,
    /// Route targets resolved to addresses (`None`: unresolvable, calls get 503).
    pub targets: HashMap<String, Option<SocketAddr>>,
    pub host: H,
    /// The clock base: an instant and the Unix ms at that instant.
    pub base: (Instant, i64),
}

impl<H: MediaHost> B2bua<H> {
    pub fn new(s: Setup<H>) -> Self {
        B2bua {
            cfg: s.config,
            local: s.local,
            txs: Transactions::new(),
            calls: HashMap::new(),
            by_sip_call_id: HashMap::new(),
            client_txs: HashMap::new(),
            server_txs: HashMap::new(),
            reinvite_requests: HashMap::new(),
            announcements: s.announcements,
            targets: s.targets,
            keyring: s.keyring,
            host: s.host,
            records: VecDeque::new(),
            draining: false,
            now: s.base.0,
            base: s.base,
        }
    }

    /// Bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.txs.poll_transmit()
    }

    /// A call record to write (in order; the last one of a call is complete).
    pub fn poll_record(&mut self) -> Option<CallRecord> {
        self.records.pop_front()
    }

    /// The media host (the shell routes media events back through it).
    pub fn host_mut(&mut self) -> &mut H {
        &mut self.host
    }

    pub fn host(&self) -> &H {
        &self.host
    }

    /// Calls still tracked (finished ones linger to absorb retransmissions) and live
    /// transactions: both zero once the engine has forgotten everything.
    pub fn tracked(&self) -> (usize, usize) {
        (self.calls.len(), self.txs.len())
    }

    /// A TCP connection closed: its pending transactions fail now.
    pub fn transport_failed(&mut self, now: Instant, peer: Peer) {
        self.now = now;
        self.txs.transport_failed(peer);
        self.tx_events();
    }

    /// Begins a graceful drain: new calls get 503, calls up are ended.
    pub fn shutdown(&mut self, now: Instant) {
        self.now = now;
        if self.draining {
            return;
        }
        self.draining = true;
        let ids: Vec<CallId> = self.calls.keys().cloned().collect();
        for id in ids {
            self.feed(&id, Input::Shutdown);
        }
    }

    /// True once draining and no call's media is still running.
    pub fn is_drained(&self) -> bool {
        self.draining && self.calls.values().all(|c| c.media_done)
    }

    /// Calls not yet finished.
    pub fn live_calls(&self) -> usize {
        self.calls.values().filter(|c| c.finished_at.is_none()).count()
    }

    /// Records of calls whose media never reported (used when a drain gives up).
    pub fn abandon(&mut self) -> Vec<CallRecord> {
        let out = self.calls.drain().filter(|(_, c)| !c.media_done).map(|(_, c)| c.record).collect();
        self.by_sip_call_id.clear();
        out
    }

    /// Starts recording an on-demand call now; `by` says who asked (`api:<token>`,
    /// `agent-keys`) and goes on the call record.
    pub fn start_recording(&mut self, now: Instant, id: &CallId, by: &str) -> Result<(), StartRefused> {
        self.now = now;
        let ctx = self.calls.get_mut(id).ok_or(StartRefused::UnknownCall)?;
        ctx.call.start_recording()?;
        ctx.record.recording_started_by = Some(by.to_string());
        tracing::info!(call = %id, by, "on-demand recording started");
        self.drain_commands(id);
        Ok(())
    }

    fn wall_ms(&self) -> i64 {
        self.base.1 + self.now.saturating_duration_since(self.base.0).as_millis() as i64
    }

}

/// What a client transaction of ours was for.
#[derive(Clone, Copy, Debug)]
enum ClientPurpose {
    AgentInvite,
    Reinvite(Leg),
    Other,
}

/// What a server transaction is for (INVITEs awaiting our answer).
#[derive(Clone, Copy, Debug)]
enum ServerPurpose {
    CallerInvite,
    Reinvite,
}

struct CallCtx {
    call: Call,
    record: CallRecord,
    /// The caller's INVITE server transaction and request.
    caller_invite: (TxKey, Request),
    caller: Dialog,
    agent: Option<UacInvite>,
    agent_peer: Option<Peer>,
    /// Our RTP ports toward the caller and the agent.
    ports: (u16, u16),
    /// The last SDP offer each leg made (our answers mirror its m-lines).
    last_offer: [Option<SessionMedia>; 2],
    /// Where each leg's media goes, as last told to the media task.
    remotes: [Option<Remote>; 2],
    /// A codec change offered in a re-INVITE, committed when the other leg accepts it.
    pending_codec: Option<G711>,
    codec: G711,
    telephone_event: Option<u8>,
    session_id: u64,
    sdp_version: [u64; 2],
    /// Direction each leg last offered.
    offered_dir: [Direction; 2],
    pending_reinvite: [Option<TxKey>; 2],
    route: Route,
    direction: CallDirection,
    announcement: Option<Result<Arc<Announcement>, String>>,
    consent_prompt: Option<Result<Arc<Announcement>, String>>,
    /// The announcement was asked to play (an outbound customer who never answered heard none).
    announcement_started: bool,
    /// Set when the core finished; the entry lingers to absorb late messages.
    finished_at: Option<Instant>,
    media_done: bool,
}

pub struct B2bua<H: MediaHost> {
    cfg: Arc<Config>,
    local: Local,
    txs: Transactions,
    calls: HashMap<CallId, CallCtx>,
    /// SIP Call-ID (either leg) → call and leg.
    by_sip_call_id: HashMap<String, (CallId, Leg)>,
    client_txs: HashMap<TxKey, (CallId, ClientPurpose)>,
    server_txs: HashMap<TxKey, (CallId, ServerPurpose)>,
    /// re-INVITEs awaiting the other leg's answer (needed to build our response).
    reinvite_requests: HashMap<TxKey, Request>,
    announcements: HashMap<PathBuf, Result<Arc<Announcement>, String>>,
    targets: HashMap<String, Option<SocketAddr>>,
    keyring: Arc<Keyring>,
    host: H,
    records: VecDeque<CallRecord>,
    draining: bool,
    /// The time of the input being handled (set by every entry point; cores never read a clock).
    now: Instant,
    /// Wall clock at `base.0`, for the Unix-ms times on call records.
    base: (Instant, i64),
}

/// How long a finished call's entry stays to absorb retransmissions and racing responses.
const LINGER: Duration = Duration::from_secs(32);

impl<H: MediaHost> B2bua<H> {
    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let calls = self.calls.values().filter_map(|c| {
            let linger = c.finished_at.map(|t| t + LINGER);
            match (c.call.poll_timeout(), linger) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        });
        calls.chain(self.txs.poll_timeout()).min()
    }

    /// Runs due timers (transactions, calls, lingering entries).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        self.txs.handle_timeout(now);
        let due: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| c.call.poll_timeout().is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for id in due {
            if let Some(ctx) = self.calls.get_mut(&id) {
                ctx.call.handle_timeout(now);
            }
            self.drain_commands(&id);
        }
        let expired: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| c.media_done && c.finished_at.is_some_and(|t| now >= t + LINGER))
            .map(|(k, _)| k.clone())
            .collect();
        for id in expired {
            self.remove_call(&id);
        }
        self.tx_events();
    }

    fn remove_call(&mut self, id: &CallId) {
        if let Some(ctx) = self.calls.remove(id) {
            self.by_sip_call_id.remove(&ctx.caller.call_id);
            if let Some(a) = &ctx.agent {
                self.by_sip_call_id.remove(&a.dialog.call_id);
            }
            self.client_txs.retain(|_, (c, _)| c != id);
            let gone: Vec<TxKey> =
                self.server_txs.iter().filter(|(_, (c, _))| c == id).map(|(k, _)| k.clone()).collect();
            for k in gone {
                self.server_txs.remove(&k);
                self.reinvite_requests.remove(&k);
            }
        }
    }

    /// A SIP message (datagram or framed stream message) from `peer`.
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8], peer: Peer) {
        self.now = now;
        match message::parse(bytes, self.cfg.sip.max_message_size) {
            Ok(msg) => {
                if let SipMessage::Request(req) = &msg {
                    if let Some(status) = self.screen(req, peer) {
                        let resp = message::response(req, status, None, vec![], None);
                        self.txs.send_raw(peer, resp.to_bytes());
                                        return;
                    }
                }
                self.txs.handle_incoming(now, msg, peer);
                self.tx_events();
            }
            Err(e) => {
                let (status, reason) = e.status();
                tracing::info!(peer = %PeerAddr(peer.addr), error = %e, "malformed SIP message");
                if let Some(reply) = message::lenient_reply(bytes, status, reason) {
                    self.txs.send_raw(peer, reply);
                }
            }
        }
    }

    /// The trunk ACL: out-of-dialog requests only from trusted networks. In-dialog requests
    /// (a BYE from the agent's PBX) are let through when they name a dialog we hold.
    fn screen(&self, req: &Request, peer: Peer) -> Option<u16> {
        let known = self.by_sip_call_id.contains_key(&message::call_id(req));
        if known {
            return None;
        }
        let from = self.cfg.sources(peer.addr.ip());
        let trusted = from.inbound || from.outbound;
        if !trusted && req.method != Method::Ack {
            tracing::info!(peer = %PeerAddr(peer.addr), "request from an untrusted source refused");
            return Some(403);
        }
        None
    }

    fn tx_events(&mut self) {
        while let Some(ev) = self.txs.poll_event() {
            match ev {
                TxEvent::Request { key, req, peer } => self.on_request(key, req, peer),
                TxEvent::Cancelled { invite } => {
                    if let Some((id, ServerPurpose::CallerInvite)) = self.server_txs.get(&invite).cloned() {
                        self.feed(&id, Input::CallerCancel);
                    }
                }
                TxEvent::AckFor2xx { invite, .. } => {
                    if let Some((id, ServerPurpose::CallerInvite)) = self.server_txs.get(&invite).cloned() {
                        self.feed(&id, Input::CallerAck);
                    }
                }
                TxEvent::Response { key, resp } => self.on_response(key, resp),
                TxEvent::Timeout { key } => {
                    if let Some((id, purpose)) = self.client_txs.get(&key).cloned() {
                        match purpose {
                            ClientPurpose::AgentInvite => self.feed(&id, Input::AgentUnreachable),
                            ClientPurpose::Reinvite(leg) => self.feed(&id, Input::ReinviteAnswered { leg, status: 408 }),
                            ClientPurpose::Other => {}
                        }
                    }
                }
                TxEvent::AckTimeout { invite } => {
                    if let Some((id, ServerPurpose::CallerInvite)) = self.server_txs.get(&invite).cloned() {
                        tracing::info!(call = %id, "caller never ACKed our 200; ending the call");
                        self.feed(&id, Input::MediaTimeout(Leg::Caller));
                    }
                }
            }
        }
    }

    fn respond(&mut self, key: &TxKey, req: &Request, status: u16, tag: Option<&str>, sdp: Option<&str>) {
        let mut extra = vec![];
        if (200..300).contains(&status) || (101..200).contains(&status) && sdp.is_some() {
            // Contact must name the transport the request came over (TCP callers stay on TCP).
            let via_tcp = req
                .via_header()
                .map(|v| v.value().to_ascii_uppercase().contains("/TCP"))
                .unwrap_or(false);
            let transport = if via_tcp { Transport::Tcp(0) } else { Transport::Udp };
            extra.push(self.local.contact(transport));
        }
        if status == 405 || (req.method == Method::Options && status == 200) {
            extra.push(Header::Allow(rsip::Allow::new("INVITE, ACK, BYE, CANCEL, OPTIONS, INFO")));
        }
        let resp = message::response(req, status, tag, extra, sdp);
        self.txs.send_response(self.now, key, resp);
    }

    fn on_request(&mut self, key: TxKey, req: Request, peer: Peer) {
        let sip_call_id = message::call_id(&req);
        if let Some((id, leg)) = self.by_sip_call_id.get(&sip_call_id).cloned() {
            self.in_dialog(id, leg, key, req);
            return;
        }
        match req.method {
            Method::Invite if message::to_tag(&req).is_none() => self.new_call(key, req, peer),
            Method::Options => self.respond(&key, &req, 200, None, None),
            Method::Register | Method::Subscribe | Method::Publish | Method::Message | Method::Refer => {
                self.respond(&key, &req, 405, None, None)
            }
            _ => self.respond(&key, &req, 481, None, None),
        }
    }

    fn new_call(&mut self, key: TxKey, req: Request, peer: Peer) {
        let now = self.now;
        let refuse = |this: &mut Self, status: u16, why: &str, retry_after: Option<u32>| {
            tracing::info!(status, reason = why, "call refused");
            // The reason travels with the refusal (RFC 3261 §20.43 Warning, code 399 = misc).
            let mut headers = vec![Header::Warning(rsip::Warning::new(format!("399 callgate \"{why}\"")))];
            headers.extend(retry_after.map(|s| Header::RetryAfter(rsip::headers::RetryAfter::new(s.to_string()))));
            let resp = message::response(&req, status, Some(&random_hex(6)), headers, None);
            this.txs.send_response(this.now, &key, resp);
        };
        let reject = |this: &mut Self, status: u16, why: &str| refuse(this, status, why, None);
        if self.draining {
            return reject(self, 503, "shutting down");
        }
        let live = self.calls.values().filter(|c| c.finished_at.is_none()).count();
        if live >= self.cfg.call.max_calls {
            return reject(self, 503, "call limit reached");
        }
        // Admission control: one more call on a media thread with no slack would make every
        // call on it late, then lossy. Refused now, the trunk can place it elsewhere (or retry
        // in a second, RFC 3261 §21.5.4); the calls already up keep their audio whole.
        let max_load = u32::from(self.cfg.media.max_load_percent) * 10;
        if max_load < 1000 && self.host.load_permille() >= max_load {
            return refuse(self, 503, "media overloaded", Some(1));
        }
        let dialled = message::request_user(&req);
        let route = match self.cfg.route_for(peer.addr.ip(), &dialled, &message::from_user(&req)) {
            Ok(r) => r.clone(),
            Err(e) => return reject(self, e.sip_status(), &e.to_string()),
        };
        let direction = route.direction;
        let Some(body) = message::sdp_body(&req) else {
            // Offerless INVITEs (offer in the 2xx) are not supported: we must anchor media.
            return reject(self, 488, "INVITE without SDP offer");
        };
        let offer = match sdp::parse_offer(&body) {
            Ok(o) => o,
            Err(e) => return reject(self, e.sip_status(), "unusable SDP offer"),
        };
        let codecs = match sdp::negotiate(&offer) {
            Ok(c) => c,
            Err(e) => return reject(self, e.sip_status(), "no common codec"),
        };
        let (audio, telephone_event) = sdp::split_codecs(&codecs);
        let Some(&codec) = audio.first() else {
            return reject(self, 488, "no common codec");
        };
        let id = CallId::new_random();
        let Some(ports) = self.host.open(&id) else {
            return reject(self, 503, "no free RTP ports");
        };
        let caller_remote = Remote {
            rtp: offer.rtp.0,
            rtcp: offer.rtcp.0,
            codec,
            telephone_event,
            on_hold: offer.is_hold(),
        };
        self.host.command(&id, MediaCmd::SetRemote { leg: side(direction, Leg::Caller), remote: caller_remote });
        let our_tag = random_hex(6);
        let caller = Dialog::uas(&req, &our_tag, peer);
        let mut record = CallRecord::new(
            id.clone(),
            caller.call_id.clone(),
            PhoneNumber::new(message::from_user(&req)),
            PhoneNumber::new(dialled.clone()),
            PhoneNumber::new(dialled),
            route.matches.clone(),
            route.target.clone(),
            self.wall_ms(),
        );
        record.caller_codec = Some(codec.name().into());
        record.agent_codec = Some(codec.name().into());
        record.direction = direction.as_str().into();
        record.customer_leg = match direction {
            CallDirection::Inbound => "caller",
            CallDirection::Outbound => "called",
        }
        .into();
        record.record_policy = route.record.as_str().into();
        let load = |p: &PathBuf| self.announcements.get(p).cloned().unwrap_or_else(|| Err("prompt not loaded".into()));
        let announcement = route.announcement.as_ref().map(load);
        let consent_prompt = route.consent.as_ref().map(|c| load(&c.prompt));
        if let Some(Ok(a)) = &announcement {
            record.announcement_sha256 = Some(a.sha256_hex());
        }
        if let Some(Ok(a)) = &consent_prompt {
            record.consent_prompt_sha256 = Some(a.sha256_hex());
        }
        if let Some(c) = &route.consent {
            // The media task listens for these keys from the customer until the bridge.
            self.host.command(&id, MediaCmd::ListenConsent(c.keys));
        }
        let policy = CallPolicy {
            direction,
            answer: route.answer,
            announce: announcement.is_some(),
            record: route.record,
            consent: route.consent.clone(),
            on_announcement_failure: route.on_announcement_failure,
            agent_answer_timeout: self.cfg.call.agent_answer_timeout,
        };
        tracing::info!(call = %id, route = %route.matches, direction = direction.as_str(), from = %record.from_number, "new call");
        // 100 Trying at once: the caller's transaction stops retransmitting.
        self.respond(&key, &req, 100, None, None);
        self.by_sip_call_id.insert(caller.call_id.clone(), (id.clone(), Leg::Caller));
        self.server_txs.insert(key.clone(), (id.clone(), ServerPurpose::CallerInvite));
        let mut sid = [0u8; 4];
        let _ = getrandom::fill(&mut sid);
        let ctx = CallCtx {
            call: Call::new(policy),
            record,
            caller_invite: (key, req),
            caller,
            agent: None,
            agent_peer: None,
            ports,
            offered_dir: [offer.direction, Direction::SendRecv],
            remotes: [Some(caller_remote), None],
            direction,
            consent_prompt,
            announcement_started: false,
            last_offer: [Some(offer), None],
            pending_codec: None,
            codec,
            telephone_event,
            session_id: u32::from_be_bytes(sid) as u64,
            sdp_version: [1, 1],
            pending_reinvite: [None, None],
            route,
            announcement,
            finished_at: None,
            media_done: false,
        };
        self.records.push_back(ctx.record.clone());
        self.calls.insert(id.clone(), ctx);
        if let Some(c) = self.calls.get_mut(&id) {
            c.call.handle_input(now, Input::Start);
        }
        self.drain_commands(&id);
    }

    fn in_dialog(&mut self, id: CallId, leg: Leg, key: TxKey, req: Request) {
        match req.method {
            Method::Bye => {
                self.respond(&key, &req, 200, None, None);
                self.feed(&id, Input::Bye(leg));
            }
            Method::Invite => self.reinvite(id, leg, key, req),
            Method::Info => {
                // DTMF by SIP INFO goes to keypad protection and is never forwarded: no digit
                // reaches the other leg (or a log) by this path.
                let ct = req
                    .headers
                    .iter()
                    .find_map(|h| match h {
                        Header::ContentType(ct) => Some(ct.value().to_string()),
                        _ => None,
                    })
                    .unwrap_or_default();
                match crate::pci::sipinfo::parse_info(&ct, &req.body) {
                    Ok(digit) => {
                        let to = self.calls.get(&id).map(|c| side(c.direction, leg)).unwrap_or(leg);
                        self.host.command(&id, MediaCmd::Info { leg: to, digit });
                        self.respond(&key, &req, 200, None, None)
                    }
                    // Other INFO packages (or none) are acknowledged and ignored.
                    Err(crate::pci::sipinfo::InfoError::UnsupportedContentType) => {
                        self.respond(&key, &req, 200, None, None)
                    }
                    Err(_) => self.respond(&key, &req, 400, None, None),
                }
            }
            Method::Options | Method::Update | Method::Notify => self.respond(&key, &req, 200, None, None),
            _ => self.respond(&key, &req, 405, None, None),
        }
    }

    fn reinvite(&mut self, id: CallId, leg: Leg, key: TxKey, req: Request) {
        let Some(ctx) = self.calls.get_mut(&id) else { return };
        if ctx.finished_at.is_some() {
            return self.respond(&key, &req, 481, None, None);
        }
        if ctx.pending_reinvite[leg as usize].is_some() {
            return self.respond(&key, &req, 500, None, None);
        }
        let Some(body) = message::sdp_body(&req) else {
            // Offerless re-INVITE (session refresh): answer with our current SDP locally.
            let sdp = self.leg_sdp(&id, leg, None);
            return self.respond(&key, &req, 200, None, sdp.as_deref());
        };
        let offer = match sdp::parse_offer(&body) {
            Ok(o) => o,
            Err(e) => return self.respond(&key, &req, e.sip_status(), None, None),
        };
        let Some(ctx) = self.calls.get_mut(&id) else { return };
        let offered = offer.g711_codecs();
        let bridged = ctx.call.is_bridged();
        if !offered.contains(&ctx.codec) {
            // A codec change. We relay without transcoding, so both legs must move together:
            // it is offered across the bridge and committed only when the other leg accepts.
            match offered.first() {
                Some(&new) if bridged => ctx.pending_codec = Some(new),
                _ => return self.respond(&key, &req, 488, None, None),
            }
        }
        ctx.offered_dir[leg as usize] = offer.direction;
        let remote = Remote {
            rtp: offer.rtp.0,
            rtcp: offer.rtcp.0,
            codec: ctx.codec,
            telephone_event: offer.telephone_event.or(ctx.telephone_event),
            on_hold: offer.is_hold(),
        };
        ctx.remotes[leg as usize] = Some(remote);
        ctx.last_offer[leg as usize] = Some(offer);
        self.host.command(&id, MediaCmd::SetRemote { leg: side(ctx.direction, leg), remote });
        ctx.pending_reinvite[leg as usize] = Some(key.clone());
        self.reinvite_requests.insert(key.clone(), req);
        self.server_txs.insert(key, (id.clone(), ServerPurpose::Reinvite));
        self.feed(&id, Input::Reinvite(leg));
    }

    fn on_response(&mut self, key: TxKey, resp: rsip::Response) {
        let Some((id, purpose)) = self.client_txs.get(&key).cloned() else { return };
        let status = resp.status_code.code();
        match purpose {
            ClientPurpose::AgentInvite => {
                if status < 200 {
                    if status > 100 {
                        self.feed(&id, Input::AgentProvisional(status));
                    }
                } else if status < 300 {
                    let Some(ctx) = self.calls.get_mut(&id) else { return };
                    if let Some(agent) = &mut ctx.agent {
                        agent.confirm(&resp);
                    }
                    if let Some(answer) = message::sdp_body(&resp).and_then(|b| sdp::parse_offer(&b).ok()) {
                        let remote = Remote {
                            rtp: answer.rtp.0,
                            rtcp: answer.rtcp.0,
                            codec: ctx.codec,
                            telephone_event: answer.telephone_event,
                            on_hold: answer.is_hold(),
                        };
                        ctx.remotes[Leg::Agent as usize] = Some(remote);
                        self.host.command(&id, MediaCmd::SetRemote { leg: side(ctx.direction, Leg::Agent), remote });
                    }
                    self.feed(&id, Input::AgentAnswered);
                } else {
                    self.feed(&id, Input::AgentRejected(status));
                }
            }
            ClientPurpose::Reinvite(leg) => {
                if status < 200 {
                    return;
                }
                if status < 300 {
                    // ACK the 2xx in that leg's dialog.
                    let ack = self.calls.get(&id).and_then(|ctx| {
                        let d = if leg == Leg::Caller { Some(&ctx.caller) } else { ctx.agent.as_ref().map(|a| &a.dialog) }?;
                        let (seq, _) = message::cseq(&resp);
                        Some((d.ack(&self.local, seq), d.peer))
                    });
                    if let Some((ack, peer)) = ack {
                        self.txs.send_ack_2xx(&key, ack, peer);
                    }
                    if let Some(ctx) = self.calls.get_mut(&id) {
                        let answer = message::sdp_body(&resp).and_then(|b| sdp::parse_offer(&b).ok());
                        // Commit a codec change only if the answer accepted the new codec.
                        if let (Some(new), Some(a)) = (ctx.pending_codec, &answer) {
                            if a.g711_codecs().contains(&new) {
                                ctx.codec = new;
                            }
                        }
                        if let Some(answer) = answer {
                            ctx.remotes[leg as usize] = Some(Remote {
                                rtp: answer.rtp.0,
                                rtcp: answer.rtcp.0,
                                codec: ctx.codec,
                                telephone_event: answer.telephone_event.or(ctx.telephone_event),
                                on_hold: answer.is_hold(),
                            });
                        }
                        let codec = ctx.codec;
                        for l in [Leg::Caller, Leg::Agent] {
                            if let Some(r) = &mut ctx.remotes[l as usize] {
                                r.codec = codec;
                                self.host.command(&id, MediaCmd::SetRemote { leg: side(ctx.direction, l), remote: *r });
                            }
                        }
                        ctx.record.caller_codec = Some(codec.name().into());
                        ctx.record.agent_codec = Some(codec.name().into());
                    }
                }
                let failed_change = self
                    .calls
                    .get_mut(&id)
                    .and_then(|ctx| ctx.pending_codec.take().map(|p| p != ctx.codec))
                    .unwrap_or(false);
                // The other leg kept the old codec: the change failed for the offerer too.
                let status = if failed_change && status < 300 { 488 } else { status };
                self.feed(&id, Input::ReinviteAnswered { leg, status });
            }
            ClientPurpose::Other => {}
        }
    }

    /// An event from a call's media task.
    pub fn handle_media(&mut self, now: Instant, ev: MediaEvent) {
        self.now = now;
        let wall = self.wall_ms();
        match ev {
            MediaEvent::AnnouncementDone { call, started_ms, ended_ms } => {
                // The media thread stamps the prompt with the system clock; the record's other
                // times (the bridge, which follows at this very moment) come from this engine's
                // clock. Whatever the two say (a clock step, a millisecond of rounding), the
                // prompt cannot have ended after the engine heard that it did: a clock ahead is
                // moved back, keeping the prompt's measured length.
                let ahead = (ended_ms - wall).max(0);
                let (started_ms, ended_ms) = (started_ms.min(ended_ms) - ahead, ended_ms - ahead);
                if let Some(ctx) = self.calls.get_mut(&call) {
                    ctx.record.announcement_started_at_ms = Some(started_ms);
                    ctx.record.announcement_ended_at_ms = Some(ended_ms);
                    ctx.record.announcement_state = announcement_state::PLAYED.into();
                }
                self.feed(&call, Input::AnnouncementDone);
            }
            MediaEvent::AnnouncementFailed { call, cause } => {
                if let Some(ctx) = self.calls.get_mut(&call) {
                    ctx.record.announcement_state = announcement_state::FAILED.into();
                    ctx.record.announcement_error = Some(cause);
                }
                self.feed(&call, Input::AnnouncementFailed);
            }
            MediaEvent::MediaTimeout { call, leg } => {
                // The media task names roles; the call state machine SIP legs.
                let Some(dir) = self.calls.get(&call).map(|c| c.direction) else { return };
                self.feed(&call, Input::MediaTimeout(side(dir, leg)))
            }
            MediaEvent::ConsentKey { call, key } => self.feed(&call, Input::ConsentKey(key)),
            MediaEvent::RecordRequested { call } => {
                if let Err(e) = self.start_recording(now, &call, "agent-keys") {
                    tracing::info!(call = %call, reason = %e, "agent's record keys refused");
                }
            }
            MediaEvent::ConsentPromptDone { call } => self.feed(&call, Input::ConsentPromptDone),
            MediaEvent::Finished { call, report } => {
                let Some(ctx) = self.calls.get_mut(&call) else { return };
                ctx.media_done = true;
                let r = &mut ctx.record;
                r.caller_packets = report.caller_packets as i64;
                r.agent_packets = report.agent_packets as i64;
                r.caller_lost = report.caller_lost as i64;
                r.agent_lost = report.agent_lost as i64;
                r.pauses = report.pauses;
                if let Some(rec) = report.recording {
                    r.recording_state = rec.state.into();
                    r.recording_error = rec.error;
                    r.recording_bytes = Some(rec.bytes as i64);
                    r.recording_sha256 = rec.sha256;
                    r.recording_location = Some(rec.location);
                    r.audio_ms = Some(rec.audio_ms as i64);
                }
                if r.ended_at_ms.is_none() {
                    r.ended_at_ms = Some(wall);
                }
                self.records.push_back(r.clone());
                if ctx.finished_at.is_none() {
                    ctx.finished_at = Some(self.now);
                }
            }
        }
    }

    /// Feeds an input to a call and carries out what it asks.
    fn feed(&mut self, id: &CallId, input: Input) {
        let Some(ctx) = self.calls.get_mut(id) else { return };
        ctx.call.handle_input(self.now, input);
        self.drain_commands(id);
    }

    /// Our SDP toward `leg` (a new version each time it is sent after a change).
    fn leg_sdp(&mut self, id: &CallId, leg: Leg, direction: Option<Direction>) -> Option<String> {
        let ctx = self.calls.get_mut(id)?;
        let i = leg as usize;
        let port = if side(ctx.direction, leg) == Leg::Caller { ctx.ports.0 } else { ctx.ports.1 };
        let dir = direction.unwrap_or_else(|| ctx.offered_dir[i].reversed());
        // Offering (a direction given): a pending codec change is what we offer.
        let codec = if direction.is_some() { ctx.pending_codec.unwrap_or(ctx.codec) } else { ctx.codec };
        let b = BuildSdp {
            session_id: ctx.session_id,
            version: ctx.sdp_version[i],
            addr: self.cfg.media.advertise,
            port,
            codecs: &[codec],
            telephone_event: ctx.telephone_event,
            direction: dir,
            ptime: 20,
            // Answering: mirror the m-lines of the offer we answer.
            answer_to: if direction.is_none() { ctx.last_offer[i].as_ref() } else { None },
        };
        sdp::build_sdp(&b).ok()
    }

    fn drain_commands(&mut self, id: &CallId) {
        loop {
            let Some(ctx) = self.calls.get_mut(id) else { return };
            let Some(cmd) = ctx.call.poll_command() else { break };
            self.execute(id, cmd);
        }
    }

    fn execute(&mut self, id: &CallId, cmd: Command) {
        let wall = self.wall_ms();
        let now = self.now;
        let local = self.local.clone();
        match cmd {
            Command::CallerProvisional { status, with_sdp } => {
                let sdp = if with_sdp { self.leg_sdp(id, Leg::Caller, None) } else { None };
                let Some(ctx) = self.calls.get(id) else { return };
                let (key, req) = ctx.caller_invite.clone();
                let tag = ctx.caller.local.rsplit("tag=").next().map(str::to_string);
                self.respond(&key, &req, status, tag.as_deref(), sdp.as_deref());
            }
            Command::AnswerCaller => {
                let sdp = self.leg_sdp(id, Leg::Caller, None);
                let Some(ctx) = self.calls.get_mut(id) else { return };
                ctx.record.answered_at_ms = Some(wall);
                let (key, req) = ctx.caller_invite.clone();
                let tag = ctx.caller.local.rsplit("tag=").next().map(str::to_string);
                self.respond(&key, &req, 200, tag.as_deref(), sdp.as_deref());
            }
            Command::RejectCaller { status } => {
                let Some(ctx) = self.calls.get_mut(id) else { return };
                ctx.record.final_status = Some(status as i64);
                let (key, req) = ctx.caller_invite.clone();
                let tag = ctx.caller.local.rsplit("tag=").next().map(str::to_string);
                self.respond(&key, &req, status, tag.as_deref(), None);
            }
            Command::InviteAgent => {
                let sdp = self.leg_sdp(id, Leg::Agent, Some(Direction::SendRecv));
                let Some(ctx) = self.calls.get_mut(id) else { return };
                let Some(addr) = self.targets.get(&ctx.route.target).copied().flatten() else {
                    self.feed(id, Input::AgentUnreachable);
                    return;
                };
                let peer = Peer { addr, transport: Transport::Udp };
                let from_user = ctx.record.from_number.expose().to_string();
                // The agent's desktop or payment screen learns the call id from this header and
                // uses it with the pause/resume API.
                let id_header = Header::Other("X-Callgate-Call-Id".into(), id.to_string());
                let uri = crate::call::routing::target_uri(&ctx.route.target, ctx.record.dialled.expose());
                let uac = UacInvite::new(&local, &uri, &from_user, peer, sdp.as_deref().unwrap_or(""), vec![id_header]);
                let key = self.txs.send_request(now, uac.invite.clone(), peer);
                self.by_sip_call_id.insert(uac.dialog.call_id.clone(), (id.clone(), Leg::Agent));
                self.client_txs.insert(key, (id.clone(), ClientPurpose::AgentInvite));
                ctx.agent_peer = Some(peer);
                ctx.agent = Some(uac);
            }
            Command::CancelAgent => {
                let Some(ctx) = self.calls.get(id) else { return };
                if let (Some(uac), Some(peer)) = (&ctx.agent, ctx.agent_peer) {
                    let cancel = uac.cancel();
                    let key = self.txs.send_request(now, cancel, peer);
                    self.client_txs.insert(key, (id.clone(), ClientPurpose::Other));
                }
            }
            Command::AckAgent => {
                let Some(ctx) = self.calls.get(id) else { return };
                if let Some(uac) = &ctx.agent {
                    let ack = uac.dialog.ack(&local, uac.invite_seq);
                    let invite_key = TxKey { branch: message::branch(&uac.invite), method: Method::Invite };
                    self.txs.send_ack_2xx(&invite_key, ack, uac.dialog.peer);
                }
            }
            Command::Bye { leg, reason } => {
                let Some(ctx) = self.calls.get_mut(id) else { return };
                let extra = reason
                    .map(|s| vec![Header::Reason(rsip::Reason::new(format!("SIP;cause={s}")))])
                    .unwrap_or_default();
                let dialog = match leg {
                    Leg::Caller => Some(&mut ctx.caller),
                    Leg::Agent => ctx.agent.as_mut().map(|a| &mut a.dialog),
                };
                if let Some(d) = dialog {
                    let (bye, _) = d.request(&local, Method::Bye, extra, None);
                    let peer = d.peer;
                    let key = self.txs.send_request(now, bye, peer);
                    self.client_txs.insert(key, (id.clone(), ClientPurpose::Other));
                }
            }
            Command::PlayAnnouncement => {
                let Some(ctx) = self.calls.get_mut(id) else { return };
                ctx.announcement_started = true;
                if ctx.route.consent.is_some() {
                    // Choice keys count from the start of the announcement.
                    ctx.record.consent_state = Some(consent_state::OFFERED.into());
                }
                match &ctx.announcement {
                    Some(Ok(a)) => {
                        self.host.command(id, MediaCmd::PlayAnnouncement(a.clone()));
                    }
                    Some(Err(e)) => {
                        ctx.record.announcement_state = announcement_state::FAILED.into();
                        ctx.record.announcement_error = Some(e.clone());
                        self.feed(id, Input::AnnouncementFailed);
                    }
                    None => {}
                }
            }
            Command::PlayRingback => {
                if self.calls.contains_key(id) {
                    self.host.command(id, MediaCmd::PlayRingback);
                }
            }
            Command::PlayWaitTone => {
                if self.calls.contains_key(id) {
                    self.host.command(id, MediaCmd::PlayWaitTone);
                }
            }
            Command::PlayConsentPrompt => {
                let Some(ctx) = self.calls.get_mut(id) else { return };
                ctx.record.consent_state = Some(consent_state::OFFERED.into());
                match &ctx.consent_prompt {
                    Some(Ok(a)) => self.host.command(id, MediaCmd::PlayConsentPrompt(a.clone())),
                    Some(Err(e)) => {
                        ctx.record.announcement_error = Some(format!("consent prompt: {e}"));
                        self.feed(id, Input::ConsentPromptFailed);
                    }
                    None => self.feed(id, Input::ConsentPromptFailed),
                }
            }
            Command::StopPrompt => {
                if self.calls.contains_key(id) {
                    self.host.command(id, MediaCmd::StopPrompt);
                }
            }
            Command::ConsentDecided(d) => {
                let Some(ctx) = self.calls.get_mut(id) else { return };
                let r = &mut ctx.record;
                r.consent_state = Some(consent_state::DECIDED.into());
                r.consent_recording = Some(d.record);
                r.consent_training = d.training;
                r.consent_source = Some(d.source.as_str().into());
                r.consent_at_ms = Some(wall);
                tracing::info!(call = %id, record = d.record, training = ?d.training, how = d.source.as_str(), "consent decided");
                self.records.push_back(ctx.record.clone());
            }
            Command::StartRecording => {
                let plan = self.recording_keys(id);
                let Some(ctx) = self.calls.get_mut(id) else { return };
                note_recording_start(&mut ctx.record, plan.as_ref(), wall);
                if let Some(p) = plan {
                    self.host.start_recording(id, p);
                }
                self.records.push_back(ctx.record.clone());
            }
            Command::Bridge { record } => {
                let plan = if record { self.recording_keys(id) } else { None };
                let Some(ctx) = self.calls.get_mut(id) else { return };
                ctx.record.bridged_at_ms = Some(wall);
                if record {
                    note_recording_start(&mut ctx.record, plan.as_ref(), wall);
                    if plan.is_some() {
                        ctx.record.recording_started_by = Some("route".into());
                    }
                } else if ctx.record.consent_recording == Some(false) {
                    ctx.record.recording_state = recording_state::DECLINED.into();
                } else if ctx.route.record == RecordPolicy::OnDemand
                    && ctx.record.announcement_state != announcement_state::FAILED
                {
                    // Armed: recorded only if the agent or the API starts it.
                    ctx.record.recording_state = recording_state::NONE.into();
                } else {
                    ctx.record.recording_state = recording_state::NOT_RECORDED.into();
                }
                self.host.bridge(id, plan);
                self.records.push_back(ctx.record.clone());
            }
            Command::ForwardReinvite { from } => {
                let to = from.other();
                let dir = self.calls.get(id).map(|c| c.offered_dir[from as usize]).unwrap_or_default();
                if let Some(ctx) = self.calls.get_mut(id) {
                    ctx.sdp_version[to as usize] += 1;
                }
                let sdp = self.leg_sdp(id, to, Some(dir));
                let Some(ctx) = self.calls.get_mut(id) else { return };
                let dialog = match to {
                    Leg::Caller => Some(&mut ctx.caller),
                    Leg::Agent => ctx.agent.as_mut().map(|a| &mut a.dialog),
                };
                if let Some(d) = dialog {
                    let (inv, _) = d.request(&local, Method::Invite, vec![local.contact(d.peer.transport)], sdp.as_deref());
                    let peer = d.peer;
                    let key = self.txs.send_request(now, inv, peer);
                    self.client_txs.insert(key, (id.clone(), ClientPurpose::Reinvite(to)));
                }
            }
            Command::AnswerReinvite { leg, status } => {
                if status == 200 {
                    if let Some(ctx) = self.calls.get_mut(id) {
                        ctx.sdp_version[leg as usize] += 1;
                    }
                }
                let sdp = if status == 200 { self.leg_sdp(id, leg, None) } else { None };
                let Some(ctx) = self.calls.get_mut(id) else { return };
                if let Some(key) = ctx.pending_reinvite[leg as usize].take() {
                    // The request is needed to build the response: keep it in the server map.
                    if let Some(req) = self.pending_request(&key) {
                        self.respond(&key, &req, status, None, sdp.as_deref());
                    }
                }
            }
            Command::Finished(outcome) => {
                let Some(ctx) = self.calls.get_mut(id) else { return };
                ctx.finished_at = Some(now);
                let r = &mut ctx.record;
                r.ended_at_ms = Some(wall);
                r.hangup_cause = Some(outcome.cause.as_str().into());
                // Roles, not SIP legs: `caller` is the customer, `agent` the staff member.
                let role = outcome.side.map(|l| side(ctx.direction, l).as_str());
                r.hangup_side = Some(role.unwrap_or("gateway").into());
                if r.final_status.is_none() {
                    r.final_status = outcome.final_status.map(i64::from);
                }
                if r.announcement_state == announcement_state::NONE && ctx.announcement_started {
                    r.announcement_state = announcement_state::INTERRUPTED.into();
                }
                if r.bridged_at_ms.is_none() && ctx.route.record != RecordPolicy::Never {
                    r.recording_state = recording_state::NONE.into();
                }
                if r.consent_state.as_deref() == Some(consent_state::OFFERED) {
                    // Connected without a choice: the prompts failed and the route connects
                    // unrecorded. Not connected: the call ended before the customer chose.
                    let state = if r.bridged_at_ms.is_some() { consent_state::SKIPPED } else { consent_state::ABANDONED };
                    r.consent_state = Some(state.into());
                }
                let reason = if outcome.cause == HangupCause::Shutdown { EndReason::Shutdown } else { EndReason::Hangup };
                tracing::info!(call = %id, cause = outcome.cause.as_str(), side = r.hangup_side.as_deref().unwrap_or(""), "call ended");
                self.host.command(id, MediaCmd::Stop { reason });
            }
        }
    }

    /// Reinvite requests are kept by the transaction layer only as bytes; we keep our own copy.
    fn pending_request(&mut self, key: &TxKey) -> Option<Request> {
        self.reinvite_requests.remove(key)
    }

    fn recording_keys(&self, id: &CallId) -> Option<RecordingKeys> {
        let dek = Dek::generate().ok()?;
        let kek = self.keyring.active();
        let wrapped = kek.wrap(&dek);
        tracing::debug!(call = %id, "recording planned");
        Some(RecordingKeys { recording_id: RecordingId::new_random(), key_id: kek.id().clone(), dek, wrapped })
    }
}
