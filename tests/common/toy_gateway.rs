//! A deliberately tiny stand-in B2BUA, for harness self-tests only: it proves the phone-side
//! steps of the real call-path tests (100, 183 + early-media announcement, agent INVITEd in
//! parallel, 200 after the announcement, relay both ways, BYE either side) before the real
//! gateway is available. One call, no error handling beyond "give up"; not a model of anything.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use callgate::media::g711::G711;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::sip::{self as s, SipMsg};

pub struct ToyGateway {
    pub sip_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for ToyGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn udp() -> (Arc<UdpSocket>, SocketAddr) {
    let sock = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind toy socket");
    let addr = sock.local_addr().expect("toy address");
    (Arc::new(sock), addr)
}

/// Forwards RTP arriving on `from` to `to` (sent from `via`), forever.
fn relay(from: Arc<UdpSocket>, via: Arc<UdpSocket>, to: SocketAddr) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, _)) = from.recv_from(&mut buf).await {
            let _ = via.send_to(&buf[..n], to).await;
        }
    })
}

/// Starts the toy, routing every call to the agent at `agent_uri` and playing `announcement_8k`.
pub async fn start(agent_uri: String, announcement_8k: Vec<i16>) -> ToyGateway {
    let (sip, sip_addr) = udp().await;
    let task = tokio::spawn(run(sip, sip_addr, agent_uri, announcement_8k));
    ToyGateway { sip_addr, task }
}

