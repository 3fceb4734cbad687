//! Server configuration: an optional TOML file, overridden by flags and environment
//! variables, validated once at start-up into a [`Config`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

mod effective;

use crate::media::sources::SourceSpec;
use crate::record::RecordConfig;
use crate::signal::auth::{Access, Secret};
use crate::signal::listen::HttpLimits;
use crate::streams::VideoSource;

/// The default HTTP port (MediaMTX's WebRTC port, so its users feel at home).
pub const DEFAULT_HTTP_PORT: u16 = 8889;
/// The default UDP port for every peer's ICE and media (MediaMTX's).
pub const DEFAULT_UDP_PORT: u16 = 8189;
/// The default cap on viewers.
pub const DEFAULT_MAX_VIEWERS: usize = 10_000;

/// Most TX threads `--tx-threads` takes.
pub const MAX_TX_THREADS: usize = 64;
/// The default Opus bitrate of a mix, bits per second.
pub const DEFAULT_BITRATE: u32 = 128_000;
/// The default cap on WHIP publishers (each costs a decoder and a jitter buffer per tick).
pub const DEFAULT_MAX_PUBLISHERS: usize = 256;
/// Most streams publishers may create at once (`--max-streams`). Each audible stream costs
/// its mix and one Opus encode per tick (about 0.6% of a core here), so 64 of them take
/// under half a core and leave the rest to the fan-out; a silent one costs next to nothing.
/// Configured streams do not count.
pub const DEFAULT_MAX_STREAMS: usize = 64;

/// Bearer tokens for one direction (publishing or reading): for every stream, and per
/// stream (a stream's own tokens replace the default ones).
#[derive(Debug, Clone, Default)]
pub struct TokenRules {
    /// Tokens for every stream without tokens of its own.
    pub default: Vec<Secret>,
    /// Tokens of one stream.
    pub per_stream: BTreeMap<String, Vec<Secret>>,
}

impl TokenRules {
    /// What a request for `stream` must show.
    pub fn access(&self, stream: &str) -> Access {
        let tokens = self.per_stream.get(stream).unwrap_or(&self.default);
        if tokens.is_empty() {
            Access::Public
        } else {
            Access::Token(tokens.clone())
        }
    }

    /// Whether any token is configured.
    pub fn any(&self) -> bool {
        !self.default.is_empty() || !self.per_stream.is_empty()
    }

    /// Adds `[STREAM=]TOKEN` (a flag's value). A Bearer token (RFC 6750 token68) has `=`
    /// only as padding at its end, so `NAME=TOKEN` is unambiguous: `=` followed by
    /// something other than more `=` separates a stream name from its token.
    fn add_flag(&mut self, flag: &str, value: &str) -> Result<(), ConfigError> {
        let bad =
            |e: crate::signal::auth::InvalidToken| ConfigError::Invalid(format!("{flag}: {e}"));
        match value.split_once('=') {
            Some((stream, token)) if !token.is_empty() && !token.starts_with('=') => {
                if !valid_stream_name(stream) {
                    return Err(ConfigError::Invalid(format!(
                        "{flag} {stream:?}=...: not a stream name"
                    )));
                }
                self.per_stream
                    .entry(stream.to_string())
                    .or_default()
                    .push(Secret::new(token).map_err(bad)?)
            }
            _ => self.default.push(Secret::new(value).map_err(bad)?),
        }
        Ok(())
    }
}

/// Who may publish and read.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Tokens for WHIP (publishing).
    pub publish: TokenRules,
    /// Tokens for WHEP (reading).
    pub read: TokenRules,
    /// With no publish token for a stream, let anyone publish to it (not only loopback).
    pub allow_public_publish: bool,
    /// Tokens for `/metrics`; none: see [`crate::signal::auth::check_metrics`].
    pub metrics: Vec<Secret>,
}

impl AuthConfig {
    /// What a request for `/metrics` must show.
    pub fn metrics_access(&self) -> Access {
        if self.metrics.is_empty() {
            Access::Public
        } else {
            Access::Token(self.metrics.clone())
        }
    }
}

/// One input of a stream's mix.
#[derive(Debug, Clone, PartialEq)]
pub struct InputConfig {
    /// What it plays.
    pub spec: SourceSpec,
    /// Linear gain (1.0 = unchanged).
    pub gain: f32,
}

impl From<SourceSpec> for InputConfig {
    fn from(spec: SourceSpec) -> Self {
        InputConfig { spec, gain: 1.0 }
    }
}

/// A configured stream and what it plays.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// The stream's name, the `{stream}` of `/{stream}/whep`.
    pub name: String,
    /// Its inputs.
    pub sources: Vec<InputConfig>,
    /// Which publisher's video its viewers get.
    pub video: VideoSource,
}

/// A STUN or TURN server offered to clients in `Link` headers.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// `stun:host:port` or `turn:host:port?transport=udp`.
    pub url: String,
    /// TURN username.
    pub username: Option<String>,
    /// TURN password.
    pub credential: Option<String>,
}

/// `--check-config` prints the configuration: the TURN credential is not for its output.
impl std::fmt::Debug for IceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServer")
            .field("url", &self.url)
            .field("username", &self.username)
            .field(
                "credential",
                &self.credential.as_ref().map(|_| "(redacted)"),
            )
            .finish()
    }
}

