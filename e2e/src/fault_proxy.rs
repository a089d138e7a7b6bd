//! A fault-injecting HTTP/1.1 proxy between the controller and moto.
//!
//! The controller reaches moto through `AWS_ENDPOINT_URL`; [`FaultProxy::env`] points that
//! at the proxy instead. On a configurable share of requests, drawn from a seeded
//! generator, the proxy answers with one of the failures a real AWS endpoint produces:
//!
//! - **throttling**: the service's own error body, `Throttling` (ELBv2, awsQuery, HTTP
//!   400) or `RequestLimitExceeded` (EC2, ec2Query, HTTP 503), which the SDK's retry
//!   classifier recognises by its code;
//! - **a server error**: HTTP 500 `InternalFailure` or 503 `ServiceUnavailable`;
//! - **a timeout**: the connection is held, with no answer, until the client gives up
//!   (or [`Faults::hold`] passes);
//! - **a dropped connection**: closed without a response.
//!
//! Each fault happens either **before** the request is forwarded (moto never saw it) or
//! **after** (moto carried it out, and the client is told it failed). The second kind is
//! what makes a create non-idempotent: a client that retries it blindly makes a second
//! resource, or leaks the first.
//!
//! The proxy counts every request by service and `Action` (read from the form body) and
//! every fault by kind, for [`FaultProxy::counts`].
//!
//! It speaks just enough HTTP/1.1 for the SDK's Query-protocol requests: a request line,
//! headers and a `Content-Length` body, on keep-alive connections. Each forwarded request
//! goes to moto on a connection of its own, with `Connection: close`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::moto::Moto;

/// What to inject, and how often.
#[derive(Clone, Debug)]
pub struct Faults {
    /// The share of requests that fail, from 0 to 1.
    pub share: f64,
    /// Seeds the generator that picks which requests fail and how.
    pub seed: u64,
    /// The longest a "timeout" holds a connection; the client is expected to give up
    /// sooner (its attempt timeout).
    pub hold: Duration,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            share: 0.0,
            seed: 1,
            hold: Duration::from_secs(120),
        }
    }
}

/// One kind of injected failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    Throttle,
    Status500,
    Status503,
    Timeout,
    Drop,
}

impl FaultKind {
    const ALL: [FaultKind; 5] = [
        FaultKind::Throttle,
        FaultKind::Status500,
        FaultKind::Status503,
        FaultKind::Timeout,
        FaultKind::Drop,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Throttle => "throttle",
            FaultKind::Status500 => "500",
            FaultKind::Status503 => "503",
            FaultKind::Timeout => "timeout",
            FaultKind::Drop => "drop",
        }
    }
}

/// Whether moto saw the request before the client was told it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum When {
    /// Not forwarded: nothing happened at moto.
    Before,
    /// Forwarded and carried out; the answer was thrown away.
    After,
}

impl When {
    pub fn as_str(self) -> &'static str {
        match self {
            When::Before => "before",
            When::After => "after",
        }
    }
}

/// What the proxy saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests by `"<service> <Action>"` (`elbv2 CreateLoadBalancer`), faulted or not.
    pub requests: BTreeMap<String, u64>,
    /// Faults injected, by kind and by when.
    pub faults: BTreeMap<(FaultKind, When), u64>,
    /// Faults injected, by `"<service> <Action>"`.
    pub faulted: BTreeMap<String, u64>,
}

impl Counts {
    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }

    pub fn total_faults(&self) -> u64 {
        self.faults.values().sum()
    }

    /// Requests whose action is not a read (`Describe*`).
    pub fn mutations(&self) -> u64 {
        self.requests
            .iter()
            .filter(|(k, _)| !is_read(k))
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests whose action is a read (`Describe*`).
    pub fn reads(&self) -> u64 {
        self.total_requests() - self.mutations()
    }

    /// The counts since `before` was taken.
    pub fn since(&self, before: &Counts) -> Counts {
        fn diff<K: Ord + Clone>(
            now: &BTreeMap<K, u64>,
            then: &BTreeMap<K, u64>,
        ) -> BTreeMap<K, u64> {
            now.iter()
                .map(|(k, v)| (k.clone(), v - then.get(k).copied().unwrap_or(0)))
                .filter(|(_, v)| *v > 0)
                .collect()
        }
        Counts {
            requests: diff(&self.requests, &before.requests),
            faults: diff(&self.faults, &before.faults),
            faulted: diff(&self.faulted, &before.faulted),
        }
    }
}

