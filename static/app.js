// mixcast's web page: the list of streams and a WHEP player for each.
//
// Plain ES module, no build step, no external fetch: the page must work offline.
// A player is one RTCPeerConnection receiving the stream's stereo Opus mix, an <audio>
// element that plays it, and a WebAudio graph (source -> splitter -> one analyser per
// channel) that drives the level meters and the tests' frequency checks.
//
// `/?play=NAME` starts playing NAME at load (repeatable); `window.mixcastTest` exposes
// the players to automated tests.

const LIST_INTERVAL_MS = 3000;
const STATS_INTERVAL_MS = 1000;
// The server answers with its full candidate list, so waiting for our own gathering is
// only about sending a complete offer; on loopback it finishes in milliseconds.
const ICE_GATHERING_TIMEOUT_MS = 2000;
const CONNECT_TIMEOUT_MS = 10000;
const DELETE_TIMEOUT_MS = 5000;
// 8192 samples at 48 kHz: 5.9 Hz bins and a 170 ms window, shorter than the test
// signal's 800 ms beep.
const FFT_SIZE = 8192;
// Below this (dBFS, per FFT bin) a channel counts as silent.
const SILENCE_DB = -90;
const METER_FLOOR_DB = -60;
// The meters look at the last ~45 ms, so they follow the sound closely.
const METER_WINDOW = 2048;

/** An error to show to the user as it is. */
class PlayerError extends Error {}

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

  #pc = null;
  #sessionUrl = null;
  #audioContext = null;
  #analysers = [];
  #connectTimer = null;
  #lastBytes = null;
  #bitrate = null;

  constructor(stream, audioElement) {
    super();
    this.stream = stream;
    this.audio = audioElement;
  }

  get playing() {
    return this.#pc !== null;
  }

  /** Sends the offer, applies the answer; media then flows on its own. */
  async play() {
    if (this.#pc) return;
    const pc = new RTCPeerConnection();
    this.#pc = pc;
    this.#lastBytes = null;
    this.#bitrate = null;
    this.deleteStatus = null;
    // Created here, inside the click that called us, so the autoplay policy allows it.
    this.#audioContext = new AudioContext();
    this.#set({ state: "connecting", error: null, notice: null });

    pc.addTransceiver("audio", { direction: "recvonly" });
    pc.addEventListener("track", (event) => this.#onTrack(event));
    pc.addEventListener("connectionstatechange", () => this.#onConnectionState(pc));
    this.#connectTimer = setTimeout(() => {
      if (this.#pc === pc && pc.connectionState !== "connected") {
        this.#fail(
          pc,
          new PlayerError(
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
      const response = await fetch(endpoint, {
        method: "POST",
        headers: { "Content-Type": "application/sdp" },
        body: pc.localDescription.sdp,
      });
      const body = await response.text();
      if (response.status !== 201) {
        const detail = body.trim() ? `: ${body.trim().slice(0, 300)}` : "";
        throw new PlayerError(
          `POST ${endpoint.pathname} answered ${response.status} ${response.statusText}${detail}`,
        );
      }
      const sessionPath = response.headers.get("Location");
      if (!sessionPath) throw new PlayerError("the server's 201 has no Location header");
      const sessionUrl = new URL(sessionPath, endpoint);
      if (this.#pc !== pc) {
        // Stopped while the POST was in flight: end the session we just created.
        fetch(sessionUrl, { method: "DELETE" }).catch(() => {});
        return;
      }
      this.#sessionUrl = sessionUrl;
      await pc.setRemoteDescription({ type: "answer", sdp: body });
    } catch (err) {
      this.#fail(pc, err);
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
      fetch(this.#sessionUrl, { method: "DELETE", keepalive: true }).catch(() => {});
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

    const now = inbound.timestamp;
    const bytes = inbound.bytesReceived ?? 0;
    if (this.#lastBytes && now - this.#lastBytes.at >= STATS_INTERVAL_MS * 0.9) {
      this.#bitrate = ((bytes - this.#lastBytes.bytes) * 8 * 1000) / (now - this.#lastBytes.at);
      this.#lastBytes = { bytes, at: now };
    } else if (!this.#lastBytes) {
      this.#lastBytes = { bytes, at: now };
    }
    const codec = inbound.codecId ? report.get(inbound.codecId) : undefined;
    return {
      packetsReceived: inbound.packetsReceived ?? 0,
      packetsLost: inbound.packetsLost ?? 0,
      jitter: inbound.jitter ?? null,
      bytesReceived: bytes,
      bitrate: this.#bitrate,
      audioLevel: inbound.audioLevel ?? null,
      totalAudioEnergy: inbound.totalAudioEnergy ?? 0,
      totalSamplesReceived: inbound.totalSamplesReceived ?? 0,
      concealedSamples: inbound.concealedSamples ?? 0,
      codec: codec
        ? { mimeType: codec.mimeType, channels: codec.channels ?? 1, fmtp: codec.sdpFmtpLine ?? "" }
        : null,
    };
  }

  /** Per channel: { rms, peak } of the last METER_WINDOW samples, or [] before audio. */
  levels() {
    return this.#analysers.map((analyser) => {
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

  /** The dominant frequency (Hz) of each channel, null where silent or before audio. */
  dominantFrequencies() {
    if (this.#analysers.length !== 2) return { left: null, right: null };
    const [left, right] = this.#analysers.map((analyser) => {
      const spectrum = new Float32Array(analyser.frequencyBinCount);
      analyser.getFloatFrequencyData(spectrum);
      return dominantFrequency(spectrum, analyser.context.sampleRate, analyser.fftSize);
    });
    return { left, right };
  }

  #onTrack(event) {
    if (event.track.kind !== "audio") return;
    const stream = event.streams[0] ?? new MediaStream([event.track]);
    // Chrome pulls remote WebRTC audio only for a playing media element; WebAudio then
    // taps the same stream for the meters.
    this.audio.srcObject = stream;
    this.audio.play().catch(() => {
      this.#set({ notice: "The browser blocked autoplay: click anywhere to listen." });
    });

    const context = this.#audioContext;
    const source = context.createMediaStreamSource(stream);
    const splitter = context.createChannelSplitter(2);
    source.connect(splitter);
    this.#analysers = [0, 1].map((channel) => {
      const analyser = context.createAnalyser();
      analyser.fftSize = FFT_SIZE;
      analyser.smoothingTimeConstant = 0;
      splitter.connect(analyser, channel);
      return analyser;
    });
    if (context.state !== "running") {
      context.resume().catch(() => {});
    }
  }

  #onConnectionState(pc) {
    // While stopping, the server ending the connection is expected.
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
        this.#fail(pc, new PlayerError(`connection failed (ICE ${pc.iceConnectionState})`));
        break;
      default:
        break;
    }
  }

  #fail(pc, err) {
    if (this.#pc !== pc || this.state === "stopping") return;
    const sessionUrl = this.#sessionUrl;
    this.#close();
    this.#set({ state: "failed", error: messageOf(err) });
    if (sessionUrl) fetch(sessionUrl, { method: "DELETE" }).catch(() => {});
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
  }

  #set(changes) {
    Object.assign(this, changes);
    this.dispatchEvent(new Event("change"));
  }
}

