//! What the balancer keeps for each client connection, in the connection's data (set up by
//! [`on_connect`], read with `HttpRequest::conn_data`): whether a request on it was refused,
//! and the open-connection count. It is kept small: an idle keep-alive connection costs
//! little more than it (16 bytes) and actix's own state.

use std::any::Any;
use std::cell::Cell;
use std::sync::Arc;

use actix_web::dev::Extensions;
use actix_web::HttpRequest;

use crate::stats::{self, Totals};

/// One client connection's state.
#[derive(Debug)]
pub struct ClientConnection {
    /// A request on this connection was refused; every later one is too ([`crate::screen`]).
    refused: Cell<bool>,
    /// Counts the connection as open until its data is dropped (the connection closed).
    _open: stats::Connection,
}

impl ClientConnection {
    /// The state of a new connection, counted in `totals` while it is open.
    pub fn new(totals: Arc<Totals>) -> Self {
        ClientConnection {
            refused: Cell::new(false),
            _open: stats::Connection::open(totals),
        }
    }

    /// The state of the connection `req` came on; `None` for a request made without a
    /// connection (tests).
    pub fn of(req: &HttpRequest) -> Option<&ClientConnection> {
        req.conn_data::<ClientConnection>()
    }

    /// Whether a request on this connection was refused.
    pub fn refused(&self) -> bool {
        self.refused.get()
    }

    /// Remembers that a request on this connection was refused.
    pub fn refuse(&self) {
        self.refused.set(true);
    }
}

/// Gives each new connection its [`ClientConnection`], counted in `totals`; wrapped by
/// `HttpServer::on_connect`.
pub fn on_connect(totals: &Arc<Totals>, _: &dyn Any, data: &mut Extensions) {
    data.insert(ClientConnection::new(totals.clone()));
}
