//! The format: round trips through writer and reader, and every rejection the reader promises.

use std::io::Cursor;

use starling_trace::{Event, Header, Op, Record, TraceError, TraceReader, TraceWriter};

fn read_all(text: &str) -> Result<(Header, Vec<Record>), TraceError> {
    let reader = TraceReader::new(Cursor::new(text.as_bytes().to_vec()))?;
    let header = reader.header().clone();
    let records = reader.collect::<Result<Vec<_>, _>>()?;
    Ok((header, records))
}

fn ev(at_ms: u64, user: u64, op: Op) -> Record {
    Record::Event(Event { at_ms, user, op })
}

fn all_ops() -> Vec<Record> {
    vec![
        Record::Edge { follower: 1, followee: 2 },
        Record::Edge { follower: 3, followee: 1 },
        ev(0, 1, Op::Post { key: 17 }),
        ev(15, 3, Op::Follow { target: 1 }),
        ev(15, 3, Op::Block { target: 2 }),
        ev(16, 3, Op::Unblock { target: 2 }),
        ev(20, 3, Op::Read),
        ev(21, 3, Op::Unfollow { target: 1 }),
        ev(25, 1, Op::Delete { key: 17 }),
        ev(u64::MAX, u64::MAX, Op::Post { key: u64::MAX }),
    ]
}

#[test]
fn round_trip_preserves_header_and_records() {
    let header = Header::default().with("source", "test").with("note", "two words");
    let mut w = TraceWriter::new(Vec::new(), &header).unwrap();
    for r in all_ops() {
        w.record(&r).unwrap();
    }
    let bytes = w.finish().unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let (h, records) = read_all(&text).unwrap();
    assert_eq!(h, header);
    assert_eq!(h.get("note"), Some("two words"));
    assert_eq!(records, all_ops());
    // The writer's fast path must agree with the Display form line for line.
    let body: Vec<String> = all_ops().iter().map(|r| r.to_string()).collect();
    assert!(text.ends_with(&(body.join("\n") + "\n")), "{text}");
}

#[test]
fn documented_example_parses() {
    let text = "#starling-trace v1\n#meta source=higgs\n#meta fill=interactions\n# a comment\nedge 1 2\n\
                0 post 1 17\n15\tfollow  3 1\n20 read 3\r\n\n# another\n25 delete 1 17\n";
    let (h, records) = read_all(text).unwrap();
    assert_eq!(h.meta, vec![("source".into(), "higgs".into()), ("fill".into(), "interactions".into())]);
    assert_eq!(
        records,
        vec![
            Record::Edge { follower: 1, followee: 2 },
            ev(0, 1, Op::Post { key: 17 }),
            ev(15, 3, Op::Follow { target: 1 }),
            ev(20, 3, Op::Read),
            ev(25, 1, Op::Delete { key: 17 }),
        ]
    );
}

