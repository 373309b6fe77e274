//! SDP offer parsing, negotiation and answer generation on arbitrary bodies.
#![no_main]

use callgate::media::sdp::{BuildSdp, build_sdp, negotiate, parse_offer, split_codecs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(offer) = parse_offer(&text) else {
        return;
    };
    let _ = offer.is_hold();
    let Ok(codecs) = negotiate(&offer) else {
        return;
    };
    let (audio, te) = split_codecs(&codecs);
    let answer = build_sdp(&BuildSdp {
        session_id: 1,
        version: 1,
        addr: offer.rtp.0.ip(),
        port: 20000,
        codecs: &audio,
        telephone_event: te,
        direction: offer.direction.reversed(),
        ptime: 20,
        answer_to: Some(&offer),
    })
    .expect("negotiate returned at least one G.711 codec");
    // Our own answer must always parse, with the offer's m-line layout.
    let back = parse_offer(&answer).expect("our answer parses");
    assert_eq!(back.media_lines.len(), offer.media_lines.len());
});
