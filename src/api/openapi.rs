//! The OpenAPI 3.1 document of the API, generated from the handlers'
//! annotations and their types: served at `GET /v1/openapi.json`, printed
//! by `steadfast openapi`, committed as `schemas/openapi.json` (a test
//! fails when they differ).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "steadfast",
        description = "The HTTP API of the steadfast delivery engine: submit jobs, inspect \
                       them, retry the dead ones, pause flows, and see the policy, channels \
                       and nodes in force. With tokens configured (steadfast.toml \
                       [[tokens]]), every /v1 endpoint takes `Authorization: Bearer TOKEN`.",
        license(name = "Apache-2.0"),
    ),
    paths(
        super::healthz,
        super::readyz,
        super::metrics,
        super::openapi_json,
        super::policies,
        super::channels::list,
        super::channels::show,
        super::channels::insights,
        super::jobs::submit,
        super::jobs::submit_batch,
        super::jobs::list,
        super::jobs::show,
        super::jobs::edit,
        super::jobs::retry,
        super::jobs::cancel,
        super::dlq::retry,
        super::dlq::operation,
        super::dlq::operations,
        super::nodes::list,
        super::nodes::health,
        super::flows::list,
        super::flows::pause,
        super::flows::resume,
    ),
    components(schemas(
        super::error::ErrorBody,
        super::jobs::StateFilter,
        super::jobs::LimitFilter,
        super::jobs::StatusFilter
    )),
    modifiers(&BearerTokens),
    tags(
        (name = "jobs", description = "Submit jobs and look at them"),
        (name = "dead-letter queue", description = "Retry dead jobs, one or in bulk"),
        (name = "flows", description = "Flows with their jobs by state; pause and resume"),
        (name = "engine", description = "Health, metrics, the policy, channels and nodes"),
    ),
)]
pub struct ApiDoc;

/// The bearer tokens of `[[tokens]]`.
struct BearerTokens;

impl Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as pretty JSON with a final newline, as committed.
pub fn document() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
    text.push('\n');
    text
}
