//! Keypad protection end to end (issue 3, "Proof"): a caller keys a made-up card number and
//! security code through the real gateway binary, by each of the three ways phones send digits
//! (in-band tones in G.711, RFC 4733 telephone-events, SIP INFO `application/dtmf-relay`), and
//! the test checks what came out everywhere:
//!
//! * the decrypted recording has the caller's speech before and after the keyed span (aligned
//!   correlation ≥ 0.9 on each segment), the keyed span is an explicit pause gap on both legs
//!   (`GapKind::Pause { trigger: 3, digits: 19 }`), and no DTMF is found in the whole recording
//!   by an independent decoder (`common::dtmf`, not callgate's `pci` detector) nor by
//!   `multimon-ng` when installed;
//! * the agent heard the caller's speech before and after, but no DTMF (masking), received no
//!   telephone-event packet and no INFO;
//! * the call record lists the pause (`caller_digits`, 19 digits, times inside the call);
//! * the card number appears nowhere: not in the gateway's trace-level stdout/stderr, the SQLite
//!   files, `calls list --json`, the encrypted recording, the decrypted WAV.
//!
//! The gateway runs as a subprocess (`callgate --config F serve`, `RUST_LOG=trace`) so that every
//! byte it logs is captured. The phones are the in-process simulated phones of `tests/common`.
//!
//! Negative controls run the same calls with protection off and show the independent decoders
//! DO find the digits in the recording and the agent's audio (and the agent DOES receive the
//! telephone-events), so the checks above provably bite.

mod common;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use callgate::ids::Leg;
use callgate::recording::container::{GapKind, Record};
use callgate::store::CallRecord;
use common::audio::{self, best_alignment_correlation, decode};
use common::dtmf;
use common::phone::{AgentAnswer, AgentPhone, CallerPhone, RtpRx, Tick, rfc4733_press};
use common::process::{GatewayProc, cli, strip_ansi};
use common::{CALLER_NUMBER, DIALLED, GatewayEnv, GatewayOpts, SIP_WAIT};
use tokio::time::{Instant, sleep, sleep_until};

/// A made-up card number (Luhn-invalid on purpose; it appears nowhere else in the repository).
const CARD: &str = "4929123456789012";
const CARD_SPACED: &str = "4929 1234 5678 9012";
const CARD_DASHED: &str = "4929-1234-5678-9012";
const CVV: &str = "737";

/// No test may take longer than this, whatever the gateway does.
const TEST_LIMIT: Duration = Duration::from_secs(40);

/// The caller's script (8 kHz samples / 20 ms ticks).
const SPEECH_S: f64 = 2.0;
const LEAD_SILENCE_MS: u32 = 300;
const TONE_MS: u32 = 80;
const GAP_MS: u32 = 80;
/// Silence after the last key before the caller speaks again: longer than the gateway's 1 s
/// mask hangover toward the agent, so the speech after the keyed span is not masked.
const TAIL_SILENCE_MS: u32 = 1500;
/// In-band tone level: the two sines summed peak at -10 dBFS.
const TONE_DBFS: f64 = -10.0;

async fn bounded<F: Future<Output = ()>>(f: F) {
    if tokio::time::timeout(TEST_LIMIT, f).await.is_err() {
        panic!("test exceeded {TEST_LIMIT:?}");
    }
}

fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

// ================================================================================================
// The gateway as a subprocess

// ================================================================================================
// Scenario

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Inband,
    Rfc4733,
    Info,
}

#[derive(Clone, Copy, Debug)]
struct Variant {
    transport: Transport,
    /// `[pci]` defaults (auto-pause and masking on). Off = the negative control.
    protect: bool,
    /// `resume_after_digits = 19` and no `#` at the end.
    digit_count_rule: bool,
    rtp_ports: (u16, u16),
}

impl Variant {
    fn keys(&self) -> String {
        if self.digit_count_rule {
            format!("{CARD}{CVV}")
        } else {
            format!("{CARD}{CVV}#")
        }
    }

