//! Simulated phones on loopback UDP: a caller (the trunk side) and an agent (the PBX side).
//!
//! Each phone owns a SIP socket and an RTP socket on 127.0.0.1 ephemeral ports. A background task
//! per socket receives: RTP packets are recorded with their arrival time; SIP messages are checked
//! with the gateway's strict parser, answered where the protocol demands it without the test's
//! help (BYE → 200, retransmitted 2xx → the ACK again, OPTIONS → 200) and logged. The test drives
//! the rest through async methods, every wait bounded by a timeout.
//!
//! Timers follow RFC 3261 with T1 = 500 ms: requests are retransmitted at T1, 2·T1, … until a
//! response is heard; the agent retransmits its final INVITE response until the ACK.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callgate::ids::Ssrc;
use callgate::media::g711::G711;
use callgate::media::rtp::{self, RtpPacket};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout_at};

use super::sip::{self as s, SipMsg};

/// RFC 3261 T1.
pub const T1: Duration = Duration::from_millis(500);

fn random_u32() -> u32 {
    u32::from_str_radix(&callgate::ids::random_hex(4), 16).unwrap_or(0x1234_5678)
}

/// Locks a mutex, ignoring poisoning (a panicking test already failed).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ------------------------------------------------------------------------------------------------
// RTP

/// One RTP packet as received.
#[derive(Clone, Debug)]
pub struct RtpRx {
    pub at: Instant,
    pub from: SocketAddr,
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub marker: bool,
    pub payload: Vec<u8>,
}

/// An RTP socket on an even loopback port (the odd port above it held for RTCP), recording every
/// packet it receives.
pub struct RtpEndpoint {
    sock: Arc<UdpSocket>,
    _rtcp: Option<std::net::UdpSocket>,
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<RtpRx>>>,
    rx_task: JoinHandle<()>,
}

impl RtpEndpoint {
    pub async fn bind() -> RtpEndpoint {
        let mut found = None;
        for _ in 0..64 {
            let Ok(s) = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
                continue;
            };
            let Ok(addr) = s.local_addr() else { continue };
            if addr.port() % 2 != 0 || addr.port() == u16::MAX {
                continue;
            }
            let rtcp = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, addr.port() + 1)).ok();
            found = Some((s, rtcp, addr));
            break;
        }
        // Invariant: loopback has plenty of free even ports.
        let (std_sock, rtcp, addr) = found.expect("no even RTP port on loopback");
        std_sock
            .set_nonblocking(true)
            .expect("nonblocking RTP socket");
        let sock = Arc::new(UdpSocket::from_std(std_sock).expect("tokio RTP socket"));
        let received = Arc::new(Mutex::new(Vec::new()));
        let rx_task = tokio::spawn({
            let sock = sock.clone();
            let received = received.clone();
            async move {
                let mut buf = vec![0u8; 2048];
                loop {
                    let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                        continue;
                    };
                    let at = Instant::now();
                    if rtp::is_rtcp(&buf[..n]) {
                        continue;
                    }
                    let Ok(p) = RtpPacket::parse(&buf[..n]) else {
                        continue;
                    };
                    lock(&received).push(RtpRx {
                        at,
                        from,
                        pt: p.payload_type(),
                        seq: p.sequence(),
                        ts: p.timestamp(),
                        ssrc: p.ssrc().0,
                        marker: p.marker(),
                        payload: p.payload().to_vec(),
                    });
                }
            }
        });
        RtpEndpoint {
            sock,
            _rtcp: rtcp,
            addr,
            received,
            rx_task,
        }
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<RtpRx> {
        lock(&self.received).clone()
    }

    /// Sends `samples` to `to` as `codec` RTP, one 160-sample packet per 20 ms tick (tokio
    /// interval, so the average rate holds), random SSRC and initial seq/timestamp, marker on the
    /// first packet. Resolves to the number of packets sent.
    pub fn send_audio(&self, to: SocketAddr, codec: G711, samples: Vec<i16>) -> JoinHandle<u32> {
        let sock = self.sock.clone();
        tokio::spawn(async move {
            let ssrc = Ssrc(random_u32());
            let seq0 = random_u32() as u16;
            let ts0 = random_u32();
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let mut sent = 0u32;
            let mut pkt = Vec::with_capacity(rtp::RTP_HEADER_LEN + 160);
            for (i, frame) in samples.chunks(160).enumerate() {
                tick.tick().await;
                let mut payload: Vec<u8> = frame.iter().map(|&x| codec.encode(x)).collect();
                payload.resize(160, codec.silence());
                pkt.clear();
                // Invariant: G.711 payload types fit in 7 bits.
                rtp::write_rtp(
                    &mut pkt,
                    i == 0,
                    codec.payload_type(),
                    seq0.wrapping_add(i as u16),
                    ts0.wrapping_add(160 * i as u32),
                    ssrc,
                    &payload,
                )
                .expect("G.711 payload type");
                if sock.send_to(&pkt, to).await.is_ok() {
                    sent += 1;
                }
            }
            sent
        })
    }
}

