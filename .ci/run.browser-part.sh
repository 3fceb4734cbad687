# Draft for .ci/run (the lead merges it): the browser test's needs.
# tests/browser.rs drives a real headless Chromium (Debian's `chromium`, found at
# /usr/bin/chromium or $CHROMIUM). Without it the test skips, so CI makes it required.
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends chromium
command -v chromium >/dev/null || { echo "chromium did not install" >&2; exit 1; }
export MIXCAST_REQUIRE_BROWSER=1
# Optional, to look at the page: screenshots of the browser tests as PNGs.
# export MIXCAST_SCREENSHOTS="$(mktemp -d)"
