// Viewer: WHEP playback into #stage (one tile per remote stream; the first is #video), with retries,
// and HTTP-FLV (mpegts.js, see flv.js) into #video when WebRTC cannot play:
//   - the page URL says ?transport=flv (?transport=webrtc: WebRTC only, never FLV);
//   - the browser has no RTCPeerConnection;
//   - the room's playback plan says flv (its node is full of WebRTC viewers);
//   - WHEP answered but nothing played within WEBRTC_START_MS, the connection failed before
//     playing, or the server refused the WebRTC session (4xx other than auth, 5xx).
// Once on FLV the page stays on FLV. #transport shows which one plays ("webrtc" or "flv").
import { negotiate, teardown, pageParams } from "./whip.js";
import { flvSupported, loadMpegts, playFlv, withToken } from "./flv.js";
import { SLOTS, TileWatch } from "./stage.js";
import { watchFrames } from "./media_sync.js";

const RETRY_MS = 2000; // also the FLV endpoint's Retry-After for a room that is not live
// A connection that played and dropped (its server worker died, a network change) is tried
// again soon: the browser needed ~5 s of ICE consent to notice, the viewer has waited enough.
const RETRY_LOST_MS = 300;
const WEBRTC_START_MS = 5000; // after a live answer, WebRTC must be playing by then
const STATES = {
  connecting: "connecting",
  waiting: "waiting for the anchor",
  playing: "playing",
  left: "anchor left, retrying",
  retrying: "connection lost, retrying",
  error: "error",
};

const $ = (id) => document.getElementById(id);
const els = { stage: $("stage"), video: $("video"), state: $("state"), error: $("error"),
  unmute: $("unmute"), room: $("room"), overlay: $("overlay"), transport: $("transport") };

let params;
let pc = null;
let resource = null;
let retryTimer = null;
let state = "connecting";
let muted = true;
let transport = null; // "webrtc" | "flv" once chosen
let fallback = true; // may WebRTC trouble switch this page to FLV?
let flv = null; // the FLV session (flv.js playFlv) while on FLV
let flvReason = "";
let startTimer = null; // WEBRTC_START_MS watchdog of the current WHEP attempt
let playedPc = null; // the RTCPeerConnection whose media reached "playing"
let planMissing = false; // this server has no playback-plan endpoint: stop asking
let planRefusal = null; // the plan's 401/403 error: this token cannot watch the room
const media = new Map(); // remote stream id -> <video> (tile) or <audio> (audio-only stream)
let watch = new TileWatch(); // co-host tiles show while their video decodes
let watchTimer = null;
// tracks that arrive without a stream id (no MediaStream at all: a browser without WebRTC)
const synthetic = typeof MediaStream === "function" ? new MediaStream() : null;

window.shopcast = {
  get pc() { return pc; },
  get state() { return state; },
  get transport() { return transport; },
  get flvReason() { return flvReason; },
  // FLV playback stats (decodedFrames, currentTime, bufferedAhead, ...), null unless on FLV.
  get flv() { return flv ? flv.stats() : null; },
  stats,
};

function setState(key) {
  state = key;
  els.state.textContent = STATES[key] || key;
  els.state.dataset.state = key;
  els.overlay.textContent = STATES[key] || key;
  els.overlay.hidden = key === "playing";
}

function setTransport(name, why = "") {
  transport = name;
  if (!els.transport) return;
  els.transport.textContent = name;
  els.transport.title = why ? `${name}: ${why}` : name;
  els.transport.dataset.transport = name;
  els.transport.hidden = false;
}

function showError(err) {
  const text = err ? (err.code ? `${err.message} (${err.code})` : String(err.message || err)) : "";
  els.error.textContent = text;
  els.error.hidden = !text;
}

// ---- media elements ------------------------------------------------------------------------

function newTile() {
  const tile = document.createElement("div");
  tile.className = "tile";
  const v = document.createElement("video");
  v.autoplay = true;
  v.playsInline = true;
  v.muted = muted;
  tile.append(v);
  els.stage.append(tile);
  return v;
}

function layout() {
  const visible = els.stage.querySelectorAll(".tile:not([hidden])").length;
  els.stage.dataset.tiles = String(Math.max(1, visible));
}

