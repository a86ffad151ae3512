//! Wiring: the discovery loop, one awc client per worker, and the actix-web server.
//!
//! [`start`] takes a bound listener so tests can bind `127.0.0.1:0` and run the real server;
//! the binary binds the configured address and calls the same function.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::http::KeepAlive;
use actix_web::{web, App, HttpServer};
use awc::{Client, Connector};
use log::info;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::admin::{self, Admin};
use crate::config::Config;
use crate::connection;
use crate::discovery::{Discovery, Resolve};
use crate::health;
use crate::proxy::{self, Clients, Forwarding};
use crate::selection::RoundRobin;
use crate::stats::Totals;
use crate::websocket;

/// A balancer that is serving: its server, its discovery loop and its endpoint selector.
pub struct Running {
    server: JoinHandle<io::Result<()>>,
    handle: ServerHandle,
    addrs: Vec<SocketAddr>,
    selector: Arc<RoundRobin>,
    stop_discovery: oneshot::Sender<()>,
    discovery: JoinHandle<()>,
    stop_probes: Option<oneshot::Sender<()>>,
    /// The admin server and its addresses, when RONDO_ADMIN_LISTEN is not `off`.
    admin: Option<(ServerHandle, JoinHandle<io::Result<()>>)>,
    admin_addrs: Vec<SocketAddr>,
    totals: Arc<Totals>,
}

impl Running {
    /// The addresses the admin listener accepts on (empty when it is off).
    pub fn admin_addrs(&self) -> &[SocketAddr] {
        &self.admin_addrs
    }

    /// The balancer's own counters.
    pub fn totals(&self) -> &Arc<Totals> {
        &self.totals
    }

    /// The addresses the balancer accepts clients on.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The selector discovery publishes into (to look at the current endpoint set).
    pub fn selector(&self) -> &Arc<RoundRobin> {
        &self.selector
    }

    /// A handle that stops the server: gracefully (in-flight requests finish within the
    /// shutdown timeout) or at once.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Serves until the server stops (SIGTERM, SIGINT, or [`ServerHandle::stop`]), then stops
    /// discovery and waits for it.
    pub async fn wait(self) -> io::Result<()> {
        let result = self
            .server
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)));
        if let Some((handle, admin)) = self.admin {
            handle.stop(true).await;
            let _ = admin.await;
        }
        let _ = self.stop_discovery.send(());
        if let Some(stop) = self.stop_probes {
            let _ = stop.send(());
        }
        let _ = self.discovery.await;
        info!("stopped");
        result
    }
}

/// How many connections the kernel may hold complete for a listener before it is asked for
/// them (capped by `net.core.somaxconn`). The standard library listens with 128: a burst of
/// new clients beyond that had its SYNs dropped, and each such client waited a whole SYN
/// retransmission (1 s) to connect. nginx listens with 511, actix-web with 1,024.
pub const LISTEN_BACKLOG: i32 = 1024;

/// A listener on `addr` (with `SO_REUSEADDR`, as the standard library's, and `TCP_NODELAY`)
/// and a backlog of [`LISTEN_BACKLOG`]: the client listener (`RONDO_LISTEN`) and the admin
/// listener.
pub fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    // Before `listen`, so that every connection the kernel completes has it (see
    // `no_delay_for_clients`), also while rondo is still starting and accepts none.
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Sets `TCP_NODELAY` on the client listener. Bodies are relayed in the pieces the endpoint
/// sends; without it a short last piece waits for the client's delayed ACK (about 40 ms per
/// 64 KiB response), as nginx's `tcp_nodelay on` default avoids. Linux gives the option of a
/// listening socket to every connection the kernel completes from it (before it is accepted),
/// which saves a `setsockopt` per connection; elsewhere actix-web sets it on each (see
/// [`start`]).
fn no_delay_for_clients(listener: &TcpListener) -> io::Result<()> {
    socket2::SockRef::from(listener).set_tcp_nodelay(true)
}

