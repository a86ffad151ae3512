//! The hostile-input corpus: raw requests sent over plain sockets through the balancer to an
//! upstream that records the exact bytes it receives (issue 4).
//!
//! Every case names the statuses the client must get and what the upstream may have received.
//! For every case, whatever it is: each request the upstream received frames one way only
//! ([`framed_unambiguously`]), and a plain GET on a new connection still gets 200 afterwards.
//!
//! The outcome of each case follows RFC 9110/9112 and what nginx or HAProxy do, cited in a
//! word next to it. "actix" marks an answer actix-http gives before the balancer's handler
//! runs (bodiless 400, 431 for a head over 128 KiB or over 96 header lines); "screen" marks
//! one of `balancer::screen`.

use balancer::discovery::DnsResolver;
use rondo_tests::raw::{exchange, parse_request, Exchange, Parsed, RawRequest, RecordingUpstream};
use rondo_tests::*;

/// What one case sends and what must come of it.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    /// The status of every response the client gets, in order; then the balancer closes.
    statuses: &'static [u16],
    /// Holds for the requests the upstream received (all of them, in order).
    upstream: fn(&[RawRequest]) -> bool,
}

fn case(
    name: &'static str,
    bytes: impl Into<Vec<u8>>,
    statuses: &'static [u16],
    upstream: fn(&[RawRequest]) -> bool,
) -> Case {
    Case {
        name,
        bytes: bytes.into(),
        statuses,
        upstream,
    }
}

/// The upstream received nothing: the balancer answered itself.
fn nothing(r: &[RawRequest]) -> bool {
    r.is_empty()
}

/// Exactly one request, a GET of `/` with no body.
fn one_get(r: &[RawRequest]) -> bool {
    matches!(r, [g] if g.method == b"GET" && g.target == b"/" && g.body.is_empty())
}

/// Exactly one request, carrying the body `hello`.
fn one_hello(r: &[RawRequest]) -> bool {
    matches!(r, [p] if p.body == b"hello")
}

/// Two requests, GETs of `/` then `/2`.
fn two_gets(r: &[RawRequest]) -> bool {
    matches!(r, [a, b] if a.target == b"/" && b.target == b"/2")
}

/// A plain request head to `path` with the headers `extra` (each ending in CRLF).
fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: lb\r\n{extra}\r\n").into_bytes()
}

/// A POST with the header lines `extra` and then `body` as is.
fn post(extra: &str, body: &str) -> Vec<u8> {
    format!("POST / HTTP/1.1\r\nHost: lb\r\n{extra}\r\n{body}").into_bytes()
}

/// A chunked POST whose header lines are `extra` and whose body is `hello`, chunked as `body`.
fn te(value: &str, body: &str) -> Vec<u8> {
    post(&format!("Transfer-Encoding: {value}\r\n"), body)
}

const HELLO_CHUNKED: &str = "5\r\nhello\r\n0\r\n\r\n";
/// A request a smuggler hides in a body, hoping a later hop takes it for the next request.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: lb\r\n\r\n";

