//! `docs/grafana-dashboard.json` (issue 15) is a dashboard of metrics the server really
//! exports: the file parses, its panels do not overlap, and every metric its queries name
//! is in a scrape of `/metrics` from a real server with a viewer and a publisher (so the
//! per-stream series exist). A metric renamed in the code and not in the dashboard fails
//! here.

#[path = "common/raw_http.rs"]
mod raw_http;

use std::collections::BTreeSet;
use std::time::Duration;

use mixcast::client::whep::{play, PlayOptions};
use mixcast::client::whip::{PublishOptions, Publisher};
use mixcast::config::Config;
use mixcast::media::sources::ToneSource;
use mixcast::server::Server;

fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("mixcast_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn the_dashboard_queries_metrics_the_server_exports() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/grafana-dashboard.json"
    ))
    .unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "{} panels", panels.len());

    // No two panels share a grid cell.
    let mut cells = BTreeSet::new();
    for p in panels {
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(x + w <= 24, "{} is wider than the grid", p["title"]);
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(
                    cells.insert((cx, cy)),
                    "{} overlaps another panel",
                    p["title"]
                );
            }
        }
    }

    let server = Server::start(Config::loopback_ephemeral()).expect("server starts");
    let addr = server.http_addr();
    let publisher = Publisher::start(PublishOptions::new(
        format!("http://{addr}/mic/whip"),
        Box::new(ToneSource::sine(440, 660, 0.25)),
        Duration::from_secs(30),
    ))
    .expect("the publisher connects");
    play(&PlayOptions {
        url: format!("http://{addr}/mic/whep"),
        token: None,
        duration: Duration::from_secs(1),
        bind: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        decode: false,
    })
    .expect("the viewer plays");
    let reply = raw_http::exchange(
        addr,
        &raw_http::request("GET", "/metrics", &addr.to_string(), &[], b""),
        Duration::from_secs(5),
    )
    .expect("/metrics answers");
    assert_eq!(reply.status, 200);
    let scrape = reply.text();
    publisher.stop().expect("the publisher stops");
    server.shutdown();

    let mut queried = BTreeSet::new();
    for p in panels {
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            queried.extend(metric_names(expr));
        }
    }
    assert!(queried.len() >= 15, "{queried:?}");
    for name in &queried {
        let present = scrape
            .lines()
            .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")));
        assert!(
            present,
            "the dashboard queries {name}, which /metrics does not export"
        );
    }
    // The per-stream series it graphs have samples for the stream that was used.
    for name in [
        "mixcast_stream_sent_bytes_total",
        "mixcast_stream_received_bytes_total",
    ] {
        let line = scrape
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{stream=\"mic\"}}")))
            .unwrap_or_else(|| panic!("no {name} for mic in\n{scrape}"));
        let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(v > 0.0, "{line}");
    }
}
