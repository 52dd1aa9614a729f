//! W3C Trace Context (`traceparent`) for events: how a trace crosses the log.
//!
//! Every record a service produces carries a [`TRACEPARENT`] header naming the trace it
//! belongs to and the span that produced it: the incoming HTTP request's trace when the
//! client sent one, a fresh trace otherwise (see [`TraceContext::continue_or_start`]). A
//! consumer reads it back with [`TraceContext::from_headers`] and opens the span that
//! applies the event as its child.
//!
//! This is the wire format only (version `00`, <https://www.w3.org/TR/trace-context/>):
//! no exporter and no dependency on a tracing backend, so services can record the ids as
//! span fields today and an OpenTelemetry layer can pick the same header up later.
//! Parsing follows the spec's rules for a receiver: lowercase hex only, no all-zero ids,
//! version `ff` rejected, a later version accepted when its first four fields parse. A
//! header that does not parse is ignored (a new trace starts): it must never make an
//! event fail.

use std::fmt;

use bytes::Bytes;

/// The header name, as the W3C spec and Kafka instrumentations spell it.
pub const TRACEPARENT: &str = "traceparent";

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// Runs `work` with `context` as the current trace: records built inside it (by
/// [`crate::Record::post`] and [`crate::Record::graph`]) carry it. A request handler wraps
/// its work in the request's context, so every event it causes, however deep, joins the
/// request's trace.
pub async fn scope<F: Future>(context: TraceContext, work: F) -> F::Output {
    CURRENT.scope(context, work).await
}

/// The trace of the enclosing [`scope`], if any.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|c| *c).ok()
}

/// [`current`], or a new trace outside any scope.
pub fn current_or_new() -> TraceContext {
    current().unwrap_or_else(TraceContext::new_root)
}

/// The trace an event belongs to and the span that produced it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// The producing span: the parent of whatever continues the trace.
    pub span_id: [u8; 8],
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

impl TraceContext {
    /// A new trace with a new root span, sampled.
    pub fn new_root() -> TraceContext {
        TraceContext { trace_id: nonzero(), span_id: nonzero(), flags: 0x01 }
    }

    /// A new span in the same trace, whose parent is `self`.
    pub fn child(&self) -> TraceContext {
        TraceContext { trace_id: self.trace_id, span_id: nonzero(), flags: self.flags }
    }

    /// The context of work that continues `incoming` (a request's `traceparent` header,
    /// say): a child of it when it parses, a new trace otherwise.
    pub fn continue_or_start(incoming: Option<&[u8]>) -> TraceContext {
        match incoming.and_then(TraceContext::parse) {
            Some(parent) => parent.child(),
            None => TraceContext::new_root(),
        }
    }

    /// Parses a `traceparent` value; `None` if it is malformed.
    pub fn parse(value: &[u8]) -> Option<TraceContext> {
        // version "-" trace-id "-" parent-id "-" flags: 2 + 1 + 32 + 1 + 16 + 1 + 2.
        const LEN: usize = 55;
        let value = value.trim_ascii();
        if value.len() < LEN {
            return None;
        }
        let version = hex::<1>(&value[0..2])?[0];
        match version {
            0xff => return None,
            // Version 00 has exactly these fields.
            0x00 if value.len() != LEN => return None,
            // A later version may append fields, after a dash.
            _ if value.len() > LEN && value[LEN] != b'-' => return None,
            _ => {}
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let trace_id = hex::<16>(&value[3..35])?;
        let span_id = hex::<8>(&value[36..52])?;
        let flags = hex::<1>(&value[53..55])?[0];
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceContext { trace_id, span_id, flags })
    }