fn corpus() -> Vec<Case> {
    let long_header = format!("X-Big: {}\r\n", "a".repeat(200 * 1024));
    let many_headers: String = (0..100).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    vec![
        // --- control: what a well-formed request gets ---------------------------------------
        case("plain GET", get("/", ""), &[200], one_get),
        case(
            "POST with Content-Length",
            post("Content-Length: 5\r\n", "hello"),
            &[200],
            one_hello,
        ),
        case(
            "chunked POST",
            te("chunked", HELLO_CHUNKED),
            &[200],
            one_hello,
        ),
        // --- request line -----------------------------------------------------------------
        // RFC 9112 §3: one SP between three parts; actix (httparse) refuses anything else with
        // 400, as nginx does. nginx answers 505 to HTTP/2+ and reads HTTP/1.2 as 1.1; actix
        // answers 400 to every version but 1.0 and 1.1.
        case(
            "two spaces in the request line",
            "GET  / HTTP/1.1\r\nHost: lb\r\n\r\n",
            &[400],
            nothing,
        ),
        case(
            "tab as request-line separator",
            "GET\t/ HTTP/1.1\r\nHost: lb\r\n\r\n",
            &[400],
            nothing,
        ),
        case(
            "extra word after the version",
            "GET / HTTP/1.1 x\r\nHost: lb\r\n\r\n",
            &[400],
            nothing,
        ),
        case("HTTP/0.9 request", "GET /\r\n\r\n", &[400], nothing),
        case(
            "HTTP/1.2",
            "GET / HTTP/1.2\r\nHost: lb\r\n\r\n",
            &[400],
            nothing,
        ),
        case(
            "HTTP/2 preface over HTTP/1",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            &[400],
            nothing,
        ),
        // Methods are case-sensitive tokens of any length (RFC 9110 §9.1): forwarded as they
        // came, as HAProxy does (nginx refuses lowercase with 400).
        case(
            "lowercase method",
            "get / HTTP/1.1\r\nHost: lb\r\n\r\n",
            &[200],
            |r| matches!(r, [g] if g.method == b"get"),
        ),
        case(
            "very long method",
            format!("{} / HTTP/1.1\r\nHost: lb\r\n\r\n", "A".repeat(4096)),
            &[200],
            |r| matches!(r, [g] if g.method.len() == 4096),
        ),
        case(
            "method with a non-token byte",
            "G(T / HTTP/1.1\r\nHost: lb\r\n\r\n",
            &[400],
            nothing,
        ),
        case(
            "NUL in the target",
            "GET /\0 HTTP/1.1\r\nHost: lb\r\n\r\n",
            &[400],
            nothing,
        ),
        case(
            "non-ASCII byte in the target",
            b"GET /\xff HTTP/1.1\r\nHost: lb\r\n\r\n".to_vec(),
            &[400],
            nothing,
        ),
        // A fragment is never sent (RFC 9110 §4.2.5); http's Uri drops it.
        case(
            "fragment in the target",
            "GET /a#frag HTTP/1.1\r\nHost: lb\r\n\r\n",
            &[200],
            |r| matches!(r, [g] if !g.target.contains(&b'#')),
        ),
        // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request line.
        case(
            "empty lines before the request line",
            "\r\n\r\nGET / HTTP/1.1\r\nHost: lb\r\n\r\n",
            &[200],
            one_get,
        ),
        // Absolute form: screen, RFC 9112 §3.2.2, HAProxy ≥ 2.1 (400 when the authority is not
        // Host). Asterisk and authority form name no path: the balancer's 400 (HAProxy #2565).
        // CONNECT: screen, 405 as from nginx ≥ 1.21.1.
        case(
            "absolute-form target matching Host",
            "GET http://lb/a HTTP/1.1\r\nHost: lb\r\n\r\n",
            &[200],
            |r| matches!(r, [g] if g.target == b"/a"),
        ),
        case(
            "absolute-form target with another Host",
            "GET http://lb/a HTTP/1.1\r\nHost: other\r\n\r\n",
            &[400],
            nothing,
        ),
        case(
            "asterisk-form OPTIONS",
            "OPTIONS * HTTP/1.1\r\nHost: lb\r\n\r\n",
            &[400],
            nothing,
        ),
        case(
            "authority-form GET",
            "GET lb:80 HTTP/1.1\r\nHost: lb:80\r\n\r\n",
            &[400],
            nothing,
        ),
        case(
            "CONNECT",
            "CONNECT lb:443 HTTP/1.1\r\nHost: lb:443\r\n\r\n",
            &[405],
            nothing,
        ),
        // --- header lines -----------------------------------------------------------------
        // RFC 9112 §5.1 (no space before the colon: 400), §5.2 (obs-fold: 400 in a request),
        // RFC 9110 §5.5 (no NUL, bare CR or other controls in values): actix refuses all with
        // 400, as nginx does. Bare LF as line end is tolerated (RFC 9112 §2.2 MAY, nginx does)
        // and never forwarded: the head is written anew with CRLF.
        case(
            "space before the colon",
            get("/", "Host : lb\r\n"),
            &[400],
            nothing,
        ),
        case(
            "obs-fold (a continuation line)",
            get("/", "X-A: 1\r\n 2\r\n"),
            &[400],
            nothing,
        ),
        case(
            "header name with a space",
            get("/", "X A: 1\r\n"),
            &[400],
            nothing,
        ),
        case(
            "header name with '('",
            get("/", "X(A): 1\r\n"),
            &[400],
            nothing,
        ),
        case(
            "header line without a colon",
            get("/", "X-A\r\n"),
            &[400],
            nothing,
        ),
        case("empty header name", get("/", ": x\r\n"), &[400], nothing),
        case(
            "obs-text in a header value",
            b"GET / HTTP/1.1\r\nHost: lb\r\nX-A: caf\xe9\r\n\r\n".to_vec(),
            &[200],
            |r| matches!(r, [g] if g.header_values("x-a") == [b"caf\xe9"]),
        ),
        case(
            "NUL in a header value",
            get("/", "X-A: 1\x002\r\n"),
            &[400],
            nothing,
        ),
        case(
            "bare CR in a header value",
            get("/", "X-A: 1\r2\r\n"),
            &[400],
            nothing,
        ),
        case(
            "vertical tab in a header value",
            get("/", "X-A: 1\x0b2\r\n"),
            &[400],
            nothing,
        ),
        case(
            "bare LF line endings",
            "GET / HTTP/1.1\nHost: lb\nX-A: 1\n\n",
            &[200],
            one_get,
        ),
        case(
            "bare LF inside the head",
            "GET / HTTP/1.1\r\nHost: lb\nX-A: 1\r\n\r\n",
            &[200],
            one_get,
        ),
        // RFC 9112 §3.2: 400 for HTTP/1.1 without Host, for two Host lines (actix) and for an
        // invalid Host (screen; nginx's ngx_http_validate_host).
        case(
            "HTTP/1.1 without Host",
            "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n",
            &[400],
            nothing,
        ),
        case(
            "HTTP/1.0 without Host",
            "GET / HTTP/1.0\r\n\r\n",
            &[200],
            one_get,
        ),
        case(
            "two Host headers",
            get("/", "Host: other\r\n"),
            &[400],
            nothing,
        ),
        case(
            "two equal Host headers",
            get("/", "Host: lb\r\n"),
            &[400],
            nothing,
        ),
        case(
            "Host with a slash",
            "GET / HTTP/1.1\r\nHost: lb/../admin\r\n\r\n",
            &[400],
            nothing,
        ),
        case(
            "Host with userinfo",
            "GET / HTTP/1.1\r\nHost: user@lb\r\n\r\n",
            &[400],
            nothing,
        ),
        case(
            "Host with a bad port",
            "GET / HTTP/1.1\r\nHost: lb:8x\r\n\r\n",
            &[400],
            nothing,
        ),
        // actix: 431 for a head over 128 KiB or over 96 header lines, then it closes.
        case(
            "header over 128 KiB",
            get("/", &long_header),
            &[431],
            nothing,
        ),
        case("100 header lines", get("/", &many_headers), &[431], nothing),
        // Upgrade is hop-by-hop (RFC 9110 §7.8): stripped, so no tunnel opens (h2c smuggling);
        // bytes after an upgrade request are its body until the close, never a request.
        case(
            "Upgrade: websocket then bytes",
            get(
                "/",
                "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            )
            .into_iter()
            .chain(SMUGGLED.bytes())
            .collect::<Vec<u8>>(),
            // A WebSocket upgrade gets a handshake of the balancer's own making (its own key);
            // the endpoint here refuses it with a 200, which is relayed, and the bytes after
            // the client's head never reach the endpoint.
            &[200],
            |r| {
                matches!(r, [g] if g.body.is_empty()
                    && g.header_values("sec-websocket-key") != [b"dGhlIHNhbXBsZSBub25jZQ==".to_vec()])
            },
        ),
        // actix-http reads everything after a head with `Upgrade: websocket` as its body,
        // whatever the method and length: the next request would be swallowed into this one.
        case(
            "POST with Upgrade: websocket and a length, then a request",
            [
                post("Upgrade: websocket\r\nContent-Length: 5\r\n", "hello").as_slice(),
                SMUGGLED.as_bytes(),
            ]
            .concat(),
            &[400],
            |r| r.is_empty(),
        ),
        case(
            "GET with Upgrade: websocket but no Connection: upgrade",
            get("/", "Upgrade: websocket\r\n"),
            &[400],
            |r| r.is_empty(),
        ),
        case(
            "h2c upgrade",
            get(
                "/",
                "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
                 HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
            ),
            &[200],
            |r| {
                matches!(r, [g] if g.header_values("upgrade").is_empty()
                    && g.header_values("http2-settings").is_empty())
            },
        ),
        // --- Content-Length ---------------------------------------------------------------
        // RFC 9112 §6.3: a Content-Length that is not one run of digits is unrecoverable: 400.
        // actix refuses even two equal ones, as nginx does ("duplicate header line").
        case(
            "two different Content-Lengths",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
            &[400],
            nothing,
        ),
        case(
            "two equal Content-Lengths",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            &[400],
            nothing,
        ),
        case(
            "Content-Length list",
            post("Content-Length: 5, 5\r\n", "hello"),
            &[400],
            nothing,
        ),
        case(
            "Content-Length +5",
            post("Content-Length: +5\r\n", "hello"),
            &[400],
            nothing,
        ),
        case(
            "Content-Length -5",
            post("Content-Length: -5\r\n", "hello"),
            &[400],
            nothing,
        ),
        case(
            "Content-Length in hex",
            post("Content-Length: 0x5\r\n", "hello"),
            &[400],
            nothing,
        ),
        case(
            "Content-Length beyond u64",
            post("Content-Length: 99999999999999999999\r\n", "hello"),
            &[400],
            nothing,
        ),
        case(
            "Content-Length with leading zeros",
            post("Content-Length: 005\r\n", "hello"),
            &[200],
            one_hello,
        ),
        // Screen: CGI-style servers read `_` as `-`; nginx drops such names by default.
        case(
            "Content_Length (underscore)",
            post("Content_Length: 5\r\n", "hello"),
            &[400],
            nothing,
        ),
        case(
            "GET with a body",
            "GET / HTTP/1.1\r\nHost: lb\r\nContent-Length: 5\r\n\r\nhello",
            &[200],
            one_hello,
        ),
        case(
            "Content-Length: 0 then a second request",
            format!(
                "{}GET /2 HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n",
                String::from_utf8(get("/", "Content-Length: 0\r\n")).unwrap()
            ),
            &[200, 200],
            two_gets,
        ),
        case(
            "body shorter than Content-Length",
            post("Content-Length: 10\r\n", "hello"),
            &[400],
            nothing,
        ),
        case(
            "body that looks like a request",
            post(&format!("Content-Length: {}\r\n", SMUGGLED.len()), SMUGGLED),
            &[200],
            |r| matches!(r, [p] if p.body == SMUGGLED.as_bytes()),
        ),
        // After a refusal the connection closes, so the body is never read as a request.
        case(
            "rejected request whose body looks like a request",
            format!(
                "CONNECT lb:443 HTTP/1.1\r\nHost: lb:443\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
            &[405],
            nothing,
        ),
        // actix: 400, as RFC 1945 §7.2.2 requires a length for an HTTP/1.0 POST (nginx: 411).
        case(
            "HTTP/1.0 POST without Content-Length",
            "POST / HTTP/1.0\r\n\r\nhello",
            &[400],
            nothing,
        ),
        // --- Transfer-Encoding ------------------------------------------------------------
        // RFC 9112 §6.1/§6.3: with both CL and TE a proxy must not forward the CL; actix
        // refuses the request outright (400), as HAProxy does for HTTP/1.0 and nginx for any
        // TE it does not know (nginx: 501; actix: 400 for everything but exactly `chunked`,
        // compared without case and surrounding blanks, and for TE on HTTP/1.0).
        case(
            "CL.TE: Content-Length then chunked",
            post(
                "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
                &format!("0\r\n\r\n{SMUGGLED}"),
            ),
            &[400],
            nothing,
        ),
        case(
            "TE.CL: chunked then Content-Length",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                &format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len()),
            ),
            &[400],
            nothing,
        ),
        case(
            "chunked with Content-Length: 0",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
                HELLO_CHUNKED,
            ),
            &[400],
            nothing,
        ),
        case(
            "Transfer-Encoding twice",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                HELLO_CHUNKED,
            ),
            &[400],
            nothing,
        ),
        case(
            "TE.TE: chunked then identity",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
                HELLO_CHUNKED,
            ),
            &[400],
            nothing,
        ),
        case(
            "chunked, identity",
            te("chunked, identity", HELLO_CHUNKED),
            &[400],
            nothing,
        ),
        case(
            "identity, chunked",
            te("identity, chunked", HELLO_CHUNKED),
            &[400],
            nothing,
        ),
        case(
            "gzip, chunked",
            te("gzip, chunked", HELLO_CHUNKED),
            &[400],
            nothing,
        ),
        case("identity alone", te("identity", "hello"), &[400], nothing),
        case("xchunked", te("xchunked", HELLO_CHUNKED), &[400], nothing),
        case(
            "chunked with a quote",
            te("\"chunked\"", HELLO_CHUNKED),
            &[400],
            nothing,
        ),
        case(
            "vertical tab before chunked",
            te("\x0bchunked", HELLO_CHUNKED),
            &[400],
            nothing,
        ),
        case(
            "leading space: '  chunked'",
            te("  chunked", HELLO_CHUNKED),
            &[200],
            one_hello,
        ),
        case(
            "leading tab: '\\tchunked'",
            te("\tchunked", HELLO_CHUNKED),
            &[200],
            one_hello,
        ),
        case(
            "trailing space: 'chunked '",
            te("chunked ", HELLO_CHUNKED),
            &[200],
            one_hello,
        ),
        case(
            "folded Transfer-Encoding",
            post("Transfer-Encoding:\r\n chunked\r\n", HELLO_CHUNKED),
            &[400],
            nothing,
        ),
        case(
            "CHUNKED in capitals",
            te("CHUNKED", HELLO_CHUNKED),
            &[200],
            one_hello,
        ),
        // For the balancer these have no body: the bytes after the head are the next request,
        // which actix-http may have parsed already. It is refused too (or fails to parse):
        // nothing behind a refused request is forwarded (screen's per-connection memory).
        case(
            "Transfer_Encoding (underscore)",
            post("Transfer_Encoding: chunked\r\n", HELLO_CHUNKED),
            &[400, 400],
            nothing,
        ),
        case(
            "Transfer_Encoding with a request in its body",
            post(
                "Transfer_Encoding: chunked\r\n",
                &format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len()),
            ),
            &[400, 400],
            nothing,
        ),
        case(
            "Transfer_Encoding then a pipelined request",
            post("Transfer_Encoding: chunked\r\n", SMUGGLED),
            &[400, 400],
            nothing,
        ),
        case(
            "X_Forwarded_For (underscore)",
            get("/", "X_Forwarded_For: 10.0.0.1\r\n"),
            &[400],
            nothing,
        ),
        case(
            "Transfer-Encoding on HTTP/1.0",
            format!("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n{HELLO_CHUNKED}"),
            &[400],
            nothing,
        ),
        case(
            "HTTP/1.0 with Content-Length and chunked",
            "POST / HTTP/1.0\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello",
            &[400],
            nothing,
        ),
        // --- chunked bodies ---------------------------------------------------------------
        // RFC 9112 §7.1: sizes are hex digits; actix fails the body, the balancer answers 400
        // before forwarding (bodies up to RONDO_RETRY_BODY_LIMIT are read whole first).
        // Extensions and trailers are dropped: awc writes the body anew.
        case(
            "chunk size not hex",
            te("chunked", "zz\r\nhello\r\n0\r\n\r\n"),
            &[400],
            nothing,
        ),
        case(
            "chunk size overflowing u64",
            te("chunked", "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
            &[400],
            nothing,
        ),
        case(
            "negative chunk size",
            te("chunked", "-5\r\nhello\r\n0\r\n\r\n"),
            &[400],
            nothing,
        ),
        case(
            "chunk size 0x5",
            te("chunked", "0x5\r\nhello\r\n0\r\n\r\n"),
            &[400],
            nothing,
        ),
        case(
            "chunk size ended by bare LF",
            te("chunked", "5\nhello\r\n0\r\n\r\n"),
            &[400],
            nothing,
        ),
        case(
            "chunk data longer than its size",
            te("chunked", "3\r\nhello\r\n0\r\n\r\n"),
            &[400],
            nothing,
        ),
        case(
            "chunk size with leading zeros",
            te("chunked", "0005\r\nhello\r\n0\r\n\r\n"),
            &[200],
            one_hello,
        ),
        case(
            "blank after the chunk size",
            te("chunked", "5 \r\nhello\r\n0\r\n\r\n"),
            &[200],
            one_hello,
        ),
        case(
            "no last chunk",
            te("chunked", "5\r\nhello\r\n"),
            &[400],
            nothing,
        ),
        // Bodies over RONDO_RETRY_BODY_LIMIT (64 KiB) are streamed: the endpoint gets the head
        // and the first chunks, then the connection closes; it never sees a whole request.
        case(
            "bad chunk after 80 KiB",
            te(
                "chunked",
                &format!("{:x}\r\n{}\r\nzz\r\n", 80 * 1024, "a".repeat(80 * 1024)),
            ),
            &[400],
            nothing,
        ),
        case(
            "chunk extension",
            te("chunked", "5;name=value\r\nhello\r\n0\r\n\r\n"),
            &[200],
            one_hello,
        ),
        case(
            "trailer fields after the last chunk",
            te("chunked", "5\r\nhello\r\n0\r\nContent-Length: 99\r\n\r\n"),
            &[200],
            one_hello,
        ),
        // --- pipelining -------------------------------------------------------------------
        // RFC 9112 §9.3.2: answered in order; each forwarded as its own framed request.
        case(
            "two pipelined GETs",
            [get("/", ""), get("/2", "Connection: close\r\n")].concat(),
            &[200, 200],
            two_gets,
        ),
        case(
            "pipelined GET then a malformed request",
            [
                get("/", ""),
                b"GET  /2 HTTP/1.1\r\nHost: lb\r\n\r\n".to_vec(),
            ]
            .concat(),
            &[200, 400],
            one_get,
        ),
        case(
            "pipelined chunked POST then GET",
            [te("chunked", HELLO_CHUNKED), get("/2", "")].concat(),
            &[200, 200],
            |r| matches!(r, [p, g] if p.body == b"hello" && g.target == b"/2"),
        ),
        case(
            "pipelined POST then GET",
            [post("Content-Length: 5\r\n", "hello"), get("/2", "")].concat(),
            &[200, 200],
            |r| matches!(r, [p, g] if p.body == b"hello" && g.target == b"/2"),
        ),
    ]
}

