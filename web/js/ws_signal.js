// Signaling over one WebSocket (`/ws`, see docs/api.md) instead of WHIP/WHEP's HTTP requests:
// pages opt in with ?signaling=ws and whip.js's negotiate()/teardown() go through here.
// The socket joins the room, answers publish/subscribe offers, resumes its session after a drop
// (the media legs live on meanwhile) and follows a `redirect` to the node that serves the room.
import { encode, decode } from "./msgpack.js";

const REQUEST_TIMEOUT_MS = 15000;
const PING_MS = 10000;
const RETRY_MS = 1000;
const STATUS = { // error codes as WHIP/WHEP's HTTP statuses, so pages handle both alike
  missing_token: 401, invalid_token: 401, token_expired: 401, missing_grant: 403,
  wrong_room: 403, banned: 403, not_invited: 403, no_anchor: 403, not_live: 404,
  not_found: 404, publisher_exists: 409, room_full: 409, no_node: 503,
};

function wsUrl(base, token) {
  const url = new URL("/ws", base || location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("token", token);
  return url.href;
}

export class WsSignal {
  constructor(room, token, base = "") {
    this.room = room;
    this.token = token;
    this.base = base;
    this.session = null;
    this.lastSeq = 0;
    this.ws = null;
    this.ready = null; // promise of a joined (or resumed) socket
    this.pending = new Map(); // cid -> {resolve, reject, timer}
    this.nextCid = 1;
    this.closed = false;
    this.pinger = null;
  }

  open() {
    if (!this.ready) this.ready = this.connect();
    return this.ready;
  }

  connect() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(wsUrl(this.base, this.token));
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      let joined = false;
      ws.onopen = () => {
        const first = this.session
          ? { type: "resume", session: this.session, after_seq: this.lastSeq }
          : { type: "join", room: this.room };
        ws.send(encode({ ...first, cid: "join" }));
      };
      ws.onmessage = (m) => {
        if (typeof m.data === "string") return;
        const data = decode(m.data);
        if (data.cid === "join") {
          if (data.type === "joined" || data.type === "resumed") {
            this.session = data.session;
            joined = true;
            clearInterval(this.pinger);
            this.pinger = setInterval(() => this.request({ type: "ping" }).catch(() => {}), PING_MS);
            resolve(this);
          } else {
            this.session = null; // expired: the next attempt joins afresh
            reject(this.error(data));
          }
          return;
        }
        if (data.type === "resync") this.lastSeq = 0; // the room's seq started again
        else if (typeof data.seq === "number") this.lastSeq = Math.max(this.lastSeq, data.seq);
        const waiter = data.cid && this.pending.get(data.cid);
        if (waiter) {
          clearTimeout(waiter.timer);
          this.pending.delete(data.cid);
          waiter.resolve(data);
        }
      };
      ws.onclose = () => {
        clearInterval(this.pinger);
        if (this.ws !== ws) return;
        this.ws = null;
        if (!joined) { reject(new Error("signaling socket closed")); return; }
        for (const w of this.pending.values()) { clearTimeout(w.timer); w.reject(new Error("socket lost")); }
        this.pending.clear();
        if (!this.closed) { // resume: the legs wait on the server for a while
          this.ready = new Promise((r) => setTimeout(r, RETRY_MS)).then(() => this.connect());
          this.ready.catch(() => {});
        }
      };
    });
  }

  error(reply) {
    const err = new Error(reply.message || reply.code || "signaling error");
    err.code = reply.code;
    err.status = STATUS[reply.code] || 400;
    return err;
  }

  async request(message) {
    await this.open();
    const cid = "s" + this.nextCid++;
    return new Promise((resolve, reject) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) { reject(new Error("not connected")); return; }
      const timer = setTimeout(() => { this.pending.delete(cid); reject(new Error("no reply")); },
        REQUEST_TIMEOUT_MS);
      this.pending.set(cid, { resolve, reject, timer });
      this.ws.send(encode({ ...message, cid }));
    });
  }

  // publish or subscribe: the offer in, the answer (or a redirect to the room's node) back.
  async negotiate(kind, sdp) {
    const reply = await this.request({ type: kind, sdp });
    if (reply.type === "redirect") {
      const there = new WsSignal(this.room, this.token, reply.url);
      this.close();
      return there.negotiate(kind, sdp);
    }
    if (reply.type === "error") throw this.error(reply);
    return { signal: this, leg: reply.leg, answer: reply.sdp };
  }

  async end(leg) {
    try {
      await this.request({ type: "close", leg });
      return true;
    } catch {
      return false;
    }
  }

  close() {
    this.closed = true;
    clearInterval(this.pinger);
    if (this.ws) this.ws.close();
  }
}
