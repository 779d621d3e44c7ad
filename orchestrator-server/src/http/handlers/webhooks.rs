//! Webhook endpoints (admin only): subscribe a URL to events, list, show and delete
//! subscriptions, page through a webhook's deliveries, and attempt a delivery again.

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, header};
use http_body_util::Full;
use orchestrator_core::Action;
use orchestrator_core::api::{
    CreateWebhookRequest, CreatedWebhook, DeliveriesQuery, DeliveriesResponse, WebhooksResponse,
    cursor, paths,
};
use orchestrator_core::webhook::WebhookSecret;

use crate::http::App;
use crate::http::auth::Caller;
use crate::http::body::{json_response, parse_json, query_pairs};
use crate::http::error::{ApiError, Result};
use crate::http::idempotency::{Answer, Claimed};
use crate::http::webhooks::Webhooks;

type HttpResponse = Response<Full<Bytes>>;

/// The webhooks of `app`, after checking the caller is an admin.
fn webhooks<'a>(app: &'a App, caller: &Caller, path: &str) -> Result<&'a Webhooks> {
    caller.may(Action::ManageWebhooks)?;
    app.webhooks()
        .map(AsRef::as_ref)
        .ok_or_else(|| ApiError::NotFound(path.to_owned()))
}

/// Subscribe a URL to events.
#[utoipa::path(
    post, path = "/webhooks", tag = "webhooks", operation_id = "create_webhook",
    request_body(content = CreateWebhookRequest, example = json!(crate::http::openapi::examples::create_webhook())),
    responses(
        (status = 201, description = "the webhook and its signing secret, shown only in this answer; events committed from now on are delivered",
         body = CreatedWebhook,
         headers(("Location" = String, description = "the webhook's path")),
         example = json!(crate::http::openapi::examples::created_webhook())),
    ),
)]
pub async fn create_webhook(
    app: &App,
    caller: &Caller,
    headers: &HeaderMap,
    body: &Bytes,
    claimed: Option<Claimed>,
) -> Result<HttpResponse> {
    let webhooks = webhooks(app, caller, paths::WEBHOOKS)?;
    let request: CreateWebhookRequest = parse_json(headers, body)?;
    let webhook = webhooks.check(request, app.now()).await?;
    let mut key = [0_u8; 32];
    getrandom::fill(&mut key)
        .map_err(|e| ApiError::Internal(format!("no randomness for a secret: {e}")))?;
    let secret = WebhookSecret::from_key(key);
    let created = CreatedWebhook {
        webhook,
        secret: secret.expose().to_owned(),
    };
    // The answer to the request's key is kept with the webhook, in one write.
    let receipt = claimed
        .as_ref()
        .map(|claimed| claimed.seal(created_answer)(&created));
    webhooks
        .store()
        .create_webhook(&created.webhook, &secret, receipt.as_ref())
        .await?;
    claimed.iter().for_each(Claimed::kept);
    // The host only: a URL's path or query may carry the receiver's own token.
    let host = reqwest::Url::parse(&created.webhook.url)
        .ok()
        .and_then(|url| url.host_str().map(str::to_owned))
        .unwrap_or_default();
    tracing::info!(webhook = %created.webhook.id, %host, "webhook created");
    Ok(created_answer(&created).into_response())
}

/// `201 Created` with the webhook, its secret, and its path as `Location`.
fn created_answer(created: &CreatedWebhook) -> Answer {
    // A webhook always serialises.
    Answer::json(
        StatusCode::CREATED,
        serde_json::to_string(created).unwrap_or_default(),
    )
    .with_header(header::LOCATION, paths::webhook(&created.webhook.id))
}

/// Every webhook.
#[utoipa::path(
    get, path = "/webhooks", tag = "webhooks", operation_id = "list_webhooks",
    responses(
        (status = 200, description = "every webhook, oldest first (secrets are never shown again)", body = WebhooksResponse,
         example = json!(crate::http::openapi::examples::webhooks())),
    ),
)]
pub async fn list_webhooks(app: &App, caller: &Caller) -> Result<HttpResponse> {
    let items = webhooks(app, caller, paths::WEBHOOKS)?
        .store()
        .webhooks()
        .await?;
    Ok(json_response(StatusCode::OK, &WebhooksResponse { items }))
}

