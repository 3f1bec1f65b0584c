// Anchor console: camera + mic preview, publish over WHIP (H.264 preferred, Opus), stop;
// invite co-hosts and see them beside the preview once they join. When the room is forbidden
// (a compliance stop: the server ends the broadcast and refuses Go live until it is lifted),
// #forbid shows the reason, from the room's events when the token may join them (subscribe,
// chat or admin) and from the refusal of Go live otherwise. The same events bring the uplink's
// score: #net-prompt gives the advice and a step down while it is low (network_quality.js).
import { pageParams } from "./whip.js";
import { RoomEvents, tokenClaims } from "./room_events.js";
import { openCamera, publish, teardown } from "./publish.js";
import { CallStage } from "./stage.js";
import { NetworkPrompt } from "./network_quality.js";

const $ = (id) => document.getElementById(id);
const els = {
  preview: $("preview"), golive: $("golive"), stop: $("stop"), state: $("state"),
  error: $("error"), info: $("info"), room: $("room"), badge: $("live-badge"),
  stage: $("stage"), cohostId: $("cohost-id"), invite: $("invite"), remove: $("remove"),
  cohostInfo: $("cohost-info"), forbid: $("forbid"),
  netPrompt: { banner: $("net-prompt"), text: $("net-prompt-text"), step: $("net-step-down"),
               auto: $("net-auto") },
};
const EVENT_GRANTS = ["subscribe", "chat", "admin"];

let params;
let camera = null;      // {stream, maxBitrate}: local camera + mic
let cohosts = null;     // CallStage: the co-hosts' tiles while live
let pc = null;          // publishing peer connection
let resource = null;    // WHIP resource URL for DELETE
let state = "new";      // what #state shows; the pc's connectionState while publishing
let forbid = null;      // {until, reason} while the room is forbidden
let prompt = null;      // NetworkPrompt: the uplink's score and advice

window.shopcast = {
  get pc() { return pc; },
  get state() { return state; },
  get resource() { return resource; },
  get cohosts() { return cohosts ? cohosts.playing() : []; },
  get forbid() { return forbid; },
  get networkQuality() {
    return prompt && { score: prompt.score, prompting: prompt.prompting, steps: prompt.steps };
  },
};

// The room's forbid (null: none): the banner says why and until when; Go live waits for it.
function showForbid(f) {
  forbid = f && f.until * 1000 > Date.now() ? { until: f.until, reason: f.reason } : null;
  els.forbid.hidden = !forbid;
  els.forbid.textContent = forbid
    ? `This room is forbidden until ${new Date(forbid.until * 1000).toLocaleString()}: ${forbid.reason}`
    : "";
  els.golive.disabled = Boolean(forbid) || Boolean(pc) || !camera;
}

function followForbid() {
  const grants = tokenClaims(params.token).grants || [];
  if (!grants.some((g) => EVENT_GRANTS.includes(g))) return;
  new RoomEvents(params.room, params.token, {
    onEvent: (ev) => {
      if (ev.type === "state") showForbid(ev.forbid || null);
      else if (ev.type === "room_forbidden") showForbid(ev);
      else if (ev.type === "forbid_lifted") showForbid(null);
      else if (prompt) prompt.onEvent(ev);
    },
  }).connect();
}

function setState(s) {
  state = s;
  els.state.textContent = s;
  els.state.dataset.state = s;
  els.badge.hidden = s !== "connected";
}

function showError(err) {
  const text = err ? (err.code ? `${err.message} (${err.code})` : String(err.message || err)) : "";
  els.error.textContent = text;
  els.error.hidden = !text;
  if (err) console.error("shopcast:", err);
}

async function goLive() {
  showError(null);
  els.golive.disabled = true;
  els.stop.disabled = false;
  const mine = new RTCPeerConnection({ iceServers: params.iceServers });
  pc = mine;
  setState("connecting");
  mine.addEventListener("connectionstatechange", () => {
    if (pc !== mine) return;
    setState(mine.connectionState);
    if (mine.connectionState === "failed") {
      showError(new Error("connection to the server failed"));
      stop("failed");
    }
  });
  try {
    const res = await publish(mine, params.room, params.token, camera, () => {
      if (pc !== mine) return;
      showError(new Error("the server ended the broadcast"));
      stop("closed");
    });
    if (pc !== mine) { teardown(res, params.token); return; } // stopped meanwhile
    resource = res;
    cohosts = new CallStage(els.stage, params.room, params.token, params.iceServers);
    cohosts.start().catch(showError); // co-hosts appear beside the preview as they join
    els.invite.disabled = els.remove.disabled = false;
  } catch (e) {
    if (pc === mine) {
      showError(e);
      await stop();
      if (e.code === "room_forbidden") { // the reason is in the message; until: the events'
        els.forbid.hidden = false;
        els.forbid.textContent = e.message;
      }
    }
  }
}

// Invite (or remove) a co-host by identity: REST with this page's token (publish grant).
async function cohostCall(method, identity) {
  showError(null);
  const base = `/api/v1/rooms/${encodeURIComponent(params.room)}/cohosts`;
  const url = method === "POST" ? base : `${base}/${encodeURIComponent(identity)}`;
  const resp = await fetch(url, {
    method,
    headers: { Authorization: "Bearer " + params.token, "Content-Type": "application/json" },
    body: method === "POST" ? JSON.stringify({ identity }) : undefined,
  });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error((body.error && body.error.message) || `HTTP ${resp.status}`);
    err.code = body.error && body.error.code;
    showError(err);
    return;
  }
  els.cohostInfo.textContent = method === "POST"
    ? `Invited ${identity}: they join from their co-host page.` : `Removed ${identity}.`;
}

async function stop(finalState = "closed") {
  const old = pc, res = resource;
  pc = null;
  resource = null;
  els.stop.disabled = true;
  els.invite.disabled = els.remove.disabled = true;
  if (cohosts) cohosts.stop();
  cohosts = null;
  if (old) old.close();
  setState(finalState);
  els.golive.disabled = !camera || Boolean(forbid);
  if (res) await teardown(res, params.token);
}

async function main() {
  try {
    params = pageParams();
  } catch (e) {
    showError(e);
    return;
  }
  els.room.textContent = params.room || "–";
  if (!params.room || !params.token) {
    showError(new Error("missing ?room=…&token=… in the page URL"));
  }
  els.golive.addEventListener("click", goLive);
  els.stop.addEventListener("click", () => stop());
  els.invite.addEventListener("click", () => {
    const id = els.cohostId.value.trim();
    if (id) cohostCall("POST", id);
  });
  els.remove.addEventListener("click", () => {
    const id = els.cohostId.value.trim();
    if (id) cohostCall("DELETE", id);
  });
  window.addEventListener("pagehide", () => { if (resource) teardown(resource, params.token); });
  prompt = new NetworkPrompt(els.netPrompt, tokenClaims(params.token || "").sub,
    () => (pc && pc.getSenders().find((s) => s.track && s.track.kind === "video")) || null,
    800_000);
  if (params.room && params.token) followForbid();
  try {
    camera = await openCamera(params.query);
    els.preview.srcObject = camera.stream;
    const [vt] = camera.stream.getVideoTracks();
    const s = vt && vt.getSettings();
    if (s) els.info.textContent = `Camera ${s.width}×${s.height} @ ${Math.round(s.frameRate || 0)} fps`;
  } catch (e) {
    showError(new Error("camera/microphone unavailable: " + (e.message || e.name)));
    return;
  }
  els.golive.disabled = !(params.room && params.token) || Boolean(forbid);
  if (params.query.get("autostart") === "1" && !els.golive.disabled) els.golive.click();
}

main();
