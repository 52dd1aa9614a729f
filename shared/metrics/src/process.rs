//! The process's own metrics (CPU, memory, file descriptors, threads), from the
//! prometheus crate's process collector, with one change: CPU time to the clock tick.
//! That collector counts whole seconds (an integer counter), too coarse to divide a
//! replay's or a bench's CPU time by its events.

use prometheus::core::{Collector, Desc};
use prometheus::process_collector::ProcessCollector;
use prometheus::proto::{Counter, MetricFamily};

const CPU: &str = "process_cpu_seconds_total";

pub struct ProcessMetrics {
    inner: ProcessCollector,
}

impl ProcessMetrics {
    pub fn for_self() -> ProcessMetrics {
        ProcessMetrics { inner: ProcessCollector::for_self() }
    }
}

impl Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.inner.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = self.inner.collect();
        if let Some(seconds) = cpu_seconds() {
            for family in families.iter_mut().filter(|f| f.name() == CPU) {
                for metric in family.mut_metric() {
                    let mut counter = Counter::default();
                    counter.set_value(seconds);
                    metric.set_counter(counter);
                }
            }
        }
        families
    }
}

/// User and system CPU time of this process so far, in seconds.
fn cpu_seconds() -> Option<f64> {
    let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
    Some((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_has_fractions_of_a_second() {
        // Half a second of work or so: the crate's own counter would still say 0.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let families = ProcessMetrics::for_self().collect();
        let cpu = families.iter().find(|f| f.name() == CPU).expect("a CPU family");
        let seconds = cpu.get_metric()[0].get_counter().get_value();
        assert!(seconds > 0.0 && seconds.fract() != 0.0, "{seconds}");
        assert!(families.iter().any(|f| f.name() == "process_resident_memory_bytes"));
    }
}
