//! Webhooks' rules, without I/O: the signing secret, the Standard Webhooks signature (made by
//! the server, checked by receivers through [`verify`]), the retry schedule, a delivery's
//! status, and which addresses count as private (or as this machine's).
//!
//! A delivery is signed over `"{webhook-id}.{webhook-timestamp}.{body}"` with HMAC-SHA256,
//! keyed by the bytes the secret's base64 (after `whsec_`) encodes; the `webhook-signature`
//! header is `v1,` followed by the base64 of the MAC.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::values::ValidationError;
use crate::workflow::Timestamp;

/// The prefix of every secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// How far a delivery's `webhook-timestamp` may be from the receiver's clock before [`verify`]
/// refuses it (replays of old deliveries): five minutes, as Standard Webhooks recommends.
pub const TIMESTAMP_TOLERANCE: Duration = Duration::from_secs(300);

/// A webhook's signing secret: `whsec_` and the base64 of the key. Never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    text: String,
    key: Vec<u8>,
}

impl WebhookSecret {
    /// The secret of a fresh webhook, from 32 random bytes.
    pub fn from_key(key: [u8; 32]) -> Self {
        WebhookSecret {
            text: format!("{SECRET_PREFIX}{}", STANDARD.encode(key)),
            key: key.to_vec(),
        }
    }

