// mixcast's web page: the list of streams, a WHEP player for each, and a WHIP publisher
// that sends the microphone (and the camera, if asked) to a stream.
//
// Plain ES module, no build step, no external fetch: the page must work offline.
// A player is one RTCPeerConnection receiving the stream's stereo Opus mix and its video
// (if it has any), an <audio> element that plays the mix, a muted <video> element that
// shows the picture, and a WebAudio graph (source -> splitter -> one analyser per
// channel) that drives the level meters and the tests' frequency checks. WHEP has no
// renegotiation, so the player always asks for video: a stream's video may start long
// after its audio. The publisher is one RTCPeerConnection sending the microphone's track
// (and the camera's), with the same kind of graph on the local audio: its meters show
// what is sent.
//
// The stream list comes from the server-sent events of `/api/events` (read with fetch, so
// that the read token goes in a header, never in a URL); `/api/streams` is polled only
// when that stream is missing or keeps failing.
//
// `/?play=NAME` starts playing NAME at load (repeatable); `window.mixcastTest` exposes
// the players and the publisher to automated tests.

const LIST_INTERVAL_MS = 3000;
// Reconnecting to /api/events: the first retry after 1 s, doubling up to 15 s.
const EVENTS_RETRY_MS = 1000;
const EVENTS_RETRY_MAX_MS = 15000;
// Failed attempts in a row (none delivering an event) before the list is polled too.
const EVENTS_FAILURES_BEFORE_POLLING = 3;
// The server sends a keep-alive every 15 s: silence this long means a dead connection.
const EVENTS_SILENCE_MS = 40000;
// The server sends the list as soon as it accepts the stream: without it by then (a proxy
// that buffers the response), the list is polled until events come.
const EVENTS_FIRST_EVENT_MS = 5000;
// Loss is shown over this window, the latency numbers over the last stats interval.
const LOSS_WINDOW_MS = 10000;
// How often the meters' accessible values follow the sound (screen readers read them on
// demand; every frame would be noise).
const METER_ARIA_INTERVAL_MS = 500;
const STATS_INTERVAL_MS = 1000;
// The server answers with its full candidate list, so waiting for our own gathering is
// only about sending a complete offer; on loopback it finishes in milliseconds.
const ICE_GATHERING_TIMEOUT_MS = 2000;
const CONNECT_TIMEOUT_MS = 10000;
const DELETE_TIMEOUT_MS = 5000;
// What a player or the publisher shows when the server ends its session (DTLS close_notify).
const SERVER_STOPPED = "server stopped: it ended this session";
// How long a player watches for its first decoded video frame (for `timing`).
const FIRST_FRAME_WATCH_MS = 15000;
const FIRST_FRAME_POLL_MS = 20;
// Simulcast from the page (tests): three encodings, the largest listed first (the server
// forwards the first layer of the offer's a=simulcast line).
const SIMULCAST_ENCODINGS = [
  { rid: "f" },
  { rid: "h", scaleResolutionDownBy: 2 },
  { rid: "q", scaleResolutionDownBy: 4 },
];
// 8192 samples at 48 kHz: 5.9 Hz bins and a 170 ms window, shorter than the test
// signal's 800 ms beep.
const FFT_SIZE = 8192;
// Below this (dBFS, per FFT bin) a channel counts as silent.
const SILENCE_DB = -90;
const METER_FLOOR_DB = -60;
// The meters look at the last ~45 ms, so they follow the sound closely.
const METER_WINDOW = 2048;

/** An error to show to the user as it is. */
class UserError extends Error {}

/** The read token the page shows the server (WHEP requests and the stream list), from the
 * "Read token" field. It starts from the URL fragment (`#read-token=…`: a fragment is
 * never sent to a server, so never in its logs) or this tab's sessionStorage, and is kept
 * there while the tab lives. */
const readToken = {
  input: null,
  storageKey: "mixcast-read-token",

  init(input, onChange) {
    this.input = input;
    const fromFragment = new URLSearchParams(location.hash.slice(1)).get("read-token");
    let stored = null;
    try {
      stored = sessionStorage.getItem(this.storageKey);
    } catch {
      // Storage refused (privacy settings): the field alone holds it.
    }
    input.value = fromFragment ?? stored ?? "";
    this.keep();
    input.addEventListener("change", () => {
      this.keep();
      onChange();
    });
  },

  keep() {
    try {
      const token = this.value();
      if (token) sessionStorage.setItem(this.storageKey, token);
      else sessionStorage.removeItem(this.storageKey);
    } catch {
      // As above.
    }
  },

  value() {
    return this.input?.value.trim() ?? "";
  },

  /** Request headers carrying it, if there is one. */
  headers(extra = {}) {
    const token = this.value();
    return token ? { ...extra, Authorization: `Bearer ${token}` } : { ...extra };
  },
};

/** Resolves once ICE gathering is complete, or after `timeoutMs` (then the offer just
 * carries the candidates gathered so far). */
function iceGatheringComplete(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", onChange);
      resolve();
    };
    const onChange = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", onChange);
  });
}

/** Calls `onClosed` when the connection's DTLS transport closes: the server's DTLS
 * close_notify (RFC 5246 §7.2.1), its goodbye when it stops or ends the session. Chromium
 * reports it only there (the RTCP BYE before it changes nothing it shows, and the
 * connection state stays "connected" until consent checks fail some 10 s later). */
function watchGoodbye(pc, onClosed) {
  const transport = pc.getReceivers()[0]?.transport ?? pc.getSenders()[0]?.transport;
  if (!transport) return;
  transport.addEventListener("statechange", () => {
    if (transport.state === "closed") onClosed();
  });
}

/** Asks for stereo Opus: adds `stereo=1;sprop-stereo=1` to the offer's Opus fmtp lines. */
function preferStereoOpus(sdp) {
  const opusPayloads = [...sdp.matchAll(/^a=rtpmap:(\d+) opus\/48000\/2\r?$/gim)].map(
    (m) => m[1],
  );
  return sdp.replace(/^a=fmtp:(\d+) (.*?)(\r?)$/gm, (line, pt, params, cr) => {
    if (!opusPayloads.includes(pt) || /(^|;)\s*stereo=/.test(params)) return line;
    return `a=fmtp:${pt} ${params};stereo=1;sprop-stereo=1${cr}`;
  });
}

/** Whether an Opus `a=fmtp` line of `sdp` says `stereo=1`. */
function opusStereoIn(sdp) {
  const opusPayloads = [...sdp.matchAll(/^a=rtpmap:(\d+) opus\/48000\/2\r?$/gim)].map((m) => m[1]);
  return [...sdp.matchAll(/^a=fmtp:(\d+) (.*?)\r?$/gm)].some(
    ([, pt, params]) => opusPayloads.includes(pt) && /(^|;)\s*stereo=1\s*(;|$)/.test(params),
  );
}

/** The frequency of the strongest FFT bin, refined by a parabola through its neighbours
 * (on the dB values), or null when the spectrum is silent. */
function dominantFrequency(spectrumDb, sampleRate, fftSize) {
  let best = 1;
  for (let k = 2; k < spectrumDb.length - 1; k++) {
    if (spectrumDb[k] > spectrumDb[best]) best = k;
  }
  const peak = spectrumDb[best];
  if (!Number.isFinite(peak) || peak < SILENCE_DB) return null;
  const [a, b, c] = [spectrumDb[best - 1], peak, spectrumDb[best + 1]];
  const denominator = a - 2 * b + c;
  const offset = Number.isFinite(denominator) && denominator !== 0 ? (0.5 * (a - c)) / denominator : 0;
  return ((best + offset) * sampleRate) / fftSize;
}

/** The error for a signalling response that is not the expected one: its status and the
 * server's explanation (an RFC 9457 problem's `detail`, else the body's text). */
async function failureOf(method, url, response) {
  const body = (await response.text().catch(() => "")).trim();
  let detail = body;
  if (/^application\/problem\+json/i.test(response.headers.get("Content-Type") ?? "")) {
    try {
      const problem = JSON.parse(body);
      detail = String(problem.detail || problem.title || body);
    } catch {
      // Not JSON after all: show the text.
    }
  }
  const explained = detail ? `: ${detail.slice(0, 300)}` : "";
  return new UserError(
    `${method} ${url.pathname} answered ${response.status} ${response.statusText}${explained}`,
  );
}

/** One analyser per channel of `mediaStream` (`channels` is 1 or 2), fed through a
 * splitter so that each channel is measured on its own. */
function createAnalysers(context, mediaStream, channels) {
  const source = context.createMediaStreamSource(mediaStream);
  const splitter = context.createChannelSplitter(channels);
  source.connect(splitter);
  return Array.from({ length: channels }, (_, channel) => {
    const analyser = context.createAnalyser();
    analyser.fftSize = FFT_SIZE;
    analyser.smoothingTimeConstant = 0;
    splitter.connect(analyser, channel);
    return analyser;
  });
}

/** Per analyser: { rms, peak } of its last METER_WINDOW samples. */
function measureLevels(analysers) {
  return analysers.map((analyser) => {
    const samples = new Float32Array(analyser.fftSize);
    analyser.getFloatTimeDomainData(samples);
    const recent = samples.subarray(samples.length - METER_WINDOW);
    let sum = 0;
    let peak = 0;
    for (const x of recent) {
      sum += x * x;
      peak = Math.max(peak, Math.abs(x));
    }
    return { rms: Math.sqrt(sum / recent.length), peak };
  });
}

