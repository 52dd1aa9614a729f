//! Starling's metrics, collected with the `prometheus` crate and rendered in Prometheus's
//! text format at each process's `/metrics`.
//!
//! Every name is in [`names`]. Each process owns one [`Metrics`]: a registry with the
//! process collector (CPU seconds to the clock tick, resident memory, open file
//! descriptors, on Linux) and the HTTP metrics of [`Red`], the middleware every app wraps itself in: requests by route
//! template, method and status, and their latency as a histogram, labelled with the
//! service (or `starling` for all four in one process).
//!
//! Everything else a process exports is registered in the same registry by whoever keeps
//! it ([`Metrics::register`]): counters, gauges and histograms of the `prometheus` crate,
//! re-exported here so that crates needing them depend on this crate alone, and
//! [`Pulled`] metrics, read at scrape time from state kept elsewhere.

mod http;
pub mod names;
#[cfg(target_os = "linux")]
mod process;
mod pulled;

use prometheus::core::Collector;
use prometheus::{Encoder, Registry, TextEncoder};

pub use http::{HttpMetrics, Red};
pub use prometheus;
pub use pulled::{Pulled, Samples};

/// One process's registry.
pub struct Metrics {
    registry: Registry,
    pub http: std::sync::Arc<HttpMetrics>,
}

impl Metrics {
    /// The metrics of a process serving as `service` (a role's name, or `starling`).
    pub fn new(service: &str) -> Metrics {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        {
            // Fails only if registered twice in this registry, which it is not.
            let _ = registry.register(Box::new(process::ProcessMetrics::for_self()));
        }
        let http = std::sync::Arc::new(HttpMetrics::new(service));
        http.register(&registry);
        Metrics { registry, http }
    }

    /// Adds `collector` to what [`Metrics::render`] renders. Fails if a metric of the same
    /// name and constant labels is registered already (a wiring mistake, worth failing
    /// the start for rather than serving half the metrics).
    pub fn register(&self, collector: impl Collector + 'static) -> prometheus::Result<()> {
        self.registry.register(Box::new(collector))
    }

    /// Everything registered, in Prometheus's text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for the text format (no I/O).
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_process_and_http_metrics() {
        let m = Metrics::new("timeline-service");
        m.http.observe("/api/v1/timelines/home", "GET", 200, 0.004);
        m.http.observe("/api/v1/timelines/home", "GET", 200, 0.02);
        let text = m.render();
        let requests = format!(
            "{}{{method=\"GET\",route=\"/api/v1/timelines/home\",service=\"timeline-service\",status=\"200\"}} 2",
            names::HTTP_REQUESTS
        );
        assert!(text.contains(&requests), "{text}");
        let under_5ms = format!(
            "{}_bucket{{method=\"GET\",route=\"/api/v1/timelines/home\",service=\"timeline-service\",le=\"0.005\"}} 1",
            names::HTTP_REQUEST_DURATION
        );
        assert!(text.contains(&under_5ms), "{text}");
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }
}
