//! The one error type of the crate: every failure carries the line it concerns, so a researcher can
//! open the file at the offending line.

use std::path::PathBuf;

/// Why reading, writing, generating or importing a trace failed.
///
/// `line` is 1-based. For the writer it is the line the record would have had in the output, so
/// a writer error and the reader error for the same file name the same line.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: missing trace header: expected `{expected}`, found `{found}`", expected = crate::VERSION_LINE)]
    MissingHeader { line: u64, found: String },
    #[error("line {line}: unsupported trace version `{found}` (this reader knows `{expected}`)", expected = crate::VERSION_LINE)]
    UnsupportedVersion { line: u64, found: String },
    #[error("line {line}: {reason}")]
    Parse { line: u64, reason: String },
    #[error("line {line}: at_ms {at_ms} is before the previous event's {previous}")]
    TimeWentBack { line: u64, at_ms: u64, previous: u64 },
    #[error("line {line}: edge after the first event (the initial graph must come before every event)")]
    EdgeAfterEvent { line: u64 },
    #[error("line {line}: #meta after the first record (meta lines belong to the header)")]
    MetaAfterRecord { line: u64 },
    #[error("invalid #meta entry `{key}`: {reason}")]
    InvalidMeta { key: String, reason: String },
    /// A malformed line in an importer's input (not a trace file).
    #[error("{}:{line}: {reason}", path.display())]
    Input { path: PathBuf, line: u64, reason: String },
    /// Options that cannot produce a trace (for example a negative rate).
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl TraceError {
    /// The 1-based line the error concerns, when it concerns one.
    pub fn line(&self) -> Option<u64> {
        match self {
            TraceError::MissingHeader { line, .. }
            | TraceError::UnsupportedVersion { line, .. }
            | TraceError::Parse { line, .. }
            | TraceError::TimeWentBack { line, .. }
            | TraceError::EdgeAfterEvent { line }
            | TraceError::MetaAfterRecord { line }
            | TraceError::Input { line, .. } => Some(*line),
            TraceError::Io(_) | TraceError::InvalidMeta { .. } | TraceError::Config(_) => None,
        }
    }

    pub(crate) fn parse(line: u64, reason: impl Into<String>) -> Self {
        TraceError::Parse { line, reason: reason.into() }
    }
}
