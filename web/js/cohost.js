// Co-host page: watch the anchor while waiting; when the anchor's invitation arrives (a `cohost`
// event, or `state.cohosts` for an invitation sent before this page opened), accept and publish
// over WHIP, or decline. The token carries `cohost` (publish beside an anchor) and `subscribe`
// (watch, room events). ?autojoin=1 accepts an invitation as soon as it arrives.
import { pageParams } from "./whip.js";
import { openCamera, publish, teardown } from "./publish.js";
import { CallStage } from "./stage.js";
import { RoomEvents, tokenClaims } from "./room_events.js";

const $ = (id) => document.getElementById(id);
const els = {
  preview: $("preview"), accept: $("accept"), decline: $("decline"), leave: $("leave"),
  state: $("state"), error: $("error"), info: $("info"), room: $("room"), stage: $("stage"),
  badge: $("live-badge"),
};

let params;
let me = "";
let camera = null;
let events = null;
let others = null;   // CallStage: the anchor and other co-hosts
let pc = null;       // our publishing connection while on stage
let resource = null;
let state = "waiting"; // waiting | invited | joining | on_stage | declined | removed | error

window.shopcast = {
  get state() { return state; },
  get pc() { return pc; },
  get others() { return others ? others.playing() : []; },
};

const LABELS = {
  waiting: "waiting for an invitation", invited: "invited", joining: "joining",
  on_stage: "on stage", declined: "declined", removed: "removed by the anchor", error: "error",
};

function setState(s) {
  state = s;
  els.state.textContent = LABELS[s] || s;
  els.state.dataset.state = s;
  els.badge.hidden = s !== "on_stage";
  els.accept.disabled = s !== "invited" || !camera;
  els.decline.disabled = s !== "invited";
  els.leave.disabled = s !== "on_stage" && s !== "joining";
}

function showError(err) {
  const text = err ? (err.code ? `${err.message} (${err.code})` : String(err.message || err)) : "";
  els.error.textContent = text;
  els.error.hidden = !text;
  if (err) console.error("shopcast:", err);
}

function invited(by) {
  if (state === "on_stage" || state === "joining") return;
  els.info.textContent = `${by || "The anchor"} invites you to co-host.`;
  setState("invited");
  if (params.query.get("autojoin") === "1") accept();
}

function onEvent(ev) {
  if (ev.type === "state") {
    const mine = (ev.cohosts || []).find((c) => c.identity === me);
    if (mine && state === "waiting") invited(mine.invited_by);
  } else if (ev.type === "cohost" && ev.identity === me) {
    if (ev.action === "invited") invited(ev.by);
    if (ev.action === "removed") { leave("removed"); }
  }
}

async function accept() {
  showError(null);
  setState("joining");
  const reply = await events.request({ type: "cohost_accept" }).catch((e) => ({ type: "error", message: e.message }));
  if (reply.type === "error") {
    showError(reply);
    setState("waiting");
    return;
  }
  const mine = new RTCPeerConnection({ iceServers: params.iceServers });
  pc = mine;
  mine.addEventListener("connectionstatechange", () => {
    if (pc !== mine) return;
    if (mine.connectionState === "connected") setState("on_stage");
    if (mine.connectionState === "failed") { showError(new Error("connection failed")); leave(); }
  });
  try {
    const res = await publish(mine, params.room, params.token, camera, () => {
      if (pc === mine) leave("removed");
    });
    if (pc !== mine) { teardown(res, params.token); return; }
    resource = res;
  } catch (e) {
    if (pc !== mine) return;
    showError(e);
    leave("waiting");
  }
}

async function decline() {
  const reply = await events.request({ type: "cohost_decline" }).catch((e) => ({ type: "error", message: e.message }));
  if (reply.type === "error") showError(reply);
  setState("declined");
}

function leave(next = "waiting") {
  const old = pc, res = resource;
  pc = null;
  resource = null;
  if (old) old.close();
  if (res) teardown(res, params.token);
  setState(next);
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
    return;
  }
  me = tokenClaims(params.token).sub || "";
  els.accept.addEventListener("click", accept);
  els.decline.addEventListener("click", decline);
  els.leave.addEventListener("click", () => leave());
  window.addEventListener("pagehide", () => { if (resource) teardown(resource, params.token); });
  try {
    camera = await openCamera(params.query);
    els.preview.srcObject = camera.stream;
  } catch (e) {
    showError(new Error("camera/microphone unavailable: " + (e.message || e.name)));
  }
  setState("waiting");
  others = new CallStage(els.stage, params.room, params.token, params.iceServers);
  others.start().catch(showError);
  events = new RoomEvents(params.room, params.token, { onEvent });
  events.connect();
}

main();
