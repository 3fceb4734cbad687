#!/usr/bin/env python3
"""Encode a short moving picture with libvpx (VP8 or VP9, through PyAV) and write its
frames as a browser's RTP would carry them after depacketizing: each one as a record of
a 4-byte little-endian length, a keyframe flag byte, then the frame's bytes.

Exit status: 0 on success, 1 on an FFmpeg error. The last stdout line is a JSON summary.
"""

import argparse
import json
import struct
from fractions import Fraction
import sys

import av
import numpy as np

WIDTH, HEIGHT, FPS = 320, 240, 25


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("codec", choices=["libvpx", "libvpx-vp9"])
    p.add_argument("out")
    p.add_argument("--frames", type=int, default=50)
    args = p.parse_args(argv)
    ctx = av.CodecContext.create(args.codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    ctx.framerate = FPS
    ctx.time_base = Fraction(1, FPS)
    ctx.gop_size = FPS
    ctx.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    written, keyframes = 0, 0
    with open(args.out, "wb") as out:
        frames = []
        for i in range(args.frames):
            x = (np.arange(WIDTH, dtype=np.int32) + 4 * i) % 256
            rgb = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
            rgb[..., 0] = x[None, :]
            rgb[..., 2] = (i * 8) % 256
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            f.pts = i
            frames.append(f)
        for f in frames + [None]:
            for packet in ctx.encode(f):
                data = bytes(packet)
                out.write(struct.pack("<IB", len(data), 1 if packet.is_keyframe else 0))
                out.write(data)
                written += 1
                keyframes += 1 if packet.is_keyframe else 0
    print(json.dumps({"frames": written, "keyframes": keyframes}))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except av.FFmpegError as e:
        print(f"FFmpeg: {e}", file=sys.stderr)
        sys.exit(1)
