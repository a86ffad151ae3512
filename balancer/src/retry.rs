//! Which failed tries may be tried again on another endpoint.
//!
//! A try may be repeated only while nothing of its response has reached the client, and only
//! where repeating cannot do anything twice: idempotent methods (RFC 9110 §9.2.2: GET, HEAD,
//! OPTIONS, PUT, DELETE, TRACE) after a connect failure, a reset before the response or a
//! response timeout; every other method (POST, PATCH, …) only when the request never reached
//! the endpoint (the connection could not be made). A request body can be sent again only when
//! it was held in memory for that purpose.

use actix_web::http::Method;
use awc::error::{ConnectError, SendRequestError};

/// Where an exchange with an endpoint failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be made (refused, unreachable, connect timeout): the endpoint
    /// never saw the request.
    Connect,
    /// The request was (at least partly) sent, but the connection broke before a response
    /// head came back.
    Reset,
    /// The request was sent and no response head came back in time.
    Timeout,
    /// The client's own request body failed to arrive: not the endpoint's fault, never retried.
    ClientBody,
    /// The request could not be sent in the form received (for example the `*` target of
    /// `OPTIONS *`): nothing reached the endpoint, and no other endpoint would fare better.
    Local,
}

impl Failure {
    /// Classifies an awc error. awc reports EOF before the response head as
    /// `Connect(Disconnected)`, so that one counts as a reset, not as a connect failure.
    pub fn of(err: &SendRequestError) -> Failure {
        match err {
            SendRequestError::Connect(ConnectError::Disconnected) => Failure::Reset,
            SendRequestError::Connect(ConnectError::Timeout) => Failure::Connect,
            SendRequestError::Connect(_) => Failure::Connect,
            SendRequestError::Timeout => Failure::Timeout,
            SendRequestError::Body(_) => Failure::ClientBody,
            SendRequestError::Url(_) | SendRequestError::Http(_) => Failure::Local,
            _ => Failure::Reset,
        }
    }

    /// Whether this failure says something about the endpoint's health.
    pub fn counts_against_endpoint(self) -> bool {
        !matches!(self, Failure::ClientBody | Failure::Local)
    }
}

/// Whether `method` may be sent twice with the same effect as once (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Whether a try of `method` that failed with `failure` may be repeated on another endpoint,
/// given whether the request body (if any) can be sent again.
pub fn may_retry(method: &Method, failure: Failure, body_replayable: bool) -> bool {
    if !body_replayable {
        return false;
    }
    match failure {
        Failure::ClientBody | Failure::Local => false,
        Failure::Connect => true,
        Failure::Reset | Failure::Timeout => is_idempotent(method),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Idempotent methods are retried after every endpoint failure.
    #[test]
    fn idempotent_methods_retry_after_any_endpoint_failure() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
            Method::TRACE,
        ] {
            for f in [Failure::Connect, Failure::Reset, Failure::Timeout] {
                assert!(may_retry(&m, f, true), "{m} {f:?}");
            }
        }
    }

    /// POST and PATCH are retried only when the request never reached the endpoint.
    #[test]
    fn post_and_patch_retry_only_after_connect_failures() {
        for m in [
            Method::POST,
            Method::PATCH,
            Method::from_bytes(b"PURGE").unwrap(),
        ] {
            assert!(may_retry(&m, Failure::Connect, true), "{m}");
            assert!(!may_retry(&m, Failure::Reset, true), "{m}");
            assert!(!may_retry(&m, Failure::Timeout, true), "{m}");
        }
    }

    /// A body that was streamed (not held in memory) is never sent twice.
    #[test]
    fn streamed_bodies_are_never_replayed() {
        assert!(!may_retry(&Method::PUT, Failure::Connect, false));
        assert!(!may_retry(&Method::GET, Failure::Timeout, false));
    }

    /// A failure of the client's own upload is neither retried nor held against the endpoint.
    #[test]
    fn client_body_failures_are_not_retried() {
        assert!(!may_retry(&Method::GET, Failure::ClientBody, true));
        assert!(!Failure::ClientBody.counts_against_endpoint());
        assert!(Failure::Timeout.counts_against_endpoint());
    }

    /// A request awc cannot send as received is the request's fault: never retried, never
    /// held against the endpoint.
    #[test]
    fn local_failures_are_not_the_endpoints() {
        let bad = SendRequestError::Url(awc::error::InvalidUrl::MissingScheme);
        assert_eq!(Failure::of(&bad), Failure::Local);
        assert!(!Failure::Local.counts_against_endpoint());
        assert!(!may_retry(&Method::OPTIONS, Failure::Local, true));
    }

    /// awc's EOF-before-response (Connect(Disconnected)) is a reset, not a connect failure.
    #[test]
    fn eof_before_response_is_a_reset() {
        let eof = SendRequestError::Connect(ConnectError::Disconnected);
        assert_eq!(Failure::of(&eof), Failure::Reset);
        let refused = SendRequestError::Connect(ConnectError::Io(
            std::io::ErrorKind::ConnectionRefused.into(),
        ));
        assert_eq!(Failure::of(&refused), Failure::Connect);
        assert_eq!(Failure::of(&SendRequestError::Timeout), Failure::Timeout);
    }
}