/// One RFC 4733 telephone-event packet to send in a tick (see [`RtpEndpoint::send_ticks`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventTx {
    /// Event code (0-9, 10 = `*`, 11 = `#`, 12-15 = A-D).
    pub event: u8,
    /// The tick the event started in: its RTP timestamp is that tick's (the same in every
    /// packet of the event, end retransmissions included).
    pub start_tick: usize,
    /// Duration field in timestamp units (samples since the event started).
    pub duration: u16,
    /// E bit.
    pub end: bool,
    /// Marker bit (first packet of the event).
    pub marker: bool,
    /// Volume field (0..=63, -dBm0).
    pub volume: u8,
}

impl EventTx {
    /// The 4-byte RFC 4733 payload.
    pub fn payload(&self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (if self.end { 0x80 } else { 0 }) | (self.volume & 0x3f),
            d[0],
            d[1],
        ]
    }
}

/// What a phone sends in one 20 ms tick: an audio frame (160 samples) and/or telephone-event
/// packets, all on one SSRC and sequence space, audio first.
#[derive(Clone, Debug, Default)]
pub struct Tick {
    pub audio: Option<Vec<i16>>,
    pub events: Vec<EventTx>,
}

/// Writes one RFC 4733 key press into a tick script, as phones send it: no audio while the tone
/// lasts (`tone_ticks` ticks from `start`), one event packet per tick with a growing duration
/// (marker on the first, E bit on the last, one timestamp), then the end packet twice more in
/// the next ticks beside their audio.
pub fn rfc4733_press(ticks: &mut [Tick], event: u8, start: usize, tone_ticks: usize) {
    let packet = |j: usize, end: bool| EventTx {
        event,
        start_tick: start,
        duration: (160 * (j + 1)) as u16,
        end,
        marker: j == 0,
        volume: 10,
    };
    for j in 0..tone_ticks {
        ticks[start + j].audio = None;
        ticks[start + j].events.push(packet(j, j + 1 == tone_ticks));
    }
    for r in 0..2 {
        ticks[start + tone_ticks + r].events.push(EventTx { marker: false, ..packet(tone_ticks - 1, true) });
    }
}

/// What [`RtpEndpoint::send_ticks`] sent.
#[derive(Clone, Debug, Default)]
pub struct TickReport {
    pub audio_packets: u32,
    pub event_packets: u32,
    /// When the first tick went out.
    pub started: Option<Instant>,
}

impl RtpEndpoint {
    /// Sends a tick script to `to`: each tick 20 ms after the previous (tokio interval), audio as
    /// `codec` and events as payload type `te_pt`, one SSRC, consecutive sequence numbers across
    /// both kinds (as a real phone does), audio timestamps advancing 160 per tick, marker on the
    /// first audio packet and on each event's first packet.
    pub fn send_ticks(
        &self,
        to: SocketAddr,
        codec: G711,
        te_pt: u8,
        ticks: Vec<Tick>,
    ) -> JoinHandle<TickReport> {
        let sock = self.sock.clone();
        tokio::spawn(async move {
            let ssrc = Ssrc(random_u32());
            let mut seq = random_u32() as u16;
            let ts0 = random_u32();
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let mut report = TickReport::default();
            let mut pkt = Vec::with_capacity(rtp::RTP_HEADER_LEN + 160);
            let mut first_audio = true;
            for (i, t) in ticks.iter().enumerate() {
                tick.tick().await;
                report.started.get_or_insert_with(Instant::now);
                if let Some(frame) = &t.audio {
                    let mut payload: Vec<u8> = frame.iter().map(|&x| codec.encode(x)).collect();
                    payload.resize(160, codec.silence());
                    pkt.clear();
                    // Invariant: G.711 payload types fit in 7 bits.
                    rtp::write_rtp(
                        &mut pkt,
                        first_audio,
                        codec.payload_type(),
                        seq,
                        ts0.wrapping_add(160 * i as u32),
                        ssrc,
                        &payload,
                    )
                    .expect("G.711 payload type");
                    first_audio = false;
                    seq = seq.wrapping_add(1);
                    if sock.send_to(&pkt, to).await.is_ok() {
                        report.audio_packets += 1;
                    }
                }
                for e in &t.events {
                    pkt.clear();
                    // Invariant: the caller passes a 7-bit dynamic payload type.
                    rtp::write_rtp(
                        &mut pkt,
                        e.marker,
                        te_pt,
                        seq,
                        ts0.wrapping_add(160 * e.start_tick as u32),
                        ssrc,
                        &e.payload(),
                    )
                    .expect("telephone-event payload type");
                    seq = seq.wrapping_add(1);
                    if sock.send_to(&pkt, to).await.is_ok() {
                        report.event_packets += 1;
                    }
                }
            }
            report
        })
    }
}

impl Drop for RtpEndpoint {
    fn drop(&mut self) {
        self.rx_task.abort();
    }
}

// ------------------------------------------------------------------------------------------------
// SIP socket shared by both phones

/// A received SIP message with where and when it came from.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub from: SocketAddr,
    pub msg: SipMsg,
}

async fn bind_sip() -> (Arc<UdpSocket>, SocketAddr) {
    // Invariant: binding an ephemeral loopback port does not fail on a working host.
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind SIP socket");
    let addr = sock.local_addr().expect("SIP socket address");
    (Arc::new(sock), addr)
}

