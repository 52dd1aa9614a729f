//! Streaming trace writer. It checks the same ordering rules as the reader, so whatever it accepts
//! reads back, and it formats numbers by hand into its own buffer because generators emit millions
//! of lines and `write!` costs several times more per line.

use std::io::Write;

use crate::{Event, Header, Record, TraceError, TraceUser, VERSION_LINE};

/// Bytes gathered before one write to the inner writer: large enough that an unbuffered `File`
/// is as fast as a `BufWriter`, small enough not to matter for memory.
const FLUSH_AT: usize = 64 * 1024;

/// Writes a trace record by record. Call [`TraceWriter::finish`] to flush and get the inner writer
/// back; dropping the writer flushes too but has to ignore errors, like `BufWriter`.
pub struct TraceWriter<W: Write> {
    /// `None` only after `finish` has taken it.
    inner: Option<W>,
    buf: Vec<u8>,
    /// 1-based number of the last line written, for errors that name the offending line.
    line: u64,
    records: bool,
    in_events: bool,
    last_at_ms: u64,
    edges: u64,
    events: u64,
}

impl<W: Write> TraceWriter<W> {
    /// Writes the version line and the header's meta entries.
    pub fn new(w: W, header: &Header) -> Result<Self, TraceError> {
        let mut tw = TraceWriter {
            inner: Some(w),
            buf: Vec::with_capacity(FLUSH_AT + 128),
            line: 1,
            records: false,
            in_events: false,
            last_at_ms: 0,
            edges: 0,
            events: 0,
        };
        tw.buf.extend_from_slice(VERSION_LINE.as_bytes());
        tw.buf.push(b'\n');
        for (key, value) in &header.meta {
            tw.meta(key, value)?;
        }
        Ok(tw)
    }

    /// Appends one `#meta key=value` line. Only allowed before the first record, which lets an
    /// importer record what it learnt while reading its input (counts, dropped lines) in a header
    /// that was started by its caller.
    pub fn meta(&mut self, key: &str, value: &str) -> Result<(), TraceError> {
        let invalid = |reason: &str| TraceError::InvalidMeta { key: key.to_string(), reason: reason.to_string() };
        if self.records {
            return Err(TraceError::MetaAfterRecord { line: self.line + 1 });
        }
        if key.is_empty() || key.contains(|c: char| c.is_whitespace() || c == '=') {
            return Err(invalid("a key is one word without `=`"));
        }
        if value.contains(['\n', '\r']) {
            return Err(invalid("a value is one line"));
        }
        if value.trim() != value {
            return Err(invalid("a value has no surrounding whitespace (the reader trims it)"));
        }
        self.buf.extend_from_slice(b"#meta ");
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.push(b'=');
        self.buf.extend_from_slice(value.as_bytes());
        self.end_line()
    }

    /// Writes `# text` (a comment, ignored by readers), e.g. to explain a choice in the file itself.
    pub fn comment(&mut self, text: &str) -> Result<(), TraceError> {
        for part in text.lines() {
            self.buf.extend_from_slice(b"# ");
            self.buf.extend_from_slice(part.as_bytes());
            self.end_line()?;
        }
        Ok(())
    }

    /// Writes an initial-graph edge: `follower` follows `followee`.
    pub fn edge(&mut self, follower: TraceUser, followee: TraceUser) -> Result<(), TraceError> {
        if self.in_events {
            return Err(TraceError::EdgeAfterEvent { line: self.line + 1 });
        }
        self.records = true;
        self.buf.extend_from_slice(b"edge ");
        push_u64(&mut self.buf, follower);
        self.buf.push(b' ');
        push_u64(&mut self.buf, followee);
        self.edges += 1;
        self.end_line()
    }

    /// Writes an event; its `at_ms` must not be before the previous event's.
    pub fn event(&mut self, e: &Event) -> Result<(), TraceError> {
        if self.in_events && e.at_ms < self.last_at_ms {
            return Err(TraceError::TimeWentBack { line: self.line + 1, at_ms: e.at_ms, previous: self.last_at_ms });
        }
        self.records = true;
        self.in_events = true;
        self.last_at_ms = e.at_ms;
        push_u64(&mut self.buf, e.at_ms);
        self.buf.push(b' ');
        self.buf.extend_from_slice(e.op.name().as_bytes());
        self.buf.push(b' ');
        push_u64(&mut self.buf, e.user);
        if let Some(arg) = e.op.arg() {
            self.buf.push(b' ');
            push_u64(&mut self.buf, arg);
        }
        self.events += 1;
        self.end_line()
    }

    /// Writes either kind of record.
    pub fn record(&mut self, r: &Record) -> Result<(), TraceError> {
        match r {
            Record::Edge { follower, followee } => self.edge(*follower, *followee),
            Record::Event(e) => self.event(e),
        }
    }

    /// Edges written so far.
    pub fn edges_written(&self) -> u64 {
        self.edges
    }

    /// Events written so far.
    pub fn events_written(&self) -> u64 {
        self.events
    }

    /// `at_ms` of the last event written (0 before the first).
    pub fn last_at_ms(&self) -> u64 {
        self.last_at_ms
    }

    /// Flushes everything and returns the inner writer.
    pub fn finish(mut self) -> Result<W, TraceError> {
        self.flush_buf()?;
        let mut w = self.inner.take().expect("inner writer is only taken by finish");
        w.flush()?;
        Ok(w)
    }

    fn end_line(&mut self) -> Result<(), TraceError> {
        self.buf.push(b'\n');
        self.line += 1;
        if self.buf.len() >= FLUSH_AT { self.flush_buf() } else { Ok(()) }
    }

    fn flush_buf(&mut self) -> Result<(), TraceError> {
        if let Some(w) = self.inner.as_mut() {
            w.write_all(&self.buf)?;
        }
        self.buf.clear();
        Ok(())
    }
}

impl<W: Write> Drop for TraceWriter<W> {
    fn drop(&mut self) {
        if self.inner.is_some() {
            let _ = self.flush_buf();
            if let Some(w) = self.inner.as_mut() {
                let _ = w.flush();
            }
        }
    }
}

/// Appends the decimal digits of `n`.
fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}
