//! The interop matrix: each test that runs a real third-party client records its cell here
//! (one file per client and role under `target/tmp/interop-matrix/`), and
//! `tests/interop/print_matrix.sh` (run by `.ci/run` at the end, pass or fail) prints the
//! table of every expected cell.
//!
//! A cell is recorded only after the media was checked (a frequency heard, frames
//! decoded): `record(.., true, ..)` means "this client and this role work, media checked".
//! A test that fails records `false` with what went wrong before it panics, so the printed
//! matrix says which cell broke and why.

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::path::PathBuf;

/// Where the cells go: `target/tmp/interop-matrix`.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("interop-matrix")
}

/// Records one cell. `client` and `role` are short names the printer knows (see
/// `tests/interop/print_matrix.sh`): clients `chromium`, `ffmpeg`, `gstreamer`,
/// `simple-whip-client`, `libdatachannel`, `aiortc`, `pion`, `mixcast`; roles `publisher`,
/// `viewer`. `detail` is one line: what was measured (e.g. "550 Hz heard, both channels").
pub fn record(client: &str, role: &str, ok: bool, detail: &str) {
    let dir = dir();
    let _ = std::fs::create_dir_all(&dir);
    let status = if ok { "PASS" } else { "FAIL" };
    let detail = detail.replace(['\n', '\r'], " ");
    let _ = std::fs::write(
        dir.join(format!("{client}__{role}")),
        format!("{status} {detail}\n"),
    );
}

/// Runs `check`, records its outcome as the cell (`Ok(detail)` passes, `Err(why)` fails),
/// and panics on failure so the test fails too.
pub fn cell(client: &str, role: &str, check: impl FnOnce() -> Result<String, String>) {
    match check() {
        Ok(detail) => record(client, role, true, &detail),
        Err(why) => {
            record(client, role, false, &why);
            panic!("{client} as {role}: {why}");
        }
    }
}
