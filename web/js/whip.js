// WHIP / WHEP client exchange (RFC 9725 and the WHEP draft), shared by the anchor and viewer pages.
// The server does not trickle ICE: we send one complete offer and get one complete answer.

import { WsSignal } from "./ws_signal.js";

const ICE_GATHERING_CAP_MS = 3000;
let signal = null; // WsSignal when the page says ?signaling=ws (docs/api.md: /ws)
const wsLegs = new Map(); // "ws:<leg>" resource -> the WsSignal that opened it

// Read page options from the query string. `ice` is optional JSON for RTCPeerConnection.iceServers;
// without it we use no ICE servers at all (never a default public STUN server).
export function pageParams() {
  const q = new URLSearchParams(location.search);
  let iceServers = [];
  if (q.get("ice")) {
    try {
      const parsed = JSON.parse(q.get("ice"));
      iceServers = Array.isArray(parsed) ? parsed : (parsed.iceServers || []);
    } catch (e) {
      throw new Error("bad ice= parameter (expected JSON): " + e.message);
    }
  }
  const params = { room: q.get("room") || "", token: q.get("token") || "", iceServers, query: q };
  if (q.get("signaling") === "ws" && params.room && params.token && !signal) {
    signal = new WsSignal(params.room, params.token);
  }
  return params;
}

function iceGatheringComplete(pc, capMs = ICE_GATHERING_CAP_MS) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => { if (pc.iceGatheringState === "complete") done(); };
    const timer = setTimeout(done, capMs); // send whatever candidates we have by then
    pc.addEventListener("icegatheringstatechange", check);
  });
}

// Turn a non-201 response into an Error carrying the server's JSON error code and the HTTP status.
async function httpError(resp) {
  let code = "http_" + resp.status;
  let message = resp.statusText || ("HTTP " + resp.status);
  try {
    const body = await resp.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch { /* not JSON: keep the status line */ }
  const err = new Error(message);
  err.code = code;
  err.status = resp.status;
  return err;
}

// Offer -> POST -> answer. Returns {resource, answer}; resource is an absolute URL for teardown().
// describe(sdp): the offer text as sent (the local description itself stays as it is).
export async function negotiate(url, token, pc, describe = (sdp) => sdp) {
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  await iceGatheringComplete(pc);
  if (signal) return negotiateOverSocket(url, pc, describe);

  const resp = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/sdp", "Authorization": "Bearer " + token },
    body: describe(pc.localDescription.sdp),
  });
  if (resp.status !== 201) throw await httpError(resp);

  const answer = await resp.text();
  const location = resp.headers.get("Location");
  // Location may be relative; resolve it against the URL that answered (after any 307 redirect).
  const resource = location ? new URL(location, resp.url || url).href : null;
  await pc.setRemoteDescription({ type: "answer", sdp: answer });
  return { resource, answer };
}

// The same exchange over /ws: "/whip/..." publishes, "/whep/..." subscribes.
async function negotiateOverSocket(url, pc, describe) {
  const kind = new URL(url, location.href).pathname.startsWith("/whip/") ? "publish" : "subscribe";
  const res = await signal.negotiate(kind, describe(pc.localDescription.sdp));
  signal = res.signal; // after a redirect: the socket on the room's node
  const resource = "ws:" + res.leg;
  wsLegs.set(resource, res.signal);
  await pc.setRemoteDescription({ type: "answer", sdp: res.answer });
  return { resource, answer: res.answer };
}

// DELETE the session resource. Never throws: teardown is best effort (the server may be gone already).
export async function teardown(resourceUrl, token) {
  if (!resourceUrl) return false;
  if (wsLegs.has(resourceUrl)) {
    const owner = wsLegs.get(resourceUrl);
    wsLegs.delete(resourceUrl);
    return owner.end(resourceUrl.slice(3));
  }
  try {
    const resp = await fetch(resourceUrl, {
      method: "DELETE",
      headers: { "Authorization": "Bearer " + token },
      keepalive: true, // lets it finish during page unload
    });
    return resp.ok;
  } catch {
    return false;
  }
}