/// One webhook.
#[utoipa::path(
    get, path = "/webhooks/{webhook_id}", tag = "webhooks", operation_id = "get_webhook",
    params(("webhook_id" = String, Path, description = "the webhook's id")),
    responses(
        (status = 200, description = "the webhook", body = orchestrator_core::api::Webhook,
         example = json!(crate::http::openapi::examples::webhook())),
    ),
)]
pub async fn get_webhook(app: &App, caller: &Caller, id: &str) -> Result<HttpResponse> {
    let webhook = webhooks(app, caller, paths::WEBHOOKS)?
        .store()
        .webhook(id)
        .await?
        .ok_or_else(|| ApiError::WebhookNotFound(id.to_owned()))?;
    Ok(json_response(StatusCode::OK, &webhook))
}

/// Delete a webhook and its deliveries; nothing more is sent to it but an attempt already
/// under way, which finishes (its outcome is not kept).
#[utoipa::path(
    delete, path = "/webhooks/{webhook_id}", tag = "webhooks", operation_id = "delete_webhook",
    params(("webhook_id" = String, Path, description = "the webhook's id")),
    responses((status = 204, description = "deleted, with its deliveries")),
)]
pub async fn delete_webhook(app: &App, caller: &Caller, id: &str) -> Result<HttpResponse> {
    let deleted = webhooks(app, caller, paths::WEBHOOKS)?
        .store()
        .delete_webhook(id)
        .await?;
    if !deleted {
        return Err(ApiError::WebhookNotFound(id.to_owned()));
    }
    tracing::info!(webhook = %id, "webhook deleted");
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

/// A webhook's deliveries, newest event first.
#[utoipa::path(
    get, path = "/webhooks/{webhook_id}/deliveries", tag = "webhooks", operation_id = "list_deliveries",
    params(
        ("webhook_id" = String, Path, description = "the webhook's id"),
        ("status" = Option<String>, Query, description = "only `pending`, `delivered` or `failed` deliveries"),
        ("limit" = Option<u32>, Query, description = "page size, 1–500 (50 when absent)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "a page of deliveries; `next_cursor` is null on the last page", body = DeliveriesResponse,
         example = json!(crate::http::openapi::examples::deliveries())),
    ),
)]
pub async fn list_deliveries(
    app: &App,
    caller: &Caller,
    id: &str,
    query: Option<&str>,
) -> Result<HttpResponse> {
    let webhooks = webhooks(app, caller, paths::WEBHOOKS)?;
    let pairs = query_pairs(query);
    let page = DeliveriesQuery::parse_query(pairs.iter().map(|(k, v)| (&**k, &**v)))?;
    if webhooks.store().webhook(id).await?.is_none() {
        return Err(ApiError::WebhookNotFound(id.to_owned()));
    }
    let mut items = webhooks.store().deliveries(id, &page).await?;
    let size = usize::try_from(page.limit.get()).unwrap_or(usize::MAX);
    let next_cursor = if items.len() > size {
        items.truncate(size);
        items
            .last()
            .and_then(|d| d.event_id.parse().ok())
            .map(cursor::encode_event)
    } else {
        None
    };
    Ok(json_response(
        StatusCode::OK,
        &DeliveriesResponse { items, next_cursor },
    ))
}

/// Attempt a delivery again now, whatever its status.
#[utoipa::path(
    post, path = "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", tag = "webhooks", operation_id = "redeliver",
    params(
        ("webhook_id" = String, Path, description = "the webhook's id"),
        ("delivery_id" = String, Path, description = "the delivery's id"),
    ),
    responses(
        (status = 202, description = "the delivery is pending and due now: the same delivery (same `webhook-id`) is attempted within a second (or, if an attempt is in flight, as soon as that attempt ends: never two at once), `attempts` counting on; a failure is retried on the schedule from its start"),
    ),
)]
pub async fn redeliver(
    app: &App,
    caller: &Caller,
    id: &str,
    delivery: &str,
    claimed: Option<Claimed>,
) -> Result<HttpResponse> {
    let store = webhooks(app, caller, paths::WEBHOOKS)?.store();
    if store.webhook(id).await?.is_none() {
        return Err(ApiError::WebhookNotFound(id.to_owned()));
    }
    // The answer to the request's key is kept with the redelivery, in one write: a retry after
    // a crash between the two would redeliver again.
    let receipt = claimed
        .as_ref()
        .map(|claimed| claimed.seal(|(): &()| Answer::empty(StatusCode::ACCEPTED))(&()));
    if !store
        .redeliver(id, delivery, app.now(), receipt.as_ref())
        .await?
    {
        return Err(ApiError::DeliveryNotFound(delivery.to_owned()));
    }
    claimed.iter().for_each(Claimed::kept);
    Ok(Answer::empty(StatusCode::ACCEPTED).into_response())
}
