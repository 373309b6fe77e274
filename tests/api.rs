//! The call-control API a payment screen uses: pause and resume the recording of a live call.
//!
//! A real call (simulated phones over loopback, the in-process gateway): the caller talks
//! continuously; the screen pauses for 1.5 s and resumes. The recording must hold the caller's
//! audio before and after and nothing in between, with an explicit pause gap (trigger 2, api);
//! the call record lists the span; bad tokens, unknown calls and double pauses are refused.

mod common;

use std::time::Duration;

use callgate::recording::container::{GapKind, Record};
use callgate::serve;
use common::audio::{self, rms};
use common::phone::{AgentAnswer, AgentPhone, CallerPhone, Tick, rfc4733_press};
use common::{CALLER_NUMBER, DIALLED, GatewayEnv, GatewayOpts, SIP_WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// One HTTP/1.1 request; returns (status, body).
async fn http(addr: std::net::SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect to the API");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await.expect("API answers").unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split_whitespace().nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_screen_pauses_and_resumes_the_recording() {
    let run = async {
        let env = GatewayEnv::new(&audio::announcement_at(16_000, 0.5));
        let token = callgate::portal::tokens::create(&env.dir.path().join("api-tokens"), "payments").unwrap();
        let agent = AgentPhone::start(AgentAnswer::After(Duration::from_millis(100))).await;
        let target = agent.uri();
        let opts = GatewayOpts { rtp_ports: (40_700, 40_799), target: &target, trusted: &["127.0.0.0/8"] };
        let gw = serve::start(env.config(&opts)).await.expect("gateway starts");
        let api = gw.api_addr;

        assert_eq!(http(api, "GET", "/api/health", None).await.0, 200);
        let mut caller = CallerPhone::new(gw.sip_addr, CALLER_NUMBER).await;
        let fin = ok(caller.call(DIALLED, Duration::from_secs(10)).await);
        assert_eq!(fin.status(), Some(200), "{}", caller.summary());
        ok(agent.wait_until(SIP_WAIT, "ACK", |s| s.acked.is_some()).await);
        // The screen learns the call id from the INVITE the agent's phone received.
        let invite = agent.state().invite.expect("INVITE seen");
        let call_id = invite.msg.header("X-Callgate-Call-Id").expect("call id header on the agent's INVITE").to_string();
        assert!(call_id.starts_with("call-"), "{call_id}");
        let pause = format!("/api/calls/{call_id}/pause");
        let resume = format!("/api/calls/{call_id}/resume");

        // Refusals: no token, a wrong token, an unknown call, resume before any pause.
        assert_eq!(http(api, "POST", &pause, None).await.0, 401);
        assert_eq!(http(api, "POST", &pause, Some("cgt_nope")).await.0, 401);
        assert_eq!(http(api, "POST", "/api/calls/call-0000000000000000/pause", Some(&token)).await.0, 404);
        assert_eq!(http(api, "POST", &resume, Some(&token)).await.0, 409);

        // The caller talks for 4.5 s: 1.5 s recorded, 1.5 s paused, 1.5 s recorded.
        let talk = ok(caller.start_audio(audio::signal_a(4.5)));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (status, body) = http(api, "POST", &pause, Some(&token)).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("paused"), "{body}");
        assert_eq!(http(api, "POST", &pause, Some(&token)).await.0, 409, "already paused");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Resume through the CLI (`callgate call resume`), which calls the same API.
        let cfg_path = env.dir.path().join("cli.toml");
        let text = env.config_text(&opts).replace("listen = \"127.0.0.1:0\"\napi_tokens_file", &format!("listen = \"{api}\"\napi_tokens_file"));
        std::fs::write(&cfg_path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
            .args(["--config", cfg_path.to_str().unwrap(), "call", "resume", &call_id])
            .env("CALLGATE_API_TOKEN", &token)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("recording"), "{stdout}");
        // The CLI without a token is refused with a one-line error.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
            .args(["--config", cfg_path.to_str().unwrap(), "call", "pause", &call_id])
            .env_remove("CALLGATE_API_TOKEN")
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("no API token"));
        let _ = talk.await;
        ok(caller.bye(SIP_WAIT).await);
        gw.shutdown();
        gw.join().await.expect("drains");

        let calls = env.calls().await;
        let c = &calls[0];
        assert_eq!(c.recording_state, "ok", "{c:?}");
        assert_eq!(c.pauses.len(), 1, "{:?}", c.pauses);
        let span = &c.pauses[0];
        assert_eq!((span.trigger.as_str(), span.resumed_by.as_str(), span.digits), ("api", "api", 0), "{span:?}");
        let paused_ms = span.ended_ms - span.started_ms;
        assert!((1300..=2000).contains(&paused_ms), "paused for {paused_ms} ms");

        // The recording: an explicit pause gap on both tracks, trigger 2 (api), no digits.
        let rec_id = c.recording_id.clone().unwrap();
        let (key_id, wrapped) = callgate::store::Store::connect(&env.db_url).await.unwrap()
            .get_recording_key(&rec_id).await.unwrap().unwrap();
        let keyring = callgate::recording::keys::Keyring::load(&env.kek).unwrap();
        let dek = keyring.unwrap_dek(&key_id, &callgate::recording::keys::WrappedDek(wrapped)).unwrap();
        let bytes = callgate::recording::storage::DirStorage::new(&env.storage).read_all(&rec_id).unwrap();
        let outcome = callgate::recording::reader::read(&bytes, &dek);
        assert!(outcome.status.is_complete());
        let gaps: Vec<(u64, u64)> = outcome.records.iter().filter_map(|r| match r {
            Record::Gap { from, to, kind: GapKind::Pause { trigger: 2, digits: 0 }, .. } => Some((*from, *to)),
            _ => None,
        }).collect();
        assert_eq!(gaps.len(), 2, "one pause gap per track: {gaps:?}");
        let (from, to) = gaps[0];

        // Audio: the caller's track is silent inside the gap, and carries speech on both sides.
        let (left, _right) = env.decrypt_recording(c).await;
        let (from, to) = (from as usize, (to as usize).min(left.len()));
        assert!(to > from + 8000, "gap of {} samples", to - from);
        let inside = rms(&left[from + 800..to - 800]);
        let before = rms(&left[from.saturating_sub(8000)..from.saturating_sub(800)]);
        let after = rms(&left[(to + 800).min(left.len())..(to + 8000).min(left.len())]);
        assert!(inside < 1.0, "audio recorded inside the pause: rms {inside}");
        assert!(before > 500.0 && after > 500.0, "speech around the pause: before {before}, after {after}");
    };
    tokio::time::timeout(Duration::from_secs(40), run).await.expect("test finished in time");
}

