//! The OpenAPI document and the two pages that render it, Swagger UI and ReDoc. Their assets
//! come from crate dependencies and are served from memory: no CDN, no network.
//!
//! The pages share the board's origin, and so a signed-in reviewer's session: a script that
//! ran on them could act as that reviewer. Each is sent with a content security policy that
//! lets it run its own code only — Swagger UI its files, ReDoc the scripts its page carries
//! inline, named by their SHA-256 — and reach nothing but this server.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::http::body::bytes_response;
use crate::http::error::{ApiError, Result};
use crate::http::openapi::ApiDoc;

type HttpResponse = Response<Full<Bytes>>;

/// `GET /openapi.json`: the document, as this server's settings shape it (the pages that
/// render it, `/docs` and `/redoc`, are not in it: they are HTML for people).
#[utoipa::path(
    get, path = "/openapi.json", tag = "service", operation_id = "get_openapi",
    responses((status = 200, description = "this document (OpenAPI 3.1): it lists 401 and the bearer scheme when the server needs a token, and 403 on writes in principals mode", body = Object,
               example = json!({"openapi": "3.1.0", "info": {"title": "Orchestrator", "version": "0.1.0"}, "paths": {"/health": {"get": {"operationId": "get_health"}}}}))),
)]
pub fn get_openapi(docs: &DocsAssets) -> HttpResponse {
    docs.openapi()
}

/// Everything the docs endpoints serve, rendered on first use and kept (the ReDoc page is
/// about a megabyte; a service nobody reads the docs of never pays for it).
pub struct DocsAssets {
    /// Whether the server requires a bearer token, which the document says.
    auth_required: bool,
    /// Whether principals' roles are checked (403 on writes).
    principals: bool,
    openapi_json: OnceLock<Bytes>,
    /// The ReDoc page and its content security policy.
    redoc_html: OnceLock<(Bytes, HeaderValue)>,
    swagger: Arc<utoipa_swagger_ui::Config<'static>>,
}

impl DocsAssets {
    /// Docs of an open server (no token configured), rendered when first asked for.
    pub fn new() -> Self {
        Self::for_server(false)
    }

    /// Docs of a server that requires a bearer token (`auth_required`) or is open: the
    /// document lists 401 and the bearer scheme on protected operations only in the first case.
    pub fn for_server(auth_required: bool) -> Self {
        DocsAssets {
            auth_required,
            principals: false,
            openapi_json: OnceLock::new(),
            redoc_html: OnceLock::new(),
            // No validator badge: Swagger UI would send the document's address to
            // validator.swagger.io from any page not reached as `localhost`.
            swagger: Arc::new(
                utoipa_swagger_ui::Config::from(orchestrator_core::api::paths::OPENAPI)
                    .validator_url("none"),
            ),
        }
    }

    /// Docs of a server in principals mode.
    pub fn for_principals() -> Self {
        DocsAssets {
            principals: true,
            ..Self::for_server(true)
        }
    }

    /// `GET /openapi.json`.
    pub fn openapi(&self) -> HttpResponse {
        let json = self.openapi_json.get_or_init(|| {
            let doc = if self.principals {
                ApiDoc::for_principals()
            } else {
                ApiDoc::for_server(self.auth_required)
            };
            serde_json::to_vec(&doc)
                .map(Bytes::from)
                .unwrap_or_else(|_| Bytes::from_static(b"{}"))
        });
        cached(bytes_response(
            StatusCode::OK,
            "application/json",
            json.clone(),
        ))
    }

    /// `GET /redoc`.
    pub fn redoc(&self) -> HttpResponse {
        let (html, policy) = self.redoc_html.get_or_init(|| {
            let page = aide::redoc::Redoc::new(orchestrator_core::api::paths::OPENAPI)
                .with_title("Orchestrator API")
                .html();
            let policy = redoc_policy(&page);
            (Bytes::from(page), policy)
        });
        let mut response = cached(bytes_response(
            StatusCode::OK,
            "text/html; charset=utf-8",
            html.clone(),
        ));
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, policy.clone());
        response
    }

    /// `GET /docs`: the Swagger UI page itself, no redirect. Its assets are relative, so the
    /// page names `/docs/` as its base.
    pub fn docs_page(&self) -> Result<HttpResponse> {
        let (html, content_type) = self.swagger_asset("")?;
        let based = String::from_utf8_lossy(&html).replacen(
            "<head>",
            "<head>\n    <base href=\"/docs/\">",
            1,
        );
        Ok(asset_response(Bytes::from(based), &content_type))
    }

    /// `GET /docs/` and `GET /docs/{file}`.
    pub fn swagger_file(&self, file: &str) -> Result<HttpResponse> {
        let (bytes, content_type) = self.swagger_asset(file)?;
        Ok(asset_response(Bytes::from(bytes), &content_type))
    }

    /// One of Swagger UI's files (`""`: the page), with its content type.
    fn swagger_asset(&self, file: &str) -> Result<(Vec<u8>, String)> {
        match utoipa_swagger_ui::serve(file, self.swagger.clone()) {
            Ok(Some(found)) => Ok((found.bytes.into_owned(), found.content_type)),
            Ok(None) => Err(ApiError::NotFound(format!("/docs/{file}"))),
            Err(e) => Err(ApiError::Internal(format!("swagger ui: {e}"))),
        }
    }
}

fn asset_response(body: Bytes, content_type: &str) -> HttpResponse {
    let mut response = Response::new(Full::new(body));
    if let Ok(content_type) = HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    cached(response)
}

impl Default for DocsAssets {
    fn default() -> Self {
        Self::new()
    }
}

/// Swagger UI's policy: its own files' scripts and styles (and the inline styles its
/// components set), images and fonts from here or inline, requests to this server only.
const SWAGGER_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
    connect-src 'self'; base-uri 'self'; form-action 'none'; frame-ancestors 'none'";

/// ReDoc's policy for `page`: the inline scripts the page carries, by their SHA-256, and
/// nothing else; the styles it injects as it renders; requests to this server only.
fn redoc_policy(page: &str) -> HeaderValue {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    let mut scripts = String::new();
    let mut rest = page;
    while let Some(start) = rest.find("<script") {
        let tag = &rest[start..];
        let Some(open_end) = tag.find('>') else { break };
        let Some(close) = tag.find("</script>") else {
            break;
        };
        if !tag[..open_end].contains(" src=") && open_end < close {
            let body = &tag[open_end + 1..close];
            let digest = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body));
            scripts.push_str(&format!(" 'sha256-{digest}'"));
        }
        rest = &tag[close + "</script>".len()..];
    }
    let policy = format!(
        "default-src 'none'; script-src{scripts}; style-src 'unsafe-inline'; \
         img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src blob:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    // A digest is base64: the policy is always a valid header; were it not, no script runs.
    HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("default-src 'none'"))
}

/// Cached for an hour, under Swagger UI's policy (ReDoc's page replaces it with its own),
/// never framed by another page, and taken as the type they say.
fn cached(mut response: HttpResponse) -> HttpResponse {
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(SWAGGER_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
