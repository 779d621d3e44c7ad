//! The names an open server answers to: its defence against DNS rebinding.
//!
//! A server without a token answers anyone who reaches it. A web page a developer visits can
//! reach a server on their machine or network by pointing a name of its own at the server's
//! address (DNS rebinding): the browser then takes the server for the page's own site, lets the
//! page read its answers and sends its POSTs, `Origin` matching `Host`. Such requests carry the
//! page's name in `Host`. So an open server answers requests addressed to an IP address, to
//! `localhost` or a name under `.localhost` (which never leave the machine), or to a name the
//! operator lists in `ALLOWED_HOSTS`; any other is 403. A token or principals make the check
//! needless (the page holds no token), so it applies to open mode only.

use std::net::Ipv4Addr;

use http::{HeaderMap, Uri, header};

/// The host names an open server answers to besides IP addresses and `localhost`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    /// `*`: every name.
    any: bool,
    /// Lower case, without a trailing dot.
    names: Vec<String>,
}

impl AllowedHosts {
    /// Reads `ALLOWED_HOSTS`: host names separated by commas (`orchestrator,devbox.lan`), or
    /// `*` for any name; empty is none. A name is letters, digits, `-`, `_` and dots, without
    /// a port.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut allowed = AllowedHosts::default();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                allowed.any = true;
                continue;
            }
            let name = name.strip_suffix('.').unwrap_or(name);
            let valid = !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                });
            if !valid {
                return Err(format!(
                    "'{name}' is not a host name (letters, digits, '-', '_' and dots, no port), \
                     nor '*'"
                ));
            }
            allowed.names.push(name.to_ascii_lowercase());
        }
        Ok(allowed)
    }

    /// Every name: what a server with a token or principals answers to.
    pub fn any() -> Self {
        AllowedHosts {
            any: true,
            names: Vec::new(),
        }
    }

    /// Whether a request addressed to `host` (as `Host` carries it: a name or an address, and
    /// perhaps a port) is answered.
    pub fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        // An IPv6 address is bracketed, its port after the bracket.
        if host.starts_with('[') {
            return true;
        }
        let name = name_of(host);
        name.parse::<Ipv4Addr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.names.contains(&name)
    }

    /// 403 `FORBIDDEN` for a request addressed to a name this open server does not answer to;
    /// a request without a host (HTTP/1.0, which no browser sends) is answered.
    pub(crate) fn check(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), super::ApiError> {
        let host = headers
            .get(header::HOST)
            .map(|h| h.to_str().unwrap_or("?"))
            .or_else(|| uri.authority().map(|a| a.as_str()));
        match host {
            Some(host) if !self.allows(host) => {
                let name: String = name_of(host).chars().take(100).collect();
                Err(super::ApiError::Forbidden(format!(
                    "this server has no token, so it answers only requests addressed to \
                     localhost, an IP address or a name in ALLOWED_HOSTS (a web page may point \
                     a name of its own at it); to reach it as '{name}', start it with \
                     ALLOWED_HOSTS={name}, or give it a token"
                )))
            }
            _ => Ok(()),
        }
    }
}

/// The name `host` (a `Host` header's value, not bracketed) addresses: without its port and a
/// final dot, in lower case.
fn name_of(host: &str) -> String {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_localhost_are_answered_other_names_only_when_listed() {
        let none = AllowedHosts::default();
        for host in [
            "127.0.0.1",
            "127.0.0.1:8000",
            "192.168.1.20:80",
            "[::1]:8000",
            "[::]",
            "localhost",
            "LOCALHOST:8000",
            "localhost.:8000",
            "app.localhost:3000",
        ] {
            assert!(none.allows(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8000",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "orchestrator:8000",
            "",
            "?",
        ] {
            assert!(!none.allows(host), "{host}");
        }
        let listed = AllowedHosts::parse(" Orchestrator , devbox.lan. ").unwrap();
        assert!(listed.allows("orchestrator:8000"));
        assert!(listed.allows("DEVBOX.lan"));
        assert!(!listed.allows("evil.example"));
        let any = AllowedHosts::parse("*").unwrap();
        assert!(any.allows("evil.example:8000"));
        assert_eq!(AllowedHosts::parse("").unwrap(), AllowedHosts::default());
    }

    #[test]
    fn a_list_that_is_not_host_names_is_refused() {
        for list in ["host:8000", "http://host", "a..b", "a b", "/x", "."] {
            assert!(AllowedHosts::parse(list).is_err(), "{list}");
        }
    }
}