/// Splits what one upstream connection received into requests with the strict parser; an
/// error names the first request that does not frame one way only: two `Content-Length`s,
/// `Content-Length` with `Transfer-Encoding`, a `Transfer-Encoding` other than exactly
/// `chunked`, a bare CR or LF or NUL in the head, a body that does not match its framing,
/// or a request cut short on a connection the balancer did not then close (`closed` is asked
/// only for a connection that ends in the middle of a request).
fn framed_unambiguously(
    connection: &[u8],
    closed: impl FnOnce() -> bool,
) -> Result<Vec<RawRequest>, String> {
    let mut requests = Vec::new();
    let mut at = 0;
    while at < connection.len() {
        match parse_request(&connection[at..]) {
            Parsed::Complete(request, used) => {
                requests.push(request);
                at += used;
            }
            // A body that failed half-way: the endpoint sees the abort as a close.
            Parsed::Partial if closed() => break,
            Parsed::Partial => {
                return Err(format!(
                    "request cut short at byte {at}, connection kept open"
                ))
            }
            Parsed::Invalid(why) => return Err(format!("request at byte {at}: {why}")),
        }
    }
    Ok(requests)
}

/// Every request the upstream received since it was last cleared, checked.
fn received(upstream: &RecordingUpstream) -> Result<Vec<RawRequest>, String> {
    let mut all = Vec::new();
    for (i, connection) in upstream.received().iter().enumerate() {
        let requests = framed_unambiguously(&connection.bytes, || upstream.wait_closed(i));
        all.extend(requests.map_err(|e| {
            format!(
                "connection {i}: {e}: {:?}",
                String::from_utf8_lossy(&connection.bytes)
            )
        })?);
    }
    Ok(all)
}