// ------------------------------------------------------------------------------------------------
// Caller

/// What the caller's background task shares with the test-facing side.
#[derive(Default)]
struct CallerShared {
    /// The ACK for the 2xx, resent whenever the 2xx is retransmitted.
    ack: Option<(Vec<u8>, SocketAddr)>,
    bye_received: Option<Instant>,
    /// Messages the strict parser refused (the gateway sent something malformed).
    errors: Vec<String>,
}

/// The calling phone (the trunk side of the gateway).
pub struct CallerPhone {
    sock: Arc<UdpSocket>,
    pub sip_addr: SocketAddr,
    /// Where the INVITE goes (the gateway, or an agent phone in harness self-tests).
    pub target: SocketAddr,
    pub rtp: RtpEndpoint,
    pub number: String,
    rx: mpsc::UnboundedReceiver<Received>,
    shared: Arc<Mutex<CallerShared>>,
    /// Every SIP message the test side has seen, in order.
    pub log: Vec<Received>,
    rx_task: JoinHandle<()>,
    // Dialog state.
    pub call_id: String,
    from_tag: String,
    request_uri: String,
    to_header: String,
    invite_branch: String,
    invite_bytes: Vec<u8>,
    invite_seq: u32,
    next_seq: u32,
    /// Remote tag, Contact URI and address from the 2xx.
    pub remote_tag: Option<String>,
    pub remote_contact: Option<(String, SocketAddr)>,
    /// The answer's media address and codec (from the first 18x or 2xx with SDP).
    pub remote_sdp: Option<s::Sdp>,
    pub invite_sent_at: Option<Instant>,
    /// Arrival of the 2xx.
    pub answered_at: Option<Instant>,
}

impl CallerPhone {
    /// A caller with number `number` that will call via `target`.
    pub async fn new(target: SocketAddr, number: &str) -> CallerPhone {
        let (sock, sip_addr) = bind_sip().await;
        let rtp = RtpEndpoint::bind().await;
        let shared = Arc::new(Mutex::new(CallerShared::default()));
        let (tx, rx) = mpsc::unbounded_channel();
        let rx_task = tokio::spawn(caller_rx_loop(sock.clone(), sip_addr, shared.clone(), tx));
        CallerPhone {
            sock,
            sip_addr,
            target,
            rtp,
            number: number.to_string(),
            rx,
            shared,
            log: Vec::new(),
            rx_task,
            call_id: s::new_call_id(),
            from_tag: s::new_tag(),
            request_uri: String::new(),
            to_header: String::new(),
            invite_branch: String::new(),
            invite_bytes: Vec::new(),
            invite_seq: 1,
            next_seq: 2,
            remote_tag: None,
            remote_contact: None,
            remote_sdp: None,
            invite_sent_at: None,
            answered_at: None,
        }
    }

    fn via(&self, branch: &str) -> String {
        format!("Via: SIP/2.0/UDP {};branch={branch};rport", self.sip_addr)
    }

    fn from_header(&self) -> String {
        format!(
            "From: <sip:{}@{}>;tag={}",
            self.number,
            self.sip_addr.ip(),
            self.from_tag
        )
    }

    fn contact(&self) -> String {
        format!("Contact: <sip:caller@{}>", self.sip_addr)
    }

    /// The SDP offer: PCMU, PCMA, telephone-event on our RTP port.
    pub fn offer(&self) -> String {
        s::sdp_body("caller", self.rtp.addr, &[0, 8, 101])
    }

    /// Sends the INVITE for `dialled` (Request-URI `sip:dialled@target`).
    pub async fn invite(&mut self, dialled: &str) {
        self.request_uri = format!("sip:{dialled}@{}", self.target);
        self.to_header = format!("To: <sip:{dialled}@{}>", self.target);
        self.invite_branch = s::new_branch();
        let headers = vec![
            self.via(&self.invite_branch),
            self.from_header(),
            self.to_header.clone(),
            format!("Call-ID: {}", self.call_id),
            format!("CSeq: {} INVITE", self.invite_seq),
            self.contact(),
            "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS".to_string(),
        ];
        let offer = self.offer();
        self.invite_bytes = s::request("INVITE", &self.request_uri, &headers, Some(&offer));
        self.invite_sent_at = Some(Instant::now());
        self.send(&self.invite_bytes.clone(), self.target).await;
    }

    async fn send(&self, bytes: &[u8], to: SocketAddr) {
        // A loopback send only fails if the socket is gone, which ends the test anyway.
        let _ = self.sock.send_to(bytes, to).await;
    }

    /// Messages the strict parser refused so far.
    pub fn protocol_errors(&self) -> Vec<String> {
        lock(&self.shared).errors.clone()
    }

