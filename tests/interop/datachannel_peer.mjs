// A WHIP publisher or WHEP viewer on libdatachannel (the npm package node-datachannel),
// the WebRTC stack OBS Studio's WHIP output is built on. tests/interop_datachannel.rs runs it.
//
// libdatachannel has no audio encoder: the publisher sends Opus frames that the Rust test
// encoded (a file of frames, each a 2-byte big-endian length then the packet), one every
// 20 ms, through libdatachannel's RtpPacketizer with an RtcpSrReporter and an
// RtcpNackResponder in the chain, the timestamp advanced by 960 per frame: what OBS does.
// The viewer POSTs a recvonly audio offer and writes every Opus RTP payload it gets to a
// file (4-byte timestamp, 2-byte sequence number, 2-byte length, all big-endian, then the
// payload) for the Rust test to decode and analyse.
//
// Loopback only: libdatachannel binds 127.0.0.1 with no STUN or TURN server, and every
// candidate not on 127.0.0.1 is dropped from the offer and the answer. No trickle: the
// offer is POSTed once gathering is complete (or, with --no-candidates, without any
// candidate at all, as OBS 30.2+ does). The session is DELETEd at the end.
//
// Usage:
//   node datachannel_peer.mjs publisher --module-dir DIR --url URL --frames FILE [--no-candidates]
//   node datachannel_peer.mjs viewer --module-dir DIR --url URL --out FILE --seconds N
// DIR is where node-datachannel is installed (DIR/node_modules/node-datachannel).
// Exit status: 0 when the session connected and the media was sent or received, 1 on
// failure (the reason on stderr), 2 on bad arguments. On success the last stdout line is a
// JSON summary.

import { createRequire } from "node:module";
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";

const OPUS_PT = 111;
const CLOCK_RATE = 48000;
const FRAME_MS = 20;
const SAMPLES_PER_FRAME = (CLOCK_RATE * FRAME_MS) / 1000;
// From the POST to a connected peer connection (ICE and DTLS).
const CONNECT_TIMEOUT_MS = 10000;
const HTTP_TIMEOUT_MS = 10000;
// OBS's audio fmtp (plugins/obs-webrtc): stereo Opus.
const OPUS_FMTP = "minptime=10;maxaveragebitrate=96000;stereo=1;sprop-stereo=1;useinbandfec=1";

function usage(why) {
  process.stderr.write(`datachannel_peer: ${why}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const [mode, ...rest] = argv;
  if (mode !== "publisher" && mode !== "viewer") usage("first argument: publisher or viewer");
  const args = { mode, candidates: true, verbose: false };
  for (let i = 0; i < rest.length; i++) {
    const flag = rest[i];
    const value = () => {
      if (i + 1 >= rest.length) usage(`${flag} needs a value`);
      return rest[++i];
    };
    if (flag === "--module-dir") args.moduleDir = value();
    else if (flag === "--url") args.url = value();
    else if (flag === "--frames") args.frames = value();
    else if (flag === "--out") args.out = value();
    else if (flag === "--seconds") args.seconds = Number(value());
    else if (flag === "--no-candidates") args.candidates = false;
    else if (flag === "--verbose") args.verbose = true;
    else usage(`unknown argument ${flag}`);
  }
  if (!args.moduleDir || !args.url) usage("--module-dir and --url are required");
  if (!/^http:\/\/127\.0\.0\.1:\d+\//.test(args.url)) usage(`${args.url}: only http://127.0.0.1 URLs`);
  if (mode === "publisher" && !args.frames) usage("publisher needs --frames");
  if (mode === "viewer" && (!args.out || !(args.seconds > 0))) usage("viewer needs --out and --seconds > 0");
  return args;
}

function log(...parts) {
  process.stderr.write(`[${(performance.now() / 1000).toFixed(3)}] ${parts.join(" ")}\n`);
}

// Keeps only `a=candidate` lines for UDP on 127.0.0.1 (or none at all), and drops
// `a=end-of-candidates` with them when none remain. Without candidates the m-line and
// c-line say port 9 and 0.0.0.0, as in the offer of OBS, which never gathers before it.
function loopbackOnly(sdp, keepCandidates) {
  let lines = sdp.split(/\r?\n/).filter((l) => l !== "");
  if (!keepCandidates) {
    lines = lines.map((l) => l.replace(/^m=(\w+) \d+ /, "m=$1 9 ").replace(/^c=IN IP4 .*$/, "c=IN IP4 0.0.0.0"));
  }
  const kept = lines.filter((l) => {
    if (!l.startsWith("a=candidate:")) return true;
    const f = l.slice("a=candidate:".length).split(" ");
    // foundation component transport priority address port "typ" type ...
    return keepCandidates && f[2]?.toLowerCase() === "udp" && f[4] === "127.0.0.1";
  });
  const any = kept.some((l) => l.startsWith("a=candidate:"));
  return kept.filter((l) => any || l !== "a=end-of-candidates").join("\r\n") + "\r\n";
}

async function http(method, url, body) {
  const res = await fetch(url, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/sdp" },
    body,
    signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
  });
  return { status: res.status, location: res.headers.get("location"), text: await res.text() };
}