impl IceServer {
    /// The value of its `Link` header (RFC 9725 §4.6).
    pub fn link_value(&self) -> String {
        let mut v = format!("<{}>; rel=\"ice-server\"", self.url);
        if let (Some(u), Some(c)) = (&self.username, &self.credential) {
            v.push_str(&format!(
                "; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\""
            ));
        }
        v
    }
}

impl std::str::FromStr for IceServer {
    type Err = String;
    /// `URL` or `URL,USERNAME,CREDENTIAL`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.splitn(3, ',');
        let url = parts.next().unwrap_or("").trim().to_string();
        let username = parts.next().map(|x| x.to_string());
        let credential = parts.next().map(|x| x.to_string());
        let server = IceServer {
            url,
            username,
            credential,
        };
        server.validate()?;
        Ok(server)
    }
}

impl IceServer {
    fn validate(&self) -> Result<(), String> {
        let scheme = self.url.split(':').next().unwrap_or("");
        if !matches!(scheme, "stun" | "stuns" | "turn" | "turns") || !self.url.contains(':') {
            return Err(format!(
                "ICE server {:?}: expected stun:HOST[:PORT] or turn:HOST[:PORT][?transport=udp|tcp]",
                self.url
            ));
        }
        if self.url.contains(['<', '>', '"', ' ']) {
            return Err(format!("ICE server {:?}: invalid characters", self.url));
        }
        let turn = scheme.starts_with("turn");
        if turn && (self.username.is_none() || self.credential.is_none()) {
            return Err(format!(
                "TURN server {:?} needs a username and a credential (URL,USERNAME,CREDENTIAL)",
                self.url
            ));
        }
        for v in [&self.username, &self.credential].into_iter().flatten() {
            if v.contains(['"', '\r', '\n']) {
                return Err("ICE server username/credential must not contain quotes".into());
            }
        }
        Ok(())
    }
}

/// HTTPS certificate and key (PEM files).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
}

/// How the TX thread hands a tick's datagrams to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Fanout {
    /// One `send_to` system call per datagram, as each viewer's `Rtc` is drained (what
    /// str0m's chat example does): the baseline load runs compare against.
    Naive,
    /// Datagrams are copied into a preallocated batch and handed over with `sendmmsg`,
    /// up to 64 per system call (see `net::batch`).
    Batched,
    /// As `Batched`, and the Opus frame goes to audio-only viewers without their `Rtc`:
    /// the engine builds the RTP packet and SRTP-protects it itself (GCM profiles), so
    /// str0m only runs those viewers' timers when due. str0m's sender reports for that
    /// stream no longer describe it (audio-only players need none). Viewers of video, and viewers on an
    /// AES-CM profile, stay on the `Batched` path. The default: about a tenth of
    /// `Batched`'s engine time per audio-only viewer (docs/fanout.md).
    #[default]
    Direct,
}

/// Everything the server needs to start, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The address HTTP and UDP bind to (`0.0.0.0` = all interfaces).
    pub bind: IpAddr,
    /// The HTTP signalling port (0 = any free port).
    pub http_port: u16,
    /// The one UDP port for every peer's ICE and media (0 = any free port).
    pub udp_port: u16,
    /// Extra addresses to advertise (NAT 1:1).
    pub public_ips: Vec<IpAddr>,
    /// The configured streams.
    pub streams: Vec<StreamConfig>,
    /// Most viewers the server takes at once (over it: 503).
    pub max_viewers: usize,
    /// STUN/TURN servers for clients.
    pub ice_servers: Vec<IceServer>,
    /// HTTPS, when set.
    pub tls: Option<TlsConfig>,
    /// Opus bitrate of every mix, bits per second.
    pub bitrate: u32,
    /// Most WHIP publishers at once (over it: 503).
    pub max_publishers: usize,
    /// Most streams created on demand by publishers at once (over it: 503).
    pub max_streams: usize,
    /// Tokens and the publishing rule.
    pub auth: AuthConfig,
    /// How datagrams are sent.
    pub fanout: Fanout,
    /// TX threads: the first mixes and serves viewers, the others serve audio-only viewers
    /// with its frames.
    pub tx_threads: usize,
    /// Most sessions one HTTP client address may have answered and not yet connected
    /// (over it: 503 with Retry-After).
    pub max_pending_per_ip: usize,
    /// HTTP timeouts and the per-address connection cap.
    pub http: HttpLimits,
    /// Which streams are recorded, where (`record`).
    pub record: RecordConfig,
}

impl Config {
    /// Loopback, ephemeral ports, the stream `live` playing the test signal: what tests use.
    pub fn loopback_ephemeral() -> Config {
        Config {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            http_port: 0,
            udp_port: 0,
            public_ips: Vec::new(),
            streams: vec![StreamConfig {
                name: "live".into(),
                sources: vec![SourceSpec::Tone.into()],
                video: VideoSource::default(),
            }],
            max_viewers: DEFAULT_MAX_VIEWERS,
            ice_servers: Vec::new(),
            tls: None,
            bitrate: DEFAULT_BITRATE,
            max_publishers: DEFAULT_MAX_PUBLISHERS,
            max_streams: DEFAULT_MAX_STREAMS,
            auth: AuthConfig::default(),
            fanout: Fanout::default(),
            tx_threads: 1,
            // Tests join dozens of viewers at once from 127.0.0.1; the cap has its own
            // tests (tests/hostile_udp.rs sets it).
            max_pending_per_ip: DEFAULT_MAX_VIEWERS,
            http: HttpLimits::default(),
            record: RecordConfig::default(),
        }
    }
}

