//! moto's own HTTP API (`/moto-api/...`): a one-shot HTTP/1.1 request over loopback,
//! which needs no HTTP client crate.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Answers bigger than this are cut; moto's API answers are small.
const MAX_RESPONSE: u64 = 1 << 20;

/// Sends `method path` with an empty body and returns the status and the raw body
/// (chunked encoding, if any, is left in place). The whole exchange is bounded by
/// `timeout`.
pub(super) async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await?;
        let mut response = Vec::new();
        stream.take(MAX_RESPONSE).read_to_end(&mut response).await?;
        parse(&String::from_utf8_lossy(&response))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| anyhow!("no answer to {method} {path} within {timeout:?}"))?
}

fn parse(response: &str) -> Result<(u16, String)> {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("incomplete HTTP response: {response:.200}"))?;
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad HTTP status line: {status_line}"))?;
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let (status, body) =
            parse("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"status\": \"ok\"}")
                .unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, "{\"status\": \"ok\"}");
        assert!(parse("HTTP/1.1 200 OK\r\nContent-").is_err());
        assert!(parse("garbage\r\n\r\n").is_err());
    }
}
