//! Limits on what one client may send, and the status it gets past each.
//!
//! | limit                      | checked                          | answer |
//! |----------------------------|----------------------------------|--------|
//! | `RONDO_MAX_URI_LENGTH`     | request target, before forwarding | 414   |
//! | `RONDO_MAX_HEADER_SIZE`    | request line and headers         | 431    |
//! | `RONDO_MAX_BODY_SIZE`      | `Content-Length` up front, then every byte read | 413 |
//! | `RONDO_CLIENT_BODY_TIMEOUT`| the gap between two body reads   | 408    |
//!
//! The head limits are checked before anything is sent to an endpoint. A chunked body has no
//! length to check up front, so [`GuardedBody`] counts it as it streams: when it runs over, the
//! exchange with the endpoint is abandoned (the endpoint sees the connection close before the
//! body ended, so it never acts on a truncated request) and the client gets 413. Time to receive
//! the head (`RONDO_CLIENT_TIMEOUT`, 408) and heads over 128 KiB (431) are enforced by
//! actix-http itself, before the request reaches rondo's code.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::HttpRequest;
use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

/// The client limits in force; zero `max_body_size` means no body limit.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_size: u64,
    pub max_header_size: u64,
    pub max_uri_length: u64,
    pub body_timeout: Duration,
}

/// A limit a request went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Exceeded {
    #[error("the request target is {length} bytes long, more than RONDO_MAX_URI_LENGTH allows ({limit})")]
    UriLength { length: u64, limit: u64 },
    #[error("the request head is {size} bytes, more than RONDO_MAX_HEADER_SIZE allows ({limit})")]
    HeaderSize { size: u64, limit: u64 },
    #[error("the request body is longer than RONDO_MAX_BODY_SIZE allows ({limit} bytes)")]
    BodySize { limit: u64 },
    #[error("the client sent nothing of the request body for {}s (RONDO_CLIENT_BODY_TIMEOUT)", .0.as_secs_f64())]
    BodyTimeout(Duration),
}

impl Exceeded {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Exceeded::UriLength { .. } => StatusCode::URI_TOO_LONG,
            Exceeded::HeaderSize { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Exceeded::BodySize { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Exceeded::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }
}

/// Checks the request head against the limits: the target's length, the head's size as
/// written on the wire, and a declared `Content-Length` against the body limit.
pub fn check_head(req: &HttpRequest, limits: &Limits) -> Result<(), Exceeded> {
    let uri = req.uri();
    let target = uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.scheme_str().map_or(0, |s| s.len() + 3);
    let target = target as u64;
    if target > limits.max_uri_length {
        return Err(Exceeded::UriLength {
            length: target,
            limit: limits.max_uri_length,
        });
    }
    // `METHOD SP target SP HTTP/1.1 CRLF`, then `name: value CRLF` per header, then CRLF.
    let mut size = req.method().as_str().len() as u64 + target + 12 + 2;
    for (name, value) in req.headers() {
        size += (name.as_str().len() + value.len() + 4) as u64;
    }
    if size > limits.max_header_size {
        return Err(Exceeded::HeaderSize {
            size,
            limit: limits.max_header_size,
        });
    }
    let declared = crate::headers::content_length(req.headers());
    if limits.max_body_size > 0 && declared.is_some_and(|n| n > limits.max_body_size) {
        return Err(Exceeded::BodySize {
            limit: limits.max_body_size,
        });
    }
    Ok(())
}

/// Which limit, if any, stopped a [`GuardedBody`]; readable after the body failed inside
/// the awc client, which reports only that the body failed.
#[derive(Debug, Clone, Default)]
pub struct Fault(Rc<Cell<Option<Exceeded>>>);

impl Fault {
    pub fn get(&self) -> Option<Exceeded> {
        self.0.get()
    }
}

/// A request body that fails once it passes the size limit, or when the client sends nothing
/// for the body timeout; the reason is left in its [`Fault`].
pub struct GuardedBody<S> {
    inner: S,
    limit: u64,
    seen: u64,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    fault: Fault,
    done: bool,
}

impl<S> GuardedBody<S> {
    /// Guards `inner` with `limits`; the returned [`Fault`] says which one stopped it.
    pub fn new(inner: S, limits: &Limits) -> (GuardedBody<S>, Fault) {
        let fault = Fault::default();
        let body = GuardedBody {
            inner,
            limit: limits.max_body_size,
            seen: 0,
            timeout: limits.body_timeout,
            timer: Box::pin(tokio::time::sleep(limits.body_timeout)),
            fault: fault.clone(),
            done: false,
        };
        (body, fault)
    }

