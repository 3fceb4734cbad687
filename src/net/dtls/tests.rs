//! Handshakes between our OpenSSL sessions and other stacks, in memory: the browser-like
//! case (dimpl, str0m's default stack, as the peer), RSA and P-224 peers in both roles,
//! and a failed handshake that must end with an alert on the wire.

use std::time::{Duration, Instant};

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509Name, X509};
use str0m::crypto::dtls::{DtlsCert, DtlsInstance, DtlsOutput, DtlsVersion};

use super::*;

/// A self-signed certificate for `key`, as a DTLS peer makes one.
fn cert_for(key: PKey<Private>) -> DtlsCert {
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_text("CN", "peer").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let serial = BigNum::from_u32(7).unwrap().to_asn1_integer().unwrap();
    b.set_serial_number(&serial).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    DtlsCert {
        certificate: b.build().to_der().unwrap(),
        private_key: key.private_key_to_pkcs8().unwrap(),
    }
}

fn rsa_cert() -> DtlsCert {
    cert_for(PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap())
}

fn ec_cert(curve: Nid) -> DtlsCert {
    let group = EcGroup::from_curve_name(curve).unwrap();
    cert_for(PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap())
}

fn ours(cert: &DtlsCert) -> Box<dyn DtlsInstance> {
    DTLS.new_dtls(cert, Instant::now(), DtlsVersion::Dtls12, None)
        .expect("an OpenSSL session")
}

/// dimpl, str0m's default stack, with its own P-256 certificate: a browser stand-in.
fn dimpl_peer() -> (Box<dyn DtlsInstance>, DtlsCert) {
    let provider = str0m::crypto::from_feature_flags();
    let cert = provider.dtls_provider.generate_certificate().unwrap();
    let dtls = provider
        .dtls_provider
        .new_dtls(&cert, Instant::now(), DtlsVersion::Dtls12, None)
        .unwrap();
    (dtls, cert)
}

/// What one side handed out while the two talked.
#[derive(Default, Debug)]
struct Seen {
    connected: bool,
    peer_cert: Option<Vec<u8>>,
    keys: Option<Vec<u8>>,
    data: Vec<Vec<u8>>,
    close_notify: bool,
    /// Every datagram this side sent.
    sent: Vec<Vec<u8>>,
    error: Option<String>,
}