    fn pci_toml(&self) -> String {
        let mut s = String::from("\n[pci]\n");
        if !self.protect {
            s.push_str("auto_pause_on_caller_digits = false\nmask_dtmf_to_agent = false\n");
        }
        if self.digit_count_rule {
            s.push_str("resume_after_digits = 19\n");
        }
        s
    }
}

/// The caller's plan: speech S1, lead silence, the keyed span, tail silence, speech S2.
struct Script {
    s1: Vec<i16>,
    s2: Vec<i16>,
    /// Sample offset of the first key and of the end of the keyed span (after the last gap).
    keyed_from: usize,
    keyed_to: usize,
    /// The whole audio signal as the caller would say it (tones included for in-band).
    audio: Vec<i16>,
    /// The keys and the tick each starts in.
    key_ticks: Vec<(char, usize)>,
}

fn script(keys: &str, inband: bool) -> Script {
    let speech = audio::signal_a(2.0 * SPEECH_S);
    let n = (SPEECH_S * 8000.0) as usize;
    let (s1, s2) = (speech[..n].to_vec(), speech[n..2 * n].to_vec());
    let ms = |m: u32| m as usize * 8;
    let keyed_from = s1.len() + ms(LEAD_SILENCE_MS);
    let per_key = ms(TONE_MS + GAP_MS);
    let keyed_to = keyed_from + keys.len() * per_key;
    let mut a = s1.clone();
    a.extend(std::iter::repeat_n(0i16, ms(LEAD_SILENCE_MS)));
    if inband {
        a.extend(dtmf::keyed(keys, TONE_MS, GAP_MS, TONE_DBFS));
    } else {
        a.extend(std::iter::repeat_n(0i16, keys.len() * per_key));
    }
    a.extend(std::iter::repeat_n(0i16, ms(TAIL_SILENCE_MS)));
    a.extend(&s2);
    let key_ticks = keys
        .chars()
        .enumerate()
        .map(|(i, k)| (k, (keyed_from + i * per_key) / 160))
        .collect();
    Script {
        s1,
        s2,
        keyed_from,
        keyed_to,
        audio: a,
        key_ticks,
    }
}

/// Ticks for RFC 4733: audio every tick except while an event's tone lasts (phones send the
/// event instead); per key 4 packets 160, 320, 480, 640 (E bit on the 4th, marker on the 1st,
/// one timestamp), the end packet sent 3 times in all (2 retransmissions in the next ticks,
/// interleaved with the silence audio of the gap).
fn rfc4733_ticks(sc: &Script) -> Vec<Tick> {
    let n_ticks = sc.audio.len().div_ceil(160);
    let mut ticks: Vec<Tick> = (0..n_ticks)
        .map(|i| Tick {
            audio: Some(sc.audio[i * 160..((i + 1) * 160).min(sc.audio.len())].to_vec()),
            events: Vec::new(),
        })
        .collect();
    let tone_ticks = (TONE_MS / 20) as usize;
    for &(k, start) in &sc.key_ticks {
        // Invariant: the script only has keypad characters.
        let event = dtmf::event_code(k).expect("keypad key");
        rfc4733_press(&mut ticks, event, start, tone_ticks);
    }
    ticks
}

/// Everything a keyed call produced, for the assertions.
struct Outcome {
    variant: Variant,
    script: Script,
    /// The caller's audio as sent on the wire (after G.711).
    sent: Vec<i16>,
    call: CallRecord,
    calls_json: serde_json::Value,
    /// Recording, rendered by `callgate recording decrypt` (left caller, right agent).
    left: Vec<i16>,
    right: Vec<i16>,
    records: Vec<Record>,
    /// The agent's received caller audio, placed by RTP timestamp.
    agent_audio: Vec<i16>,
    agent_te_packets: Vec<RtpRx>,
    agent_infos: usize,
    info_statuses: Vec<u16>,
    /// (what, bytes) of everything the gateway wrote or printed.
    blobs: Vec<(String, Vec<u8>)>,
    scratch: tempfile::TempDir,
}

