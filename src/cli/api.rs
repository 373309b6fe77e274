//! `callgate api token create` and `callgate call pause|resume|record`: the CLI side of the
//! call-control API (a payment screen or the agent's desktop uses the same HTTP endpoints).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::CliError;
use crate::config::Config;
use crate::portal::tokens;

pub fn create_token(config: &Config, name: &str) -> Result<u8, CliError> {
    let token = tokens::create(&config.portal.api_tokens_file, name)?;
    eprintln!(
        "created API token `{name}` (only its hash is stored in {}); it is shown once:",
        config.portal.api_tokens_file.display()
    );
    println!("{token}");
    Ok(0)
}

/// POSTs `action` (`pause`, `resume`, `record`) for a call to the running gateway.
pub fn control(config: &Config, id: &str, action: &str, token: Option<String>) -> Result<u8, CliError> {
    let token = token
        .or_else(|| std::env::var("CALLGATE_API_TOKEN").ok())
        .filter(|t| !t.is_empty())
        .ok_or(CliError::NoApiToken)?;
    if !id.starts_with("call-") || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(CliError::InvalidId { id: id.into() });
    }
    let mut addr = config.portal.listen;
    if addr.ip().is_unspecified() {
        addr = SocketAddr::new([127, 0, 0, 1].into(), addr.port());
    }
    let request = format!(
        "POST /api/calls/{id}/{action} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let io = |source| CliError::ApiUnreachable { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(io)?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(io)?;
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut response = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut response).map_err(io)?;
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    if status == 200 {
        let state = json.get("state").and_then(|s| s.as_str()).unwrap_or("?");
        println!("{id}: {state}");
        return Ok(0);
    }
    let message = json
        .get("error")
        .and_then(|s| s.as_str())
        .unwrap_or("unexpected response")
        .to_string();
    Err(CliError::ApiRefused { status, message })
}