    /// Reads a secret as the server showed it (`whsec_…`).
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let encoded = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SignatureError::MalformedSecret)?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SignatureError::MalformedSecret)?;
        if key.is_empty() {
            return Err(SignatureError::MalformedSecret);
        }
        Ok(WebhookSecret {
            text: text.to_owned(),
            key,
        })
    }

    /// The secret as shown to its owner, `whsec_…`.
    pub fn expose(&self) -> &str {
        &self.text
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` header of a delivery: `v1,` and the base64 of the MAC.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", STANDARD.encode(tag))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(whsec_…)")
    }
}

/// Why a delivery's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The secret is not `whsec_` followed by base64.
    #[error("the secret is not whsec_ followed by base64")]
    MalformedSecret,
    /// A header is missing or malformed.
    #[error("the {0} header is missing or malformed")]
    MalformedHeader(&'static str),
    /// The timestamp is further from now than [`TIMESTAMP_TOLERANCE`].
    #[error("the webhook-timestamp is more than five minutes from now")]
    Stale,
    /// No `v1` signature in the header matches the body.
    #[error("no signature matches the body")]
    Mismatch,
}

/// Checks a delivery as a receiver got it: the `webhook-id`, `webhook-timestamp` and
/// `webhook-signature` headers' values, the raw body, and the receiver's clock (Unix seconds).
/// The header may carry several space-separated signatures; one matching `v1` signature is
/// enough. The comparison takes constant time.
///
/// ```
/// use orchestrator_core::webhook::{WebhookSecret, verify};
///
/// let secret = WebhookSecret::from_key([7; 32]);
/// let body = br#"{"type":"workflow.transitioned"}"#;
/// let signature = secret.sign("msg_1", 1_700_000_000, body);
/// assert!(verify(&secret, "msg_1", "1700000000", &signature, body, 1_700_000_010).is_ok());
/// assert!(verify(&secret, "msg_1", "1700000000", &signature, b"{}", 1_700_000_010).is_err());
/// ```
pub fn verify(
    secret: &WebhookSecret,
    id: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    if id.is_empty() {
        return Err(SignatureError::MalformedHeader("webhook-id"));
    }
    // Signed as sent: a number written otherwise (`+17…`, `017…`) is not the one signed.
    let sent: i64 = timestamp
        .trim()
        .parse()
        .ok()
        .filter(|sent: &i64| sent.to_string() == timestamp.trim())
        .ok_or(SignatureError::MalformedHeader("webhook-timestamp"))?;
    let tolerance = i64::try_from(TIMESTAMP_TOLERANCE.as_secs()).unwrap_or(i64::MAX);
    if now.abs_diff(sent) > tolerance.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let mut seen = false;
    for candidate in signature.split_whitespace() {
        let Some(encoded) = candidate.strip_prefix("v1,") else {
            continue;
        };
        seen = true;
        let Ok(tag) = STANDARD.decode(encoded) else {
            continue;
        };
        if secret.mac(id, sent, body).verify_slice(&tag).is_ok() {
            return Ok(());
        }
    }
    if seen {
        Err(SignatureError::Mismatch)
    } else {
        Err(SignatureError::MalformedHeader("webhook-signature"))
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not delivered yet; attempted again at `next_attempt_at`.
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Every attempt of the schedule failed.
    Failed,
}

impl DeliveryStatus {
    /// Every status.
    pub const ALL: [DeliveryStatus; 3] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// The status with this wire name.
    pub fn parse(name: &str) -> Option<DeliveryStatus> {
        DeliveryStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The delays between a delivery's attempts: after the first attempt fails, the next is made
/// `delays[0]` later, and so on; when the list is used up the delivery has failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

impl Default for RetrySchedule {
    /// 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight attempts over about 27½ hours.
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        RetrySchedule {
            delays: vec![
                Duration::from_secs(5),
                minutes(5),
                minutes(30),
                minutes(120),
                minutes(300),
                minutes(600),
                minutes(600),
            ],
        }
    }
}

impl RetrySchedule {
    /// The most delays a schedule may list.
    pub const MAX_DELAYS: usize = 50;

    /// Reads `1s,2s,4s`: comma-separated whole numbers, each with a unit `s`, `m`, `h` or `d`,
    /// at least 1 s and at most 7 days each. An empty text is a schedule without retries.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        let bad = |rule: String| ValidationError::new("WEBHOOK_RETRY_SCHEDULE", rule);
        let text = text.trim();
        if text.is_empty() {
            return Ok(RetrySchedule { delays: Vec::new() });
        }
        let mut delays = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            let split = part.len().saturating_sub(1);
            let (number, unit) = (part.get(..split).unwrap_or(""), part.get(split..));
            let scale = match unit {
                Some("s") => 1,
                Some("m") => 60,
                Some("h") => 3600,
                Some("d") => 86_400,
                _ => return Err(bad(format!("'{part}' needs a unit: s, m, h or d"))),
            };
            // Digits only: `parse` would take a leading `+`.
            if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(format!(
                    "'{part}' must be a whole number and one unit, like 90s or 5m"
                )));
            }
            let seconds = number
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(scale))
                .filter(|s| (1..=7 * 86_400).contains(s))
                .ok_or_else(|| bad(format!("'{part}' must be between 1s and 7d")))?;
            delays.push(Duration::from_secs(seconds));
        }
        if delays.len() > Self::MAX_DELAYS {
            return Err(bad(format!("lists at most {} delays", Self::MAX_DELAYS)));
        }
        Ok(RetrySchedule { delays })
    }

    /// The delays, in order.
    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// How many attempts a delivery gets before it fails: one more than the delays.
    pub fn attempts(&self) -> usize {
        self.delays.len() + 1
    }

    /// After `attempts` failed attempts, how long until the next one; `None` when the
    /// delivery has failed for good.
    pub fn next_delay(&self, attempts: u32) -> Option<Duration> {
        let index = usize::try_from(attempts).ok()?.checked_sub(1)?;
        self.delays.get(index).copied()
    }

    /// Where a delivery stands after its attempt number `attempts`, made at `now`:
    /// delivered, pending again (and when), or failed for good.
    pub fn after_attempt(
        &self,
        attempts: u32,
        delivered: bool,
        now: Timestamp,
    ) -> (DeliveryStatus, Option<Timestamp>) {
        if delivered {
            return (DeliveryStatus::Delivered, None);
        }
        match self.next_delay(attempts) {
            Some(delay) => {
                let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::days(7));
                (DeliveryStatus::Pending, Some(now + delay))
            }
            None => (DeliveryStatus::Failed, None),
        }
    }
}

