// Anchor console: camera + mic preview, publish over WHIP (H.264 preferred, Opus), stop.
import { negotiate, teardown, pageParams } from "./whip.js";

const $ = (id) => document.getElementById(id);
const els = {
  preview: $("preview"), golive: $("golive"), stop: $("stop"), state: $("state"),
  error: $("error"), info: $("info"), room: $("room"), badge: $("live-badge"),
};

let params;
let stream = null;      // local camera + mic
let pc = null;          // publishing peer connection
let resource = null;    // WHIP resource URL for DELETE
let state = "new";      // what #state shows; the pc's connectionState while publishing

window.shopcast = {
  get pc() { return pc; },
  get state() { return state; },
  get resource() { return resource; },
};

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

function intParam(name, dflt) {
  const v = parseInt(params.query.get(name), 10);
  return Number.isFinite(v) && v > 0 ? v : dflt;
}

async function startPreview() {
  const video = {
    width: { ideal: intParam("width", 640) },
    height: { ideal: intParam("height", 360) },
    frameRate: { ideal: intParam("fps", 30) },
  };
  stream = await navigator.mediaDevices.getUserMedia({ video, audio: true });
  const [vt] = stream.getVideoTracks();
  if (vt) vt.contentHint = "detail"; // products up close: keep resolution, drop frames if needed
  els.preview.srcObject = stream;
  const s = vt && vt.getSettings();
  if (s) els.info.textContent = `Camera ${s.width}×${s.height} @ ${Math.round(s.frameRate || 0)} fps`;
}

// H.264 first (Constrained Baseline 42e01f, packetization-mode=1 best), then everything else as fallback.
function h264Rank(c) {
  if (c.mimeType.toLowerCase() !== "video/h264") return 9;
  const fmtp = (c.sdpFmtpLine || "").toLowerCase();
  const pm1 = fmtp.includes("packetization-mode=1");
  if (fmtp.includes("profile-level-id=42e01f") && pm1) return 0;
  if (/profile-level-id=42[0-9a-f]{2}1f/.test(fmtp) && pm1) return 1; // other baseline level 3.1
  if (pm1) return 2;
  return 3;
}

function preferCodecs(transceiver, kind) {
  if (!transceiver.setCodecPreferences || !RTCRtpSender.getCapabilities) return;
  const caps = RTCRtpSender.getCapabilities(kind);
  if (!caps) return;
  let codecs = caps.codecs.slice();
  if (kind === "video") {
    codecs = codecs.map((c, i) => [h264Rank(c), i, c]).sort((a, b) => a[0] - b[0] || a[1] - b[1])
      .map((x) => x[2]);
  } else {
    const opus = (c) => c.mimeType.toLowerCase() === "audio/opus";
    codecs = codecs.filter(opus).concat(codecs.filter((c) => !opus(c)));
  }
  try {
    transceiver.setCodecPreferences(codecs);
  } catch (e) {
    console.warn("setCodecPreferences failed; using browser defaults", e);
  }
}

const maxBitrate = () => intParam("kbps", 800) * 1000;

async function tuneVideoSender(sender) {
  const p = sender.getParameters();
  if (!p.encodings || !p.encodings.length) p.encodings = [{}];
  p.encodings[0].maxBitrate = maxBitrate();
  p.degradationPreference = "maintain-resolution";
  try {
    await sender.setParameters(p);
  } catch (e) {
    // Older browsers reject degradationPreference; keep the bitrate cap at least.
    delete p.degradationPreference;
    try { await sender.setParameters(p); } catch (e2) { console.warn("setParameters failed", e2); }
  }
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
    let video = null;
    for (const track of [...stream.getVideoTracks(), ...stream.getAudioTracks()]) {
      const init = { direction: "sendonly", streams: [stream] };
      if (track.kind === "video") init.sendEncodings = [{ maxBitrate: maxBitrate() }];
      const t = mine.addTransceiver(track, init);
      preferCodecs(t, track.kind);
      if (track.kind === "video") video = t;
    }
    const url = "/whip/" + encodeURIComponent(params.room);
    const res = await negotiate(url, params.token, mine);
    if (pc !== mine) { teardown(res.resource, params.token); return; } // stopped meanwhile
    resource = res.resource;
    if (video) await tuneVideoSender(video.sender);
    // The server ending the session (kick, room closed) arrives as DTLS close_notify.
    const dtls = mine.getSenders()[0] && mine.getSenders()[0].transport;
    if (dtls) {
      dtls.addEventListener("statechange", () => {
        if (pc !== mine || dtls.state !== "closed") return;
        showError(new Error("the server ended the broadcast"));
        stop("closed");
      });
    }
  } catch (e) {
    if (pc === mine) {
      showError(e);
      await stop();
    }
  }
}

async function stop(finalState = "closed") {
  const old = pc, res = resource;
  pc = null;
  resource = null;
  els.stop.disabled = true;
  if (old) old.close();
  setState(finalState);
  els.golive.disabled = !stream;
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
  window.addEventListener("pagehide", () => { if (resource) teardown(resource, params.token); });
  try {
    await startPreview();
  } catch (e) {
    showError(new Error("camera/microphone unavailable: " + (e.message || e.name)));
    return;
  }
  els.golive.disabled = !(params.room && params.token);
  if (params.query.get("autostart") === "1" && !els.golive.disabled) els.golive.click();
}

main();
