//! The effective configuration (file, environment and flags applied) written back as TOML in
//! the config file's own keys, for `--check-config`: what the server would run with, in a
//! form that can be saved and used as a config file. Secrets are never written: tokens and
//! TURN credentials are left out, and a comment at the top says which were set.

use toml::{Table, Value};

use super::{Config, TokenRules};

/// Leaves secrets out; lists in `redacted` what was left out.
fn tokens(rules: &TokenRules, key: &str, redacted: &mut Vec<String>) {
    if !rules.default.is_empty() {
        redacted.push(format!("{key} ({} set)", rules.default.len()));
    }
    for (stream, t) in &rules.per_stream {
        redacted.push(format!("streams.{stream}.{key} ({} set)", t.len()));
    }
}

fn int(n: impl TryInto<i64>) -> Value {
    Value::Integer(n.try_into().unwrap_or(i64::MAX))
}

impl Config {
    /// The configuration as a TOML config file, secrets left out (see the module doc).
    pub fn to_toml(&self) -> String {
        let mut t = Table::new();
        t.insert("bind".into(), Value::String(self.bind.to_string()));
        t.insert("http_port".into(), int(self.http_port));
        t.insert("udp_port".into(), int(self.udp_port));
        t.insert(
            "public_ips".into(),
            Value::Array(
                self.public_ips
                    .iter()
                    .map(|ip| Value::String(ip.to_string()))
                    .collect(),
            ),
        );
        t.insert("max_viewers".into(), int(self.max_viewers));
        t.insert("max_publishers".into(), int(self.max_publishers));
        t.insert("max_streams".into(), int(self.max_streams));
        t.insert("max_pending_per_ip".into(), int(self.max_pending_per_ip));
        t.insert(
            "max_connections_per_ip".into(),
            int(self.http.max_connections_per_ip),
        );
        t.insert(
            "header_timeout".into(),
            Value::Float(self.http.header_timeout.as_secs_f64()),
        );
        t.insert(
            "body_timeout".into(),
            Value::Float(self.http.body_timeout.as_secs_f64()),
        );
        t.insert("bitrate".into(), int(self.bitrate));
        t.insert(
            "fanout".into(),
            Value::String(format!("{:?}", self.fanout).to_lowercase()),
        );
        t.insert("tx_threads".into(), int(self.tx_threads));
        t.insert(
            "allow_public_publish".into(),
            Value::Boolean(self.auth.allow_public_publish),
        );
        // The recorded streams as the top-level list (`--record`'s key): a stream named
        // there is recorded whenever it exists without being configured by it.
        t.insert(
            "record".into(),
            Value::Array(
                self.record
                    .streams
                    .iter()
                    .map(|s| Value::String(s.clone()))
                    .collect(),
            ),
        );
        // Absolute: the folder the server would use, whichever folder this file is
        // saved in (a relative path in a config file is the file's folder's).
        let dir = std::path::absolute(&self.record.dir).unwrap_or_else(|_| self.record.dir.clone());
        t.insert(
            "record_dir".into(),
            Value::String(dir.display().to_string()),
        );
        t.insert(
            "record_segment_seconds".into(),
            int(self.record.segment.as_secs()),
        );

        let mut redacted = Vec::new();
        tokens(&self.auth.publish, "publish_tokens", &mut redacted);
        tokens(&self.auth.read, "read_tokens", &mut redacted);
        if !self.auth.metrics.is_empty() {
            redacted.push(format!("metrics_tokens ({} set)", self.auth.metrics.len()));
        }

        if let Some(tls) = &self.tls {
            let mut s = Table::new();
            s.insert("cert".into(), Value::String(tls.cert.display().to_string()));
            s.insert("key".into(), Value::String(tls.key.display().to_string()));
            t.insert("tls".into(), Value::Table(s));
        }
        let mut ice = Vec::new();
        for (i, server) in self.ice_servers.iter().enumerate() {
            let mut s = Table::new();
            s.insert("url".into(), Value::String(server.url.clone()));
            if let Some(u) = &server.username {
                s.insert("username".into(), Value::String(u.clone()));
            }
            if server.credential.is_some() {
                redacted.push(format!("ice_servers[{i}].credential"));
            }
            ice.push(Value::Table(s));
        }
        if !ice.is_empty() {
            t.insert("ice_servers".into(), Value::Array(ice));
        }
        let mut streams = Table::new();
        for s in &self.streams {
            let mut st = Table::new();
            let sources = s
                .sources
                .iter()
                .map(|input| {
                    let mut one = Table::new();
                    one.insert("source".into(), Value::String(input.spec.to_string()));
                    one.insert("gain".into(), Value::Float(f64::from(input.gain)));
                    Value::Table(one)
                })
                .collect();
            st.insert("sources".into(), Value::Array(sources));
            st.insert("video".into(), Value::String(s.video.to_string()));
            streams.insert(s.name.clone(), Value::Table(st));
        }
        t.insert("streams".into(), Value::Table(streams));

        let mut out = String::from(
            "# mixcast: the effective configuration (config file, environment and flags \
             applied).\n",
        );
        if redacted.is_empty() {
            out.push_str("# No secrets are set.\n");
        } else {
            out.push_str(&format!(
                "# Secrets set and not shown here: {}.\n",
                redacted.join(", ")
            ));
        }
        out.push('\n');
        out.push_str(&toml::to_string(&t).unwrap_or_else(|e| format!("# not shown: {e}\n")));
        out
    }
}
