//! HTTP/1.1 for health checks, sans-IO: the request a check sends, the
//! response head it parses and the chunked body decoder. Bytes come from
//! the backend, so every parser here returns an error instead of
//! panicking, and every length is bounded ([`super::MAX_HEAD`],
//! [`super::MAX_BODY`]).
//!
//! Owns: the wire format only. Must not: read sockets or decide health
//! (that is [`super::probe`]).

use std::fmt;
use std::net::SocketAddr;

use super::SpecError;

/// Checks the parts of an HTTP check that go on the wire.
pub(super) fn validate(
    path: &str,
    host: Option<&str>,
    expect_status: &[(u16, u16)],
) -> Result<(), SpecError> {
    let bad = |s: &str| s.bytes().any(|b| b.is_ascii_control() || b == b' ');
    if !path.starts_with('/') || bad(path) {
        return Err(SpecError::HttpPath(path.to_string()));
    }
    if let Some(h) = host {
        if h.is_empty() || bad(h) {
            return Err(SpecError::HttpHost(h.to_string()));
        }
    }
    for &(lo, hi) in expect_status {
        if lo > hi || lo < 100 || hi > 599 {
            return Err(SpecError::StatusRange(lo, hi));
        }
    }
    Ok(())
}

/// The Host header for a target: its address, with the port unless it is
/// the scheme's default.
pub(super) fn default_host(target: SocketAddr, tls: bool) -> String {
    let default_port = if tls { 443 } else { 80 };
    match (target, target.port() == default_port) {
        (SocketAddr::V4(a), true) => a.ip().to_string(),
        (SocketAddr::V6(a), true) => format!("[{}]", a.ip()),
        (a, false) => a.to_string(),
    }
}