/// The file's shape. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    bind: Option<IpAddr>,
    http_port: Option<u16>,
    udp_port: Option<u16>,
    public_ips: Vec<IpAddr>,
    max_viewers: Option<usize>,
    bitrate: Option<u32>,
    ice_servers: Vec<IceServer>,
    tls: Option<TlsConfig>,
    max_publishers: Option<usize>,
    max_streams: Option<usize>,
    publish_tokens: Vec<Secret>,
    read_tokens: Vec<Secret>,
    metrics_tokens: Vec<Secret>,
    allow_public_publish: Option<bool>,
    fanout: Option<Fanout>,
    tx_threads: Option<usize>,
    max_pending_per_ip: Option<usize>,
    header_timeout: Option<f64>,
    body_timeout: Option<f64>,
    max_connections_per_ip: Option<usize>,
    record: Vec<String>,
    record_dir: Option<PathBuf>,
    record_segment_seconds: Option<u64>,
    streams: BTreeMap<String, FileStream>,
    /// The file's folder (not a key: set by `read_file`).
    #[serde(skip)]
    base: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileStream {
    sources: Vec<FileInput>,
    video: Option<VideoSource>,
    publish_tokens: Vec<Secret>,
    read_tokens: Vec<Secret>,
    record: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FileInput {
    Spec(String),
    WithGain { source: String, gain: Option<f32> },
}

/// `mixcast serve` options. Flags override the config file; environment variables
/// (`MIXCAST_*`) stand in for flags.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// A TOML config file (see the README for its keys).
    #[arg(long, short = 'c', env = "MIXCAST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to bind HTTP and UDP to. 0.0.0.0 (the default) listens on every interface and
    /// advertises each interface address as a host candidate; one address advertises only it.
    #[arg(long, env = "MIXCAST_BIND", value_name = "IP")]
    pub bind: Option<IpAddr>,

    /// HTTP signalling port [default: 8889].
    #[arg(long, env = "MIXCAST_HTTP_PORT", value_name = "PORT")]
    pub http_port: Option<u16>,

    /// The one UDP port for every peer's ICE and media [default: 8189].
    #[arg(long, env = "MIXCAST_UDP_PORT", value_name = "PORT")]
    pub udp_port: Option<u16>,

    /// Also advertise this address as a host candidate (NAT 1:1, e.g. a cloud VM's public
    /// IP). Repeatable.
    #[arg(long = "public-ip", value_name = "IP")]
    pub public_ips: Vec<IpAddr>,

    /// A stream and what it plays: NAME=SPEC, SPEC being `tone` (440 Hz left, 660 Hz right,
    /// beeping), `silence`, `file:PATH[,PATH...]` (MP3, FLAC, WAV, Ogg Vorbis, M4A/AAC; a
    /// list is a playlist; files loop), or `whep:URL` (a remote WHEP stream, e.g. another
    /// mixcast's or MediaMTX's; reconnected when it goes away, silent meanwhile). Repeatable; several for one NAME are mixed. With no stream
    /// configured anywhere, `live=tone`.
    #[arg(long = "source", value_name = "NAME=SPEC")]
    pub sources: Vec<String>,

    /// Which publisher's video a stream's viewers get: NAME=first (the first publisher that
    /// sends video keeps it until it leaves; the default), NAME=latest (the newest one takes
    /// over) or NAME=none (audio only: viewers are answered without video). Repeatable. A
    /// NAME not configured otherwise becomes a configured stream with no inputs.
    #[arg(long = "video", value_name = "NAME=first|latest|none")]
    pub videos: Vec<String>,

    /// Most viewers at once; more get 503 with Retry-After [default: 10000].
    #[arg(long, env = "MIXCAST_MAX_VIEWERS", value_name = "N")]
    pub max_viewers: Option<usize>,

    /// Opus bitrate of each stream's mix in bits per second [default: 128000].
    #[arg(long, env = "MIXCAST_BITRATE", value_name = "BPS")]
    pub bitrate: Option<u32>,

    /// A STUN/TURN server for clients, sent as a Link header: `stun:HOST:PORT`, or
    /// `turn:HOST:PORT?transport=udp,USERNAME,CREDENTIAL`. Repeatable.
    #[arg(long = "ice-server", value_name = "URL[,USER,CREDENTIAL]")]
    pub ice_servers: Vec<IceServer>,

    /// Serve HTTPS with this PEM certificate chain (needs --tls-key). Browsers need HTTPS
    /// for the microphone anywhere but localhost.
    #[arg(
        long,
        env = "MIXCAST_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key for --tls-cert.
    #[arg(
        long,
        env = "MIXCAST_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Most WHIP publishers at once; more get 503 [default: 256].
    #[arg(long, env = "MIXCAST_MAX_PUBLISHERS", value_name = "N")]
    pub max_publishers: Option<usize>,

    /// Most streams publishers may create at once (publishing to a name that does not
    /// exist creates it); a WHIP POST that would create one more gets 503 with
    /// Retry-After. Configured streams do not count [default: 64].
    #[arg(long, env = "MIXCAST_MAX_STREAMS", value_name = "N")]
    pub max_streams: Option<usize>,

    /// A Bearer token publishers (WHIP) must send: `TOKEN` for every stream, or
    /// `STREAM=TOKEN` for one stream (its tokens then replace the general ones). Repeatable.
    /// Without any, only clients on this machine (loopback) may publish. Prefer the
    /// environment variable or the config file: flags show in `ps`.
    #[arg(
        long = "publish-token",
        env = "MIXCAST_PUBLISH_TOKEN",
        value_name = "[STREAM=]TOKEN"
    )]
    pub publish_tokens: Vec<String>,

    /// A Bearer token viewers (WHEP) must send, like --publish-token. Without any, anyone
    /// may watch.
    #[arg(
        long = "read-token",
        env = "MIXCAST_READ_TOKEN",
        value_name = "[STREAM=]TOKEN"
    )]
    pub read_tokens: Vec<String>,

    /// A Bearer token `/metrics` requires (repeatable). Without one, `/metrics` is open,
    /// except while a read token is set: then only clients on this machine may read it,
    /// since it names every stream.
    #[arg(
        long = "metrics-token",
        env = "MIXCAST_METRICS_TOKEN",
        value_name = "TOKEN"
    )]
    pub metrics_tokens: Vec<String>,

    /// Let anyone publish to streams that have no publish token (by default only loopback
    /// clients may). The server warns at start-up when this opens a stream.
    #[arg(long, env = "MIXCAST_ALLOW_PUBLIC_PUBLISH")]
    pub allow_public_publish: bool,

    /// How the TX thread sends: `batched` copies each tick's datagrams into a batch and
    /// sends up to 64 per `sendmmsg` system call, in a constant viewer order; `direct` does
    /// the same and builds audio-only viewers' SRTP packets itself, without their str0m
    /// `Rtc` (no true sender reports for that audio); `naive` makes one `send_to` call per
    /// datagram as str0m hands it over (the baseline to compare load runs against)
    /// [default: direct].
    #[arg(long, env = "MIXCAST_FANOUT", value_enum, value_name = "MODE")]
    pub fanout: Option<Fanout>,

    /// TX threads sending to viewers (1 to 64). The first mixes and encodes every stream
    /// and serves publishers, viewers of video and its share of audio-only viewers; each
    /// other thread serves a share of the audio-only viewers with the first one's frames.
    /// New viewers go to the thread with the fewest. More than one helps when one core
    /// cannot send to every listener in time; keep it below the number of cores
    /// [default: 1].
    #[arg(long, env = "MIXCAST_TX_THREADS", value_name = "N")]
    pub tx_threads: Option<usize>,

    /// Most sessions (WHIP or WHEP) one client address may have answered and not yet
    /// connected at once; more get 503 with Retry-After. Each holds a slot for up to 15 s,
    /// so without a cap one address could fill --max-viewers with offers it never connects
    /// [default: 8].
    #[arg(long, env = "MIXCAST_MAX_PENDING_PER_IP", value_name = "N")]
    pub max_pending_per_ip: Option<usize>,
    /// Seconds a client has to send a request's headers (from connecting, or from the
    /// previous answer on a kept-alive connection) and to finish a TLS handshake; then the
    /// connection is closed [default: 10].
    #[arg(long, env = "MIXCAST_HEADER_TIMEOUT", value_name = "SECS")]
    pub header_timeout: Option<f64>,

    /// Seconds a client has to send a request's whole body once its headers are in; then
    /// 408 [default: 10].
    #[arg(long, env = "MIXCAST_BODY_TIMEOUT", value_name = "SECS")]
    pub body_timeout: Option<f64>,

    /// Most open HTTP connections from one client address (IPv6: one /64); more are closed
    /// at once [default: 64].
    #[arg(long, env = "MIXCAST_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<usize>,

    /// Record stream NAME's mix (Ogg Opus, the packets viewers get) whenever it exists,
    /// a configured stream from start-up, one a publisher creates from then on: a new
    /// file each time it appears, cut every --record-segment-seconds. Repeatable, or
    /// NAME,NAME.
    #[arg(
        long = "record",
        env = "MIXCAST_RECORD",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub record: Vec<String>,

    /// The folder recordings go to, made when needed [default: recordings].
    #[arg(long, env = "MIXCAST_RECORD_DIR", value_name = "DIR")]
    pub record_dir: Option<PathBuf>,

    /// A recording goes on in a new file after this many seconds of the stream (1 to
    /// 86400) [default: 3600].
    #[arg(long, env = "MIXCAST_RECORD_SEGMENT_SECONDS", value_name = "SECS")]
    pub record_segment_seconds: Option<u64>,

    /// Validate the configuration, print it, and exit.
    #[arg(long)]
    pub check_config: bool,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML of our shape.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
    /// A value is invalid.
    #[error("{0}")]
    Invalid(String),
}