/// Caller audio received by the agent, placed on a timeline by RTP timestamp (first packet at
/// 0), so that packets the caller never sent (events instead of audio) leave silence, not a
/// shift.
fn timeline(packets: &[RtpRx], pt: u8) -> Vec<i16> {
    let audio: Vec<&RtpRx> = packets.iter().filter(|p| p.pt == pt).collect();
    let Some(first) = audio.first() else {
        return Vec::new();
    };
    let mut out: Vec<i16> = Vec::new();
    for p in &audio {
        if p.ssrc != first.ssrc {
            continue;
        }
        let pos = p.ts.wrapping_sub(first.ts) as usize;
        if pos > 60 * 8000 {
            continue;
        }
        let pcm = decode(p.pt, &p.payload);
        if out.len() < pos + pcm.len() {
            out.resize(pos + pcm.len(), 0);
        }
        out[pos..pos + pcm.len()].copy_from_slice(&pcm);
    }
    out
}

/// Every file under `dir`, recursively, with its bytes.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.push((p.display().to_string(), b));
            }
        }
    }
    out
}

async fn keyed_call(v: Variant) -> Outcome {
    let keys = v.keys();
    let ann_16k = audio::announcement_at(16_000, 1.0);
    let env = GatewayEnv::new(&ann_16k);
    let agent = AgentPhone::start(AgentAnswer::After(Duration::from_millis(200))).await;
    let target = agent.uri();
    let mut cfg = env.config_text(&GatewayOpts {
        rtp_ports: v.rtp_ports,
        target: &target,
        trusted: &["127.0.0.0/8"],
    });
    cfg.push_str(&v.pci_toml());
    let cfg_path: PathBuf = env.dir.path().join("callgate.toml");
    std::fs::write(&cfg_path, &cfg).expect("write config");
    let gw = GatewayProc::start(&cfg_path).await;

    let mut caller = CallerPhone::new(gw.sip_addr, CALLER_NUMBER).await;
    let fin = ok(caller.call(DIALLED, Duration::from_secs(10)).await);
    assert_eq!(
        fin.status(),
        Some(200),
        "call answered: {}",
        caller.summary()
    );
    ok(agent
        .wait_until(SIP_WAIT, "the gateway's ACK of the agent's 200", |s| {
            s.acked.is_some()
        })
        .await);
    let answer = caller.remote_sdp.clone().expect("SDP answer");
    let codec = answer.g711().expect("G.711 in the answer");
    let offer_to_agent = agent.state().invite.expect("INVITE seen").msg.body.clone();
    let agent_te_pt = common::sip::telephone_event_pt(&offer_to_agent).unwrap_or(101);

    let sc = script(&keys, v.transport == Transport::Inband);
    let sent = audio::through_g711(codec, &sc.audio);
    // The agent talks all along (right channel).
    let send_b = ok(agent.start_audio(audio::signal_b(sc.audio.len() as f64 / 8000.0)));
    let mut info_statuses = Vec::new();
    match v.transport {
        Transport::Inband => {
            let sent_n = ok(caller.start_audio(sc.audio.clone()))
                .await
                .expect("caller audio task");
            assert_eq!(sent_n as usize, sc.audio.len().div_ceil(160));
        }
        Transport::Rfc4733 => {
            let te_pt = caller
                .answer_telephone_event_pt()
                .expect("the gateway's answer maps telephone-event (the caller offered 101)");
            let ticks = rfc4733_ticks(&sc);
            let report = caller
                .rtp
                .send_ticks(answer.addr, codec, te_pt, ticks)
                .await
                .expect("caller RTP task");
            assert_eq!(
                report.event_packets as usize,
                keys.len() * 6,
                "4 event packets + 2 end retransmissions per key"
            );
        }
        Transport::Info => {
            let t0 = Instant::now();
            let audio_task = ok(caller.start_audio(sc.audio.clone()));
            for &(k, tick) in &sc.key_ticks {
                sleep_until(t0 + Duration::from_millis(20 * tick as u64)).await;
                let r = ok(caller.info_dtmf(k, 160, SIP_WAIT).await);
                info_statuses.push(r.status().unwrap_or(0));
            }
            audio_task.await.expect("caller audio task");
        }
    }
    send_b.await.expect("agent audio task");
    sleep(Duration::from_millis(400)).await; // the last packets cross the relay

    let bye = ok(caller.bye(SIP_WAIT).await);
    assert_eq!(bye.status(), Some(200), "caller's BYE answered 200");
    ok(agent
        .wait_until(SIP_WAIT, "BYE forwarded to the agent", |s| {
            s.bye_received.is_some()
        })
        .await);
    let agent_rx = agent.rtp.received();
    let agent_infos = agent
        .state()
        .requests
        .iter()
        .filter(|r| r.msg.method() == Some("INFO"))
        .count();
    let (gw_out, gw_err) = gw.stop().await;

    let (ok_list, list_out, list_err) = cli(&cfg_path, &["calls", "list", "--json"]).await;
    assert!(
        ok_list,
        "calls list --json: {}",
        String::from_utf8_lossy(&list_err)
    );
    let calls_json: serde_json::Value =
        serde_json::from_slice(&list_out).expect("calls list --json is JSON");
    let calls = env.calls().await;
    assert_eq!(calls.len(), 1, "one call record: {calls:?}");
    let call = calls[0].clone();
    assert_eq!(call.recording_state, "ok", "{call:?}");
    let rec_id = call.recording_id.clone().expect("recording id").to_string();

    let scratch = tempfile::tempdir().expect("scratch dir");
    let wav = scratch.path().join("decrypted.wav");
    let (ok_dec, dec_out, dec_err) = cli(
        &cfg_path,
        &[
            "recording",
            "decrypt",
            &rec_id,
            "--out",
            wav.to_str().expect("utf-8 path"),
        ],
    )
    .await;
    assert!(
        ok_dec,
        "recording decrypt: {}",
        String::from_utf8_lossy(&dec_err)
    );
    let (rate, left, right) = audio::read_stereo_wav(&wav);
    assert_eq!(rate, 8000);
    let outcome = env.read_recording(&call).await;
    assert!(outcome.status.is_complete(), "{:?}", outcome.status);

    let mut blobs = vec![
        ("gateway stdout".to_string(), gw_out),
        ("gateway stderr (RUST_LOG=trace)".to_string(), gw_err),
        ("calls list --json stdout".to_string(), list_out),
        ("calls list stderr".to_string(), list_err),
        ("recording decrypt stdout".to_string(), dec_out),
        ("recording decrypt stderr".to_string(), dec_err),
        (
            "decrypted WAV (CLI)".to_string(),
            std::fs::read(&wav).expect("read WAV"),
        ),
    ];
    // The database (and any WAL), the encrypted recording, the KEK, the config: every file.
    blobs.extend(files_under(env.dir.path()));
    // For a human look: PCI_PATH_DUMP=DIR keeps every scanned blob there.
    if let Some(dump) = std::env::var_os("PCI_PATH_DUMP") {
        let d = Path::new(&dump).join(format!("{:?}-{}", v.transport, v.rtp_ports.0));
        let _ = std::fs::create_dir_all(&d);
        for (i, (what, b)) in blobs.iter().enumerate() {
            let name: String = what
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let _ = std::fs::write(
                d.join(format!("{i:02}-{}", &name[name.len().saturating_sub(60)..])),
                b,
            );
        }
    }

    Outcome {
        variant: v,
        sent,
        call,
        calls_json,
        left,
        right,
        records: outcome.records,
        agent_audio: timeline(&agent_rx, codec.payload_type()),
        agent_te_packets: agent_rx
            .iter()
            .filter(|p| p.pt == agent_te_pt)
            .cloned()
            .collect(),
        agent_infos,
        info_statuses,
        blobs,
        scratch,
        script: sc,
    }
}