function waitFor(what, check, timeoutMs) {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const timer = setInterval(() => {
      let done;
      try {
        done = check();
      } catch (e) {
        clearInterval(timer);
        reject(e);
        return;
      }
      if (done) {
        clearInterval(timer);
        resolve(performance.now() - started);
      } else if (performance.now() - started > timeoutMs) {
        clearInterval(timer);
        reject(new Error(`${what}: not within ${timeoutMs} ms`));
      }
    }, 5);
  });
}

// Opus frames from the test's file: [u16 BE length][packet]...
function readFrames(path) {
  const data = readFileSync(path);
  const frames = [];
  let at = 0;
  while (at < data.length) {
    if (at + 2 > data.length) throw new Error(`${path}: truncated length at byte ${at}`);
    const len = data.readUInt16BE(at);
    at += 2;
    if (len === 0 || at + len > data.length) throw new Error(`${path}: bad frame of ${len} bytes at byte ${at}`);
    frames.push(data.subarray(at, at + len));
    at += len;
  }
  if (frames.length === 0) throw new Error(`${path}: no frames`);
  return frames;
}

// One RTP packet's payload type, sequence number, timestamp and payload, or null for RTCP
// and anything that is not RTP version 2.
function parseRtp(buf) {
  if (buf.length < 12 || buf[0] >> 6 !== 2) return null;
  const pt = buf[1] & 0x7f;
  if (buf[1] >= 192 && buf[1] <= 223) return null; // RTCP (rtcp-mux)
  const cc = buf[0] & 0x0f;
  let at = 12 + 4 * cc;
  if (buf[0] & 0x10) {
    if (at + 4 > buf.length) return null;
    at += 4 + 4 * buf.readUInt16BE(at + 2);
  }
  let end = buf.length;
  if (buf[0] & 0x20) end -= buf[end - 1];
  if (at > end) return null;
  return { pt, seq: buf.readUInt16BE(2), ts: buf.readUInt32BE(4), payload: buf.subarray(at, end) };
}

