//! Plain HTTP/1.0 exchanges on loopback, for the benchmark binaries: the
//! controller's `/metrics`, and moto's ELBv2 Query API (the ELBv2 SDK is a
//! dev-dependency of this crate, not available to its binaries; moto checks no
//! signature and routes by the credential scope in `Authorization`).

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// ELBv2 reads on moto, each bounded by a timeout.
pub struct ElbQuery {
    host: String,
    port: u16,
    timeout: Duration,
}

impl ElbQuery {
    /// For moto at `endpoint` (`http://host:port`).
    pub fn new(endpoint: &str, timeout: Duration) -> Result<ElbQuery> {
        let authority = endpoint
            .strip_prefix("http://")
            .with_context(|| format!("moto endpoint {endpoint} is not http://"))?;
        let (host, port) = authority
            .rsplit_once(':')
            .with_context(|| format!("moto endpoint {endpoint} has no port"))?;
        Ok(ElbQuery {
            host: host.to_owned(),
            port: port.parse().context("moto's port")?,
            timeout,
        })
    }

    /// One ELBv2 action; returns the XML answer.
    pub async fn call(&self, action: &str, params: &[(&str, &str)]) -> Result<String> {
        let mut body = format!("Action={action}&Version=2015-12-01");
        for (k, v) in params {
            write!(body, "&{}={}", form_encode(k), form_encode(v))?;
        }
        let request = format!(
            "POST / HTTP/1.0\r\nHost: {host}:{port}\r\n\
             Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/elasticloadbalancing/aws4_request, SignedHeaders=host, Signature=0\r\n\
             Content-Length: {len}\r\n\r\n{body}",
            host = self.host,
            port = self.port,
            len = body.len(),
        );
        let (status, answer) =
            http((self.host.as_str(), self.port), &request, self.timeout).await?;
        ensure!(status == 200, "elbv2 {action} gave {status}: {answer:.300}");
        Ok(answer)
    }

    /// Every target group's ARN, page by page.
    pub async fn target_groups(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut params = vec![("PageSize", "400")];
            if let Some(m) = marker.as_deref() {
                params.push(("Marker", m));
            }
            let xml = self.call("DescribeTargetGroups", &params).await?;
            out.extend(xml_values(&xml, "TargetGroupArn"));
            marker = xml_values(&xml, "NextMarker").into_iter().next();
            if marker.as_deref().is_none_or(str::is_empty) {
                return Ok(out);
            }
        }
    }

    /// The instance ids registered in a target group.
    pub async fn targets(&self, arn: &str) -> Result<Vec<String>> {
        Ok(xml_values(
            &self
                .call("DescribeTargetHealth", &[("TargetGroupArn", arn)])
                .await?,
            "Id",
        ))
    }
}

/// The text of every `<tag>…</tag>`.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        rest = &rest[start + open.len()..];
        let Some(end) = rest.find(&close) else { break };
        out.push(rest[..end].trim().to_owned());
        rest = &rest[end + close.len()..];
    }
    out
}

fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// Sends a raw HTTP/1.0 request and returns the status and the body.
pub async fn http(addr: (&str, u16), request: &str, timeout: Duration) -> Result<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let raw = String::from_utf8_lossy(&raw);
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .with_context(|| format!("incomplete HTTP response: {raw:.200}"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("no HTTP status in {head:.200}"))?;
        anyhow::Ok((status, body.to_owned()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| format!("no answer from {}:{} within {timeout:?}", addr.0, addr.1))?
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One sample of a Prometheus text exposition: `name{labels} value`.
pub struct Sample<'a> {
    pub name: &'a str,
    labels: &'a str,
    pub value: f64,
}

impl Sample<'_> {
    /// The value of label `key`, or "".
    pub fn label(&self, key: &str) -> String {
        self.labels
            .split(&format!("{key}=\""))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default()
            .to_owned()
    }
}

/// The samples of a `/metrics` body, comments skipped.
pub fn samples(body: &str) -> impl Iterator<Item = Sample<'_>> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value = value.parse::<f64>().ok()?;
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            Some(Sample {
                name,
                labels,
                value,
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_xml_values_and_encodes_forms() {
        let xml = "<a><TargetGroupArn>arn:x/1</TargetGroupArn><TargetGroupArn>arn:x/2</TargetGroupArn></a>";
        assert_eq!(xml_values(xml, "TargetGroupArn"), ["arn:x/1", "arn:x/2"]);
        assert_eq!(form_encode("arn:aws:x/y z"), "arn%3Aaws%3Ax%2Fy%20z");
    }

    #[test]
    fn reads_metric_samples() {
        let body = "# HELP x\nferrolb_x_total{a=\"1\",b=\"two\"} 3\nferrolb_y 2.5\nbad line\n";
        let got: Vec<_> = samples(body)
            .map(|s| (s.name.to_string(), s.label("b"), s.value))
            .collect();
        assert_eq!(
            got,
            [
                ("ferrolb_x_total".to_string(), "two".to_string(), 3.0),
                ("ferrolb_y".to_string(), String::new(), 2.5)
            ]
        );
    }
}
