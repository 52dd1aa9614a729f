//! W3C trace context across process boundaries, by the SDK's propagator
//! (`traceparent`, `tracestate`): into and out of event headers on the log, HTTP headers
//! of internal calls, and anything else that carries `(name, value)` pairs.
//!
//! A receiver follows the spec: a malformed or missing `traceparent` gives an empty
//! context, so the work starts a trace of its own and never fails for it. With export off
//! ([`crate::exporting`]) nothing is injected and nothing extracted.

use bytes::Bytes;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Writes `span`'s context into event headers, replacing any context they carried.
pub fn inject(span: &tracing::Span, headers: &mut Vec<(String, Bytes)>) {
    if !crate::exporting() {
        return;
    }
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut RecordHeaders(headers)));
}

/// The context event headers carry (empty if none parses).
pub fn extract(headers: &[(String, Bytes)]) -> Context {
    if !crate::exporting() {
        return Context::new();
    }
    extract_with(|name| {
        headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    })
}

/// The context in headers read through `get` (a header's value by its lowercase name):
/// for HTTP servers whose header map is not `http`'s own.
pub fn extract_with<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Context {
    if !crate::exporting() {
        return Context::new();
    }
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&Lookup(&get, std::marker::PhantomData)))
}

/// Writes `span`'s context into the headers of an outgoing HTTP request.
pub fn inject_http(span: &tracing::Span, headers: &mut reqwest::header::HeaderMap) {
    if !crate::exporting() {
        return;
    }
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HttpHeaders(headers)));
}

/// Makes `cx` the parent of `span` (a span that has been entered keeps the parent it had);
/// nothing with export off.
pub fn set_parent(span: &tracing::Span, cx: Context) {
    if crate::exporting() {
        let _ = span.set_parent(cx);
    }
}

/// Makes the context in event (or bus) headers the parent of `span`.
pub fn continue_from(span: &tracing::Span, headers: &[(String, Bytes)]) {
    if crate::exporting() {
        let _ = span.set_parent(extract(headers));
    }
}

/// Renames `span`'s OpenTelemetry span, e.g. once a server knows the route it matched
/// (recording `otel.name` later is lost once the span has started).
pub fn rename(span: &tracing::Span, name: String) {
    use opentelemetry::trace::TraceContextExt as _;
    if crate::exporting() {
        span.context().span().update_name(name);
    }
}

/// The trace id of `span`, if it is in an exported trace: for log lines and tests.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    let cx = span.context();
    let context = cx.span().span_context().clone();
    context.is_valid().then(|| context.trace_id().to_string())
}

struct RecordHeaders<'a>(&'a mut Vec<(String, Bytes)>);

impl Injector for RecordHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.retain(|(name, _)| !name.eq_ignore_ascii_case(key));
        self.0.push((key.to_owned(), Bytes::from(value)));
    }
}

struct HttpHeaders<'a>(&'a mut reqwest::header::HeaderMap);

impl Injector for HttpHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) =
            (reqwest::header::HeaderName::from_bytes(key.as_bytes()), reqwest::header::HeaderValue::from_str(&value))
        {
            self.0.insert(name, value);
        }
    }
}

/// Holds the headers' lifetime, so what `get` answers outlives every borrow of it.
struct Lookup<'f, 'a, F>(&'f F, std::marker::PhantomData<&'a str>);

impl<'a, F: Fn(&str) -> Option<&'a str>> Extractor for Lookup<'_, 'a, F> {
    fn get(&self, key: &str) -> Option<&str> {
        (self.0)(key)
    }

    /// Only what the trace-context propagator asks for by name is read: it never lists.
    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// One test, since export on or off is process-wide.
    #[test]
    fn context_crosses_event_and_http_headers_and_malformed_context_is_ignored() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let producer = tracing::info_span!("producer");
            let mut headers = vec![("other".to_owned(), Bytes::from_static(b"kept"))];
            inject(&producer, &mut headers);
            assert_eq!(headers.len(), 1, "export off: nothing injected");

            crate::set_exporting_for_tests();
            inject(&producer, &mut headers);
            inject(&producer, &mut headers);
            let traceparents: Vec<_> = headers.iter().filter(|(k, _)| k == "traceparent").collect();
            assert_eq!(traceparents.len(), 1, "a second inject replaces: {headers:?}");

            let consumer = tracing::info_span!("consumer");
            set_parent(&consumer, extract(&headers));
            assert_eq!(trace_id(&consumer), trace_id(&producer));
            assert!(trace_id(&producer).is_some());

            let mut http = reqwest::header::HeaderMap::new();
            inject_http(&consumer, &mut http);
            let value = http.get("traceparent").expect("traceparent").to_str().unwrap().to_owned();
            let server = tracing::info_span!("server");
            set_parent(&server, extract_with(|name| (name == "traceparent").then_some(value.as_str())));
            assert_eq!(trace_id(&server), trace_id(&producer));

            for bad in ["00-zz-not-hex-01", "", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"] {
                let cx = extract(&[("traceparent".to_owned(), Bytes::from(bad))]);
                assert!(!cx.span().span_context().is_valid(), "{bad:?} must not parse");
                let fresh = tracing::info_span!("fresh");
                set_parent(&fresh, cx);
                assert_ne!(trace_id(&fresh), trace_id(&producer), "a malformed header starts a new trace");
                assert!(trace_id(&fresh).is_some());
            }
            drop((producer, consumer, server));
        });
        let spans = exporter.get_finished_spans().unwrap();
        let span = |name: &str| spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(span("consumer").parent_span_id, span("producer").span_context.span_id());
        assert_eq!(span("server").parent_span_id, span("consumer").span_context.span_id());
    }
}
