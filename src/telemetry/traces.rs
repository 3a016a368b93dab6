//! Traces: with `[telemetry] otlp_endpoint`, a span per attempt, exported
//! over OTLP/HTTP (JSON) in batches. The span is the attempt's: started
//! before the request (so that the partner gets its `traceparent`), ended
//! with the attempt's flow, step, channel, number, outcome, rule and policy
//! version. All attempts of a job are one trace: the `traceparent` given at
//! submission (kept in the step log) is their parent; without one, the
//! trace id is the job's id (a UUID is 16 bytes, as a trace id) under a
//! parent that is never exported. Without the setting no tracer exists.

use std::time::Duration;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{BatchConfigBuilder, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

/// The exporter and the tracer of this process.
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Traces(OTLP/HTTP)")
    }
}

/// What an attempt's span records besides its ids.
pub struct AttemptFields<'a> {
    pub job_id: &'a str,
    pub flow: &'a str,
    pub step: &'a str,
    pub channel: &'a str,
    pub attempt: u32,
    pub policy_version: &'a str,
}

/// An attempt's span, from before its request until its verdict.
pub struct AttemptSpan {
    span: opentelemetry_sdk::trace::Span,
    /// The W3C header for the partner: this span as the parent.
    pub traceparent: String,
}

impl Traces {
    /// The tracer exporting to `endpoint` (the collector's base URL, as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: `/v1/traces` is added; a URL already
    /// ending in it is taken as is). `export_every`: how long spans wait
    /// to be sent in a batch.
    pub fn start(endpoint: &str, export_every: Duration) -> Result<Traces, String> {
        let endpoint = endpoint.trim().trim_end_matches('/');
        let url = if endpoint.ends_with("/v1/traces") {
            endpoint.to_string()
        } else {
            format!("{endpoint}/v1/traces")
        };
        crate::install_tls_provider();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(
                crate::channels::http_client_builder()
                    .build()
                    .map_err(|e| format!("cannot build the OTLP HTTP client: {e}"))?,
            )
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(url)
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("otlp_endpoint: {e}"))?;
        // On the engine's tokio runtime: the exporter's client is async
        // reqwest, which needs it.
        let processor = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(export_every)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(
                Resource::builder_empty()
                    .with_service_name("steadfast")
                    .with_attributes([KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))])
                    .build(),
            )
            .build();
        let tracer = provider.tracer("steadfast");
        Ok(Traces { provider, tracer })
    }

    /// Starts an attempt's span under the job's trace.
    pub fn attempt(&self, fields: &AttemptFields<'_>, submitted: Option<&str>) -> AttemptSpan {
        let parent = submitted
            .and_then(parse_traceparent)
            .unwrap_or_else(|| job_root(fields.job_id));
        let cx = Context::new().with_remote_span_context(parent);
        let span = self
            .tracer
            .span_builder(format!("attempt {}/{}", fields.flow, fields.step))
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("steadfast.job_id", fields.job_id.to_string()),
                KeyValue::new("steadfast.flow", fields.flow.to_string()),
                KeyValue::new("steadfast.step", fields.step.to_string()),
                KeyValue::new("steadfast.channel", fields.channel.to_string()),
                KeyValue::new("steadfast.attempt", i64::from(fields.attempt)),
                KeyValue::new(
                    "steadfast.policy_version",
                    fields.policy_version.to_string(),
                ),
            ])
            .start_with_context(&self.tracer, &cx);
        let context = span.span_context();
        let traceparent = format!(
            "00-{:032x}-{:016x}-{:02x}",
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8()
        );
        AttemptSpan { span, traceparent }
    }

    /// Sends the spans still waiting (on shutdown).
    pub fn shutdown(&self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "exporting the last spans failed");
        }
    }
}

impl AttemptSpan {
    /// Ends the span with the attempt's verdict.
    pub fn finish(mut self, outcome: &str, rule: &str, status: Option<u16>, error: Option<&str>) {
        self.span
            .set_attribute(KeyValue::new("steadfast.outcome", outcome.to_string()));
        self.span
            .set_attribute(KeyValue::new("steadfast.rule", rule.to_string()));
        if let Some(status) = status {
            self.span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        if let Some(error) = error {
            self.span
                .set_attribute(KeyValue::new("error.type", error.to_string()));
        }
        if outcome != "success" {
            self.span.set_status(Status::error(outcome.to_string()));
        }
        self.span.end();
    }
}

/// A W3C `traceparent` (version 00, ids not zero), as the remote parent.
pub fn parse_traceparent(text: &str) -> Option<SpanContext> {
    let mut parts = text.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || version != "00"
        || trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    let lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !(lower_hex(trace) && lower_hex(span) && lower_hex(flags)) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace)
        .ok()
        .filter(|id| *id != TraceId::INVALID)?;
    let span_id = SpanId::from_hex(span)
        .ok()
        .filter(|id| *id != SpanId::INVALID)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    ))
}

/// The parent of a job's attempts when the submission gave none: the
/// job's id as the trace id, and a span id of its own bytes.
fn job_root(job_id: &str) -> SpanContext {
    let bytes = uuid::Uuid::parse_str(job_id)
        .map(|id| *id.as_bytes())
        .unwrap_or_else(|_| {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(job_id.as_bytes());
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            bytes
        });
    let mut span = [0u8; 8];
    span.copy_from_slice(&bytes[8..]);
    // Never zero: a UUID v7 has version and variant bits set.
    span[0] |= 1;
    SpanContext::new(
        TraceId::from_bytes(bytes),
        SpanId::from_bytes(span),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_read_as_w3c_writes_them() {
        let parent =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            format!("{:032x}", parent.trace_id()),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(format!("{:016x}", parent.span_id()), "00f067aa0ba902b7");
        assert!(parent.is_sampled() && parent.is_remote());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_jobs_attempts_share_a_trace_named_by_its_id() {
        let id = "01938f3e-7c1a-7b4e-9d2f-123456789abc";
        let root = job_root(id);
        assert_eq!(
            format!("{:032x}", root.trace_id()),
            "01938f3e7c1a7b4e9d2f123456789abc"
        );
        assert_eq!(root.span_id(), job_root(id).span_id());
        assert!(root.is_valid());
        assert!(job_root("not a uuid").is_valid());
    }
}