fn parse_input(text: &str, gain: f32) -> Result<InputConfig, ConfigError> {
    let spec: SourceSpec = text
        .parse()
        .map_err(|e: crate::media::sources::SourceError| ConfigError::Invalid(e.to_string()))?;
    if !(0.0..=16.0).contains(&gain) || gain.is_nan() {
        return Err(ConfigError::Invalid(format!(
            "gain {gain} for {text:?}: expected 0.0 to 16.0"
        )));
    }
    Ok(InputConfig { spec, gain })
}

/// A stream name usable in a URL path segment.
pub fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "api"
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

impl ServeArgs {
    /// Reads the file (if any), applies the flags, validates.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let mut streams: BTreeMap<String, Vec<InputConfig>> = BTreeMap::new();
        let mut video: BTreeMap<String, VideoSource> = BTreeMap::new();
        let mut auth = AuthConfig {
            publish: TokenRules {
                default: file.publish_tokens.clone(),
                ..Default::default()
            },
            read: TokenRules {
                default: file.read_tokens.clone(),
                ..Default::default()
            },
            allow_public_publish: self.allow_public_publish
                || file.allow_public_publish.unwrap_or(false),
            metrics: file.metrics_tokens.clone(),
        };
        for (name, s) in &file.streams {
            if !s.publish_tokens.is_empty() {
                auth.publish
                    .per_stream
                    .insert(name.clone(), s.publish_tokens.clone());
            }
            if !s.read_tokens.is_empty() {
                auth.read
                    .per_stream
                    .insert(name.clone(), s.read_tokens.clone());
            }
            let mut inputs = Vec::new();
            for i in &s.sources {
                let base = file.base.as_deref();
                inputs.push(match i {
                    FileInput::Spec(t) => parse_file_input(t, 1.0, base)?,
                    FileInput::WithGain { source, gain } => {
                        parse_file_input(source, gain.unwrap_or(1.0), base)?
                    }
                });
            }
            streams.insert(name.clone(), inputs);
            if let Some(v) = s.video {
                video.insert(name.clone(), v);
            }
        }
        let mut from_flags: BTreeMap<String, Vec<InputConfig>> = BTreeMap::new();
        for s in &self.sources {
            let (name, spec) = s.split_once('=').ok_or_else(|| {
                ConfigError::Invalid(format!("--source {s:?}: expected NAME=SPEC"))
            })?;
            from_flags
                .entry(name.trim().to_string())
                .or_default()
                .push(parse_input(spec.trim(), 1.0)?);
        }
        // A stream named by flags takes the flags' inputs instead of the file's.
        streams.extend(from_flags);
        for t in &self.publish_tokens {
            auth.publish.add_flag("--publish-token", t)?;
        }
        for t in &self.read_tokens {
            auth.read.add_flag("--read-token", t)?;
        }
        for t in &self.metrics_tokens {
            let secret = Secret::new(t)
                .map_err(|e| ConfigError::Invalid(format!("--metrics-token: {e}")))?;
            auth.metrics.push(secret);
        }
        let max_publishers = self
            .max_publishers
            .or(file.max_publishers)
            .unwrap_or(DEFAULT_MAX_PUBLISHERS);
        let max_streams = self
            .max_streams
            .or(file.max_streams)
            .unwrap_or(DEFAULT_MAX_STREAMS);
        if streams.is_empty() {
            streams.insert("live".into(), vec![SourceSpec::Tone.into()]);
        }
        for v in &self.videos {
            let (name, choice) = v.split_once('=').ok_or_else(|| {
                ConfigError::Invalid(format!("--video {v:?}: expected NAME=first|latest|none"))
            })?;
            let choice = choice
                .parse()
                .map_err(|e: String| ConfigError::Invalid(format!("--video {v:?}: {e}")))?;
            video.insert(name.trim().to_string(), choice);
        }
        for name in video.keys() {
            streams.entry(name.clone()).or_default();
        }
        for name in streams.keys() {
            if !valid_stream_name(name) {
                return Err(ConfigError::Invalid(format!(
                    "stream name {name:?}: use letters, digits, '-', '_' and '.' (not \"api\")"
                )));
            }
        }
        for s in &file.ice_servers {
            s.validate().map_err(ConfigError::Invalid)?;
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsConfig {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => file.tls,
        };
        let max_viewers = self
            .max_viewers
            .or(file.max_viewers)
            .unwrap_or(DEFAULT_MAX_VIEWERS);
        if max_viewers == 0 {
            return Err(ConfigError::Invalid(
                "max_viewers must be at least 1".into(),
            ));
        }
        let max_pending_per_ip = self
            .max_pending_per_ip
            .or(file.max_pending_per_ip)
            .unwrap_or(crate::sessions::DEFAULT_MAX_PENDING_PER_IP);
        if max_pending_per_ip == 0 {
            return Err(ConfigError::Invalid(
                "max_pending_per_ip must be at least 1".into(),
            ));
        }
        let tx_threads = self.tx_threads.or(file.tx_threads).unwrap_or(1);
        if !(1..=MAX_TX_THREADS).contains(&tx_threads) {
            return Err(ConfigError::Invalid(format!(
                "tx_threads {tx_threads}: takes 1 to {MAX_TX_THREADS}"
            )));
        }
        let bitrate = self.bitrate.or(file.bitrate).unwrap_or(DEFAULT_BITRATE);
        if !(6_000..=510_000).contains(&bitrate) {
            return Err(ConfigError::Invalid(format!(
                "bitrate {bitrate}: Opus takes 6000 to 510000 bits per second"
            )));
        }
        let seconds = |key: &str, v: Option<f64>, default: std::time::Duration| match v {
            None => Ok(default),
            Some(s) if s > 0.0 && s <= 3600.0 => Ok(std::time::Duration::from_secs_f64(s)),
            Some(s) => Err(ConfigError::Invalid(format!(
                "{key} {s}: expected seconds above 0, at most 3600"
            ))),
        };
        let defaults = HttpLimits::default();
        let http = HttpLimits {
            header_timeout: seconds(
                "header_timeout",
                self.header_timeout.or(file.header_timeout),
                defaults.header_timeout,
            )?,
            body_timeout: seconds(
                "body_timeout",
                self.body_timeout.or(file.body_timeout),
                defaults.body_timeout,
            )?,
            max_connections_per_ip: self
                .max_connections_per_ip
                .or(file.max_connections_per_ip)
                .unwrap_or(defaults.max_connections_per_ip),
        };
        if http.max_connections_per_ip == 0 {
            return Err(ConfigError::Invalid(
                "max_connections_per_ip must be at least 1".into(),
            ));
        }
        let mut recorded: std::collections::BTreeSet<String> = file
            .streams
            .iter()
            .filter(|(_, s)| s.record)
            .map(|(name, _)| name.clone())
            .collect();
        let named = (file.record.iter().map(|n| ("record", n)))
            .chain(self.record.iter().map(|n| ("--record", n)));
        for (key, name) in named {
            let name = name.trim();
            if !valid_stream_name(name) {
                return Err(ConfigError::Invalid(format!(
                    "{key} {name:?}: not a stream name"
                )));
            }
            recorded.insert(name.to_string());
        }
        let segment = self
            .record_segment_seconds
            .or(file.record_segment_seconds)
            .map_or(Ok(crate::record::DEFAULT_SEGMENT), |s| {
                if (1..=crate::record::MAX_SEGMENT_SECONDS).contains(&s) {
                    Ok(std::time::Duration::from_secs(s))
                } else {
                    Err(ConfigError::Invalid(format!(
                        "record_segment_seconds {s}: takes 1 to {}",
                        crate::record::MAX_SEGMENT_SECONDS
                    )))
                }
            })?;
        let record = RecordConfig {
            dir: match (&self.record_dir, &file.record_dir) {
                (Some(flag), _) => flag.clone(),
                (None, Some(in_file)) => file_relative(file.base.as_deref(), in_file),
                (None, None) => PathBuf::from(crate::record::DEFAULT_RECORD_DIR),
            },
            streams: recorded,
            segment,
        };
        let mut public_ips = file.public_ips;
        public_ips.extend(self.public_ips.iter().copied());
        let mut ice_servers = file.ice_servers;
        ice_servers.extend(self.ice_servers.iter().cloned());
        Ok(Config {
            bind: self
                .bind
                .or(file.bind)
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            http_port: self
                .http_port
                .or(file.http_port)
                .unwrap_or(DEFAULT_HTTP_PORT),
            udp_port: self.udp_port.or(file.udp_port).unwrap_or(DEFAULT_UDP_PORT),
            public_ips,
            streams: streams
                .into_iter()
                .map(|(name, sources)| StreamConfig {
                    video: video.get(&name).copied().unwrap_or_default(),
                    name,
                    sources,
                })
                .collect(),
            max_viewers,
            ice_servers,
            tls,
            bitrate,
            max_publishers,
            max_streams,
            auth,
            fanout: self.fanout.or(file.fanout).unwrap_or_default(),
            tx_threads,
            max_pending_per_ip,
            http,
            record,
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut file: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    // Paths in a config file are the file's, wherever mixcast is started from (flags'
    // paths stay relative to the working directory, as a shell's are).
    file.base = path.parent().map(Path::to_path_buf);
    if let Some(tls) = &mut file.tls {
        tls.cert = file_relative(file.base.as_deref(), &tls.cert);
        tls.key = file_relative(file.base.as_deref(), &tls.key);
    }
    Ok(file)
}

/// `path` as written in a config file in folder `base`: relative ones are the folder's.
fn file_relative(base: Option<&Path>, path: &Path) -> PathBuf {
    match base {
        Some(base) if path.is_relative() => base.join(path),
        _ => path.to_path_buf(),
    }
}

/// A source from a config file in folder `base`, its files' paths taken from there.
fn parse_file_input(
    text: &str,
    gain: f32,
    base: Option<&Path>,
) -> Result<InputConfig, ConfigError> {
    let mut input = parse_input(text, gain)?;
    if let SourceSpec::Files(paths) = &mut input.spec {
        for p in paths.iter_mut() {
            *p = file_relative(base, p);
        }
    }
    Ok(input)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn defaults_serve_live_tone_on_all_interfaces() {
        let c = ServeArgs::default().resolve().unwrap();
        assert_eq!(c.bind, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!((c.http_port, c.udp_port), (8889, 8189));
        assert_eq!(c.streams.len(), 1);
        assert_eq!(c.streams[0].name, "live");
        assert_eq!(c.streams[0].sources, vec![SourceSpec::Tone.into()]);
        assert_eq!(c.fanout, Fanout::Direct);
    }

    #[test]
    fn fanout_from_file_and_flag() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, r#"fanout = "naive""#).unwrap();
        let mut args = ServeArgs {
            config: Some(f.path().to_path_buf()),
            ..Default::default()
        };
        assert_eq!(args.resolve().unwrap().fanout, Fanout::Naive);
        args.fanout = Some(Fanout::Batched);
        assert_eq!(args.resolve().unwrap().fanout, Fanout::Batched);
    }

    #[test]
    fn flags_override_the_file() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            r#"http_port = 9000
udp_port = 9001
[streams.live]
sources = ["silence"]
[streams.talk]
sources = [{{ source = "tone", gain = 0.5 }}]
[[ice_servers]]
url = "stun:stun.example.org:3478"
"#
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(f.path().to_path_buf()),
            http_port: Some(9100),
            sources: vec!["live=tone".into()],
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!((c.http_port, c.udp_port), (9100, 9001));
        let live = c.streams.iter().find(|s| s.name == "live").unwrap();
        assert_eq!(live.sources, vec![SourceSpec::Tone.into()]);
        let talk = c.streams.iter().find(|s| s.name == "talk").unwrap();
        assert_eq!(talk.sources[0].gain, 0.5);
        assert_eq!(
            c.ice_servers[0].link_value(),
            "<stun:stun.example.org:3478>; rel=\"ice-server\""
        );
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let bad = |a: ServeArgs| a.resolve().unwrap_err().to_string();
        assert!(bad(ServeArgs {
            sources: vec!["nonsense".into()],
            ..Default::default()
        })
        .contains("NAME=SPEC"));
        assert!(bad(ServeArgs {
            sources: vec!["a/b=tone".into()],
            ..Default::default()
        })
        .contains("stream name"));
        assert!(bad(ServeArgs {
            config: Some("/nonexistent/mixcast.toml".into()),
            ..Default::default()
        })
        .contains("/nonexistent/mixcast.toml"));
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "htp_port = 1").unwrap();
        assert!(bad(ServeArgs {
            config: Some(f.path().to_path_buf()),
            ..Default::default()
        })
        .contains("htp_port"));
    }

    #[test]
    fn video_source_per_stream() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            r#"[streams.studio]
video = "latest"
[streams.radio]
sources = ["tone"]
video = "none"
[streams.talk]
video = "first"
"#
        )
        .unwrap();
        let c = ServeArgs {
            config: Some(f.path().to_path_buf()),
            videos: vec!["talk=latest".into(), "cam=none".into()],
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let video = |name: &str| c.streams.iter().find(|s| s.name == name).map(|s| s.video);
        assert_eq!(video("studio"), Some(VideoSource::Latest));
        assert_eq!(video("radio"), Some(VideoSource::None));
        assert_eq!(video("talk"), Some(VideoSource::Latest), "the flag wins");
        assert_eq!(
            video("cam"),
            Some(VideoSource::None),
            "a flag alone configures the stream"
        );
        assert!(c.streams.iter().all(|s| s.name != "live"));
        let d = ServeArgs::default().resolve().unwrap();
        assert_eq!(d.streams[0].video, VideoSource::First, "the default");
        // A --video flag alone does not replace the default stream.
        let c = ServeArgs {
            videos: vec!["cam=latest".into()],
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert!(c.streams.iter().any(|s| s.name == "live"));
        for bad in ["cam", "cam=newest"] {
            let err = ServeArgs {
                videos: vec![bad.into()],
                ..Default::default()
            }
            .resolve()
            .unwrap_err()
            .to_string();
            assert!(err.contains("--video"), "{err}");
        }
        writeln!(f, "[streams.bad]\nvideo = \"sometimes\"").unwrap();
        let err = ServeArgs {
            config: Some(f.path().to_path_buf()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("sometimes") || err.contains("variant"),
            "{err}"
        );
    }

    #[test]
    fn http_limits_from_file_and_flags() {
        use std::time::Duration;
        let d = ServeArgs::default().resolve().unwrap().http;
        assert!(d.header_timeout <= Duration::from_secs(30));
        assert!(d.body_timeout <= Duration::from_secs(30));
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "header_timeout = 2.5\nbody_timeout = 4\nmax_connections_per_ip = 7"
        )
        .unwrap();
        let mut args = ServeArgs {
            config: Some(f.path().to_path_buf()),
            ..Default::default()
        };
        let c = args.resolve().unwrap().http;
        assert_eq!(c.header_timeout, Duration::from_millis(2500));
        assert_eq!(c.body_timeout, Duration::from_secs(4));
        assert_eq!(c.max_connections_per_ip, 7);
        args.header_timeout = Some(0.5);
        args.max_connections_per_ip = Some(3);
        let c = args.resolve().unwrap().http;
        assert_eq!(c.header_timeout, Duration::from_millis(500));
        assert_eq!(c.max_connections_per_ip, 3);
        for bad in [0.0, -1.0, f64::NAN, 1e9] {
            args.body_timeout = Some(bad);
            let e = args.resolve().unwrap_err().to_string();
            assert!(e.contains("body_timeout"), "{e}");
        }
        args.body_timeout = None;
        args.max_connections_per_ip = Some(0);
        assert!(args.resolve().is_err());
    }

    #[test]
    fn ice_server_flag() {
        let t: IceServer = "turn:t.example.org:3478?transport=udp,u,p".parse().unwrap();
        assert_eq!(
            t.link_value(),
            "<turn:t.example.org:3478?transport=udp>; rel=\"ice-server\"; username=\"u\"; credential=\"p\"; credential-type=\"password\""
        );
        assert!("turn:t.example.org".parse::<IceServer>().is_err());
        assert!("http://x".parse::<IceServer>().is_err());
    }

    #[test]
    fn tokens_from_flags_and_file() {
        use crate::signal::auth::Access;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            r#"publish_tokens = ["file-pub"]
allow_public_publish = true
[streams.radio]
read_tokens = ["radio-read"]
"#
        )
        .unwrap();
        let c = ServeArgs {
            config: Some(f.path().to_path_buf()),
            publish_tokens: vec!["flag-pub".into(), "studio=s3cret".into(), "pad==".into()],
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let count = |a: Access| match a {
            Access::Token(t) => t.len(),
            Access::Public => 0,
        };
        // File and flag tokens for every stream (a token may end in '=' padding).
        assert_eq!(count(c.auth.publish.access("mic")), 3);
        assert_eq!(count(c.auth.publish.access("studio")), 1);
        assert_eq!(count(c.auth.read.access("radio")), 1);
        assert_eq!(count(c.auth.read.access("live")), 0);
        assert!(c.auth.allow_public_publish);
        assert!(c
            .streams
            .iter()
            .any(|s| s.name == "radio" && s.sources.is_empty()));
        // A trailing '=' is base64 padding, not a stream name.
        let c = ServeArgs {
            publish_tokens: vec!["dG9rZW4=".into()],
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(count(c.auth.publish.access("any")), 1);
        let err = ServeArgs {
            read_tokens: vec!["has space".into()],
            ..Default::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(err.contains("--read-token"), "{err}");
    }

    #[test]
    fn recording_from_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mixcast.toml");
        std::fs::write(
            &conf,
            "record_dir = \"rec\"\nrecord_segment_seconds = 600\nrecord = [\"mic\"]\n\
             [streams.radio]\nsources = [\"tone\"]\nrecord = true\n\
             [streams.talk]\nsources = [\"tone\"]\n",
        )
        .unwrap();
        let mut args = ServeArgs {
            config: Some(conf),
            ..Default::default()
        };
        let r = args.resolve().unwrap().record;
        assert_eq!(r.dir, dir.path().join("rec"), "the file's folder's");
        assert_eq!(r.segment, std::time::Duration::from_secs(600));
        assert_eq!(r.streams, ["mic".to_string(), "radio".to_string()].into());
        // Flags add streams (a name not configured is recorded when a publisher makes
        // it), and override the folder and the segment.
        args.record = vec!["talk".into(), "later".into()];
        args.record_dir = Some("elsewhere".into());
        args.record_segment_seconds = Some(1);
        let c = args.resolve().unwrap();
        assert_eq!(
            c.record.dir,
            PathBuf::from("elsewhere"),
            "a flag's is the cwd's"
        );
        assert_eq!(c.record.segment, std::time::Duration::from_secs(1));
        let names: Vec<&str> = c.record.streams.iter().map(String::as_str).collect();
        assert_eq!(names, ["later", "mic", "radio", "talk"]);
        assert!(
            c.streams
                .iter()
                .all(|s| s.name != "later" && s.name != "mic"),
            "--record and `record = [...]` configure no stream"
        );
        // The defaults: nothing recorded, `recordings` in the working directory, an hour.
        let d = ServeArgs::default().resolve().unwrap().record;
        assert!(!d.any());
        assert_eq!(d.dir, PathBuf::from("recordings"));
        assert_eq!(d.segment, std::time::Duration::from_secs(3600));
        for bad in [0, 86_401] {
            args.record_segment_seconds = Some(bad);
            let e = args.resolve().unwrap_err().to_string();
            assert!(e.contains("record_segment_seconds"), "{e}");
        }
    }

    #[test]
    fn paths_in_a_config_file_are_the_files_own() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mixcast.toml");
        std::fs::write(
            &conf,
            "[tls]\ncert = \"certs/c.pem\"\nkey = \"/abs/k.pem\"\n\
             [streams.music]\nsources = [\"file:music/a.flac,b.ogg\", \
             { source = \"c.wav\", gain = 0.5 }, \"tone\"]\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(conf),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert, dir.path().join("certs/c.pem"));
        assert_eq!(tls.key, PathBuf::from("/abs/k.pem"), "absolute stays");
        let music = c.streams.iter().find(|s| s.name == "music").unwrap();
        assert_eq!(
            music.sources[0].spec,
            SourceSpec::Files(vec![
                dir.path().join("music/a.flac"),
                dir.path().join("b.ogg")
            ])
        );
        assert_eq!(
            music.sources[1].spec,
            SourceSpec::Files(vec![dir.path().join("c.wav")])
        );
        assert_eq!(music.sources[2].spec, SourceSpec::Tone);
        // A flag's path stays the working directory's.
        let args = ServeArgs {
            sources: vec!["live=file:x.wav".into()],
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(
            c.streams[0].sources[0].spec,
            SourceSpec::Files(vec!["x.wav".into()])
        );
    }
}