/// A call up through the gateway: the line's config text is `edit`ed from the shared one.
struct Live {
    env: GatewayEnv,
    gw: serve::Running,
    agent: AgentPhone,
    caller: CallerPhone,
    /// The id the agent's INVITE carried (`X-Callgate-Call-Id`).
    call_id: String,
    /// An API token created before the gateway started.
    token: String,
}

async fn live_call(rtp_ports: (u16, u16), edit: impl Fn(&GatewayEnv, String) -> String) -> Live {
    let env = GatewayEnv::new(&audio::announcement_at(16_000, 0.5));
    let token = callgate::portal::tokens::create(&env.dir.path().join("api-tokens"), "desk").unwrap();
    let agent = AgentPhone::start(AgentAnswer::After(Duration::from_millis(100))).await;
    let target = agent.uri();
    let opts = GatewayOpts { rtp_ports, target: &target, trusted: &["127.0.0.0/8"] };
    let text = edit(&env, env.config_text(&opts));
    let config = callgate::config::Config::parse(&text, std::path::Path::new("test.toml")).unwrap();
    let gw = serve::start(config).await.expect("gateway starts");
    let mut caller = CallerPhone::new(gw.sip_addr, CALLER_NUMBER).await;
    let fin = ok(caller.call(DIALLED, Duration::from_secs(10)).await);
    assert_eq!(fin.status(), Some(200), "{}", caller.summary());
    ok(agent.wait_until(SIP_WAIT, "ACK", |s| s.acked.is_some()).await);
    let invite = agent.state().invite.expect("INVITE seen");
    let call_id = invite.msg.header("X-Callgate-Call-Id").expect("call id header").to_string();
    Live { env, gw, agent, caller, call_id, token }
}

impl Live {
    /// The caller hangs up; the gateway drains; the call's record.
    async fn end(mut self) -> (GatewayEnv, callgate::store::CallRecord) {
        ok(self.caller.bye(SIP_WAIT).await);
        self.gw.shutdown();
        self.gw.join().await.expect("drains");
        let c = self.env.calls().await.remove(0);
        (self.env, c)
    }
}

fn on_demand(_: &GatewayEnv, text: String) -> String {
    let text = text.replace("record = true", "record = \"on-demand\"");
    assert!(text.contains("on-demand"));
    text
}

