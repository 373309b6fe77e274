//! A simulated call through detector + controller + delay line + masking, on a virtual clock.

use std::time::{Duration, Instant};

use super::mask::{MaskStyle, Masker, PacketAction, PacketKind, decide};
use super::testsig::{Sig, speech};
use super::*;
use crate::ids::Leg;
use crate::media::g711::G711;

struct Outcome {
    /// Per 20 ms frame: written to the recording?
    recorded: Vec<bool>,
    /// What the agent heard (decoded).
    agent_audio: Vec<i16>,
    events: Vec<PauseEvent>,
    sig: Sig,
}

const FRAME: Duration = Duration::from_millis(20);

/// Speech, the 16 card digits, 1.5 s of quiet, the 3-digit code, speech.
fn timeline(card: &str, cvv: &str, seed: u64) -> Sig {
    let mut s = speech(2000.0, seed).silence(300.0);
    for k in card.chars() {
        s = s.dtmf(k, 90.0).silence(110.0);
    }
    s = s.silence(1500.0);
    for k in cvv.chars() {
        s = s.dtmf(k, 90.0).silence(110.0);
    }
    s.s.extend(speech(3000.0, seed + 100).s);
    // Quiet at the end: energy still suspect at hangup is (rightly) not recorded.
    s.silence(500.0)
}

fn simulate(base: Instant, sig: Sig, cfg: PciConfig) -> Outcome {
    let pcm = sig.pcm();
    let mut det = InbandDetector::new();
    let mut ctl = PauseController::new(cfg.clone());
    let mut delay: DelayLine<usize> = DelayLine::for_frames(cfg.delay);
    let mut masker = Masker::new(G711::Pcmu, MaskStyle::ComfortNoise);
    let frames: Vec<&[i16]> = pcm.chunks(160).collect();
    let mut recorded = vec![false; frames.len()];
    let mut agent_audio = Vec::new();
    let mut events = Vec::new();
    let mut buf = Vec::new();
    let step = |ctl: &mut PauseController, now: Instant| {
        while let Some(t) = ctl.poll_timeout() {
            if t > now {
                break;
            }
            ctl.handle_timeout(t);
        }
        ctl.handle_timeout(now);
    };
    for (k, frame) in frames.iter().enumerate() {
        let captured = base + FRAME * k as u32;
        let now = captured + FRAME; // the packet is complete (and received) 20 ms later
        step(&mut ctl, captured);
        // Live path: detect, decide, forward to the agent.
        det.push_frame(captured, frame);
        while let Some(ev) = det.poll_event() {
            ctl.handle_inband(Leg::Caller, ev);
        }
        step(&mut ctl, now);
        match decide(ctl.mask_to_agent(now), PacketKind::Audio) {
            PacketAction::Pass => agent_audio.extend_from_slice(frame),
            PacketAction::ReplacePayload => {
                masker.fill(frame.len(), &mut buf);
                agent_audio.extend(buf.iter().map(|&b| G711::Pcmu.decode(b)));
            }
            PacketAction::Drop => {}
        }
        // Recording path: delayed, then asked about.
        delay.push(captured, Leg::Caller, k).unwrap();
        while let Some((t, _, idx)) = delay.pop(now) {
            recorded[idx] = !ctl.overlaps_pause(t, t + FRAME);
        }
        events.extend(std::iter::from_fn(|| ctl.poll_event()));
    }
    let end = base + FRAME * frames.len() as u32 + cfg.delay;
    step(&mut ctl, end);
    while let Some((t, _, idx)) = delay.pop(end) {
        recorded[idx] = !ctl.overlaps_pause(t, t + FRAME);
    }
    ctl.finish(end);
    events.extend(std::iter::from_fn(|| ctl.poll_event()));
    Outcome {
        recorded,
        agent_audio,
        events,
        sig,
    }
}

fn card_cfg() -> PciConfig {
    PciConfig {
        resume_after_digits: Some(19),
        ..PciConfig::default()
    }
}