#[test]
fn op_names_match_file_names() {
    let names: Vec<&str> = all_ops()
        .iter()
        .filter_map(|r| match r {
            Record::Event(e) => Some(e.op.name()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["post", "follow", "block", "unblock", "read", "unfollow", "delete", "post"]);
}

/// Reads `body` under a valid header; returns the first error and its line.
fn body_error(body: &str) -> TraceError {
    match read_all(&format!("#starling-trace v1\n{body}")) {
        Ok(r) => panic!("accepted {body:?}: {r:?}"),
        Err(e) => e,
    }
}

#[test]
fn rejects_missing_header() {
    for text in ["", "edge 1 2\n", "# starling-trace v1\n", "#starling-tracev1\n"] {
        let e = read_all(text).unwrap_err();
        assert!(matches!(e, TraceError::MissingHeader { line: 1, .. }), "{text:?}: {e}");
    }
}

#[test]
fn rejects_unknown_version() {
    let e = read_all("#starling-trace v2\nedge 1 2\n").unwrap_err();
    assert!(matches!(e, TraceError::UnsupportedVersion { line: 1, .. }), "{e}");
    assert!(e.to_string().contains("v2"));
}

#[test]
fn rejects_unknown_op() {
    let e = body_error("edge 1 2\n5 like 1 2\n");
    assert!(matches!(e, TraceError::Parse { line: 3, .. }), "{e}");
    assert!(e.to_string().contains("unknown op `like`"), "{e}");
}

#[test]
fn rejects_missing_fields() {
    for (body, line) in [
        ("edge 1\n", 2),
        ("edge\n", 2),
        ("0 post 1\n", 2),
        ("0 follow 1\n", 2),
        ("0 read\n", 2),
        ("0\n", 2),
        ("0 read 1\n1 delete 1\n", 3),
    ] {
        let e = body_error(body);
        assert!(matches!(e, TraceError::Parse { .. }), "{body:?}: {e}");
        assert_eq!(e.line(), Some(line), "{body:?}: {e}");
        assert!(e.to_string().contains("missing"), "{body:?}: {e}");
    }
}

#[test]
fn rejects_extra_fields() {
    for body in ["edge 1 2 3\n", "0 read 1 2\n", "0 post 1 2 3\n", "0 unblock 1 2 x\n"] {
        let e = body_error(body);
        assert!(matches!(e, TraceError::Parse { line: 2, .. }), "{body:?}: {e}");
        assert!(e.to_string().contains("extra field"), "{body:?}: {e}");
    }
}

#[test]
fn rejects_non_numeric_ids() {
    for body in [
        "edge a 2\n",
        "edge 1 -2\n",
        "x post 1 2\n",
        "0 post one 2\n",
        "0 post 1 2.0\n",
        "0 follow 1 +2\n",
        "0 read 0x1\n",
        "0 read 18446744073709551616\n",
    ] {
        let e = body_error(body);
        assert!(matches!(e, TraceError::Parse { line: 2, .. }), "{body:?}: {e}");
    }
}

#[test]
fn rejects_decreasing_time() {
    let e = body_error("edge 1 2\n10 read 1\n10 read 2\n9 read 1\n");
    assert!(matches!(e, TraceError::TimeWentBack { line: 5, at_ms: 9, previous: 10 }), "{e}");
}

#[test]
fn rejects_edge_after_event() {
    let e = body_error("edge 1 2\n0 read 1\n# comment\nedge 2 1\n");
    assert!(matches!(e, TraceError::EdgeAfterEvent { line: 5 }), "{e}");
}

#[test]
fn rejects_misplaced_or_malformed_meta() {
    let e = body_error("#meta a=b\nedge 1 2\n#meta c=d\n");
    assert!(matches!(e, TraceError::MetaAfterRecord { line: 4 }), "{e}");
    let e = body_error("#meta novalue\n");
    assert!(matches!(e, TraceError::Parse { line: 2, .. }), "{e}");
    let e = body_error("#meta two words=x\n");
    assert!(matches!(e, TraceError::Parse { line: 2, .. }), "{e}");
}

#[test]
fn reader_stops_after_first_error() {
    let reader = TraceReader::new(Cursor::new(b"#starling-trace v1\n0 jump 1\n0 read 1\n".to_vec())).unwrap();
    let items: Vec<_> = reader.collect();
    assert_eq!(items.len(), 1);
    assert!(items[0].is_err());
}

#[test]
fn invalid_utf8_is_a_parse_error_with_line() {
    let e = read_all_bytes(b"#starling-trace v1\nedge 1 2\n0 read \xff\n");
    assert_eq!(e.line(), Some(3), "{e}");
}

fn read_all_bytes(bytes: &[u8]) -> TraceError {
    let reader = TraceReader::new(Cursor::new(bytes.to_vec())).unwrap();
    reader.collect::<Result<Vec<_>, _>>().unwrap_err()
}

#[test]
fn writer_enforces_reader_rules() {
    let mut w = TraceWriter::new(Vec::new(), &Header::default()).unwrap();
    w.meta("k", "v").unwrap();
    w.edge(1, 2).unwrap();
    assert!(matches!(w.meta("late", "x"), Err(TraceError::MetaAfterRecord { line: 4 })));
    w.event(&Event { at_ms: 10, user: 1, op: Op::Read }).unwrap();
    w.event(&Event { at_ms: 10, user: 2, op: Op::Read }).unwrap();
    let e = w.event(&Event { at_ms: 9, user: 1, op: Op::Read }).unwrap_err();
    assert!(matches!(e, TraceError::TimeWentBack { line: 6, at_ms: 9, previous: 10 }), "{e}");
    assert!(matches!(w.edge(3, 4), Err(TraceError::EdgeAfterEvent { line: 6 })));
    // The rejected records left no trace in the output.
    let text = String::from_utf8(w.finish().unwrap()).unwrap();
    assert_eq!(text, "#starling-trace v1\n#meta k=v\nedge 1 2\n10 read 1\n10 read 2\n");
}

#[test]
fn writer_rejects_meta_the_reader_would_misread() {
    let mut w = TraceWriter::new(Vec::new(), &Header::default()).unwrap();
    for (k, v) in [("", "x"), ("a b", "x"), ("a=b", "x"), ("k", "two\nlines"), ("k", " padded")] {
        assert!(matches!(w.meta(k, v), Err(TraceError::InvalidMeta { .. })), "{k:?}={v:?}");
    }
    assert!(TraceWriter::new(Vec::new(), &Header::default().with("bad key", "x")).is_err());
}

#[test]
fn writer_output_survives_many_buffer_flushes() {
    let mut w = TraceWriter::new(Vec::new(), &Header::default()).unwrap();
    for i in 0..50_000u64 {
        w.edge(i, i + 1).unwrap();
    }
    for i in 0..50_000u64 {
        w.event(&Event { at_ms: i / 3, user: i, op: Op::Post { key: i } }).unwrap();
    }
    let bytes = w.finish().unwrap();
    let (_, records) = read_all(std::str::from_utf8(&bytes).unwrap()).unwrap();
    assert_eq!(records.len(), 100_000);
    assert_eq!(records[49_999], Record::Edge { follower: 49_999, followee: 50_000 });
    assert_eq!(records[99_999], ev(16_666, 49_999, Op::Post { key: 49_999 }));
}

#[test]
fn open_reads_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.trace");
    {
        let f = std::fs::File::create(&path).unwrap();
        let mut w = TraceWriter::new(f, &Header::default().with("source", "file")).unwrap();
        w.edge(1, 2).unwrap();
        // Dropped without finish: the drop still flushes.
    }
    let reader = TraceReader::open(&path).unwrap();
    assert_eq!(reader.header().get("source"), Some("file"));
    assert_eq!(reader.collect::<Result<Vec<_>, _>>().unwrap(), vec![Record::Edge { follower: 1, followee: 2 }]);
}
