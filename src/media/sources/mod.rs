//! The inputs of a mix that the server makes itself: test signals, silence and audio files,
//! and the one an embedding program feeds ([`feed`](mod@feed)).
//!
//! Every [`Source`] is pulled by the TX thread once per 20 ms tick, so `fill` must never
//! block, never do file I/O and never allocate. Work that can block (reading and decoding
//! files) happens on a thread of the source's own, which hands decoded audio to `fill`
//! through a lock-free SPSC ring (see [`file`](mod@file)).
//!
//! A source is described by a [`SourceSpec`], parsed from text such as `tone`, `silence`,
//! `file:music.mp3` or `file:a.flac,b.ogg`, and opened with [`open`].

pub mod feed;
pub mod file;
pub mod resample;
pub mod silence;
pub mod tone;

use super::Frame;
use std::fmt;
use std::path::PathBuf;

pub use feed::{feed, FeedSource, PcmFeed};
pub use file::FileSource;
pub use silence::SilenceSource;
pub use tone::ToneSource;

/// Something that produces 20 ms frames of 48 kHz stereo. Called from the TX thread once per
/// tick: it must never block and never do file I/O there.
pub trait Source: Send {
    /// Fills `out` with the next frame (silence when it has nothing).
    fn fill(&mut self, out: &mut Frame);
    /// A short human name for logs and the stream list.
    fn describe(&self) -> String;
    /// How many `fill` calls found too little audio ready and padded with silence (only
    /// sources fed by another thread can underrun; the others always return 0).
    fn underruns(&self) -> u64 {
        0
    }
    /// [`fill`](Source::fill) at tick time `now`. Sources that follow a clock of their own
    /// (a publisher's jitter buffer) use it; the engine passes its tick time, so tests on a
    /// virtual clock stay exact. The default ignores `now`.
    fn fill_at(&mut self, out: &mut Frame, now: std::time::Instant) {
        let _ = now;
        self.fill(out);
    }
    /// True once the source has nothing more to play, ever (a publisher that left and has
    /// faded out): the mixer then drops it. Files and test signals never finish.
    fn is_finished(&self) -> bool {
        false
    }
}

/// File name extensions that a bare path (without `file:`) may end in to be taken as a
/// file source. Matched case-insensitively.
pub const FILE_EXTENSIONS: &[&str] = &["mp3", "flac", "wav", "wave", "ogg", "oga", "m4a", "aac"];

/// What a stream plays, as given on the command line or in the config file.
///
/// Text forms (what [`FromStr`](std::str::FromStr) accepts and `Display` writes):
/// - `tone`: the built-in test signal (440 Hz left, 660 Hz right, beeping);
/// - `silence`;
/// - `file:PATH` or `file:PATH1,PATH2,...`: files played in order, looping. Paths cannot
///   contain commas; spaces around each path are trimmed.
/// - a bare `PATH` (or comma-separated paths) whose every path ends in one of
///   [`FILE_EXTENSIONS`], e.g. `music/song.mp3`: same as with `file:`.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// The built-in test signal.
    Tone,
    /// Silence.
    Silence,
    /// Audio files played in order, looping.
    Files(Vec<PathBuf>),
    /// A remote WHEP stream: its endpoint URL.
    Whep(String),
}

/// Why a source spec could not be parsed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The spec's text is not one we know.
    #[error("bad source spec {0:?}: expected tone, silence, file:PATH[,PATH...] or whep:URL")]
    BadSpec(String),
    /// A remote source cannot be reached at all (no route to its host).
    #[error("whep:{url}: {reason}")]
    Remote {
        /// The remote WHEP endpoint.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A file could not be opened or decoded.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The decoder thread could not be started.
    #[error("cannot start the decoder thread: {0}")]
    Thread(String),
}

fn has_known_extension(path: &str) -> bool {
    std::path::Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| FILE_EXTENSIONS.iter().any(|k| e.eq_ignore_ascii_case(k)))
}

impl std::str::FromStr for SourceSpec {
    type Err = SourceError;
    fn from_str(s: &str) -> Result<Self, SourceError> {
        let bad = || SourceError::BadSpec(s.to_string());
        let text = s.trim();
        if text.eq_ignore_ascii_case("tone") {
            return Ok(SourceSpec::Tone);
        }
        if text.eq_ignore_ascii_case("silence") {
            return Ok(SourceSpec::Silence);
        }
        if let Some(url) = text.strip_prefix("whep:") {
            let url = url.trim();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(bad());
            }
            return Ok(SourceSpec::Whep(url.to_string()));
        }
        let (list, bare) = match text.strip_prefix("file:") {
            Some(list) => (list, false),
            None => (text, true),
        };
        let parts: Vec<&str> = list.split(',').map(str::trim).collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        if bare && !parts.iter().all(|p| has_known_extension(p)) {
            return Err(bad());
        }
        Ok(SourceSpec::Files(
            parts.into_iter().map(PathBuf::from).collect(),
        ))
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::Tone => f.write_str("tone"),
            SourceSpec::Silence => f.write_str("silence"),
            SourceSpec::Files(paths) => {
                f.write_str("file:")?;
                for (i, p) in paths.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{}", p.display())?;
                }
                Ok(())
            }
            SourceSpec::Whep(url) => write!(f, "whep:{url}"),
        }
    }
}

