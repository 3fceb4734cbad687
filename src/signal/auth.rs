//! Who may publish and who may read: Bearer tokens (RFC 6750, as RFC 9725 §4.5 asks of a
//! WHIP server) and the loopback rule for publishing.
//!
//! Owns: parsing `Authorization: Bearer <token>`, comparing tokens, deciding whether a
//! peer may publish. Never keeps or logs a configured token in clear (only its SHA-256),
//! and never compares a token in a way whose time depends on where it differs or on the
//! configured token's length. Knows no HTTP status codes: [`AuthError`] is turned into
//! one by `signal::error`.
//!
//! The rules:
//! - [`Access::Public`]: anyone. [`Access::Token`]: a request must carry one of the tokens.
//! - Publishing with no publish token configured is limited to loopback clients
//!   (127.0.0.0/8, `::1`, `::ffff:127.x.y.z`) unless the operator explicitly allows
//!   anyone: an unconfigured server on a public address must not become an open relay.
//!   Behind a reverse proxy on the same host every client looks local: configure a token.
//! - A configured token is never bypassed, not even from loopback.
//! - Loopback trust does not extend to a browser request from a page of another origin
//!   (`signal::origin` decides which those are): such a page must show a token.
//!
//! Status codes (for `signal::error`): a missing, malformed or wrong token is `401` with
//! `WWW-Authenticate: Bearer` (RFC 9725 §4.5, RFC 6750 §3). A non-loopback publisher when
//! no token is configured is `403 Forbidden`: there is no credential it could send, so a
//! `401` challenge would be a false promise (RFC 9110 §15.5.2 and §15.5.4).

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use aws_lc_rs::digest::{digest, SHA256, SHA256_OUTPUT_LEN};
use axum::http::{header, HeaderMap};
use subtle::{Choice, ConstantTimeEq};

/// A token the server accepts. Holds only the token's SHA-256: comparing digests of equal
/// length leaks nothing about the token's length, and `Debug` has nothing to print.
#[derive(Clone)]
pub struct Secret {
    digest: [u8; SHA256_OUTPUT_LEN],
}

/// A configured token that a client could not send as a Bearer token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a Bearer token is one or more of A-Z a-z 0-9 - . _ ~ + / followed by optional '=' \
     padding (RFC 6750 token68)"
)]
pub struct InvalidToken;

impl Secret {
    /// The secret for `token`, which must be valid RFC 6750 token68 syntax.
    pub fn new(token: &str) -> Result<Secret, InvalidToken> {
        if is_token68(token) {
            Ok(Secret {
                digest: sha256(token.as_bytes()),
            })
        } else {
            Err(InvalidToken)
        }
    }

    /// Whether `digest` (of a presented token) is this secret's, in constant time.
    fn matches(&self, digest: &[u8; SHA256_OUTPUT_LEN]) -> Choice {
        self.digest.ct_eq(digest)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl FromStr for Secret {
    type Err = InvalidToken;
    fn from_str(s: &str) -> Result<Secret, InvalidToken> {
        Secret::new(s)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        let token = String::deserialize(d)?;
        Secret::new(&token).map_err(serde::de::Error::custom)
    }
}

/// What a request must show to publish or to read.
#[derive(Debug, Clone, Default)]
pub enum Access {
    /// Nothing (for publishing, see [`may_publish`]).
    #[default]
    Public,
    /// A Bearer token equal to one of these. An empty list lets nobody in.
    Token(Vec<Secret>),
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header. `401`.
    #[error("a Bearer token is required")]
    Missing,
    /// An `Authorization` header that is not one well-formed Bearer token. `401`.
    #[error("the Authorization header is not a Bearer token")]
    Malformed,
    /// A Bearer token that is not one of ours. `401`.
    #[error("the Bearer token is not valid")]
    WrongToken,
    /// Publishing from a non-loopback address with no publish token configured. `403`.
    #[error("publishing is open to loopback clients only until a publish token is configured")]
    NotLoopback,
    /// Publishing without a token from loopback, by a page of another origin. `403`.
    #[error(
        "a web page of another origin may not publish without a token, even from this machine"
    )]
    CrossOrigin,
    /// `/metrics` from another machine (or a foreign page) while a read token hides streams
    /// and no metrics token is configured. `403`.
    #[error(
        "metrics name every stream, so while a read token is set they are open to this \
         machine only"
    )]
    MetricsNotLocal,
}