function attach(ev) {
  const stream = ev.streams[0] || synthetic;
  if (!ev.streams[0]) synthetic.addTrack(ev.track);
  let el = media.get(stream.id);
  const hasVideo = stream.getVideoTracks().length > 0;
  if (el && el.tagName === "AUDIO" && hasVideo) { el.remove(); el = null; } // upgrade to a tile
  if (!el) {
    if (hasVideo) {
      const used = [...media.values()].includes(els.video);
      el = used ? newTile() : els.video; // the anchor's slot comes first and takes #video
      if (used) watch.add(ev.track.id, el.closest(".tile"));
    } else {
      el = document.createElement("audio");
      el.autoplay = true;
      el.muted = muted;
      el.hidden = true;
      els.stage.append(el);
    }
    media.set(stream.id, el);
    el.srcObject = stream;
    layout();
  }
}

function clearMedia() {
  for (const el of media.values()) {
    el.srcObject = null;
    if (el === els.video) continue;
    (el.tagName === "VIDEO" ? el.closest(".tile") : el).remove();
  }
  media.clear();
  watch = new TileWatch();
  if (synthetic) for (const t of synthetic.getTracks()) synthetic.removeTrack(t);
  layout();
}

function toggleMute() {
  muted = !muted;
  for (const el of els.stage.querySelectorAll("video, audio")) {
    el.muted = muted;
    if (!muted) el.play().catch(() => {});
  }
  els.unmute.textContent = muted ? "Unmute" : "Mute";
}

// ---- connection ----------------------------------------------------------------------------

function dropConnection() {
  const old = pc, res = resource;
  clearTimeout(startTimer);
  startTimer = null;
  pc = null;
  resource = null;
  if (old) old.close();
  if (res) teardown(res, params.token);
  clearMedia();
}

function scheduleRetry(delayMs = RETRY_MS) {
  clearTimeout(retryTimer);
  retryTimer = setTimeout(connect, delayMs);
}

// The room's playback plan (GET /api/v1/rooms/{room}/playback): {transport: "whep"|"flv",
// whep_url, flv_url}. null means "no plan, WHEP first": the server has no such endpoint, the
// room is not live yet, or the request failed. Kept apart so the policy lives in one place.
async function playbackPlan() {
  if (planMissing) return null;
  try {
    const resp = await fetch(`/api/v1/rooms/${encodeURIComponent(params.room)}/playback`, {
      headers: { Authorization: "Bearer " + params.token },
      cache: "no-store",
    });
    if (resp.status === 404 || resp.status === 405) {
      const body = await resp.json().catch(() => null);
      const code = body && body.error && body.error.code;
      if (code !== "not_live" && code !== "room_not_found") planMissing = true;
      return null;
    }
    if (resp.status === 401 || resp.status === 403) {
      const body = await resp.json().catch(() => null);
      const error = (body && body.error) || {};
      planRefusal = new Error(`playback refused: ${error.message || "HTTP " + resp.status}`);
      planRefusal.code = error.code || "http_" + resp.status;
      return null;
    }
    if (!resp.ok) return null;
    const plan = await resp.json();
    return plan && (plan.transport === "whep" || plan.transport === "flv") ? plan : null;
  } catch {
    return null;
  }
}

// The page's ?quality=auto|high|low goes on the WHEP URL: the video layer the server sends.
function withQuality(url) {
  const quality = params.query.get("quality");
  if (!quality) return url;
  const target = new URL(url, location.href);
  target.searchParams.set("quality", quality);
  return target.href;
}