/// Starts the balancer on `listener`, resolving upstreams through `resolver`; it serves in the
/// background until stopped.
///
/// The first discovery round runs before the first client is accepted, bounded by
/// [`RESOLVE_TIMEOUT`](crate::discovery::RESOLVE_TIMEOUT); names that do not resolve yet do not
/// stop the start: requests get 503 until they do. Must run inside an actix runtime
/// (`actix_web::rt::System`, or `#[actix_web::test]`).
pub async fn start<R: Resolve>(
    config: &Config,
    listener: TcpListener,
    resolver: R,
) -> io::Result<Running> {
    // First, for a listener bound elsewhere (as in tests): connections completed from now on
    // get TCP_NODELAY, also those that wait for the first discovery round.
    no_delay_for_clients(&listener)?;
    let selector = Arc::new(RoundRobin::new(config.passive_policy()));
    let mut discovery = Discovery::new(config.upstreams.0.clone(), resolver, selector.clone())
        .probed(config.health_checks);
    discovery.tick().await;
    let (stop_discovery, stopped) = oneshot::channel();
    let discovery = tokio::spawn(discovery.run(config.discovery_interval, stopped));

    let stop_probes = if config.health_checks {
        let (stop, stopped) = oneshot::channel();
        actix_web::rt::spawn(health::run_probes(
            selector.clone(),
            config.active_policy(),
            stopped,
        ));
        await_first_probes(&selector, config.health_timeout).await;
        Some(stop)
    } else {
        None
    };

    let totals = Arc::new(Totals::default());
    let (admin, admin_addrs) = match config.admin_listen {
        Some(addr) => {
            let listener = bind_listener(addr).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot listen on {addr} (RONDO_ADMIN_LISTEN): {e}; choose a free address \
                         and port, or set RONDO_ADMIN_LISTEN=off"
                    ),
                )
            })?;
            let (server, addrs) = admin::start(
                Admin {
                    selector: selector.clone(),
                    totals: totals.clone(),
                    upstreams: config
                        .upstreams
                        .0
                        .iter()
                        .map(|u| Arc::from(u.to_string()))
                        .collect(),
                    health_checks: config.health_checks,
                    token: config.admin_token().map(str::to_string),
                },
                listener,
            )?;
            admin::announce(config, &addrs);
            let handle = server.handle();
            (Some((handle, actix_web::rt::spawn(server))), addrs)
        }
        None => (None, Vec::new()),
    };

    let forwarding = web::Data::new(Forwarding::new(config, selector.clone(), totals.clone()));
    let connections = totals.clone();
    let client_config = config.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(forwarding.clone())
            .app_data(web::Data::new(upstream_clients(&client_config)))
            .default_service(web::to(proxy::forward))
    })
    .on_connect(move |conn, data| connection::on_connect(&connections, conn, data))
    .workers(config.worker_count())
    .max_connections(config.connections_per_worker())
    .client_request_timeout(config.client_timeout)
    .keep_alive(match config.keepalive_timeout {
        idle if idle.is_zero() => KeepAlive::Disabled,
        idle => KeepAlive::Timeout(idle),
    })
    // actix counts whole seconds: round up, so 500ms still lets requests finish.
    .shutdown_timeout((config.shutdown_timeout.as_secs_f64().ceil() as u64).max(1));
    let server = if cfg!(target_os = "linux") {
        server
    } else {
        server.tcp_nodelay(true)
    };
    let server = server.listen(listener)?;
    let addrs = server.addrs();
    let server = server.run();
    let handle = server.handle();
    let server = actix_web::rt::spawn(server);
    info!(
        "listening on {addrs:?} with {} worker(s), balancing {}",
        config.worker_count(),
        config
            .upstreams
            .0
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Running {
        server,
        handle,
        addrs,
        selector,
        stop_discovery,
        discovery,
        stop_probes,
        admin,
        admin_addrs,
        totals,
    })
}

