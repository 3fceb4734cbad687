//! Browsers' cross-origin requests: whether a request comes from a page of another origin,
//! and how CORS preflights (with Private Network Access) are answered.
//!
//! Why it matters: publishing without a token is open to loopback clients, and a browser on
//! the server's machine is a loopback client for every page it has open. So the loopback
//! rule holds only for requests that no foreign page made: no `Origin` (curl, FFmpeg, OBS,
//! GStreamer), or our own origin (the page this server serves) under a loopback host name
//! (`localhost`, 127.0.0.0/8, `[::1]`: a rebound DNS name is not one). Anything else must
//! show a token like a remote publisher.
//!
//! Preflights are answered deliberately:
//! - WHEP endpoints and every session URL: any origin, `Authorization` allowed, and Private
//!   Network Access granted (players on other sites; a read token, when set, still decides).
//! - WHIP endpoints from another origin: granted (with PNA) only when a token could let the
//!   POST in (a publish token for the stream, or `--allow-public-publish`); otherwise 403,
//!   since the POST would be refused anyway.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue};

use super::auth::is_loopback;

/// The scheme a connection was accepted on (a request extension set by `signal::conn`;
/// absent when the router is called without a socket, then taken as `http`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTPS.
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// `Access-Control-Request-Private-Network` (Chrome's Private Network Access preflight).
pub const REQUEST_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-request-private-network");
/// Its answer.
pub const ALLOW_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-allow-private-network");

/// Where a request comes from, as far as browsers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOrigin {
    /// No `Origin`: not a cross-origin browser request.
    NoOrigin,
    /// The server's own origin, under a loopback host name.
    OwnLoopback,
    /// Another origin (or ours under a non-loopback name): the `Origin` as sent, for logs.
    Foreign(String),
}

impl RequestOrigin {
    /// Whether the loopback rule may trust this request.
    pub fn trusted_locally(&self) -> bool {
        !matches!(self, RequestOrigin::Foreign(_))
    }
}

/// Classifies a request by its `Origin` and `Host` (`:authority` in HTTP/2, which hyper
/// puts in the URI) headers.
pub fn classify(headers: &HeaderMap, authority: Option<&str>, scheme: Scheme) -> RequestOrigin {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return RequestOrigin::NoOrigin;
    };
    let origin_text = String::from_utf8_lossy(origin.as_bytes()).into_owned();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or(authority);
    let (Some(o), Some(h)) = (parse_origin(&origin_text), host.and_then(parse_host)) else {
        return RequestOrigin::Foreign(origin_text);
    };
    let own = o.0 == scheme.as_str()
        && o.1.eq_ignore_ascii_case(&h.0)
        && o.2 == h.1.unwrap_or(scheme.default_port());
    if own && loopback_host(&h.0) {
        RequestOrigin::OwnLoopback
    } else {
        RequestOrigin::Foreign(origin_text)
    }
}

/// `scheme://host[:port]` → (scheme, host, port with the scheme's default).
fn parse_origin(s: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = s.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let (host, port) = parse_host(rest)?;
    Some((scheme, host, port.unwrap_or(default)))
}

/// `host[:port]` or `[v6][:port]` → (host without brackets, port).
fn parse_host(s: &str) -> Option<(String, Option<u16>)> {
    if s.is_empty() || s.contains(['/', '@', ' ']) {
        return None;
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        match after {
            "" => (h, None),
            p => (h, Some(p.strip_prefix(':')?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    (!host.is_empty()).then(|| (host.to_ascii_lowercase(), port))
}

/// `localhost`, `*.localhost` (RFC 6761 §6.3) or a loopback address.
fn loopback_host(host: &str) -> bool {
    host == "localhost" || host.ends_with(".localhost") || host.parse().is_ok_and(is_loopback)
}

/// Whether a preflight asks for Private Network Access.
pub fn asks_private_network(headers: &HeaderMap) -> bool {
    headers
        .get(REQUEST_PRIVATE_NETWORK)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
}

/// Grants Private Network Access in a preflight's answer when asked for.
pub fn grant_private_network(req: &HeaderMap, res: &mut HeaderMap) {
    if asks_private_network(req) {
        res.insert(ALLOW_PRIVATE_NETWORK, HeaderValue::from_static("true"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h.insert(header::HOST, host.parse().unwrap());
        h
    }

    #[test]
    fn own_origin_on_loopback_only() {
        let c = |o, host, s| classify(&req(o, host), None, s);
        assert_eq!(
            c(None, "127.0.0.1:8889", Scheme::Http),
            RequestOrigin::NoOrigin
        );
        for (o, host) in [
            ("http://127.0.0.1:8889", "127.0.0.1:8889"),
            ("http://LOCALHOST:8889", "localhost:8889"),
            ("http://[::1]:8889", "[::1]:8889"),
            ("http://localhost", "localhost:80"),
            ("http://app.localhost:9", "app.localhost:9"),
        ] {
            assert_eq!(
                c(Some(o), host, Scheme::Http),
                RequestOrigin::OwnLoopback,
                "{o}"
            );
        }
        for (o, host, s) in [
            ("https://evil.example", "127.0.0.1:8889", Scheme::Http),
            ("null", "127.0.0.1:8889", Scheme::Http),
            ("http://127.0.0.1:8890", "127.0.0.1:8889", Scheme::Http),
            ("https://127.0.0.1:8889", "127.0.0.1:8889", Scheme::Http),
            ("http://127.0.0.1:8889", "127.0.0.1:8889", Scheme::Https),
            // DNS rebinding: our origin, but under a name that is not loopback.
            (
                "http://evil.example:8889",
                "evil.example:8889",
                Scheme::Http,
            ),
            ("http://127.0.0.1:8889", "", Scheme::Http),
        ] {
            if host.is_empty() {
                let mut h = HeaderMap::new();
                h.insert(header::ORIGIN, o.parse().unwrap());
                assert!(matches!(classify(&h, None, s), RequestOrigin::Foreign(_)));
                continue;
            }
            assert!(
                matches!(c(Some(o), host, s), RequestOrigin::Foreign(_)),
                "{o} {host}"
            );
        }
        // HTTP/2: the authority from the URI.
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, "https://localhost:8443".parse().unwrap());
        assert_eq!(
            classify(&h, Some("localhost:8443"), Scheme::Https),
            RequestOrigin::OwnLoopback
        );
    }

    #[test]
    fn private_network_is_granted_only_when_asked() {
        let mut asked = HeaderMap::new();
        asked.insert(REQUEST_PRIVATE_NETWORK, "true".parse().unwrap());
        let mut res = HeaderMap::new();
        grant_private_network(&HeaderMap::new(), &mut res);
        assert!(res.is_empty());
        grant_private_network(&asked, &mut res);
        assert_eq!(res.get(ALLOW_PRIVATE_NETWORK).unwrap(), "true");
    }
}