/// Sends `bytes` from a blocking thread, so the balancer's runtime stays free.
async fn send(addr: std::net::SocketAddr, bytes: Vec<u8>) -> Exchange {
    tokio::task::spawn_blocking(move || exchange(addr, &bytes))
        .await
        .expect("the raw client thread")
}

/// Every corpus case gets its statuses (each refusal with its reason and request id, each 400
/// and 431 with `Connection: close`), nothing ambiguous reaches the upstream, and a new client
/// is served after each.
#[actix_web::test]
async fn hostile_requests_are_refused_or_normalized_and_never_smuggled() {
    let upstream = RecordingUpstream::start();
    let mut config = config_for(&[upstream.addr.to_string()]);
    config.health_checks = false;
    config.tries = 1;
    let lb = start_balancer(&config, DnsResolver).await;
    let addr = lb.addrs()[0];

    let mut failures = Vec::new();
    for case in corpus() {
        upstream.clear();
        let got = send(addr, case.bytes.clone()).await;
        let mut wrong = Vec::new();
        if got.statuses() != case.statuses {
            wrong.push(format!("statuses {:?}", got.statuses()));
        }
        // Every refusal, the parser's or the balancer's, says why and gives the request id.
        for refusal in got.responses.iter().filter(|r| r.status >= 400) {
            let body = String::from_utf8_lossy(&refusal.body);
            if !(body.starts_with("rondo: ") && body.contains("request id: ")) {
                wrong.push(format!(
                    "a {} without reason and id: {body:?}",
                    refusal.status
                ));
            }
        }
        // The connection closes after each of these, and the response says so (as nginx's
        // do), so a client does not send another request into the close.
        for refusal in got
            .responses
            .iter()
            .filter(|r| [400, 431].contains(&r.status))
        {
            let connection = refusal
                .headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("connection"));
            if !connection.is_some_and(|(_, value)| value.eq_ignore_ascii_case("close")) {
                wrong.push(format!(
                    "a {} with connection {connection:?}, not close",
                    refusal.status
                ));
            }
        }
        if !got.closed || !got.rest.is_empty() {
            wrong.push(format!(
                "closed {}, {} stray bytes after the responses",
                got.closed,
                got.rest.len()
            ));
        }
        match received(&upstream) {
            Ok(requests) if (case.upstream)(&requests) => {}
            Ok(requests) => wrong.push(format!("upstream received {requests:?}")),
            Err(e) => wrong.push(format!("ambiguous at the upstream: {e}")),
        }
        upstream.clear();
        let after = send(addr, get("/after", "Connection: close\r\n")).await;
        if after.statuses() != [200] {
            wrong.push(format!("then a plain GET got {:?}", after.statuses()));
        }
        if let Err(e) = received(&upstream) {
            wrong.push(format!("then the plain GET arrived ambiguous: {e}"));
        }
        if !wrong.is_empty() {
            failures.push(format!("{}: {}", case.name, wrong.join("; ")));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
