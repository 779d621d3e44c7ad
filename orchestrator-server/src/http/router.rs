//! The route table: every path pattern of the API, once, and the methods each serves.
//! `App::dispatch` holds the one `match` on the route that calls a handler.

use http::Method;
use orchestrator_core::Action;
use orchestrator_core::api::paths;

/// A route of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/`
    Root,
    /// `/health`
    Health,
    /// `/metrics`
    Metrics,
    /// `/openapi.json`
    OpenApi,
    /// `/docs` (the Swagger UI page itself)
    Docs,
    /// `/docs/` and `/docs/{*file}`
    DocsFile,
    /// `/redoc`
    Redoc,
    /// `/workflow/start`
    Start,
    /// `/workflow/{feature_id}`
    Workflow,
    /// `/workflow/{feature_id}/advance`
    Advance,
    /// `/workflow/{feature_id}/history`
    History,
    /// `/workflow/{feature_id}/consultations`
    Consultations,
    /// `/workflow/{feature_id}/consultations/{consultation_id}/respond`
    Respond,
    /// `/workflows`
    Workflows,
    /// `/workflows/summary`
    Summary,
    /// `/events`
    Events,
    /// `/events/stream`
    EventStream,
    /// `/webhooks`
    Webhooks,
    /// `/webhooks/{webhook_id}`
    Webhook,
    /// `/webhooks/{webhook_id}/deliveries`
    Deliveries,
    /// `/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver`
    Redeliver,
    /// `/board`: the reviewer board's overview
    Board,
    /// `/board/feature/{feature_id}`
    BoardFeature,
    /// `/board/session`: sign-in
    BoardSession,
    /// `/board/sign-out`
    BoardSignOut,
    /// `/board/assets/{file}`
    BoardAsset,
}

impl Route {
    /// The right a POST to this route needs whatever its body says. It is checked before the
    /// request's idempotency key is looked at, so a kept answer goes back only to a caller who
    /// may still make the request: a webhook's, which holds its signing secret, above all.
    /// (An advance's right depends on its trigger, in the body: it is checked once the body
    /// is read, still before the key, by `handlers::workflows::may_advance`.)
    pub fn post_action(self) -> Option<Action> {
        match self {
            Route::Start => Some(Action::StartWorkflow),
            Route::Consultations => Some(Action::Consult),
            Route::Respond => Some(Action::Respond),
            Route::Webhooks | Route::Redeliver => Some(Action::ManageWebhooks),
            _ => None,
        }
    }

    /// Whether a POST to this route carries a JSON body (every one but a redelivery's, which
    /// has none of its own, and the board's forms).
    pub fn reads_json(self) -> bool {
        matches!(
            self,
            Route::Start | Route::Advance | Route::Consultations | Route::Respond | Route::Webhooks
        )
    }

    /// Every route with its pattern; the pattern is also the metrics label.
    pub(crate) const TABLE: [(&'static str, Route); 27] = [
        (paths::ROOT, Route::Root),
        (paths::HEALTH, Route::Health),
        (paths::METRICS, Route::Metrics),
        (paths::OPENAPI, Route::OpenApi),
        (paths::DOCS, Route::Docs),
        ("/docs/", Route::DocsFile),
        ("/docs/{*file}", Route::DocsFile),
        (paths::REDOC, Route::Redoc),
        (paths::WORKFLOW_START, Route::Start),
        (paths::WORKFLOW, Route::Workflow),
        (paths::ADVANCE, Route::Advance),
        (paths::HISTORY, Route::History),
        (paths::CONSULTATIONS, Route::Consultations),
        (paths::RESPOND, Route::Respond),
        (paths::WORKFLOWS, Route::Workflows),
        (paths::SUMMARY, Route::Summary),
        (paths::EVENTS, Route::Events),
        (paths::EVENT_STREAM, Route::EventStream),
        (paths::WEBHOOKS, Route::Webhooks),
        (paths::WEBHOOK, Route::Webhook),
        (paths::DELIVERIES, Route::Deliveries),
        (paths::REDELIVER, Route::Redeliver),
        ("/board", Route::Board),
        ("/board/feature/{feature_id}", Route::BoardFeature),
        ("/board/session", Route::BoardSession),
        ("/board/sign-out", Route::BoardSignOut),
        ("/board/assets/{file}", Route::BoardAsset),
    ];

    /// The methods the route serves.
    pub fn methods(self) -> &'static [Method] {
        match self {
            // `GET /workflow/start` is the workflow of a feature named `start`: the fixed
            // route wins the match over `/workflow/{feature_id}`.
            Route::Start => &[Method::GET, Method::HEAD, Method::POST],
            Route::Advance
            | Route::Respond
            | Route::Redeliver
            | Route::BoardSession
            | Route::BoardSignOut => &[Method::POST],
            Route::Consultations | Route::Webhooks => &[Method::GET, Method::HEAD, Method::POST],
            Route::Webhook => &[Method::GET, Method::HEAD, Method::DELETE],
            Route::EventStream => &[Method::GET],
            _ => &[Method::GET, Method::HEAD],
        }
    }

