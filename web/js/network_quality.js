// The anchor's network prompt: the server scores the anchor's uplink every 2 s (0 no media ..
// 5 excellent) and sends `network_quality` when the score changes. At PROMPT_AT and below the
// page shows the advice and offers a one-click step down (and, if ticked, takes it by itself
// every AUTO_STEP_MS while the score stays low); the banner goes when the score recovers.
// A step halves the video sender's maxBitrate down to MIN_BITRATE, then halves the resolution
// (scaleResolutionDownBy) up to MAX_SCALE: no renegotiation, the server sees the same track.
export const PROMPT_AT = 2;
export const MIN_BITRATE = 150_000;
export const MAX_SCALE = 4;
export const AUTO_STEP_MS = 10_000;
const LEVELS = ["no media", "bad", "poor", "fair", "good", "excellent"];

// The next encoding after one step down from `enc` ({maxBitrate, scaleResolutionDownBy}),
// or null when there is nothing left to lower. Pure, so it is tested apart from a browser.
export function stepDownEncoding(enc, fallbackBitrate) {
  const bitrate = enc.maxBitrate || fallbackBitrate;
  const scale = enc.scaleResolutionDownBy || 1;
  if (bitrate > MIN_BITRATE) return { ...enc, maxBitrate: Math.max(MIN_BITRATE, Math.round(bitrate / 2)) };
  if (scale < MAX_SCALE) return { ...enc, maxBitrate: bitrate, scaleResolutionDownBy: scale * 2 };
  return null;
}

// `sdp` with the encoder's video target (bit/s) as b=TIAS (RFC 3890) in each video section that
// names none, after its c= line (or its m= line), as the WHIP offer tells the server.
export function withVideoTarget(sdp, bps) {
  const eol = sdp.includes("\r\n") ? "\r\n" : "\n";
  const out = [];
  let pending = false; // in a video section that still needs its b= line
  const flush = () => { if (pending) out.push(`b=TIAS:${Math.round(bps)}`); pending = false; };
  for (const line of sdp.split(eol)) {
    if (line.startsWith("m=")) {
      flush();
      pending = line.startsWith("m=video") && bps > 0;
      out.push(line);
      continue;
    }
    if (pending && line.startsWith("b=")) pending = false; // it names one already
    if (pending && !line.startsWith("c=") && !line.startsWith("i=")) flush();
    out.push(line);
  }
  flush();
  return out.join(eol);
}

export class NetworkPrompt {
  // els: {banner, text, step, auto}; identity: this page's token sub (whose scores count);
  // videoSender(): the publishing RTCRtpSender of the camera, or null while not live.
  constructor(els, identity, videoSender, fallbackBitrate) {
    this.els = els;
    this.identity = identity;
    this.videoSender = videoSender;
    this.fallbackBitrate = fallbackBitrate;
    this.score = null;
    this.steps = 0;
    this.lastAutoStep = 0;
    els.step.addEventListener("click", () => this.stepDown());
  }

  get prompting() { return !this.els.banner.hidden; }

  onEvent(ev) {
    if (ev.type !== "network_quality" || ev.identity !== this.identity) return;
    this.score = ev.score;
    const low = ev.score <= PROMPT_AT;
    this.els.banner.hidden = !low;
    this.els.banner.dataset.score = String(ev.score);
    if (!low) return;
    const loss = Math.round((ev.loss || 0) * 100);
    this.els.text.textContent = `Your network is ${LEVELS[ev.score] || "poor"} ` +
      `(${loss} % lost, ${ev.bitrate_kbps} kbit/s arriving): viewers may see stalls.`;
    if (this.els.auto.checked && Date.now() - this.lastAutoStep >= AUTO_STEP_MS) {
      this.lastAutoStep = Date.now();
      this.stepDown();
    }
  }

  // Lower the video one step; false when not live or already at the lowest.
  async stepDown() {
    const sender = this.videoSender();
    if (!sender) return false;
    const params = sender.getParameters();
    if (!params.encodings || !params.encodings.length) params.encodings = [{}];
    const next = stepDownEncoding(params.encodings[0], this.fallbackBitrate);
    if (!next) {
      this.els.step.disabled = true;
      return false;
    }
    params.encodings[0] = next;
    try {
      await sender.setParameters(params);
    } catch (e) {
      console.warn("shopcast: step down failed", e);
      return false;
    }
    this.steps += 1;
    this.els.step.textContent = `Lower quality (now ${Math.round(next.maxBitrate / 1000)} kbit/s` +
      (next.scaleResolutionDownBy > 1 ? `, 1/${next.scaleResolutionDownBy} size)` : ")");
    return true;
  }
}
