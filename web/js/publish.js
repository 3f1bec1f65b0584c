// Publishing a camera + mic over WHIP, shared by the anchor and co-host pages:
// H.264 preferred (Constrained Baseline first), Opus, a bitrate cap, maintain-resolution.
import { negotiate, teardown } from "./whip.js";
import { withVideoTarget } from "./network_quality.js";

export async function openCamera(query) {
  const num = (name, dflt) => {
    const v = parseInt(query.get(name), 10);
    return Number.isFinite(v) && v > 0 ? v : dflt;
  };
  const video = {
    width: { ideal: num("width", 640) },
    height: { ideal: num("height", 360) },
    frameRate: { ideal: num("fps", 30) },
  };
  const stream = await navigator.mediaDevices.getUserMedia({ video, audio: true });
  const [vt] = stream.getVideoTracks();
  if (vt) vt.contentHint = "detail"; // products up close: keep resolution, drop frames if needed
  const low = vt && query.get("layers") === "2" ? await lowLayer(vt) : null;
  return { stream, maxBitrate: num("kbps", 800) * 1000, low };
}

// ?layers=2: a 320x180 copy of the camera, sent as a second video track after the first. The
// server takes a publisher's second video section as its low layer, for viewers on weak links.
const LOW_LAYER = { width: 320, height: 180, maxBitrate: 150_000 };

async function lowLayer(camera) {
  const low = camera.clone();
  try {
    await low.applyConstraints({ width: { ideal: LOW_LAYER.width },
      height: { ideal: LOW_LAYER.height } });
  } catch (e) {
    console.warn("the low layer keeps the camera's size; its encoding scales it down", e);
  }
  return low;
}

// H.264 first (Constrained Baseline 42e01f, packetization-mode=1 best), then everything else.
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

async function tuneVideoSender(sender, maxBitrate) {
  const p = sender.getParameters();
  if (!p.encodings || !p.encodings.length) p.encodings = [{}];
  p.encodings[0].maxBitrate = maxBitrate;
  p.degradationPreference = "maintain-resolution";
  try {
    await sender.setParameters(p);
  } catch (e) {
    // Older browsers reject degradationPreference; keep the bitrate cap at least.
    delete p.degradationPreference;
    try { await sender.setParameters(p); } catch (e2) { console.warn("setParameters failed", e2); }
  }
}

// Publish `camera` ({stream, maxBitrate, low}) on `pc` to /whip/{room}. Returns the WHIP resource.
// onEnded fires once when the server ends the session (kick, room closed: DTLS close_notify).
export async function publish(pc, room, token, camera, onEnded) {
  let video = null;
  const { stream, maxBitrate } = camera;
  for (const track of [...stream.getVideoTracks(), ...stream.getAudioTracks()]) {
    const init = { direction: "sendonly", streams: [stream] };
    if (track.kind === "video") init.sendEncodings = [{ maxBitrate }];
    const t = pc.addTransceiver(track, init);
    preferCodecs(t, track.kind);
    if (track.kind === "video") video = t;
  }
  let low = null; // after the camera's video: the second video section is the low layer
  if (camera.low) {
    const height = camera.low.getSettings().height || LOW_LAYER.height;
    low = pc.addTransceiver(camera.low, { direction: "sendonly", sendEncodings: [{
      maxBitrate: LOW_LAYER.maxBitrate,
      scaleResolutionDownBy: Math.max(1, height / LOW_LAYER.height) }] });
    preferCodecs(low, "video");
  }
  // the offer names the encoder's target (b=TIAS), which the server scores the uplink against
  const res = await negotiate("/whip/" + encodeURIComponent(room), token, pc,
    (sdp) => withVideoTarget(sdp, maxBitrate));
  if (video) await tuneVideoSender(video.sender, maxBitrate);
  if (low) await tuneVideoSender(low.sender, LOW_LAYER.maxBitrate);
  const dtls = pc.getSenders()[0] && pc.getSenders()[0].transport;
  if (dtls && onEnded) {
    dtls.addEventListener("statechange", () => { if (dtls.state === "closed") onEnded(); });
  }
  return res.resource;
}

export { teardown };
