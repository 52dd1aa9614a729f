//! [`Pulled`]: a metric whose value lives elsewhere and is read when scraped.
//!
//! Some values are kept where they are cheapest to keep and are needed there anyway: the
//! records a publisher appended (an atomic the tests also read), each consumer's last lag
//! reading, the size of the in-memory cache. Copying them into a counter or gauge on every
//! change would cost the hot path for nothing; reading them at scrape time costs one
//! closure call per scrape. This is the prometheus crate's own `PullingGauge`, generalised
//! to counters and to labelled series.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// The series a [`Pulled`] reads: label values (in the order of its label names) and a value.
pub type Samples = Vec<(Vec<String>, f64)>;

type Read = Box<dyn Fn() -> Samples + Send + Sync>;

pub struct Pulled {
    desc: Desc,
    kind: MetricType,
    read: Read,
}

impl Pulled {
    /// A counter without labels, read by `read` (which must never decrease but for a
    /// process restart, as any counter).
    pub fn counter(name: &str, help: &str, read: impl Fn() -> f64 + Send + Sync + 'static) -> Pulled {
        Pulled::new(name, help, MetricType::COUNTER, &[], Box::new(move || vec![(Vec::new(), read())]))
    }

    /// A gauge without labels, read by `read`.
    pub fn gauge(name: &str, help: &str, read: impl Fn() -> f64 + Send + Sync + 'static) -> Pulled {
        Pulled::new(name, help, MetricType::GAUGE, &[], Box::new(move || vec![(Vec::new(), read())]))
    }

    /// Gauges labelled with `labels`, one series per sample `read` returns. A sample whose
    /// label values do not match `labels` in number is left out; each label set should be
    /// returned once (Prometheus keeps one of duplicates, whichever comes last).
    pub fn gauges(
        name: &str,
        help: &str,
        labels: &[&str],
        read: impl Fn() -> Samples + Send + Sync + 'static,
    ) -> Pulled {
        Pulled::new(name, help, MetricType::GAUGE, labels, Box::new(read))
    }

    /// Panics if `name` or `labels` are not valid Prometheus names: they are constants
    /// (`names.rs`), so that is a bug found by the first test that builds one.
    fn new(name: &str, help: &str, kind: MetricType, labels: &[&str], read: Read) -> Pulled {
        let labels = labels.iter().map(|l| l.to_string()).collect();
        let desc =
            Desc::new(name.to_owned(), help.to_owned(), labels, Default::default()).expect("a valid metric definition");
        Pulled { desc, kind, read }
    }
}

impl Collector for Pulled {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let names = &self.desc.variable_labels;
        let metrics: Vec<Metric> = (self.read)()
            .into_iter()
            .filter(|(values, _)| values.len() == names.len())
            .map(|(values, value)| {
                let mut pairs: Vec<LabelPair> = names
                    .iter()
                    .zip(values)
                    .map(|(name, value)| {
                        let mut pair = LabelPair::default();
                        pair.set_name(name.clone());
                        pair.set_value(value);
                        pair
                    })
                    .collect();
                // As the crate's own vectors write them: sorted by label name.
                pairs.sort_by(|a, b| a.name().cmp(b.name()));
                let mut metric = Metric::from_label(pairs);
                if self.kind == MetricType::COUNTER {
                    let mut counter = Counter::default();
                    counter.set_value(value);
                    metric.set_counter(counter);
                } else {
                    let mut gauge = Gauge::default();
                    gauge.set_value(value);
                    metric.set_gauge(gauge);
                }
                metric
            })
            .collect();
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(self.kind);
        family.set_metric(metrics);
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::Metrics;

    #[test]
    fn reads_at_each_scrape_with_labels_sorted() {
        let m = Metrics::new("test");
        let n = Arc::new(AtomicU64::new(3));
        let read = n.clone();
        m.register(Pulled::counter("test_things_total", "Things.", move || read.load(Ordering::Relaxed) as f64))
            .unwrap();
        m.register(Pulled::gauges("test_depth", "Depth.", &["service", "partition"], || {
            vec![
                (vec!["b".into(), "1".into()], 2.0),
                (vec!["only one value".into()], 9.0),
                (vec!["a".into(), "0".into()], 5.0),
            ]
        }))
        .unwrap();
        assert!(m.render().contains("# TYPE test_things_total counter\ntest_things_total 3\n"));
        n.store(4, Ordering::Relaxed);
        let text = m.render();
        assert!(text.contains("test_things_total 4\n"), "{text}");
        assert!(
            text.contains("# TYPE test_depth gauge\ntest_depth{partition=\"0\",service=\"a\"} 5\ntest_depth{partition=\"1\",service=\"b\"} 2\n"),
            "{text}"
        );
        assert!(!text.contains("only one value"), "a sample with the wrong labels is left out:\n{text}");
    }

    #[test]
    fn nothing_to_read_renders_nothing() {
        let m = Metrics::new("test");
        m.register(Pulled::gauges("test_lag", "Lag.", &["topic"], Vec::new)).unwrap();
        assert!(!m.render().contains("test_lag"));
    }
}