async function connect() {
  retryTimer = null;
  const plan = fallback ? await playbackPlan() : null;
  if (transport === "flv") return; // switched while the plan was on its way
  if (plan && plan.transport === "flv") {
    useFlv("the playback plan says flv (WebRTC viewers are at capacity)");
    return;
  }
  const whepUrl = withQuality((plan && plan.whep_url) || "/whep/" + encodeURIComponent(params.room));
  setTransport("webrtc");
  const mine = new RTCPeerConnection({ iceServers: params.iceServers });
  pc = mine;
  for (let i = 0; i < SLOTS; i++) { // one pair per publisher slot: the anchor, then co-hosts
    mine.addTransceiver("video", { direction: "recvonly" });
    mine.addTransceiver("audio", { direction: "recvonly" });
  }
  mine.addEventListener("track", (ev) => { if (pc === mine) attach(ev); });
  const lost = () => {
    if (pc !== mine) return;
    if (fallback && playedPc !== mine) {
      useFlv(`WebRTC ${mine.connectionState} before playing`);
      return;
    }
    const played = playedPc === mine;
    dropConnection();
    setState(state === "playing" ? "left" : "retrying");
    scheduleRetry(played ? RETRY_LOST_MS : RETRY_MS);
  };
  mine.addEventListener("connectionstatechange", () => {
    const s = mine.connectionState;
    if (s === "closed" || s === "failed" || s === "disconnected") lost();
  });
  if (state !== "waiting" && state !== "left" && state !== "retrying") setState("connecting");
  clearInterval(watchTimer);
  watchTimer = setInterval(async () => {
    if (pc === mine && await watch.check(mine)) layout();
  }, 500);
  try {
    const res = await negotiate(whepUrl, params.token, mine);
    if (pc !== mine) { teardown(res.resource, params.token); return; }
    resource = res.resource;
    showError(null);
    if (fallback) startTimer = setTimeout(() => checkStarted(mine), WEBRTC_START_MS);
    // The server's DTLS close_notify shows here at once; connectionState lags by ICE consent (~5 s).
    const dtls = mine.getReceivers()[0] && mine.getReceivers()[0].transport;
    if (dtls) dtls.addEventListener("statechange", () => { if (dtls.state === "closed") lost(); });
  } catch (e) {
    if (pc !== mine) return;
    dropConnection();
    if (e.status === 404 && e.code === "not_live") {
      showError(null);
      if (state !== "left") setState("waiting"); // after a leave, keep saying so until playing again
    } else if (e.status === 401 || e.status === 403) {
      showError(e); // retrying cannot fix a bad token
      setState("error");
      return;
    } else if (fallback && e.status >= 400) {
      useFlv(`WHEP answered ${e.status} ${e.code}`); // the server cannot give us WebRTC
      return;
    } else if (e.status === 400) {
      showError(e); // retrying cannot fix a rejected offer
      setState("error");
      return;
    } else {
      showError(e);
      setState("retrying");
    }
    scheduleRetry();
  }
}

// WEBRTC_START_MS after a live answer: playing, or at least decoding? Else go to FLV.
async function checkStarted(mine) {
  startTimer = null;
  if (pc !== mine || playedPc === mine) return;
  const s = await stats().catch(() => ({ framesDecoded: 0 }));
  if (pc !== mine || playedPc === mine) return;
  if (s.framesDecoded > 0) {
    playedPc = mine; // decoding: the element may just be slow to report "playing"
    return;
  }
  useFlv(`WebRTC did not play within ${WEBRTC_START_MS / 1000} s`);
}

// ---- HTTP-FLV ------------------------------------------------------------------------------

// Switch this page to FLV for good.
function useFlv(why) {
  clearTimeout(retryTimer);
  retryTimer = null;
  dropConnection();
  flvReason = why;
  setTransport("flv", why);
  startFlv();
}

// The FLV URL for this attempt, asked afresh each time: the playback plan's carries a ticket
// that starts a stream within a minute (a leaked link soon stops working). Without a plan
// endpoint, this server's URL with the token (a server started with --flv-plain-token).
// null: no plan yet (the room is not live), so wait and ask again.
async function flvStreamUrl() {
  const plan = await playbackPlan();
  if (plan && plan.flv_url) return plan.flv_url;
  if (!planMissing) return null;
  return withToken(`/live/${encodeURIComponent(params.room)}.flv`, params.token);
}

function stopFlv() {
  const old = flv;
  flv = null;
  if (old) old.stop();
  els.video.removeAttribute("src");
  els.video.load();
}

async function startFlv() {
  retryTimer = null;
  let mpegts;
  try {
    mpegts = await loadMpegts();
  } catch (e) {
    showError(e);
    setState("error");
    return;
  }
  if (!flvSupported(mpegts)) {
    showError(new Error("this browser can play neither WebRTC nor HTTP-FLV (no Media Source Extensions)"));
    setState("error");
    return;
  }
  if (state !== "waiting" && state !== "left" && state !== "retrying") setState("connecting");
  const url = await flvStreamUrl();
  if (transport !== "flv" || flv) return; // the page moved on while the plan was on its way
  if (!url && planRefusal) { // retrying cannot fix a token that may not watch
    showError(planRefusal);
    setState("error");
    return;
  }
  if (!url) {
    if (state !== "left") setState("waiting");
    retryTimer = setTimeout(startFlv, RETRY_MS);
    return;
  }
  const mine = playFlv(mpegts, els.video, url, (err) => flvEnded(mine, err));
  flv = mine;
  els.video.muted = muted;
}