    /// The first `traceparent` header that parses. Several (another producer's) or a
    /// malformed one are tolerated: the event applies the same either way.
    pub fn from_headers(headers: &[(String, Bytes)]) -> Option<TraceContext> {
        headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(TRACEPARENT))
            .find_map(|(_, value)| TraceContext::parse(value))
    }

    /// The header value, `00-<trace id>-<span id>-<flags>`.
    pub fn header_value(&self) -> Bytes {
        Bytes::from(self.to_string())
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        to_hex(&self.trace_id)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        to_hex(&self.span_id)
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{:02x}", self.trace_id_hex(), self.span_id_hex(), self.flags)
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceContext({self})")
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// Exactly `2 * N` lowercase hex digits (the spec forbids uppercase).
fn hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    if digits.len() != 2 * N {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// Random bytes, never all zero (an all-zero id is invalid).
fn nonzero<const N: usize>() -> [u8; N] {
    loop {
        let bytes: [u8; N] = rand::random();
        if bytes != [0; N] {
            return bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_the_spec_example() {
        let c = TraceContext::parse(EXAMPLE.as_bytes()).expect("valid");
        assert_eq!(c.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.span_id_hex(), "00f067aa0ba902b7");
        assert_eq!(c.flags, 1);
        assert_eq!(c.to_string(), EXAMPLE);
        assert_eq!(TraceContext::parse(&c.header_value()), Some(c));
    }

    #[test]
    fn malformed_values_are_rejected() {
        let bad = [
            "",
            "00",
            "garbage",
            "00-ab-cd-01",
            // Uppercase hex.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            // All-zero trace id, then all-zero span id.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Version ff is invalid; version 00 takes no extra fields.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            // Wrong separators and non-hex digits.
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
        ];
        for value in bad {
            assert_eq!(TraceContext::parse(value.as_bytes()), None, "{value:?} must not parse");
        }
        assert_eq!(TraceContext::parse(&[0xff, 0xfe, 0x00]), None, "not even UTF-8");
    }

    #[test]
    fn a_later_version_is_read_by_its_first_fields() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        let c = TraceContext::parse(later.as_bytes()).expect("forward compatible");
        assert_eq!(c.to_string(), EXAMPLE, "sent on as version 00");
        assert_eq!(TraceContext::parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"), None);
    }

    #[test]
    fn a_child_keeps_the_trace_and_gets_a_new_span() {
        let parent = TraceContext::parse(EXAMPLE.as_bytes()).unwrap();
        let child = TraceContext::continue_or_start(Some(EXAMPLE.as_bytes()));
        assert_eq!((child.trace_id, child.flags), (parent.trace_id, parent.flags));
        assert_ne!(child.span_id, parent.span_id);
        let fresh = TraceContext::continue_or_start(Some(b"nonsense"));
        assert_ne!(fresh.trace_id, parent.trace_id, "a malformed header starts a new trace");
        assert_ne!(TraceContext::new_root().trace_id, TraceContext::new_root().trace_id);
    }

    #[tokio::test]
    async fn records_carry_the_scoped_trace_or_a_new_one() {
        let event = crate::pb::PostEvent { event_id: String::new(), occurred_at_ms: 0, kind: None };
        let context = TraceContext::parse(EXAMPLE.as_bytes()).unwrap();
        let inside = scope(context, async { crate::Record::post(1, &event) }).await;
        assert_eq!(TraceContext::from_headers(&inside.headers), Some(context));
        let outside =
            TraceContext::from_headers(&crate::Record::post(1, &event).headers).expect("always a traceparent");
        assert_ne!(outside.trace_id, context.trace_id);
        let replaced = inside.with_trace(outside);
        let names = replaced.headers.iter().filter(|(n, _)| n == TRACEPARENT).count();
        assert_eq!((names, TraceContext::from_headers(&replaced.headers)), (1, Some(outside)));
    }

    #[test]
    fn headers_are_searched_for_the_first_valid_traceparent() {
        let headers = vec![
            ("other".to_owned(), Bytes::from_static(b"x")),
            ("traceparent".to_owned(), Bytes::from_static(b"00-ab-cd-01")),
            ("Traceparent".to_owned(), Bytes::from_static(EXAMPLE.as_bytes())),
        ];
        assert_eq!(TraceContext::from_headers(&headers).map(|c| c.to_string()), Some(EXAMPLE.to_owned()));
        assert_eq!(TraceContext::from_headers(&headers[..2]), None);
    }
}
