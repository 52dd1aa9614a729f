//! A server span per HTTP request, when traces are exported
//! ([`starling_telemetry::exporting`]): a child of the caller's span when the request
//! carries a `traceparent`, named by method and route template once the router has
//! matched (`GET /api/v1/timelines/home`), with the status it answered. Everything the
//! handler does (store and cache calls, internal calls, the events it writes) runs inside
//! it, so it all joins the request's trace.
//!
//! With export off the middleware only forwards the call.

use std::future::{Ready, ready};

use actix_web::Error;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use futures::future::{Either, LocalBoxFuture};
use tracing::Instrument as _;
use tracing::field::Empty;

/// `App::new().wrap(Traced)`.
#[derive(Clone, Copy, Default)]
pub struct Traced;

impl<S, B> Transform<S, ServiceRequest> for Traced
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = TracedService<S>;
    type InitError = ();
    type Future = Ready<Result<TracedService<S>, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(TracedService { service }))
    }
}

pub struct TracedService<S> {
    service: S,
}

impl<S, B> Service<ServiceRequest> for TracedService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = Either<S::Future, LocalBoxFuture<'static, Result<ServiceResponse<B>, Error>>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        if !starling_telemetry::exporting() {
            return Either::Left(self.service.call(req));
        }
        let method = req.method().as_str().to_owned();
        let span = tracing::info_span!(
            "http.request",
            otel.name = %method,
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = %method,
            http.route = Empty,
            http.response.status_code = Empty,
            url.path = req.path(),
        );
        let headers = req.headers();
        let parent = starling_telemetry::propagation::extract_with(|name| headers.get(name)?.to_str().ok());
        starling_telemetry::propagation::set_parent(&span, parent);
        let answer = span.in_scope(|| self.service.call(req));
        Either::Right(Box::pin(async move {
            let res = answer.instrument(span.clone()).await;
            let status = match &res {
                Ok(r) => {
                    // Known once the router has run, inside the call.
                    if let Some(route) = r.request().match_pattern() {
                        starling_telemetry::propagation::rename(&span, format!("{method} {route}"));
                        span.record("http.route", route);
                    }
                    r.status()
                }
                Err(e) => e.as_response_error().status_code(),
            };
            span.record("http.response.status_code", status.as_u16());
            // As OpenTelemetry's HTTP conventions have it: a server span is an error for
            // a 5xx only, a 4xx being the client's.
            if status.is_server_error() {
                span.record("otel.status_code", "ERROR");
            }
            res
        }))
    }
}
