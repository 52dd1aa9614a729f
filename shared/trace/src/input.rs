//! Line-by-line reading of importers' input files, with errors that name the file and line.

use std::io::BufRead;
use std::path::Path;

use crate::TraceError;

/// Calls `f(line_number, fields)` for every line that is not blank and not a `#` or `%` comment
/// (edge-list files from SNAP, KONECT and Network Repository use both). `f` returns `false` to stop.
pub(crate) fn for_each_line(
    path: &Path,
    mut f: impl FnMut(u64, &[&str]) -> Result<bool, TraceError>,
) -> Result<(), TraceError> {
    let file = std::fs::File::open(path)
        .map_err(|e| TraceError::Io(std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))))?;
    let mut reader = std::io::BufReader::with_capacity(256 * 1024, file);
    let mut buf = String::new();
    let mut line = 0u64;
    loop {
        buf.clear();
        let n = reader.read_line(&mut buf).map_err(|e| input_error(path, line + 1, e.to_string()))?;
        if n == 0 {
            return Ok(());
        }
        line += 1;
        let text = buf.trim();
        if text.is_empty() || text.starts_with('#') || text.starts_with('%') {
            continue;
        }
        let fields: Vec<&str> = text.split_ascii_whitespace().collect();
        if !f(line, &fields)? {
            return Ok(());
        }
    }
}

pub(crate) fn input_error(path: &Path, line: u64, reason: impl Into<String>) -> TraceError {
    TraceError::Input { path: path.to_path_buf(), line, reason: reason.into() }
}

/// A decimal id of an input file.
pub(crate) fn id(path: &Path, line: u64, field: &str, what: &str) -> Result<u64, TraceError> {
    if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
        return Err(input_error(path, line, format!("{what} is not a non-negative integer: `{field}`")));
    }
    field.parse().map_err(|_| input_error(path, line, format!("{what} does not fit in 64 bits: `{field}`")))
}

/// The file name, for `#meta` (the full path would leak the researcher's directory layout).
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}
