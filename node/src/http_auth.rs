//! The HTTP API's guard, as one synchronous decision over a request's
//! path and headers: which `Host` a request may name (DNS rebinding),
//! which `Origin` may send it (CSRF), and whether it carries the mesh's API
//! token (`Authorization: Bearer <token>`, compared in constant time).
//!
//! Order: the `Host` check, then the `Origin` check (both for every path,
//! public ones too), then the public paths (`/healthz`, `/readyz`, the
//! status page `/` itself, and `/metrics` with `--public-metrics`), then
//! the token. A node that knows no token yet and is not open serves only
//! its own `/api/status` (to show `"admission": "pending"`).

use std::net::IpAddr;

use crate::admission::{secrets_equal, ApiAccess};

/// What the operator allows beyond the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpPolicy {
    /// Host names a request may name besides IP literals, `localhost` and
    /// `*.localhost` (`--http-host`, lowercase; `*` allows any).
    pub hosts: Vec<String>,
    /// `/metrics` needs no token (`--public-metrics`).
    pub public_metrics: bool,
}

/// The parts of a request the guard reads (header values as sent).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestFacts<'a> {
    /// The request path, without the query.
    pub path: &'a str,
    /// `Host` (or the HTTP/2 authority).
    pub host: Option<&'a str>,
    /// `Origin`.
    pub origin: Option<&'a str>,
    /// `Sec-Fetch-Site`.
    pub fetch_site: Option<&'a str>,
    /// `Authorization`.
    pub authorization: Option<&'a str>,
}

/// Why a request is refused; each maps to one status and one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRefusal {
    /// `Host` names something this node does not answer to (403).
    ForeignHost,
    /// Sent by a page of another origin (403).
    ForeignOrigin,
    /// No token (401).
    MissingToken,
    /// A token, but not the mesh's (401).
    WrongToken,
    /// The node does not know the mesh's token yet (503).
    Pending,
}

impl HttpRefusal {
    /// The HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            HttpRefusal::ForeignHost | HttpRefusal::ForeignOrigin => 403,
            HttpRefusal::MissingToken | HttpRefusal::WrongToken => 401,
            HttpRefusal::Pending => 503,
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            HttpRefusal::ForeignHost => "foreign_host",
            HttpRefusal::ForeignOrigin => "foreign_origin",
            HttpRefusal::MissingToken => "missing_token",
            HttpRefusal::WrongToken => "wrong_token",
            HttpRefusal::Pending => "pending",
        }
    }

    /// The one-line error for the client.
    pub fn message(self, facts: &RequestFacts<'_>) -> String {
        match self {
            HttpRefusal::ForeignHost => format!(
                "unexpected Host {:?}: this node answers to IP addresses and localhost; start it with --http-host NAME to allow a name",
                facts.host.unwrap_or_default()
            ),
            HttpRefusal::ForeignOrigin => format!(
                "cross-origin request refused (Origin {:?})",
                facts.origin.or(facts.fetch_site).unwrap_or_default()
            ),
            HttpRefusal::MissingToken => "an API token is required: send Authorization: Bearer TOKEN (the CLI: --api-token-file DATA_DIR/api-token, or CODITECT_API_TOKEN)".into(),
            HttpRefusal::WrongToken => "wrong API token".into(),
            HttpRefusal::Pending => "this node is not admitted yet and knows no API token; ask a member".into(),
        }
    }
}

/// Paths anyone who can reach the node may read.
fn is_public(path: &str, policy: &HttpPolicy) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/") || (path == "/metrics" && policy.public_metrics)
}

/// The host part of a `Host` value (`name`, `name:port`, `[v6]:port`),
/// lowercase; `None` when it is not one.
fn host_name(host: &str) -> Option<String> {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        inside
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return None,
            None => host,
        }
    };
    (!name.is_empty()).then(|| name.to_ascii_lowercase())
}

fn is_port(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_digit()) && text.parse::<u16>().is_ok()
}

