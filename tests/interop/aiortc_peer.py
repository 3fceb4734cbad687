"""aiortc as a WHIP publisher or a WHEP viewer of mixcast, for tests/interop_aiortc.rs.

Owns one RTCPeerConnection for one run. The publisher sends an Opus track generated here:
a stereo tone (--left-hz on the left, --right-hz on the right) in 20 ms s16 frames at
48 kHz, paced in real time; aiortc encodes it with its own OpusEncoder (PyAV's libopus,
stereo, 96 kbit/s). The viewer receives the stream's Opus, decodes it with aiortc's own
OpusDecoder (stereo s16), writes the decoded audio to --pcm-out (interleaved stereo s16le,
48 kHz) for the test to analyse, and reports the dominant frequency of each channel.

Network: only 127.0.0.1. aioice gathers host candidates on every interface except
loopback, and aiortc adds a public STUN server when none is configured; here the host
addresses are exactly ["127.0.0.1"], the ICE server list is empty, and every candidate that
is not 127.0.0.1 is dropped from the offer before it is POSTed and from the answer before
it is applied. Every wait is bounded; a failure exits non-zero with the reason on stderr.
The last line of stdout is a JSON summary.
"""

import argparse
import asyncio
import fractions
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import aioice.ice
import numpy as np
from av import AudioFrame
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

RATE = 48000
FRAME = 960  # 20 ms
GATHER_TIMEOUT = 5.0
HTTP_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0


def loopback_host_addresses(use_ipv4, use_ipv6):
    """aioice's host addresses, restricted to the one this test may use."""
    return ["127.0.0.1"] if use_ipv4 else []


aioice.ice.get_host_addresses = loopback_host_addresses


def loopback_only(sdp):
    """The SDP without candidate lines whose address is not 127.0.0.1; and how many went."""
    kept, dropped = [], 0
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            if len(fields) < 6 or fields[4] != "127.0.0.1":
                dropped += 1
                continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n", dropped


class ToneTrack(MediaStreamTrack):
    """A stereo tone, one 20 ms frame per recv(), paced to the wall clock."""

    kind = "audio"

    def __init__(self, left_hz, right_hz, amplitude=0.25):
        super().__init__()
        self.hz = (left_hz, right_hz)
        self.amplitude = amplitude
        self.pts = 0
        self.start = None
        self.frames = 0

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.monotonic()
        wait = self.start + self.pts / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (self.pts + np.arange(FRAME)) / RATE
        pcm = np.empty((FRAME, 2), dtype=np.int16)
        for ch, hz in enumerate(self.hz):
            pcm[:, ch] = np.round(32767 * self.amplitude * np.sin(2 * np.pi * hz * t))
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = RATE
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, RATE)
        self.pts += FRAME
        self.frames += 1
        return frame


def http(method, url, body=None):
    """One HTTP exchange: (status, headers, body text); HTTP errors are returned too."""
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/sdp")
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
            return resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode(errors="replace")


async def negotiate(pc, url, offer_out):
    """Gathers, POSTs the offer (loopback candidates only), applies the answer and waits
    until connected. Returns (session URL, seconds from the POST to connected, answer)."""
    connected = asyncio.get_running_loop().create_future()

    @pc.on("connectionstatechange")
    def on_state():
        print(f"aiortc_peer: connection {pc.connectionState}", file=sys.stderr)
        if connected.done():
            return
        if pc.connectionState == "connected":
            connected.set_result(None)
        elif pc.connectionState in ("failed", "closed"):
            connected.set_exception(RuntimeError(f"connection {pc.connectionState}"))

    # aiortc gathers all candidates inside setLocalDescription (no trickle).
    await asyncio.wait_for(pc.setLocalDescription(await pc.createOffer()), GATHER_TIMEOUT)
    offer, dropped = loopback_only(pc.localDescription.sdp)
    print(f"aiortc_peer: {dropped} non-loopback candidates dropped from the offer", file=sys.stderr)
    if "a=candidate:" not in offer:
        raise RuntimeError("no 127.0.0.1 candidate gathered")
    if offer_out:
        with open(offer_out, "w") as f:
            f.write(offer)

    started = time.monotonic()
    status, headers, body = await asyncio.to_thread(http, "POST", url, offer.encode())
    if status != 201:
        raise RuntimeError(f"POST {url}: {status}: {body.strip()}")
    location = headers.get("Location")
    if not location:
        raise RuntimeError("201 without a Location")
    session = urllib.parse.urljoin(url, location)
    answer, _ = loopback_only(body)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    try:
        await asyncio.wait_for(connected, CONNECT_TIMEOUT)
    except BaseException:
        await asyncio.to_thread(http, "DELETE", session)
        raise
    return session, time.monotonic() - started, answer