/// Checks `headers` against `required`: `Ok` for [`Access::Public`], else the request
/// must carry `Authorization: Bearer <token>` (scheme in any case, RFC 9110 §11.1) with
/// one of the configured tokens.
pub fn check(headers: &HeaderMap, required: &Access) -> Result<(), AuthError> {
    let Access::Token(secrets) = required else {
        return Ok(());
    };
    let token = bearer_token(headers)?;
    let presented = sha256(token.as_bytes());
    // No early exit: every secret is compared, whichever matches.
    let matched = secrets
        .iter()
        .fold(Choice::from(0), |acc, s| acc | s.matches(&presented));
    if bool::from(matched) {
        Ok(())
    } else {
        Err(AuthError::WrongToken)
    }
}

/// Whether `peer` may publish before any token check: always when a publish token is
/// configured (the token then decides), else only from loopback unless `allow_anyone`.
pub fn may_publish(peer: SocketAddr, publish: &Access, allow_anyone: bool) -> bool {
    match publish {
        Access::Token(_) => true,
        Access::Public => allow_anyone || is_loopback(peer.ip()),
    }
}

/// The whole publishing decision: [`may_publish`], then [`check`]. `local_page`: the request
/// is not a foreign page's (`signal::origin`); without it loopback is not trusted.
pub fn check_publish(
    headers: &HeaderMap,
    peer: SocketAddr,
    local_page: bool,
    publish: &Access,
    allow_anyone: bool,
) -> Result<(), AuthError> {
    if !may_publish(peer, publish, allow_anyone) {
        return Err(AuthError::NotLoopback);
    }
    if matches!(publish, Access::Public) && !allow_anyone && !local_page {
        return Err(AuthError::CrossOrigin);
    }
    check(headers, publish)
}

/// Who may read `/metrics`: with a metrics token configured, whoever shows it (from
/// anywhere); without one, anyone, unless a read token hides streams: then only this
/// machine (loopback, and not a foreign page: `local_page`), since the metrics name every
/// stream and count its viewers.
pub fn check_metrics(
    headers: &HeaderMap,
    peer: SocketAddr,
    local_page: bool,
    metrics: &Access,
    reads_protected: bool,
) -> Result<(), AuthError> {
    match metrics {
        Access::Token(_) => check(headers, metrics),
        Access::Public if reads_protected && !(is_loopback(peer.ip()) && local_page) => {
            Err(AuthError::MetricsNotLocal)
        }
        Access::Public => Ok(()),
    }
}

/// 127.0.0.0/8, `::1`, or an IPv4-mapped loopback address (`::ffff:127.x.y.z`, what a
/// dual-stack socket reports for an IPv4 client).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// The token of the request's single `Authorization: Bearer` header.
fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthError::Missing)?;
    if values.next().is_some() {
        return Err(AuthError::Malformed); // Authorization is a singleton field
    }
    let value = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, rest) = value
        .trim_matches([' ', '\t'])
        .split_once(' ')
        .ok_or(AuthError::Malformed)?;
    let token = rest.trim_start_matches(' ');
    if scheme.eq_ignore_ascii_case("bearer") && is_token68(token) {
        Ok(token)
    } else {
        Err(AuthError::Malformed)
    }
}

/// RFC 6750 §2.1 / RFC 9110 §11.2 token68:
/// `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_token68(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

