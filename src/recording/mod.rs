//! Recordings: encrypted container format, sans-IO writer, reader, keys, WAV render, storage.
//!
//! * [`keys`]: per-recording DEK wrapped by a rotatable KEK (AES-KW); the key file.
//! * [`container`]: the byte format (`docs/recording-format.md`): header, STREAM chunks, records.
//! * [`writer`]: sans-IO; records in, sealed chunks out every `flush` (time is an input).
//! * [`reader`]: authenticates every chunk, tells complete / truncated / damaged apart.
//! * [`wav`]: stereo PCM16 8 kHz WAV, left caller, right agent.
//! * [`storage`]: where the files live (a directory today).

pub mod container;
pub mod keys;
pub mod reader;
pub mod storage;
pub mod wav;
pub mod writer;