// The FLV session ended: err null = the stream ended (anchor left, or this reader was dropped).
async function flvEnded(mine, err) {
  if (flv !== mine) return;
  stopFlv();
  const status = err && err.status;
  if (!err) {
    setState(state === "playing" ? "left" : "retrying");
  } else if (status === 503 || status === 404) {
    // 503 not_live (Retry-After: 2): the room exists but its anchor is not live or has not sent
    // a keyframe yet; 404: no such room on this node yet. Either way the anchor may still come.
    showError(null);
    if (state !== "left") setState("waiting");
  } else if (status === 400 || status === 401 || status === 403) {
    const refusal = await flvRefusal(mine.url, status);
    if (refusal.code !== "ticket_expired") { // a new ticket fixes that; nothing fixes a bad token
      showError(refusal);
      setState("error");
      return;
    }
  } else {
    if (err.kind === "MediaError") showError(new Error(`HTTP-FLV: ${err.detail}: ${err.message}`));
    setState(state === "playing" ? "left" : "retrying");
  }
  retryTimer = setTimeout(startFlv, RETRY_MS);
}

// mpegts.js reports only the status of a refused request: ask again for the JSON error body.
async function flvRefusal(url, status) {
  const err = new Error(`HTTP-FLV refused: HTTP ${status}`);
  err.code = "http_" + status;
  try {
    const resp = await fetch(url, { cache: "no-store" });
    const body = await resp.json();
    if (body && body.error) {
      err.message = body.error.message || err.message;
      err.code = body.error.code || err.code;
    }
  } catch { /* keep the status */ }
  return err;
}

// Video stats of the main tile (#video), for tests and the debug overlay.
async function stats() {
  const out = { framesDecoded: 0, packetsLost: 0, frameWidth: 0, frameHeight: 0 };
  if (flv) {
    const s = flv.stats();
    return { ...out, framesDecoded: s.decodedFrames, frameWidth: s.width, frameHeight: s.height };
  }
  if (!pc) return out;
  const src = els.video.srcObject;
  const mainTrack = src && src.getVideoTracks()[0];
  let pick = null;
  (await pc.getStats()).forEach((r) => {
    if (r.type !== "inbound-rtp" || (r.kind || r.mediaType) !== "video") return;
    if (!pick || (mainTrack && r.trackIdentifier === mainTrack.id)) pick = r;
  });
  if (pick) {
    for (const k of Object.keys(out)) out[k] = pick[k] || 0;
  }
  return out;
}

// Where the anchor's frame on screen is in the room's media (media_sync.js): its FLV
// timestamp on FLV, its RTP timestamp on WebRTC; null when unknown.
function frameClock(metadata) {
  if (transport === "flv") {
    const ms = flv ? flv.flvMs(metadata.mediaTime) : null;
    return ms === null ? null : { flvMs: ms };
  }
  return Number.isFinite(metadata.rtpTimestamp) ? { rtp: metadata.rtpTimestamp } : null;
}

function main() {
  try {
    params = pageParams();
  } catch (e) {
    showError(e);
    setState("error");
    return;
  }
  els.room.textContent = params.room || "–";
  // co-hosts beside the anchor (side_by_side) or inset over it (pip)
  els.stage.dataset.layout = params.query.get("layout") === "pip" ? "pip" : "side_by_side";
  els.unmute.addEventListener("click", toggleMute);
  watchFrames(els.video, frameClock); // commerce cards wait for the anchor's frame
  els.video.addEventListener("playing", () => {
    if (pc) playedPc = pc;
    if (flv) showError(null);
    if (pc || flv) setState("playing");
  });
  window.addEventListener("pagehide", () => {
    if (resource) teardown(resource, params.token);
    if (flv) flv.stop();
  });
  if (!params.room || !params.token) {
    showError(new Error("missing ?room=…&token=… in the page URL"));
    setState("error");
    return;
  }
  const forced = (params.query.get("transport") || "").toLowerCase();
  if (forced === "flv") {
    fallback = false;
    useFlv("?transport=flv");
  } else if (typeof window.RTCPeerConnection !== "function") {
    useFlv("this browser has no WebRTC");
  } else {
    fallback = forced !== "webrtc" && forced !== "whep";
    connect();
  }
}

main();
