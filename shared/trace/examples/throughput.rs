//! Measures the generator and the reader on the default synthetic trace (10k users, 60 s).
//!
//! `cargo run --release -p starling-trace --example throughput`

use std::io::Cursor;
use std::time::Instant;

use starling_trace::synth::{self, SynthConfig};
use starling_trace::{Header, TraceReader, TraceWriter};

fn main() {
    let start = Instant::now();
    let mut w = TraceWriter::new(Vec::new(), &Header::default()).expect("header");
    let s = synth::generate(&SynthConfig::default(), &mut w, &|_| {}).expect("generate");
    let bytes = w.finish().expect("finish");
    let gen_s = start.elapsed().as_secs_f64();
    let lines = s.edges + s.events;
    println!(
        "generate: {} edges, {} events, {:.1} MB in {gen_s:.2} s ({:.2} M lines/s)",
        s.edges,
        s.events,
        bytes.len() as f64 / 1e6,
        lines as f64 / gen_s / 1e6
    );
    let start = Instant::now();
    let mut n = 0u64;
    for r in TraceReader::new(Cursor::new(&bytes)).expect("header") {
        r.expect("record");
        n += 1;
    }
    let read_s = start.elapsed().as_secs_f64();
    println!("read: {n} records in {read_s:.2} s ({:.2} M lines/s)", n as f64 / read_s / 1e6);
}
