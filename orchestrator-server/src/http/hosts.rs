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

use std::net::{Ipv4Addr, Ipv6Addr};

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

    /// Whether a request addressed to `host` (as `Host` carries it: a name or an address, and
    /// perhaps a port) is answered.
    pub fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        // An IPv6 address is bracketed, perhaps with a port after the bracket.
        if let Some((address, rest)) = host
            .strip_prefix('[')
            .and_then(|bracketed| bracketed.split_once(']'))
        {
            let port = rest.strip_prefix(':').unwrap_or(rest);
            return address.parse::<Ipv6Addr>().is_ok() && port.bytes().all(|b| b.is_ascii_digit());
        }
        let name = name_of(host);
        name.parse::<Ipv4Addr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.names.contains(&name)
    }

    /// 403 `FORBIDDEN` for a request addressed to a name this open server does not answer to:
    /// the request target's authority when it has one (an absolute URI, which wins over
    /// `Host`), else `Host`, which must then be given once. A request without either (HTTP/1.0,
    /// which no browser sends) is answered.
    pub(crate) fn check(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), super::ApiError> {
        let mut given = headers.get_all(header::HOST).iter();
        let host = match (uri.authority(), given.next(), given.next()) {
            (Some(authority), _, _) => Some(authority.as_str()),
            (None, Some(host), None) => Some(host.to_str().unwrap_or("?")),
            (None, Some(_), Some(_)) => {
                return Err(super::ApiError::Forbidden(
                    "the request names its host twice (Host given more than once)".into(),
                ));
            }
            (None, None, _) => None,
        };
        match host {
            Some(host) if !self.allows(host) => {
                let name: String = name_of(host).chars().take(100).collect();
                let allow = match AllowedHosts::parse(&name) {
                    Ok(_) => format!("start it with ALLOWED_HOSTS={name}"),
                    Err(_) => "list it in ALLOWED_HOSTS (in ASCII: punycode for other \
                               letters)"
                        .to_owned(),
                };
                Err(super::ApiError::Forbidden(format!(
                    "this server has no token, so it answers only requests addressed to \
                     localhost, an IP address or a name in ALLOWED_HOSTS (a web page may point \
                     a name of its own at it); to reach it as '{name}', {allow}, or give it a \
                     token"
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
            "[fd00::2]",
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
            "[evil]",
            "[::1]evil.example",
            "[::1]:80x",
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

    /// The authority of an absolute request target wins over `Host`; `Host` twice is refused
    /// (which one a proxy read is unknown); neither at all is answered.
    #[test]
    fn the_request_targets_host_wins_and_host_twice_is_refused() {
        let none = AllowedHosts::default();
        let headers = |hosts: &[&'static str]| {
            let mut map = HeaderMap::new();
            for host in hosts {
                map.append(header::HOST, http::HeaderValue::from_static(host));
            }
            map
        };
        let origin_form: Uri = "/workflows".parse().unwrap();
        let absolute: Uri = "http://evil.example:8000/workflows".parse().unwrap();
        assert!(
            none.check(&headers(&["localhost:8000"]), &origin_form)
                .is_ok()
        );
        assert!(
            none.check(&headers(&["localhost:8000"]), &absolute)
                .is_err()
        );
        assert!(
            none.check(&headers(&["localhost", "evil.example"]), &origin_form)
                .is_err()
        );
        assert!(none.check(&headers(&[]), &origin_form).is_ok());
        let said = none
            .check(&headers(&["evil.example:8000"]), &origin_form)
            .unwrap_err()
            .to_string();
        assert!(
            said.contains("start it with ALLOWED_HOSTS=evil.example,"),
            "{said}"
        );
        let mut unicode = HeaderMap::new();
        unicode.insert(
            header::HOST,
            http::HeaderValue::from_bytes("bücher.example".as_bytes()).unwrap(),
        );
        let said = none.check(&unicode, &origin_form).unwrap_err().to_string();
        assert!(said.contains("punycode"), "{said}");
    }
}