/** The dominant frequency (Hz) an analyser hears, or null when silent. */
function analyserFrequency(analyser) {
  const spectrum = new Float32Array(analyser.frequencyBinCount);
  analyser.getFloatFrequencyData(spectrum);
  return dominantFrequency(spectrum, analyser.context.sampleRate, analyser.fftSize);
}

/** A byte counter's rate in bits per second, updated about once per STATS_INTERVAL_MS. */
class RateMeter {
  #last = null;
  /** The latest rate, or null before two readings. */
  rate = null;

  /** Takes a reading of `bytes` at `at` (ms) and returns the rate. */
  update(bytes, at) {
    if (!this.#last) {
      this.#last = { bytes, at };
    } else if (at - this.#last.at >= STATS_INTERVAL_MS * 0.9) {
      this.rate = ((bytes - this.#last.bytes) * 8 * 1000) / (at - this.#last.at);
      this.#last = { bytes, at };
    }
    return this.rate;
  }
}

/** A viewer's delays and loss from successive getStats reports. Jitter buffer and playout
 * delay are counted by the browser as running totals; the difference between two readings
 * gives the delay of the audio played in between (the lifetime average would hide a
 * change for minutes), falling back to the average when nothing was played between. */
class DelayMeter {
  #last = null;
  /** { at, received, lost } per reading within LOSS_WINDOW_MS. */
  #history = [];

  /** Returns { roundTripMs, jitterBufferMs, playoutMs, playoutSource, totalMs, lossPercent,
   * lossWindowMs, lost, received } from `report`; any may be null (not reported yet). */
  update(report) {
    let inbound = null;
    let playout = null;
    let transport = null;
    const pairs = [];
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") inbound = s;
      else if (s.type === "media-playout" && s.kind === "audio") playout = s;
      else if (s.type === "transport") transport = s;
      else if (s.type === "candidate-pair") pairs.push(s);
    });
    if (!inbound) return null;
    const pair =
      (transport?.selectedCandidatePairId && report.get(transport.selectedCandidatePairId)) ||
      pairs.find((p) => p.nominated && p.state === "succeeded");
    const roundTripMs =
      typeof pair?.currentRoundTripTime === "number" ? pair.currentRoundTripTime * 1000 : null;

    const now = {
      at: inbound.timestamp,
      jbDelay: inbound.jitterBufferDelay ?? null,
      jbEmitted: inbound.jitterBufferEmittedCount ?? null,
      playoutDelay: playout?.totalPlayoutDelay ?? null,
      playoutSamples: playout?.totalSamplesCount ?? null,
    };
    const last = this.#last;
    this.#last = now;
    const recent = (total, count, lastTotal, lastCount) => {
      if (total === null || count === null || !count) return null;
      if (last && lastCount !== null && count > lastCount) {
        return ((total - lastTotal) / (count - lastCount)) * 1000;
      }
      return (total / count) * 1000;
    };
    const jitterBufferMs = recent(now.jbDelay, now.jbEmitted, last?.jbDelay, last?.jbEmitted);
    const playoutMs = recent(
      now.playoutDelay,
      now.playoutSamples,
      last?.playoutDelay,
      last?.playoutSamples,
    );
    const parts = [roundTripMs === null ? null : roundTripMs / 2, jitterBufferMs, playoutMs];
    const totalMs = parts.every((x) => x === null) ? null : parts.reduce((a, x) => a + (x ?? 0), 0);

    // Loss over the window: packets the browser counts as lost against those that came.
    const received = inbound.packetsReceived ?? 0;
    const lost = Math.max(0, inbound.packetsLost ?? 0);
    this.#history.push({ at: now.at, received, lost });
    while (this.#history.length > 2 && now.at - this.#history[1].at >= LOSS_WINDOW_MS) {
      this.#history.shift();
    }
    const first = this.#history[0];
    const single = this.#history.length === 1;
    const windowLost = single ? lost : Math.max(0, lost - first.lost);
    const windowTotal = single ? received + lost : received - first.received + windowLost;
    return {
      roundTripMs,
      jitterBufferMs,
      playoutMs,
      playoutSource: playout ? "media-playout" : null,
      totalMs,
      lossPercent: windowTotal > 0 ? (100 * windowLost) / windowTotal : null,
      lossWindowMs: single ? null : now.at - first.at,
      lost,
      received,
    };
  }
}