fn sha256(data: &[u8]) -> [u8; SHA256_OUTPUT_LEN] {
    let mut out = [0; SHA256_OUTPUT_LEN];
    out.copy_from_slice(digest(&SHA256, data).as_ref()); // SHA-256 is 32 bytes
    out
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with_auth(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    fn tokens(list: &[&str]) -> Access {
        Access::Token(list.iter().map(|t| Secret::new(t).unwrap()).collect())
    }

    fn addr(s: &str) -> SocketAddr {
        SocketAddr::new(s.parse().unwrap(), 4242)
    }

    #[test]
    fn public_needs_nothing() {
        assert_eq!(check(&HeaderMap::new(), &Access::Public), Ok(()));
        assert_eq!(
            check(&with_auth(&[b"Basic Zm9vOmJhcg=="]), &Access::Public),
            Ok(())
        );
    }

    #[test]
    fn missing_header_and_wrong_scheme() {
        let access = tokens(&["s3cret-token"]);
        assert_eq!(check(&HeaderMap::new(), &access), Err(AuthError::Missing));
        for bad in [
            &b"Basic s3cret-token"[..],
            b"s3cret-token",
            b"Bearer",
            b"Bearer ",
            b"Bearers3cret-token",
            b"Token s3cret-token",
            b"Bearer s3cret token",
            b"Bearer s3cret-token,",
            b"Bearer =s3cret",
            b"Bearer s3c=ret",
            b"Bearer s3cret\xfftoken",
        ] {
            let got = check(&with_auth(&[bad]), &access);
            assert_eq!(
                got,
                Err(AuthError::Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Two Authorization headers, even if one is right.
        let two = with_auth(&[b"Bearer s3cret-token", b"Bearer other"]);
        assert_eq!(check(&two, &access), Err(AuthError::Malformed));
    }

    #[test]
    fn right_token_in_any_scheme_case() {
        let access = tokens(&["s3cret-token"]);
        for good in [
            &b"Bearer s3cret-token"[..],
            b"bearer s3cret-token",
            b"BEARER s3cret-token",
            b"Bearer   s3cret-token",
        ] {
            let got = check(&with_auth(&[good]), &access);
            assert_eq!(got, Ok(()), "{:?}", String::from_utf8_lossy(good));
        }
    }

    #[test]
    fn wrong_token_of_any_length_is_refused() {
        let access = tokens(&["s3cret-token"]);
        for wrong in [
            &b"Bearer s3cret-tokeN"[..], // same length
            b"Bearer s3cret-toke",       // shorter
            b"Bearer s3cret-token2",     // longer
            b"Bearer S3CRET-TOKEN",      // tokens are case-sensitive
            b"Bearer s3cret-token==",    // padding is part of the token
            b"Bearer x",
        ] {
            let got = check(&with_auth(&[wrong]), &access);
            assert_eq!(
                got,
                Err(AuthError::WrongToken),
                "{:?}",
                String::from_utf8_lossy(wrong)
            );
        }
    }

    #[test]
    fn any_of_several_tokens_and_none_of_none() {
        let access = tokens(&["first", "second/tok+en=="]);
        assert_eq!(check(&with_auth(&[b"Bearer first"]), &access), Ok(()));
        assert_eq!(
            check(&with_auth(&[b"Bearer second/tok+en=="]), &access),
            Ok(())
        );
        assert_eq!(
            check(&with_auth(&[b"Bearer third"]), &access),
            Err(AuthError::WrongToken)
        );
        let nobody = Access::Token(Vec::new());
        assert_eq!(
            check(&with_auth(&[b"Bearer first"]), &nobody),
            Err(AuthError::WrongToken)
        );
    }

    #[test]
    fn secrets_are_validated_and_never_printed() {
        assert_eq!(Secret::new("").err(), Some(InvalidToken));
        assert_eq!(Secret::new("a b").err(), Some(InvalidToken));
        assert_eq!(Secret::new("=abc").err(), Some(InvalidToken));
        assert_eq!(Secret::new("ab=c").err(), Some(InvalidToken));
        assert!(Secret::new("abc==").is_ok());
        assert!("A-Z.a_z~0+9/".parse::<Secret>().is_ok());
        let printed = format!("{:?}", tokens(&["hunter2"]));
        assert!(!printed.contains("hunter2"), "{printed}");

        #[derive(serde::Deserialize)]
        struct Conf {
            publish_token: Secret,
        }
        let conf: Conf = toml::from_str("publish_token = \"tok-1\"").unwrap();
        let access = Access::Token(vec![conf.publish_token]);
        assert_eq!(check(&with_auth(&[b"Bearer tok-1"]), &access), Ok(()));
        assert!(toml::from_str::<Conf>("publish_token = \"two words\"").is_err());
    }

    #[test]
    fn loopback_addresses() {
        for ip in [
            "127.0.0.1",
            "127.255.3.4",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:127.9.9.9",
        ] {
            assert!(is_loopback(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "10.0.0.1",
            "192.168.1.20",
            "0.0.0.0",
            "128.0.0.1",
            "::",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "::127.0.0.1", // deprecated IPv4-compatible, not mapped
            "fe80::1",
        ] {
            assert!(!is_loopback(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn publishing_without_a_token_is_loopback_only() {
        let open = Access::Public;
        assert!(may_publish(addr("127.0.0.1"), &open, false));
        assert!(may_publish(addr("::1"), &open, false));
        assert!(may_publish(addr("::ffff:127.0.0.1"), &open, false));
        assert!(!may_publish(addr("192.168.1.20"), &open, false));
        assert!(!may_publish(addr("::ffff:192.168.1.20"), &open, false));
        assert!(!may_publish(addr("2001:db8::1"), &open, false));
        assert!(may_publish(addr("192.168.1.20"), &open, true));

        let none = HeaderMap::new();
        assert_eq!(
            check_publish(&none, addr("127.0.0.1"), true, &open, false),
            Ok(())
        );
        assert_eq!(
            check_publish(&none, addr("192.168.1.20"), true, &open, false),
            Err(AuthError::NotLoopback)
        );
        // A foreign page on this machine is not trusted as loopback.
        assert_eq!(
            check_publish(&none, addr("127.0.0.1"), false, &open, false),
            Err(AuthError::CrossOrigin)
        );
        assert_eq!(
            check_publish(&none, addr("127.0.0.1"), false, &open, true),
            Ok(())
        );
        assert_eq!(
            check_publish(&none, addr("192.168.1.20"), false, &open, true),
            Ok(())
        );
    }

    #[test]
    fn metrics_follow_their_token_or_the_read_tokens() {
        let none = HeaderMap::new();
        let right = with_auth(&[b"Bearer m-tok"]);
        let metrics = tokens(&["m-tok"]);
        // Nothing hidden, no metrics token: open.
        assert_eq!(
            check_metrics(&none, addr("192.168.1.20"), true, &Access::Public, false),
            Ok(())
        );
        // A read token hides streams: this machine only, and not a foreign page.
        assert_eq!(
            check_metrics(&none, addr("192.168.1.20"), true, &Access::Public, true),
            Err(AuthError::MetricsNotLocal)
        );
        assert_eq!(
            check_metrics(&none, addr("127.0.0.1"), true, &Access::Public, true),
            Ok(())
        );
        assert_eq!(
            check_metrics(&none, addr("127.0.0.1"), false, &Access::Public, true),
            Err(AuthError::MetricsNotLocal)
        );
        // A metrics token decides from anywhere, loopback included.
        assert_eq!(
            check_metrics(&right, addr("192.168.1.20"), false, &metrics, true),
            Ok(())
        );
        assert_eq!(
            check_metrics(&none, addr("127.0.0.1"), true, &metrics, false),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn a_configured_token_decides_from_anywhere() {
        let access = tokens(&["pub-tok"]);
        let right = with_auth(&[b"Bearer pub-tok"]);
        let wrong = with_auth(&[b"Bearer nope"]);
        assert!(may_publish(addr("192.168.1.20"), &access, false));
        assert_eq!(
            check_publish(&right, addr("192.168.1.20"), false, &access, false),
            Ok(())
        );
        // Loopback does not bypass a token.
        assert_eq!(
            check_publish(&wrong, addr("127.0.0.1"), true, &access, false),
            Err(AuthError::WrongToken)
        );
        assert_eq!(
            check_publish(&HeaderMap::new(), addr("::1"), true, &access, true),
            Err(AuthError::Missing)
        );
    }
}