function answerOpusPt(sdp) {
  const m = /a=rtpmap:(\d+) opus\/48000/i.exec(sdp);
  return m ? Number(m[1]) : null;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const require = createRequire(join(resolve(args.moduleDir), "package.json"));
  const ndc = require("node-datachannel");
  if (args.verbose) ndc.initLogger("Debug", (level, message) => log(`rtc ${level}: ${message}`));
  const version = ndc.getLibraryVersion();
  log(`libdatachannel ${version}, ${args.mode}, ${args.url}`);

  const pc = new ndc.PeerConnection(args.mode, {
    iceServers: [],
    bindAddress: "127.0.0.1",
    enableIceTcp: false,
  });
  let state = "new";
  pc.onStateChange((s) => {
    state = s;
    log(`peer connection ${s}`);
  });
  pc.onIceStateChange((s) => log(`ICE ${s}`));

  const ssrc = (Math.random() * 0xffffffff) >>> 0;
  let track;
  let rtpConfig;
  if (args.mode === "publisher") {
    const audio = new ndc.Audio("0", "SendOnly");
    audio.addOpusCodec(OPUS_PT, OPUS_FMTP);
    audio.addSSRC(ssrc, "mixcast-interop", "datachannel", "datachannel-audio");
    track = pc.addTrack(audio);
    rtpConfig = new ndc.RtpPacketizationConfig(ssrc, "mixcast-interop", OPUS_PT, CLOCK_RATE);
    const packetizer = new ndc.RtpPacketizer(rtpConfig);
    packetizer.addToChain(new ndc.RtcpSrReporter(rtpConfig));
    packetizer.addToChain(new ndc.RtcpNackResponder());
    track.setMediaHandler(packetizer);
  } else {
    const audio = new ndc.Audio("0", "RecvOnly");
    audio.addOpusCodec(OPUS_PT, OPUS_FMTP);
    track = pc.addTrack(audio);
    track.setMediaHandler(new ndc.RtcpReceivingSession());
  }

  let received = [];
  let ignored = 0;
  let opusPt = OPUS_PT;
  track.onMessage((msg) => {
    const rtp = parseRtp(msg);
    if (!rtp) return;
    if (rtp.pt !== opusPt) {
      ignored += 1;
      return;
    }
    received.push({ seq: rtp.seq, ts: rtp.ts, payload: Buffer.from(rtp.payload) });
  });

  pc.setLocalDescription();
  if (args.candidates) {
    await waitFor("ICE gathering", () => pc.gatheringState() === "complete", 5000);
  } else {
    await waitFor("the local offer", () => pc.localDescription() !== null, 5000);
  }
  const offer = loopbackOnly(pc.localDescription().sdp, args.candidates);
  if (args.verbose) log(`offer:\n${offer}`);

  const postedAt = performance.now();
  const res = await http("POST", args.url, offer);
  if (res.status !== 201) throw new Error(`POST ${args.url}: ${res.status}: ${res.text}`);
  if (!res.location) throw new Error("201 without a Location header");
  const session = new URL(res.location, args.url).toString();
  if (!session.startsWith("http://127.0.0.1:")) throw new Error(`session ${session} is not on loopback`);
  const answer = loopbackOnly(res.text, true);
  if (args.verbose) log(`answer:\n${answer}`);
  opusPt = answerOpusPt(answer) ?? OPUS_PT;
  const fingerprints = answer.split("\r\n").filter((l) => l.startsWith("a=fingerprint:")).length;
  pc.setRemoteDescription(answer, "answer");

  let summary;
  try {
    await waitFor(
      "a connected peer connection",
      () => {
        if (state === "failed" || state === "closed") throw new Error(`peer connection ${state}`);
        return state === "connected" && track.isOpen();
      },
      CONNECT_TIMEOUT_MS,
    );
    const connectedMs = Math.round(performance.now() - postedAt);
    log(`connected ${connectedMs} ms after the POST`);

    if (args.mode === "publisher") {
      const frames = readFrames(args.frames);
      const start = performance.now();
      let sent = 0;
      let refused = 0;
      // How late the timer let a frame leave (a live encoder's jitter), for the summary.
      let maxLateMs = 0;
      for (let i = 0; i < frames.length; i++) {
        // Paced on the wall clock, like a live encoder: frame i leaves at start + 20 ms * i.
        const due = start + i * FRAME_MS;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        if (state !== "connected") throw new Error(`peer connection ${state} after ${sent} frames`);
        maxLateMs = Math.max(maxLateMs, performance.now() - due);
        rtpConfig.timestamp = (rtpConfig.timestamp + (i === 0 ? 0 : SAMPLES_PER_FRAME)) >>> 0;
        if (track.sendMessageBinary(frames[i])) sent += 1;
        else refused += 1;
      }
      // Let the last packets and a sender report leave before the DELETE.
      await new Promise((r) => setTimeout(r, 200));
      summary = { mode: args.mode, libdatachannel: version, connected_ms: connectedMs, fingerprints, frames: frames.length, sent, refused, ssrc, max_late_ms: Math.round(maxLateMs * 10) / 10 };
    } else {
      await new Promise((r) => setTimeout(r, args.seconds * 1000));
      const packets = received;
      received = [];
      const parts = [];
      for (const p of packets) {
        const head = Buffer.alloc(8);
        head.writeUInt32BE(p.ts, 0);
        head.writeUInt16BE(p.seq, 4);
        head.writeUInt16BE(p.payload.length, 6);
        parts.push(head, p.payload);
      }
      writeFileSync(args.out, Buffer.concat(parts));
      summary = { mode: args.mode, libdatachannel: version, connected_ms: connectedMs, fingerprints, packets: packets.length, ignored, opus_pt: opusPt };
    }
  } finally {
    const del = await http("DELETE", session).catch((e) => ({ status: `failed: ${e.message}` }));
    log(`DELETE ${session}: ${del.status}`);
    pc.close();
  }
  process.stdout.write(JSON.stringify(summary) + "\n");
}

main().then(
  () => {
    // libdatachannel's threads keep the process alive: exit explicitly.
    process.exit(0);
  },
  (e) => {
    process.stderr.write(`datachannel_peer: ${e.message ?? e}\n`);
    process.exit(1);
  },
);
