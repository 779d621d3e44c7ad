//! Name lookups for the server's HTTP clients (the webhooks' deliveries and the Agent Hub's
//! calls): the system's resolver, a bounded number of lookups at once, each host's answer kept
//! for a while, and which failures are the name servers' passing trouble.
//!
//! A lookup holds one of the runtime's blocking threads until the system's resolver answers,
//! and SQLite reads run on those threads too: every lookup the server makes goes through here,
//! so the threads they hold are bounded (the binary counts them beside the reads).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orchestrator_core::webhook::is_public_address;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The webhooks' deliveries' name lookups at once, per server.
pub(crate) const DELIVERY_LOOKUPS: usize = 2;
/// Name lookups of webhooks being created at once, per server: apart from the deliveries', so
/// that receivers whose names do not resolve never hold up creating a webhook.
pub(crate) const CHECK_LOOKUPS: usize = 1;
/// Lookups of the Agent Hub's name at once.
pub(crate) const HUB_LOOKUPS: usize = 1;
/// Every name lookup the server makes at once, at most: the blocking threads they may hold.
pub const NAME_LOOKUPS_AT_ONCE: usize = DELIVERY_LOOKUPS + CHECK_LOOKUPS + HUB_LOOKUPS;

/// Name lookups as the system makes them, a few at once.
///
/// A lookup holds one of the runtime's blocking threads until the system's resolver answers
/// (seconds, when a name server drops queries), and SQLite reads run on those threads too:
/// unbounded, the attempts of a few webhooks whose names do not resolve took every thread and
/// every read waited (a `GET` of a workflow took 5 s). Bounded, they queue here instead. A
/// lookup's turn ends when the system's resolver answers, not when its caller stops waiting
/// (an attempt's timeout cannot stop a blocking call), so the bound holds however many
/// callers give up.
#[derive(Clone)]
pub(crate) struct Lookups {
    turns: Arc<Semaphore>,
    /// Lookups [`Lookups::lookup`] made: what the tests count.
    #[cfg(test)]
    made: Arc<std::sync::atomic::AtomicUsize>,
}

impl Lookups {
    /// At most `at_once` lookups at a time.
    pub(crate) fn new(at_once: usize) -> Self {
        Lookups {
            turns: Arc::new(Semaphore::new(at_once)),
            #[cfg(test)]
            made: Arc::default(),
        }
    }

    /// A turn to look a name up, once one is free.
    pub(crate) async fn turn(&self) -> std::io::Result<OwnedSemaphorePermit> {
        self.turns
            .clone()
            .acquire_owned()
            .await
            .map_err(std::io::Error::other)
    }

    /// A turn if one is free now.
    fn free_turn(&self) -> Option<OwnedSemaphorePermit> {
        self.turns.clone().try_acquire_owned().ok()
    }

    /// The addresses of `host` (with `port`), in `turn` or else once a turn is free.
    async fn lookup(
        &self,
        turn: Option<OwnedSemaphorePermit>,
        host: &str,
        port: u16,
    ) -> std::io::Result<Vec<SocketAddr>> {
        #[cfg(test)]
        self.made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let turn = match turn {
            Some(turn) => turn,
            None => self.turn().await?,
        };
        Lookups::lookup_in(turn, host, port).await
    }

    /// The addresses of `host` (with `port`), looked up in `turn`, which ends when the system's
    /// resolver answers.
    pub(crate) async fn lookup_in(
        turn: OwnedSemaphorePermit,
        host: &str,
        port: u16,
    ) -> std::io::Result<Vec<SocketAddr>> {
        let host = host.to_owned();
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port)).map(Iterator::collect)
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// Whether a failed lookup is the name servers' passing trouble (`EAI_AGAIN`: no answer, or
/// "try again"), not a name without addresses; the system resolver says which only in words,
/// glibc's and musl's.
pub(crate) fn is_temporary(error: &std::io::Error) -> bool {
    let text = error.to_string();
    text.contains("Temporary failure in name resolution") || text.ends_with("Try again")
}

/// Resolves names for a reqwest client through [`Lookups`], and with `public_only` keeps only
/// public addresses (the webhooks' deliveries, unless private networks are allowed: a name
/// that changes to a private address after its webhook was created is refused at delivery).
///
/// One host is looked up once at a time, and the addresses found are kept for
/// [`REMEMBER_LOOKUP`]; a failure is shared with the attempts that waited for its lookup (for
/// [`SHARE_FAILURE`]: an attempt after that looks again): the attempts of a receiver whose
/// name servers are slow wait for that one lookup instead of each taking a turn, or each
/// making its own slow lookup in turn after a failed one, so each such receiver holds one of
/// the turns, not more, and its waiting attempts do not pile up; the Agent Hub's calls, a
/// lookup every [`REMEMBER_LOOKUP`] at most. Past that, a host's addresses are looked up again
/// when a turn is free at once, and are otherwise used as they are for up to
/// [`USE_OUT_OF_DATE`]: receivers whose name servers are slow, holding every turn, do not
/// make the attempts of the other webhooks (whose names resolved) wait for a turn and time
/// out.
pub(crate) struct Resolver {
    public_only: bool,
    lookups: Lookups,
    hosts: Mutex<HashMap<String, Arc<HostLookup>>>,
}

