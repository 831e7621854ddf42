//! Prometheus metrics: counters with labels and request-latency histograms, rendered in the
//! text exposition format at `/metrics`.
//!
//! Hand-written because it is this small: a crate (metrics + an exporter) would bring a second
//! HTTP stack for what is a map of counters and a fixed set of buckets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Latency bucket upper bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The server's counters and histograms.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
    latencies: Mutex<BTreeMap<String, Histogram>>,
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Help text for each counter name.
fn help(name: &str) -> &'static str {
    match name {
        "idflow_logins_total" => "Login steps by flow, state and outcome.",
        "idflow_grants_total" => "Token endpoint requests by grant type and outcome.",
        _ => "A counter.",
    }
}

impl Metrics {
    /// Adds one to counter `name` with `labels` (name, value pairs).
    pub fn count(&self, name: &'static str, labels: &[(&str, &str)]) {
        let labels = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect::<Vec<_>>()
            .join(",");
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        *counters.entry((name, labels)).or_default() += 1;
    }

    /// Records how long a request to `route` took.
    pub fn observe(&self, route: &str, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let mut latencies = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
        let histogram = latencies.entry(route.to_string()).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                histogram.counts[i] += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = "";
        for ((name, labels), value) in counters.iter() {
            if *name != last {
                let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} counter", help(name));
                last = name;
            }
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
        drop(counters);
        let latencies = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
        if !latencies.is_empty() {
            let name = "idflow_http_request_duration_seconds";
            let _ = writeln!(
                out,
                "# HELP {name} HTTP request latency by route.\n# TYPE {name} histogram"
            );
        }
        for (route, histogram) in latencies.iter() {
            let route = escape(route);
            for (bound, count) in BUCKETS.iter().zip(histogram.counts) {
                let _ = writeln!(
                    out,
                    "idflow_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "idflow_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\nidflow_http_request_duration_seconds_sum{{route=\"{route}\"}} {}\nidflow_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                histogram.count, histogram.sum, histogram.count
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_in_the_exposition_format() {
        let metrics = Metrics::default();
        metrics.count(
            "idflow_grants_total",
            &[("grant", "refresh_token"), ("outcome", "ok")],
        );
        metrics.count(
            "idflow_grants_total",
            &[("grant", "refresh_token"), ("outcome", "ok")],
        );
        metrics.count(
            "idflow_logins_total",
            &[("flow", "a\"b"), ("outcome", "complete")],
        );
        metrics.observe("/token", Duration::from_millis(3));
        let text = metrics.render();
        assert!(text.contains("idflow_grants_total{grant=\"refresh_token\",outcome=\"ok\"} 2"));
        assert!(text.contains("flow=\"a\\\"b\""), "{text}");
        assert!(text.contains("route=\"/token\",le=\"0.0025\"} 0"));
        assert!(text.contains("route=\"/token\",le=\"0.005\"} 1"));
        assert!(text.contains("# TYPE idflow_logins_total counter"));
    }
}