/// Whether a request may name `host`.
fn host_allowed(host: &str, policy: &HttpPolicy) -> bool {
    let Some(name) = host_name(host) else {
        return false;
    };
    let name = name.trim_end_matches('.');
    name.parse::<IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || policy
            .hosts
            .iter()
            .any(|allowed| allowed == "*" || allowed.trim_end_matches('.') == name)
}

/// Whether `origin` (`scheme://authority`) is the origin of this API as
/// the request names it in `host`.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else {
        return false;
    };
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|authority| authority.eq_ignore_ascii_case(host.trim()))
}

/// The token in an `Authorization: Bearer <token>` value.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// The guard's verdict on one request: `Ok` to serve it.
pub fn decide(
    facts: &RequestFacts<'_>,
    access: &ApiAccess,
    policy: &HttpPolicy,
) -> Result<(), HttpRefusal> {
    if let Some(host) = facts.host {
        if !host_allowed(host, policy) {
            return Err(HttpRefusal::ForeignHost);
        }
    }
    if let Some(origin) = facts.origin {
        if !same_origin(origin, facts.host) {
            return Err(HttpRefusal::ForeignOrigin);
        }
    } else if facts
        .fetch_site
        .is_some_and(|site| site.eq_ignore_ascii_case("cross-site"))
    {
        return Err(HttpRefusal::ForeignOrigin);
    }
    if is_public(facts.path, policy) {
        return Ok(());
    }
    match access {
        ApiAccess::Open => Ok(()),
        ApiAccess::Pending if facts.path == "/api/status" => Ok(()),
        ApiAccess::Pending => Err(HttpRefusal::Pending),
        ApiAccess::Token(token) => match facts.authorization.and_then(bearer) {
            None => Err(HttpRefusal::MissingToken),
            Some(given) if secrets_equal(given.as_bytes(), token.as_bytes()) => Ok(()),
            Some(_) => Err(HttpRefusal::WrongToken),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn token() -> ApiAccess {
        ApiAccess::Token(TOKEN.into())
    }

    fn facts<'a>(path: &'a str, authorization: Option<&'a str>) -> RequestFacts<'a> {
        RequestFacts {
            path,
            host: Some("127.0.0.1:7070"),
            authorization,
            ..Default::default()
        }
    }

    #[test]
    fn the_token_is_needed_for_everything_but_health_and_the_page() {
        let policy = HttpPolicy::default();
        for path in [
            "/api/status",
            "/api/missions",
            "/api/blobs/x",
            "/metrics",
            "/nope",
        ] {
            assert_eq!(
                decide(&facts(path, None), &token(), &policy),
                Err(HttpRefusal::MissingToken),
                "{path}"
            );
            assert_eq!(
                decide(&facts(path, Some("Bearer wrong")), &token(), &policy),
                Err(HttpRefusal::WrongToken)
            );
            let good = format!("Bearer {TOKEN}");
            assert_eq!(decide(&facts(path, Some(&good)), &token(), &policy), Ok(()));
            let lower = format!("bearer  {TOKEN} ");
            assert_eq!(
                decide(&facts(path, Some(&lower)), &token(), &policy),
                Ok(())
            );
        }
        for path in ["/healthz", "/readyz", "/"] {
            assert_eq!(decide(&facts(path, None), &token(), &policy), Ok(()));
        }
        let public = HttpPolicy {
            public_metrics: true,
            ..Default::default()
        };
        assert_eq!(decide(&facts("/metrics", None), &token(), &public), Ok(()));
        assert_eq!(
            decide(
                &facts("/api/status", Some(&format!("Basic {TOKEN}"))),
                &token(),
                &public
            ),
            Err(HttpRefusal::MissingToken)
        );
    }

    #[test]
    fn open_and_pending_nodes() {
        let policy = HttpPolicy::default();
        assert_eq!(
            decide(&facts("/api/missions", None), &ApiAccess::Open, &policy),
            Ok(())
        );
        assert_eq!(
            decide(&facts("/api/status", None), &ApiAccess::Pending, &policy),
            Ok(())
        );
        assert_eq!(
            decide(&facts("/api/missions", None), &ApiAccess::Pending, &policy),
            Err(HttpRefusal::Pending)
        );
        assert_eq!(HttpRefusal::Pending.status(), 503);
    }

    #[test]
    fn hosts_other_than_addresses_and_localhost_are_refused() {
        let policy = HttpPolicy {
            hosts: vec!["coditect.internal".into()],
            ..Default::default()
        };
        for host in [
            "127.0.0.1:7070",
            "10.1.2.3",
            "[::1]:7070",
            "[fe80::1]",
            "localhost:7070",
            "LOCALHOST",
            "node.localhost:1",
            "coditect.internal:7070",
            "Coditect.Internal.",
        ] {
            let mut request = facts("/healthz", None);
            request.host = Some(host);
            assert_eq!(
                decide(&request, &ApiAccess::Open, &policy),
                Ok(()),
                "{host}"
            );
        }
        for host in [
            "attacker.example",
            "attacker.example:7070",
            "127.0.0.1.attacker.example",
            "localhost.attacker.example",
            "[::1",
            "127.0.0.1:70700",
            "",
            ":7070",
        ] {
            let mut request = facts("/healthz", None);
            request.host = Some(host);
            assert_eq!(
                decide(&request, &ApiAccess::Open, &policy),
                Err(HttpRefusal::ForeignHost),
                "{host}"
            );
        }
        let any = HttpPolicy {
            hosts: vec!["*".into()],
            ..Default::default()
        };
        let mut request = facts("/healthz", None);
        request.host = Some("anything.example");
        assert_eq!(decide(&request, &ApiAccess::Open, &any), Ok(()));
    }

    #[test]
    fn only_the_apis_own_origin_may_send() {
        let policy = HttpPolicy::default();
        let good = format!("Bearer {TOKEN}");
        let mut request = facts("/api/missions", Some(&good));
        request.origin = Some("http://127.0.0.1:7070");
        assert_eq!(decide(&request, &token(), &policy), Ok(()));
        request.origin = Some("https://127.0.0.1:7070");
        assert_eq!(decide(&request, &token(), &policy), Ok(()));
        for origin in [
            "http://attacker.example",
            "http://127.0.0.1:8080",
            "null",
            "file://",
            "http://127.0.0.1:7070.attacker.example",
        ] {
            request.origin = Some(origin);
            assert_eq!(
                decide(&request, &ApiAccess::Open, &policy),
                Err(HttpRefusal::ForeignOrigin),
                "{origin}"
            );
        }
        let mut request = facts("/api/missions", None);
        request.fetch_site = Some("cross-site");
        assert_eq!(
            decide(&request, &ApiAccess::Open, &policy),
            Err(HttpRefusal::ForeignOrigin)
        );
        request.fetch_site = Some("same-origin");
        assert_eq!(decide(&request, &ApiAccess::Open, &policy), Ok(()));
    }

    proptest! {
        /// No token but the mesh's opens a guarded path, whatever is sent.
        #[test]
        fn only_the_exact_token_opens(given in "[ -~]{0,80}", path in "/api/[a-z/]{0,20}") {
            let header = format!("Bearer {given}");
            let verdict = decide(&facts(&path, Some(&header)), &token(), &HttpPolicy::default());
            prop_assert_eq!(verdict.is_ok(), given.trim() == TOKEN);
        }

        /// Whatever the headers, the guard answers and never panics.
        #[test]
        fn any_headers(host in "[ -~]{0,40}", origin in "[ -~]{0,40}", auth in "[ -~]{0,40}") {
            let request = RequestFacts {
                path: "/api/status",
                host: Some(&host),
                origin: Some(&origin),
                fetch_site: None,
                authorization: Some(&auth),
            };
            let _ = decide(&request, &token(), &HttpPolicy::default());
        }
    }
}