def opus_in(answer):
    """The answer's Opus rtpmap and fmtp lines, for the summary."""
    pts = {l.split()[0].split(":")[1] for l in answer.splitlines() if "opus/48000" in l.lower()}
    return [l for l in answer.splitlines() if any(l.startswith(f"a={k}:{p} ") for k in ("rtpmap", "fmtp") for p in pts)]


async def publish(args):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    track = ToneTrack(args.left_hz, args.right_hz)
    pc.addTransceiver(track, direction="sendonly")
    try:
        session, connected_after, answer = await negotiate(pc, args.url, args.offer_out)
        await asyncio.sleep(args.seconds)
        stats = await pc.getStats()
        sent = sum(s.packetsSent for s in stats.values() if s.type == "outbound-rtp")
        status, _, _ = await asyncio.to_thread(http, "DELETE", session)
    finally:
        await pc.close()
    return {
        "mode": "publish",
        "frames_generated": track.frames,
        "packets_sent": sent,
        "connected_after_ms": round(connected_after * 1000),
        "answer_opus": opus_in(answer),
        "delete": status,
    }


def dominant_hz(samples):
    """The strongest frequency of `samples` (Hann window, FFT), Hz."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    spectrum[0] = 0
    return float(np.argmax(spectrum) * RATE / len(samples))


async def view(args):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="recvonly")
    tracks = asyncio.Queue()
    pc.on("track", lambda t: tracks.put_nowait(t))
    chunks, formats = [], set()
    try:
        session, connected_after, answer = await negotiate(pc, args.url, args.offer_out)
        track = await asyncio.wait_for(tracks.get(), CONNECT_TIMEOUT)
        deadline = time.monotonic() + args.seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                frame = await asyncio.wait_for(track.recv(), left)
            except asyncio.TimeoutError:
                break
            formats.add((frame.format.name, frame.layout.name, frame.sample_rate))
            # Packed s16 stereo: one plane, samples interleaved.
            chunks.append(frame.to_ndarray().reshape(-1))
        status, _, _ = await asyncio.to_thread(http, "DELETE", session)
    finally:
        await pc.close()
    if formats != {("s16", "stereo", RATE)}:
        raise RuntimeError(f"aiortc decoded to {formats}, expected s16 stereo at {RATE}")
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    with open(args.pcm_out, "wb") as f:
        f.write(pcm.astype("<i2").tobytes())
    stereo = pcm.reshape(-1, 2).astype(np.float64) / 32768
    settled = stereo[RATE // 10 :]
    return {
        "mode": "view",
        "frames": len(chunks),
        "seconds_decoded": round(len(stereo) / RATE, 3),
        "connected_after_ms": round(connected_after * 1000),
        "answer_opus": opus_in(answer),
        "left_dominant_hz": dominant_hz(settled[:, 0]) if len(settled) else None,
        "right_dominant_hz": dominant_hz(settled[:, 1]) if len(settled) else None,
        "delete": status,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["publish", "view"])
    p.add_argument("url", help="the WHIP (publish) or WHEP (view) endpoint")
    p.add_argument("--seconds", type=float, default=4.0, help="publish or receive this long once connected")
    p.add_argument("--left-hz", type=float, default=700.0)
    p.add_argument("--right-hz", type=float, default=1100.0)
    p.add_argument("--pcm-out", help="view: where to write the decoded audio")
    p.add_argument("--offer-out", help="where to write the offer as POSTed")
    args = p.parse_args()
    if args.mode == "view" and not args.pcm_out:
        p.error("view needs --pcm-out")
    try:
        summary = asyncio.run(publish(args) if args.mode == "publish" else view(args))
    except Exception as e:
        print(f"aiortc_peer: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