async fn run(sip: Arc<UdpSocket>, me: SocketAddr, agent_uri: String, announcement: Vec<i16>) {
    let agent_addr = s::uri_addr(&agent_uri).expect("agent URI is IP:port");
    let (rtp_a, rtp_a_addr) = udp().await; // toward the caller
    let (rtp_b, rtp_b_addr) = udp().await; // toward the agent
    let caller_tag = s::new_tag();
    let (agent_call_id, agent_from_tag) = (s::new_call_id(), s::new_tag());
    let mut buf = vec![0u8; 65_535];
    let mut caller: Option<(SipMsg, SocketAddr)> = None;
    let mut caller_media: Option<SocketAddr> = None;
    let mut agent_answer: Option<SipMsg> = None;
    let mut announcement_done: Option<JoinHandle<u32>> = None;
    let mut bridged = false;
    let mut relays: Vec<JoinHandle<()>> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let contact = format!("Contact: <sip:toy@{me}>");
    let agent_headers = |seq: u32, method: &str, to_tag: Option<&str>| -> Vec<String> {
        vec![
            format!("Via: SIP/2.0/UDP {me};branch={};rport", s::new_branch()),
            format!(
                "From: <sip:{}@{me}>;tag={agent_from_tag}",
                super::CALLER_NUMBER
            ),
            match to_tag {
                Some(t) => format!("To: <{agent_uri}>;tag={t}"),
                None => format!("To: <{agent_uri}>"),
            },
            format!("Call-ID: {agent_call_id}"),
            format!("CSeq: {seq} {method}"),
            format!("Contact: <sip:toy@{me}>"),
        ]
    };
    loop {
        let (n, from) = tokio::select! {
            r = sip.recv_from(&mut buf) => match r { Ok(x) => x, Err(_) => continue },
            _ = tick.tick() => {
                // Bridge once the announcement has ended and the agent answered.
                let done = announcement_done.as_ref().is_some_and(|h| h.is_finished());
                if !bridged && done && agent_answer.is_some() {
                    if let (Some((inv, src)), Some(cm), Some(ans)) = (&caller, caller_media, &agent_answer) {
                        let sdp = s::sdp_body("toy", rtp_a_addr, &[0, 101]);
                        let ok = s::response(inv, 200, "OK", Some(&caller_tag), &[contact.clone()], Some(&sdp));
                        let _ = sip.send_to(&ok, *src).await;
                        let agent_media = ans.sdp().expect("agent answered with SDP").addr;
                        relays.push(relay(rtp_a.clone(), rtp_b.clone(), agent_media));
                        relays.push(relay(rtp_b.clone(), rtp_a.clone(), cm));
                        bridged = true;
                    }
                }
                continue;
            }
        };
        let Ok(msg) = SipMsg::parse(&buf[..n]) else {
            continue;
        };
        match (msg.method(), msg.status()) {
            (Some("INVITE"), _) if caller.is_none() => {
                let _ = sip
                    .send_to(&s::response(&msg, 100, "Trying", None, &[], None), from)
                    .await;
                let cm = msg.sdp().expect("caller offered SDP").addr;
                let sdp = s::sdp_body("toy", rtp_a_addr, &[0, 101]);
                let early = s::response(
                    &msg,
                    183,
                    "Session Progress",
                    Some(&caller_tag),
                    &[contact.clone()],
                    Some(&sdp),
                );
                let _ = sip.send_to(&early, from).await;
                // Early media: the announcement, paced like a phone would send it.
                announcement_done = Some(tokio::spawn(send_pcmu(
                    rtp_a.clone(),
                    cm,
                    announcement.clone(),
                )));
                caller = Some((msg, from));
                caller_media = Some(cm);
                let offer = s::sdp_body("toy", rtp_b_addr, &[0, 101]);
                let inv = s::request(
                    "INVITE",
                    &agent_uri,
                    &agent_headers(1, "INVITE", None),
                    Some(&offer),
                );
                let _ = sip.send_to(&inv, agent_addr).await;
            }
            (Some("ACK"), _) | (Some("INVITE"), _) => {}
            (Some("BYE"), _) => {
                let _ = sip
                    .send_to(&s::response(&msg, 200, "OK", None, &[], None), from)
                    .await;
                let from_agent = msg.call_id() == agent_call_id;
                if from_agent {
                    if let Some((inv, src)) = &caller {
                        let uri = inv.contact_uri().expect("caller Contact");
                        let bye = s::request(
                            "BYE",
                            &uri,
                            &[
                                format!("Via: SIP/2.0/UDP {me};branch={};rport", s::new_branch()),
                                format!(
                                    "From: {};tag={caller_tag}",
                                    inv.header("to").unwrap_or_default()
                                ),
                                format!("To: {}", inv.header("from").unwrap_or_default()),
                                format!("Call-ID: {}", inv.call_id()),
                                "CSeq: 1 BYE".to_string(),
                            ],
                            None,
                        );
                        let _ = sip.send_to(&bye, s::uri_addr(&uri).unwrap_or(*src)).await;
                    }
                } else if let Some(ans) = &agent_answer {
                    let bye = s::request(
                        "BYE",
                        &agent_uri,
                        &agent_headers(2, "BYE", ans.to_tag().as_deref()),
                        None,
                    );
                    let _ = sip
                        .send_to(&bye, ans.contact_addr().unwrap_or(agent_addr))
                        .await;
                }
            }
            (None, Some(200)) if msg.cseq().1 == "INVITE" && msg.call_id() == agent_call_id => {
                let ack = s::request(
                    "ACK",
                    &agent_uri,
                    &agent_headers(1, "ACK", msg.to_tag().as_deref()),
                    None,
                );
                let _ = sip
                    .send_to(&ack, msg.contact_addr().unwrap_or(agent_addr))
                    .await;
                agent_answer = Some(msg);
            }
            _ => {}
        }
    }
}

async fn send_pcmu(sock: Arc<UdpSocket>, to: SocketAddr, samples: Vec<i16>) -> u32 {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut pkt = Vec::new();
    let mut sent = 0;
    for (i, frame) in samples.chunks(160).enumerate() {
        tick.tick().await;
        let payload: Vec<u8> = frame.iter().map(|&x| G711::Pcmu.encode(x)).collect();
        pkt.clear();
        callgate::media::rtp::write_rtp(
            &mut pkt,
            i == 0,
            0,
            i as u16,
            160 * i as u32,
            callgate::ids::Ssrc(7),
            &payload,
        )
        .expect("PCMU payload type fits");
        let _ = sock.send_to(&pkt, to).await;
        sent += 1;
    }
    sent
}
