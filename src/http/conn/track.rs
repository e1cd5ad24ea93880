//! The request tracker: middleware outermost on every route. It tells the
//! connection's [`Conn`] where each request's handler starts (its head is
//! complete: the connection is busy), when the handler returns (its
//! response is being sent) and when the response body is done (the
//! connection waits for the next request, under the deadlines of
//! [`super::deadlines`]). A response that closes the connection
//! (`Connection: close`) makes the connection read nothing further. (Each
//! key-value handler is bounded by `http.handler_timeout_ms` where it runs,
//! `http/mod.rs`: a middleware may not hold a copy of the request while
//! the router needs it.)

use super::guard::Conn;
use crate::http::error::ApiError;
use actix_web::body::{BodySize, EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::ResponseError;
use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Holds the connection busy, then responding, while it lives; dropped
/// (the body ended, or the request was abandoned), the connection waits.
struct InHand(Arc<Conn>);

impl Drop for InHand {
    fn drop(&mut self) {
        // The guard's clock: the one the I/O wrapper reads deadlines on.
        let now = self.0.now_ms();
        self.0.timer().request_finished(now);
        // A closing connection closes at its next read: make sure there is
        // one (actix-http may wait for nothing, draining an unread body).
        // Others are read again by actix-http, which arms the wait's
        // deadlines (an idle one ends at its own keep-alive).
        if self.0.is_closing() {
            self.0.waker.wake();
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that releases its connection's [`InHand`] at its end.
    pub struct Tracked<B> {
        #[pin]
        body: B,
        in_hand: Option<InHand>,
    }
}

impl<B: MessageBody> MessageBody for Tracked<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.project();
        let next = this.body.poll_next(cx);
        if matches!(next, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.in_hand.take();
        }
        next
    }
}

/// The middleware (`App::wrap(Track)`). It marks the connection busy in
/// `call`, when actix-http has parsed the head and hands the request over —
/// not when the request's future is first polled, by which time more of the
/// body may have been read as if it were the next head.
pub struct Track;

impl<S, B> Transform<S, ServiceRequest> for Track
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<Tracked<EitherBody<B>>>;
    type Error = actix_web::Error;
    type Transform = TrackService<S>;
    type InitError = ();
    type Future = std::future::Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        std::future::ready(Ok(TrackService {
            service: Rc::new(service),
        }))
    }
}

pub struct TrackService<S> {
    service: Rc<S>,
}

impl<S, B> Service<ServiceRequest> for TrackService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<Tracked<EitherBody<B>>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let conn = req.conn_data::<Arc<Conn>>().cloned();
        let in_hand = match conn {
            Some(c) if !c.start_request() => {
                // Evicted while its head arrived: nothing may run.
                let e = ApiError::overloaded(
                    "this connection was closed to make room for another; retry on a new one",
                    ringkv_actors::error::RETRY_AFTER_MS,
                )
                .closing();
                c.set_closing();
                let res = req.into_response(e.error_response()).map_into_right_body();
                return Box::pin(std::future::ready(Ok(res.map_body(|_, body| Tracked {
                    body,
                    in_hand: None,
                }))));
            }
            Some(c) => Some(InHand(c)),
            None => None,
        };
        let service = self.service.clone();
        Box::pin(async move {
            let res = service.call(req).await?.map_into_left_body();
            if let Some(InHand(c)) = &in_hand {
                if !res.response().keep_alive() {
                    c.set_closing();
                }
                let now = c.now_ms();
                c.timer().responding(now);
            }
            Ok(res.map_body(|_, body| Tracked { body, in_hand }))
        })
    }
}
