//! The request tracker: middleware outermost on every route, telling the
//! connection's [`Conn`] where each request's handler starts (its head is
//! complete: the connection is busy) and ends (it waits for the next
//! request, under the deadlines of [`super::deadlines`]).

use super::guard::Conn;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use std::sync::Arc;

/// Marks the connection busy while it lives (also when the handler's
/// future is dropped because the client went away).
struct Busy(Arc<Conn>);

impl Busy {
    fn start(conn: Arc<Conn>) -> Busy {
        conn.timer().request_started();
        Busy(conn)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        // The guard's clock: the one the I/O wrapper reads deadlines on.
        let now = self.0.now_ms();
        self.0.timer().request_finished(now);
    }
}

pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let busy = req.conn_data::<Arc<Conn>>().cloned().map(Busy::start);
    let res = next.call(req).await;
    drop(busy);
    res
}