fn is_read(key: &str) -> bool {
    key.split_once(' ')
        .is_some_and(|(_, action)| action.starts_with("Describe"))
}

/// The proxy on `127.0.0.1:<free port>`; dropping it closes the listener and every
/// connection.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    _tasks: JoinSet<()>,
}

struct State {
    upstream: SocketAddr,
    /// `Faults::share` as `f64` bits, changeable while running.
    share: AtomicU64,
    hold: Duration,
    rng: Mutex<SplitMix64>,
    counts: Mutex<Counts>,
}

impl FaultProxy {
    /// Starts a proxy in front of `moto`.
    pub async fn start(moto: &Moto, faults: Faults) -> Result<FaultProxy> {
        let upstream = moto
            .endpoint()
            .strip_prefix("http://")
            .context("moto's endpoint is not http://")?
            .parse()
            .context("moto's endpoint is not host:port")?;
        Self::start_to(upstream, faults).await
    }

    /// Starts a proxy in front of `upstream`.
    pub async fn start_to(upstream: SocketAddr, faults: Faults) -> Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the fault proxy")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            upstream,
            share: AtomicU64::new(faults.share.clamp(0.0, 1.0).to_bits()),
            hold: faults.hold,
            rng: Mutex::new(SplitMix64(faults.seed)),
            counts: Mutex::default(),
        });
        let mut tasks = JoinSet::new();
        let accepting = state.clone();
        tasks.spawn(async move {
            // Dropping this set (with the proxy) aborts every connection's task.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            let state = accepting.clone();
                            connections.spawn(async move {
                                if let Err(e) = serve(stream, &state).await {
                                    tracing::debug!("fault proxy connection: {e:#}");
                                }
                            });
                        }
                        Err(e) => tracing::warn!("fault proxy accept: {e}"),
                    },
                    Some(_) = connections.join_next() => {}
                }
            }
        });
        tracing::info!(%addr, %upstream, share = faults.share, seed = faults.seed, "fault proxy ready");
        Ok(FaultProxy {
            addr,
            state,
            _tasks: tasks,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// [`Moto::env`] with the endpoint pointed at this proxy.
    pub fn env(&self, moto: &Moto) -> Vec<(String, String)> {
        moto.env()
            .into_iter()
            .map(|(k, v)| {
                if k == "AWS_ENDPOINT_URL" {
                    (k, self.endpoint())
                } else {
                    (k, v)
                }
            })
            .collect()
    }

    /// Changes the share of failing requests from now on.
    pub fn set_share(&self, share: f64) {
        self.state
            .share
            .store(share.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    }

    pub fn share(&self) -> f64 {
        f64::from_bits(self.state.share.load(Ordering::Relaxed))
    }

    /// What the proxy saw so far.
    pub fn counts(&self) -> Counts {
        lock(&self.state.counts).clone()
    }
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.state.upstream)
            .field("share", &self.share())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sebastiano Vigna's SplitMix64: small, seedable and good enough to pick faults.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl State {
    /// Whether this request fails, and how.
    fn draw(&self) -> Option<(FaultKind, When)> {
        let share = f64::from_bits(self.share.load(Ordering::Relaxed));
        let mut rng = lock(&self.rng);
        if rng.unit() >= share {
            return None;
        }
        let kind = FaultKind::ALL[(rng.next_u64() % FaultKind::ALL.len() as u64) as usize];
        let when = if rng.next_u64().is_multiple_of(2) {
            When::Before
        } else {
            When::After
        };
        Some((kind, when))
    }

    fn record(&self, call: &str, fault: Option<(FaultKind, When)>) {
        let mut counts = lock(&self.counts);
        *counts.requests.entry(call.to_string()).or_default() += 1;
        if let Some(f) = fault {
            *counts.faults.entry(f).or_default() += 1;
            *counts.faulted.entry(call.to_string()).or_default() += 1;
        }
    }
}

/// A request as read from the client.
struct Request {
    /// The request line and headers, without the final empty line.
    head: String,
    body: Vec<u8>,
}

/// A response as read from moto.
struct Response {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Serves one client connection, request after request, until it closes.
async fn serve(mut client: TcpStream, state: &State) -> Result<()> {
    let mut buf = Vec::new();
    while let Some(request) = read_request(&mut client, &mut buf).await? {
        let service = service_of(&request.body);
        let action = form_value(&request.body, "Action").unwrap_or_else(|| "?".into());
        let call = format!("{service} {action}");
        let fault = state.draw();
        state.record(&call, fault);
        if let Some((kind, when)) = fault {
            tracing::debug!(%call, kind = kind.as_str(), when = when.as_str(), "injecting a fault");
        }
        let forwarded = match fault {
            Some((_, When::Before)) => None,
            _ => Some(forward(state.upstream, &request).await?),
        };
        match fault {
            None => {
                let response = forwarded.expect("forwarded without a fault");
                write_response(&mut client, &response).await?;
            }
            Some((FaultKind::Drop, _)) => return Ok(()),
            Some((FaultKind::Timeout, _)) => {
                // Whatever the client sends now is ignored; it ends the hold by closing.
                let mut sink = [0u8; 1024];
                let _ = tokio::time::timeout(state.hold, async {
                    while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
                })
                .await;
                return Ok(());
            }
            Some((kind, _)) => {
                write_response(&mut client, &error_response(service, kind)).await?;
            }
        }
    }
    Ok(())
}

/// The longest request head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// The longest body accepted; the SDK's Query requests are a few kilobytes.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Reads one request; `None` when the client closed the connection between requests.
/// `buf` carries bytes read past the end of one request over to the next.
async fn read_request<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Option<Request>> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            bail!("request head over {MAX_HEAD} bytes");
        }
        if read_more(stream, buf).await? == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            bail!("the client closed the connection inside a request head");
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let headers = parse_headers(&head);
    if header(&headers, "transfer-encoding").is_some() {
        bail!("chunked requests are not supported");
    }
    let length: usize = match header(&headers, "content-length") {
        Some(v) => v.parse().context("Content-Length")?,
        None => 0,
    };
    if length > MAX_BODY {
        bail!("request body of {length} bytes");
    }
    let body_start = head_end + 4;
    while buf.len() < body_start + length {
        if read_more(stream, buf).await? == 0 {
            bail!("the client closed the connection inside a request body");
        }
    }
    let body = buf[body_start..body_start + length].to_vec();
    buf.drain(..body_start + length);
    Ok(Some(Request { head, body }))
}

