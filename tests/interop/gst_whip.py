#!/usr/bin/python3
"""Publish a known tone to a WHIP endpoint, or play a WHEP stream, with GStreamer's webrtcbin.

The media stack is GStreamer's own: webrtcbin (ICE by libnice, DTLS by OpenSSL with
webrtcbin's RSA certificate, SRTP, RTP), audiotestsrc, opusenc and rtpopuspay. Only the
WHIP HTTP exchange is done here, the way GStreamer's `whipsink` does it: wait for ICE
gathering to complete, POST the whole offer, apply the answer, never trickle, DELETE the
session at the end.

With --viewer the URL is a WHEP endpoint: webrtcbin offers to receive audio only
(recvonly Opus), and rtpopusdepay, opusdec and audioconvert write what it hears to --pcm-out
as raw interleaved stereo float32 at 48 kHz, for --seconds once connected.

--bundle-policy none (webrtcbin's setting, as Meetecho's simple-whip-client sends for audio
alone) makes an offer without a=group:BUNDLE: with --video vp8, audio and video on two
transports.

Why not Debian's `simple-whip-client`: in bookworm it aborts at start-up ("libsoup2 symbols
detected. Using libsoup2 and libsoup3 in the same process is not supported"): it links
libsoup 2.4 while libnice pulls in libsoup 3 (libnice -> gupnp-igd -> gupnp-1.6).

libnice is told to gather on 127.0.0.1 only (nice_agent_add_local_address), so nothing
here sends to any non-loopback address; the offer's candidates are filtered too.

Needs Debian's python3-gi, gir1.2-gst-plugins-bad-1.0, gir1.2-nice-0.1 and the GStreamer
plugins (base, good, bad, nice), hence /usr/bin/python3. Exit status: 0 when the session
connected and sent (or received) audio for --seconds, 1 on failure (the reason on stderr), 2 on bad
arguments. On success the last stdout line is a JSON summary.
"""

import argparse
import base64
import hashlib
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("Nice", "0.1")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC, Nice  # noqa: E402

HTTP_TIMEOUT_S = 10  # whipsink's own timeout is 15 s
CONNECT_TIMEOUT_S = 10  # from the POST to a connected peer connection
OPUS_PT = 111


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url", help="WHIP endpoint, e.g. http://127.0.0.1:8889/mystream/whip")
    p.add_argument("--seconds", type=float, default=5.0, help="how long to send once connected")
    p.add_argument("--token", help="Bearer token")
    p.add_argument("--left-hz", type=float, default=1000.0)
    p.add_argument("--right-hz", type=float, default=1500.0)
    p.add_argument("--volume", type=float, default=0.25, help="audiotestsrc volume, 0..1")
    p.add_argument("--offer-out", help="write the POSTed offer to this file")
    p.add_argument(
        "--bundle-policy",
        choices=["none", "balanced", "max-compat", "max-bundle"],
        default="max-bundle",
        help="webrtcbin's bundle-policy (none: an offer without a=group:BUNDLE)",
    )
    p.add_argument("--video", choices=["none", "vp8"], default="none", help="also send video")
    p.add_argument("--viewer", action="store_true", help="play a WHEP stream instead")
    p.add_argument("--pcm-out", help="viewer: write the decoded audio here (f32le, 48 kHz, stereo)")
    p.add_argument("--answer-out", help="write the server's answer to this file")
    p.add_argument(
        "--pem",
        help="DTLS certificate and private key, PEM, instead of webrtcbin's own RSA one",
    )
    args = p.parse_args(argv)
    if args.viewer and (not args.pcm_out or args.video != "none"):
        p.error("--viewer needs --pcm-out and receives audio only")
    if args.seconds <= 0 or not 0 < args.volume <= 1:
        p.error("--seconds must be > 0 and --volume in (0, 1]")
    return args


def pipeline_description(args):
    if args.viewer:
        # webrtcbin alone: its audio transceiver is added in Peer.__init__, and what it
        # receives is decoded in Peer.on_pad_added.
        return f"webrtcbin name=send bundle-policy={args.bundle_policy}"
    video = []
    if args.video == "vp8":
        video = [
            "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=15/1",
            "! videoconvert ! queue ! vp8enc deadline=1 ! rtpvp8pay pt=96",
            "! application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000",
            "! send.",
        ]
    # Two mono sines interleaved into one stereo stream: left first, right second.
    tone = (
        "audiotestsrc is-live=true wave=sine freq={hz} volume={vol} "
        "! audio/x-raw,format=F32LE,rate=48000,channels=1,layout=interleaved "
        "! queue ! mix.sink_{pad}"
    )
    return " ".join(
        [
            f"webrtcbin name=send bundle-policy={args.bundle_policy}",
            "interleave name=mix",
            # interleave leaves the channels unpositioned, which opusenc would send as two
            # uncoupled mono streams (mapping family 255): make them front left and right.
            '! audioconvert mix-matrix="<<(float)1, (float)0>, <(float)0, (float)1>>"',
            "! audio/x-raw,channels=2,channel-mask=(bitmask)0x3",
            "! audioresample ! audio/x-raw,rate=48000,channels=2",
            "! opusenc bitrate=128000 frame-size=20",
            f"! rtpopuspay pt={OPUS_PT}",
            f"! application/x-rtp,media=audio,encoding-name=OPUS,payload={OPUS_PT},clock-rate=48000",
            "! send.",
            tone.format(hz=args.left_hz, vol=args.volume, pad=0),
            tone.format(hz=args.right_hz, vol=args.volume, pad=1),
        ]
        + video
    )