/// The last lookups of one host: held while the host is being looked up.
type HostLookup = tokio::sync::Mutex<LastLookups>;

/// What the last lookups of one host found.
#[derive(Default)]
struct LastLookups {
    /// The addresses the last lookup that succeeded found, and when.
    found: Option<(tokio::time::Instant, Vec<SocketAddr>)>,
    /// The last lookup's failure, and when: kept only if it came after `found`.
    failed: Option<(tokio::time::Instant, Failure)>,
}

/// A failed lookup's error, to give again to those that waited for it.
struct Failure {
    kind: std::io::ErrorKind,
    /// The error in words, which [`is_temporary`] reads.
    message: String,
}

impl Failure {
    fn of(error: &std::io::Error) -> Self {
        Failure {
            kind: error.kind(),
            message: error.to_string(),
        }
    }

    fn error(&self) -> std::io::Error {
        std::io::Error::new(self.kind, self.message.clone())
    }
}

/// How long a lookup's addresses are used for the host's next attempts.
const REMEMBER_LOOKUP: Duration = Duration::from_secs(30);
/// How long a failed lookup's error is given to the host's next attempts: those that waited
/// for it, not those made later (a delivery's next attempt comes seconds later at the soonest).
const SHARE_FAILURE: Duration = Duration::from_secs(1);
/// How long a lookup's addresses are used, past [`REMEMBER_LOOKUP`], while every turn is
/// taken.
const USE_OUT_OF_DATE: Duration = Duration::from_secs(600);
/// Hosts whose lookups are kept, past which those not in use and out of date are forgotten.
const HOSTS_KEPT: usize = 1024;

impl Resolver {
    /// Names resolved through `lookups`; with `public_only`, to public addresses only.
    pub(crate) fn new(public_only: bool, lookups: Lookups) -> Self {
        Resolver {
            public_only,
            lookups,
            hosts: Mutex::default(),
        }
    }

    /// The addresses of `host`: the last answer if it is recent, or else a new lookup (one at
    /// a time per host), or the failure of one that just failed. The lookup goes on, and its
    /// answer is kept, when the caller stops waiting (its attempt timed out), so the host's
    /// next attempt does not start another.
    async fn addresses(
        lookups: Lookups,
        entry: Arc<HostLookup>,
        host: String,
    ) -> std::io::Result<Vec<SocketAddr>> {
        let looked_up = tokio::spawn(async move {
            let mut last = entry.lock_owned().await;
            let turn = match &last.found {
                Some((at, found)) if at.elapsed() < REMEMBER_LOOKUP => return Ok(found.clone()),
                Some((at, found)) if at.elapsed() < USE_OUT_OF_DATE => match lookups.free_turn() {
                    Some(turn) => Some(turn),
                    None => return Ok(found.clone()),
                },
                _ => None,
            };
            // A lookup that would be made now just failed: its failure, not another as slow.
            if let Some((at, failure)) = &last.failed
                && at.elapsed() < SHARE_FAILURE
            {
                return Err(failure.error());
            }
            let now = tokio::time::Instant::now;
            match lookups.lookup(turn, &host, 0).await {
                Ok(found) => {
                    *last = LastLookups {
                        found: Some((now(), found.clone())),
                        failed: None,
                    };
                    Ok(found)
                }
                Err(e) => {
                    last.failed = Some((now(), Failure::of(&e)));
                    Err(e)
                }
            }
        });
        looked_up.await.map_err(std::io::Error::other)?
    }

