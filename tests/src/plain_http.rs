//! Plain HTTP requests to the processes the harness starts (readiness probes, etcd's gateway):
//! blocking and outside any runtime, as the harness starts processes from both plain and async
//! tests.

use std::io::{Read, Write};
use std::time::Duration;

/// `method` of `url` (`http://host:port/path`) with an optional JSON `body`: the status and the
/// body as sent (chunk framing included: callers look for text in it).
pub fn call(method: &str, url: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    let content = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len())
    };
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{content}\r\n{body}")?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
    Ok((status, body.to_string()))
}

/// The body of a GET of `url` when it answered 200.
pub fn get_ok(url: &str) -> Option<String> {
    call("GET", url, None).ok().and_then(|(status, body)| (status == 200).then_some(body))
}
