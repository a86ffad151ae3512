//! Request screening: refuses, before anything is forwarded, the requests that actix-http
//! parses but that an endpoint could read differently from the balancer.
//!
//! actix-http already answers a bodiless 400 to what it cannot parse strictly (bad request
//! lines, header names and values, bare CR, NUL, obs-fold, two `Content-Length`s, any
//! `Transfer-Encoding` but exactly `chunked`, `Transfer-Encoding` with `Content-Length` or on
//! HTTP/1.0, a missing or repeated `Host`) and 431 to a head over 128 KiB or 96 lines. What
//! reaches the handler and is still dangerous is decided here, as nginx and HAProxy decide it:
//!
//! | request | answer | basis |
//! |---|---|---|
//! | `CONNECT` | 405 | nginx ≥ 1.21.1 ("client sent CONNECT method"); a reverse proxy opens no tunnels |
//! | absolute-form target whose authority is not `Host` | 400 | RFC 9112 §3.2.2; HAProxy ≥ 2.1 |
//! | userinfo in an absolute-form target | 400 | RFC 9110 §4.2.4 ("treat its presence as an error") |
//! | `Host` that is not `uri-host [":" port]` | 400 | RFC 9112 §3.2 ("invalid field value"); nginx `ngx_http_validate_host` |
//! | a name like `Transfer_Encoding`, `Content_Length`, `X_Forwarded_For` | 400 | nginx drops `_` names by default; CGI-style servers read `_` as `-` |
//!
//! The balancer closes the connection after a refusal (as nginx does after a 400). Requests
//! the client had pipelined behind the refused one, which actix-http may already have parsed,
//! are refused too ([`ClientConnection`] keeps the memory of a refusal): nothing
//! that came after a refused head is forwarded.

use actix_web::dev::RequestHead;
use actix_web::http::header::{self, HeaderName};
use actix_web::http::{Method, StatusCode};
use actix_web::HttpRequest;

use crate::connection::ClientConnection;

/// Why a request is not forwarded, and the status that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    /// What was wrong, in words the client can act on.
    pub reason: String,
}

impl Rejection {
    fn bad(reason: impl Into<String>) -> Rejection {
        Rejection {
            status: StatusCode::BAD_REQUEST,
            reason: reason.into(),
        }
    }
}

impl From<Rejection> for crate::proxy::ProxyError {
    fn from(r: Rejection) -> Self {
        crate::proxy::ProxyError::Rejected {
            status: r.status,
            reason: r.reason,
        }
    }
}

/// Headers an endpoint must not be able to confuse with a client's header spelt with `_`:
/// the framing, and the ones the balancer vouches for.
const ALIASED: [&str; 7] = [
    "content-length",
    "transfer-encoding",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-proto",
    "x-real-ip",
];

/// Checks `req` with [`check`], and refuses every request after a refused one on the same
/// connection. Without a [`ClientConnection`] (tests) it only checks.
pub fn screen(req: &HttpRequest) -> Result<(), Rejection> {
    let connection = ClientConnection::of(req);
    if connection.is_some_and(ClientConnection::refused) {
        return Err(Rejection::bad(
            "an earlier request on this connection was refused: send this one on a new connection",
        ));
    }
    let checked = check(req.head());
    if let (Err(_), Some(connection)) = (&checked, connection) {
        connection.refuse();
    }
    checked
}

/// Checks one request head; `Ok` when it may be forwarded as it is. Requests without `Host`
/// (HTTP/1.0) pass; an empty `Host` passes (RFC 9112 §3.2 allows it).
pub fn check(head: &RequestHead) -> Result<(), Rejection> {
    // actix-http reads the rest of the connection as the body of any request with
    // `Upgrade: websocket` (and no chunked framing), whatever its method or length: forwarded,
    // the next request on the connection would become part of this one's body.
    let framing = head.headers.contains_key(header::CONTENT_LENGTH)
        || head.headers.contains_key(header::TRANSFER_ENCODING);
    if crate::websocket::upgrade_websocket(&head.headers)
        && (framing || !crate::websocket::is_upgrade_head(&head.method, &head.headers))
    {
        return Err(Rejection::bad(
            "Upgrade: websocket on a request that is not a WebSocket handshake (GET with \
             Connection: upgrade and no body): drop the Upgrade header or send a handshake",
        ));
    }
    if head.method == Method::CONNECT {
        return Err(Rejection {
            status: StatusCode::METHOD_NOT_ALLOWED,
            reason: "CONNECT is not supported: rondo is a reverse proxy and opens no tunnels"
                .into(),
        });
    }
    for name in head.headers.keys() {
        check_name(name)?;
    }
    let host = match head.headers.get(header::HOST) {
        None => None,
        Some(value) => {
            // `valid_host` takes visible ASCII only, so `from_utf8`'s word-at-a-time check
            // serves for `to_str`'s byte-by-byte one.
            let host = std::str::from_utf8(value.as_bytes())
                .ok()
                .filter(|h| valid_host(h))
                .ok_or_else(|| {
                    Rejection::bad(format!(
                        "the Host header {value:?} is not a host name or address with an optional port"
                    ))
                })?;
            Some(host)
        }
    };
    if let Some(authority) = head.uri.authority() {
        if authority.as_str().contains('@') {
            return Err(Rejection::bad(format!(
                "the request target '{}' has user information: send the credentials in a header",
                head.uri
            )));
        }
        if host.is_some_and(|h| !h.eq_ignore_ascii_case(authority.as_str())) {
            return Err(Rejection::bad(format!(
                "the request target names '{authority}' but the Host header names '{}': send the same authority in both",
                host.unwrap_or_default()
            )));
        }
    }
    Ok(())
}