    /// The record of `host`'s lookups, made if it has none.
    fn entry(&self, host: &str) -> Arc<HostLookup> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if hosts.len() >= HOSTS_KEPT && !hosts.contains_key(host) {
            hosts.retain(|_, entry| {
                Arc::strong_count(entry) > 1
                    || entry.try_lock().map_or(true, |last| {
                        last.found
                            .as_ref()
                            .is_some_and(|(at, _)| at.elapsed() < REMEMBER_LOOKUP)
                    })
            });
        }
        hosts.entry(host.to_owned()).or_default().clone()
    }
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let (public_only, lookups) = (self.public_only, self.lookups.clone());
        let entry = self.entry(&host);
        Box::pin(async move {
            let found: Vec<SocketAddr> = Resolver::addresses(lookups, entry, host.clone())
                .await?
                .into_iter()
                .filter(|a| !public_only || is_public_address(a.ip()))
                .collect();
            if found.is_empty() {
                let why = if public_only {
                    format!("refused: {host} has no public address")
                } else {
                    format!("{host} has no address")
                };
                return Err(why.into());
            }
            let addresses: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addresses)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_name_servers_passing_trouble_is_temporary() {
        let failure = |text: &str| {
            std::io::Error::other(format!("failed to lookup address information: {text}"))
        };
        assert!(is_temporary(&failure(
            "Temporary failure in name resolution"
        )));
        assert!(is_temporary(&failure("Try again")));
        assert!(!is_temporary(&failure("Name or service not known")));
        assert!(!is_temporary(&failure(
            "No address associated with hostname"
        )));
        assert!(!is_temporary(&failure("Name does not resolve")));
    }

    #[tokio::test]
    async fn a_hosts_recent_answer_needs_no_turn() {
        let resolver = Resolver {
            public_only: false,
            lookups: Lookups::new(1),
            hosts: Mutex::default(),
        };
        let resolve = |host: &str| {
            Resolver::addresses(
                resolver.lookups.clone(),
                resolver.entry(host),
                host.to_owned(),
            )
        };
        let first = resolve("localhost").await.unwrap();
        assert!(!first.is_empty());
        // Every turn taken, as by a lookup the name servers never answer: the host looked up a
        // moment ago is answered from memory, another host waits for a turn.
        let held = resolver.lookups.turn().await.unwrap();
        assert_eq!(resolve("localhost").await.unwrap(), first);
        let other = tokio::time::timeout(Duration::from_millis(200), resolve("127.0.0.1")).await;
        assert!(other.is_err(), "another host needs a turn");
        // Many attempts at once of a host not yet known wait for its one lookup.
        let made = || {
            resolver
                .lookups
                .made
                .load(std::sync::atomic::Ordering::SeqCst)
        };
        let before = made();
        let waiting: Vec<_> = (0..8).map(|_| tokio::spawn(resolve("127.0.0.2"))).collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        for attempt in waiting {
            assert!(!attempt.await.unwrap().unwrap().is_empty());
        }
        assert_eq!(made() - before, 1, "one lookup for eight attempts");
        // A failure is shared with the attempts that waited for its lookup (not each making
        // its own in turn, as slow as the first), and not kept: an attempt later looks again.
        let held = resolver.lookups.turn().await.unwrap();
        let before = made();
        let waiting: Vec<_> = (0..8)
            .map(|_| tokio::spawn(resolve("no-such-host.invalid")))
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        for attempt in waiting {
            assert!(attempt.await.unwrap().is_err());
        }
        assert_eq!(made() - before, 1, "one failed lookup for eight attempts");
        tokio::time::sleep(SHARE_FAILURE).await;
        assert!(resolve("no-such-host.invalid").await.is_err());
        assert_eq!(made() - before, 2, "looked up again later");
        assert_eq!(resolver.hosts.lock().unwrap().len(), 4);

        // Out of date while every turn is held (by other hosts' slow lookups): the last answer
        // is used, no turn waited for; with a turn free, the host is looked up again.
        tokio::time::pause();
        tokio::time::advance(REMEMBER_LOOKUP + Duration::from_secs(1)).await;
        let held = resolver.lookups.turn().await.unwrap();
        let before = made();
        let stale = tokio::time::timeout(Duration::from_millis(200), resolve("localhost"))
            .await
            .expect("no wait for a turn");
        assert_eq!(stale.unwrap(), first);
        assert_eq!(made(), before);
        drop(held);
        assert_eq!(resolve("localhost").await.unwrap(), first);
        assert_eq!(made() - before, 1, "looked up again with a turn free");
        // Too old to use: the host waits for a turn.
        tokio::time::advance(USE_OUT_OF_DATE + Duration::from_secs(1)).await;
        let held = resolver.lookups.turn().await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(200), resolve("localhost")).await;
        assert!(waited.is_err(), "an answer that old waits for a turn");
        drop(held);
    }

    #[tokio::test]
    async fn public_only_keeps_no_private_address() {
        use reqwest::dns::Resolve;
        let name = |host: &str| host.parse::<reqwest::dns::Name>().unwrap();
        let open = Resolver::new(false, Lookups::new(1));
        assert!(open.resolve(name("localhost")).await.is_ok());
        let public = Resolver::new(true, Lookups::new(1));
        let refused = public.resolve(name("localhost")).await.err().unwrap();
        assert_eq!(
            refused.to_string(),
            "refused: localhost has no public address"
        );
    }
}