impl fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .delays
            .iter()
            .map(|d| match d.as_secs() {
                s if s % 3600 == 0 => format!("{}h", s / 3600),
                s if s % 60 == 0 => format!("{}m", s / 60),
                s => format!("{s}s"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// A delivery's next attempt, where its retry schedule stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledAttempt {
    /// The attempt's number: one more than the attempts made.
    pub number: u32,
    /// The attempts made before the retry schedule last started (a redelivery starts it
    /// again), as stored with the attempt's outcome.
    pub schedule_from: u32,
}

impl ScheduledAttempt {
    /// The attempt after `attempts` made, the schedule having last started after
    /// `schedule_from` of them. A redelivery during an attempt starts the schedule after
    /// that attempt; if the attempt's outcome was never stored (its server died), the
    /// schedule starts at this attempt instead, so that it is not taken twice from its first
    /// delay (nor given an attempt more).
    pub fn after(attempts: u32, schedule_from: u32) -> Self {
        ScheduledAttempt {
            number: attempts.saturating_add(1),
            schedule_from: schedule_from.min(attempts),
        }
    }

    /// Which attempt of the schedule this is, from 1: what [`RetrySchedule::after_attempt`]
    /// takes.
    pub fn position(self) -> u32 {
        self.number.saturating_sub(self.schedule_from)
    }
}

/// Whether `host` (a URL's, as `Url::host_str` gives it: an IPv6 address in brackets) names
/// this machine: `localhost`, a name under it, or a loopback address (an IPv6 one carrying
/// IPv4's loopback included), with or without the root's trailing dot. No proxy stands
/// between a program and its own machine: the HTTP clients send such calls directly,
/// whatever proxy the environment names (reqwest makes no such exception itself).
pub fn is_this_machine(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let name = host.strip_suffix('.').unwrap_or(&host);
    name == "localhost"
        || name.ends_with(".localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// Whether a webhook may be sent to `address` when private networks are not allowed: not
/// loopback, private, link-local, unique-local, site-local, unspecified, broadcast,
/// documentation, shared (carrier-grade NAT), benchmarking, reserved, the IETF's protocol
/// assignments (192.0.0.0/24, and IPv6's `2001::/23`, Teredo's `2001::/32` among them),
/// discard-only (`100::/64`), local-use NAT64 (`64:ff9b:1::/48`) or multicast. An IPv6
/// address that carries an IPv4 one (mapped, translated `::ffff:0:0/96`, IPv4-compatible,
/// NAT64's well-known `64:ff9b::/96`, 6to4's `2002::/16`) is judged by the IPv4 address it
/// reaches.
pub fn is_public_address(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (b & 0xfe) == 18))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_ipv4(v6) {
                return is_public_address(IpAddr::V4(v4));
            }
            let [first, second, third, fourth, ..] = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
                // Local-use NAT64, 64:ff9b:1::/48: a translator of this network's own.
                || (first == 0x64 && second == 0xff9b && third == 1)
                // Documentation: 2001:db8::/32 and 3fff::/20.
                || (first == 0x2001 && second == 0x0db8)
                || (first == 0x3fff && second < 0x1000)
                // Discard-only, 100::/64.
                || (first == 0x0100 && second == 0 && third == 0 && fourth == 0)
                // IETF protocol assignments, 2001::/23.
                || (first == 0x2001 && second < 0x0200))
        }
    }
}