/// Waits until every endpoint found at start has had its first probe answered, for at most
/// the probe timeout and a little more, so the first requests already know who is healthy.
async fn await_first_probes(selector: &RoundRobin, probe_timeout: std::time::Duration) {
    let deadline =
        tokio::time::Instant::now() + probe_timeout + std::time::Duration::from_millis(200);
    while tokio::time::Instant::now() < deadline {
        if selector
            .load()
            .set()
            .endpoints()
            .iter()
            .all(|e| e.is_healthy())
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The awc clients of one worker: keep-alive pool to endpoints with no limit on connections
/// checked out (awc's default of 100 queues requests), no redirects followed, no
/// decompression (awc is built without it), no default `User-Agent` added. The client for
/// WebSocket handshakes keeps an endpoint's refusal of an upgrade whole
/// ([`websocket::KeepRefusedUpgrades`]).
fn upstream_clients(config: &Config) -> Clients {
    let connector = || {
        Connector::new()
            .limit(0)
            .timeout(config.connect_timeout)
            .conn_keep_alive(config.upstream_idle_timeout)
    };
    let builder = || {
        Client::builder()
            .timeout(config.response_timeout)
            .disable_redirects()
            .no_default_headers()
    };
    Clients {
        plain: builder().connector(connector()).finish(),
        upgrades: builder()
            .connector(connector())
            .wrap(websocket::KeepRefusedUpgrades)
            .finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;
    use std::time::Duration;

    /// A connection accepted from the client listener has `TCP_NODELAY` without setting it.
    #[test]
    #[cfg(target_os = "linux")]
    fn accepted_clients_inherit_no_delay_from_the_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (plain, _) = listener.accept().unwrap();
        assert!(!plain.nodelay().unwrap(), "on without being set");

        no_delay_for_clients(&listener).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(accepted.nodelay().unwrap());

        let bound = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let _client = TcpStream::connect(bound.local_addr().unwrap()).unwrap();
        let (accepted, _) = bound.accept().unwrap();
        assert!(accepted.nodelay().unwrap(), "not from bind_listener's");
    }

    /// Clients beyond the standard library's 128 complete their handshake while the listener has
    /// not yet accepted any (a burst): none waits for a SYN to be sent again.
    #[test]
    fn a_burst_of_clients_connects_before_any_is_accepted() {
        let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(LISTEN_BACKLOG as usize);
        let burst = 300.min(somaxconn);
        assert!(
            burst > 129,
            "net.core.somaxconn is {somaxconn}: too small to test with"
        );
        let listener = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let clients: Vec<TcpStream> = (0..burst)
            .map(|i| {
                TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                    .unwrap_or_else(|e| panic!("client {i} of {burst} did not connect: {e}"))
            })
            .collect();
        assert_eq!(clients.len(), burst);
        // And they are there to be accepted, in order.
        let (first, _) = listener.accept().unwrap();
        assert_eq!(first.peer_addr().unwrap(), clients[0].local_addr().unwrap());
    }

    /// actix-web boxes the handler's future, with its extractors', for every request. glibc
    /// serves allocations up to 1,032 bytes from a per-thread cache and larger ones from its
    /// slower bins (about 450 instructions more per request under callgrind when this future
    /// was 1,592 bytes): the WebSocket path is boxed apart, and a try keeps only awc's sending
    /// future. It is 600 bytes in debug and release builds alike.
    #[actix_web::test]
    async fn the_forwarding_future_stays_small() {
        use actix_web::FromRequest as _;

        let config = Config::with_upstreams(vec![]);
        let selector = Arc::new(RoundRobin::new(config.passive_policy()));
        let forwarding = web::Data::new(Forwarding::new(
            &config,
            selector,
            Arc::new(Totals::default()),
        ));
        let clients = web::Data::new(upstream_clients(&config));
        let (req, mut payload) = actix_web::test::TestRequest::get().to_http_parts();
        let payload = web::Payload::from_request(&req, &mut payload)
            .await
            .unwrap();
        let future = proxy::forward(req, payload, forwarding, clients);
        let size = std::mem::size_of_val(&future);
        assert!(
            size <= 768,
            "the forwarding future is {size} bytes: with actix-web's wrapping it no longer fits \
             the allocator's per-thread cache (box the part that grew)"
        );
    }
}