// ================================================================================================
// Checks

/// Correlation of `reference` found in `heard` near `expected` (± `window` samples).
fn corr_near(reference: &[i16], heard: &[i16], expected: i64, window: i64) -> (i64, f64) {
    let from = (expected - window).max(0);
    if from as usize >= heard.len() {
        return (0, 0.0);
    }
    let (lag, r) =
        best_alignment_correlation(reference, &heard[from as usize..], (2 * window) as usize);
    (from + lag, r)
}

/// (S1 lag, S1 correlation, S2 correlation) of the caller's speech in `heard`.
fn speech_correlations(o: &Outcome, heard: &[i16], max_lag: usize) -> (i64, f64, f64) {
    let (lag1, r1) = best_alignment_correlation(&o.script.s1, heard, max_lag);
    let s2_at = (o.script.audio.len() - o.script.s2.len()) as i64;
    let (_, r2) = corr_near(&o.script.s2, heard, lag1 + s2_at, 800);
    (lag1, r1, r2)
}

fn presses(x: &[i16]) -> String {
    dtmf::decode_string(x)
}

/// The no-digits-anywhere check over every blob; returns the total bytes scanned.
fn assert_no_card_digits(o: &Outcome) -> usize {
    let mut total = 0;
    for (what, bytes) in &o.blobs {
        total += bytes.len();
        let text = strip_ansi(&String::from_utf8_lossy(bytes)).into_bytes();
        for hay in [bytes.as_slice(), text.as_slice()] {
            for needle in [CARD, CARD_SPACED, CARD_DASHED] {
                assert!(
                    !hay.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{what} contains the card number {needle:?}"
                );
            }
            // Contiguous or with any short separators ("4 9 2 9", "'4', '9'", …), CVV after it.
            if let Some(at) = dtmf::find_digits(hay, CARD, 16) {
                let s = at.saturating_sub(40);
                panic!(
                    "{what} contains the card digits in order at byte {at}: {:?}",
                    String::from_utf8_lossy(&hay[s..(at + 200).min(hay.len())])
                );
            }
            let card_cvv = format!("{CARD}{CVV}");
            assert!(
                dtmf::find_digits(hay, &card_cvv, 16).is_none(),
                "{what} contains card + CVV"
            );
        }
    }
    total
}

