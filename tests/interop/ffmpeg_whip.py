#!/usr/bin/env python3
"""Publish a known tone (and H264 video) to a WHIP endpoint with FFmpeg's own `whip` muxer.

FFmpeg 8's muxer through PyAV (`pip install av numpy`; av 18 bundles FFmpeg 8 with libopus
and libx264), so the offer, ICE, DTLS and RTP are FFmpeg's, exactly as `ffmpeg -f whip`
sends them. Audio: Opus, 48 kHz stereo, a sine of --left-hz on the left channel and
--right-hz on the right. Video: H264 (libx264, constrained baseline, no B-frames), a small
moving pattern. Packets go out in real time for --seconds, then the muxer DELETEs its
session.

Exit status: 0 when every packet was handed to the muxer, 1 on any FFmpeg error (its
message on stderr), 2 on bad arguments. On success the last stdout line is a JSON summary.
"""

import argparse
import json
import sys
import time

import av
import numpy as np

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms: Opus's usual frame, one audio packet per frame
FPS = 25
WIDTH, HEIGHT = 320, 240


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url", help="WHIP endpoint, e.g. http://127.0.0.1:8889/mystream/whip")
    p.add_argument("--seconds", type=float, default=5.0, help="how long to publish")
    p.add_argument("--token", help="Bearer token (FFmpeg's `authorization` option)")
    p.add_argument("--left-hz", type=float, default=1000.0)
    p.add_argument("--right-hz", type=float, default=1500.0)
    p.add_argument("--amplitude", type=float, default=0.25, help="peak, 0..1")
    p.add_argument("--no-video", action="store_true", help="publish audio only")
    p.add_argument("--cert-file", help="DTLS certificate, PEM (FFmpeg's `cert_file` option)")
    p.add_argument("--key-file", help="its private key, PEM (FFmpeg's `key_file` option)")
    p.add_argument("--verbose", action="store_true", help="FFmpeg's verbose log on stderr")
    args = p.parse_args(argv)
    if args.seconds <= 0 or not 0 < args.amplitude <= 1:
        p.error("--seconds must be > 0 and --amplitude in (0, 1]")
    return args


def tone_frame(index, left_hz, right_hz, amplitude):
    """20 ms of the stereo tone, packed s16, phase-continuous across frames."""
    n = np.arange(index * FRAME_SAMPLES, (index + 1) * FRAME_SAMPLES, dtype=np.float64)
    t = n / SAMPLE_RATE
    left = amplitude * np.sin(2 * np.pi * left_hz * t)
    right = amplitude * np.sin(2 * np.pi * right_hz * t)
    stereo = np.empty(2 * FRAME_SAMPLES, dtype=np.int16)
    stereo[0::2] = np.round(left * 32767).astype(np.int16)
    stereo[1::2] = np.round(right * 32767).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(stereo.reshape(1, -1), format="s16", layout="stereo")
    frame.sample_rate = SAMPLE_RATE
    frame.pts = index * FRAME_SAMPLES
    return frame


def video_frame(index):
    """A gradient that scrolls one pixel a frame, so every frame differs."""
    x = (np.arange(WIDTH, dtype=np.int32) + 4 * index) % 256
    y = np.arange(HEIGHT, dtype=np.int32)[:, None]
    rgb = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    rgb[..., 0] = x[None, :]
    rgb[..., 1] = (y * 255 // HEIGHT).astype(np.uint8)
    rgb[..., 2] = (index * 8) % 256
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    frame.pts = index
    return frame


def open_container(args):
    options = {"strict": "experimental"}  # the whip muxer is flagged experimental in FFmpeg 8
    if args.token:
        options["authorization"] = args.token  # FFmpeg adds "Bearer "
    if args.cert_file and args.key_file:
        options["cert_file"] = args.cert_file
        options["key_file"] = args.key_file
    container = av.open(args.url, mode="w", format="whip", container_options=options)
    audio = container.add_stream("libopus", rate=SAMPLE_RATE, layout="stereo")
    audio.codec_context.options = {"application": "audio", "frame_duration": "20"}
    audio.bit_rate = 128000
    video = None
    if not args.no_video:
        video = container.add_stream(
            "libx264",
            rate=FPS,
            options={
                "preset": "ultrafast",
                "tune": "zerolatency",
                "profile": "baseline",
                "bf": "0",
                "g": str(FPS),  # a keyframe every second: a late viewer gets a picture soon
            },
        )
        video.width, video.height = WIDTH, HEIGHT
        video.pix_fmt = "yuv420p"
    return container, audio, video


def publish(args):
    container, audio, video = open_container(args)
    counts = {"audio_packets": 0, "video_packets": 0}
    audio_frames = int(round(args.seconds * SAMPLE_RATE / FRAME_SAMPLES))
    frames_per_video = SAMPLE_RATE // FRAME_SAMPLES // FPS  # audio frames per video frame
    started = None
    try:
        for i in range(audio_frames):
            if started is not None:
                # Real time: frame i is due i * 20 ms after the first one went out.
                delay = started + i * FRAME_SAMPLES / SAMPLE_RATE - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            packets = audio.encode(tone_frame(i, args.left_hz, args.right_hz, args.amplitude))
            if video is not None and i % frames_per_video == 0:
                packets += video.encode(video_frame(i // frames_per_video))
            for packet in packets:
                # The first mux writes the header: the muxer's whole WHIP exchange, ICE and
                # DTLS happen inside it, so the clock starts after it.
                container.mux(packet)
                counts["video_packets" if packet.stream is video else "audio_packets"] += 1
            if started is None and counts["audio_packets"] > 0:
                started = time.monotonic() - i * FRAME_SAMPLES / SAMPLE_RATE
        for stream in (audio, video):
            if stream is not None:
                for packet in stream.encode(None):
                    container.mux(packet)
    finally:
        container.close()  # the muxer's deinit DELETEs the session
    return counts


def main(argv):
    args = parse_args(argv)
    if args.verbose:
        # FFmpeg's own log callback writes straight to stderr, even while a call into
        # FFmpeg blocks (PyAV's Python-side logging would not).
        av.logging.restore_default_callback()
        av.logging.set_libav_level(av.logging.VERBOSE)
    try:
        counts = publish(args)
    except av.error.FFmpegError as e:
        print(f"ffmpeg_whip: {e}", file=sys.stderr)
        return 1
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