/** "0.4 ms", "41 ms": one decimal below 10 ms. */
function formatMs(ms) {
  return `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
}

/** The delay line: "Server to speaker ≈ 62 ms: network 0.2 ms (half the 0.4 ms round
 * trip), jitter buffer 41 ms, playout 21 ms". It leaves out the server's own share (its
 * mix is 20 ms frames, sent as they are encoded) and the publisher's side. */
function describeDelay(latency) {
  if (!latency) return "Server to speaker: measuring…";
  const parts = [];
  if (latency.roundTripMs !== null && latency.roundTripMs < 1) {
    // Chromium measures the round trip in whole milliseconds: on a LAN it reads 0.
    parts.push("network under 1 ms (the round trip reads 0 ms)");
  } else if (latency.roundTripMs !== null) {
    parts.push(
      `network ${formatMs(latency.roundTripMs / 2)} (half the ${formatMs(latency.roundTripMs)} round trip)`,
    );
  } else {
    parts.push("round trip not measured yet");
  }
  parts.push(
    latency.jitterBufferMs === null
      ? "jitter buffer not reported yet"
      : `jitter buffer ${formatMs(latency.jitterBufferMs)}`,
  );
  parts.push(
    latency.playoutMs === null
      ? "playout not reported by this browser"
      : `playout ${formatMs(latency.playoutMs)}`,
  );
  const total = latency.totalMs === null ? "" : ` ≈ ${formatMs(latency.totalMs)}`;
  return `Server to speaker${total}: ${parts.join(", ")}`;
}

/** The loss in words: "no loss" or "1.2 % lost", over the window it covers. */
function describeLoss(latency) {
  if (!latency || latency.lossPercent === null) return "Loss: measuring…";
  const window =
    latency.lossWindowMs === null
      ? "so far"
      : `in the last ${Math.round(latency.lossWindowMs / 1000)} s`;
  if (latency.lossPercent === 0) return `No loss ${window}`;
  const percent = latency.lossPercent < 0.1 ? "under 0.1" : latency.lossPercent.toFixed(1);
  return `${percent} % lost ${window}`;
}

/** A linear level (0..1) as "−23 dBFS", "silent" at 0. */
function formatDbfs(linear) {
  if (linear === null || linear === undefined) return "–";
  if (!(linear > 0)) return "silent";
  return `${(20 * Math.log10(linear)).toFixed(0).replace("-", "−")} dBFS`;
}

/** The codec of an RTP stats entry as { mimeType, channels, fmtp }, or null. */
function codecOf(report, rtp) {
  const codec = rtp.codecId ? report.get(rtp.codecId) : undefined;
  return codec
    ? { mimeType: codec.mimeType, channels: codec.channels ?? 1, fmtp: codec.sdpFmtpLine ?? "" }
    : null;
}

/** One WHEP session for one stream. Fires "change" whenever state or error changes. */
class WhepPlayer extends EventTarget {
  /** "idle" | "connecting" | "connected" | "disconnected" | "stopping" | "stopped" | "failed" */
  state = "idle";
  /** The last error's message, or null. */
  error = null;
  /** A hint for the user that is not an error (e.g. autoplay blocked), or null. */
  notice = null;
  /** The HTTP status of the last DELETE of a session, or null. */
  deleteStatus = null;
  /** Whether video frames are arriving and shown (the track is live and has a size). */
  hasVideo = false;
  /** The last latency reading (see DelayMeter.update), or null. */
  latency = null;
  /** When (performance.now(), ms) this session's steps happened: `post` (the offer sent),
   * `answer`, `connected`, `firstDecoded` (getStats saw a decoded frame) and
   * `firstPainted` (the <video> presented one); null until each happens. */
  timing = null;

  #pc = null;
  #sessionUrl = null;
  /** The headers of this session's requests (its read token, if any). */
  #headers = {};
  #audioContext = null;
  #analysers = [];
  #connectTimer = null;
  #rate = new RateMeter();
  #videoRate = new RateMeter();
  #delays = new DelayMeter();

  constructor(stream, audioElement, videoElement) {
    super();
    this.stream = stream;
    this.audio = audioElement;
    this.video = videoElement;
    for (const event of ["resize", "loadeddata", "playing", "emptied"]) {
      this.video.addEventListener(event, () => this.#checkVideo());
    }
  }

  get playing() {
    return this.#pc !== null;
  }

  /** Sends the offer, applies the answer; media then flows on its own. */
  async play() {
    if (this.#pc) return;
    const pc = new RTCPeerConnection();
    this.#pc = pc;
    this.#rate = new RateMeter();
    this.#videoRate = new RateMeter();
    this.#delays = new DelayMeter();
    this.latency = null;
    this.deleteStatus = null;
    // Created here, inside the click that called us, so the autoplay policy allows it.
    this.#audioContext = new AudioContext();
    this.#set({ state: "connecting", error: null, notice: null, hasVideo: false });
    const timing = {
      post: null,
      answer: null,
      connected: null,
      firstDecoded: null,
      firstPainted: null,
    };
    this.timing = timing;

    pc.addTransceiver("audio", { direction: "recvonly" });
    // Asked for even when the stream has no video yet: it may start later, and WHEP
    // cannot add it then. A server without video for us rejects the m-section.
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addEventListener("track", (event) => this.#onTrack(event));
    pc.addEventListener("connectionstatechange", () => this.#onConnectionState(pc));
    this.#connectTimer = setTimeout(() => {
      if (this.#pc === pc && pc.connectionState !== "connected") {
        this.#fail(
          pc,
          new UserError(
            `no connection after ${CONNECT_TIMEOUT_MS / 1000} s (ICE ${pc.iceConnectionState})`,
          ),
        );
      }
    }, CONNECT_TIMEOUT_MS);

    try {
      const offer = await pc.createOffer();
      await pc.setLocalDescription({ type: "offer", sdp: preferStereoOpus(offer.sdp) });
      await iceGatheringComplete(pc, ICE_GATHERING_TIMEOUT_MS);
      if (this.#pc !== pc) return;

      const endpoint = new URL(`/${encodeURIComponent(this.stream)}/whep`, location.href);
      timing.post = performance.now();
      const headers = readToken.headers();
      this.#headers = headers;
      const response = await fetch(endpoint, {
        method: "POST",
        headers: { ...headers, "Content-Type": "application/sdp" },
        body: pc.localDescription.sdp,
      });
      if (response.status === 401) {
        const why = readToken.value()
          ? "the read token is not accepted for this stream"
          : "this stream needs a read token: enter it under “Read token” above";
        throw new UserError(`POST ${endpoint.pathname} answered 401: ${why}`);
      }
      if (response.status !== 201) throw await failureOf("POST", endpoint, response);
      const body = await response.text();
      timing.answer = performance.now();
      const sessionPath = response.headers.get("Location");
      if (!sessionPath) throw new UserError("the server's 201 has no Location header");
      const sessionUrl = new URL(sessionPath, endpoint);
      if (this.#pc !== pc) {
        // Stopped while the POST was in flight: end the session we just created.
        fetch(sessionUrl, { method: "DELETE", headers }).catch(() => {});
        return;
      }
      this.#sessionUrl = sessionUrl;
      await pc.setRemoteDescription({ type: "answer", sdp: body });
      watchGoodbye(pc, () => this.#serverEnded(pc));
      this.#watchFirstFrame(pc, timing);
    } catch (err) {
      this.#fail(pc, err);
    }
  }

  /** Notes in `timing` when getStats first counts a decoded video frame (polled for a
   * while after the answer: a join's first frame is the keyframe the server asked for). */
  async #watchFirstFrame(pc, timing) {
    const until = performance.now() + FIRST_FRAME_WATCH_MS;
    while (this.#pc === pc && timing.firstDecoded === null && performance.now() < until) {
      const report = await pc.getStats();
      report.forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video" && s.framesDecoded > 0) {
          timing.firstDecoded ??= performance.now();
        }
      });
      await new Promise((resolve) => setTimeout(resolve, FIRST_FRAME_POLL_MS));
    }
  }

  /** Ends the session: DELETE on its URL first (closing the connection first would make
   * the server see the peer vanish before it hears the DELETE), then closes everything. */
  async stop() {
    if (!this.#pc || this.state === "stopping") return;
    const pc = this.#pc;
    const sessionUrl = this.#sessionUrl;
    this.#set({ state: "stopping", notice: null });
    let error = null;
    if (sessionUrl) {
      try {
        const response = await fetch(sessionUrl, {
          method: "DELETE",
          headers: this.#headers,
          signal: AbortSignal.timeout(DELETE_TIMEOUT_MS),
        });
        this.deleteStatus = response.status;
        if (!response.ok) {
          error = `DELETE ${sessionUrl.pathname} answered ${response.status}`;
        }
      } catch (err) {
        error = `DELETE ${sessionUrl.pathname}: ${messageOf(err)}`;
      }
    }
    // play() may have failed, or started again, while the DELETE was in flight.
    if (this.#pc === pc) {
      this.#close();
      this.#set({ state: "stopped", error });
    }
  }

  /** For page unload: a DELETE that outlives the page. */
  abandon() {
    if (this.#sessionUrl) {
      fetch(this.#sessionUrl, { method: "DELETE", headers: this.#headers, keepalive: true }).catch(
        () => {},
      );
    }
    this.#close();
  }

  /** Resumes audio after a user gesture, when autoplay was blocked. */
  async resumeAudio() {
    await this.#audioContext?.resume();
    if (this.audio.srcObject) await this.audio.play();
    this.#set({ notice: null });
  }

  /** The inbound audio RTP numbers from getStats, or null before there are any. */
  async stats() {
    const pc = this.#pc;
    if (!pc) return null;
    const report = await pc.getStats();
    let inbound = null;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") inbound = s;
    });
    if (!inbound) return null;

    const bytes = inbound.bytesReceived ?? 0;
    return {
      packetsReceived: inbound.packetsReceived ?? 0,
      packetsLost: inbound.packetsLost ?? 0,
      jitter: inbound.jitter ?? null,
      bytesReceived: bytes,
      bitrate: this.#rate.update(bytes, inbound.timestamp),
      audioLevel: inbound.audioLevel ?? null,
      totalAudioEnergy: inbound.totalAudioEnergy ?? 0,
      totalSamplesReceived: inbound.totalSamplesReceived ?? 0,
      concealedSamples: inbound.concealedSamples ?? 0,
      codec: codecOf(report, inbound),
    };
  }

  /** The inbound video RTP numbers from getStats, or null while no video has come. */
  async videoStats() {
    const pc = this.#pc;
    if (!pc) return null;
    const report = await pc.getStats();
    let inbound = null;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") inbound = s;
    });
    if (!inbound) return null;
    const bytes = inbound.bytesReceived ?? 0;
    return {
      packetsReceived: inbound.packetsReceived ?? 0,
      packetsLost: inbound.packetsLost ?? 0,
      bytesReceived: bytes,
      bitrate: this.#videoRate.update(bytes, inbound.timestamp),
      framesReceived: inbound.framesReceived ?? 0,
      framesDecoded: inbound.framesDecoded ?? 0,
      keyFramesDecoded: inbound.keyFramesDecoded ?? 0,
      framesDropped: inbound.framesDropped ?? 0,
      frameWidth: inbound.frameWidth ?? 0,
      frameHeight: inbound.frameHeight ?? 0,
      framesPerSecond: inbound.framesPerSecond ?? null,
      pliCount: inbound.pliCount ?? 0,
      firCount: inbound.firCount ?? 0,
      nackCount: inbound.nackCount ?? 0,
      codec: codecOf(report, inbound),
    };
  }

  /** Takes a getStats reading of the delays and the loss (see DelayMeter) into `latency`
   * and returns it; null before there is inbound audio. */
  async measureLatency() {
    const pc = this.#pc;
    if (!pc) return null;
    const latency = this.#delays.update(await pc.getStats());
    if (this.#pc === pc) this.latency = latency;
    return latency;
  }

  /** What the <video> element shows: { shown, width, height } (0 × 0 before a frame). */
  videoShown() {
    return {
      shown: this.hasVideo,
      width: this.video.videoWidth,
      height: this.video.videoHeight,
    };
  }

  /** Per channel: { rms, peak } of the last METER_WINDOW samples, or [] before audio. */
  levels() {
    return measureLevels(this.#analysers);
  }

  /** The dominant frequency (Hz) of each channel, null where silent or before audio. */
  dominantFrequencies() {
    if (this.#analysers.length !== 2) return { left: null, right: null };
    const [left, right] = this.#analysers.map(analyserFrequency);
    return { left, right };
  }

  #onTrack(event) {
    if (event.track.kind === "video") {
      this.#onVideoTrack(event.track);
      return;
    }
    if (event.track.kind !== "audio") return;
    // The audio alone: the server's stream may carry the video track too, which has its
    // own element.
    const stream = new MediaStream([event.track]);
    // Chrome pulls remote WebRTC audio only for a playing media element; WebAudio then
    // taps the same stream for the meters.
    this.audio.srcObject = stream;
    this.audio.play().catch(() => {
      this.#set({ notice: "The browser blocked autoplay: click anywhere to listen." });
    });

    const context = this.#audioContext;
    this.#analysers = createAnalysers(context, stream, 2);
    if (context.state !== "running") {
      context.resume().catch(() => {});
    }
  }

  /** The video track comes with the answer, muted until the first packets; the picture
   * shows once a frame has a size, and the placeholder returns while the track is muted
   * (the publisher stopped sending). */
  #onVideoTrack(track) {
    track.addEventListener("mute", () => this.#checkVideo());
    track.addEventListener("unmute", () => this.#checkVideo());
    track.addEventListener("ended", () => this.#checkVideo());
    this.video.srcObject = new MediaStream([track]);
    const timing = this.timing;
    this.video.requestVideoFrameCallback?.((now) => {
      if (timing) timing.firstPainted ??= now;
    });
    // Muted, so autoplay is always allowed.
    this.video.play().catch(() => {});
    this.#checkVideo();
  }

  #checkVideo() {
    const track = this.video.srcObject?.getVideoTracks()[0];
    const hasVideo =
      !!track && track.readyState === "live" && !track.muted && this.video.videoWidth > 0;
    if (hasVideo !== this.hasVideo) this.#set({ hasVideo });
  }

  #onConnectionState(pc) {
    // While stopping, the server ending the connection is expected.
    if (this.#pc !== pc || this.state === "stopping") return;
    switch (pc.connectionState) {
      case "connected":
        clearTimeout(this.#connectTimer);
        if (this.timing) this.timing.connected ??= performance.now();
        this.#set({ state: "connected" });
        break;
      case "disconnected":
        this.#set({ state: "disconnected" });
        break;
      case "failed":
        this.#fail(pc, new UserError(`connection failed (ICE ${pc.iceConnectionState})`));
        break;
      default:
        break;
    }
  }

  /** The server said goodbye (DTLS close_notify): it stopped, or ended this session.
   * Nothing to DELETE: the session is gone on its side. */
  #serverEnded(pc) {
    if (this.#pc !== pc || this.state === "stopping") return;
    this.#close();
    this.#set({ state: "stopped", error: SERVER_STOPPED });
  }

  #fail(pc, err) {
    if (this.#pc !== pc || this.state === "stopping") return;
    const sessionUrl = this.#sessionUrl;
    this.#close();
    this.#set({ state: "failed", error: messageOf(err) });
    if (sessionUrl) fetch(sessionUrl, { method: "DELETE", headers: this.#headers }).catch(() => {});
  }

  #close() {
    clearTimeout(this.#connectTimer);
    this.#pc?.close();
    this.#pc = null;
    this.#sessionUrl = null;
    this.#analysers = [];
    this.#audioContext?.close().catch(() => {});
    this.#audioContext = null;
    this.audio.srcObject = null;
    this.video.srcObject = null;
    this.hasVideo = false;
    this.latency = null;
  }

  #set(changes) {
    Object.assign(this, changes);
    this.dispatchEvent(new Event("change"));
  }
}

/** The microphone (and optionally the camera) published to one stream over WHIP: one
 * RTCPeerConnection sending one audio track (and one video track), and an analyser per
 * channel on the audio track (what is sent, before Opus). Fires "change" whenever state
 * or error changes. */
class WhipPublisher extends EventTarget {
  /** "idle" | "capturing" | "connecting" | "connected" | "disconnected" | "stopping" |
   * "stopped" | "failed" */
  state = "idle";
  /** The last error's message, or null. */
  error = null;
  /** The stream published to (or last published to), or null. */
  stream = null;
  /** Channels of the captured track: 1 or 2, 0 before capture. */
  channels = 0;
  /** Whether the answer lets us send stereo Opus (`stereo=1`; browsers send mono
   * otherwise, mixing the channels down), or null before the answer. */
  stereo = null;
  /** The HTTP status of the last DELETE of a session, or null. */
  deleteStatus = null;
  /** Whether the camera is sent too. */
  camera = false;
  /** Whether the answer accepted our video (null before the answer or without camera). */
  videoAccepted = null;
  /** With simulcast: the answer's `a=simulcast:` value (e.g. "recv f;h;q"), else null. */
  simulcastAnswer = null;
  /** The captured media (microphone, and camera if asked), for a preview; or null. */
  media = null;

  #pc = null;
  #media = null;
  #headers = {};
  #sessionUrl = null;
  #audioContext = null;
  #analysers = [];
  #connectTimer = null;
  #rate = new RateMeter();
  #videoRate = new RateMeter();

  get publishing() {
    return this.#pc !== null;
  }

  /** Captures the microphone (and the camera if `camera`), sends the offer and applies
   * the answer. Resolves then, or on failure (see `state` and `error`); the connection
   * comes up on its own.
   *
   * Voice processing (echo cancellation, noise suppression, automatic gain) is off unless
   * asked for: it treats a steady tone or music as noise, and mixcast mixes music. */
  async publish(
    stream,
    token,
    { voiceProcessing = false, camera = false, videoCodec = null, simulcast = false } = {},
  ) {
    if (this.#pc) return;
    const pc = new RTCPeerConnection();
    this.#pc = pc;
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    this.#headers = headers;
    this.#rate = new RateMeter();
    this.#videoRate = new RateMeter();
    this.deleteStatus = null;
    // Created here, inside the click that called us, so the autoplay policy allows it.
    this.#audioContext = new AudioContext();
    this.#set({
      state: "capturing",
      error: null,
      stream,
      channels: 0,
      stereo: null,
      camera,
      videoAccepted: null,
      simulcastAnswer: null,
    });
    pc.addEventListener("connectionstatechange", () => this.#onConnectionState(pc));

    try {
      const media = await captureMedia(voiceProcessing, camera);
      if (this.#pc !== pc) {
        // Stopped while the browser asked for the microphone.
        media.getTracks().forEach((track) => track.stop());
        return;
      }
      this.#media = media;
      const [track] = media.getAudioTracks();
      if (!track) throw new UserError("the microphone gave no audio track");
      track.addEventListener("ended", () => {
        this.#fail(pc, new UserError("the microphone stopped (unplugged or taken away)"));
      });
      const [videoTrack] = media.getVideoTracks();
      if (camera && !videoTrack) throw new UserError("the camera gave no video track");
      videoTrack?.addEventListener("ended", () => {
        this.#fail(pc, new UserError("the camera stopped (unplugged or taken away)"));
      });
      const channels = track.getSettings().channelCount === 2 ? 2 : 1;
      this.#analysers = createAnalysers(
        this.#audioContext,
        new MediaStream([track]),
        channels,
      );
      if (this.#audioContext.state !== "running") this.#audioContext.resume().catch(() => {});
      this.#set({ state: "connecting", channels, media });
      // Counted from here: the permission prompt may take the user any time.
      this.#connectTimer = setTimeout(() => {
        if (this.#pc === pc && pc.connectionState !== "connected") {
          this.#fail(
            pc,
            new UserError(
              `no connection after ${CONNECT_TIMEOUT_MS / 1000} s (ICE ${pc.iceConnectionState})`,
            ),
          );
        }
      }, CONNECT_TIMEOUT_MS);

      pc.addTransceiver(track, { direction: "sendonly", streams: [media] });
      if (videoTrack) {
        const init = { direction: "sendonly", streams: [media] };
        if (simulcast) init.sendEncodings = SIMULCAST_ENCODINGS.map((e) => ({ ...e }));
        const transceiver = pc.addTransceiver(videoTrack, init);
        if (videoCodec) offerOnlyVideoCodec(transceiver, videoCodec);
      }
      await pc.setLocalDescription(await pc.createOffer());
      await iceGatheringComplete(pc, ICE_GATHERING_TIMEOUT_MS);
      if (this.#pc !== pc) return;

      const endpoint = new URL(`/${encodeURIComponent(stream)}/whip`, location.href);
      const response = await fetch(endpoint, {
        method: "POST",
        headers: { ...headers, "Content-Type": "application/sdp" },
        body: pc.localDescription.sdp,
      });
      if (response.status !== 201) throw await failureOf("POST", endpoint, response);
      const answer = await response.text();
      const sessionPath = response.headers.get("Location");
      if (!sessionPath) throw new UserError("the server's 201 has no Location header");
      const sessionUrl = new URL(sessionPath, endpoint);
      if (this.#pc !== pc) {
        // Stopped while the POST was in flight: end the session we just created.
        fetch(sessionUrl, { method: "DELETE", headers }).catch(() => {});
        return;
      }
      this.#sessionUrl = sessionUrl;
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      watchGoodbye(pc, () => this.#serverEnded(pc));
      this.#set({
        stereo: opusStereoIn(answer),
        videoAccepted: videoTrack ? videoAcceptedIn(answer) : null,
        simulcastAnswer: simulcast ? (answer.match(/^a=simulcast:(.*?)\r?$/m)?.[1] ?? null) : null,
      });
    } catch (err) {
      this.#fail(pc, err);
    }
  }

  /** Ends the session (DELETE first, so the server hears it before the peer vanishes),
   * then closes the connection and releases the microphone. */
  async stop() {
    if (!this.#pc || this.state === "stopping") return;
    const pc = this.#pc;
    const sessionUrl = this.#sessionUrl;
    this.#set({ state: "stopping" });
    let error = null;
    if (sessionUrl) {
      try {
        const response = await fetch(sessionUrl, {
          method: "DELETE",
          headers: this.#headers,
          signal: AbortSignal.timeout(DELETE_TIMEOUT_MS),
        });
        this.deleteStatus = response.status;
        if (!response.ok) error = (await failureOf("DELETE", sessionUrl, response)).message;
      } catch (err) {
        error = `DELETE ${sessionUrl.pathname}: ${messageOf(err)}`;
      }
    }
    if (this.#pc === pc) {
      this.#close();
      this.#set({ state: "stopped", error });
    }
  }

  /** For page unload: a DELETE that outlives the page. */
  abandon() {
    if (this.#sessionUrl) {
      fetch(this.#sessionUrl, { method: "DELETE", headers: this.#headers, keepalive: true }).catch(
        () => {},
      );
    }
    this.#close();
  }

  /** The outbound audio RTP numbers from getStats (and the video's, under `video`, null
   * without camera), or null before there are any. */
  async stats() {
    const pc = this.#pc;
    if (!pc) return null;
    const report = await pc.getStats();
    let outbound = null;
    let remote = null;
    let source = null;
    let video = null;
    // With simulcast, one outbound-rtp per layer; `video` is the largest.
    const layers = [];
    report.forEach((s) => {
      if (s.type === "outbound-rtp" && s.kind === "video") {
        layers.push(s);
        if (!video || (s.frameWidth ?? 0) > (video.frameWidth ?? 0)) video = s;
      }
      if (s.kind !== "audio") return;
      if (s.type === "outbound-rtp") outbound = s;
      if (s.type === "remote-inbound-rtp") remote = s;
      if (s.type === "media-source") source = s;
    });
    if (!outbound) return null;
    const videoBytes = video?.bytesSent ?? 0;
    const bytes = outbound.bytesSent ?? 0;
    return {
      packetsSent: outbound.packetsSent ?? 0,
      bytesSent: bytes,
      bitrate: this.#rate.update(bytes, outbound.timestamp),
      // From the server's receiver reports, if it sends them.
      packetsLost: remote?.packetsLost ?? null,
      roundTripTime: remote?.roundTripTime ?? null,
      audioLevel: source?.audioLevel ?? null,
      totalAudioEnergy: source?.totalAudioEnergy ?? 0,
      codec: codecOf(report, outbound),
      video: video && {
        packetsSent: video.packetsSent ?? 0,
        bytesSent: videoBytes,
        bitrate: this.#videoRate.update(videoBytes, video.timestamp),
        framesEncoded: video.framesEncoded ?? 0,
        framesSent: video.framesSent ?? 0,
        keyFramesEncoded: video.keyFramesEncoded ?? 0,
        frameWidth: video.frameWidth ?? 0,
        frameHeight: video.frameHeight ?? 0,
        framesPerSecond: video.framesPerSecond ?? null,
        pliCount: video.pliCount ?? 0,
        firCount: video.firCount ?? 0,
        qualityLimitationReason: video.qualityLimitationReason ?? null,
        codec: codecOf(report, video),
        /** Per simulcast layer (one entry without simulcast). */
        layers: layers.map((l) => ({
          rid: l.rid ?? null,
          frameWidth: l.frameWidth ?? 0,
          frameHeight: l.frameHeight ?? 0,
          framesSent: l.framesSent ?? 0,
        })),
      },
    };
  }

  /** Per channel sent: { rms, peak } of the last METER_WINDOW samples, or []. */
  levels() {
    return measureLevels(this.#analysers);
  }

  /** The dominant frequency (Hz) of each channel sent, null where silent. */
  dominantFrequencies() {
    return this.#analysers.map(analyserFrequency);
  }

  #onConnectionState(pc) {
    if (this.#pc !== pc || this.state === "stopping") return;
    switch (pc.connectionState) {
      case "connected":
        clearTimeout(this.#connectTimer);
        this.#set({ state: "connected" });
        break;
      case "disconnected":
        this.#set({ state: "disconnected" });
        break;
      case "failed":
        this.#fail(pc, new UserError(`connection failed (ICE ${pc.iceConnectionState})`));
        break;
      default:
        break;
    }
  }

  /** The server said goodbye (DTLS close_notify): it stopped, or ended this session.
   * Nothing to DELETE: the session is gone on its side. */
  #serverEnded(pc) {
    if (this.#pc !== pc || this.state === "stopping") return;
    this.#close();
    this.#set({ state: "stopped", error: SERVER_STOPPED });
  }

  #fail(pc, err) {
    if (this.#pc !== pc || this.state === "stopping") return;
    const sessionUrl = this.#sessionUrl;
    const headers = this.#headers;
    this.#close();
    this.#set({ state: "failed", error: messageOf(err) });
    if (sessionUrl) fetch(sessionUrl, { method: "DELETE", headers }).catch(() => {});
  }

  #close() {
    clearTimeout(this.#connectTimer);
    this.#pc?.close();
    this.#pc = null;
    this.#media?.getTracks().forEach((track) => track.stop());
    this.#media = null;
    this.media = null;
    this.#sessionUrl = null;
    this.#analysers = [];
    this.#audioContext?.close().catch(() => {});
    this.#audioContext = null;
  }

  #set(changes) {
    Object.assign(this, changes);
    this.dispatchEvent(new Event("change"));
  }
}

/** Makes `transceiver` offer only `codec` ("VP8", "H264", ...) and its RTX, so the
 * server can only pick it. */
function offerOnlyVideoCodec(transceiver, codec) {
  const want = `video/${codec}`.toLowerCase();
  let lastError = null;
  // Chrome checks a send-only transceiver's list against the sender's capabilities,
  // older versions against the receiver's: try both.
  const capabilities = [RTCRtpSender.getCapabilities("video"), RTCRtpReceiver.getCapabilities("video")];
  for (const caps of capabilities) {
    const codecs = caps?.codecs ?? [];
    const chosen = codecs.filter((c) => c.mimeType.toLowerCase() === want);
    if (!chosen.length) continue;
    const rtx = codecs.filter((c) => c.mimeType.toLowerCase() === "video/rtx");
    try {
      transceiver.setCodecPreferences([...chosen, ...rtx]);
      return;
    } catch (err) {
      lastError = err;
    }
  }
  const why = lastError ? `: ${messageOf(lastError)}` : "";
  throw new UserError(`this browser cannot send ${codec}${why}`);
}

/** Asks for the microphone, in stereo where it has two channels, and for the camera if
 * `camera` (at most 1280 × 720 and 30 fps: a WebRTC stream, not a recording). */
async function captureMedia(voiceProcessing, camera) {
  const what = camera ? "microphone and camera" : "microphone";
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new UserError(`this browser cannot capture the ${what} here (it needs https or localhost)`);
  }
  try {
    return await navigator.mediaDevices.getUserMedia({
      audio: {
        channelCount: { ideal: 2 },
        echoCancellation: voiceProcessing,
        noiseSuppression: voiceProcessing,
        autoGainControl: voiceProcessing,
      },
      video: camera
        ? { width: { max: 1280 }, height: { max: 720 }, frameRate: { max: 30 } }
        : false,
    });
  } catch (err) {
    const why = {
      NotAllowedError: "permission denied",
      NotFoundError: camera ? "no microphone or no camera found" : "no microphone found",
      NotReadableError: `the ${what} is in use or unavailable`,
      OverconstrainedError: "the camera cannot send 1280 × 720 or less",
    }[err?.name];
    throw new UserError(`cannot use the ${what}: ${why ?? messageOf(err)}`);
  }
}

/** Whether an answer's video m-section is accepted (a non-zero port). */
function videoAcceptedIn(sdp) {
  return /^m=video [1-9]\d* /m.test(sdp);
}

/** A video stats entry as "640×480 · 30 fps · VP8", or "–". */
function describeVideo(video) {
  if (!video || !video.frameWidth) return "–";
  const fps = video.framesPerSecond === null ? "" : ` · ${formatNumber(video.framesPerSecond)} fps`;
  const codec = video.codec ? ` · ${video.codec.mimeType.replace(/^video\//, "")}` : "";
  return `${video.frameWidth}×${video.frameHeight}${fps}${codec}`;
}

function messageOf(err) {
  if (err instanceof UserError) return err.message;
  if (err instanceof TypeError) return `network error: ${err.message}`;
  return err?.message ?? String(err);
}

function formatNumber(value, digits = 0) {
  return value === null || value === undefined ? "–" : value.toFixed(digits);
}

function formatBitrate(bitsPerSecond) {
  if (bitsPerSecond === null) return "–";
  return bitsPerSecond >= 1e6
    ? `${(bitsPerSecond / 1e6).toFixed(2)} Mb/s`
    : `${(bitsPerSecond / 1e3).toFixed(1)} kb/s`;
}

/** A stream's card on the page: its info, its URLs and recipes, its player's controls,
 * picture, delay line, meters and stats. */
class StreamCard {
  /** The stream's last entry in the server's list, or null before it is listed. */
  info = null;
  /** The player state last announced in the live region. */
  #announced = "idle";

  constructor(name, announce) {
    const template = document.getElementById("stream-card");
    this.root = template.content.firstElementChild.cloneNode(true);
    this.root.dataset.stream = name;
    this.name = name;
    this.announce = announce;
    const $ = (selector) => this.root.querySelector(selector);
    this.el = {
      name: $(".name"),
      state: $(".state"),
      info: $(".info"),
      viewers: $(".viewers"),
      publishers: $(".publishers"),
      sources: $(".sources"),
      play: $(".play"),
      stop: $(".stop"),
      error: $(".error"),
      screen: $(".screen"),
      picture: $(".picture"),
      noVideo: $(".no-video"),
      latency: $(".latency"),
      meterBox: $(".meters"),
      statsBox: $(".stats"),
      delay: $(".delay"),
      loss: $(".loss"),
      meters: [...this.root.querySelectorAll(".meter-row")].map(meterOf),
      stats: Object.fromEntries(
        [...this.root.querySelectorAll("[data-stat]")].map((dd) => [dd.dataset.stat, dd]),
      ),
      whipUrl: $(".whip-url"),
      whepUrl: $(".whep-url"),
    };
    this.el.name.textContent = name;
    this.urls = streamUrls(name);
    showUrl(this.el.whipUrl, this.urls.whip);
    showUrl(this.el.whepUrl, this.urls.whep);
    fillRecipes(this.root, this.urls.whip);
    for (const button of this.root.querySelectorAll(".copy")) {
      const target = button.dataset.copy === "whip" ? this.el.whipUrl : this.el.whepUrl;
      button.setAttribute(
        "aria-label",
        `Copy the ${button.dataset.copy.toUpperCase()} URL of ${name}`,
      );
      button.addEventListener("click", () => copyFrom(target, button, announce));
    }
    // The counts and sources, shown once the stream list has this stream.
    this.infoParts = [...this.el.info.childNodes];
    this.el.info.textContent = "not listed by the server (yet)";
    this.el.play.textContent = `Play ${name}`;
    this.el.stop.textContent = `Stop ${name}`;
    this.root.querySelector(".meters").setAttribute("aria-label", `Levels heard on ${name}`);
    this.player = new WhepPlayer(name, $(".sink"), this.el.picture);
    this.player.addEventListener("change", () => this.render());
    this.el.play.addEventListener("click", () => this.player.play());
    this.el.stop.addEventListener("click", () => this.player.stop());
    this.listed = true;
    this.render();
  }

  /** Updates the numbers from the stream list. */
  update(info) {
    this.info = info;
    this.listed = true;
    if (!this.el.info.contains(this.el.viewers)) this.el.info.replaceChildren(...this.infoParts);
    this.setViewers(info.viewers);
    this.el.publishers.textContent = `${info.publishers} publisher${info.publishers === 1 ? "" : "s"}`;
    this.el.sources.textContent = info.sources.length ? info.sources.join(", ") : "no sources";
    this.root.classList.remove("gone");
    this.render();
  }

  /** The viewer count alone (a `viewercount` event). */
  setViewers(viewers) {
    if (this.info) this.info.viewers = viewers;
    this.el.viewers.textContent = `${viewers} viewer${viewers === 1 ? "" : "s"}`;
  }

  markGone() {
    this.listed = false;
    this.info = null;
    this.root.classList.add("gone");
    this.el.info.textContent = "no longer listed by the server";
    this.render();
  }

  render() {
    const { state, error, notice, playing } = this.player;
    this.el.state.textContent = state;
    this.el.state.dataset.state = state;
    this.el.play.disabled = playing;
    this.el.stop.disabled = !playing || state === "stopping";
    const message = error ?? notice;
    this.el.error.hidden = !message;
    this.el.error.textContent = message ?? "";
    this.el.error.classList.toggle("notice", !error && !!notice);
    // The picture only for a stream that has video: shown as soon as frames come, and
    // while the list says the stream has video (a black box until the first frame).
    const { hasVideo } = this.player;
    const listedVideo = !!this.info?.video;
    this.el.screen.hidden = !playing || !(hasVideo || listedVideo);
    this.el.picture.hidden = !hasVideo;
    this.el.noVideo.hidden = hasVideo;
    this.el.noVideo.textContent = state === "connected" ? "waiting for video" : "";
    this.el.latency.hidden = !playing;
    this.el.meterBox.hidden = !playing;
    this.el.statsBox.hidden = !playing;
    this.el.stats.video.parentElement.hidden = !(hasVideo || listedVideo);
    if (!playing) {
      this.renderLevels([]);
      for (const dd of Object.values(this.el.stats)) dd.textContent = "–";
      this.el.delay.textContent = "";
      this.el.loss.textContent = "";
    } else if (!this.el.delay.textContent) {
      this.el.delay.textContent = describeDelay(null);
      this.el.loss.textContent = describeLoss(null);
    }
    if (state !== this.#announced) {
      this.#announced = state;
      this.announce(`${this.name}: ${describePlayerState(state)}`);
    }
  }

  renderLevels(levels) {
    renderMeters(this.el.meters, levels);
  }

  async refreshStats() {
    const [stats, video, latency] = await Promise.all([
      this.player.stats(),
      this.player.videoStats(),
      this.player.measureLatency(),
    ]);
    if (!this.player.playing) return;
    const show = (key, text) => {
      this.el.stats[key].textContent = text;
    };
    show("video", describeVideo(video));
    this.el.delay.textContent = describeDelay(latency);
    this.el.loss.textContent = describeLoss(latency);
    if (!stats) {
      for (const [key, dd] of Object.entries(this.el.stats)) {
        if (key !== "video") dd.textContent = "–";
      }
      return;
    }
    show("packetsReceived", String(stats.packetsReceived));
    show("bitrate", formatBitrate(stats.bitrate));
    show("audioLevel", formatDbfs(stats.audioLevel));
    show(
      "codec",
      stats.codec ? `${stats.codec.mimeType.replace(/^audio\//, "")} ×${stats.codec.channels}` : "–",
    );
  }
}

/** A player state in words, for the live region. */
function describePlayerState(state) {
  return (
    {
      idle: "idle",
      connecting: "connecting",
      connected: "playing",
      disconnected: "connection interrupted",
      stopping: "stopping",
      stopped: "stopped",
      failed: "failed",
    }[state] ?? state
  );
}

/** Writes `url` into `element` with a line-break opportunity (<wbr>) before each "/" of
 * its path, so a narrow screen breaks it between its parts; the text stays the URL. */
function showUrl(element, url) {
  const { origin, pathname } = new URL(url);
  const parts = [origin, ...pathname.split(/(?=\/)/)];
  element.replaceChildren(
    ...parts.flatMap((part, i) => (i ? [document.createElement("wbr"), part] : [part])),
  );
}

/** The absolute WHIP and WHEP URLs of `stream`, from the page's own origin. */
function streamUrls(stream) {
  const path = encodeURIComponent(stream);
  return {
    whip: new URL(`/${path}/whip`, location.origin).href,
    whep: new URL(`/${path}/whep`, location.origin).href,
  };
}

/** Fills a card's recipes with its WHIP URL. The FFmpeg line is what tests/ffmpeg_whip.rs
 * has FFmpeg 8 do (tests/interop/ffmpeg_whip.py: libopus 48 kHz stereo, libx264 baseline
 * without B-frames, `-strict experimental`); the GStreamer line is what
 * tests/gstreamer_whip.rs runs. */
function fillRecipes(root, whipUrl) {
  const quoted = shellQuote(whipUrl);
  root.querySelector(".recipe-obs").textContent = whipUrl;
  root.querySelector(".recipe-ffmpeg").textContent = [
    "ffmpeg -re -i input.mp4 \\",
    "  -c:a libopus -ar 48000 -ac 2 -b:a 128k \\",
    "  -c:v libx264 -preset ultrafast -tune zerolatency -profile:v baseline -bf 0 -g 25 \\",
    `  -strict experimental -f whip ${quoted}`,
  ].join("\n");
  root.querySelector(".recipe-gstreamer").textContent =
    `python3 tests/interop/gst_whip.py ${quoted} --seconds 3600`;
}

/** `text` as one shell word (single quotes only when it needs them). */
function shellQuote(text) {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replaceAll("'", "'\\''")}'`;
}

/** Copies the text of `source` to the clipboard; where the browser refuses (no secure
 * context, no permission), selects it instead so that Ctrl+C copies it. Says which on
 * `button` for a moment and in the live region. */
async function copyFrom(source, button, announce) {
  const text = source.textContent;
  let outcome;
  try {
    if (!navigator.clipboard?.writeText) throw new Error("no clipboard");
    await navigator.clipboard.writeText(text);
    outcome = "copied";
  } catch {
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    outcome = "selected";
  }
  button.dataset.outcome = outcome;
  button.textContent = outcome === "copied" ? "Copied" : "Selected: press Ctrl+C";
  announce(outcome === "copied" ? `copied ${text}` : `selected ${text}: press Ctrl+C to copy`);
  clearTimeout(button.resetTimer);
  button.resetTimer = setTimeout(() => {
    button.textContent = "Copy";
  }, 2500);
}

/** A level meter's parts, from its `.meter-row` element. */
function meterOf(row) {
  return {
    row,
    meter: row.querySelector(".meter"),
    bar: row.querySelector(".bar"),
    peak: row.querySelector(".peak"),
    db: row.querySelector(".db"),
    held: 0,
    ariaAt: -Infinity,
  };
}

/** A new level meter row for channel `label` ("L", "R", "M"), as in the stream card's
 * template: a `role="meter"` from METER_FLOOR_DB to 0 dBFS. */
function createMeterRow(label) {
  const row = document.createElement("div");
  row.className = "meter-row";
  const channel = document.createElement("span");
  channel.className = "channel";
  channel.textContent = label;
  channel.setAttribute("aria-hidden", "true");
  const meter = document.createElement("div");
  meter.className = "meter";
  meter.setAttribute("role", "meter");
  meter.setAttribute("aria-label", { L: "Left channel", R: "Right channel" }[label] ?? "Level");
  meter.setAttribute("aria-valuemin", String(METER_FLOOR_DB));
  meter.setAttribute("aria-valuemax", "0");
  meter.setAttribute("aria-valuenow", String(METER_FLOOR_DB));
  meter.setAttribute("aria-valuetext", "silent");
  for (const part of ["bar", "peak"]) {
    meter.append(Object.assign(document.createElement("div"), { className: part }));
  }
  const db = document.createElement("span");
  db.className = "db";
  db.textContent = "–∞ dBFS";
  db.setAttribute("aria-hidden", "true");
  row.append(channel, meter, db);
  return row;
}

/** Shows `levels` (per channel: { rms, peak }) on `meters`; missing channels show
 * silence. The accessible value follows every METER_ARIA_INTERVAL_MS. */
function renderMeters(meters, levels) {
  const now = performance.now();
  meters.forEach((meter, channel) => {
    const level = levels[channel];
    const db = level && level.rms > 0 ? 20 * Math.log10(level.rms) : -Infinity;
    const peakDb = level && level.peak > 0 ? 20 * Math.log10(level.peak) : -Infinity;
    // The peak mark falls back slowly, and vanishes with the audio.
    meter.held = level ? Math.max(meterFraction(peakDb), meter.held * 0.97) : 0;
    // Clipped rather than scaled, so the colours stay at their dB marks.
    meter.bar.style.clipPath = `inset(0 ${100 - meterFraction(db) * 100}% 0 0)`;
    meter.peak.style.left = `${meter.held * 100}%`;
    meter.peak.hidden = meter.held === 0;
    const text = Number.isFinite(db) ? `${db.toFixed(1).replace("-", "−")} dBFS` : "–∞ dBFS";
    meter.db.textContent = text;
    // Silence is announced at once; changes of level at most every interval.
    if (!level || now - meter.ariaAt >= METER_ARIA_INTERVAL_MS) {
      meter.ariaAt = level ? now : -Infinity;
      const shown = Number.isFinite(db) ? Math.max(METER_FLOOR_DB, Math.min(0, db)) : METER_FLOOR_DB;
      meter.meter.setAttribute("aria-valuenow", shown.toFixed(1));
      meter.meter.setAttribute(
        "aria-valuetext",
        Number.isFinite(db) && db > METER_FLOOR_DB ? `${Math.round(db)} dBFS` : "silent",
      );
    }
  });
}

/** The "Publish my microphone" form: stream name, token, the publisher's state, meters
 * of what is sent and its outbound stats. */
class PublishPanel {
  /** Channels the meters are built for. */
  #meterChannels = -1;
  /** Options only tests set (`videoCodec`, `simulcast`; see publishAndWait). */
  #testOptions = {};

  /** The publisher state last announced in the live region. */
  #announced = "idle";

  constructor(root, onConnected, announce) {
    this.root = root;
    this.announce = announce;
    const $ = (selector) => root.querySelector(selector);
    this.el = {
      form: $("form"),
      stream: $("[name=stream]"),
      token: $("[name=token]"),
      processing: $("[name=processing]"),
      camera: $("[name=camera]"),
      preview: $(".preview"),
      start: $(".publish-start"),
      stop: $(".stop"),
      state: $(".state"),
      target: $(".target"),
      error: $(".error"),
      meterBox: $(".meters"),
      statsBox: $(".stats"),
      meters: [],
      stats: Object.fromEntries(
        [...root.querySelectorAll("[data-stat]")].map((dd) => [dd.dataset.stat, dd]),
      ),
    };
    this.publisher = new WhipPublisher();
    this.publisher.addEventListener("change", () => {
      this.render();
      if (this.publisher.state === "connected") onConnected(this.publisher.stream);
    });
    this.el.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.start();
    });
    this.el.stop.addEventListener("click", () => this.publisher.stop());
    this.render();
  }

  /** Publishes to the stream the form names (an empty name means `mic`: not `live`, so
   * that a first press does not mix a microphone into the test stream). */
  start() {
    const stream = this.el.stream.value.trim() || "mic";
    this.el.stream.value = stream;
    return this.publisher.publish(stream, this.el.token.value.trim(), {
      voiceProcessing: this.el.processing.checked,
      camera: this.el.camera.checked,
      ...this.#testOptions,
    });
  }

  /** Fills in the form (`video`: the camera too; `videoCodec`: offer only that codec, e.g.
   * "VP8"; `simulcast`: three encodings) and publishes; resolves once connected, rejects
   * with the error if publishing fails or stops first. For tests. */
  publishAndWait(stream, token, { video = false, videoCodec = null, simulcast = false } = {}) {
    const publisher = this.publisher;
    const settled = new Promise((resolve, reject) => {
      const check = () => {
        if (publisher.state === "connected") {
          publisher.removeEventListener("change", check);
          resolve(publisher.state);
        } else if (publisher.state === "failed" || publisher.state === "stopped") {
          publisher.removeEventListener("change", check);
          reject(new UserError(publisher.error ?? `publishing ${publisher.state}`));
        }
      };
      publisher.addEventListener("change", check);
    });
    if (!publisher.publishing) {
      this.el.stream.value = stream;
      this.el.token.value = token ?? "";
      this.el.camera.checked = video;
      this.#testOptions = { videoCodec, simulcast };
      this.start();
    } else if (publisher.state === "connected") {
      return Promise.resolve(publisher.state);
    }
    return settled;
  }

  render() {
    const { state, error, stream, channels, stereo, publishing, camera, videoAccepted, media } =
      this.publisher;
    this.el.state.textContent = state;
    this.el.state.dataset.state = state;
    if (state !== this.#announced) {
      this.#announced = state;
      const words = state === "connected" ? "publishing" : describePlayerState(state);
      this.announce(`publishing to ${stream ?? "a stream"}: ${words}`);
    }
    this.el.start.disabled = publishing;
    this.el.stop.disabled = !publishing || state === "stopping";
    for (const input of [this.el.stream, this.el.token, this.el.processing, this.el.camera]) {
      input.disabled = publishing;
    }
    let sound = "";
    if (channels === 2) sound = stereo === false ? " (stereo, sent as mono)" : " (stereo)";
    else if (channels === 1) sound = " (mono)";
    let picture = "";
    if (camera) {
      picture = videoAccepted === false ? " (the server refused the camera)" : " and the camera";
    }
    this.el.target.textContent = publishing
      ? `${state === "capturing" ? "Asking for" : "Sending"} the microphone${sound}${picture} to “${stream}”.`
      : "";
    // The preview shows the camera as captured.
    const cameraMedia = media?.getVideoTracks().length ? media : null;
    if (this.el.preview.srcObject !== cameraMedia) {
      this.el.preview.srcObject = cameraMedia;
      if (cameraMedia) this.el.preview.play().catch(() => {});
    }
    this.el.preview.hidden = !cameraMedia;
    this.el.error.hidden = !error;
    this.el.error.textContent = error ?? "";

    const meterChannels = publishing ? Math.max(channels, 1) : 1;
    if (meterChannels !== this.#meterChannels) {
      this.#meterChannels = meterChannels;
      const labels = meterChannels === 2 ? ["L", "R"] : ["M"];
      this.el.meters = labels.map((label) => meterOf(createMeterRow(label)));
      this.el.meterBox.replaceChildren(...this.el.meters.map((meter) => meter.row));
    }
    this.el.statsBox.hidden = !publishing;
    if (!publishing) {
      renderMeters(this.el.meters, []);
      for (const dd of Object.values(this.el.stats)) dd.textContent = "–";
    }
  }

  renderLevels() {
    renderMeters(this.el.meters, this.publisher.levels());
  }

  async refreshStats() {
    const stats = await this.publisher.stats();
    if (!stats) return;
    const show = (key, text) => {
      this.el.stats[key].textContent = text;
    };
    show("packetsSent", String(stats.packetsSent));
    show("bitrate", formatBitrate(stats.bitrate));
    show("packetsLost", stats.packetsLost === null ? "–" : String(stats.packetsLost));
    show(
      "roundTripTime",
      stats.roundTripTime === null ? "–" : `${formatNumber(stats.roundTripTime * 1000, 1)} ms`,
    );
    show("audioLevel", formatDbfs(stats.audioLevel));
    show(
      "codec",
      stats.codec ? `${stats.codec.mimeType.replace(/^audio\//, "")} ×${stats.codec.channels}` : "–",
    );
    show("video", describeVideo(stats.video));
  }
}