def loopback_only(sdp):
    """The offer without any candidate that is not on 127.0.0.1 / ::1."""
    kept = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            if len(fields) < 5 or fields[4] not in ("127.0.0.1", "::1"):
                continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n"


def pem_fingerprint(pem):
    """`sha-256 AA:BB:...` of the first certificate in `pem`."""
    body = pem.split("-----BEGIN CERTIFICATE-----", 1)[1].split("-----END CERTIFICATE-----", 1)[0]
    digest = hashlib.sha256(base64.b64decode("".join(body.split()))).hexdigest().upper()
    return "sha-256 " + ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def with_fingerprint(sdp, fingerprint):
    """`sdp` with every a=fingerprint line replaced by `fingerprint`."""
    lines = [
        f"a=fingerprint:{fingerprint}" if line.startswith("a=fingerprint:") else line
        for line in sdp.splitlines()
    ]
    return "\r\n".join(lines) + "\r\n"


class Peer:
    def __init__(self, args):
        self.args = args
        self.loop = GLib.MainLoop()
        self.error = None
        self.session_url = None
        self.offer = None
        self.answer = None
        self.connected = False
        self.pipeline = Gst.parse_launch(pipeline_description(args))
        if not isinstance(self.pipeline, Gst.Pipeline):
            # A description of one element (the viewer's webrtcbin) gives that element.
            pipeline = Gst.Pipeline.new("viewer")
            pipeline.add(self.pipeline)
            self.pipeline = pipeline
        self.webrtc = self.pipeline.get_by_name("send")
        # Gather on loopback only: libnice uses just the addresses added here.
        # webrtcbin 1.22 keeps its ICE object with a floating reference: PyGObject sinks it
        # on the first get and would free it when the wrapper goes. Keep the wrapper alive,
        # and give webrtcbin its own reference back.
        self.ice = self.webrtc.get_property("ice-agent")
        self.ice.ref()
        agent = self.ice.get_property("agent")
        address = Nice.Address()
        address.init()
        if not address.set_from_string("127.0.0.1"):
            raise RuntimeError("libnice rejects 127.0.0.1")
        agent.add_local_address(address)
        self.pem = None
        if args.pem:
            with open(args.pem, encoding="utf-8") as f:
                self.pem = f.read()
            self.pipeline.connect("deep-element-added", self.on_element_added)
        if args.viewer:
            caps = Gst.Caps.from_string(
                "application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,"
                f"payload={OPUS_PT},encoding-params=(string)2"
            )
            self.webrtc.emit(
                "add-transceiver", GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY, caps
            )
            self.webrtc.connect("pad-added", self.on_pad_added)
        self.received_bytes = 0
        self.webrtc.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.webrtc.connect("notify::ice-gathering-state", self.on_gathering_state)
        self.webrtc.connect("notify::connection-state", self.on_connection_state)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self.on_bus_error)

    def fail(self, why):
        if self.error is None:
            self.error = why
        self.loop.quit()

    def on_bus_error(self, _bus, message):
        err, debug = message.parse_error()
        self.fail(f"gstreamer: {err.message} ({debug})")

    def on_element_added(self, _bin, _sub_bin, element):
        # The DTLS decoder owns the connection's certificate; webrtcbin reads the
        # fingerprint for the offer from it, so this must happen before create-offer.
        factory = element.get_factory()
        if factory is not None and factory.get_name() == "dtlssrtpdec":
            element.set_property("pem", self.pem)

    def on_pad_added(self, _webrtc, pad):
        # Viewer: the received Opus, decoded to stereo float at 48 kHz, into --pcm-out.
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        decode = Gst.parse_bin_from_description(
            "rtpopusdepay ! opusdec ! audioconvert ! audioresample "
            "! audio/x-raw,format=F32LE,rate=48000,channels=2,layout=interleaved "
            f"! filesink name=pcm sync=false location={self.args.pcm_out}",
            True,
        )
        self.pipeline.add(decode)
        decode.sync_state_with_parent()
        pad.link(decode.get_static_pad("sink"))

    def on_negotiation_needed(self, webrtc):
        if self.args.viewer:
            promise = Gst.Promise.new_with_change_func(self.on_offer_created, webrtc, None)
            webrtc.emit("create-offer", None, promise)
            return
        for i in range(64):
            transceiver = webrtc.emit("get-transceiver", i)
            if transceiver is None:
                break
            transceiver.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
        promise = Gst.Promise.new_with_change_func(self.on_offer_created, webrtc, None)
        webrtc.emit("create-offer", None, promise)

    def on_offer_created(self, promise, webrtc, _data):
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None else None
        if offer is None:
            GLib.idle_add(self.fail, "webrtcbin made no offer")
            return
        webrtc.emit("set-local-description", offer, Gst.Promise.new())

    def on_gathering_state(self, webrtc, _pspec):
        if webrtc.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            # Off the streaming thread: the POST blocks.
            GLib.idle_add(self.exchange)

    def exchange(self):
        if self.offer is not None:
            return False
        self.offer = loopback_only(self.webrtc.get_property("local-description").sdp.as_text())
        if self.args.pem:
            # webrtcbin 1.22 computed the fingerprint from its own certificate before ours
            # was set on the DTLS decoder: announce the one DTLS will really present.
            self.offer = with_fingerprint(self.offer, pem_fingerprint(self.pem))
        if self.args.offer_out:
            with open(self.args.offer_out, "w", encoding="utf-8") as f:
                f.write(self.offer)
        headers = {"Content-Type": "application/sdp"}
        if self.args.token:
            headers["Authorization"] = f"Bearer {self.args.token}"
        request = urllib.request.Request(
            self.args.url, data=self.offer.encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                status = response.status
                location = response.headers.get("Location")
                self.answer = response.read().decode()
        except urllib.error.HTTPError as e:
            body = e.read().decode(errors="replace")
            self.fail(f"POST {self.args.url}: status {e.code}: {body}")
            return False
        except OSError as e:
            self.fail(f"POST {self.args.url}: {e}")
            return False
        if status not in (200, 201) or not location:
            self.fail(f"POST {self.args.url}: status {status}, Location {location!r}")
            return False
        self.session_url = urllib.parse.urljoin(self.args.url, location)
        if self.args.answer_out:
            with open(self.args.answer_out, "w", encoding="utf-8") as f:
                f.write(self.answer)
        ok, sdp = GstSdp.SDPMessage.new_from_text(self.answer)
        if ok != GstSdp.SDPResult.OK:
            self.fail(f"unparsable answer:\n{self.answer}")
            return False
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        self.webrtc.emit("set-remote-description", answer, Gst.Promise.new())
        GLib.timeout_add_seconds(CONNECT_TIMEOUT_S, self.check_connected)
        return False

    def check_connected(self):
        if not self.connected:
            state = self.webrtc.get_property("connection-state").value_nick
            self.fail(f"not connected {CONNECT_TIMEOUT_S} s after the answer (state {state})")
        return False

    def on_connection_state(self, webrtc, _pspec):
        state = webrtc.get_property("connection-state")
        if state == GstWebRTC.WebRTCPeerConnectionState.CONNECTED and not self.connected:
            self.connected = True
            GLib.idle_add(self.start_clock)
        elif state == GstWebRTC.WebRTCPeerConnectionState.FAILED:
            GLib.idle_add(self.fail, "peer connection failed (ICE or DTLS)")

    def start_clock(self):
        GLib.timeout_add(int(self.args.seconds * 1000), self.finish)
        return False

    def finish(self):
        self.loop.quit()
        return False

    def outbound_packets(self):
        promise = Gst.Promise.new()
        self.webrtc.emit("get-stats", None, promise)
        promise.wait()
        stats = promise.get_reply()
        sent = 0
        if stats is None:
            return sent
        kind = (
            GstWebRTC.WebRTCStatsType.INBOUND_RTP
            if self.args.viewer
            else GstWebRTC.WebRTCStatsType.OUTBOUND_RTP
        )
        field = "packets-received" if self.args.viewer else "packets-sent"

        def visit(_field, value, _data):
            nonlocal sent
            if isinstance(value, Gst.Structure) and value.has_field(field):
                if value.get_value("type") == kind:
                    sent += value.get_value(field) or 0
            return True

        if os.environ.get("GST_WHIP_DEBUG_STATS"):
            print(stats.to_string(), file=sys.stderr)
        stats.foreach(visit, None)
        return sent

    def delete(self):
        if self.session_url is None:
            return
        request = urllib.request.Request(self.session_url, method="DELETE")
        if self.args.token:
            request.add_header("Authorization", f"Bearer {self.args.token}")
        try:
            urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S).close()
        except OSError as e:
            print(f"gst_whip: DELETE {self.session_url}: {e}", file=sys.stderr)

    def run(self):
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            raise RuntimeError("the pipeline does not start")
        self.loop.run()
        sent = self.outbound_packets() if self.error is None else 0
        self.pipeline.set_state(Gst.State.NULL)
        self.delete()
        if self.error is not None:
            raise RuntimeError(self.error)
        key = "packets_received" if self.args.viewer else "packets_sent"
        return {key: sent, "session_url": self.session_url}


def main(argv):
    args = parse_args(argv)
    Gst.init(None)
    try:
        summary = Peer(args).run()
    except RuntimeError as e:
        print(f"gst_whip: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