function messageOf(err) {
  if (err instanceof PlayerError) return err.message;
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
      meters: [...this.root.querySelectorAll(".meter-row")].map((row) => ({
        bar: row.querySelector(".bar"),
        peak: row.querySelector(".peak"),
        db: row.querySelector(".db"),
        held: 0,
      })),
      stats: Object.fromEntries(
        [...this.root.querySelectorAll("[data-stat]")].map((dd) => [dd.dataset.stat, dd]),
      ),
    };
    this.el.name.textContent = name;
    this.player = new WhepPlayer(name, $(".sink"));
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
    if (!playing) this.renderLevels([]);
  }

  renderLevels(levels) {
    this.el.meters.forEach((meter, channel) => {
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

  async refreshStats() {
    const stats = await this.player.stats();
    const show = (key, text) => {
      this.el.stats[key].textContent = text;
    };
    if (!stats) {
      for (const dd of Object.values(this.el.stats)) dd.textContent = "–";
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
  }

  start() {
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
      const response = await fetch("/api/streams", { cache: "no-store" });
      if (!response.ok) throw new PlayerError(`/api/streams answered ${response.status}`);
      ({ streams } = await response.json());
      if (!Array.isArray(streams)) throw new PlayerError("/api/streams: no streams array");
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
    this.updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  refreshStats() {
    for (const card of this.cards.values()) {
      if (card.player.playing) card.refreshStats().catch(() => {});
    }
  }

  animate() {
    for (const card of this.cards.values()) {
      if (card.player.playing) card.renderLevels(card.player.levels());
    }
    requestAnimationFrame(() => this.animate());
  }
}

const app = new App();
app.start();

/** For automated tests (tests/browser.rs): read-only views of the players. */
window.mixcastTest = {
  streams: () => [...app.cards.keys()],
  state: (stream) => app.cards.get(stream)?.player.state ?? null,
  error: (stream) => app.cards.get(stream)?.player.error ?? null,
  deleteStatus: (stream) => app.cards.get(stream)?.player.deleteStatus ?? null,
  play: (stream) => app.card(stream).player.play(),
  stop: (stream) => app.cards.get(stream)?.player.stop(),
  stats: async (stream) => (await app.cards.get(stream)?.player.stats()) ?? null,
  levels: (stream) => app.cards.get(stream)?.player.levels() ?? [],
  dominantFrequencies: (stream) =>
    app.cards.get(stream)?.player.dominantFrequencies() ?? { left: null, right: null },
};