/// Opens a source. For files this probes every file of the playlist first (so a missing or
/// undecodable file fails here, at once, with its path in the error), then starts the
/// decoder thread and waits briefly for it to buffer some audio.
pub fn open(spec: &SourceSpec) -> Result<Box<dyn Source>, SourceError> {
    Ok(match spec {
        SourceSpec::Tone => Box::new(ToneSource::new()),
        SourceSpec::Silence => Box::new(SilenceSource),
        SourceSpec::Files(paths) => Box::new(FileSource::open(paths)?),
        SourceSpec::Whep(url) => Box::new(crate::client::remote_source::open(url)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::analysis::{deinterleave, dominant_frequency};
    use crate::media::{FRAME_LEN, SAMPLE_RATE};

    #[test]
    fn parses_and_prints_specs() {
        let cases: &[(&str, SourceSpec, &str)] = &[
            ("tone", SourceSpec::Tone, "tone"),
            (" Silence ", SourceSpec::Silence, "silence"),
            (
                "file:a.mp3",
                SourceSpec::Files(vec!["a.mp3".into()]),
                "file:a.mp3",
            ),
            (
                "file:/x/a b.flac, rel/b.ogg,c",
                SourceSpec::Files(vec!["/x/a b.flac".into(), "rel/b.ogg".into(), "c".into()]),
                "file:/x/a b.flac,rel/b.ogg,c",
            ),
            (
                "music/Song.MP3",
                SourceSpec::Files(vec!["music/Song.MP3".into()]),
                "file:music/Song.MP3",
            ),
            (
                "a.wav,b.flac",
                SourceSpec::Files(vec!["a.wav".into(), "b.flac".into()]),
                "file:a.wav,b.flac",
            ),
            (
                "whep: http://10.0.0.2:8889/live/whep",
                SourceSpec::Whep("http://10.0.0.2:8889/live/whep".into()),
                "whep:http://10.0.0.2:8889/live/whep",
            ),
        ];
        for (text, spec, shown) in cases {
            let parsed: SourceSpec = text.parse().expect(text);
            assert_eq!(&parsed, spec, "{text}");
            assert_eq!(parsed.to_string(), *shown);
            assert_eq!(&shown.parse::<SourceSpec>().expect(shown), spec);
        }
    }

    #[test]
    fn rejects_bad_specs() {
        for text in [
            "",
            "tones",
            "file:",
            "file:a.mp3,,b.mp3",
            "a.txt",
            "a.mp3,b",
            "x",
            "whep:",
            "whep:live/whep",
            "whep:rtsp://h/x",
        ] {
            assert!(
                matches!(text.parse::<SourceSpec>(), Err(SourceError::BadSpec(_))),
                "{text:?}"
            );
        }
    }

    #[test]
    fn open_tone_and_silence() {
        let mut f = [0.0; FRAME_LEN];
        let mut tone = open(&SourceSpec::Tone).expect("tone opens");
        let mut all = Vec::new();
        for _ in 0..25 {
            tone.fill(&mut f);
            all.extend_from_slice(&f);
        }
        let (l, r) = deinterleave(&all);
        assert!((dominant_frequency(&l, SAMPLE_RATE) - 440.0).abs() < 2.0);
        assert!((dominant_frequency(&r, SAMPLE_RATE) - 660.0).abs() < 2.0);
        let mut silence = open(&SourceSpec::Silence).expect("silence opens");
        silence.fill(&mut f);
        assert!(f.iter().all(|&x| x == 0.0));
        assert_eq!(silence.underruns(), 0);
    }

    #[test]
    fn open_missing_file_fails_with_path() {
        let spec = SourceSpec::Files(vec!["/nonexistent/mixcast-test.mp3".into()]);
        match open(&spec) {
            Err(SourceError::File { path, .. }) => {
                assert_eq!(path, PathBuf::from("/nonexistent/mixcast-test.mp3"))
            }
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("a missing file opened"),
        }
    }
}
