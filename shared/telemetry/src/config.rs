//! What the environment asks of telemetry, validated at start: a variable Starling
//! cannot honour is an error that names it, not a silent lack of traces.
//!
//! Traces are exported when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, or `OTEL_TRACES_EXPORTER=otlp` is (then to the
//! SDK's default, `http://localhost:4318`); `OTEL_TRACES_EXPORTER=none` or
//! `OTEL_SDK_DISABLED=true` turn them off whatever else is set. Without any of these,
//! nothing is exported: a process must not spend time on spans nobody collects.

use anyhow::bail;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Traces {
    Off,
    /// OTLP over HTTP/protobuf; the exporter reads its endpoint from the environment.
    Otlp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelemetryConfig {
    pub logs: LogFormat,
    pub traces: Traces,
}

impl TelemetryConfig {
    /// Reads the variables through `var` (the process environment, or a test's map).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<TelemetryConfig> {
        let logs = match var("STARLING_LOG_FORMAT").as_deref() {
            None | Some("") | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => bail!("STARLING_LOG_FORMAT={other:?}: expected \"text\" or \"json\""),
        };
        Ok(TelemetryConfig { logs, traces: traces(&var)? })
    }
}

fn traces(var: &impl Fn(&str) -> Option<String>) -> anyhow::Result<Traces> {
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(Traces::Off);
    }
    let asked = match set("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
        Some("none") => return Ok(Traces::Off),
        Some("otlp") => true,
        None => false,
        Some(other) => {
            bail!(
                "OTEL_TRACES_EXPORTER={other:?}: Starling exports traces over OTLP (\"otlp\") or not at all (\"none\")"
            )
        }
    };
    let endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .map(|v| ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", v))
        .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT").map(|v| ("OTEL_EXPORTER_OTLP_ENDPOINT", v)));
    if !asked && endpoint.is_none() {
        return Ok(Traces::Off);
    }
    if let Some((name, url)) = &endpoint {
        let url = url.trim();
        if url.starts_with("https://") {
            bail!(
                "{name}={url:?}: this build sends OTLP over plain HTTP only (no TLS); \
                 send to a collector on the node or in the pod (http://...)"
            );
        }
        if !url.starts_with("http://") {
            bail!("{name}={url:?}: expected an http:// URL, e.g. http://127.0.0.1:4318");
        }
    }
    for name in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
        if let Some(protocol) = set(name) {
            if protocol.trim() != "http/protobuf" {
                bail!("{name}={protocol:?}: this build speaks OTLP as \"http/protobuf\" only");
            }
            break;
        }
    }
    Ok(Traces::Otlp)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> anyhow::Result<TelemetryConfig> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        TelemetryConfig::from_env(|name| vars.get(name).cloned())
    }

    fn traces_of(vars: &[(&str, &str)]) -> Traces {
        config(vars).unwrap().traces
    }

    #[test]
    fn off_unless_asked_for() {
        assert_eq!(config(&[]).unwrap(), TelemetryConfig { logs: LogFormat::Text, traces: Traces::Off });
        assert_eq!(traces_of(&[("OTEL_SERVICE_NAME", "x"), ("OTEL_TRACES_SAMPLER", "always_on")]), Traces::Off);
        assert_eq!(traces_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]), Traces::Off, "empty is unset");
    }

    #[test]
    fn an_endpoint_or_the_exporter_turns_export_on_and_none_or_disabled_turns_it_off() {
        assert_eq!(traces_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")]), Traces::Otlp);
        assert_eq!(traces_of(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces")]), Traces::Otlp);
        assert_eq!(traces_of(&[("OTEL_TRACES_EXPORTER", "otlp")]), Traces::Otlp);
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert_eq!(traces_of(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]), Traces::Off);
        assert_eq!(traces_of(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")]), Traces::Off);
        assert_eq!(traces_of(&[endpoint, ("OTEL_SDK_DISABLED", "false")]), Traces::Otlp);
    }

    #[test]
    fn what_cannot_be_honoured_is_an_error_naming_the_variable() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        for (vars, names) in [
            (vec![("OTEL_TRACES_EXPORTER", "jaeger")], "OTEL_TRACES_EXPORTER"),
            (vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318")], "OTEL_EXPORTER_OTLP_ENDPOINT"),
            (vec![("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "c:4318")], "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            (vec![endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")], "OTEL_EXPORTER_OTLP_PROTOCOL"),
            (vec![("STARLING_LOG_FORMAT", "yaml")], "STARLING_LOG_FORMAT"),
        ] {
            let e = config(&vars).expect_err(names).to_string();
            assert!(e.starts_with(names), "{e}");
        }
        // The signal's own protocol wins over the general one, as the SDK has it.
        let vars = [
            endpoint,
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ];
        assert_eq!(traces_of(&vars), Traces::Otlp);
        assert_eq!(config(&[("STARLING_LOG_FORMAT", "json")]).unwrap().logs, LogFormat::Json);
    }
}
