//! The `mixcast` binary: parses the command line, sets up logging, runs the library's server.

use std::process::ExitCode;

use std::io::IsTerminal;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use mixcast::client::pull::PullArgs;
use mixcast::client::push::PushArgs;
use mixcast::config::ServeArgs;
use mixcast::server::{Server, StartError};

/// A WebRTC media server. Publishers (OBS, FFmpeg, GStreamer, browsers) push audio and
/// video over WHIP to /{stream}/whip; each stream's audio inputs (publishers, test signals,
/// audio files) are mixed every 20 ms into one 48 kHz stereo Opus stream, and viewers pull
/// it, with the publisher's video, over WHEP from /{stream}/whep. The page at / plays and
/// publishes.
///
/// With no options it serves the stream `live` (a test signal: 440 Hz left, 660 Hz right)
/// on every interface (the LAN too): page and signalling on HTTP port 8889, media on UDP
/// 8189. Without a publish token only this machine may publish.
#[derive(Parser)]
#[command(name = "mixcast", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    serve: ServeArgs,

    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,

    /// How log lines are written to stdout (stderr for push and pull): `text` (coloured
    /// only on a terminal, and not when NO_COLOR is set) or `json` (one object per line,
    /// for log shippers).
    #[arg(
        long,
        env = "MIXCAST_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        global = true
    )]
    log_format: LogFormat,
}

/// The shape of log lines.
#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: timestamp, level, target, fields (message among them).
    Json,
}

// Parsed once at start-up: the size of the server's options costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the server (also what runs with no subcommand).
    Serve(ServeArgs),
    /// Send a tone or audio files to any WHIP endpoint (a mixcast, MediaMTX, Broadcast
    /// Box).
    ///
    /// Encodes the source as 48 kHz stereo Opus and publishes it over WHIP. Every 2 s a
    /// progress line on stderr: audio sent, bitrate, round trip and loss (from the
    /// server's RTCP receiver reports; `?` until it sends some). When the session fails or
    /// the server goes away it reconnects, waiting 1 s, then 2, 4 ... up to 30 s between
    /// attempts; a refusal that would repeat (401, 403, 404 ...) ends it with status 1.
    /// Ctrl-C or SIGTERM DELETEs the session and exits 0. A bad URL, source or option
    /// exits 2.
    ///
    /// Example: mixcast push http://127.0.0.1:8889/mic/whip --source music.flac
    Push(PushArgs),
    /// Play a WHEP stream into a WAV or Ogg Opus file, or raw PCM on stdout.
    ///
    /// WAV: decoded, 16-bit stereo 48 kHz. Ogg Opus (.ogg, .opus): the received Opus
    /// packets as they came, not re-encoded. `--out -`: raw s16le stereo 48 kHz on stdout
    /// (e.g. `| aplay -f S16_LE -c 2 -r 48000`). Every 2 s a progress line on stderr: audio
    /// received, bitrate, round trip (ICE), loss (RTP sequence gaps) and the level of each
    /// channel in dBFS. Ctrl-C or SIGTERM ends it with a complete file and a DELETE (exit
    /// 0); it does not reconnect. A bad URL, output name or option exits 2; a session that
    /// fails, or a stream that ends before --seconds, exits 1.
    ///
    /// Example: mixcast pull http://127.0.0.1:8889/live/whep --seconds 10 --out live.wav
    Pull(PullArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Push(args)) => {
            return client_command(cli.verbose, cli.log_format, |stop| {
                mixcast::client::push::run(args, stop)
            })
        }
        Some(Command::Pull(args)) => {
            return client_command(cli.verbose, cli.log_format, |stop| {
                mixcast::client::pull::run(args, stop)
            })
        }
        _ => {}
    }
    let filter = match cli.verbose {
        // symphonia logs its probe failures at ERROR ("probe reach EOF"): the source's own
        // error line says what is wrong with the file, in words a person can act on.
        0 => "mixcast=info,symphonia_core=off,warn",
        1 => "mixcast=debug,str0m=info,warn",
        _ => "mixcast=trace,str0m=debug,info",
    };
    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    // Lines go through a queue to a writer thread: a slow stdout never stalls a TX tick
    // (`mixcast::logging`). `_log` writes out what is queued when `main` returns.
    let queued = mixcast::logging::queued_stdout();
    let log = tracing_subscriber::fmt().with_env_filter(env);
    // Colour codes are noise in files, pipes and journald.
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _log = match queued {
        Ok((writer, guard)) => {
            let log = log.with_writer(writer);
            match cli.log_format {
                LogFormat::Text => log.with_ansi(colour).init(),
                LogFormat::Json => log.json().with_ansi(false).init(),
            }
            Some(guard)
        }
        Err(e) => {
            match cli.log_format {
                LogFormat::Text => log.with_ansi(colour).init(),
                LogFormat::Json => log.json().with_ansi(false).init(),
            }
            tracing::warn!("no log writer thread ({e}): logging straight to stdout");
            None
        }
    };

    let args = match cli.command {
        Some(Command::Serve(a)) => a,
        Some(Command::Push(_) | Command::Pull(_)) | None => cli.serve,
    };
    let config = match args.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mixcast: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        return check_config(&config);
    }
    let server = match Server::start(config) {
        Ok(s) => s,
        // A configuration start-up refuses (a source, the certificate) exits as
        // --check-config does; a port in use or the OS refusing is a plain failure.
        Err(e @ StartError::Config(_)) => {
            eprintln!("mixcast: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("mixcast: {e}");
            return ExitCode::FAILURE;
        }
    };
    server.wait_for_signal();
    tracing::info!("shutting down");
    server.shutdown();
    ExitCode::SUCCESS
}

