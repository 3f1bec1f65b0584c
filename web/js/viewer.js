// Viewer: WHEP playback into #stage (one tile per remote stream; the first is #video), with retries.
import { negotiate, teardown, pageParams } from "./whip.js";

const RETRY_MS = 2000;
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
  unmute: $("unmute"), room: $("room"), overlay: $("overlay") };

let params;
let pc = null;
let resource = null;
let retryTimer = null;
let state = "connecting";
let muted = true;
const media = new Map(); // remote stream id -> <video> (tile) or <audio> (audio-only stream)
const synthetic = new MediaStream(); // tracks that arrive without a stream id

window.shopcast = {
  get pc() { return pc; },
  get state() { return state; },
  stats,
};

function setState(key) {
  state = key;
  els.state.textContent = STATES[key] || key;
  els.state.dataset.state = key;
  els.overlay.textContent = STATES[key] || key;
  els.overlay.hidden = key === "playing";
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
  els.stage.dataset.tiles = String(Math.max(1, els.stage.querySelectorAll(".tile").length));
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
      el = used ? newTile() : els.video;
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
  for (const t of synthetic.getTracks()) synthetic.removeTrack(t);
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
  pc = null;
  resource = null;
  if (old) old.close();
  if (res) teardown(res, params.token);
  clearMedia();
}

function scheduleRetry() {
  clearTimeout(retryTimer);
  retryTimer = setTimeout(connect, RETRY_MS);
}

async function connect() {
  retryTimer = null;
  const mine = new RTCPeerConnection({ iceServers: params.iceServers });
  pc = mine;
  mine.addTransceiver("video", { direction: "recvonly" });
  mine.addTransceiver("audio", { direction: "recvonly" });
  mine.addEventListener("track", (ev) => { if (pc === mine) attach(ev); });
  const lost = () => {
    if (pc !== mine) return;
    dropConnection();
    setState(state === "playing" ? "left" : "retrying");
    scheduleRetry();
  };
  mine.addEventListener("connectionstatechange", () => {
    const s = mine.connectionState;
    if (s === "closed" || s === "failed" || s === "disconnected") lost();
  });
  if (state !== "waiting" && state !== "left" && state !== "retrying") setState("connecting");
  try {
    const res = await negotiate("/whep/" + encodeURIComponent(params.room), params.token, mine);
    if (pc !== mine) { teardown(res.resource, params.token); return; }
    resource = res.resource;
    showError(null);
    // The server's DTLS close_notify shows here at once; connectionState lags by ICE consent (~5 s).
    const dtls = mine.getReceivers()[0] && mine.getReceivers()[0].transport;
    if (dtls) dtls.addEventListener("statechange", () => { if (dtls.state === "closed") lost(); });
  } catch (e) {
    if (pc !== mine) return;
    dropConnection();
    if (e.status === 404 && e.code === "not_live") {
      showError(null);
      if (state !== "left") setState("waiting"); // after a leave, keep saying so until playing again
    } else if (e.status === 400 || e.status === 401 || e.status === 403) {
      showError(e); // retrying cannot fix a bad token or a rejected offer
      setState("error");
      return;
    } else {
      showError(e);
      setState("retrying");
    }
    scheduleRetry();
  }
}

// Video stats of the main tile (#video), for tests and the debug overlay.
async function stats() {
  const out = { framesDecoded: 0, packetsLost: 0, frameWidth: 0, frameHeight: 0 };
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

function main() {
  try {
    params = pageParams();
  } catch (e) {
    showError(e);
    setState("error");
    return;
  }
  els.room.textContent = params.room || "–";
  els.unmute.addEventListener("click", toggleMute);
  els.video.addEventListener("playing", () => { if (pc) setState("playing"); });
  window.addEventListener("pagehide", () => { if (resource) teardown(resource, params.token); });
  if (!params.room || !params.token) {
    showError(new Error("missing ?room=…&token=… in the page URL"));
    setState("error");
    return;
  }
  connect();
}

main();
