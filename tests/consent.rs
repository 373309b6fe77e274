//! The consent step with real media: simulated phones over loopback, the in-process gateway.
//!
//! After a 0.5 s announcement a 0.5 s consent prompt ("press 9 if you do not want this call
//! recorded, press 1 if we may use it for training") plays as early media; the caller keys by
//! in-band tones or RFC 4733 events, or not at all. Checked on the call record, the recording
//! store and the audio the agent receives.

mod common;

use std::time::Duration;

use callgate::serve;
use common::audio::{self, rms};
use common::phone::{AgentAnswer, AgentPhone, CallerPhone, Tick, rfc4733_press};
use common::{CALLER_NUMBER, DIALLED, GatewayEnv, GatewayOpts, SIP_WAIT, dtmf};

fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// How the caller answers the prompt.
enum Keys {
    /// In-band tones for these keys, starting this long after the 183.
    InBand(&'static str, Duration),
    /// One RFC 4733 event for this key, this long after the 183.
    Rfc4733(char, Duration),
    None,
}

struct Outcome {
    call: callgate::store::CallRecord,
    /// RMS of the caller's speech as the agent heard it after the bridge.
    agent_heard_rms: f64,
    files: usize,
    prompt_sha256: String,
}

async fn consent_call(ports: (u16, u16), keys: Keys) -> Outcome {
    let env = GatewayEnv::new(&audio::announcement_at(16_000, 0.5));
    let prompt = env.dir.path().join("consent.wav");
    audio::write_wav(&prompt, 8000, &audio::announcement_at(8000, 0.5));
    let agent = AgentPhone::start(AgentAnswer::After(Duration::from_millis(100))).await;
    let target = agent.uri();
    let opts = GatewayOpts { rtp_ports: ports, target: &target, trusted: &["127.0.0.0/8"] };
    let consent = format!(
        "record = true\n[route.consent]\nprompt = \"{}\"\ndecline_digit = \"9\"\ntraining_digit = \"1\"\ntimeout = \"2s\"\n",
        prompt.display()
    );
    let text = env.config_text(&opts).replace("record = true\n", &consent);
    let config = callgate::config::Config::parse(&text, std::path::Path::new("test.toml")).unwrap();
    let gw = serve::start(config).await.expect("gateway starts");

    let mut caller = CallerPhone::new(gw.sip_addr, CALLER_NUMBER).await;
    caller.invite(DIALLED).await;
    ok(caller.wait_invite_response(SIP_WAIT, "183", |m| m.status() == Some(183)).await);
    let sdp = caller.remote_sdp.clone().expect("183 carries SDP");
    let codec = sdp.g711().expect("G.711");
    match keys {
        Keys::InBand(k, after) => {
            let mut samples = vec![0i16; (after.as_millis() as usize) * 8];
            samples.extend(dtmf::keyed(k, 120, 80, -10.0));
            // Detached: the keys play while the call goes on.
            drop(caller.rtp.send_audio(sdp.addr, codec, samples));
        }
        Keys::Rfc4733(k, after) => {
            let te = caller.answer_telephone_event_pt().expect("telephone-event negotiated");
            let code = dtmf::event_code(k).unwrap();
            let start = (after.as_millis() / 20) as usize;
            let mut ticks: Vec<Tick> = (0..start + 12).map(|_| Tick { audio: Some(vec![0; 160]), events: vec![] }).collect();
            rfc4733_press(&mut ticks, code, start, 5);
            drop(caller.rtp.send_ticks(sdp.addr, codec, te, ticks));
        }
        Keys::None => {}
    }
    let fin = ok(caller.wait_final(Duration::from_secs(10)).await);
    assert_eq!(fin.status(), Some(200), "{}", caller.summary());
    ok(agent.wait_until(SIP_WAIT, "ACK", |s| s.acked.is_some()).await);
    let bridged = tokio::time::Instant::now();
    let talk = ok(caller.start_audio(audio::signal_a(1.5)));
    let _ = talk.await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let heard: Vec<_> = agent.rtp.received().into_iter().filter(|p| p.at > bridged).collect();
    let agent_heard_rms = rms(&audio::received_audio(&heard));
    ok(caller.bye(SIP_WAIT).await);
    gw.shutdown();
    gw.join().await.expect("drains");
    let calls = env.calls().await;
    let files = walk(&env.storage);
    let prompt_sha256 = callgate::media::announcement::Announcement::load(&prompt).unwrap().sha256_hex();
    Outcome { call: calls[0].clone(), agent_heard_rms, files, prompt_sha256 }
}

fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum())
        .unwrap_or(0)
}

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(40), f).await.expect("test finished in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pressing_9_by_tone_connects_the_call_unrecorded() {
    bounded(async {
        // A stray 5 first (not a choice: ignored), then 9, both during the prompt.
        let o = consent_call((41_000, 41_099), Keys::InBand("59", Duration::from_millis(600))).await;
        let c = &o.call;
        assert_eq!(c.consent_state.as_deref(), Some("decided"), "{c:?}");
        assert_eq!((c.consent_recording, c.consent_training), (Some(false), Some(false)));
        assert_eq!(c.consent_source.as_deref(), Some("keypad"));
        assert!(c.consent_at_ms.is_some_and(|t| t >= c.started_at_ms));
        assert_eq!(c.consent_prompt_sha256.as_deref(), Some(o.prompt_sha256.as_str()));
        assert_eq!(c.recording_state, "declined");
        assert!(c.recording_id.is_none() && c.key_id.is_none());
        assert_eq!(o.files, 0, "no recording file");
        // Bridged all the same: the agent hears the caller.
        assert!(c.bridged_at_ms.is_some());
        assert!(o.agent_heard_rms > 500.0, "agent heard rms {}", o.agent_heard_rms);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pressing_1_by_rfc4733_records_for_training_without_a_pci_pause() {
    bounded(async {
        let o = consent_call((41_100, 41_199), Keys::Rfc4733('1', Duration::from_millis(700))).await;
        let c = &o.call;
        assert_eq!((c.consent_recording, c.consent_training), (Some(true), Some(true)), "{c:?}");
        assert_eq!(c.consent_source.as_deref(), Some("keypad"));
        assert_eq!(c.recording_state, "ok");
        assert_eq!(c.recording_started_by.as_deref(), Some("route"));
        assert_eq!(o.files, 1);
        // A consent key is not a card digit: no keypad-protection pause anywhere.
        assert!(c.pauses.is_empty(), "{:?}", c.pauses);
        assert!(o.agent_heard_rms > 500.0);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_takes_the_routes_default_after_the_timeout() {
    bounded(async {
        let o = consent_call((41_200, 41_299), Keys::None).await;
        let c = &o.call;
        assert_eq!(c.consent_source.as_deref(), Some("default"), "{c:?}");
        assert_eq!((c.consent_recording, c.consent_training), (Some(true), Some(false)));
        assert_eq!(c.recording_state, "ok");
        assert_eq!(o.files, 1);
        // The window is the prompt's end + 2 s: the bridge cannot come sooner.
        let waited = c.bridged_at_ms.unwrap() - c.announcement_ended_at_ms.unwrap();
        assert!(waited >= 2400, "bridged {waited} ms after the announcement");
    })
    .await
}