    /// Waits until a logged message from index `from` on satisfies `pred`. While no response to
    /// `resend`'s (CSeq, method) has been heard, resends its bytes on T1 doubling (capped at 4 s).
    async fn wait_for(
        &mut self,
        from: usize,
        within: Duration,
        resend: Option<(Vec<u8>, SocketAddr, u32, &str)>,
        what: &str,
        pred: impl Fn(&SipMsg) -> bool,
    ) -> Result<Received, String> {
        let deadline = Instant::now() + within;
        let mut interval = T1;
        let mut next_resend = Instant::now() + interval;
        let mut idx = from;
        loop {
            while idx < self.log.len() {
                if pred(&self.log[idx].msg) {
                    return Ok(self.log[idx].clone());
                }
                idx += 1;
            }
            let heard =
                |log: &[Received], seq: u32, m: &str| log.iter().any(|r| r.msg.answers(seq, m));
            let resending = match &resend {
                Some((_, _, seq, m)) => !heard(&self.log, *seq, m),
                None => false,
            };
            let wake = if resending {
                next_resend.min(deadline)
            } else {
                deadline
            };
            match timeout_at(wake, self.rx.recv()).await {
                Ok(Some(r)) => self.log.push(r),
                Ok(None) => return Err(format!("caller: SIP socket closed waiting for {what}")),
                Err(_) if Instant::now() >= deadline => {
                    return Err(format!(
                        "caller: timed out after {within:?} waiting for {what}; saw: {}",
                        self.summary()
                    ));
                }
                Err(_) => {
                    if let Some((bytes, to, _, _)) = &resend {
                        let _ = self.sock.send_to(bytes, *to).await;
                    }
                    interval = (interval * 2).min(Duration::from_secs(4));
                    next_resend = Instant::now() + interval;
                }
            }
        }
    }

