#!/usr/bin/env python3
"""Decode recording files with FFmpeg (through PyAV) and write what they hold.

For each file given: its container and codec as FFmpeg reads them; for audio, channels,
sample rate and the samples decoded (FFmpeg applies the Ogg Opus pre-skip itself); for
video, the frames decoded and their sizes. All decoded audio,
concatenated in the order given, goes to --pcm as interleaved stereo float32 (little
endian) at 48 kHz. The last stdout line is a JSON summary.

Exit status: 0 when every file decoded, 1 on any FFmpeg error (its message on stderr).
"""

import argparse
import json
import sys

import av
import numpy as np


def decode_video(path, container):
    """Decodes every frame of a video file; its codec, size and frame count."""
    stream = container.streams.video[0]
    frames = 0
    sizes = set()
    for frame in container.decode(stream):
        frames += 1
        sizes.add((frame.width, frame.height))
    return {
        "file": path,
        "format": container.format.name,
        "codec": stream.codec_context.name,
        "frames": frames,
        "sizes": sorted(sizes),
    }


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+")
    p.add_argument("--pcm", required=True, help="where the decoded audio goes")
    args = p.parse_args(argv)
    summary = []
    with open(args.pcm, "wb") as out:
        for path in args.files:
            with av.open(path) as container:
                if not container.streams.audio:
                    summary.append(decode_video(path, container))
                    continue
                stream = container.streams.audio[0]
                ctx = stream.codec_context
                samples = 0
                for frame in container.decode(stream):
                    a = frame.to_ndarray()
                    # Planar float (fltp): one row per channel; packed: one interleaved row.
                    if frame.format.is_planar:
                        a = a.T
                    else:
                        a = a.reshape(-1, len(frame.layout.channels))
                    a = np.ascontiguousarray(a, dtype="<f4")
                    samples += a.shape[0]
                    out.write(a.tobytes())
                summary.append(
                    {
                        "file": path,
                        "format": container.format.name,
                        "codec": ctx.name,
                        "channels": len(ctx.layout.channels),
                        "rate": ctx.sample_rate,
                        "samples": samples,
                    }
                )
    print(json.dumps({"files": summary}))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except av.FFmpegError as e:
        print(f"FFmpeg: {e}", file=sys.stderr)
        sys.exit(1)