/// Refuses a header name that reads as one of [`ALIASED`] once `_` is taken for `-`.
fn check_name(name: &HeaderName) -> Result<(), Rejection> {
    let name = name.as_str();
    if !name.contains('_') {
        return Ok(());
    }
    let dashed = name.replace('_', "-");
    match ALIASED.iter().find(|a| **a == dashed) {
        Some(aliased) => Err(Rejection::bad(format!(
            "the header '{name}' could be read as '{aliased}': spell it with '-'"
        ))),
        None => Ok(()),
    }
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2): an IP literal in brackets, or a
/// registered name or IPv4 address of unreserved, sub-delim and `%` bytes; the port digits.
fn valid_host(host: &str) -> bool {
    let (name, port) = match host.strip_prefix('[') {
        Some(literal) => {
            let Some((inside, after)) = literal.split_once(']') else {
                return false;
            };
            let port = match after {
                "" => "",
                _ => match after.strip_prefix(':') {
                    Some(port) => port,
                    None => return false,
                },
            };
            if inside.is_empty()
                || !inside
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return false;
            }
            ("", port)
        }
        None => host.split_once(':').unwrap_or((host, "")),
    };
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b))
        && port.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;
    use actix_web::http::Uri;

    fn head(method: Method, uri: &str, headers: &[(&'static str, &'static str)]) -> RequestHead {
        let mut head = RequestHead::default();
        head.method = method;
        head.uri = uri.parse::<Uri>().unwrap();
        for (name, value) in headers {
            head.headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        head
    }

    fn status(head: &RequestHead) -> Option<u16> {
        check(head).err().map(|r| r.status.as_u16())
    }

    /// Ordinary requests pass, with or without Host, port or IP literal.
    #[test]
    fn ordinary_requests_pass() {
        for host in [
            "example.com",
            "example.com:8080",
            "10.0.0.1:80",
            "[::1]:8080",
            "[::1]",
            "",
        ] {
            assert_eq!(
                status(&head(Method::GET, "/a?b", &[("host", host)])),
                None,
                "{host}"
            );
        }
        assert_eq!(status(&head(Method::GET, "/", &[])), None);
        assert_eq!(
            status(&head(Method::from_bytes(b"get").unwrap(), "/", &[])),
            None
        );
        assert_eq!(status(&head(Method::GET, "/", &[("x_custom", "1")])), None);
    }

    /// `Upgrade: websocket` passes only on a bodiless GET handshake: on anything else
    /// actix-http would read the rest of the connection as the body.
    #[test]
    fn websocket_upgrade_only_on_a_handshake() {
        let ws = [("connection", "Upgrade"), ("upgrade", "websocket")];
        assert_eq!(status(&head(Method::GET, "/ws", &ws)), None);
        assert_eq!(status(&head(Method::POST, "/ws", &ws)), Some(400));
        let with_body = [ws[0], ws[1], ("content-length", "5")];
        assert_eq!(status(&head(Method::GET, "/ws", &with_body)), Some(400));
        let no_connection = [("upgrade", " WebSocket ")];
        assert_eq!(status(&head(Method::GET, "/", &no_connection)), Some(400));
        let other = [("connection", "Upgrade"), ("upgrade", "h2c, websocket")];
        assert_eq!(status(&head(Method::POST, "/", &other)), None);
    }

    /// CONNECT gets 405, as from nginx.
    #[test]
    fn connect_is_not_allowed() {
        assert_eq!(
            status(&head(
                Method::CONNECT,
                "example.com:443",
                &[("host", "example.com:443")]
            )),
            Some(405)
        );
    }

    /// An absolute-form target must name the Host's authority, without userinfo.
    #[test]
    fn absolute_form_must_match_host() {
        let matching = head(
            Method::GET,
            "http://Example.com:8080/a",
            &[("host", "example.com:8080")],
        );
        assert_eq!(status(&matching), None);
        let other = head(Method::GET, "http://example.com/a", &[("host", "other")]);
        assert_eq!(status(&other), Some(400));
        let port = head(
            Method::GET,
            "http://example.com:81/a",
            &[("host", "example.com")],
        );
        assert_eq!(status(&port), Some(400));
        let userinfo = head(
            Method::GET,
            "http://u@example.com/",
            &[("host", "example.com")],
        );
        assert_eq!(status(&userinfo), Some(400));
        // HTTP/1.0 may send no Host: the target alone names the authority.
        assert_eq!(status(&head(Method::GET, "http://example.com/", &[])), None);
    }

    /// A Host that is not host[:port] is refused.
    #[test]
    fn invalid_hosts_are_refused() {
        for host in [
            "a/b", "u@a", "a:8x", "a b", "a:1:2", "[::1", "[::1]x", "[]", "[zz]", "a\"b",
        ] {
            assert_eq!(
                status(&head(Method::GET, "/", &[("host", host)])),
                Some(400),
                "{host}"
            );
        }
    }

    /// Names that read as framing or forwarding headers with `_` for `-` are refused.
    #[test]
    fn underscore_aliases_are_refused() {
        for name in [
            "transfer_encoding",
            "content_length",
            "x_forwarded_for",
            "x-forwarded_host",
        ] {
            let h = head(Method::POST, "/", &[(name, "chunked")]);
            assert_eq!(status(&h), Some(400), "{name}");
        }
    }
}
