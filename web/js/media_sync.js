// Commerce events in step with the picture. A viewer sees the anchor 0.1-1.5 s late, but the
// room's events arrive at once: a "sale started" card would show before the anchor says it. The
// server stamps each commerce event with `media` = {flv_ms, rtp}, where the anchor's media was
// when it happened (docs/events.md); the page holds the event until its own playback reaches
// that point, read from the frame on screen: the FLV timestamp for an FLV player, the RTP
// timestamp (90 kHz) for WebRTC. At most HOLD_CAP_MS; an event without `media`, or a page
// without a clock, shows at once. Chat and everything else is never held.
//
// The core (waitMs, MediaSync) is pure, so node tests it; watchFrames is the browser's part.

export const HOLD_CAP_MS = 5000;
export const SYNCED = new Set(["product_pinned", "sale", "stock", "sold_out", "gift"]);
const RTP_PER_MS = 90;
// A frame stays on screen until the next: an event less than a frame after the frame on screen
// happened during it (30 fps).
export const FRAME_MS = 33;
const RELEASE_EVERY_MS = 100; // the cap still releases while no frame is presented

// Milliseconds of playback from the frame on screen `reading` ({flvMs} or {rtp}) to `media`;
// < FRAME_MS when it is on screen already, null when the two cannot be compared.
export function waitMs(media, reading) {
  if (!media || !reading) return null;
  if (Number.isFinite(reading.flvMs) && Number.isFinite(media.flv_ms)) {
    return media.flv_ms - reading.flvMs;
  }
  if (Number.isFinite(reading.rtp) && Number.isFinite(media.rtp)) {
    return ((media.rtp - reading.rtp) | 0) / RTP_PER_MS; // | 0: the 32-bit clock wraps
  }
  return null;
}

// Delivers events to `deliver` in order, holding the stamped commerce ones until the clock
// reading reaches them. `now` is a monotonic clock in ms.
export class MediaSync {
  constructor(deliver, { capMs = HOLD_CAP_MS, now = () => performance.now() } = {}) {
    this.deliver = deliver;
    this.capMs = capMs;
    this.now = now;
    this.held = []; // [{ev, at}], oldest first: commerce events keep their order
    this.reading = null;
    this.holds = 0; // events that waited for the picture (for tests and measurements)
    this.released = null; // the last held event shown: {media, reading, waited_ms}
  }

  // The frame on screen: {flvMs} or {rtp}; null when this page has no clock (shows at once).
  setReading(reading) {
    this.reading = reading;
    this.release();
  }

  offer(ev) {
    if (ev.type === "state") { // a fresh state already holds what was waiting
      this.flush();
      this.deliver(ev);
      return;
    }
    if (!SYNCED.has(ev.type)) {
      this.deliver(ev);
      return;
    }
    const entry = { ev, at: this.now() };
    this.held.push(entry);
    this.release();
    if (this.held.includes(entry)) this.holds += 1;
  }

  // Delivers every held event that is due; returns how many.
  release() {
    let released = 0;
    while (this.held.length) {
      const { ev, at } = this.held[0];
      const wait = waitMs(ev.media, this.reading);
      const holding = wait !== null && wait >= FRAME_MS && wait <= this.capMs;
      if (holding && this.now() - at < this.capMs) break;
      this.held.shift();
      this.released = { media: ev.media, reading: this.reading, waited_ms: this.now() - at };
      this.deliver(ev);
      released += 1;
    }
    return released;
  }

  flush() {
    const held = this.held;
    this.held = [];
    for (const { ev } of held) this.deliver(ev);
  }
}

const syncs = new Set(); // MediaSyncs the page's player feeds

// A MediaSync fed by watchFrames, released on a timer too (the cap, a stalled picture).
export function pageSync(deliver) {
  const sync = new MediaSync(deliver);
  syncs.add(sync);
  setInterval(() => sync.release(), RELEASE_EVERY_MS);
  return sync;
}

export function feedReading(reading) {
  for (const sync of syncs) sync.setReading(reading);
}

// Reads the clock of each frame `video` presents: readingOf(metadata) -> {flvMs} | {rtp} | null
// (requestVideoFrameCallback: metadata.mediaTime for MSE, metadata.rtpTimestamp for WebRTC).
// A browser without it has no clock: events show at once.
export function watchFrames(video, readingOf) {
  if (typeof video.requestVideoFrameCallback !== "function") return;
  const onFrame = (_now, metadata) => {
    feedReading(readingOf(metadata));
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}
