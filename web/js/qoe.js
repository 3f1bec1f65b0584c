// Viewer QoE: every QOE interval (10 s; ?qoe_interval_ms= between 500 and 60000 for tests) a `qoe`
// report of what this player sees goes to the server on the page's events socket (live.js's
// /ws/events, on WebRTC and FLV alike): the server aggregates them per room for /metrics and
// GET /api/v1/rooms/{room}/health (signaling/live/qoe.py). Nothing is sent unless the page plays.
//   WebRTC: RTCPeerConnection.getStats() inbound-rtp video of the main tile (fps, size, freezes,
//           jitter-buffer delay, loss, decode time).
//   FLV:    the <video> element: fps from its playback quality, rebuffers (`waiting` events) and
//           the time spent in them, seconds buffered ahead of currentTime.
// Reads window.shopcast (viewer.js) and window.shopcastLive (live.js); window.shopcastQoe shows
// the last report and how many went out, for tests.

const DEFAULT_MS = 10000;
const MIN_MS = 500;
const MAX_MS = 60000;

export function reportInterval(query) {
  const asked = Number.parseInt(query.get("qoe_interval_ms") || "", 10);
  return Number.isFinite(asked) ? Math.min(MAX_MS, Math.max(MIN_MS, asked)) : DEFAULT_MS;
}

// A finite number within [lo, hi], rounded to `digits` decimals (the server refuses NaN and
// anything out of range; browsers' stats can be either).
function bounded(value, lo, hi, digits = 3) {
  const n = Number(value);
  if (!Number.isFinite(n)) return lo;
  const f = 10 ** digits;
  return Math.round(Math.min(hi, Math.max(lo, n)) * f) / f;
}

function whole(value, lo, hi) { return Math.round(bounded(value, lo, hi, 0)); }

const video = document.getElementById("video");
const player = { transport: null, startedAt: null, rebuffers: 0, rebufferS: 0, waitingAt: null,
  frames: null, framesAt: 0 };

// Playback counters start again when the page changes transport (WebRTC -> FLV).
function follow(transport) {
  if (player.transport === transport) return;
  Object.assign(player, { transport, startedAt: null, rebuffers: 0, rebufferS: 0,
    waitingAt: null, frames: null, framesAt: 0 });
}

const transportNow = () => (window.shopcast ? window.shopcast.transport : null);

video.addEventListener("playing", () => {
  follow(transportNow());
  const now = performance.now();
  if (player.startedAt === null) player.startedAt = now;
  if (player.waitingAt !== null) player.rebufferS += (now - player.waitingAt) / 1000;
  player.waitingAt = null;
});
video.addEventListener("waiting", () => {
  follow(transportNow());
  if (player.startedAt === null || player.waitingAt !== null) return;
  player.rebuffers += 1;
  player.waitingAt = performance.now();
});

function device() {
  const out = {};
  if (navigator.hardwareConcurrency) out.cores = whole(navigator.hardwareConcurrency, 1, 1024);
  if (navigator.deviceMemory) out.memory_gb = bounded(navigator.deviceMemory, 0, 1024);
  return out;
}

async function webrtcFigures(pc) {
  const src = video.srcObject;
  const mainTrack = src && src.getVideoTracks()[0];
  let r = null;
  (await pc.getStats()).forEach((s) => {
    if (s.type !== "inbound-rtp" || (s.kind || s.mediaType) !== "video") return;
    if (!r || (mainTrack && s.trackIdentifier === mainTrack.id)) r = s;
  });
  if (!r) return null;
  const emitted = r.jitterBufferEmittedCount || 0;
  const decoded = r.framesDecoded || 0;
  return {
    fps: bounded(r.framesPerSecond || 0, 0, 240, 2),
    width: whole(r.frameWidth || 0, 0, 8192), height: whole(r.frameHeight || 0, 0, 8192),
    freezes: whole(r.freezeCount || 0, 0, 1e6),
    freeze_s: bounded(r.totalFreezesDuration || 0, 0, 604800),
    jitter_buffer_ms: emitted ? bounded((r.jitterBufferDelay / emitted) * 1000, 0, 60000, 1) : null,
    packets_lost: whole(r.packetsLost || 0, 0, 2 ** 31),
    packets_received: whole(r.packetsReceived || 0, 0, 2 ** 31),
    decode_ms: decoded ? bounded((r.totalDecodeTime / decoded) * 1000, 0, 10000, 2) : null,
  };
}

function flvFigures(now) {
  const quality = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
  const frames = quality ? quality.totalVideoFrames : 0;
  let fps = 0;
  if (player.frames !== null && now > player.framesAt) {
    fps = ((frames - player.frames) * 1000) / (now - player.framesAt);
  }
  player.frames = frames;
  player.framesAt = now;
  const b = video.buffered;
  const ahead = b.length ? b.end(b.length - 1) - video.currentTime : 0;
  const waitingNow = player.waitingAt !== null ? (now - player.waitingAt) / 1000 : 0;
  return {
    fps: bounded(fps, 0, 240, 2),
    width: whole(video.videoWidth, 0, 8192), height: whole(video.videoHeight, 0, 8192),
    freezes: whole(player.rebuffers, 0, 1e6),
    freeze_s: bounded(player.rebufferS + waitingNow, 0, 604800),
    buffer_s: bounded(ahead, 0, 600),
  };
}

// The report of this moment, or null when nothing plays yet.
export async function makeReport() {
  const viewer = window.shopcast;
  // between plays (anchor gone, reconnecting) there is no picture to report on
  if (!viewer || !viewer.transport || viewer.state !== "playing") return null;
  follow(viewer.transport); // switched with no media event since: its counters start here
  if (player.startedAt === null) return null;
  const now = performance.now();
  let figures = null;
  if (viewer.transport === "webrtc" && viewer.pc) figures = await webrtcFigures(viewer.pc);
  else if (viewer.transport === "flv") figures = flvFigures(now);
  if (!figures) return null;
  return { type: "qoe", transport: viewer.transport, layer: null,
    played_s: bounded((now - player.startedAt) / 1000, 0, 604800), ...figures, ...device() };
}

const status = { sent: 0, last: null, interval: reportInterval(new URLSearchParams(location.search)) };
window.shopcastQoe = status;

async function tick() {
  try {
    const report = await makeReport();
    const events = window.shopcastLive && window.shopcastLive.events;
    if (report && events && events.send(report)) {
      status.sent += 1;
      status.last = report;
    }
  } catch (e) {
    console.warn("shopcast: qoe report failed", e);
  }
}

setInterval(tick, status.interval);
