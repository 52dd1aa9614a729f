//! RED metrics of an HTTP service: [`Red`] counts every answered request by route
//! template, method and status, and times it to its response head (a stream's too, so a
//! long-lived stream counts once, when it opens).

use std::future::{Ready, ready};
use std::sync::Arc;
use std::time::Instant;

use actix_web::Error;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::Method;
use futures::future::LocalBoxFuture;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::names;

/// Latency buckets, in seconds: fine below 10 ms, where the read objective is.
pub const BUCKETS: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The route label of a request no route matched (a 404 or 405): one series for all of
/// them, so that scanners cannot grow the label set.
pub const UNMATCHED: &str = "unmatched";

pub struct HttpMetrics {
    service: String,
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HttpMetrics {
    pub fn new(service: &str) -> HttpMetrics {
        let requests = IntCounterVec::new(
            Opts::new(names::HTTP_REQUESTS, "HTTP requests answered, by route template, method and status."),
            &["service", "route", "method", "status"],
        )
        .expect("a valid metric definition");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                names::HTTP_REQUEST_DURATION,
                "Time to the response head, by route template and method.",
            )
            .buckets(BUCKETS.to_vec()),
            &["service", "route", "method"],
        )
        .expect("a valid metric definition");
        HttpMetrics { service: service.to_owned(), requests, duration }
    }

    pub(crate) fn register(&self, registry: &Registry) {
        // Each is registered once, in a registry of its own process: this cannot collide.
        let _ = registry.register(Box::new(self.requests.clone()));
        let _ = registry.register(Box::new(self.duration.clone()));
    }

    /// Counts one answered request.
    pub fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        self.requests.with_label_values(&[self.service.as_str(), route, method, status.as_str()]).inc();
        self.duration.with_label_values(&[self.service.as_str(), route, method]).observe(seconds);
    }
}

/// The method label: the standard ones by name, anything else as one `other`.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The middleware: `App::new().wrap(Red(metrics.http.clone()))`.
#[derive(Clone)]
pub struct Red(pub Arc<HttpMetrics>);

impl<S, B> Transform<S, ServiceRequest> for Red
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = RedService<S>;
    type InitError = ();
    type Future = Ready<Result<RedService<S>, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RedService { service, metrics: self.0.clone() }))
    }
}

pub struct RedService<S> {
    service: S,
    metrics: Arc<HttpMetrics>,
}

impl<S, B> Service<ServiceRequest> for RedService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<ServiceResponse<B>, Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        let method = method_label(req.method());
        let metrics = self.metrics.clone();
        let answer = self.service.call(req);
        Box::pin(async move {
            let res = answer.await;
            let seconds = started.elapsed().as_secs_f64();
            match &res {
                // The route is known once the router has run, inside the call.
                Ok(r) => {
                    let route = r.request().match_pattern();
                    metrics.observe(route.as_deref().unwrap_or(UNMATCHED), method, r.status().as_u16(), seconds);
                }
                Err(e) => metrics.observe(UNMATCHED, method, e.as_response_error().status_code().as_u16(), seconds),
            }
            res
        })
    }
}

#[cfg(test)]
mod tests {
    use actix_web::{App, HttpResponse, test, web};

    use super::*;
    use crate::Metrics;

    #[actix_web::test]
    async fn counts_by_route_template_and_status() {
        let m = Metrics::new("post-service");
        let app = test::init_service(
            App::new()
                .wrap(Red(m.http.clone()))
                .route("/api/v1/statuses/{id}", web::get().to(|| async { HttpResponse::Ok().finish() })),
        )
        .await;
        for path in ["/api/v1/statuses/1", "/api/v1/statuses/2", "/nowhere"] {
            test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        }
        let text = m.render();
        let line = |route: &str, status: u16, n: u64| {
            format!(
                "{}{{method=\"GET\",route=\"{route}\",service=\"post-service\",status=\"{status}\"}} {n}",
                names::HTTP_REQUESTS
            )
        };
        assert!(text.contains(&line("/api/v1/statuses/{id}", 200, 2)), "one series per template:\n{text}");
        assert!(text.contains(&line(UNMATCHED, 404, 1)), "{text}");
    }
}