    fn fail(
        &mut self,
        why: Exceeded,
        err: PayloadError,
    ) -> Poll<Option<Result<Bytes, PayloadError>>> {
        self.fault.0.set(Some(why));
        self.done = true;
        Poll::Ready(Some(Err(err)))
    }
}

impl<S> Stream for GuardedBody<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.seen += chunk.len() as u64;
                if self.limit > 0 && self.seen > self.limit {
                    let limit = self.limit;
                    return self.fail(Exceeded::BodySize { limit }, PayloadError::Overflow);
                }
                let deadline = Instant::now() + self.timeout;
                self.timer.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let timeout = self.timeout;
                    self.fail(
                        Exceeded::BodyTimeout(timeout),
                        PayloadError::Io(std::io::ErrorKind::TimedOut.into()),
                    )
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn limits(max_body_size: u64) -> Limits {
        Limits {
            max_body_size,
            max_header_size: 1024,
            max_uri_length: 64,
            body_timeout: Duration::from_secs(1),
        }
    }

    fn request(uri: &str, headers: &[(&str, &str)]) -> HttpRequest {
        let mut req = actix_web::test::TestRequest::get().uri(uri);
        for (k, v) in headers {
            req = req.insert_header((*k, *v));
        }
        req.to_http_request()
    }

    /// Each head limit gives its own status, and a request inside every limit passes.
    #[test]
    fn head_limits_give_414_431_413() {
        let l = limits(10);
        assert_eq!(check_head(&request("/ok", &[]), &l), Ok(()));
        let long = format!("/{}", "a".repeat(64));
        let err = check_head(&request(&long, &[]), &l).unwrap_err();
        assert_eq!(err.status(), StatusCode::URI_TOO_LONG);
        let big = "v".repeat(1024);
        let err = check_head(&request("/", &[("x-big", &big)]), &l).unwrap_err();
        assert_eq!(err.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let err = check_head(&request("/", &[("content-length", "11")]), &l).unwrap_err();
        assert_eq!(err, Exceeded::BodySize { limit: 10 });
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(check_head(&request("/", &[("content-length", "11")]), &limits(0)).is_ok());
    }

    /// A body that streams past the limit fails at the chunk that passes it, and says why.
    #[actix_web::test]
    async fn body_over_the_limit_fails_with_its_reason() {
        let chunks = futures_util::stream::iter(
            ["12345", "67890", "x"].map(|c| Ok(Bytes::from_static(c.as_bytes()))),
        );
        let (mut body, fault) = GuardedBody::new(chunks, &limits(10));
        assert_eq!(body.next().await.unwrap().unwrap(), "12345");
        assert_eq!(body.next().await.unwrap().unwrap(), "67890");
        assert!(matches!(
            body.next().await,
            Some(Err(PayloadError::Overflow))
        ));
        assert!(body.next().await.is_none());
        assert_eq!(fault.get(), Some(Exceeded::BodySize { limit: 10 }));
    }

    /// A client that stops sending its body is cut off after the body timeout.
    #[actix_web::test]
    async fn stalled_body_times_out() {
        tokio::time::pause();
        let stalled = futures_util::stream::iter([Ok(Bytes::from_static(b"a"))])
            .chain(futures_util::stream::pending());
        let (mut body, fault) = GuardedBody::new(stalled, &limits(0));
        assert!(body.next().await.unwrap().is_ok());
        assert!(matches!(body.next().await, Some(Err(PayloadError::Io(_)))));
        assert_eq!(
            fault.get(),
            Some(Exceeded::BodyTimeout(Duration::from_secs(1)))
        );
    }
}