/// Drains `from`'s output, delivering its datagrams to `to`.
fn pump(from: &mut dyn DtlsInstance, to: &mut dyn DtlsInstance, seen: &mut Seen) -> bool {
    let mut buf = vec![0u8; 4096];
    let mut moved = false;
    loop {
        match from.poll_output(&mut buf) {
            DtlsOutput::Packet(p) => {
                seen.sent.push(p.to_vec());
                let _ = to.handle_packet(p);
                moved = true;
            }
            DtlsOutput::Connected => seen.connected = true,
            DtlsOutput::PeerCert(c) => seen.peer_cert = Some(c.to_vec()),
            DtlsOutput::KeyingMaterial(km, _) => seen.keys = Some(km.to_vec()),
            DtlsOutput::ApplicationData(d) => seen.data.push(d.to_vec()),
            DtlsOutput::CloseNotify => seen.close_notify = true,
            DtlsOutput::Timeout(_) => return moved,
            DtlsOutput::BufferTooSmall { needed } => buf.resize(needed, 0),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Runs a handshake between `client` and `server` until nothing moves.
fn talk(client: &mut dyn DtlsInstance, server: &mut dyn DtlsInstance) -> (Seen, Seen) {
    let (mut c, mut s) = (Seen::default(), Seen::default());
    server.set_active(false);
    client.set_active(true);
    let now = Instant::now();
    for round in 0..50 {
        let t = now + Duration::from_millis(round);
        if let Err(e) = client.handle_timeout(t) {
            c.error.get_or_insert(e.to_string());
        }
        if let Err(e) = server.handle_timeout(t) {
            s.error.get_or_insert(e.to_string());
        }
        let a = pump(client, server, &mut c);
        let b = pump(server, client, &mut s);
        if !a && !b && round > 2 {
            break;
        }
    }
    (c, s)
}

fn assert_connected(client: &Seen, server: &Seen, client_cert: &DtlsCert, server_cert: &DtlsCert) {
    let last = |s: &Seen| s.sent.last().map(|p| p[..p.len().min(16)].to_vec());
    assert!(
        client.connected && server.connected,
        "client {:?} {:?}, server {:?} {:?}",
        client.error,
        last(client),
        server.error,
        last(server)
    );
    assert_eq!(
        server.peer_cert.as_deref(),
        Some(&client_cert.certificate[..])
    );
    assert_eq!(
        client.peer_cert.as_deref(),
        Some(&server_cert.certificate[..])
    );
    let keys = server.keys.as_ref().expect("keys");
    assert_eq!(
        client.keys.as_ref(),
        Some(keys),
        "both ends export the same keys"
    );
    assert!(keys.len() >= 56);
}

#[test]
fn a_browser_like_ecdsa_client_connects_and_data_flows() {
    let server_cert = DTLS.generate_certificate().unwrap();
    let mut server = ours(&server_cert);
    let (mut client, client_cert) = dimpl_peer();
    let (c, s) = talk(&mut *client, &mut *server);
    assert_connected(&c, &s, &client_cert, &server_cert);
    // SCTP rides on application data both ways.
    assert_eq!(server.send_application_data(b"to client").unwrap(), 9);
    assert_eq!(client.send_application_data(b"to server").unwrap(), 9);
    let (mut c2, mut s2) = (Seen::default(), Seen::default());
    pump(&mut *server, &mut *client, &mut s2);
    pump(&mut *client, &mut *server, &mut c2);
    pump(&mut *server, &mut *client, &mut s2);
    assert_eq!(s2.data, vec![b"to server".to_vec()]);
    assert_eq!(c2.data, vec![b"to client".to_vec()]);
}

#[test]
fn an_rsa_client_connects() {
    let server_cert = DTLS.generate_certificate().unwrap();
    let client_cert = rsa_cert();
    let (mut server, mut client) = (ours(&server_cert), ours(&client_cert));
    let (c, s) = talk(&mut *client, &mut *server);
    assert_connected(&c, &s, &client_cert, &server_cert);
}

#[test]
fn a_p224_client_connects() {
    // FFmpeg 8's WHIP muxer makes itself a P-224 certificate.
    let server_cert = DTLS.generate_certificate().unwrap();
    let client_cert = ec_cert(Nid::SECP224R1);
    let (mut server, mut client) = (ours(&server_cert), ours(&client_cert));
    let (c, s) = talk(&mut *client, &mut *server);
    assert_connected(&c, &s, &client_cert, &server_cert);
}

#[test]
fn an_empty_datagram_does_not_end_the_handshake() {
    // str0m hands an active session an empty datagram right after `set_active` (found
    // with FFmpeg 8, whose offer is `setup:passive`: we are its DTLS client).
    let our_cert = DTLS.generate_certificate().unwrap();
    let rsa = rsa_cert();
    let (mut client, mut server) = (ours(&our_cert), ours(&rsa));
    client.set_active(true);
    client.handle_packet(&[]).unwrap();
    let (c, s) = talk(&mut *client, &mut *server);
    assert_connected(&c, &s, &our_cert, &rsa);
}

#[test]
fn as_client_we_connect_to_rsa_and_ecdsa_servers() {
    let our_cert = DTLS.generate_certificate().unwrap();
    let rsa = rsa_cert();
    let (mut client, mut server) = (ours(&our_cert), ours(&rsa));
    let (c, s) = talk(&mut *client, &mut *server);
    assert_connected(&c, &s, &our_cert, &rsa);

    let (mut server, server_cert) = dimpl_peer();
    let mut client = ours(&our_cert);
    let (c, s) = talk(&mut *client, &mut *server);
    assert_connected(&c, &s, &our_cert, &server_cert);
}

#[test]
fn close_sends_close_notify_and_the_peer_sees_it() {
    let server_cert = DTLS.generate_certificate().unwrap();
    let mut server = ours(&server_cert);
    let (mut client, _) = dimpl_peer();
    talk(&mut *client, &mut *server);
    server.close().unwrap();
    assert!(server.is_closing());
    let (mut s, mut c) = (Seen::default(), Seen::default());
    pump(&mut *server, &mut *client, &mut s);
    pump(&mut *client, &mut *server, &mut c);
    assert_eq!(s.sent.len(), 1, "one alert record");
    assert_eq!(s.sent[0][0], 21, "content type alert");
    assert!(c.close_notify, "the peer saw close_notify");
    assert!(server.is_closed());
    assert!(server.send_application_data(b"late").is_err());
}

#[test]
fn a_failed_handshake_sends_an_alert_then_reports_the_error() {
    // A client offering only suites without ECDHE: no suite in common with us.
    let mut ctx = openssl::ssl::SslContext::builder(openssl::ssl::SslMethod::dtls()).unwrap();
    ctx.set_cipher_list("AES128-GCM-SHA256").unwrap();
    ctx.set_tlsext_use_srtp("SRTP_AEAD_AES_128_GCM").unwrap();
    let mut ssl = openssl::ssl::Ssl::new(&ctx.build()).unwrap();
    ssl.set_connect_state();
    let mut client = openssl::ssl::SslStream::new(ssl, wire::Wire::default()).unwrap();
    assert!(client.do_handshake().is_err(), "waits for the server");
    let hello = client.get_mut().pop_outgoing().expect("a ClientHello");

    let server_cert = DTLS.generate_certificate().unwrap();
    let mut server = ours(&server_cert);
    server.set_active(false);
    server.handle_packet(&hello).unwrap();
    let mut seen = Seen::default();
    let mut buf = vec![0u8; 2048];
    loop {
        match server.poll_output(&mut buf) {
            DtlsOutput::Packet(p) => seen.sent.push(p.to_vec()),
            DtlsOutput::Timeout(_) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen.sent.len(), 1, "{:?}", seen.sent);
    assert_eq!(seen.sent[0][0], 21, "content type alert");
    let alert = &seen.sent[0][13..];
    assert_eq!(alert, [2, 40], "fatal handshake_failure");
    assert!(server.handle_timeout(Instant::now()).is_err());
}

#[test]
fn dtls_1_3_alone_is_refused_with_a_reason() {
    let cert = DTLS.generate_certificate().unwrap();
    let e = DTLS
        .new_dtls(&cert, Instant::now(), DtlsVersion::Dtls13, None)
        .unwrap_err();
    assert!(e.to_string().contains("DTLS 1.2"), "{e}");
}

#[test]
fn a_bad_key_is_an_error_not_a_panic() {
    let mut cert = DTLS.generate_certificate().unwrap();
    cert.private_key.truncate(10);
    assert!(DTLS
        .new_dtls(&cert, Instant::now(), DtlsVersion::Dtls12, None)
        .is_err());
}

/// Our session with the fingerprint its offer named for the peer set, as the engine does.
fn ours_expecting(cert: &DtlsCert, peer_cert: &DtlsCert) -> Box<dyn DtlsInstance> {
    let session = ours(cert);
    let handles = take_last_session().expect("the session's handles");
    let digest = openssl::hash::hash(MessageDigest::sha256(), &peer_cert.certificate).unwrap();
    handles
        .expected_peer
        .set(vec![Fingerprint {
            hash: "sha-256".into(),
            digest: digest.to_vec(),
        }])
        .unwrap();
    session
}

/// The fatal alert among `sent`, if any (content type 21; level and description are the
/// record's last two bytes: plaintext in a handshake that never finished).
fn fatal_alert(sent: &[Vec<u8>]) -> Option<u8> {
    sent.iter()
        .find(|p| p.first() == Some(&21) && p.len() >= 15 && p[13] == 2)
        .map(|p| p[14])
}

#[test]
fn the_offers_fingerprint_is_checked_in_the_handshake() {
    // The peer shows the certificate its offer named: connected, both roles.
    let (mut peer, peer_cert) = dimpl_peer();
    let cert = DTLS.generate_certificate().unwrap();
    let mut server = ours_expecting(&cert, &peer_cert);
    let (c, s) = talk(peer.as_mut(), server.as_mut());
    assert_connected(&c, &s, &peer_cert, &cert);

    // Another certificate than the offer's, peer as client: bad_certificate (42) goes
    // out, and the failure reaches str0m.
    let (mut peer, _) = dimpl_peer();
    let other = ec_cert(Nid::X9_62_PRIME256V1);
    let mut server = ours_expecting(&cert, &other);
    let (c, s) = talk(peer.as_mut(), server.as_mut());
    assert!(!s.connected && !c.connected, "server {s:?}");
    assert_eq!(fatal_alert(&s.sent), Some(42), "{:?}", s.sent.last());
    assert!(s.error.is_some(), "the failure is reported");

    // Peer as server (FFmpeg offers setup:passive): the same alert from us as client.
    let (mut peer, _) = dimpl_peer();
    let mut client = ours_expecting(&cert, &other);
    let (c, s) = talk(client.as_mut(), peer.as_mut());
    assert!(!c.connected, "client {c:?}");
    assert_eq!(fatal_alert(&c.sent), Some(42), "{:?}", c.sent.last());
    assert!(c.error.is_some(), "the failure is reported");
    let _ = s;
}