/// `push` and `pull`: warnings (and with -v, debug lines) to stderr in the chosen format,
/// since stdout may carry the audio; Ctrl-C and SIGTERM end the command, not the process.
fn client_command(
    verbose: u8,
    format: LogFormat,
    run: impl FnOnce(&mixcast::client::signals::StopFlag) -> Result<(), mixcast::client::CommandError>,
) -> ExitCode {
    let filter = match verbose {
        0 => "warn",
        1 => "mixcast=debug,warn",
        _ => "mixcast=trace,str0m=debug,info",
    };
    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let log = tracing_subscriber::fmt()
        .with_env_filter(env)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => log
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .init(),
        LogFormat::Json => log.json().with_ansi(false).init(),
    }
    let stop = match mixcast::client::signals::StopFlag::on_signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mixcast: cannot catch Ctrl-C and SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(&stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mixcast: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `--check-config`: what start-up would check (every source opens, the TLS files make a
/// server configuration, the ports are free), one line per problem and exit status 2;
/// else the effective configuration (secrets redacted) and "configuration OK".
fn check_config(config: &mixcast::config::Config) -> ExitCode {
    let mut problems = Vec::new();
    for s in &config.streams {
        for input in &s.sources {
            if let Err(e) = mixcast::media::sources::open(&input.spec) {
                problems.push(format!("stream {}: {e}", s.name));
            }
        }
    }
    if let Some(tls) = &config.tls {
        if let Err(e) = mixcast::signal::tls::server_config(tls) {
            problems.push(format!("TLS: {e}"));
        }
    }
    if config.record.any() {
        if let Err(e) = mixcast::record::check_dir(&config.record.dir) {
            problems.push(e);
        }
    }
    // Bound and released at once: a port another program holds fails here, not later.
    if config.http_port != 0 {
        let addr = std::net::SocketAddr::new(config.bind, config.http_port);
        if let Err(e) = std::net::TcpListener::bind(addr) {
            problems.push(format!("HTTP port: cannot listen on {addr}: {e}"));
        }
    }
    if config.udp_port != 0 {
        let addr = std::net::SocketAddr::new(config.bind, config.udp_port);
        if let Err(e) = std::net::UdpSocket::bind(addr) {
            problems.push(format!("UDP port: cannot bind {addr}: {e}"));
        }
    }
    if !problems.is_empty() {
        for p in problems {
            eprintln!("mixcast: {p}");
        }
        return ExitCode::from(2);
    }
    print!("{}", config.to_toml());
    println!("configuration OK");
    ExitCode::SUCCESS
}