function meterFraction(db) {
  if (!Number.isFinite(db)) return 0;
  return Math.min(1, Math.max(0, (db - METER_FLOOR_DB) / -METER_FLOOR_DB));
}

/** The stream list as the server pushes it: `GET /api/events` (text/event-stream) read
 * with fetch and parsed here, because EventSource cannot send the read token in a header.
 * Reconnects with backoff when the stream ends; after EVENTS_FAILURES_BEFORE_POLLING
 * failures in a row, at once when the server has no such endpoint, or while the first
 * event is EVENTS_FIRST_EVENT_MS late, `onFallback(true)` asks the page to poll, and
 * `onFallback(false)` ends that once events flow again. */
class EventFeed {
  /** "connecting" | "open" | "waiting" | "polling" */
  state = "connecting";
  /** Events received, by name (for tests and the footer). */
  counts = {};
  #abort = null;
  #failures = 0;
  #retryMs = EVENTS_RETRY_MS;
  #timer = null;
  #polling = false;

  constructor(handlers) {
    this.handlers = handlers;
  }

  /** (Re)connects now, dropping any current connection (the read token changed). */
  restart() {
    this.#abort?.abort();
    clearTimeout(this.#timer);
    this.#failures = 0;
    this.#retryMs = EVENTS_RETRY_MS;
    this.#run();
  }

  async #run() {
    const abort = new AbortController();
    this.#abort = abort;
    let delivered = false;
    let missing = false;
    let silence = null;
    const watch = () => {
      clearTimeout(silence);
      silence = setTimeout(() => abort.abort(), EVENTS_SILENCE_MS);
    };
    const late = setTimeout(() => {
      if (!delivered && this.#abort === abort) this.#setPolling(true);
    }, EVENTS_FIRST_EVENT_MS);
    try {
      this.state = "connecting";
      watch();
      const response = await fetch("/api/events", {
        cache: "no-store",
        headers: readToken.headers({ Accept: "text/event-stream" }),
        signal: abort.signal,
      });
      const type = response.headers.get("Content-Type") ?? "";
      if (!response.ok || !/^text\/event-stream/i.test(type)) {
        // No events here (an older server): polling is all there is.
        missing = response.status === 404 || response.status === 405;
        throw new UserError(`/api/events answered ${response.status} ${type}`);
      }
      this.state = "open";
      const reader = response.body.getReader();
      const parser = new SseParser((name, data) => {
        delivered = true;
        this.#delivered();
        this.#dispatch(name, data);
      });
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        watch();
        parser.push(value);
      }
    } catch (err) {
      if (this.#abort !== abort) return;
      this.lastError = messageOf(err);
    } finally {
      clearTimeout(silence);
      clearTimeout(late);
    }
    if (this.#abort !== abort) return;
    // Ended or failed: try again later, and poll meanwhile if it keeps failing.
    if (!delivered) this.#failures += 1;
    if (missing || this.#failures >= EVENTS_FAILURES_BEFORE_POLLING) this.#setPolling(true);
    this.state = this.#polling ? "polling" : "waiting";
    const delay = delivered ? EVENTS_RETRY_MS : this.#retryMs;
    this.#retryMs = Math.min(this.#retryMs * 2, EVENTS_RETRY_MAX_MS);
    this.#timer = setTimeout(() => this.#run(), missing ? EVENTS_RETRY_MAX_MS * 4 : delay);
  }

  #delivered() {
    this.#failures = 0;
    this.#retryMs = EVENTS_RETRY_MS;
    this.state = "open";
    this.#setPolling(false);
  }

  #setPolling(on) {
    if (on === this.#polling) return;
    this.#polling = on;
    this.handlers.onFallback(on);
  }

  #dispatch(name, data) {
    this.counts[name] = (this.counts[name] ?? 0) + 1;
    let body;
    try {
      body = JSON.parse(data);
    } catch {
      return; // Not ours to understand: ignored, as SSE says of unknown events.
    }
    if (name === "streams" && Array.isArray(body.streams)) this.handlers.onStreams(body.streams);
    else if (name === "viewercount" && typeof body.stream === "string") {
      this.handlers.onViewerCount(body.stream, Number(body.viewercount));
    } else if ((name === "active" || name === "inactive") && typeof body.stream === "string") {
      this.handlers.onActive?.(body.stream, name === "active");
    }
  }
}

/** The text/event-stream format (HTML's "server-sent events"), for what EventFeed reads:
 * `event:` and `data:` fields, comments, blank lines ending an event; `id:` and `retry:`
 * are accepted and not used. */
class SseParser {
  #decoder = new TextDecoder();
  #buffer = "";
  #event = "";
  #data = [];

