// The other publishers of a call, over WHEP, as tiles in a stage element: the anchor page shows
// its co-hosts, the co-host page the anchor (and any other co-host). The offer carries one video
// + audio pair per publisher slot; the server sends each slot as its own stream and never sends
// a participant its own tracks. A tile shows while its video decodes frames (checked from the
// connection's stats, which keep counting whether or not the tile is visible).
import { negotiate, teardown } from "./whip.js";

export const SLOTS = 4; // the server's default --max-publishers; extra sections answer inactive
const RETRY_MS = 2000;
const STALL_MS = 2000; // a tile whose frames stopped this long ago hides (its publisher left)
const CHECK_MS = 500;

// Shows a tile only while its video track decodes frames (a slot with no publisher, or one
// whose publisher left, stays hidden). check() reads the connection's stats.
export class TileWatch {
  constructor() {
    this.entries = new Map(); // track id -> {tile, frames, changedAt, playing}
  }

  add(trackId, tile) {
    tile.hidden = true;
    this.entries.set(trackId, { tile, frames: 0, changedAt: 0, playing: false });
  }

  playing(trackId) { const e = this.entries.get(trackId); return !!e && e.playing; }

  frames(trackId) { const e = this.entries.get(trackId); return e ? e.frames : 0; }

  // Returns true when a tile appeared or disappeared.
  async check(pc) {
    const report = await pc.getStats().catch(() => null);
    if (!report) return false;
    const now = performance.now();
    let changed = false;
    report.forEach((s) => {
      if (s.type !== "inbound-rtp" || s.kind !== "video") return;
      const e = this.entries.get(s.trackIdentifier);
      if (!e) return;
      const frames = s.framesDecoded || 0;
      if (frames !== e.frames) { e.frames = frames; e.changedAt = now; }
      const playing = frames > 0 && now - e.changedAt < STALL_MS;
      if (playing !== e.playing) { e.playing = playing; e.tile.hidden = !playing; changed = true; }
    });
    return changed;
  }
}

export class CallStage {
  constructor(stage, room, token, iceServers, { onChange } = {}) {
    this.stage = stage;
    this.room = room;
    this.token = token;
    this.iceServers = iceServers;
    this.onChange = onChange || (() => {});
    this.pc = null;
    this.resource = null;
    this.tiles = new Map(); // track id -> {tile, video}
    this.watch = new TileWatch();
    this.timer = null;
    this.retry = null;
    this.stopped = false;
  }

  async start() {
    if (this.stopped) return;
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.pc = pc;
    for (let i = 0; i < SLOTS; i++) {
      pc.addTransceiver("video", { direction: "recvonly" });
      pc.addTransceiver("audio", { direction: "recvonly" });
    }
    pc.addEventListener("track", (ev) => { if (this.pc === pc) this.addTile(ev); });
    pc.addEventListener("connectionstatechange", () => {
      if (this.pc === pc && ["failed", "closed"].includes(pc.connectionState)) this.restart();
    });
    try {
      const res = await negotiate("/whep/" + encodeURIComponent(this.room), this.token, pc);
      if (this.pc !== pc) { teardown(res.resource, this.token); return; }
      this.resource = res.resource;
      this.timer = setInterval(() => this.check(pc), CHECK_MS);
    } catch (e) {
      if (this.pc !== pc) return;
      if (e.status === 401 || e.status === 403) { this.stop(); throw e; }
      this.restart(); // not live yet (404 not_live) or a transient failure
    }
  }

  addTile(ev) {
    if (ev.track.kind !== "video") return; // audio rides in the same stream as its video
    const tile = document.createElement("div");
    tile.className = "tile remote";
    tile.hidden = true;
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    video.muted = true; // autoplay first; unmuted below when the page may play sound
    video.srcObject = ev.streams[0] || new MediaStream([ev.track]);
    tile.append(video);
    this.stage.append(tile);
    video.muted = false;
    video.play().catch(() => { video.muted = true; video.play().catch(() => {}); });
    this.tiles.set(ev.track.id, { tile, video });
    this.watch.add(ev.track.id, tile);
  }

  async check(pc) {
    if (this.pc === pc && await this.watch.check(pc) && this.pc === pc) this.layout();
  }

  layout() {
    const visible = this.stage.querySelectorAll(".tile:not([hidden])").length;
    this.stage.dataset.tiles = String(Math.max(1, visible));
    this.onChange(this.playing());
  }

  // What a test (or the page) reads: frames decoded per remote tile that is playing.
  playing() {
    return [...this.tiles.entries()].filter(([id]) => this.watch.playing(id)).map(([id, t]) => ({
      frames: this.watch.frames(id), width: t.video.videoWidth, height: t.video.videoHeight,
    }));
  }

  drop() {
    const pc = this.pc, res = this.resource;
    this.pc = null;
    this.resource = null;
    clearInterval(this.timer);
    this.timer = null;
    if (pc) pc.close();
    if (res) teardown(res, this.token);
    for (const t of this.tiles.values()) { t.video.srcObject = null; t.tile.remove(); }
    this.tiles.clear();
    this.watch = new TileWatch();
    this.layout();
  }

  restart() {
    this.drop();
    clearTimeout(this.retry);
    if (!this.stopped) this.retry = setTimeout(() => this.start().catch(() => {}), RETRY_MS);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retry);
    this.drop();
  }
}
