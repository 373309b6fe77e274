//! The recording call path, end to end and in-process: `callgate::serve::start` on loopback,
//! simulated phones on both sides (caller = trunk, agent = PBX), a real SQLite database, a real
//! KEK file and recording directory in a temp dir. Each test checks what a listener would hear
//! (aligned cross-correlation of the audio that arrived against the audio that was sent), what the
//! SIP peers saw, and what the gateway recorded and stored.
//!
//! Expectations encoded here (the gateway's contract toward its peers):
//! * INVITE from a trusted source → `100`, then `183` with SDP and the announcement as early
//!   media RTP; the agent is INVITEd in parallel; `200` with SDP once the announcement has
//!   finished *and* the agent answered. Everything the caller hears before the `200` is the
//!   announcement.
//! * After the caller's ACK the legs are bridged both ways and recorded (left caller, right agent).
//! * BYE from either side is answered `200` and forwarded to the other side as a BYE.
//! * Agent `486` → caller `486`; caller CANCEL → `200` to the CANCEL, `487` to the INVITE, and a
//!   CANCEL to the agent; every non-2xx final the gateway receives is ACKed.
//! * Malformed requests get `400` (Via copied so the sender can match it) and disturb nothing;
//!   requests from outside `[sip] trusted` get `403` and never reach the agent.
//!
//! `harness_*` tests need no gateway: they run the phones against each other (or a bare socket)
//! so that a failure in the gateway tests is the gateway's, not the harness's.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use callgate::media::announcement::{Announcement, goertzel_power};
use callgate::media::g711::G711;
use common::audio::{self, best_alignment_correlation, received_audio};
use common::phone::{AgentAnswer, AgentPhone, CallerPhone, RtpRx, T1};
use common::sip::{self as s, SipMsg};
use common::{CALLER_NUMBER, DIALLED, GatewayEnv, GatewayOpts, SIP_WAIT};
use tokio::time::{Instant, sleep};

use callgate::serve;

/// No test may take longer than this, whatever the gateway does.
const TEST_LIMIT: Duration = Duration::from_secs(30);

async fn bounded<F: Future<Output = ()>>(f: F) {
    if tokio::time::timeout(TEST_LIMIT, f).await.is_err() {
        panic!("test exceeded {TEST_LIMIT:?}");
    }
}

fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

async fn start_gateway(env: &GatewayEnv, opts: GatewayOpts<'_>) -> serve::Running {
    start_configured(env.config(&opts)).await
}

async fn start_configured(config: callgate::config::Config) -> serve::Running {
    match tokio::time::timeout(Duration::from_secs(10), serve::start(config)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!("gateway did not start: {e:?}"),
        Err(_) => panic!("gateway did not start within 10 s"),
    }
}

/// Graceful shutdown; after it the database and recording are complete.
async fn stop_gateway(running: serve::Running) {
    running.shutdown();
    match tokio::time::timeout(Duration::from_secs(10), running.join()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("gateway shut down with an error: {e:?}"),
        Err(_) => panic!("gateway did not drain within 10 s of shutdown"),
    }
}

fn statuses(caller: &CallerPhone) -> Vec<u16> {
    caller
        .invite_responses()
        .iter()
        .filter_map(|r| r.msg.status())
        .collect()
}

fn after(packets: &[RtpRx], t: Instant) -> Vec<RtpRx> {
    packets.iter().filter(|p| p.at >= t).cloned().collect()
}

fn assert_corr(what: &str, reference: &[i16], heard: &[i16], max_lag: usize, min: f64) -> i64 {
    let (lag, r) = best_alignment_correlation(reference, heard, max_lag);
    assert!(
        r >= min,
        "{what}: correlation {r:.4} < {min} (best lag {lag}; heard {} samples, rms {:.0}; reference {} samples)",
        heard.len(),
        audio::rms(heard),
        reference.len()
    );
    lag
}

// ================================================================================================
// Through the gateway

