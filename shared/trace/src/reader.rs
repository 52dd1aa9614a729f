//! Streaming trace reader: one line in memory at a time, every rule of the format checked as the
//! line goes by.

use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::{Event, Header, Op, Record, TraceError, VERSION_LINE};

/// Reads a trace record by record. [`TraceReader::new`] consumes the header; iterating yields the
/// body. The iterator stops for good after the first error.
pub struct TraceReader<R: BufRead> {
    input: R,
    header: Header,
    /// The current line; reused so that reading allocates nothing per line.
    buf: String,
    /// 1-based number of the line in `buf`.
    line: u64,
    /// `new` had to read the first body line to know the header ended; it waits in `buf`.
    pending: bool,
    /// An event has been seen: edges are no longer allowed.
    in_events: bool,
    last_at_ms: u64,
    done: bool,
}

impl TraceReader<BufReader<std::fs::File>> {
    /// Opens a trace file and reads its header.
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        Self::new(BufReader::with_capacity(256 * 1024, std::fs::File::open(path)?))
    }
}

impl<R: BufRead> TraceReader<R> {
    /// Reads the version line and the `#meta` lines.
    pub fn new(input: R) -> Result<Self, TraceError> {
        let mut r = TraceReader {
            input,
            header: Header::default(),
            buf: String::new(),
            line: 0,
            pending: false,
            in_events: false,
            last_at_ms: 0,
            done: false,
        };
        if !r.next_line()? {
            return Err(TraceError::MissingHeader { line: 1, found: String::new() });
        }
        let first = r.buf.strip_prefix('\u{feff}').unwrap_or(&r.buf).trim_end();
        if first != VERSION_LINE {
            let found = first.to_string();
            return Err(match first.strip_prefix("#starling-trace") {
                Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
                    TraceError::UnsupportedVersion { line: 1, found }
                }
                _ => TraceError::MissingHeader { line: 1, found },
            });
        }
        // The header runs until the first record; comments and blank lines may sit among the meta.
        while r.next_line()? {
            let text = r.buf.trim();
            if let Some(rest) = meta_body(text) {
                let (key, value) = parse_meta(rest).map_err(|reason| TraceError::parse(r.line, reason))?;
                r.header.meta.push((key.to_string(), value.to_string()));
            } else if !(text.is_empty() || text.starts_with('#')) {
                r.pending = true;
                break;
            }
        }
        Ok(r)
    }

    /// The `#meta` entries, in file order.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The 1-based number of the last line read.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Reads the next line into `buf`; false at end of input.
    fn next_line(&mut self) -> Result<bool, TraceError> {
        self.buf.clear();
        let n = self.input.read_line(&mut self.buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                TraceError::parse(self.line + 1, "not valid UTF-8")
            } else {
                TraceError::Io(e)
            }
        })?;
        if n == 0 {
            return Ok(false);
        }
        self.line += 1;
        Ok(true)
    }

    /// Parses the line in `buf`; `None` for a comment or a blank line.
    fn parse_line(&mut self) -> Result<Option<Record>, TraceError> {
        let line = self.line;
        let mut fields = self.buf.split_ascii_whitespace();
        let Some(first) = fields.next() else { return Ok(None) };
        if first.starts_with('#') {
            if meta_body(self.buf.trim()).is_some() {
                return Err(TraceError::MetaAfterRecord { line });
            }
            return Ok(None);
        }
        let record = if first == "edge" {
            if self.in_events {
                return Err(TraceError::EdgeAfterEvent { line });
            }
            let follower = number(fields.next(), line, "follower")?;
            let followee = number(fields.next(), line, "followee")?;
            Record::Edge { follower, followee }
        } else {
            let at_ms = number(Some(first), line, "at_ms")?;
            let name = fields.next().ok_or_else(|| TraceError::parse(line, "missing op"))?;
            if !Op::NAMES.contains(&name) {
                return Err(TraceError::parse(line, format!("unknown op `{name}`")));
            }
            let user = number(fields.next(), line, "user")?;
            let arg = if name == "read" { None } else { Some(number(fields.next(), line, arg_name(name))?) };
            let op = Op::from_parts(name, arg).expect("name checked against Op::NAMES");
            if self.in_events && at_ms < self.last_at_ms {
                return Err(TraceError::TimeWentBack { line, at_ms, previous: self.last_at_ms });
            }
            self.in_events = true;
            self.last_at_ms = at_ms;
            Record::Event(Event { at_ms, user, op })
        };
        if let Some(extra) = fields.next() {
            return Err(TraceError::parse(line, format!("extra field `{extra}`")));
        }
        Ok(Some(record))
    }
}

impl<R: BufRead> Iterator for TraceReader<R> {
    type Item = Result<Record, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            if !self.pending {
                match self.next_line() {
                    Ok(true) => {}
                    Ok(false) => {
                        self.done = true;
                        return None;
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            self.pending = false;
            match self.parse_line() {
                Ok(None) => continue,
                Ok(Some(record)) => return Some(Ok(record)),
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// The text after `#meta` and whitespace, if the (trimmed) line is a meta line.
fn meta_body(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("#meta")?;
    if rest.is_empty() {
        return Some(rest);
    }
    rest.starts_with(char::is_whitespace).then(|| rest.trim_start())
}

/// Splits `key=value`; the key must be non-empty and free of whitespace.
pub(crate) fn parse_meta(body: &str) -> Result<(&str, &str), String> {
    let (key, value) = body.split_once('=').ok_or_else(|| format!("#meta without `=`: `{body}`"))?;
    let key = key.trim_end();
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(format!("#meta key must be one word: `{key}`"));
    }
    Ok((key, value.trim()))
}

fn arg_name(op: &str) -> &'static str {
    match op {
        "post" | "delete" => "post key",
        _ => "target user",
    }
}

/// Parses a decimal u64 made of digits only: `+1`, `-1`, `1.0` and `0x1` are all rejected, so an
/// id means the same to every consumer.
fn number(field: Option<&str>, line: u64, what: &str) -> Result<u64, TraceError> {
    let field = field.ok_or_else(|| TraceError::parse(line, format!("missing {what}")))?;
    let bytes = field.as_bytes();
    if bytes.is_empty() || bytes.len() > 20 || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(TraceError::parse(line, format!("{what} is not a non-negative integer: `{field}`")));
    }
    field.parse().map_err(|_| TraceError::parse(line, format!("{what} does not fit in 64 bits: `{field}`")))
}
