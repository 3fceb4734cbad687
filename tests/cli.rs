//! The `mixcast` binary's command line: `--help`, and `--check-config` catching what start-up
//! would refuse (exit status 2 and a message, never a panic).

use std::process::Command;

fn mixcast(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mixcast"))
        .args(args)
        .env_remove("MIXCAST_TX_THREADS")
        .env_remove("MIXCAST_FANOUT")
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_explains_the_options() {
    let (code, out, _) = mixcast(&["--help"]);
    assert_eq!(code, 0);
    for flag in ["--source", "--bind", "--fanout", "--tx-threads", "--config"] {
        assert!(out.contains(flag), "--help lacks {flag}:\n{out}");
    }
}

#[test]
fn check_config_opens_the_sources() {
    let (code, out, _) = mixcast(&["--check-config", "--bind", "127.0.0.1"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("configuration OK"));

    let (code, out, err) = mixcast(&[
        "--check-config",
        "--source",
        "live=file:/nonexistent/mixcast-test.mp3",
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(!out.contains("configuration OK"), "{out}");
    assert!(err.contains("nonexistent"), "{err}");
}

#[test]
fn tx_threads_out_of_range_is_refused() {
    let (code, _, err) = mixcast(&["--check-config", "--tx-threads", "0"]);
    assert_eq!(code, 2);
    assert!(err.contains("tx_threads"), "{err}");
    let (code, out, _) = mixcast(&["--check-config", "--tx-threads", "2"]);
    assert_eq!(code, 0);
    assert!(out.contains("tx_threads: 2"), "{out}");
}