async fn read_more<R: AsyncRead + Unpin>(stream: &mut R, buf: &mut Vec<u8>) -> Result<usize> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The header lines of a head (its first line is the request or status line).
fn parse_headers(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_string(), value.trim().to_string()))
        })
        .collect()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Headers that describe one hop, not the message.
fn is_hop_header(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "content-length",
        "transfer-encoding",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Sends `request` to moto on a new connection and reads the whole answer.
async fn forward(upstream: SocketAddr, request: &Request) -> Result<Response> {
    let mut stream = TcpStream::connect(upstream)
        .await
        .context("connecting to moto")?;
    let mut lines = request.head.split("\r\n");
    let mut head = lines.next().unwrap_or_default().to_string();
    head.push_str("\r\n");
    for line in lines {
        let name = line.split_once(':').map_or(line, |(n, _)| n).trim();
        if !is_hop_header(name) {
            head.push_str(line);
            head.push_str("\r\n");
        }
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        request.body.len()
    ));
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&request.body).await?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .context("reading moto's answer")?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<Response> {
    let head_end = find(raw, b"\r\n\r\n").context("moto's answer has no complete head")?;
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let status_line = head.split("\r\n").next().unwrap_or_default().to_string();
    let headers = parse_headers(&head);
    let rest = &raw[head_end + 4..];
    let body = if header(&headers, "transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        dechunk(rest)?
    } else if let Some(length) = header(&headers, "content-length") {
        let length: usize = length.parse().context("moto's Content-Length")?;
        rest.get(..length)
            .context("moto's answer is shorter than its Content-Length")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status_line,
        headers: headers
            .into_iter()
            .filter(|(n, _)| !is_hop_header(n))
            .collect(),
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n").context("a chunk without its size line")?;
        let size = String::from_utf8_lossy(&rest[..line_end]);
        let size = size.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).context("a chunk size")?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(rest.get(..size).context("a short chunk")?);
        rest = rest.get(size + 2..).context("a chunk without its end")?;
    }
}

async fn write_response(client: &mut TcpStream, response: &Response) -> Result<()> {
    let mut head = response.status_line.clone();
    head.push_str("\r\n");
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: keep-alive\r\n\r\n",
        response.body.len()
    ));
    client.write_all(head.as_bytes()).await?;
    client.write_all(&response.body).await?;
    Ok(())
}

