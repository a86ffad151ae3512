//! rondo's balancer: a round-robin HTTP load balancer that follows Docker Compose replicas.
//!
//! # Layout
//! - [`config`]: flags and `RONDO_*` environment variables, checked up front, with messages
//!   that say what to fix.
//! - [`discovery`]: resolves every upstream name each interval into endpoints ([`Resolve`] is
//!   the seam: the system resolver, or a [`StaticResolver`] in tests).
//! - [`endpoint`]: an endpoint and the immutable [`EndpointSet`] requests read.
//! - [`selection`]: round robin with one position shared by all workers, swapped whole.
//! - [`stall`]: passes over an endpoint that has stopped answering (a hung container) long
//!   before health checks time out.
//! - [`proxy`]: the forwarding path and the errors the balancer answers itself (4xx, 502, 503,
//!   504), each with a text body naming the reason and the request id.
//! - [`headers`]: hop-by-hop headers, the forwarding headers (`X-Forwarded-*`, `Forwarded`,
//!   `Via`) and whose to trust, and the request id.
//! - [`limits`]: what a client may send (URI, head and body size, body timeout) and the
//!   status past each.
//! - [`screen`]: refuses requests an endpoint could read differently from the balancer
//!   (CONNECT, Host confusion, `_` aliases of framing headers) before they are forwarded.
//! - [`websocket`]: WebSocket upgrades: the handshake with an endpoint, then frames relayed
//!   both ways (`proxy::forward` hands upgrades to it once they passed the screen and the head limits).
//! - [`connection`]: what is kept per client connection (a refusal, the peer's address).
//! - [`server`]: wires discovery, one awc client per worker, and actix-web together.
//! - `fuzzing` (hidden): fuzz entry points over the header handling and config parsers, kept
//!   here so crashes `cargo fuzz` finds (`scripts/fuzz`) replay in `cargo test`.
//!
//! # A request's path
//! ```text
//! client ──► actix-web worker ──► RoundRobin::load().select() ──► awc client (per worker,
//!            (any of N threads)    one atomic fetch_add            pooled keep-alive)
//!                                                                        │
//! client ◄── response streamed back, hop-by-hop headers removed ◄── endpoint (ip:port)
//!
//! discovery (every interval): resolve each upstream ─► EndpointSet ─► RoundRobin::replace
//! ```
//!
//! [`Resolve`]: discovery::Resolve
//! [`StaticResolver`]: discovery::StaticResolver
//! [`EndpointSet`]: endpoint::EndpointSet

pub mod access;
pub mod admin;
pub mod config;
pub mod connection;
pub mod discovery;
pub mod endpoint;
#[doc(hidden)]
pub mod fuzzing;
pub mod headers;
pub mod health;
pub mod healthcheck;
pub mod limits;
pub mod proxy;
pub mod retry;
pub mod screen;
pub mod selection;
pub mod server;
pub mod stall;
pub mod stats;
pub mod websocket;

pub use config::Config;
pub use server::{start, Running};
