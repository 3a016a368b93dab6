//! The OpenAPI 3.1 document of the API, generated from the handlers'
//! annotations and their types: served at `GET /v1/openapi.json`, printed
//! by `steadfast openapi`, committed as `schemas/openapi.json` (a test
//! fails when they differ).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// Every error body: what went wrong and, where there is one, the fix.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: String,
}

/// The `state` filter of a listing: a state, or empty for every state (as
/// a form sends a filter left blank).
pub struct StateFilter;

impl utoipa::PartialSchema for StateFilter {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let names = std::iter::once("").chain(
            crate::store::JobState::ALL
                .iter()
                .map(|state| state.as_str()),
        );
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(names))
            .into()
    }
}

impl utoipa::ToSchema for StateFilter {}

/// A whole number in `min..=max`, or empty (no filter).
fn blank_or_integer(min: u32, max: u32) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(min))
                .maximum(Some(max)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(0)),
        )
        .into()
}

/// `limit`: 1 to 1000, or empty for the default (100).
pub struct LimitFilter;

impl utoipa::PartialSchema for LimitFilter {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        blank_or_integer(1, 1000)
    }
}

impl utoipa::ToSchema for LimitFilter {}

/// `status`: an HTTP status, or empty for any.
pub struct StatusFilter;

impl utoipa::PartialSchema for StatusFilter {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        blank_or_integer(0, u32::from(u16::MAX))
    }
}

impl utoipa::ToSchema for StatusFilter {}

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
        super::jobs::submit,
        super::jobs::submit_batch,
        super::jobs::list,
        super::jobs::show,
        super::jobs::edit,
        super::jobs::retry,
        super::jobs::cancel,
        super::dlq::retry,
        super::dlq::operation,
        super::nodes::list,
        super::flows::list,
        super::flows::pause,
        super::flows::resume,
    ),
    components(schemas(ErrorBody)),
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