#[test]
fn keyed_card_is_a_paused_span_and_speech_around_it_is_recorded() {
    for seed in 1..=8 {
        let base = Instant::now();
        let out = simulate(base, timeline("4929123456781234", "737", seed), card_cfg());
        let tones = &out.sig.tones;
        assert_eq!(tones.len(), 19);
        // Every frame holding any tone sample was withheld from the recording.
        for (i, r) in tones.iter().enumerate() {
            for f in r.start / 160..=(r.end - 1) / 160 {
                assert!(!out.recorded[f], "seed {seed}: tone {i} frame {f} recorded");
            }
        }
        // Speech before (up to 100 ms before the first tone) and after (from 200 ms after the
        // last tone) is recorded in full: speech suspicion never cost audio.
        let first = tones[0].start / 160;
        let last_end = tones[18].end.div_ceil(160);
        for f in 0..first - 5 {
            assert!(
                out.recorded[f],
                "seed {seed}: speech frame {f} before the card not recorded"
            );
        }
        for f in last_end + 10..out.recorded.len() {
            assert!(
                out.recorded[f],
                "seed {seed}: speech frame {f} after the card not recorded {:?}",
                out.events
            );
        }
        // One span, started no later than the first tone, 19 digits, nothing else.
        let kinds: Vec<_> = out
            .events
            .iter()
            .map(|e| match e {
                PauseEvent::PauseStarted { at, trigger } => {
                    assert!(*at <= base + Duration::from_nanos(tones[0].start as u64 * 125_000));
                    assert_eq!(*trigger, Trigger::CallerDigits);
                    0
                }
                PauseEvent::PauseEnded {
                    trigger,
                    resumed_by,
                    digits,
                    ..
                } => {
                    assert_eq!(
                        (*trigger, *resumed_by, *digits),
                        (Trigger::CallerDigits, Resume::DigitCount, 19)
                    );
                    1
                }
            })
            .collect();
        assert_eq!(kinds, vec![0, 1], "seed {seed}");
    }
}

#[test]
fn agent_hears_no_detectable_digit_and_hears_speech_outside() {
    let base = Instant::now();
    let out = simulate(base, timeline("4929123456781234", "737", 5), card_cfg());
    // An independent detector instance on what the agent heard finds no digit.
    let mut det = InbandDetector::new();
    for (k, f) in out.agent_audio.chunks(160).enumerate() {
        det.push_frame(base + FRAME * k as u32, f);
    }
    while let Some(ev) = det.poll_event() {
        assert!(
            !matches!(
                ev,
                InbandEvent::ToneStart { .. } | InbandEvent::ToneEnd { .. }
            ),
            "{ev:?}"
        );
    }
    // At most one frame of the very first tone's onset leaks before detection.
    let pcm = out.sig.pcm();
    let leaked: usize = out
        .sig
        .tones
        .iter()
        .flat_map(|r| r.clone())
        .filter(|&i| out.agent_audio[i] == pcm[i] && pcm[i].abs() > 64)
        .count();
    assert!(leaked <= 160, "{leaked} tone samples reached the agent");
    // Speech before the card reached the agent unchanged.
    let first = out.sig.tones[0].start;
    assert_eq!(&out.agent_audio[..first - 800], &pcm[..first - 800]);
}

#[test]
fn no_output_reveals_which_digits_were_keyed() {
    let base = Instant::now();
    let a = simulate(base, timeline("4929123456781234", "737", 9), card_cfg());
    let b = simulate(base, timeline("5105105105105100", "018", 9), card_cfg());
    let show = |o: &Outcome| format!("{:?}", o.events);
    assert!(show(&a).contains("digits: 19"), "{}", show(&a));
    // Same timing, different digits: every output is identical, so none carries a digit.
    assert_eq!(show(&a), show(&b));
    assert_eq!(a.recorded, b.recorded);
}