/// DTMF-relay INFO bodies must not show up in the gateway's logs either (each carries one
/// digit: together they are the card number).
fn info_bodies_in_logs(o: &Outcome) -> Vec<String> {
    let mut hits = Vec::new();
    for (what, bytes) in &o.blobs {
        if !what.starts_with("gateway") {
            continue;
        }
        let text = strip_ansi(&String::from_utf8_lossy(bytes));
        for l in text.lines() {
            let low = l.to_ascii_lowercase();
            if low.contains("signal=") || low.contains("dtmf-relay") {
                hits.push(l.chars().take(300).collect());
            }
        }
    }
    hits
}

fn pause_gaps(o: &Outcome) -> Vec<(Leg, u64, u64, GapKind)> {
    o.records
        .iter()
        .filter_map(|r| match r {
            Record::Gap {
                leg,
                from,
                to,
                kind: kind @ GapKind::Pause { .. },
            } => Some((*leg, *from, *to, *kind)),
            _ => None,
        })
        .collect()
}

/// Everything that must hold when protection is on.
fn assert_protected(o: &Outcome) {
    let v = o.variant;
    let keys = v.keys();
    let label = format!("{:?}", v.transport);
    println!("== {label} (digit-count rule: {})", v.digit_count_rule);

    // The decoders are able to see the digits: in the caller's sent audio (in-band).
    let sent_keys = presses(&o.sent);
    let mm_sent = dtmf::multimon_decode(&o.sent, o.scratch.path(), "sent");
    println!(
        "  independent decoder, caller's sent audio: {sent_keys:?} ({} keys)",
        sent_keys.len()
    );
    println!("  multimon-ng, caller's sent audio: {mm_sent:?}");
    if v.transport == Transport::Inband {
        assert_eq!(
            sent_keys, keys,
            "the independent decoder finds every key in what the caller sent"
        );
        if let Some(m) = &mm_sent {
            assert_eq!(
                m, &keys,
                "multimon-ng finds every key in what the caller sent"
            );
        }
    } else {
        assert_eq!(sent_keys, "", "no tones in the caller's audio for {label}");
    }

    // Recording: speech before and after on the left, no DTMF anywhere.
    let (lag1, r1, r2) = speech_correlations(o, &o.left, 16_000);
    println!("  recording left: S1 corr {r1:.4} (lag {lag1}), S2 corr {r2:.4}");
    assert!(
        r1 >= 0.9,
        "recording: speech before the keyed span, correlation {r1:.4} < 0.9"
    );
    assert!(
        r2 >= 0.9,
        "recording: speech after the keyed span, correlation {r2:.4} < 0.9"
    );
    let mut mixed: Vec<i16> = o
        .left
        .iter()
        .zip(&o.right)
        .map(|(&a, &b)| ((a as i32 + b as i32) / 2) as i16)
        .collect();
    mixed.truncate(o.left.len().min(o.right.len()));
    for (what, x) in [("left", &o.left), ("right", &o.right), ("mono mix", &mixed)] {
        let found = presses(x);
        let mm = dtmf::multimon_decode(
            x,
            o.scratch.path(),
            &format!("rec-{}", what.replace(' ', "-")),
        );
        println!("  recording {what}: independent decoder {found:?}, multimon-ng {mm:?}");
        assert_eq!(
            found, "",
            "independent decoder found DTMF in the recording ({what})"
        );
        if let Some(m) = mm {
            assert_eq!(m, "", "multimon-ng found DTMF in the recording ({what})");
        }
    }
    // The keyed span itself is silence in the rendered recording (the pause gap).
    let span = (lag1 + o.script.keyed_from as i64).max(0) as usize
        ..((lag1 + o.script.keyed_to as i64) as usize).min(o.left.len());
    let span_rms = audio::rms(&o.left[span.clone()]);
    println!("  recording left RMS over the keyed span: {span_rms:.1}");
    assert!(
        span_rms < 1.0,
        "keyed span rendered as silence, rms {span_rms}"
    );

    // The recording timeline: one pause gap per leg covering the keyed span.
    let gaps = pause_gaps(o);
    println!("  pause gaps: {gaps:?}");
    for leg in [Leg::Caller, Leg::Agent] {
        let g: Vec<_> = gaps.iter().filter(|g| g.0 == leg).collect();
        assert_eq!(g.len(), 1, "one pause gap on {leg:?}: {gaps:?}");
        assert_eq!(
            g[0].3,
            GapKind::Pause {
                trigger: 3,
                digits: 19
            },
            "gap kind on {leg:?}"
        );
    }
    let (_, from, to, _) = gaps[0];
    let last_tone_end = o.script.keyed_to - (GAP_MS as usize * 8);
    assert!(
        (from as i64) <= lag1 + o.script.keyed_from as i64,
        "the gap starts at or before the first tone: gap from {from}, first tone at {}",
        lag1 + o.script.keyed_from as i64
    );
    assert!(
        (to as i64) >= lag1 + last_tone_end as i64,
        "the gap ends at or after the last tone: gap to {to}, last tone ends at {}",
        lag1 + last_tone_end as i64
    );
    let s2_at = lag1 + (o.script.audio.len() - o.script.s2.len()) as i64;
    assert!(
        (to as i64) < s2_at,
        "the gap ends before the speech after it: {to} vs {s2_at}"
    );

    // The agent: speech before/after, no DTMF, no events, no INFO.
    let (alag, a1, a2) = speech_correlations(o, &o.agent_audio, 4000);
    let agent_keys = presses(&o.agent_audio);
    let mm_agent = dtmf::multimon_decode(&o.agent_audio, o.scratch.path(), "agent");
    println!(
        "  agent audio: S1 corr {a1:.4} (lag {alag}), S2 corr {a2:.4}; independent decoder {agent_keys:?}, multimon-ng {mm_agent:?}"
    );
    println!(
        "  agent telephone-event packets: {}, INFO requests: {}",
        o.agent_te_packets.len(),
        o.agent_infos
    );
    assert!(a1 >= 0.9, "agent hears speech before, correlation {a1:.4}");
    assert!(a2 >= 0.9, "agent hears speech after, correlation {a2:.4}");
    assert_eq!(
        agent_keys, "",
        "independent decoder found DTMF in the agent's audio"
    );
    if let Some(m) = mm_agent {
        assert_eq!(m, "", "multimon-ng found DTMF in the agent's audio");
    }
    assert!(
        o.agent_te_packets.is_empty(),
        "the agent received {} telephone-event packets (events {:?})",
        o.agent_te_packets.len(),
        o.agent_te_packets
            .iter()
            .map(|p| p.payload.first().copied())
            .collect::<Vec<_>>()
    );
    assert_eq!(o.agent_infos, 0, "the agent received INFO");
    if v.transport == Transport::Info {
        println!("  INFO responses: {:?}", o.info_statuses);
        assert!(
            o.info_statuses.iter().all(|&s| s == 200),
            "every INFO answered 200: {:?}",
            o.info_statuses
        );
        assert_eq!(o.info_statuses.len(), keys.len());
    }

    // The call record.
    let c = &o.call;
    let losses: Vec<(Leg, u64, u64)> = o
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Gap {
                leg,
                from,
                to,
                kind: GapKind::Loss,
            } => Some((*leg, *from, *to)),
            _ => None,
        })
        .collect();
    println!(
        "  call record packets/lost: caller {}/{}, agent {}/{}; loss gaps in the recording: {} {:?}",
        c.caller_packets,
        c.caller_lost,
        c.agent_packets,
        c.agent_lost,
        losses.len(),
        &losses[..losses.len().min(6)]
    );
    println!("  call record pauses: {:?}", c.pauses);
    assert_eq!(c.pauses.len(), 1, "one pause span: {:?}", c.pauses);
    let p = &c.pauses[0];
    assert_eq!(p.trigger, "caller_digits", "{p:?}");
    assert_eq!(p.digits, 19, "19 keys counted (the ending # is not): {p:?}");
    let want_resume = if v.digit_count_rule {
        "digit_count"
    } else {
        "hash"
    };
    assert_eq!(p.resumed_by, want_resume, "{p:?}");
    let bridged = c.bridged_at_ms.expect("bridged");
    let ended = c.ended_at_ms.expect("ended");
    assert!(
        bridged <= p.started_ms && p.started_ms < p.ended_ms && p.ended_ms <= ended,
        "pause inside the call: bridged {bridged}, pause {}..{}, ended {ended}",
        p.started_ms,
        p.ended_ms
    );
    let dur = p.ended_ms - p.started_ms;
    let keyed_ms = (o.script.keyed_to - o.script.keyed_from) as i64 / 8;
    println!(
        "  pause lasted {dur} ms for a {keyed_ms} ms keyed span; started {} ms after the bridge",
        p.started_ms - bridged
    );
    assert!(
        dur >= keyed_ms - 200 && dur <= keyed_ms + 1000,
        "pause duration {dur} ms vs keyed span {keyed_ms} ms"
    );
    // The JSON of `calls list --json` says the same.
    let j = &o.calls_json[0]["pauses"][0];
    assert_eq!(j["trigger"], "caller_digits", "{}", o.calls_json);
    assert_eq!(j["digits"], 19, "{}", o.calls_json);

    // No digits anywhere.
    let scanned = assert_no_card_digits(o);
    let info_hits = info_bodies_in_logs(o);
    println!(
        "  scanned {} blobs, {scanned} bytes, for the card number: none found; INFO bodies in logs: {}",
        o.blobs.len(),
        info_hits.len()
    );
    assert!(
        info_hits.is_empty(),
        "the gateway logged DTMF INFO bodies (each carries a card digit): {:?}",
        &info_hits[..info_hits.len().min(5)]
    );
}