/// The phone side of a recorded call through `gateway` (the real one, or the toy in a harness
/// self-test): announcement heard as early media before the 200, then 3 s of A (caller) and B
/// (agent) relayed both ways, then the caller hangs up. Returns (A, B) for the recording checks
/// and the media addresses the gateway gave the caller and the agent in its SDP.
async fn recorded_call_phone_side(
    gateway: std::net::SocketAddr,
    agent: &AgentPhone,
    ann_8k: &[i16],
) -> (Vec<i16>, Vec<i16>, (SocketAddr, SocketAddr)) {
    let mut caller = CallerPhone::new(gateway, CALLER_NUMBER).await;
    caller.invite(DIALLED).await;
    ok(caller
        .wait_invite_response(SIP_WAIT, "100 Trying", |m| m.status() == Some(100))
        .await);
    let early = ok(caller
        .wait_invite_response(SIP_WAIT, "183 Session Progress with SDP", |m| {
            m.status() == Some(183) && m.sdp().is_some()
        })
        .await);
    assert!(
        early.msg.to_tag().is_some(),
        "183 must carry a To tag (early dialog)"
    );
    let to_caller = early.msg.sdp().expect("183 with SDP").addr;
    ok(agent
        .wait_until(
            SIP_WAIT,
            "the gateway's INVITE (in parallel with the announcement)",
            |s| s.invite.is_some(),
        )
        .await);
    let invite = agent.state().invite.expect("INVITE seen");
    let offer = invite
        .msg
        .sdp()
        .expect("the gateway's INVITE to the agent carries an SDP offer");
    assert!(
        offer.payload_types.contains(&0),
        "offer to the agent includes PCMU: {:?}",
        offer.payload_types
    );
    let to_agent = offer.addr;
    assert!(
        invite.msg.contact_addr().is_some(),
        "the gateway's INVITE has a usable Contact"
    );

    let fin = ok(caller.wait_final(Duration::from_secs(10)).await);
    assert_eq!(
        fin.status(),
        Some(200),
        "caller answered: {}",
        caller.summary()
    );
    assert!(
        fin.sdp().is_some(),
        "200 to the caller repeats the SDP answer"
    );
    assert!(
        fin.to_tag().is_some() && fin.contact_addr().is_some(),
        "200 has a To tag and a Contact"
    );
    let st = statuses(&caller);
    assert_eq!(st.first(), Some(&100), "100 Trying comes first: {st:?}");
    let pos183 = st.iter().position(|&c| c == 183).expect("183 seen");
    let pos200 = st.iter().position(|&c| c == 200).expect("200 seen");
    assert!(pos183 < pos200, "183 before 200: {st:?}");
    ok(agent
        .wait_until(SIP_WAIT, "the gateway's ACK of the agent's 200", |s| {
            s.acked.is_some()
        })
        .await);
    let answered = caller.answered_at.expect("answered");

    // The announcement: everything the caller heard before the 200.
    let early_rtp: Vec<RtpRx> = caller
        .rtp
        .received()
        .into_iter()
        .filter(|p| p.at < answered)
        .collect();
    assert!(
        early_rtp.len() >= 70,
        "1.5 s of announcement is 75 packets; heard {} before the 200",
        early_rtp.len()
    );
    let first_early = early_rtp[0].at;
    assert!(
        answered.duration_since(first_early) >= Duration::from_millis(1400),
        "the 200 came {:?} after the announcement started: it must wait for the 1.5 s announcement to end",
        answered.duration_since(first_early)
    );
    let heard_announcement = received_audio(&early_rtp);
    assert_corr(
        "announcement heard by the caller",
        ann_8k,
        &heard_announcement,
        4000,
        0.9,
    );

    // Both talk after the 200/ACK.
    let a = audio::signal_a(3.0);
    let b = audio::signal_b(3.0);
    let talk = Instant::now();
    let send_a = ok(caller.start_audio(a.clone()));
    let send_b = ok(agent.start_audio(b.clone()));
    let (sent_a, sent_b) = (
        send_a.await.expect("caller audio task"),
        send_b.await.expect("agent audio task"),
    );
    assert_eq!((sent_a, sent_b), (150, 150));
    sleep(Duration::from_millis(300)).await; // the last packets cross the relay

    let agent_heard = received_audio(&after(&agent.rtp.received(), talk));
    assert_corr(
        "caller → agent relay (agent hears A)",
        &a,
        &agent_heard,
        8000,
        0.95,
    );
    let caller_heard = received_audio(&after(&caller.rtp.received(), answered));
    assert_corr(
        "agent → caller relay (caller hears B)",
        &b,
        &caller_heard,
        8000,
        0.95,
    );

    // Caller hangs up.
    let bye = ok(caller.bye(SIP_WAIT).await);
    assert_eq!(bye.status(), Some(200), "caller's BYE answered 200");
    ok(agent
        .wait_until(SIP_WAIT, "BYE forwarded to the agent", |s| {
            s.bye_received.is_some()
        })
        .await);
    assert!(
        caller.protocol_errors().is_empty(),
        "caller got malformed SIP: {:?}",
        caller.protocol_errors()
    );
    assert!(
        agent.state().errors.is_empty(),
        "agent got malformed SIP: {:?}",
        agent.state().errors
    );
    (a, b, (to_caller, to_agent))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_hears_announcement_then_both_directions_relay_and_record() {
    bounded(async {
        let ann_16k = audio::announcement_at(16_000, 1.5);
        let ann_8k = audio::announcement_at(8_000, 1.5);
        let env = GatewayEnv::new(&ann_16k);
        let agent = AgentPhone::start(AgentAnswer::After(Duration::from_millis(300))).await;
        let target = agent.uri();
        let gw = start_gateway(
            &env,
            GatewayOpts {
                rtp_ports: (40_000, 40_099),
                target: &target,
                trusted: &["127.0.0.0/8"],
            },
        )
        .await;

        let (a, b, (to_caller, to_agent)) =
            recorded_call_phone_side(gw.sip_addr, &agent, &ann_8k).await;
        stop_gateway(gw).await;
        assert_ne!(
            to_caller.port(),
            to_agent.port(),
            "a port pair per leg by default"
        );
        check_recorded_call(&env, &a, &b).await;
    })
    .await;
}

/// `[media] shared_ports`: the same call, with both legs (and every other call on the media
/// thread) on one port; the gateway tells the legs apart by the phones' addresses. The audio
/// crosses both ways and is recorded on the right channels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_ports_relay_and_record_both_directions() {
    bounded(async {
        let ann_16k = audio::announcement_at(16_000, 1.5);
        let ann_8k = audio::announcement_at(8_000, 1.5);
        let env = GatewayEnv::new(&ann_16k);
        let agent = AgentPhone::start(AgentAnswer::After(Duration::from_millis(300))).await;
        let target = agent.uri();
        let text = env
            .config_text(&GatewayOpts {
                rtp_ports: (40_100, 40_199),
                target: &target,
                trusted: &["127.0.0.0/8"],
            })
            .replace("[media]\n", "[media]\nshared_ports = true\n");
        let config = callgate::config::Config::parse(&text, std::path::Path::new("test.toml"))
            .expect("config with shared ports");
        assert!(config.media.shared_ports);
        let gw = start_configured(config).await;

        let (a, b, (to_caller, to_agent)) =
            recorded_call_phone_side(gw.sip_addr, &agent, &ann_8k).await;
        stop_gateway(gw).await;
        assert_eq!(
            to_caller.port(),
            to_agent.port(),
            "one shared port for both legs"
        );
        check_recorded_call(&env, &a, &b).await;
    })
    .await;
}

