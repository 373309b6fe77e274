//! Everything callgate does with SIP bytes from the network before a transaction sees them:
//! strict parse + mandatory-header checks, the lenient 400 builder, and TCP stream framing.
#![no_main]

use callgate::sip::message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match message::parse(data, 16 * 1024) {
        Ok(msg) => {
            // Whatever parsed must serialise again.
            let _ = msg.to_bytes();
        }
        Err(e) => {
            let (status, reason) = e.status();
            let _ = message::lenient_reply(data, status, reason);
        }
    }
    let _ = message::stream_frame_len(data, 16 * 1024);
});
