//! The HTTP half of WHIP/WHEP (RFC 9725 and the WHEP draft): POST an SDP offer, get a
//! session URL and an answer; DELETE the session at the end.
//!
//! Owns only the HTTP exchange: it never touches SDP beyond carrying it, and every request
//! is bounded by `REQUEST_TIMEOUT`.

use super::whep::ClientError;
use std::time::Duration;
use ureq::http::{StatusCode, Uri};

/// Longest any one request (connect, send, read the whole answer) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer we read; real answers are a few kB.
const MAX_BODY: u64 = 1 << 20;

/// A session the server created for our offer.
#[derive(Debug, Clone)]
pub(crate) struct Created {
    /// The session URL (the 201's `Location`, resolved against the endpoint's URL).
    pub session_url: String,
    /// The SDP answer.
    pub answer: String,
}

/// An HTTP client for one WHIP/WHEP endpoint and its sessions.
pub(crate) struct SignalClient {
    agent: ureq::Agent,
    authorization: Option<String>,
}

impl SignalClient {
    /// A client that sends `token`, if any, as a Bearer token on every request.
    pub(crate) fn new(token: Option<&str>) -> SignalClient {
        let config = ureq::Agent::config_builder()
            // Statuses are part of the protocol: we read them ourselves.
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            // Media goes straight to the server over UDP; an HTTP proxy would only
            // separate signalling from media.
            .proxy(None)
            .build();
        SignalClient {
            agent: config.into(),
            authorization: token.map(|t| format!("Bearer {t}")),
        }
    }

    /// POSTs `offer` to `endpoint`; expects `201 Created` with a `Location`.
    pub(crate) fn post_offer(&self, endpoint: &str, offer: &str) -> Result<Created, ClientError> {
        let mut request = self
            .agent
            .post(endpoint)
            .header("Content-Type", "application/sdp");
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        let mut response = request
            .send(offer)
            .map_err(|e| ClientError::Http(format!("POST {endpoint}: {e}")))?;
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_body(response.body_mut(), "POST", endpoint)?;
        if status != StatusCode::CREATED {
            return Err(ClientError::Status {
                method: "POST",
                url: endpoint.to_owned(),
                status: status.as_u16(),
                body,
            });
        }
        let location = location.ok_or_else(|| {
            ClientError::Http(format!("POST {endpoint}: 201 without a Location header"))
        })?;
        Ok(Created {
            session_url: resolve(endpoint, &location)?,
            answer: body,
        })
    }

    /// DELETEs a session; expects `200 OK`.
    pub(crate) fn delete(&self, session_url: &str) -> Result<(), ClientError> {
        let mut request = self.agent.delete(session_url);
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        let mut response = request
            .call()
            .map_err(|e| ClientError::Http(format!("DELETE {session_url}: {e}")))?;
        let status = response.status();
        if status != StatusCode::OK {
            let body = read_body(response.body_mut(), "DELETE", session_url)?;
            return Err(ClientError::Status {
                method: "DELETE",
                url: session_url.to_owned(),
                status: status.as_u16(),
                body,
            });
        }
        Ok(())
    }
}

fn read_body(body: &mut ureq::Body, method: &str, url: &str) -> Result<String, ClientError> {
    body.with_config()
        .limit(MAX_BODY)
        .lossy_utf8(true)
        .read_to_string()
        .map_err(|e| ClientError::Http(format!("{method} {url}: reading the body: {e}")))
}

/// Resolves a `Location` header against the URL of the request (RFC 3986, section 5.2).
pub(crate) fn resolve(base: &str, reference: &str) -> Result<String, ClientError> {
    let bad =
        |what: &str| ClientError::Http(format!("cannot resolve Location {reference:?}: {what}"));
    let base_uri: Uri = base.parse().map_err(|_| bad("the base URL is invalid"))?;
    let (Some(scheme), Some(authority)) = (base_uri.scheme_str(), base_uri.authority()) else {
        return Err(bad("the base URL is not absolute"));
    };
    if has_scheme(reference) {
        return Ok(reference.to_owned());
    }
    if let Some(rest) = reference.strip_prefix("//") {
        return Ok(format!("{scheme}://{rest}"));
    }
    let (ref_path, ref_tail) = split_path(reference);
    let path = if ref_path.is_empty() {
        // Only a query or a fragment: the base's path stays.
        if ref_tail.starts_with('#') {
            format!("{}{}", base_uri.path(), query_part(&base_uri))
        } else {
            base_uri.path().to_owned()
        }
    } else if ref_path.starts_with('/') {
        remove_dot_segments(ref_path)
    } else {
        let base_path = base_uri.path();
        let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
        let dir = if dir.is_empty() { "/" } else { dir };
        remove_dot_segments(&format!("{dir}{ref_path}"))
    };
    Ok(format!("{scheme}://{authority}{path}{ref_tail}"))
}

fn has_scheme(reference: &str) -> bool {
    match reference.find(':') {
        Some(colon) => {
            let scheme = &reference[..colon];
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

/// Splits a relative reference into its path and the `?query#fragment` that follows.
fn split_path(reference: &str) -> (&str, &str) {
    let end = reference.find(['?', '#']).unwrap_or(reference.len());
    reference.split_at(end)
}

fn query_part(uri: &Uri) -> String {
    uri.query().map(|q| format!("?{q}")).unwrap_or_default()
}

/// RFC 3986, section 5.2.4, for absolute paths.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "http://127.0.0.1:8889/live/whep";

    fn r(reference: &str) -> String {
        resolve(BASE, reference).expect("resolves")
    }

    #[test]
    fn absolute_path() {
        assert_eq!(r("/live/whep/abc"), "http://127.0.0.1:8889/live/whep/abc");
        assert_eq!(r("/session/1?x=y"), "http://127.0.0.1:8889/session/1?x=y");
    }

    #[test]
    fn relative_path() {
        assert_eq!(r("abc"), "http://127.0.0.1:8889/live/abc");
        assert_eq!(r("whep/abc"), "http://127.0.0.1:8889/live/whep/abc");
        assert_eq!(r("../s/1"), "http://127.0.0.1:8889/s/1");
        assert_eq!(r("./s/./1"), "http://127.0.0.1:8889/live/s/1");
        assert_eq!(r("../../../s"), "http://127.0.0.1:8889/s");
    }

    #[test]
    fn absolute_and_network_path() {
        assert_eq!(r("https://example.test/s/1"), "https://example.test/s/1");
        assert_eq!(r("//[::1]:9/s"), "http://[::1]:9/s");
    }

    #[test]
    fn query_only() {
        assert_eq!(r("?id=3"), "http://127.0.0.1:8889/live/whep?id=3");
    }

    #[test]
    fn bad_base_is_an_error() {
        assert!(resolve("/relative/only", "x").is_err());
        assert!(resolve("not a url", "x").is_err());
    }
}