/// The call record and the recording of [`recorded_call_phone_side`]'s call.
async fn check_recorded_call(env: &GatewayEnv, a: &[i16], b: &[i16]) {
    let calls = env.calls().await;
    assert_eq!(calls.len(), 1, "one call record: {calls:?}");
    let c = &calls[0];
    assert_eq!(c.hangup_side.as_deref(), Some("caller"), "{c:?}");
    assert_eq!(c.hangup_cause.as_deref(), Some("normal"), "{c:?}");
    assert_eq!(c.recording_state, "ok", "{c:?}");
    assert_eq!(c.announcement_state, "played", "{c:?}");
    let sha = Announcement::load(&env.announcement)
        .expect("load announcement")
        .sha256_hex();
    assert_eq!(
        c.announcement_sha256.as_deref(),
        Some(sha.as_str()),
        "the record names the notice played"
    );
    assert!(
        c.caller_packets > 100 && c.agent_packets > 100,
        "packets: caller {} agent {}",
        c.caller_packets,
        c.agent_packets
    );
    assert!(c.recording_id.is_some() && c.key_id.is_some(), "{c:?}");

    let (left, right) = env.decrypt_recording(c).await;
    assert_corr(
        "recording left channel (caller) is A",
        a,
        &left,
        16_000,
        0.95,
    );
    assert_corr(
        "recording right channel (agent) is B",
        b,
        &right,
        16_000,
        0.95,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_busy_maps_to_486() {
    bounded(async {
        let env = GatewayEnv::new(&audio::announcement_at(16_000, 1.5));
        let agent = AgentPhone::start(AgentAnswer::Busy(Duration::from_millis(200))).await;
        let target = agent.uri();
        let gw = start_gateway(
            &env,
            GatewayOpts {
                rtp_ports: (40_100, 40_199),
                target: &target,
                trusted: &["127.0.0.0/8"],
            },
        )
        .await;

        let mut caller = CallerPhone::new(gw.sip_addr, CALLER_NUMBER).await;
        let fin = ok(caller.call(DIALLED, Duration::from_secs(10)).await);
        assert_eq!(
            fin.status(),
            Some(486),
            "agent busy → caller 486: {}",
            caller.summary()
        );
        ok(agent
            .wait_until(SIP_WAIT, "the gateway's ACK of the agent's 486", |s| {
                s.acked.is_some()
            })
            .await);
        assert_eq!(agent.state().final_sent, Some(486));
        stop_gateway(gw).await;

        let calls = env.calls().await;
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].final_status, Some(486), "{:?}", calls[0]);
        assert_eq!(
            calls[0].hangup_cause.as_deref(),
            Some("busy"),
            "{:?}",
            calls[0]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_answer_gives_487_and_cancels_agent() {
    bounded(async {
        let env = GatewayEnv::new(&audio::announcement_at(16_000, 1.5));
        let agent = AgentPhone::start(AgentAnswer::Never).await;
        let target = agent.uri();
        let gw = start_gateway(
            &env,
            GatewayOpts {
                rtp_ports: (40_200, 40_299),
                target: &target,
                trusted: &["127.0.0.0/8"],
            },
        )
        .await;

        let mut caller = CallerPhone::new(gw.sip_addr, CALLER_NUMBER).await;
        caller.invite(DIALLED).await;
        ok(caller
            .wait_invite_response(SIP_WAIT, "183 with SDP", |m| {
                m.status() == Some(183) && m.sdp().is_some()
            })
            .await);
        ok(agent
            .wait_until(SIP_WAIT, "the gateway's INVITE", |s| s.invite.is_some())
            .await);
        sleep(Duration::from_millis(300)).await; // mid-announcement, agent ringing
        let (cancel_resp, fin) = ok(caller.cancel(SIP_WAIT).await);
        assert_eq!(cancel_resp.status(), Some(200), "CANCEL answered 200");
        assert_eq!(
            fin.status(),
            Some(487),
            "INVITE ends 487 Request Terminated: {}",
            caller.summary()
        );
        let st = ok(agent
            .wait_until(SIP_WAIT, "CANCEL forwarded to the agent (and its 487 sent)", |s| {
                s.cancel_received.is_some() && s.final_sent.is_some()
            })
            .await);
        assert_eq!(st.final_sent, Some(487));
        ok(agent
            .wait_until(SIP_WAIT, "the gateway's ACK of the agent's 487", |s| {
                s.acked.is_some()
            })
            .await);
        stop_gateway(gw).await;

        let calls = env.calls().await;
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(
            calls[0].hangup_cause.as_deref(),
            Some("cancelled"),
            "{:?}",
            calls[0]
        );
        assert_eq!(
            calls[0].hangup_side.as_deref(),
            Some("caller"),
            "{:?}",
            calls[0]
        );
        assert_eq!(calls[0].final_status, Some(487), "{:?}", calls[0]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_hangs_up() {
    bounded(async {
        let env = GatewayEnv::new(&audio::announcement_at(16_000, 1.0));
        let agent = AgentPhone::start(AgentAnswer::After(Duration::from_millis(200))).await;
        let target = agent.uri();
        let gw = start_gateway(
            &env,
            GatewayOpts {
                rtp_ports: (40_300, 40_399),
                target: &target,
                trusted: &["127.0.0.0/8"],
            },
        )
        .await;

        let mut caller = CallerPhone::new(gw.sip_addr, CALLER_NUMBER).await;
        let fin = ok(caller.call(DIALLED, Duration::from_secs(10)).await);
        assert_eq!(fin.status(), Some(200), "{}", caller.summary());
        ok(agent
            .wait_until(SIP_WAIT, "ACK", |s| s.acked.is_some())
            .await);
        let send_a = ok(caller.start_audio(audio::signal_a(1.0)));
        let send_b = ok(agent.start_audio(audio::signal_b(1.0)));
        let _ = (send_a.await, send_b.await);

        assert_eq!(
            ok(agent.hangup(SIP_WAIT).await),
            200,
            "agent's BYE answered 200"
        );
        let bye = ok(caller.wait_bye(SIP_WAIT).await);
        assert_eq!(
            bye.msg.call_id(),
            caller.call_id,
            "the gateway's BYE is in the caller's dialog"
        );
        assert_eq!(
            bye.msg.from_tag(),
            caller.remote_tag,
            "BYE From tag = the tag of the gateway's 200"
        );
        stop_gateway(gw).await;

        let calls = env.calls().await;
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(
            calls[0].hangup_side.as_deref(),
            Some("agent"),
            "{:?}",
            calls[0]
        );
        assert_eq!(
            calls[0].hangup_cause.as_deref(),
            Some("normal"),
            "{:?}",
            calls[0]
        );
        assert_eq!(calls[0].recording_state, "ok", "{:?}", calls[0]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_gets_400_and_calls_continue() {
    bounded(async {
        let env = GatewayEnv::new(&audio::announcement_at(16_000, 0.5));
        let agent = AgentPhone::start(AgentAnswer::After(Duration::from_millis(100))).await;
        let target = agent.uri();
        let gw = start_gateway(&env, GatewayOpts { rtp_ports: (40_400, 40_499), target: &target, trusted: &["127.0.0.0/8"] }).await;
        let to = gw.sip_addr;

        // A parseable request line and Via, then garbage.
        let garbage = common::send_raw_expect_final(
            to,
            |me| {
                let mut b = format!(
                    "INVITE sip:{DIALLED}@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKgarbage1;rport\r\n"
                )
                .into_bytes();
                b.extend_from_slice(b"From: \x01\x02<<<sip:\r\n\xff\xfe@@@ not a header\r\nCSeq: banana\r\nContent-Length: 7\r\n\r\n\x00\x00\x00");
                b
            },
            SIP_WAIT,
        )
        .await
        .expect("a response to the malformed request");
        assert!(garbage.starts_with("SIP/2.0 400"), "malformed request → 400, got: {garbage:?}");
        assert!(garbage.contains("branch=z9hG4bKgarbage1"), "the 400 copies the Via: {garbage:?}");

        // Well-formed but without Call-ID.
        let no_call_id = common::send_raw_expect_final(
            to,
            |me| {
                let sdp = s::sdp_body("x", me, &[0]);
                s::request(
                    "INVITE",
                    &format!("sip:{DIALLED}@{to}"),
                    &[
                        format!("Via: SIP/2.0/UDP {me};branch=z9hG4bKnocallid1;rport"),
                        format!("From: <sip:{CALLER_NUMBER}@127.0.0.1>;tag=abc"),
                        format!("To: <sip:{DIALLED}@{to}>"),
                        "CSeq: 1 INVITE".into(),
                        format!("Contact: <sip:x@{me}>"),
                    ],
                    Some(&sdp),
                )
            },
            SIP_WAIT,
        )
        .await
        .expect("a response to the INVITE without Call-ID");
        assert!(no_call_id.starts_with("SIP/2.0 400"), "missing Call-ID → 400, got: {no_call_id:?}");
        assert!(agent.state().invite.is_none(), "nothing malformed reached the agent");

        // The gateway still takes calls.
        let mut caller = CallerPhone::new(to, CALLER_NUMBER).await;
        let fin = ok(caller.call(DIALLED, Duration::from_secs(10)).await);
        assert_eq!(fin.status(), Some(200), "a normal call after the malformed ones: {}", caller.summary());
        assert_eq!(ok(caller.bye(SIP_WAIT).await).status(), Some(200));
        stop_gateway(gw).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_source_gets_403() {
    bounded(async {
        let env = GatewayEnv::new(&audio::announcement_at(16_000, 0.5));
        let agent = AgentPhone::start(AgentAnswer::After(Duration::from_millis(100))).await;
        let target = agent.uri();
        let gw = start_gateway(
            &env,
            GatewayOpts {
                rtp_ports: (40_500, 40_599),
                target: &target,
                trusted: &["10.0.0.0/8"],
            },
        )
        .await;

        let mut caller = CallerPhone::new(gw.sip_addr, CALLER_NUMBER).await;
        let fin = ok(caller.call(DIALLED, SIP_WAIT).await);
        assert_eq!(
            fin.status(),
            Some(403),
            "loopback is outside trusted 10.0.0.0/8: {}",
            caller.summary()
        );
        sleep(Duration::from_millis(200)).await;
        assert!(
            agent.state().invite.is_none(),
            "an untrusted call never reaches the agent"
        );
        assert!(
            caller.rtp.received().is_empty(),
            "no announcement for an untrusted source"
        );
        stop_gateway(gw).await;
    })
    .await;
}

// ================================================================================================
// Harness self-tests (no gateway)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_signals_are_distinct_and_survive_resampling_and_g711() {
    let a = audio::signal_a(3.0);
    let b = audio::signal_b(3.0);
    let (_, ab) = best_alignment_correlation(&a, &b, 8000);
    assert!(ab.abs() < 0.2, "A and B must not correlate: {ab}");
    let (_, aa) = best_alignment_correlation(&a, &audio::through_g711(G711::Pcmu, &a), 100);
    assert!(aa > 0.99, "A survives PCMU: {aa}");
    let (_, bb) = best_alignment_correlation(&b, &audio::through_g711(G711::Pcma, &b), 100);
    assert!(bb > 0.99, "B survives PCMA: {bb}");

    // The lag search finds a known delay.
    let mut delayed = vec![0i16; 1234];
    delayed.extend_from_slice(&a);
    assert_eq!(best_alignment_correlation(&a, &delayed, 8000).0, 1234);
    assert_eq!(best_alignment_correlation(&delayed, &a, 8000).0, -1234);

    // The announcement written at 16 kHz, loaded (resampled) by the gateway's own loader, is what
    // the test expects to hear at 8 kHz.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("n.wav");
    audio::write_wav(&path, 16_000, &audio::announcement_at(16_000, 1.5));
    let loaded = Announcement::load(&path).expect("load announcement");
    let reference = audio::announcement_at(8_000, 1.5);
    let (lag, r) = best_alignment_correlation(&reference, &loaded.samples_8k, 400);
    assert!(
        r > 0.98 && lag.abs() <= 1,
        "resampled announcement matches the 8 kHz reference: lag {lag} r {r}"
    );
    let (_, rg) = best_alignment_correlation(
        &reference,
        &audio::through_g711(G711::Pcmu, &loaded.samples_8k),
        400,
    );
    assert!(rg > 0.98, "and survives PCMU: {rg}");
    let (_, ra) = best_alignment_correlation(&reference, &a[..reference.len()], 4000);
    assert!(ra < 0.2, "the announcement is not signal A: {ra}");
    // The chirp sweeps: more 2.5 kHz energy at the end than at the start.
    let n = reference.len();
    assert!(
        goertzel_power(&reference[n - 2000..], 8000, 2600.0)
            > 10.0 * goertzel_power(&reference[..2000], 8000, 2600.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_caller_and_agent_talk_directly() {
    bounded(async {
        let agent = AgentPhone::start(AgentAnswer::After(Duration::from_millis(100))).await;
        let mut caller = CallerPhone::new(agent.sip_addr, CALLER_NUMBER).await;
        let fin = ok(caller.call(DIALLED, SIP_WAIT).await);
        assert_eq!(fin.status(), Some(200));
        assert_eq!(statuses(&caller), vec![100, 180, 200]);
        assert_eq!(
            caller.remote_sdp.as_ref().and_then(|s| s.g711()),
            Some(G711::Pcmu)
        );
        let st = ok(agent
            .wait_until(SIP_WAIT, "ACK", |s| s.acked.is_some())
            .await);
        let ack = st
            .requests
            .iter()
            .find(|r| r.msg.method() == Some("ACK"))
            .expect("ACK logged");
        assert_eq!(ack.msg.cseq(), (1, "ACK".to_string()));
        assert_ne!(
            ack.msg.top_branch(),
            st.invite.as_ref().and_then(|i| i.msg.top_branch()),
            "2xx ACK is a new transaction"
        );
        assert_eq!(
            ack.msg.request_uri(),
            Some(agent.uri().as_str()),
            "2xx ACK goes to the Contact"
        );
        assert_eq!(
            st.remote_sdp.as_ref().map(|s| s.addr),
            Some(caller.rtp.addr)
        );

        let a = audio::signal_a(1.5);
        let b = audio::signal_b(1.5);
        let t = Instant::now();
        let sa = ok(caller.start_audio(a.clone()));
        let sb = ok(agent.start_audio(b.clone()));
        assert_eq!(
            (sa.await.expect("send A"), sb.await.expect("send B")),
            (75, 75)
        );
        sleep(Duration::from_millis(100)).await;
        let at_agent = agent.rtp.received();
        assert_eq!(at_agent.len(), 75);
        let span = at_agent
            .last()
            .expect("packets")
            .at
            .duration_since(at_agent[0].at);
        assert!(
            span >= Duration::from_millis(1400) && span <= Duration::from_millis(2000),
            "20 ms pacing: 75 packets over {span:?}"
        );
        assert!(
            at_agent
                .windows(2)
                .all(|w| w[1].seq == w[0].seq.wrapping_add(1)
                    && w[1].ts == w[0].ts.wrapping_add(160))
        );
        assert!(
            at_agent[0].marker
                && at_agent
                    .iter()
                    .all(|p| p.ssrc == at_agent[0].ssrc && p.pt == 0)
        );
        let heard_a = received_audio(&after(&at_agent, t));
        let lag_a = assert_corr("agent hears A", &a, &heard_a, 8000, 0.99);
        assert_eq!(lag_a, 0);
        assert_corr(
            "caller hears B",
            &b,
            &received_audio(&caller.rtp.received()),
            8000,
            0.99,
        );

        assert_eq!(ok(caller.bye(SIP_WAIT).await).status(), Some(200));
        let st = ok(agent
            .wait_until(SIP_WAIT, "BYE", |s| s.bye_received.is_some())
            .await);
        let bye = st
            .requests
            .iter()
            .find(|r| r.msg.method() == Some("BYE"))
            .expect("BYE logged");
        assert_eq!(bye.msg.to_tag(), fin.to_tag());
        assert_eq!(bye.msg.cseq(), (2, "BYE".to_string()));
        assert!(caller.protocol_errors().is_empty() && st.errors.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_busy_cancel_and_agent_bye_directly() {
    bounded(async {
        // Busy: 486, ACKed hop-by-hop with the INVITE's branch.
        let agent = AgentPhone::start(AgentAnswer::Busy(Duration::from_millis(50))).await;
        let mut caller = CallerPhone::new(agent.sip_addr, CALLER_NUMBER).await;
        assert_eq!(ok(caller.call(DIALLED, SIP_WAIT).await).status(), Some(486));
        let st = ok(agent
            .wait_until(SIP_WAIT, "ACK of 486", |s| s.acked.is_some())
            .await);
        let ack = st
            .requests
            .iter()
            .find(|r| r.msg.method() == Some("ACK"))
            .expect("ACK");
        assert_eq!(
            ack.msg.top_branch(),
            st.invite.as_ref().and_then(|i| i.msg.top_branch())
        );

        // Cancel while ringing.
        let agent = AgentPhone::start(AgentAnswer::Never).await;
        let mut caller = CallerPhone::new(agent.sip_addr, CALLER_NUMBER).await;
        caller.invite(DIALLED).await;
        ok(caller
            .wait_invite_response(SIP_WAIT, "180", |m| m.status() == Some(180))
            .await);
        let (c, fin) = ok(caller.cancel(SIP_WAIT).await);
        assert_eq!((c.status(), fin.status()), (Some(200), Some(487)));
        let st = ok(agent
            .wait_until(SIP_WAIT, "ACK of 487", |s| {
                s.acked.is_some() && s.cancel_received.is_some()
            })
            .await);
        assert_eq!(st.final_sent, Some(487));

        // Agent hangs up: the caller's background task answers the BYE.
        let agent = AgentPhone::start(AgentAnswer::After(Duration::from_millis(50))).await;
        let mut caller = CallerPhone::new(agent.sip_addr, CALLER_NUMBER).await;
        assert_eq!(ok(caller.call(DIALLED, SIP_WAIT).await).status(), Some(200));
        ok(agent
            .wait_until(SIP_WAIT, "ACK", |s| s.acked.is_some())
            .await);
        assert_eq!(ok(agent.hangup(SIP_WAIT).await), 200);
        let bye = ok(caller.wait_bye(SIP_WAIT).await);
        assert_eq!(bye.msg.from_tag(), caller.remote_tag);
        assert!(caller.bye_received().is_some());
    })
    .await;
}

async fn recv(sock: &tokio::net::UdpSocket, buf: &mut [u8]) -> (usize, std::net::SocketAddr) {
    tokio::time::timeout(Duration::from_secs(10), sock.recv_from(buf))
        .await
        .expect("datagram in time")
        .expect("recv")
}

/// A bare socket plays the far end: the caller retransmits its INVITE on T1 while unanswered
/// (retransmission runs while the test awaits the caller), ACKs a 2xx at its Contact, and
/// re-ACKs a retransmitted 2xx (its background task, without the test's help).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_caller_retransmits_invite_and_reacks() {
    bounded(async {
        let (far, far_addr) = common::raw_socket().await;
        let (contact_sock, contact_addr) = common::raw_socket().await;
        let far_end = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            let (n, _) = recv(&far, &mut buf).await;
            let first = SipMsg::parse(&buf[..n]).expect("INVITE parses");
            let t0 = Instant::now();
            let (n, from) = recv(&far, &mut buf).await;
            let gap = t0.elapsed();
            let again = SipMsg::parse(&buf[..n]).expect("retransmission parses");
            assert!(
                gap >= T1 - Duration::from_millis(100) && gap <= T1 * 3,
                "retransmitted after {gap:?}"
            );
            assert_eq!(again.top_branch(), first.top_branch());
            assert_eq!(again.method(), Some("INVITE"));
            let sdp = s::sdp_body("far", "127.0.0.1:40998".parse().expect("addr"), &[8, 101]);
            let ok200 = s::response(
                &first,
                200,
                "OK",
                Some("fartag"),
                &[format!("Contact: <sip:far@{contact_addr}>")],
                Some(&sdp),
            );
            far.send_to(&ok200, from).await.expect("send 200");
            let (n, _) = recv(&contact_sock, &mut buf).await;
            let ack = SipMsg::parse(&buf[..n]).expect("ACK parses");
            assert_eq!(ack.method(), Some("ACK"));
            assert_eq!(ack.to_tag().as_deref(), Some("fartag"));
            assert_eq!(ack.cseq(), (1, "ACK".to_string()));
            // A retransmitted 200 is ACKed again.
            far.send_to(&ok200, from).await.expect("resend 200");
            let (n, _) = recv(&contact_sock, &mut buf).await;
            assert_eq!(
                SipMsg::parse(&buf[..n]).expect("second ACK").method(),
                Some("ACK")
            );
        });
        let mut caller = CallerPhone::new(far_addr, CALLER_NUMBER).await;
        let fin = ok(caller.call(DIALLED, SIP_WAIT).await);
        assert_eq!(fin.status(), Some(200));
        assert_eq!(
            caller.remote_sdp.as_ref().and_then(|s| s.g711()),
            Some(G711::Pcma)
        );
        far_end
            .await
            .expect("far end saw a correct INVITE retransmission and both ACKs");
    })
    .await;
}

/// The phone side of the main recorded-call test against the toy B2BUA: proves the announcement
/// window, the relay correlation and the hangup steps of that test before the real gateway lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_recorded_call_steps_pass_against_a_toy_b2bua() {
    bounded(async {
        let ann_8k = audio::announcement_at(8_000, 1.5);
        let agent = AgentPhone::start(AgentAnswer::After(Duration::from_millis(300))).await;
        let toy = common::toy_gateway::start(agent.uri(), ann_8k.clone()).await;
        recorded_call_phone_side(toy.sip_addr, &agent, &ann_8k).await;
    })
    .await;
}
