//! Fuzz the recording container reader: header parsing, chunk framing and authentication, and
//! the record decoder (which a fixed key cannot reach through `read`, since the fuzzer cannot
//! forge GCM tags, so it is fuzzed directly as well).
//!
//! Run: `cargo +nightly fuzz run recording_reader` from the repository root.
#![no_main]

use callgate::recording::container::decode_records;
use callgate::recording::keys::Dek;
use callgate::recording::reader::{read, read_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let _ = read_header(rest);
        let outcome = read(rest, &Dek::from_bytes([0x42; 32]));
        // Invariant under test: "complete" needs at least one authenticated (final) chunk.
        assert!(!outcome.status.is_complete() || outcome.chunks_ok > 0);
    } else {
        let _ = decode_records(rest);
    }
});
