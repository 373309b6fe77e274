//! Playback for the portal: a recording rendered once to a private temporary WAV that is
//! unlinked as soon as it is written (so a crash leaves no decrypted audio on disk: the kernel
//! frees it with the last descriptor), served with HTTP byte ranges so the browser's player
//! can seek. A damaged recording is refused before any audio is produced.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::export::bundle::PrivateTemp;
use crate::recording::reader::ReadOutcome;
use crate::recording::wav::{WavError, render_stereo_wav};

/// A rendered recording, held open after its name is gone.
pub struct Rendered {
    file: File,
    pub len: u64,
    pub truncated: bool,
}

impl Rendered {
    /// A path that opens this file afresh (its own file offset, so concurrent range requests
    /// do not share one): `/proc/self/fd/N` still opens an unlinked file on Linux.
    pub fn reopen_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Wav(#[from] WavError),
    #[error("temporary file for playback: {0}")]
    Io(#[from] std::io::Error),
}

/// Renders `outcome` into a new private file in `dir`, then unlinks it (blocking: call off
/// the runtime).
pub fn render(outcome: &ReadOutcome, dir: &Path) -> Result<Arc<Rendered>, RenderError> {
    let tmp =
        PrivateTemp::create(dir.join(format!(".callgate-play-{}.wav", crate::ids::random_hex(8))))?;
    let report = render_stereo_wav(outcome, tmp.path())?;
    let file = File::open(tmp.path())?;
    let len = file.metadata()?.len();
    drop(tmp); // unlinks the name; `file` keeps the data
    Ok(Arc::new(Rendered {
        file,
        len,
        truncated: report.truncated,
    }))
}

/// What a `Range` header asks of a body of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// No (usable) range: the whole body, 200.
    Full,
    /// Bytes `start..=end`, 206.
    Part { start: u64, end: u64 },
    /// 416.
    Unsatisfiable,
}

/// Parses one `bytes=` range (`a-b`, `a-`, `-n`). Several ranges, other units or syntax
/// errors give [`ByteRange::Full`], as RFC 9110 allows a server to ignore the header.
pub fn parse_range(header: Option<&str>, len: u64) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    let (start, end) = match (a.is_empty(), b.is_empty()) {
        (false, _) => {
            let Some(start) = parse(a) else {
                return ByteRange::Full;
            };
            let end = if b.is_empty() {
                len.saturating_sub(1)
            } else {
                match parse(b) {
                    Some(e) if e >= start => e.min(len.saturating_sub(1)),
                    _ => return ByteRange::Full,
                }
            };
            if start >= len {
                return ByteRange::Unsatisfiable;
            }
            (start, end)
        }
        (true, false) => {
            let Some(n) = parse(b) else {
                return ByteRange::Full;
            };
            if n == 0 || len == 0 {
                return ByteRange::Unsatisfiable;
            }
            (len.saturating_sub(n), len - 1)
        }
        (true, true) => return ByteRange::Full,
    };
    ByteRange::Part { start, end }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use ByteRange::*;
        let r = |h| parse_range(Some(h), 1000);
        assert_eq!(parse_range(None, 1000), Full);
        assert_eq!(r("bytes=0-"), Part { start: 0, end: 999 });
        assert_eq!(r("bytes=10-19"), Part { start: 10, end: 19 });
        assert_eq!(
            r("bytes=990-5000"),
            Part {
                start: 990,
                end: 999
            }
        );
        assert_eq!(
            r("bytes=-100"),
            Part {
                start: 900,
                end: 999
            }
        );
        assert_eq!(r("bytes=-5000"), Part { start: 0, end: 999 });
        assert_eq!(r("bytes=1000-"), Unsatisfiable);
        assert_eq!(r("bytes=-0"), Unsatisfiable);
        for ignored in [
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=0-1,5-9",
            "bytes=-",
            "bytes=1",
        ] {
            assert_eq!(r(ignored), Full, "{ignored}");
        }
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
    }
}
