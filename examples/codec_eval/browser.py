#!/usr/bin/env python3
"""Has headless Chromium decode the Ogg Opus files written by `codec_eval`.

Usage: browser.py DIR NAME[,NAME...]   (DIR holds NAME.opus; default target/codec-eval)

Serves DIR and browser.html on 127.0.0.1, opens the page in headless Chromium, waits for
the page to POST its JSON report, prints it and stops the browser. One-off evaluation
tool for docs/codec.md, not part of CI.
"""
import http.server, json, os, shutil, subprocess, sys, tempfile, threading

HERE = os.path.dirname(os.path.abspath(__file__))
out_dir = sys.argv[1] if len(sys.argv) > 1 else "target/codec-eval"
names = sys.argv[2] if len(sys.argv) > 2 else "libopus,opus-rs,ropus,mousiki"
shutil.copy(os.path.join(HERE, "browser.html"), os.path.join(out_dir, "browser.html"))
result = {}
done = threading.Event()


class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **kw):
        super().__init__(*a, directory=out_dir, **kw)

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        result["json"] = json.loads(body)
        self.send_response(204)
        self.end_headers()
        done.set()

    def log_message(self, *a):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{server.server_address[1]}/browser.html?files={names}"
profile = tempfile.mkdtemp(prefix="codec-eval-chromium-")
chromium = shutil.which("chromium") or shutil.which("chromium-browser")
flags = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
    "--no-pings", "--disable-domain-reliability",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1 , EXCLUDE [::1]",
    "--no-proxy-server", f"--user-data-dir={profile}",
]
browser = subprocess.Popen([chromium, *flags, url], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
try:
    ok = done.wait(90)
finally:
    browser.terminate()
    try:
        browser.wait(10)
    except subprocess.TimeoutExpired:
        browser.kill()
    server.shutdown()
    shutil.rmtree(profile, ignore_errors=True)
if not ok:
    sys.exit("no report from the browser within 90 s")
print(json.dumps(result["json"], indent=1))
