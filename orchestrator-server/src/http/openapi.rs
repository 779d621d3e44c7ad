//! The OpenAPI document, generated from the handlers' annotations and core's wire types.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::handlers::{consultations, system, workflows};

/// The API's OpenAPI 3 document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Orchestrator",
        description = "Carries each feature through IDLE → PHASE_1 → GATE_1 → PHASE_2 → DONE. \
                       Every error answers `{\"error\": {\"code\", \"message\", \"details\"?}}`.",
    ),
    paths(
        workflows::create_workflow,
        workflows::get_workflow,
        workflows::advance_workflow,
        workflows::get_history,
        workflows::list_workflows,
        workflows::get_summary,
        consultations::create_consultation,
        consultations::list_consultations,
        system::get_service_info,
        system::get_health,
        system::get_metrics,
    ),
    components(schemas(orchestrator_core::api::ErrorCode)),
    modifiers(&BearerAuth),
    tags(
        (name = "workflows", description = "feature workflows and their history"),
        (name = "consultations", description = "questions to the Agent Hub's experts, kept per workflow"),
        (name = "service", description = "service info, health, metrics"),
    ),
)]
pub struct ApiDoc;

/// Declares the bearer scheme used when `ORCHESTRATOR_API_TOKEN` is set.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}
