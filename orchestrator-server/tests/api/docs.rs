//! The OpenAPI document and the docs pages, served from memory with no CDN.

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_describes_every_endpoint() {
    let app = spawn_app().await;
    let doc: serde_json::Value = reqwest::get(app.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/workflow/start",
        "/workflow/{feature_id}",
        "/workflow/{feature_id}/advance",
        "/workflow/{feature_id}/history",
        "/workflow/{feature_id}/consultations",
        "/workflows",
        "/workflows/summary",
        "/health",
        "/metrics",
        "/",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    for schema in [
        "WorkflowResponse",
        "ErrorEnvelope",
        "ErrorCode",
        "StartWorkflowRequest",
        "AdvanceRequest",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} missing"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn swagger_ui_and_redoc_are_served_without_any_external_asset() {
    let app = spawn_app().await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirect = no_redirects.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(redirect.status(), 308);
    assert_eq!(redirect.headers()["location"], "/docs/");

    let index = reqwest::get(app.url("/docs/")).await.unwrap();
    assert_eq!(index.status(), 200);
    let html = index.text().await.unwrap();
    for asset in [
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-initializer.js",
    ] {
        assert!(html.contains(asset), "{asset} not referenced");
        let response = reqwest::get(app.url(&format!("/docs/{asset}")))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        let body = response.text().await.unwrap();
        assert!(!body.is_empty());
        if asset == "swagger-initializer.js" {
            assert!(
                body.contains("/openapi.json"),
                "initializer does not load our document"
            );
        }
    }
    assert!(
        !html.contains("src=\"http"),
        "swagger page loads a remote script"
    );

    let redoc = reqwest::get(app.url("/redoc")).await.unwrap();
    assert_eq!(redoc.status(), 200);
    let html = redoc.text().await.unwrap();
    assert!(html.contains("/openapi.json"));
    // The bundle is inline; no script or stylesheet comes from elsewhere.
    assert!(
        !html.contains("<script src"),
        "redoc page loads an external script"
    );
    assert!(
        !html.contains("<link"),
        "redoc page loads an external stylesheet"
    );
}