/// An on-demand line (`record = "on-demand"`): nothing is recorded until the agent's desktop
/// starts it through the API; the call record says when and which token; the recording holds
/// only what came after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_line_records_only_after_the_api_starts_it() {
    let run = async {
        let live = live_call((40_800, 40_899), on_demand).await;
        let (api, token) = (live.gw.api_addr, live.token.clone());
        let record = format!("/api/calls/{}/record", live.call_id);
        assert_eq!(http(api, "POST", &record, None).await.0, 401);

        // 1.5 s of talk before anyone starts the recording, then 1.5 s after.
        let talk = ok(live.caller.start_audio(audio::signal_a(3.0)));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (status, body) = http(api, "POST", &record, Some(&token)).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("recording"), "{body}");
        let (status, body) = http(api, "POST", &record, Some(&token)).await;
        assert_eq!(status, 409, "{body}");
        assert!(body.contains("already"), "{body}");
        let _ = talk.await;
        let (env, c) = live.end().await;

        assert_eq!(c.record_policy, "on-demand");
        assert_eq!(c.recording_state, "ok", "{c:?}");
        assert_eq!(c.recording_started_by.as_deref(), Some("api:desk"));
        let started = c.recording_started_at_ms.expect("start time on the record");
        let bridged = c.bridged_at_ms.expect("bridged");
        assert!(started >= bridged + 1200, "recording started {} ms after the bridge", started - bridged);
        // Only the second half of the talk is in the recording.
        let (left, _right) = env.decrypt_recording(&c).await;
        let secs = left.len() as f64 / 8000.0;
        assert!((0.8..2.5).contains(&secs), "recording holds {secs:.2} s");
        assert!(rms(&left) > 300.0, "the caller's speech after the start is recorded");
    };
    tokio::time::timeout(Duration::from_secs(40), run).await.expect("test finished in time");
}

/// A line with `record = false` refuses an on-demand start: nothing can switch it on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrecorded_line_refuses_a_start() {
    let run = async {
        // No announcement on an unrecorded line.
        let live = live_call((40_900, 40_999), |env, text| {
            let ann = format!("announcement = \"{}\"\n", env.announcement.display());
            text.replace("record = true", "record = false").replace(&ann, "")
        })
        .await;
        let path = format!("/api/calls/{}/record", live.call_id);
        let (status, body) = http(live.gw.api_addr, "POST", &path, Some(&live.token)).await;
        assert_eq!(status, 409, "{body}");
        assert!(body.contains("not recorded"), "{body}");
        let (env, c) = live.end().await;
        assert_eq!((c.recording_state.as_str(), c.announcement_state.as_str()), ("not-recorded", "none"), "{c:?}");
        assert!(c.recording_id.is_none());
        assert_eq!(std::fs::read_dir(&env.storage).unwrap().count(), 0, "no recording file");
    };
    tokio::time::timeout(Duration::from_secs(40), run).await.expect("test finished in time");
}

/// The agent starts an on-demand recording from the keypad (`[pci] record_digits`, `*3`, sent
/// as RFC 4733 events): the call record names `agent-keys`, and no keypad pause is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_keys_start_an_on_demand_recording() {
    let run = async {
        let live = live_call((41_400, 41_499), on_demand).await;
        let invite = live.agent.state().invite.unwrap();
        let offer = invite.msg.sdp().expect("offer to the agent");
        let te = common::sip::telephone_event_pt(&invite.msg.body).expect("telephone-event offered");
        let talk = ok(live.caller.start_audio(audio::signal_a(3.0)));
        // The agent keys `*` then `3`, 1 s in.
        let mut ticks: Vec<Tick> = (0..100).map(|_| Tick { audio: Some(vec![0; 160]), events: vec![] }).collect();
        rfc4733_press(&mut ticks, 10, 50, 5);
        rfc4733_press(&mut ticks, 3, 62, 5);
        let keys = live.agent.rtp.send_ticks(offer.addr, offer.g711().unwrap(), te, ticks);
        let _ = keys.await;
        let _ = talk.await;
        let (_env, c) = live.end().await;
        assert_eq!(c.recording_state, "ok", "{c:?}");
        assert_eq!(c.recording_started_by.as_deref(), Some("agent-keys"));
        assert!(c.recording_started_at_ms.unwrap() >= c.bridged_at_ms.unwrap() + 1000);
        assert!(c.pauses.iter().all(|p| p.trigger != "agent_keys"), "{:?}", c.pauses);
    };
    tokio::time::timeout(Duration::from_secs(40), run).await.expect("test finished in time");
}
