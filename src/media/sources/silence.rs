//! A source of silence: a stream with no inputs yet, or a placeholder.

use super::Source;
use crate::media::Frame;

/// Produces zeros forever.
#[derive(Debug, Clone, Copy, Default)]
pub struct SilenceSource;

impl Source for SilenceSource {
    fn fill(&mut self, out: &mut Frame) {
        out.fill(0.0);
    }

    fn describe(&self) -> String {
        "silence".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::FRAME_LEN;

    #[test]
    fn overwrites_with_zeros() {
        let mut f = [0.5; FRAME_LEN];
        SilenceSource.fill(&mut f);
        assert!(f.iter().all(|&x| x == 0.0));
    }
}
