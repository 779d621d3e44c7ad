//! The benchmark's event consumers: many server-sent event streams whose delay is measured
//! while advances run at a fixed rate, and a webhook receiver that counts deliveries.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

use super::{call, open, seeded_id};

/// Every `SAMPLE_EVERY`-th event's delay is measured by every consumer (parsing each one's
/// time would cost the benchmark more CPU than the server spends sending it).
const SAMPLE_EVERY: u64 = 10;

/// What the consumers saw.
pub struct StreamReport {
    /// Events each consumer received (the least of them).
    pub fewest_events: u64,
    /// Advances acknowledged while the streams ran, per second.
    pub advances_per_second: f64,
    /// Sorted delays, from the change's time to its arrival at a consumer, microseconds.
    pub delays: Vec<u32>,
    /// Consumers whose stream ended early.
    pub dropped: usize,
}

impl StreamReport {
    /// The delay at quantile `q`, in milliseconds.
    pub fn percentile(&self, q: f64) -> f64 {
        super::percentile(&self.delays, q)
    }
}

/// Opens `consumers` streams, then runs advances at `rate` per second for `seconds` and
/// measures when each sampled event reaches each consumer.
pub async fn run(
    address: SocketAddr,
    consumers: usize,
    rate: u32,
    seconds: f64,
    workflows: usize,
    next_trigger: Arc<Vec<AtomicU8>>,
) -> anyhow::Result<StreamReport> {
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut readers = Vec::with_capacity(consumers);
    for _ in 0..consumers {
        let stream = tokio::net::TcpStream::connect(address).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = Request::builder()
            .method(Method::GET)
            .uri("/events/stream")
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))?;
        let response = sender.send_request(request).await?;
        anyhow::ensure!(
            response.status() == StatusCode::OK,
            "stream: {}",
            response.status()
        );
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            let mut body = response.into_body();
            let mut pending = Vec::new();
            let mut delays = Vec::new();
            let mut events = 0u64;
            let mut ended = false;
            loop {
                let frame = tokio::select! {
                    frame = body.frame() => frame,
                    () = stop.notified() => break,
                };
                let Some(Ok(frame)) = frame else {
                    ended = true;
                    break;
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                pending.extend_from_slice(&data);
                let now = Utc::now();
                let mut start = 0;
                while let Some(end) = find(&pending[start..], b"\n\n") {
                    let message = &pending[start..start + end + 2];
                    start += end + 2;
                    if let Some(id) = event_id(message) {
                        events += 1;
                        if id % SAMPLE_EVERY == 0
                            && let Some(at) = event_time(message)
                        {
                            let micros = (now - at).num_microseconds().unwrap_or(i64::MAX);
                            delays.push(u32::try_from(micros.max(0)).unwrap_or(u32::MAX));
                        }
                    }
                }
                pending.drain(..start);
            }
            (events, delays, ended)
        }));
    }

    // Drivers: each owns its workflows and advances one every `drivers / rate` seconds.
    let drivers = 20usize.min(workflows).max(1);
    let period = Duration::from_secs_f64(drivers as f64 / f64::from(rate.max(1)));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for driver in 0..drivers {
        let next_trigger = next_trigger.clone();
        tasks.push(tokio::spawn(async move {
            let mut sender = open(address).await?;
            let owned: Vec<usize> = (driver..workflows).step_by(drivers).collect();
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut done = 0u64;
            for n in 0.. {
                tick.tick().await;
                if Instant::now() >= deadline {
                    break;
                }
                let id = owned[n % owned.len()];
                let body = if next_trigger[id].load(Ordering::Relaxed) == 0 {
                    r#"{"trigger":"agent_complete"}"#
                } else {
                    r#"{"trigger":"human_rejected","reason":"rework"}"#
                };
                let path = format!("/workflow/{}/advance", seeded_id(id));
                let (status, _) =
                    call(&mut sender, Method::POST, &path, Some(body.to_owned())).await?;
                if status.is_success() {
                    next_trigger[id].fetch_xor(1, Ordering::Relaxed);
                    done += 1;
                }
            }
            anyhow::Ok(done)
        }));
    }
    let mut advances = 0;
    for task in tasks {
        advances += task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Let the last events arrive, then stop reading.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.notify_waiters();
    let mut report = StreamReport {
        fewest_events: u64::MAX,
        advances_per_second: advances as f64 / elapsed,
        delays: Vec::new(),
        dropped: 0,
    };
    for reader in readers {
        let (events, mut delays, ended) = reader.await?;
        report.fewest_events = report.fewest_events.min(events);
        report.delays.append(&mut delays);
        report.dropped += usize::from(ended);
    }
    report.delays.sort_unstable();
    Ok(report)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The `id:` of an SSE message that carries an event (the stream's opening message has an
/// `id:` and no data).
fn event_id(message: &[u8]) -> Option<u64> {
    find(message, b"\ndata: ")?;
    let rest = message.strip_prefix(b"id: ")?;
    let end = rest.iter().position(|b| *b == b'\n')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// The CloudEvent's `time` in an SSE message's data.
fn event_time(message: &[u8]) -> Option<DateTime<Utc>> {
    let key = b"\"time\":\"";
    let start = find(message, key)? + key.len();
    let end = start + message[start..].iter().position(|b| *b == b'"')?;
    let text = std::str::from_utf8(&message[start..end]).ok()?;
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A receiver that answers every POST 204 and counts them: `(its URL, the count)`.
pub async fn webhook_receiver() -> anyhow::Result<(String, Arc<AtomicU64>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let count = Arc::new(AtomicU64::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counted = counted.clone();
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let counted = counted.clone();
                    async move {
                        let _ = request.into_body().collect().await;
                        counted.fetch_add(1, Ordering::Relaxed);
                        let mut response = hyper::Response::new(Full::new(Bytes::new()));
                        *response.status_mut() = StatusCode::NO_CONTENT;
                        Ok::<_, Infallible>(response)
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    Ok((url, count))
}

/// Subscribes `url` to the events of `types` (every event when empty) on the server at
/// `address`.
pub async fn create_webhook(
    address: SocketAddr,
    url: &str,
    types: &[String],
) -> anyhow::Result<()> {
    let mut sender = open(address).await?;
    let body = serde_json::json!({ "url": url, "event_types": types }).to_string();
    let (status, answer) = call(&mut sender, Method::POST, "/webhooks", Some(body)).await?;
    anyhow::ensure!(
        status == StatusCode::CREATED,
        "creating the webhook: {status} {}",
        String::from_utf8_lossy(&answer)
    );
    Ok(())
}