fn variant(transport: Transport, rtp_ports: (u16, u16)) -> Variant {
    Variant {
        transport,
        protect: true,
        digit_count_rule: false,
        rtp_ports,
    }
}

// ================================================================================================
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inband_card_digits_are_kept_out_of_recording_agent_and_logs() {
    bounded(async {
        let o = keyed_call(variant(Transport::Inband, (41_000, 41_099))).await;
        assert_protected(&o);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc4733_card_digits_are_kept_out_of_recording_agent_and_logs() {
    bounded(async {
        let o = keyed_call(variant(Transport::Rfc4733, (41_100, 41_199))).await;
        assert_protected(&o);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_info_card_digits_are_kept_out_of_recording_agent_and_logs() {
    bounded(async {
        let o = keyed_call(variant(Transport::Info, (41_200, 41_299))).await;
        assert_protected(&o);
    })
    .await;
}

/// The digit-count rule: 19 keys and no `#`, `resume_after_digits = 19`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inband_digit_count_rule_resumes_after_19_keys() {
    bounded(async {
        let mut v = variant(Transport::Inband, (41_300, 41_399));
        v.digit_count_rule = true;
        let o = keyed_call(v).await;
        assert_protected(&o);
    })
    .await;
}

/// Negative control: the same in-band call with protection off. The independent decoder (and
/// multimon-ng) DO find the keys in the recording and in the agent's audio, so finding none
/// above means something.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_inband_protection_off_digits_are_found() {
    bounded(async {
        let mut v = variant(Transport::Inband, (41_400, 41_499));
        v.protect = false;
        let o = keyed_call(v).await;
        let keys = v.keys();
        let rec = presses(&o.left);
        let agent = presses(&o.agent_audio);
        let mm_rec = dtmf::multimon_decode(&o.left, o.scratch.path(), "rec-left");
        let mm_agent = dtmf::multimon_decode(&o.agent_audio, o.scratch.path(), "agent");
        println!("== negative control, in-band, protection off");
        println!(
            "  recording left: independent {rec:?} ({}), multimon-ng {mm_rec:?}",
            rec.len()
        );
        println!(
            "  agent audio: independent {agent:?} ({}), multimon-ng {mm_agent:?}",
            agent.len()
        );
        println!(
            "  call record pauses: {:?}; pause gaps: {:?}",
            o.call.pauses,
            pause_gaps(&o)
        );
        assert_eq!(
            rec, keys,
            "with protection off the recording holds every key"
        );
        assert_eq!(agent, keys, "with protection off the agent hears every key");
        if let Some(m) = mm_rec {
            assert_eq!(m, keys, "multimon-ng: recording");
        }
        if let Some(m) = mm_agent {
            assert_eq!(m, keys, "multimon-ng: agent audio");
        }
        assert!(
            o.call.pauses.is_empty(),
            "no pause without auto-pause: {:?}",
            o.call.pauses
        );
        assert!(pause_gaps(&o).is_empty());
    })
    .await;
}

/// Negative control for RFC 4733: with masking off the agent DOES receive the caller's
/// telephone-events, carrying every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_rfc4733_masking_off_events_reach_the_agent() {
    bounded(async {
        let mut v = variant(Transport::Rfc4733, (41_500, 41_599));
        v.protect = false;
        let o = keyed_call(v).await;
        let mut keys_seen = String::new();
        let mut last_ts = None;
        for p in &o.agent_te_packets {
            if last_ts != Some(p.ts) {
                last_ts = Some(p.ts);
                let code = p.payload.first().copied().unwrap_or(255);
                keys_seen.push(match code {
                    0..=9 => (b'0' + code) as char,
                    10 => '*',
                    11 => '#',
                    _ => '?',
                });
            }
        }
        println!("== negative control, RFC 4733, masking off");
        println!(
            "  agent telephone-event packets: {}, keys {keys_seen:?}",
            o.agent_te_packets.len()
        );
        assert_eq!(
            keys_seen,
            v.keys(),
            "with masking off the agent receives every event"
        );
    })
    .await;
}

/// Regression (was a gateway bug in src/media/relay.rs `on_rtp`, the `if is_audio` tap into
/// `RecordTrack::push`): RFC 4733 telephone-event packets share the audio's SSRC and sequence
/// space, but only audio packets reach the `RecordTrack`s, so every event packet is a sequence
/// gap: counted as lost audio (`caller_lost`) and written as `GapKind::Loss` records. A 20-key
/// entry by RFC 4733 reported 120 lost packets that were never lost (fixed: `RecordTrack::skip`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc4733_events_are_not_counted_as_lost_audio() {
    bounded(async {
        let o = keyed_call(variant(Transport::Rfc4733, (41_600, 41_699))).await;
        let losses = o
            .records
            .iter()
            .filter(|r| {
                matches!(
                    r,
                    Record::Gap {
                        kind: GapKind::Loss,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(
            (o.call.caller_lost, losses),
            (0, 0),
            "loopback loses nothing: the {} telephone-event packets were counted as lost audio \
             ({} loss gap records in the recording)",
            o.call.caller_lost,
            losses
        );
    })
    .await;
}