/// Which API a Query request is for, from its `Version`.
fn service_of(body: &[u8]) -> &'static str {
    match form_value(body, "Version").as_deref() {
        Some("2015-12-01") => "elbv2",
        Some("2016-11-15") => "ec2",
        _ => "other",
    }
}

/// A parameter of a form-encoded body. The values looked for here (`Action`, `Version`)
/// are plain ASCII, so no percent-decoding is needed.
fn form_value(body: &[u8], key: &str) -> Option<String> {
    String::from_utf8_lossy(body).split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

/// The answer AWS gives for `kind`, in the protocol of `service`: ELBv2 speaks awsQuery
/// (`<ErrorResponse><Error>`), EC2 ec2Query (`<Response><Errors><Error>`).
fn error_response(service: &str, kind: FaultKind) -> Response {
    let (status, code, message) = match (kind, service) {
        // EC2 throttles with HTTP 503; ELBv2 with 400.
        (FaultKind::Throttle, "ec2") => (503, "RequestLimitExceeded", "Request limit exceeded."),
        (FaultKind::Throttle, _) => (400, "Throttling", "Rate exceeded"),
        (FaultKind::Status503, _) => (503, "ServiceUnavailable", "Service is unavailable."),
        _ => (
            500,
            "InternalFailure",
            "The request processing has failed because of an unknown error.",
        ),
    };
    let request_id = "00000000-0000-0000-0000-fa0170000000";
    let body = if service == "ec2" {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
             <Message>{message}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>"
        )
    } else {
        let kind = if status < 500 { "Sender" } else { "Receiver" };
        format!(
            "<ErrorResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\">\
             <Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>\
             <RequestId>{request_id}</RequestId></ErrorResponse>"
        )
    };
    let reason = match status {
        400 => "Bad Request",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    Response {
        status_line: format!("HTTP/1.1 {status} {reason}"),
        headers: vec![("Content-Type".into(), "text/xml".into())],
        body: body.into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_requests_back_to_back_on_one_connection() {
        let raw = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\nAction=A&V=1POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n";
        let mut stream = &raw[..];
        let mut buf = Vec::new();
        let first = read_request(&mut stream, &mut buf).await.unwrap().unwrap();
        assert_eq!(first.body, b"Action=A&V=1");
        assert!(first.head.starts_with("POST / HTTP/1.1"));
        let second = read_request(&mut stream, &mut buf).await.unwrap().unwrap();
        assert!(second.body.is_empty());
        assert!(read_request(&mut stream, &mut buf).await.unwrap().is_none());
    }

    #[test]
    fn reads_the_action_and_the_service() {
        let body = b"Action=CreateTargetGroup&Version=2015-12-01&Name=k8s-a";
        assert_eq!(
            form_value(body, "Action").as_deref(),
            Some("CreateTargetGroup")
        );
        assert_eq!(service_of(body), "elbv2");
        assert_eq!(
            service_of(b"Action=DescribeInstances&Version=2016-11-15"),
            "ec2"
        );
    }

    #[test]
    fn parses_chunked_and_sized_answers() {
        let sized = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokjunk").unwrap();
        assert_eq!(sized.body, b"ok");
        let chunked = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(chunked.body, b"abcde");
        assert!(chunked.headers.is_empty());
    }

    #[test]
    fn throttling_speaks_each_services_protocol() {
        let elb = error_response("elbv2", FaultKind::Throttle);
        assert!(elb.status_line.contains(" 400 "));
        let body = String::from_utf8(elb.body).unwrap();
        assert!(body.contains("<ErrorResponse") && body.contains("<Code>Throttling</Code>"));
        let ec2 = error_response("ec2", FaultKind::Throttle);
        let body = String::from_utf8(ec2.body).unwrap();
        assert!(body.contains("<Errors><Error><Code>RequestLimitExceeded</Code>"));
    }

    #[test]
    fn the_share_of_faults_follows_the_setting() {
        let state = State {
            upstream: "127.0.0.1:1".parse().unwrap(),
            share: AtomicU64::new(0.5f64.to_bits()),
            hold: Duration::ZERO,
            rng: Mutex::new(SplitMix64(7)),
            counts: Mutex::default(),
        };
        let faults = (0..10_000).filter(|_| state.draw().is_some()).count();
        assert!((4_500..5_500).contains(&faults), "{faults}");
        state.share.store(0f64.to_bits(), Ordering::Relaxed);
        assert!((0..1_000).all(|_| state.draw().is_none()));
    }
}
