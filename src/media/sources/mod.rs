//! The inputs of a mix that the server makes itself: test signals and audio files.
//! STUB: to be replaced.

use super::Frame;
use std::path::PathBuf;

/// Something that produces 20 ms frames of 48 kHz stereo. Called from the TX thread once per
/// tick: it must never block and never do file I/O there.
pub trait Source: Send {
    /// Fills `out` with the next frame (silence when it has nothing).
    fn fill(&mut self, out: &mut Frame);
    /// A short human name for logs and the stream list.
    fn describe(&self) -> String;
}

/// What a stream plays, as given on the command line or in the config file.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// The built-in test signal.
    Tone,
    /// Silence.
    Silence,
    /// Audio files played in order, looping.
    Files(Vec<PathBuf>),
}

/// Why a source spec could not be parsed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The spec's text is not one we know.
    #[error("bad source spec {0:?}: expected tone, silence or file:PATH[,PATH...]")]
    BadSpec(String),
    /// A file could not be opened or decoded.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl std::str::FromStr for SourceSpec {
    type Err = SourceError;
    fn from_str(s: &str) -> Result<Self, SourceError> {
        match s {
            "tone" => Ok(SourceSpec::Tone),
            "silence" => Ok(SourceSpec::Silence),
            _ => Err(SourceError::BadSpec(s.to_string())),
        }
    }
}

/// Opens a source.
pub fn open(spec: &SourceSpec) -> Result<Box<dyn Source>, SourceError> {
    let _ = spec;
    unimplemented!()
}

impl std::fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceSpec::Tone => write!(f, "tone"),
            SourceSpec::Silence => write!(f, "silence"),
            SourceSpec::Files(p) => {
                let list: Vec<String> = p.iter().map(|p| p.display().to_string()).collect();
                write!(f, "file:{}", list.join(","))
            }
        }
    }
}
