//! SIP INFO DTMF bodies: `application/dtmf-relay` (`Signal=5\r\nDuration=160\r\n`) and
//! `application/dtmf` (`5`). Errors never echo the body: it may hold a card digit.

use std::time::Duration;

use super::Digit;

/// Longest body accepted (both formats are a few bytes).
pub const MAX_BODY: usize = 1024;
/// Duration assumed when a body gives none.
pub const DEFAULT_DURATION: Duration = Duration::from_millis(100);
/// Longest duration believed (longer values are clamped).
pub const MAX_DURATION: Duration = Duration::from_secs(10);

/// A digit from a SIP INFO request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct InfoDigit {
    pub digit: Digit,
    /// How long the key was held (from `Duration=`, else [`DEFAULT_DURATION`]).
    pub duration: Duration,
}

/// Why an INFO body is not a DTMF digit. No variant carries any part of the body.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum InfoError {
    #[error("content type is not application/dtmf-relay or application/dtmf")]
    UnsupportedContentType,
    #[error("body larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("body is not UTF-8")]
    NotUtf8,
    #[error("no Signal line in the dtmf-relay body")]
    MissingSignal,
    #[error("the signal is not a DTMF key")]
    BadSignal,
    #[error("the Duration value is not a number of milliseconds")]
    BadDuration,
}

/// Parses an INFO request body given its `Content-Type` header value (parameters ignored).
pub fn parse_info(content_type: &str, body: &[u8]) -> Result<InfoDigit, InfoError> {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if body.len() > MAX_BODY {
        return Err(InfoError::TooLarge);
    }
    let text = std::str::from_utf8(body).map_err(|_| InfoError::NotUtf8)?;
    match mime.as_str() {
        "application/dtmf-relay" => relay(text),
        "application/dtmf" => Ok(InfoDigit {
            digit: signal(text)?,
            duration: DEFAULT_DURATION,
        }),
        _ => Err(InfoError::UnsupportedContentType),
    }
}

fn relay(text: &str) -> Result<InfoDigit, InfoError> {
    let mut digit = None;
    let mut duration = DEFAULT_DURATION;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "signal" => digit = Some(signal(v)?),
            "duration" => {
                let ms: u64 = v.trim().parse().map_err(|_| InfoError::BadDuration)?;
                duration = Duration::from_millis(ms).min(MAX_DURATION);
            }
            _ => {}
        }
    }
    Ok(InfoDigit {
        digit: digit.ok_or(InfoError::MissingSignal)?,
        duration,
    })
}

/// A key as a character (`5`, `*`, `#`, `A`) or an RFC 4733 code (`10` = `*`, `11` = `#`).
fn signal(v: &str) -> Result<Digit, InfoError> {
    let v = v.trim();
    let mut chars = v.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Digit::from_char(c).ok_or(InfoError::BadSignal),
        _ => v
            .parse::<u8>()
            .ok()
            .and_then(Digit::from_event)
            .ok_or(InfoError::BadSignal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> Digit {
        Digit::from_char(c).unwrap()
    }

    #[test]
    fn dtmf_relay() {
        let r = parse_info("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n").unwrap();
        assert_eq!(
            r,
            InfoDigit {
                digit: d('5'),
                duration: Duration::from_millis(160)
            }
        );
        let r = parse_info(
            "Application/DTMF-Relay; charset=x",
            b"signal = #\nduration= 250",
        )
        .unwrap();
        assert_eq!(
            r,
            InfoDigit {
                digit: d('#'),
                duration: Duration::from_millis(250)
            }
        );
        assert_eq!(
            parse_info("application/dtmf-relay", b"Signal=10\r\n")
                .unwrap()
                .digit,
            d('*')
        );
        assert_eq!(
            parse_info("application/dtmf-relay", b"Signal=*")
                .unwrap()
                .duration,
            DEFAULT_DURATION
        );
    }

    #[test]
    fn dtmf_plain() {
        assert_eq!(parse_info("application/dtmf", b"5").unwrap().digit, d('5'));
        assert_eq!(
            parse_info("application/dtmf", b" 11\r\n").unwrap().digit,
            d('#')
        );
        assert_eq!(parse_info("application/dtmf", b"d").unwrap().digit, d('D'));
    }

    #[test]
    fn garbage_is_a_typed_error_that_never_echoes_the_body() {
        use InfoError::*;
        let cases: &[(&str, &[u8], InfoError)] = &[
            ("text/plain", b"5", UnsupportedContentType),
            ("application/dtmf-relay", b"Duration=160", MissingSignal),
            ("application/dtmf-relay", b"Signal=55\r\n", BadSignal),
            ("application/dtmf-relay", b"Signal=X", BadSignal),
            (
                "application/dtmf-relay",
                b"Signal=7\r\nDuration=-4",
                BadDuration,
            ),
            ("application/dtmf-relay", &[0xff, 0xfe], NotUtf8),
            ("application/dtmf", b"", BadSignal),
            ("application/dtmf", b"16", BadSignal),
            ("application/dtmf", &[b'5'; 2000], TooLarge),
            ("", b"", UnsupportedContentType),
        ];
        for (ct, body, want) in cases {
            let e = parse_info(ct, body).unwrap_err();
            assert_eq!(e, *want, "{ct:?}");
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains('7') && !shown.contains("55"), "{shown}");
        }
        let mut x = 1u32;
        for n in 0..3000usize {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let body: Vec<u8> = (0..n % 40)
                .map(|i| (x.rotate_left(i as u32) & 0xff) as u8)
                .collect();
            let _ = parse_info("application/dtmf-relay", &body);
            let _ = parse_info("application/dtmf", &body);
        }
    }
}