    /// Whether the route is open even when a token is configured.
    pub fn is_public(self) -> bool {
        matches!(
            self,
            Route::Health
                | Route::Metrics
                | Route::OpenApi
                | Route::Docs
                | Route::DocsFile
                | Route::Redoc
        )
    }

    /// Whether the route is the reviewer board's: its pages check their own session cookie
    /// and answer in HTML.
    pub fn is_board(self) -> bool {
        matches!(
            self,
            Route::Board
                | Route::BoardFeature
                | Route::BoardSession
                | Route::BoardSignOut
                | Route::BoardAsset
        )
    }

    /// The route whose pattern is `pattern` exactly (the OpenAPI document's paths are these
    /// patterns).
    pub fn with_pattern(pattern: &str) -> Option<Route> {
        Route::TABLE
            .iter()
            .find(|(candidate, _)| *candidate == pattern)
            .map(|(_, route)| *route)
    }

    /// The route's pattern, for metrics and logs.
    pub fn pattern(self) -> &'static str {
        Route::TABLE
            .iter()
            .find(|(_, route)| *route == self)
            .map_or("unknown", |(pattern, _)| pattern)
    }
}

/// Builds the matcher over `Route::TABLE`.
pub fn build() -> matchit::Router<Route> {
    let mut router = matchit::Router::new();
    for (pattern, route) in Route::TABLE {
        // The patterns are constants; a clash would be a bug caught by every test.
        if let Err(e) = router.insert(pattern, route) {
            panic!("route table is inconsistent at {pattern}: {e}");
        }
    }
    router
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_resolves_to_itself_and_static_segments_win() {
        let router = build();
        let at = |path: &str| router.at(path).map(|m| *m.value).ok();
        assert_eq!(at("/workflow/start"), Some(Route::Start));
        assert_eq!(at("/workflow/x-1"), Some(Route::Workflow));
        assert_eq!(at("/workflow/x-1/advance"), Some(Route::Advance));
        assert_eq!(at("/workflows/summary"), Some(Route::Summary));
        assert_eq!(
            at("/workflow/x-1/consultations"),
            Some(Route::Consultations)
        );
        assert_eq!(at("/webhooks/wh_1"), Some(Route::Webhook));
        assert_eq!(
            at("/webhooks/wh_1/deliveries/msg_1/redeliver"),
            Some(Route::Redeliver)
        );
        assert_eq!(at("/docs/"), Some(Route::DocsFile));
        assert_eq!(at("/docs/swagger-ui.css"), Some(Route::DocsFile));
        assert_eq!(at("/board"), Some(Route::Board));
        assert_eq!(at("/board/feature/x-1"), Some(Route::BoardFeature));
        assert_eq!(at("/board/assets/board.js"), Some(Route::BoardAsset));
        assert_eq!(at("/nope"), None);
    }
}