  constructor(onEvent) {
    this.onEvent = onEvent;
  }

  /** Feeds bytes as they arrive; events are dispatched once their blank line is in. */
  push(bytes) {
    this.#buffer += this.#decoder.decode(bytes, { stream: true });
    // A trailing "\r" may be half of a "\r\n": keep it for the next chunk.
    const lines = this.#buffer.split(/\r\n|\n|\r(?!$)/);
    this.#buffer = lines.pop();
    for (const line of lines) this.#line(line);
  }

  #line(line) {
    if (line === "") {
      if (this.#data.length) this.onEvent(this.#event || "message", this.#data.join("\n"));
      this.#event = "";
      this.#data = [];
      return;
    }
    if (line.startsWith(":")) return; // A comment: the keep-alive.
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.#event = value;
    else if (field === "data") this.#data.push(value);
  }
}

/** The page: stream cards keyed by name, the event feed (or the list poller), the meter
 * and stats loops, the live region. */
class App {
  cards = new Map();
  #pollTimer = null;
  /** Requests of /api/streams made, for tests (none while events flow). */
  listRequests = 0;

  constructor() {
    this.container = document.getElementById("streams");
    this.listStatus = document.getElementById("list-status");
    this.empty = document.getElementById("empty");
    this.updated = document.getElementById("updated");
    this.streamNames = document.getElementById("stream-names");
    this.announcer = document.getElementById("announcer");
    const announce = (text) => this.announce(text);
    // A new stream appears in the list once someone publishes to it: the events say so;
    // a polling page looks at once.
    this.publish = new PublishPanel(
      document.getElementById("publish"),
      () => {
        if (this.#pollTimer) this.refreshList();
      },
      announce,
    );
    this.events = new EventFeed({
      onStreams: (streams) => this.showList(streams, "live list (server events)"),
      onViewerCount: (stream, viewers) => {
        if (Number.isFinite(viewers)) this.cards.get(stream)?.setViewers(viewers);
      },
      onFallback: (on) => this.setPolling(on),
    });
  }

  start() {
    readToken.init(document.getElementById("read-token"), () => {
      this.events.restart();
      if (this.#pollTimer) this.refreshList();
    });
    for (const name of new URLSearchParams(location.search).getAll("play")) {
      this.card(name).player.play();
    }
    this.events.restart();
    setInterval(() => this.refreshStats(), STATS_INTERVAL_MS);
    requestAnimationFrame(() => this.animate());
    // A blocked autoplay resumes on the first gesture anywhere on the page.
    document.addEventListener("click", () => {
      for (const { player } of this.cards.values()) {
        if (player.notice) player.resumeAudio().catch(() => {});
      }
    });
    addEventListener("pagehide", () => {
      for (const { player } of this.cards.values()) player.abandon();
      this.publish.publisher.abandon();
    });
  }

  /** Says `text` in the page's polite live region (screen readers read it when idle). */
  announce(text) {
    this.announcer.textContent = text;
  }

  /** Polls /api/streams (on) or stops (off: the events are back). */
  setPolling(on) {
    clearInterval(this.#pollTimer);
    this.#pollTimer = null;
    if (on) {
      this.refreshList();
      this.#pollTimer = setInterval(() => this.refreshList(), LIST_INTERVAL_MS);
    }
  }

  /** The card for `name`, created (in list order) if missing. */
  card(name) {
    let card = this.cards.get(name);
    if (!card) {
      card = new StreamCard(name, (text) => this.announce(text));
      this.cards.set(name, card);
      this.container.append(card.root);
    }
    return card;
  }

  async refreshList() {
    let streams;
    this.listRequests += 1;
    try {
      const response = await fetch("/api/streams", {
        cache: "no-store",
        headers: readToken.headers(),
      });
      if (!response.ok) throw new UserError(`/api/streams answered ${response.status}`);
      ({ streams } = await response.json());
      if (!Array.isArray(streams)) throw new UserError("/api/streams: no streams array");
    } catch (err) {
      this.listStatus.textContent = `Cannot load the stream list (${messageOf(err)}); retrying.`;
      this.listStatus.hidden = false;
      return;
    }
    this.showList(streams, `list polled every ${LIST_INTERVAL_MS / 1000} s`);
  }

  /** Shows the server's stream list: cards for the listed streams, in its order. */
  showList(streams, how) {
    this.listStatus.hidden = true;
    const listed = new Set();
    for (const info of streams) {
      if (typeof info?.name !== "string") continue;
      listed.add(info.name);
      this.card(info.name).update(info);
    }
    for (const [name, card] of this.cards) {
      if (listed.has(name)) continue;
      if (card.player.playing) {
        card.markGone();
      } else {
        card.root.remove();
        this.cards.delete(name);
      }
    }
    this.empty.hidden = this.cards.size > 0;
    this.empty.textContent = readToken.value()
      ? "No streams are listed for this read token."
      : "No streams are listed. If this server uses a read token, enter it under “Read token”.";
    this.streamNames.replaceChildren(
      ...[...listed].map((name) => Object.assign(document.createElement("option"), { value: name })),
    );
    this.updated.textContent = `${how}, updated ${new Date().toLocaleTimeString()}`;
  }

  refreshStats() {
    for (const card of this.cards.values()) {
      if (card.player.playing) card.refreshStats().catch(() => {});
    }
    if (this.publish.publisher.publishing) this.publish.refreshStats().catch(() => {});
  }

  animate() {
    for (const card of this.cards.values()) {
      if (card.player.playing) card.renderLevels(card.player.levels());
    }
    if (this.publish.publisher.publishing) this.publish.renderLevels();
    requestAnimationFrame(() => this.animate());
  }
}

const app = new App();
app.start();

/** For automated tests (tests/browser.rs): the players and the publisher. */
window.mixcastTest = {
  streams: () => [...app.cards.keys()],
  state: (stream) => app.cards.get(stream)?.player.state ?? null,
  error: (stream) => app.cards.get(stream)?.player.error ?? null,
  deleteStatus: (stream) => app.cards.get(stream)?.player.deleteStatus ?? null,
  play: (stream) => app.card(stream).player.play(),
  stop: (stream) => app.cards.get(stream)?.player.stop(),
  stats: async (stream) => (await app.cards.get(stream)?.player.stats()) ?? null,
  levels: (stream) => app.cards.get(stream)?.player.levels() ?? [],
  /** The player's inbound video numbers (framesDecoded, frameWidth, frameHeight, ...),
   * or null before any video. */
  videoStats: async (stream) => (await app.cards.get(stream)?.player.videoStats()) ?? null,
  /** What the card's <video> shows: { shown, width, height }, or null without a card. */
  videoShown: (stream) => app.cards.get(stream)?.player.videoShown() ?? null,
  /** The player's session steps (performance.now() ms: post, answer, connected,
   * firstDecoded, firstPainted), or null before play. */
  timing: (stream) => app.cards.get(stream)?.player.timing ?? null,
  dominantFrequencies: (stream) =>
    app.cards.get(stream)?.player.dominantFrequencies() ?? { left: null, right: null },
  /** Publishes the microphone (and the camera with `{ video: true }`, only codec
   * `videoCodec` if given, as simulcast with `simulcast: true`) to `stream`; resolves once
   * connected, rejects on failure. */
  publish: (stream, token, options) => app.publish.publishAndWait(stream, token, options),
  publishStop: () => app.publish.publisher.stop(),
  publishState: () => {
    const p = app.publish.publisher;
    const { state, error, stream, channels, stereo, deleteStatus, camera, videoAccepted } = p;
    const { simulcastAnswer } = p;
    return {
      state,
      error,
      stream,
      channels,
      stereo,
      deleteStatus,
      camera,
      videoAccepted,
      simulcastAnswer,
    };
  },
  /** Outbound audio numbers, with the video's under `video` (null without camera). */
  publishStats: async () => (await app.publish.publisher.stats()) ?? null,
  /** Per channel sent: { rms, peak }. */
  publishLevels: () => app.publish.publisher.levels(),
  /** Per channel sent: the dominant frequency (Hz), or null where silent. */
  publishFrequencies: () => app.publish.publisher.dominantFrequencies(),
  /** The player's last latency reading (DelayMeter.update: roundTripMs, jitterBufferMs,
   * playoutMs, totalMs, lossPercent, ...), or null. */
  latency: (stream) => app.cards.get(stream)?.player.latency ?? null,
  /** The event feed: { state, counts, polling, listRequests }. */
  feed: () => ({
    state: app.events.state,
    counts: { ...app.events.counts },
    listRequests: app.listRequests,
  }),
};