/// The GET request of a check, built once per target. No `Connection:
/// close`: an HTTP/1.1 server then frames its body (Content-Length or
/// chunked) and keeps the connection open, so the check can close it with
/// RST as soon as the response is in, without a FIN from the server and
/// the ACK of it (HAProxy closes its checks the same way). The connection
/// is never reused: every check opens a new one, so it keeps testing
/// `accept()`.
pub(super) fn request(path: &str, host: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: vipgate-health\r\n\
         Accept: */*\r\n\r\n"
    )
    .into_bytes()
}

/// Whether `status` is in one of the inclusive ranges (empty: 2xx).
pub(super) fn status_expected(status: u16, ranges: &[(u16, u16)]) -> bool {
    if ranges.is_empty() {
        return (200..=299).contains(&status);
    }
    ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&status))
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Head {
    pub status: u16,
    pub framing: Framing,
    /// Bytes of the head, blank line included; the body starts here.
    pub len: usize,
}

/// A response that is not HTTP/1.x as a check can read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HttpError {
    StatusLine,
    Header,
    ContentLength,
    ChunkSize,
    ChunkEnd,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HttpError::StatusLine => "bad status line",
            HttpError::Header => "bad header line",
            HttpError::ContentLength => "bad Content-Length",
            HttpError::ChunkSize => "bad chunk size",
            HttpError::ChunkEnd => "bad chunk end",
        })
    }
}

/// Parses the head at the start of `buf`; `Ok(None)` while the blank line
/// that ends it has not arrived. Lines may end in CRLF or a bare LF.
pub(super) fn parse_head(buf: &[u8]) -> Result<Option<Head>, HttpError> {
    let Some(len) = head_end(buf) else {
        return Ok(None);
    };
    let mut lines = buf[..len].split(|&b| b == b'\n').map(trim_cr);
    let status = parse_status_line(lines.next().unwrap_or_default())?;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut other_coding = false;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = split_header(line)?;
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_length(value)?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::ContentLength);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // The final coding decides (RFC 9112 section 6.3).
            let last = value.rsplit(|&b| b == b',').next().map(trim_ows);
            chunked = last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
            other_coding = !chunked;
        }
    }
    let framing = if no_body(status) {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked
    } else if other_coding {
        Framing::UntilClose
    } else {
        length.map_or(Framing::UntilClose, Framing::Length)
    };
    Ok(Some(Head {
        status,
        framing,
        len,
    }))
}

/// Index just past the blank line ending the head.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b != b'\n' {
            continue;
        }
        if trim_cr(&buf[line_start..i]).is_empty() && line_start > 0 {
            return Some(i + 1);
        }
        line_start = i + 1;
    }
    None
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !matches!(b, b' ' | b'\t'));
    let end = s.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
    match (start, end) {
        (Some(a), Some(b)) => &s[a..=b],
        _ => &[],
    }
}

/// "HTTP/1.x SSS[ reason]".
fn parse_status_line(line: &[u8]) -> Result<u16, HttpError> {
    let rest = line.strip_prefix(b"HTTP/1.").ok_or(HttpError::StatusLine)?;
    let (minor, rest) = rest.split_first().ok_or(HttpError::StatusLine)?;
    let code = rest.strip_prefix(b" ").ok_or(HttpError::StatusLine)?;
    let digits = code.get(..3).ok_or(HttpError::StatusLine)?;
    let after_ok = code.get(3).is_none_or(|&b| b == b' ');
    if !minor.is_ascii_digit() || !digits.iter().all(u8::is_ascii_digit) || !after_ok {
        return Err(HttpError::StatusLine);
    }
    let status = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if status < 100 {
        return Err(HttpError::StatusLine);
    }
    Ok(status)
}

fn split_header(line: &[u8]) -> Result<(&[u8], &[u8]), HttpError> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(HttpError::Header)?;
    let name = &line[..colon];
    if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
        return Err(HttpError::Header);
    }
    Ok((name, trim_ows(&line[colon + 1..])))
}

fn parse_length(value: &[u8]) -> Result<u64, HttpError> {
    if value.is_empty() || value.len() > 15 || !value.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::ContentLength);
    }
    Ok(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// 1xx, 204 and 304 responses have no body.
fn no_body(status: u16) -> bool {
    status < 200 || status == 204 || status == 304
}

/// Incremental decoder of a chunked body (RFC 9112 section 7.1). Stops at
/// the last chunk; trailers are not read (the check closes the
/// connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Chunked {
    state: ChunkState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size { value: u64, digits: u8 },
    Extension { value: u64 },
    SizeLf { value: u64 },
    Data { left: u64 },
    DataCr,
    DataLf,
    Done,
}

/// Why a chunked body could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChunkError {
    Http(HttpError),
    TooLong,
}

impl Chunked {
    pub fn new() -> Chunked {
        Chunked {
            state: ChunkState::Size {
                value: 0,
                digits: 0,
            },
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes `input`, appending body bytes to `body` (at most `limit`
    /// bytes in all). Returns true once the last chunk has been seen.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        body: &mut Vec<u8>,
        limit: usize,
    ) -> Result<bool, ChunkError> {
        while !input.is_empty() && !self.is_done() {
            if let ChunkState::Data { left } = self.state {
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                if body.len() + take > limit {
                    return Err(ChunkError::TooLong);
                }
                body.extend_from_slice(&input[..take]);
                input = &input[take..];
                self.state = match left - take as u64 {
                    0 => ChunkState::DataCr,
                    left => ChunkState::Data { left },
                };
                continue;
            }
            self.state = self.step(input[0]).map_err(ChunkError::Http)?;
            input = &input[1..];
        }
        Ok(self.is_done())
    }

    /// One byte outside chunk data.
    fn step(&self, b: u8) -> Result<ChunkState, HttpError> {
        let next = match (self.state, b) {
            (ChunkState::Size { value, digits }, _) if b.is_ascii_hexdigit() => {
                if digits >= 15 {
                    return Err(HttpError::ChunkSize);
                }
                let d = u64::from((b as char).to_digit(16).unwrap_or(0));
                ChunkState::Size {
                    value: value * 16 + d,
                    digits: digits + 1,
                }
            }
            (ChunkState::Size { digits: 0, .. }, _) => return Err(HttpError::ChunkSize),
            (ChunkState::Size { value, .. }, b';' | b' ' | b'\t') => {
                ChunkState::Extension { value }
            }
            (ChunkState::Size { value, .. } | ChunkState::Extension { value }, b'\r') => {
                ChunkState::SizeLf { value }
            }
            (ChunkState::Size { value, .. } | ChunkState::Extension { value }, b'\n')
            | (ChunkState::SizeLf { value }, b'\n') => Self::after_size(value),
            (ChunkState::Extension { value }, _) => ChunkState::Extension { value },
            (ChunkState::DataCr, b'\r') => ChunkState::DataLf,
            (ChunkState::DataCr | ChunkState::DataLf, b'\n') => ChunkState::Size {
                value: 0,
                digits: 0,
            },
            (ChunkState::Size { .. }, _) | (ChunkState::SizeLf { .. }, _) => {
                return Err(HttpError::ChunkSize)
            }
            _ => return Err(HttpError::ChunkEnd),
        };
        Ok(next)
    }

    fn after_size(value: u64) -> ChunkState {
        if value == 0 {
            ChunkState::Done
        } else {
            ChunkState::Data { left: value }
        }
    }
}

/// Whether `needle` occurs in `haystack` (an empty needle always does).
pub(super) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nginx 1.22's answer to a check, as captured with `curl -sv`
    /// (headers byte for byte, the Date fixed).
    const NGINX_200: &[u8] = b"HTTP/1.1 200 OK\r\n\
        Server: nginx/1.22.1\r\n\
        Date: Tue, 24 Nov 2026 22:00:00 GMT\r\n\
        Content-Type: text/plain\r\n\
        Content-Length: 14\r\n\
        Connection: close\r\n\
        \r\n\
        hello vipgate\n";

    #[test]
    fn parses_an_nginx_head() {
        let head = parse_head(NGINX_200).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.framing, Framing::Length(14));
        assert_eq!(&NGINX_200[head.len..], b"hello vipgate\n");
    }

    #[test]
    fn an_incomplete_head_needs_more() {
        for cut in 0..NGINX_200.len() - 14 {
            assert_eq!(parse_head(&NGINX_200[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn bare_lf_lines_and_http_1_0() {
        let head = parse_head(b"HTTP/1.0 503 Service Unavailable\nX: y\n\nbody").unwrap();
        assert_eq!(
            head,
            Some(Head {
                status: 503,
                framing: Framing::UntilClose,
                len: 39,
            })
        );
    }

    #[test]
    fn status_line_without_reason() {
        let head = parse_head(b"HTTP/1.1 204\r\n\r\n").unwrap().unwrap();
        assert_eq!((head.status, head.framing), (204, Framing::Length(0)));
    }

    #[test]
    fn chunked_wins_over_content_length() {
        let raw =
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        let head = parse_head(raw).unwrap().unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert_eq!(
            parse_head(raw).unwrap().unwrap().framing,
            Framing::UntilClose
        );
    }

    #[test]
    fn rejects_what_is_not_http() {
        for raw in [
            &b"SSH-2.0-OpenSSH_9.2\r\n\r\n"[..],
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"HTTP/1.x 200 OK\r\n\r\n",
            b"HTTP/2 200\r\n\r\n",
        ] {
            assert_eq!(parse_head(raw), Err(HttpError::StatusLine), "{raw:?}");
        }
        let bad_header = b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n";
        assert_eq!(parse_head(bad_header), Err(HttpError::Header));
        for cl in ["-1", "1x", "", "9999999999999999", "1, 2"] {
            let raw = format!("HTTP/1.1 200 OK\r\nContent-Length: {cl}\r\n\r\n");
            assert_eq!(
                parse_head(raw.as_bytes()),
                Err(HttpError::ContentLength),
                "{cl}"
            );
        }
        let twice = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(parse_head(twice), Err(HttpError::ContentLength));
    }

    /// The example of RFC 9112 section 7.1 style: two chunks, an
    /// extension, a trailer that is not read.
    const CHUNKED: &[u8] = b"4\r\nWiki\r\n7;name=value\r\npedia i\r\n0\r\nExpires: never\r\n\r\n";

    #[test]
    fn decodes_chunks_in_one_go_and_byte_by_byte() {
        let mut body = Vec::new();
        let mut c = Chunked::new();
        assert_eq!(c.feed(CHUNKED, &mut body, 1024), Ok(true));
        assert_eq!(body, b"Wikipedia i");
        let mut body = Vec::new();
        let mut c = Chunked::new();
        let mut done = false;
        for b in CHUNKED {
            done = c.feed(std::slice::from_ref(b), &mut body, 1024).unwrap();
        }
        assert!(done);
        assert_eq!(body, b"Wikipedia i");
    }

    #[test]
    fn chunked_errors_and_limit() {
        let mut body = Vec::new();
        assert_eq!(
            Chunked::new().feed(b"zz\r\n", &mut body, 1024),
            Err(ChunkError::Http(HttpError::ChunkSize))
        );
        assert_eq!(
            Chunked::new().feed(b"2\r\nabX", &mut body, 1024),
            Err(ChunkError::Http(HttpError::ChunkEnd))
        );
        assert_eq!(
            Chunked::new().feed(b"ffffffffffffffff\r\n", &mut body, 1024),
            Err(ChunkError::Http(HttpError::ChunkSize))
        );
        let mut body = Vec::new();
        assert_eq!(
            Chunked::new().feed(b"10\r\n0123456789abcdef\r\n", &mut body, 8),
            Err(ChunkError::TooLong)
        );
    }

    #[test]
    fn requests_and_hosts() {
        assert_eq!(
            request("/health", "web"),
            b"GET /health HTTP/1.1\r\nHost: web\r\nUser-Agent: vipgate-health\r\nAccept: */*\r\n\r\n"
        );
        let v4: SocketAddr = "198.18.0.1:80".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:8443".parse().unwrap();
        assert_eq!(default_host(v4, false), "198.18.0.1");
        assert_eq!(default_host(v4, true), "198.18.0.1:80");
        assert_eq!(default_host(v6, true), "[2001:db8::1]:8443");
        let v6_443: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        assert_eq!(default_host(v6_443, true), "[2001:db8::1]");
    }

    #[test]
    fn validation_and_status_ranges() {
        assert!(validate("/ok", Some("example.test"), &[(200, 204)]).is_ok());
        assert!(validate("ok", None, &[]).is_err());
        assert!(validate("/a b", None, &[]).is_err());
        assert!(validate("/a\r\nX: y", None, &[]).is_err());
        assert!(validate("/", Some("a\r\nb"), &[]).is_err());
        assert!(validate("/", None, &[(300, 200)]).is_err());
        assert!(validate("/", None, &[(99, 200)]).is_err());
        assert!(status_expected(204, &[]));
        assert!(!status_expected(301, &[]));
        assert!(status_expected(301, &[(200, 200), (300, 399)]));
        assert!(!status_expected(200, &[(500, 503)]));
    }

    #[test]
    fn substring_search() {
        assert!(contains(b"hello vipgate", b"vip"));
        assert!(!contains(b"hello", b"hello!"));
        assert!(contains(b"", b""));
    }

    proptest::proptest! {
        /// Whatever the backend sends, parsing and decoding never panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse_head(&bytes);
            let mut body = Vec::new();
            let _ = Chunked::new().feed(&bytes, &mut body, 256);
            proptest::prop_assert!(body.len() <= 256);
        }

        /// Any body split into any chunks decodes back to itself.
        #[test]
        fn chunked_round_trip(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), sizes in proptest::collection::vec(1usize..40, 1..20)) {
            let mut wire = Vec::new();
            let mut rest = &body[..];
            let mut sizes = sizes.iter().cycle();
            while !rest.is_empty() {
                let n = (*sizes.next().unwrap()).min(rest.len());
                wire.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            let mut out = Vec::new();
            proptest::prop_assert_eq!(Chunked::new().feed(&wire, &mut out, 1024), Ok(true));
            proptest::prop_assert_eq!(out, body);
        }
    }
}