    /// First lines of every logged message, for failure messages.
    pub fn summary(&self) -> String {
        self.log
            .iter()
            .map(|r| r.msg.first_line.clone())
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// Responses to our INVITE, in arrival order.
    pub fn invite_responses(&self) -> Vec<Received> {
        let seq = self.invite_seq;
        self.log
            .iter()
            .filter(|r| r.msg.answers(seq, "INVITE"))
            .cloned()
            .collect()
    }

    /// Waits for a response to the INVITE matching `pred` (retransmitting the INVITE until
    /// anything is heard). Records SDP from reliable-enough 18x/2xx.
    pub async fn wait_invite_response(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl Fn(&SipMsg) -> bool,
    ) -> Result<Received, String> {
        let seq = self.invite_seq;
        let resend = Some((self.invite_bytes.clone(), self.target, seq, "INVITE"));
        let r = self
            .wait_for(0, within, resend, what, |m| {
                m.answers(seq, "INVITE") && pred(m)
            })
            .await?;
        self.note_sdp();
        Ok(r)
    }

    fn note_sdp(&mut self) {
        if self.remote_sdp.is_none() {
            let seq = self.invite_seq;
            self.remote_sdp = self
                .log
                .iter()
                .filter(|r| r.msg.answers(seq, "INVITE") && r.msg.status().unwrap_or(0) > 100)
                .find_map(|r| r.msg.sdp());
        }
    }

    /// Waits for the final response to the INVITE and ACKs it: a 2xx with a new transaction to
    /// its Contact (CSeq number of the INVITE), a non-2xx hop-by-hop with the INVITE's branch.
    /// Returns the final response.
    pub async fn wait_final(&mut self, within: Duration) -> Result<SipMsg, String> {
        let r = self
            .wait_invite_response(within, "a final response to INVITE", |m| {
                m.status().unwrap_or(0) >= 200
            })
            .await?;
        let status = r.msg.status().unwrap_or(0);
        let to = r.msg.header("to").unwrap_or_default().to_string();
        if (200..300).contains(&status) {
            self.answered_at = Some(r.at);
            self.remote_tag = r.msg.to_tag();
            let contact = r.msg.contact_uri().ok_or("caller: 2xx without Contact")?;
            let addr = s::uri_addr(&contact)
                .ok_or_else(|| format!("caller: 2xx Contact {contact} is not an IP:port URI"))?;
            self.remote_contact = Some((contact.clone(), addr));
            if let Some(sdp) = r.msg.sdp() {
                self.remote_sdp = Some(sdp);
            }
            let ack = s::request(
                "ACK",
                &contact,
                &[
                    self.via(&s::new_branch()),
                    self.from_header(),
                    format!("To: {to}"),
                    format!("Call-ID: {}", self.call_id),
                    format!("CSeq: {} ACK", self.invite_seq),
                    self.contact(),
                ],
                None,
            );
            // Stored before sending, so a 2xx retransmission racing the send is re-ACKed too.
            lock(&self.shared).ack = Some((ack.clone(), addr));
            self.send(&ack, addr).await;
        } else {
            let ack = s::request(
                "ACK",
                &self.request_uri,
                &[
                    self.via(&self.invite_branch),
                    self.from_header(),
                    format!("To: {to}"),
                    format!("Call-ID: {}", self.call_id),
                    format!("CSeq: {} ACK", self.invite_seq),
                ],
                None,
            );
            lock(&self.shared).ack = Some((ack.clone(), self.target));
            self.send(&ack, self.target).await;
        }
        Ok(r.msg)
    }

    /// INVITE and wait for the final response (ACKed).
    pub async fn call(&mut self, dialled: &str, within: Duration) -> Result<SipMsg, String> {
        self.invite(dialled).await;
        self.wait_final(within).await
    }

    /// CANCELs the pending INVITE (same branch, Request-URI, Call-ID, From, To and CSeq number).
    /// Returns the response to the CANCEL and the INVITE's final response (ACKed).
    pub async fn cancel(&mut self, within: Duration) -> Result<(SipMsg, SipMsg), String> {
        let cancel = s::request(
            "CANCEL",
            &self.request_uri,
            &[
                self.via(&self.invite_branch),
                self.from_header(),
                self.to_header.clone(),
                format!("Call-ID: {}", self.call_id),
                format!("CSeq: {} CANCEL", self.invite_seq),
            ],
            None,
        );
        self.send(&cancel, self.target).await;
        let seq = self.invite_seq;
        let resend = Some((cancel, self.target, seq, "CANCEL"));
        let c = self
            .wait_for(0, within, resend, "the response to CANCEL", |m| {
                m.answers(seq, "CANCEL") && m.status().unwrap_or(0) >= 200
            })
            .await?;
        let fin = self.wait_final(within).await?;
        Ok((c.msg, fin))
    }

    /// Sends BYE in the dialog the 2xx made and waits for its final response.
    pub async fn bye(&mut self, within: Duration) -> Result<SipMsg, String> {
        let (contact, addr) = self
            .remote_contact
            .clone()
            .ok_or("caller: BYE without an answered call")?;
        let tag = self
            .remote_tag
            .clone()
            .ok_or("caller: BYE without a remote tag")?;
        let seq = self.next_seq;
        self.next_seq += 1;
        let to_uri = s::uri_of(self.to_header.trim_start_matches("To:").trim());
        let bye = s::request(
            "BYE",
            &contact,
            &[
                self.via(&s::new_branch()),
                self.from_header(),
                format!("To: <{to_uri}>;tag={tag}"),
                format!("Call-ID: {}", self.call_id),
                format!("CSeq: {seq} BYE"),
            ],
            None,
        );
        self.send(&bye, addr).await;
        let from = self.log.len();
        let r = self
            .wait_for(
                from,
                within,
                Some((bye, addr, seq, "BYE")),
                "the response to BYE",
                |m| m.answers(seq, "BYE") && m.status().unwrap_or(0) >= 200,
            )
            .await?;
        Ok(r.msg)
    }

    /// Waits for a BYE from the far end (the background task has already answered it 200).
    pub async fn wait_bye(&mut self, within: Duration) -> Result<Received, String> {
        self.wait_for(0, within, None, "a BYE", |m| m.method() == Some("BYE"))
            .await
    }

    /// When the far end's BYE arrived, if it has.
    pub fn bye_received(&self) -> Option<Instant> {
        lock(&self.shared).bye_received
    }

    /// The telephone-event payload type of the answer (the 2xx to the INVITE, else any 18x).
    pub fn answer_telephone_event_pt(&self) -> Option<u8> {
        let seq = self.invite_seq;
        let mut answers: Vec<&Received> = self
            .log
            .iter()
            .filter(|r| r.msg.answers(seq, "INVITE") && r.msg.sdp().is_some())
            .collect();
        answers.sort_by_key(|r| std::cmp::Reverse(r.msg.status().unwrap_or(0)));
        answers
            .first()
            .and_then(|r| s::telephone_event_pt(&r.msg.body))
    }

    /// Sends one SIP INFO in the answered dialog (to the far end's Contact, a new CSeq) with
    /// `content_type` and `body`, and waits for its final response.
    pub async fn info(
        &mut self,
        content_type: &str,
        body: &str,
        within: Duration,
    ) -> Result<SipMsg, String> {
        let (contact, addr) = self
            .remote_contact
            .clone()
            .ok_or("caller: INFO without an answered call")?;
        let tag = self
            .remote_tag
            .clone()
            .ok_or("caller: INFO without a remote tag")?;
        let seq = self.next_seq;
        self.next_seq += 1;
        let to_uri = s::uri_of(self.to_header.trim_start_matches("To:").trim());
        let info = s::request_with_body(
            "INFO",
            &contact,
            &[
                self.via(&s::new_branch()),
                self.from_header(),
                format!("To: <{to_uri}>;tag={tag}"),
                format!("Call-ID: {}", self.call_id),
                format!("CSeq: {seq} INFO"),
                self.contact(),
            ],
            content_type,
            body,
        );
        self.send(&info, addr).await;
        let from = self.log.len();
        let r = self
            .wait_for(
                from,
                within,
                Some((info, addr, seq, "INFO")),
                "the response to INFO",
                |m| m.answers(seq, "INFO") && m.status().unwrap_or(0) >= 200,
            )
            .await?;
        Ok(r.msg)
    }

    /// Sends a `application/dtmf-relay` INFO for one key (`Signal=K`, `Duration=ms`).
    pub async fn info_dtmf(
        &mut self,
        key: char,
        duration_ms: u32,
        within: Duration,
    ) -> Result<SipMsg, String> {
        let body = format!("Signal={key}\r\nDuration={duration_ms}\r\n");
        self.info("application/dtmf-relay", &body, within).await
    }

    /// Sends `samples` to the answered media address with the negotiated codec.
    pub fn start_audio(&self, samples: Vec<i16>) -> Result<JoinHandle<u32>, String> {
        let sdp = self
            .remote_sdp
            .clone()
            .ok_or("caller: no SDP answer to send audio to")?;
        let codec = sdp
            .g711()
            .ok_or("caller: the answer has no G.711 payload type")?;
        Ok(self.rtp.send_audio(sdp.addr, codec, samples))
    }
}

impl Drop for CallerPhone {
    fn drop(&mut self) {
        self.rx_task.abort();
    }
}

async fn caller_rx_loop(
    sock: Arc<UdpSocket>,
    me: SocketAddr,
    shared: Arc<Mutex<CallerShared>>,
    tx: mpsc::UnboundedSender<Received>,
) {
    let mut buf = vec![0u8; s::MAX_MESSAGE];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let at = Instant::now();
        let msg = match SipMsg::parse(&buf[..n]) {
            Ok(m) => m,
            Err(e) => {
                lock(&shared).errors.push(e);
                continue;
            }
        };
        match (msg.method(), msg.status()) {
            (Some("BYE"), _) => {
                lock(&shared).bye_received.get_or_insert(at);
                let ok = s::response(
                    &msg,
                    200,
                    "OK",
                    None,
                    &[format!("Contact: <sip:caller@{me}>")],
                    None,
                );
                let _ = sock.send_to(&ok, from).await;
            }
            (Some("OPTIONS"), _) => {
                let ok = s::response(&msg, 200, "OK", None, &[], None);
                let _ = sock.send_to(&ok, from).await;
            }
            (Some("ACK"), _) => {}
            (Some(_), _) => {
                let no = s::response(&msg, 501, "Not Implemented", None, &[], None);
                let _ = sock.send_to(&no, from).await;
            }
            (None, Some(st)) if (200..300).contains(&st) && msg.cseq().1 == "INVITE" => {
                // A retransmitted 2xx: the ACK again (RFC 3261 §13.2.2.4).
                let ack = lock(&shared).ack.clone();
                if let Some((ack, to)) = ack {
                    let _ = sock.send_to(&ack, to).await;
                }
            }
            _ => {}
        }
        if tx.send(Received { at, from, msg }).is_err() {
            return;
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Agent

/// How the agent phone answers an INVITE (after 100 Trying and 180 Ringing).
#[derive(Clone, Copy, Debug)]
pub enum AgentAnswer {
    /// 200 with SDP (PCMU + telephone-event) after this long.
    After(Duration),
    /// 486 Busy Here after this long.
    Busy(Duration),
    /// Rings until CANCELled.
    Never,
}

/// Everything the agent phone saw and did; inspect with [`AgentPhone::state`].
#[derive(Clone, Debug, Default)]
pub struct AgentState {
    /// Every request received.
    pub requests: Vec<Received>,
    /// Every response received (to our BYE).
    pub responses: Vec<Received>,
    /// The INVITE being handled.
    pub invite: Option<Received>,
    /// Final status sent to the INVITE.
    pub final_sent: Option<u16>,
    pub cancel_received: Option<Instant>,
    /// ACK for our final response (2xx or not).
    pub acked: Option<Instant>,
    pub bye_received: Option<Instant>,
    /// Status of the response to our own BYE.
    pub bye_answered: Option<u16>,
    /// Media address from the INVITE's SDP offer.
    pub remote_sdp: Option<s::Sdp>,
    /// Messages the strict parser refused.
    pub errors: Vec<String>,
}

enum AgentCmd {
    Hangup,
}

/// The agent's phone (the PBX side of the gateway): answers one call at a time.
pub struct AgentPhone {
    pub sip_addr: SocketAddr,
    pub rtp: RtpEndpoint,
    state: Arc<Mutex<AgentState>>,
    changed: watch::Receiver<u64>,
    cmd: mpsc::UnboundedSender<AgentCmd>,
    task: JoinHandle<()>,
}

impl AgentPhone {
    pub async fn start(answer: AgentAnswer) -> AgentPhone {
        let (sock, sip_addr) = bind_sip().await;
        let rtp = RtpEndpoint::bind().await;
        let state = Arc::new(Mutex::new(AgentState::default()));
        let (bump, changed) = watch::channel(0u64);
        let (cmd, cmd_rx) = mpsc::unbounded_channel();
        let agent = AgentTask {
            sock,
            me: sip_addr,
            rtp_addr: rtp.addr,
            answer,
            state: state.clone(),
            bump,
            tag: s::new_tag(),
            pending_final: None,
            retransmit: None,
            bye: None,
            next_seq: 1,
        };
        let task = tokio::spawn(agent.run(cmd_rx));
        AgentPhone {
            sip_addr,
            rtp,
            state,
            changed,
            cmd,
            task,
        }
    }

    /// The route target that reaches this phone.
    pub fn uri(&self) -> String {
        format!("sip:agent@{}", self.sip_addr)
    }

    /// A snapshot of what the agent saw.
    pub fn state(&self) -> AgentState {
        lock(&self.state).clone()
    }

    /// Waits until `pred` holds for the agent's state.
    pub async fn wait_until(
        &self,
        within: Duration,
        what: &str,
        pred: impl Fn(&AgentState) -> bool,
    ) -> Result<AgentState, String> {
        let deadline = Instant::now() + within;
        let mut changed = self.changed.clone();
        loop {
            changed.borrow_and_update();
            {
                let st = lock(&self.state);
                if pred(&st) {
                    return Ok(st.clone());
                }
            }
            match timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(format!("agent: task ended waiting for {what}")),
                Err(_) => {
                    let st = lock(&self.state);
                    let seen: Vec<String> = st
                        .requests
                        .iter()
                        .map(|r| r.msg.first_line.clone())
                        .collect();
                    return Err(format!(
                        "agent: timed out after {within:?} waiting for {what}; requests: {}",
                        seen.join(" | ")
                    ));
                }
            }
        }
    }

    /// Sends `samples` to the media address of the INVITE's offer as PCMU.
    pub fn start_audio(&self, samples: Vec<i16>) -> Result<JoinHandle<u32>, String> {
        let sdp = self
            .state()
            .remote_sdp
            .ok_or("agent: no SDP offer to send audio to")?;
        if !sdp.payload_types.contains(&0) {
            return Err(format!("agent: offer {:?} lacks PCMU", sdp.payload_types));
        }
        Ok(self.rtp.send_audio(sdp.addr, G711::Pcmu, samples))
    }

    /// Sends BYE in the answered dialog and waits for its final response.
    pub async fn hangup(&self, within: Duration) -> Result<u16, String> {
        self.cmd
            .send(AgentCmd::Hangup)
            .map_err(|_| "agent: task ended".to_string())?;
        let st = self
            .wait_until(within, "the response to our BYE", |s| {
                s.bye_answered.is_some()
            })
            .await?;
        Ok(st.bye_answered.unwrap_or(0))
    }
}

impl Drop for AgentPhone {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct AgentTask {
    sock: Arc<UdpSocket>,
    me: SocketAddr,
    rtp_addr: SocketAddr,
    answer: AgentAnswer,
    state: Arc<Mutex<AgentState>>,
    bump: watch::Sender<u64>,
    tag: String,
    /// Final response to send at a time: (when, INVITE, status).
    pending_final: Option<(Instant, SipMsg, SocketAddr, u16)>,
    /// Final INVITE response retransmitted until ACK: (bytes, to, next, interval).
    retransmit: Option<(Vec<u8>, SocketAddr, Instant, Duration)>,
    /// Our BYE retransmitted until answered: (bytes, to, next, interval, seq).
    bye: Option<(Vec<u8>, SocketAddr, Instant, Duration, u32)>,
    next_seq: u32,
}

impl AgentTask {
    fn changed(&self) {
        self.bump.send_modify(|v| *v += 1);
    }

    async fn send(&self, bytes: &[u8], to: SocketAddr) {
        let _ = self.sock.send_to(bytes, to).await;
    }

    fn contact(&self) -> String {
        format!("Contact: <sip:agent@{}>", self.me)
    }

    async fn run(mut self, mut cmd: mpsc::UnboundedReceiver<AgentCmd>) {
        let mut buf = vec![0u8; s::MAX_MESSAGE];
        loop {
            let next = [
                self.pending_final.as_ref().map(|p| p.0),
                self.retransmit.as_ref().map(|r| r.2),
                self.bye.as_ref().map(|b| b.2),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                r = self.sock.recv_from(&mut buf) => {
                    let Ok((n, from)) = r else { continue };
                    let at = Instant::now();
                    match SipMsg::parse(&buf[..n]) {
                        Ok(msg) => self.on_message(Received { at, from, msg }).await,
                        Err(e) => lock(&self.state).errors.push(e),
                    }
                    self.changed();
                }
                c = cmd.recv() => match c {
                    Some(AgentCmd::Hangup) => { self.send_bye().await; self.changed(); }
                    None => return,
                },
                _ = sleep_until(next) => { self.on_timer().await; self.changed(); }
            }
        }
    }

    async fn on_timer(&mut self) {
        let now = Instant::now();
        if let Some((when, invite, from, status)) = self.pending_final.take() {
            if when <= now {
                self.send_final(&invite, from, status).await;
            } else {
                self.pending_final = Some((when, invite, from, status));
            }
        }
        if let Some((bytes, to, next, interval)) = self.retransmit.take() {
            if next <= now {
                self.send(&bytes, to).await;
                let interval = (interval * 2).min(Duration::from_secs(4));
                self.retransmit = Some((bytes, to, now + interval, interval));
            } else {
                self.retransmit = Some((bytes, to, next, interval));
            }
        }
        if let Some((bytes, to, next, interval, seq)) = self.bye.take() {
            if next <= now {
                self.send(&bytes, to).await;
                let interval = (interval * 2).min(Duration::from_secs(4));
                self.bye = Some((bytes, to, now + interval, interval, seq));
            } else {
                self.bye = Some((bytes, to, next, interval, seq));
            }
        }
    }

    async fn send_final(&mut self, invite: &SipMsg, to: SocketAddr, status: u16) {
        let bytes = if status == 200 {
            let sdp = s::sdp_body("agent", self.rtp_addr, &[0, 101]);
            s::response(
                invite,
                200,
                "OK",
                Some(&self.tag),
                &[self.contact()],
                Some(&sdp),
            )
        } else {
            let reason = match status {
                486 => "Busy Here",
                487 => "Request Terminated",
                _ => "Rejected",
            };
            s::response(invite, status, reason, Some(&self.tag), &[], None)
        };
        self.send(&bytes, to).await;
        self.retransmit = Some((bytes, to, Instant::now() + T1, T1));
        lock(&self.state).final_sent = Some(status);
    }

    async fn on_message(&mut self, r: Received) {
        let msg = r.msg.clone();
        let from = r.from;
        if msg.status().is_some() {
            let (seq, method) = msg.cseq();
            if method == "BYE"
                && matches!(&self.bye, Some(b) if b.4 == seq)
                && msg.status().unwrap_or(0) >= 200
            {
                self.bye = None;
                lock(&self.state).bye_answered = msg.status();
            }
            lock(&self.state).responses.push(r);
            return;
        }
        lock(&self.state).requests.push(r.clone());
        match msg.method().unwrap_or_default() {
            "INVITE" => {
                let same = {
                    let st = lock(&self.state);
                    st.invite.as_ref().map(|i| {
                        i.msg.top_branch() == msg.top_branch() && i.msg.call_id() == msg.call_id()
                    })
                };
                if same == Some(true) {
                    // Retransmission: repeat the last response.
                    if let Some((bytes, to, _, _)) = &self.retransmit {
                        self.send(bytes, *to).await;
                    } else {
                        let ringing = s::response(
                            &msg,
                            180,
                            "Ringing",
                            Some(&self.tag),
                            &[self.contact()],
                            None,
                        );
                        self.send(&ringing, from).await;
                    }
                    return;
                }
                // A new call replaces whatever was there.
                self.tag = s::new_tag();
                self.retransmit = None;
                {
                    let mut st = lock(&self.state);
                    st.invite = Some(r.clone());
                    st.remote_sdp = msg.sdp();
                    st.final_sent = None;
                    st.acked = None;
                    st.cancel_received = None;
                    st.bye_received = None;
                    st.bye_answered = None;
                }
                self.send(&s::response(&msg, 100, "Trying", None, &[], None), from)
                    .await;
                let ringing = s::response(
                    &msg,
                    180,
                    "Ringing",
                    Some(&self.tag),
                    &[self.contact()],
                    None,
                );
                self.send(&ringing, from).await;
                self.pending_final = match self.answer {
                    AgentAnswer::After(d) => Some((Instant::now() + d, msg, from, 200)),
                    AgentAnswer::Busy(d) => Some((Instant::now() + d, msg, from, 486)),
                    AgentAnswer::Never => None,
                };
            }
            "ACK" => {
                self.retransmit = None;
                lock(&self.state).acked.get_or_insert(r.at);
            }
            "CANCEL" => {
                self.send(
                    &s::response(&msg, 200, "OK", Some(&self.tag), &[], None),
                    from,
                )
                .await;
                lock(&self.state).cancel_received.get_or_insert(r.at);
                let invite = lock(&self.state).invite.clone();
                let matches = invite
                    .as_ref()
                    .is_some_and(|i| i.msg.top_branch() == msg.top_branch());
                if matches && lock(&self.state).final_sent.is_none() {
                    self.pending_final = None;
                    // Invariant: `matches` implies the INVITE is there.
                    let inv = invite.expect("matched INVITE");
                    self.send_final(&inv.msg, inv.from, 487).await;
                }
            }
            "BYE" => {
                lock(&self.state).bye_received.get_or_insert(r.at);
                self.send(&s::response(&msg, 200, "OK", None, &[], None), from)
                    .await;
            }
            "OPTIONS" => {
                self.send(&s::response(&msg, 200, "OK", None, &[], None), from)
                    .await
            }
            _ => {
                self.send(
                    &s::response(&msg, 501, "Not Implemented", None, &[], None),
                    from,
                )
                .await
            }
        }
    }

    /// BYE to the Contact of the INVITE, From = the INVITE's To with our tag, To = its From.
    async fn send_bye(&mut self) {
        let Some(inv) = lock(&self.state).invite.clone() else {
            return;
        };
        let m = &inv.msg;
        let Some(contact) = m.contact_uri() else {
            lock(&self.state)
                .errors
                .push("agent: INVITE without Contact; cannot BYE".into());
            return;
        };
        let to = s::uri_addr(&contact).unwrap_or(inv.from);
        let seq = self.next_seq;
        self.next_seq += 1;
        let bye = s::request(
            "BYE",
            &contact,
            &[
                format!(
                    "Via: SIP/2.0/UDP {};branch={};rport",
                    self.me,
                    s::new_branch()
                ),
                format!(
                    "From: <{}>;tag={}",
                    s::uri_of(m.header("to").unwrap_or_default()),
                    self.tag
                ),
                format!("To: {}", m.header("from").unwrap_or_default()),
                format!("Call-ID: {}", m.call_id()),
                format!("CSeq: {seq} BYE"),
                self.contact(),
            ],
            None,
        );
        self.send(&bye, to).await;
        self.bye = Some((bye, to, Instant::now() + T1, T1, seq));
    }
}
