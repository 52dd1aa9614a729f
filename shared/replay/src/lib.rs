//! Trace replay: drives a running Starling (standalone or distributed) with a trace in the
//! `starling-trace` format, measures it from the client side and from the services' own
//! counters, checks every home timeline against the oracle, and writes a report.
//!
//! - [`engine`]: the phases (register users, load the graph, play events open-loop, check).
//! - [`client`]: the deployment's HTTP API and metrics.
//! - [`record`]: latency histograms, the per-second series, delivery-lag samples.
//! - [`report`]: `report.json`, `report.md` and the plots ([`svg`]).
//! - [`study`]: one trace under several fan-out configurations, side by side.
//! - [`cli`]: `starling trace replay` and `starling trace study`.

pub mod cli;
pub mod client;
pub mod engine;
pub mod record;
pub mod report;
pub mod study;
pub mod svg;

pub use client::{Client, Targets};
pub use engine::{Config, Pace, replay};
pub use report::Report;