/// The IPv4 address an IPv6 one carries, where it reaches that IPv4 address: mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64's well-known `64:ff9b::/96` and
/// 6to4 (`2002:aabb:ccdd::/48`). (The local-use NAT64 range, `64:ff9b:1::/48`, is judged
/// whole by [`is_public_address`]: where its translator finds the IPv4 address depends on
/// the prefix length the network chose.)
fn embedded_ipv4(v6: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = v6.segments();
    let [.., a, b, c, d] = v6.octets();
    let last = std::net::Ipv4Addr::new(a, b, c, d);
    match s {
        [0, 0, 0, 0, 0, 0xffff, ..] | [0, 0, 0, 0, 0xffff, 0, ..] => Some(last),
        // `::` and `::1` are judged as IPv6 (unspecified, loopback).
        [0, 0, 0, 0, 0, 0, ..] if !v6.is_unspecified() && !v6.is_loopback() => Some(last),
        [0x64, 0xff9b, 0, 0, 0, 0, ..] => Some(last),
        [0x2002, high, low, ..] => Some(std::net::Ipv4Addr::from(
            (u32::from(high) << 16) | u32::from(low),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_webhooks_example_signs_as_published() {
        // The example of the Standard Webhooks specification.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let signature = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let check = |signature: &str, body: &[u8], now| {
            verify(
                &secret,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                "1614265330",
                signature,
                body,
                now,
            )
        };
        assert_eq!(check(&signature, body, 1_614_265_330), Ok(()));
        let several = format!("v1,bm90IHRoaXMgb25l {signature}");
        assert_eq!(check(&several, body, 1_614_265_330), Ok(()));
        assert_eq!(
            check(&signature, br#"{"test": 2432232315}"#, 1_614_265_330),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(&signature, body, 1_614_265_330 + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            check("v2,abc", body, 1_614_265_330),
            Err(SignatureError::MalformedHeader("webhook-signature"))
        );
        // The timestamp as signed, not another spelling of its number.
        for other in ["01614265330", "+1614265330"] {
            assert_eq!(
                verify(
                    &secret,
                    "msg_p5jXN8AQM9LWM0D4loKWxJek",
                    other,
                    &signature,
                    body,
                    1_614_265_330
                ),
                Err(SignatureError::MalformedHeader("webhook-timestamp")),
                "{other}"
            );
        }
    }

    #[test]
    fn a_secret_is_whsec_and_base64_and_never_printed() {
        let secret = WebhookSecret::from_key([1; 32]);
        assert!(secret.expose().starts_with("whsec_"));
        assert_eq!(WebhookSecret::parse(secret.expose()), Ok(secret.clone()));
        assert!(!format!("{secret:?}").contains(&secret.expose()[6..]));
        for bad in ["", "whsec_", "whsec_!!", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] {
            assert_eq!(
                WebhookSecret::parse(bad),
                Err(SignatureError::MalformedSecret)
            );
        }
    }

    #[test]
    fn the_retry_schedule_reads_units_and_counts_attempts() {
        let default = RetrySchedule::default();
        assert_eq!(default.to_string(), "5s,5m,30m,2h,5h,10h,10h");
        assert_eq!(default.attempts(), 8);
        assert_eq!(default.next_delay(1), Some(Duration::from_secs(5)));
        assert_eq!(default.next_delay(7), Some(Duration::from_secs(36_000)));
        assert_eq!(default.next_delay(8), None);
        assert_eq!(RetrySchedule::parse(&default.to_string()), Ok(default));
        let short = RetrySchedule::parse("1s, 2s,4s").unwrap();
        assert_eq!(short.attempts(), 4);
        assert_eq!(RetrySchedule::parse("").unwrap().attempts(), 1);
        let now = chrono::DateTime::UNIX_EPOCH;
        assert_eq!(
            short.after_attempt(1, false, now),
            (
                DeliveryStatus::Pending,
                Some(now + chrono::Duration::seconds(1))
            )
        );
        assert_eq!(
            short.after_attempt(3, false, now),
            (
                DeliveryStatus::Pending,
                Some(now + chrono::Duration::seconds(4))
            )
        );
        assert_eq!(
            short.after_attempt(4, false, now),
            (DeliveryStatus::Failed, None)
        );
        assert_eq!(
            short.after_attempt(4, true, now),
            (DeliveryStatus::Delivered, None)
        );
        for bad in ["1", "0s", "1x", "s", "-1s", "8d", "1s,,2s", "+5s"] {
            let error = RetrySchedule::parse(bad).unwrap_err();
            assert_eq!(error.field, "WEBHOOK_RETRY_SCHEDULE", "{bad}");
        }
        // A number that is not whole, or two units, is told as such, not as out of range.
        for form in ["1.5s", "1m30s", "-1s", "s"] {
            let error = RetrySchedule::parse(form).unwrap_err();
            assert!(
                error.rule.contains("whole number"),
                "{form}: {}",
                error.rule
            );
        }
        let error = RetrySchedule::parse("8d").unwrap_err();
        assert!(error.rule.contains("between 1s and 7d"), "{}", error.rule);
    }

    #[test]
    fn the_schedule_counts_from_its_last_start() {
        assert_eq!(ScheduledAttempt::after(0, 0).position(), 1);
        assert_eq!(ScheduledAttempt::after(4, 3).position(), 2);
        // Redelivered after the in-flight attempt was counted: the next is the first.
        assert_eq!(ScheduledAttempt::after(4, 4).position(), 1);
    }

    /// Attempts a delivery gets from `attempts` made and its schedule's start until it fails
    /// for good, each failing, and the delays between them.
    fn run_out(schedule: &RetrySchedule, mut attempts: u32, mut from: u32) -> Vec<Duration> {
        let now = Timestamp::from_timestamp(0, 0).unwrap();
        let mut delays = Vec::new();
        loop {
            let attempt = ScheduledAttempt::after(attempts, from);
            (attempts, from) = (attempt.number, attempt.schedule_from);
            match schedule.after_attempt(attempt.position(), false, now) {
                (DeliveryStatus::Pending, Some(next)) => {
                    delays.push((next - now).to_std().unwrap());
                }
                _ => return delays,
            }
        }
    }

    #[test]
    fn a_redelivery_during_an_attempt_that_was_lost_runs_the_schedule_once() {
        let schedule = RetrySchedule::parse("1s,2s,3s").unwrap();
        let whole: Vec<Duration> = schedule.delays().to_vec();
        // Redelivered after two attempts, the third in flight and counted: the schedule
        // starts after it.
        assert_eq!(run_out(&schedule, 3, 3), whole);
        // ...the third in flight and lost with its server (never counted): it starts at the
        // next attempt all the same, its first delay once, its attempts as many.
        assert_eq!(run_out(&schedule, 2, 3), whole);
        assert_eq!(run_out(&schedule, 0, 0), whole);
    }

    #[test]
    fn this_machine_is_localhost_or_a_loopback_address() {
        for host in [
            "localhost",
            "LocalHost.",
            "hub.localhost",
            "127.0.0.1",
            "127.9.9.9",
            "[::1]",
            "[::ffff:7f00:1]",
        ] {
            assert!(is_this_machine(host), "{host}");
        }
        for host in [
            "localhost.example.com",
            "127.0.0.1.nip.io",
            "10.0.0.1",
            "[::2]",
            "[::ffff:a00:1]",
            "",
        ] {
            assert!(!is_this_machine(host), "{host}");
        }
    }

    #[test]
    fn private_loopback_and_link_local_addresses_are_not_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "198.19.255.254",
            "240.0.0.1",
            "255.255.255.255",
            "fec0::1",
            // IPv6 addresses that reach a private IPv4 one.
            "::10.0.0.5",
            "::0.0.0.5",
            "64:ff9b::a00:5",
            "64:ff9b:1::7f00:1",
            // A /48 translator reads the IPv4 address from other bits than the last 32.
            "64:ff9b:1:7f00:0:100:808:808",
            "64:ff9b:1::808:808",
            "2002:a00:5::1",
            "2002:7f00:1::",
            "::ffff:0:a00:5",
            // Documentation, discard-only, the IETF's assignments (Teredo among them).
            "2001:db8::1",
            "3fff:fff::1",
            "100::1",
            "2001::1",
            "2001:2::1",
            "2001:1ff::1",
        ] {
            let address: IpAddr = private.parse().unwrap();
            assert!(!is_public_address(address), "{private}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "198.20.0.1",
            "192.0.1.1",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "::ffff:0:808:808",
            "2001:200::1",
            "2001:4860::8888",
            "3ffe::1",
            "100:0:0:1::1",
        ] {
            let address: IpAddr = public.parse().unwrap();
            assert!(is_public_address(address), "{public}");
        }
    }
}
