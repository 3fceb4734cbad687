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
// `/?play=NAME` starts playing NAME at load (repeatable); `window.mixcastTest` exposes
// the players and the publisher to automated tests.

const LIST_INTERVAL_MS = 3000;
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

/** A stream's card on the page: its info, its player's controls, meters and stats. */
class StreamCard {
  constructor(name) {
    const template = document.getElementById("stream-card");
    this.root = template.content.firstElementChild.cloneNode(true);
    this.root.dataset.stream = name;
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
      meters: [...this.root.querySelectorAll(".meter-row")].map(meterOf),
      stats: Object.fromEntries(
        [...this.root.querySelectorAll("[data-stat]")].map((dd) => [dd.dataset.stat, dd]),
      ),
    };
    this.el.name.textContent = name;
    this.player = new WhepPlayer(name, $(".sink"), this.el.picture);
    this.player.addEventListener("change", () => this.render());
    this.el.play.addEventListener("click", () => this.player.play());
    this.el.stop.addEventListener("click", () => this.player.stop());
    this.listed = true;
    this.render();
  }

  /** Updates the numbers from the stream list. */
  update(info) {
    this.listed = true;
    this.el.viewers.textContent = `${info.viewers} viewer${info.viewers === 1 ? "" : "s"}`;
    this.el.publishers.textContent = `${info.publishers} publisher${info.publishers === 1 ? "" : "s"}`;
    this.el.sources.textContent = info.sources.length ? info.sources.join(", ") : "no sources";
    this.root.classList.remove("gone");
  }

  markGone() {
    this.listed = false;
    this.root.classList.add("gone");
    this.el.sources.textContent = "no longer listed by the server";
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
    // While playing, the picture, or a placeholder until the stream has video.
    const { hasVideo } = this.player;
    this.el.screen.hidden = !playing;
    this.el.picture.hidden = !hasVideo;
    this.el.noVideo.hidden = hasVideo;
    this.el.noVideo.textContent = state === "connected" ? "no video" : "";
    if (!playing) this.renderLevels([]);
  }

  renderLevels(levels) {
    renderMeters(this.el.meters, levels);
  }

  async refreshStats() {
    const [stats, video] = await Promise.all([this.player.stats(), this.player.videoStats()]);
    const show = (key, text) => {
      this.el.stats[key].textContent = text;
    };
    show("video", describeVideo(video));
    if (!stats) {
      for (const [key, dd] of Object.entries(this.el.stats)) {
        if (key !== "video") dd.textContent = "–";
      }
      return;
    }
    show("packetsReceived", String(stats.packetsReceived));
    show("packetsLost", String(stats.packetsLost));
    show("jitter", stats.jitter === null ? "–" : `${formatNumber(stats.jitter * 1000, 1)} ms`);
    show("bitrate", formatBitrate(stats.bitrate));
    show("audioLevel", formatNumber(stats.audioLevel, 3));
    show("totalAudioEnergy", formatNumber(stats.totalAudioEnergy, 2));
    show(
      "codec",
      stats.codec ? `${stats.codec.mimeType.replace(/^audio\//, "")} ×${stats.codec.channels}` : "–",
    );
  }
}

/** A level meter's parts, from its `.meter-row` element. */
function meterOf(row) {
  return {
    row,
    bar: row.querySelector(".bar"),
    peak: row.querySelector(".peak"),
    db: row.querySelector(".db"),
    held: 0,
  };
}

/** A new level meter row labelled `label`, as in the stream card's template. */
function createMeterRow(label) {
  const row = document.createElement("div");
  row.className = "meter-row";
  const channel = document.createElement("span");
  channel.className = "channel";
  channel.textContent = label;
  const meter = document.createElement("div");
  meter.className = "meter";
  for (const part of ["bar", "peak"]) {
    meter.append(Object.assign(document.createElement("div"), { className: part }));
  }
  const db = document.createElement("span");
  db.className = "db";
  db.textContent = "–∞ dB";
  row.append(channel, meter, db);
  return row;
}

/** Shows `levels` (per channel: { rms, peak }) on `meters`; missing channels show
 * silence. */
function renderMeters(meters, levels) {
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
    meter.db.textContent = Number.isFinite(db) ? `${db.toFixed(1)} dB` : "–∞ dB";
  });
}

/** The "Publish my microphone" form: stream name, token, the publisher's state, meters
 * of what is sent and its outbound stats. */
class PublishPanel {
  /** Channels the meters are built for. */
  #meterChannels = -1;
  /** Options only tests set (`videoCodec`, `simulcast`; see publishAndWait). */
  #testOptions = {};

  constructor(root, onConnected) {
    this.root = root;
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

  /** Publishes to the stream the form names (an empty name means `live`). */
  start() {
    const stream = this.el.stream.value.trim() || "live";
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
    show("audioLevel", formatNumber(stats.audioLevel, 3));
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

/** The page: stream cards keyed by name, the list poller, the meter and stats loops. */
class App {
  cards = new Map();

  constructor() {
    this.container = document.getElementById("streams");
    this.listStatus = document.getElementById("list-status");
    this.empty = document.getElementById("empty");
    this.updated = document.getElementById("updated");
    this.streamNames = document.getElementById("stream-names");
    // A new stream appears in the list once someone publishes to it: look at once.
    this.publish = new PublishPanel(document.getElementById("publish"), () => this.refreshList());
  }

  start() {
    readToken.init(document.getElementById("read-token"), () => this.refreshList());
    for (const name of new URLSearchParams(location.search).getAll("play")) {
      this.card(name).player.play();
    }
    this.refreshList();
    setInterval(() => this.refreshList(), LIST_INTERVAL_MS);
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

  /** The card for `name`, created (in list order) if missing. */
  card(name) {
    let card = this.cards.get(name);
    if (!card) {
      card = new StreamCard(name);
      this.cards.set(name, card);
      this.container.append(card.root);
    }
    return card;
  }

  async refreshList() {
    let streams;
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
    this.listStatus.hidden = true;
    const listed = new Set();
    for (const info of streams) {
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
    this.updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
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
};
