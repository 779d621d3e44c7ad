//! Webhooks through the client: managing subscriptions (admin), reading their deliveries,
//! and — for a Rust service that receives them — checking a delivery's signature.
//!
//! ```
//! use orchestrator_client::webhooks::{verify_signature, WebhookSecret};
//! use reqwest::header::{HeaderMap, HeaderValue};
//!
//! // What the server shows once, when the webhook is created.
//! let secret = WebhookSecret::from_key([7; 32]);
//! let body = br#"{"specversion":"1.0","id":"42","type":"workflow.transitioned"}"#;
//! let now = chrono::Utc::now().timestamp();
//! let mut headers = HeaderMap::new();
//! headers.insert("webhook-id", HeaderValue::from_static("msg_1"));
//! headers.insert("webhook-timestamp", HeaderValue::from_str(&now.to_string()).unwrap());
//! let signature = secret.sign("msg_1", now, body);
//! headers.insert("webhook-signature", HeaderValue::from_str(&signature).unwrap());
//!
//! assert!(verify_signature(secret.expose(), &headers, body).is_ok());
//! assert!(verify_signature(secret.expose(), &headers, b"{\"forged\":true}").is_err());
//! ```

use orchestrator_core::api::{
    CreateWebhookRequest, CreatedWebhook, DeliveriesQuery, DeliveriesResponse, ErrorCode, Webhook,
    WebhooksResponse, paths,
};
use reqwest::Method;
use reqwest::header::HeaderMap;

pub use orchestrator_core::webhook::{SignatureError, WebhookSecret, verify};

use crate::{Client, Result};

/// Checks a delivery as a receiver got it: its headers (`webhook-id`, `webhook-timestamp`,
/// `webhook-signature`), its raw body, and the webhook's secret as the server showed it
/// (`whsec_…`), against this machine's clock (a timestamp more than five minutes away is
/// refused, so an old delivery cannot be replayed later). Verify the body's bytes as
/// received, before parsing them. Within those five minutes a delivery may come twice (a
/// retry, or a replay): deduplicate on `webhook-id`, the same on every attempt.
pub fn verify_signature(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> std::result::Result<(), SignatureError> {
    let secret = WebhookSecret::parse(secret)?;
    let header = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(SignatureError::MalformedHeader(name))
    };
    verify(
        &secret,
        header("webhook-id")?,
        header("webhook-timestamp")?,
        header("webhook-signature")?,
        body,
        chrono::Utc::now().timestamp(),
    )
}

impl Client {
    /// Subscribes a URL to events (`POST /webhooks`, admin). The answer carries the signing
    /// secret, shown only this once.
    pub async fn create_webhook(&self, request: &CreateWebhookRequest) -> Result<CreatedWebhook> {
        self.post(paths::WEBHOOKS, request).await
    }

    /// Every webhook (`GET /webhooks`, admin).
    pub async fn list_webhooks(&self) -> Result<WebhooksResponse> {
        self.get(paths::WEBHOOKS).await
    }

    /// One webhook (`GET /webhooks/{id}`, admin).
    pub async fn get_webhook(&self, id: &str) -> Result<Webhook> {
        self.get(&paths::webhook(id)).await
    }

    /// Deletes a webhook and its deliveries (`DELETE /webhooks/{id}`, admin). A retry that
    /// finds the webhook gone counts as done: the attempt before it deleted it.
    pub async fn delete_webhook(&self, id: &str) -> Result<()> {
        match self
            .send_counted(self.request(Method::DELETE, &paths::webhook(id)))
            .await
        {
            (Err(e), true) if e.code() == Some(ErrorCode::WebhookNotFound) => Ok(()),
            (answer, _) => answer,
        }
    }

    /// A page of a webhook's deliveries, newest event first (`GET
    /// /webhooks/{id}/deliveries`, admin).
    pub async fn list_deliveries(
        &self,
        id: &str,
        query: &DeliveriesQuery,
    ) -> Result<DeliveriesResponse> {
        let query = query.to_query();
        let path = paths::deliveries(id);
        if query.is_empty() {
            self.get(&path).await
        } else {
            self.get(&format!("{path}?{query}")).await
        }
    }

    /// Attempts a delivery again now (`POST /webhooks/{id}/deliveries/{delivery}/redeliver`,
    /// admin): the same `webhook-id`, its attempts counting on.
    pub async fn redeliver(&self, id: &str, delivery: &str) -> Result<()> {
        self.post(&paths::redeliver(id, delivery), &serde_json::json!({}))
            .await
    }
}
