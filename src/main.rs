//! The `mixcast` binary: parses the command line, sets up logging, runs the library's server.

use std::process::ExitCode;

use std::io::IsTerminal;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use mixcast::config::ServeArgs;
use mixcast::server::{Server, StartError};

/// A WebRTC media server: each stream's audio inputs (test signals, audio files) are mixed
/// every 20 ms into one 48 kHz stereo Opus stream that viewers pull over WHEP.
///
/// With no options it serves the stream `live` (a test signal: 440 Hz left, 660 Hz right)
/// at http://0.0.0.0:8889/, media on UDP 8189.
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

    /// How log lines are written to stdout: `text` (coloured only on a terminal, and not
    /// when NO_COLOR is set) or `json` (one object per line, for log shippers).
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

#[derive(Subcommand)]
enum Command {
    /// Run the server (also what runs with no subcommand).
    Serve(ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match cli.verbose {
        0 => "mixcast=info,warn",
        1 => "mixcast=debug,str0m=info,warn",
        _ => "mixcast=trace,str0m=debug,info",
    };
    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let log = tracing_subscriber::fmt().with_env_filter(env);
    match cli.log_format {
        LogFormat::Text => {
            // Colour codes are noise in files, pipes and journald.
            let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            log.with_ansi(colour).init()
        }
        LogFormat::Json => log.json().with_ansi(false).init(),
    }

    let args = match cli.command {
        Some(Command::Serve(a)) => a,
        None => cli.serve,
    };
    let config = match args.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mixcast: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        println!("{config:#?}");
        // Open every source as start-up would: a missing or undecodable file fails here.
        let mut bad = 0;
        for s in &config.streams {
            for input in &s.sources {
                if let Err(e) = mixcast::media::sources::open(&input.spec) {
                    eprintln!("mixcast: stream {}: {e}", s.name);
                    bad += 1;
                }
            }
        }
        // Read the certificate and key as start-up would: missing, not PEM, not a pair.
        if let Some(tls) = &config.tls {
            if let Err(e) = mixcast::signal::tls::server_config(tls) {
                eprintln!("mixcast: TLS: {e}");
                bad += 1;
            }
        }
        if bad > 0 {
            return ExitCode::from(2);
        }
        println!("configuration OK");
        return ExitCode::SUCCESS;
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
