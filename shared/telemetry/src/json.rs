//! Logs as JSON lines that join their traces: each line carries the `trace_id` and
//! `span_id` of the OpenTelemetry span it was logged in (when traces are exported), so a
//! log search and a trace view find each other.
//!
//! `{"timestamp":"2026-12-02T01:02:03.456789Z","level":"WARN","target":"fanout_worker",
//! "message":"applying posts failed; retrying","fields":{"error":"..."},"spans":["fanout.event",
//! "fanout.posts"],"trace_id":"4bf9…","span_id":"00f0…"}`

use std::fmt;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TraceContextExt as _;
use serde_json::{Map, Value};
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The event format of `STARLING_LOG_FORMAT=json`. Bind it to its subscriber
/// ([`JsonLines::bind`]) once that is installed, or lines carry no trace ids.
#[derive(Clone, Default)]
pub struct JsonLines {
    /// The subscriber the OpenTelemetry layer is part of. Looked up while an event is
    /// being dispatched, when `tracing`'s own lookup of the current dispatcher answers
    /// none (it guards against re-entrance), hence kept here.
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl JsonLines {
    /// Binds to the current default subscriber.
    pub fn bind(&self) {
        let _ = self.dispatch.set(tracing::dispatcher::get_default(|d| d.downgrade()));
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut line = Map::new();
        let now = time::OffsetDateTime::now_utc();
        let timestamp = now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        line.insert("timestamp".into(), timestamp.into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        line.insert("message".into(), fields.message.take().unwrap_or_default().into());
        if !fields.rest.is_empty() {
            line.insert("fields".into(), Value::Object(fields.rest));
        }
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<Value> = scope.from_root().map(|span| Value::from(span.name())).collect();
            line.insert("spans".into(), spans.into());
        }
        if let Some(span) = ctx.lookup_current() {
            // The fmt layer holds none of the span's extensions here, as the lookup needs.
            let dispatch = self.dispatch.get().and_then(WeakDispatch::upgrade);
            if let Some(cx) = dispatch.and_then(|d| tracing_opentelemetry::get_otel_context(&span.id(), &d)) {
                let context = cx.span().span_context().clone();
                if context.is_valid() {
                    line.insert("trace_id".into(), context.trace_id().to_string().into());
                    line.insert("span_id".into(), context.span_id().to_string().into());
                }
            }
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// An event's fields as JSON values; `message` apart.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    rest: Map<String, Value>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.rest.insert(field.name().to_owned(), value);
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_carry_fields_spans_and_the_otel_ids_of_their_span() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        let out = Buffer::default();
        let writer = out.clone();
        let json = JsonLines::default();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().event_format(json.clone()).with_writer(move || writer.clone()))
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            json.bind();
            tracing::info!(n = 3u64, "outside");
            let outer = tracing::info_span!("outer");
            let _o = outer.enter();
            let inner = tracing::info_span!("inner");
            let _i = inner.enter();
            tracing::warn!(error = "boom", ok = true, "inside \"quoted\"");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect(l)).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["message"], "outside");
        assert_eq!(lines[0]["fields"]["n"], 3);
        assert!(lines[0].get("trace_id").is_none(), "no span, no trace: {}", lines[0]);
        assert_eq!(lines[1]["message"], "inside \"quoted\"");
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["fields"]["ok"], true);
        assert_eq!(lines[1]["spans"], serde_json::json!(["outer", "inner"]));
        // Read before the provider goes: shutting it down empties the exporter.
        let spans = exporter.get_finished_spans().unwrap();
        drop(provider);
        let inner = spans.iter().find(|s| s.name == "inner").expect("the inner span was exported");
        assert_eq!(lines[1]["trace_id"], inner.span_context.trace_id().to_string());
        assert_eq!(lines[1]["span_id"], inner.span_context.span_id().to_string());
    }
}
