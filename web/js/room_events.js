// Room events over /ws/events/{room}: msgpack frames, `state` first, then events in seq order.
// Reconnects with after_seq = the last seq seen (and its epoch), so nothing is missed or
// repeated; a close with code 4003 (banned) does not reconnect. Replies (order, ack, error)
// carry our `cid`. A `resync` means the room's seq started again (the server lost it): the
// last seq is dropped, every later event is taken, and a fresh `state` is asked for.
import { encode, decode } from "./msgpack.js";

const REPLY_TYPES = new Set(["order", "ack", "error"]);
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 5000;
const REQUEST_TIMEOUT_MS = 10000;

export function tokenClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return {};
  }
}

export function newKey() {
  if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID();
  return Date.now().toString(36) + Math.random().toString(36).slice(2);
}

export class RoomEvents {
  constructor(room, token, { onEvent, onStatus } = {}) {
    this.room = room;
    this.token = token;
    this.onEvent = onEvent || (() => {});
    this.onStatus = onStatus || (() => {});
    this.lastSeq = null;
    this.epoch = ""; // the epoch lastSeq counts in (from `state` or `resync`)
    this.ws = null;
    this.retryMs = RETRY_MIN_MS;
    this.pending = new Map(); // cid -> {resolve, timer}
    this.stopped = false;
    this.nextCid = 1;
  }

  url() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const q = new URLSearchParams({ token: this.token });
    if (this.lastSeq !== null) q.set("after_seq", String(this.lastSeq));
    if (this.lastSeq !== null && this.epoch) q.set("epoch", this.epoch);
    return `${proto}//${location.host}/ws/events/${encodeURIComponent(this.room)}?${q}`;
  }

  connect() {
    if (this.stopped) return;
    this.onStatus("connecting");
    const ws = new WebSocket(this.url());
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => { this.retryMs = RETRY_MIN_MS; this.onStatus("live"); };
    ws.onmessage = (m) => {
      if (typeof m.data === "string") return;
      let data;
      try { data = decode(m.data); } catch (e) { console.warn("shopcast: bad frame", e); return; }
      this.dispatch(data);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (ev.code === 4003) { this.stopped = true; this.onStatus("banned"); return; }
      this.onStatus("reconnecting");
      setTimeout(() => this.connect(), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
    };
  }

  dispatch(data) {
    if (data.type === "state") {
      this.lastSeq = data.seq;
      this.epoch = data.epoch || "";
    } else if (data.type === "resync") {
      const seen = { type: "resume", after_seq: this.lastSeq || 0, epoch: this.epoch };
      this.lastSeq = 0; // the new epoch counts from 1
      this.epoch = data.epoch;
      this.send(seen); // our epoch is not the room's: the reply is a fresh `state`
    } else if (REPLY_TYPES.has(data.type) || typeof data.seq !== "number") {
      const waiter = data.cid && this.pending.get(data.cid);
      if (waiter) {
        clearTimeout(waiter.timer);
        this.pending.delete(data.cid);
        waiter.resolve(data);
      }
    } else {
      if (this.lastSeq !== null && data.seq <= this.lastSeq) return; // already have it
      this.lastSeq = data.seq;
    }
    this.onEvent(data);
  }

  send(message) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(encode(message));
    return true;
  }

  // Send and wait for the reply carrying our cid (order, ack or error).
  request(message) {
    const cid = "c" + this.nextCid++;
    return new Promise((resolve, reject) => {
      if (!this.send({ ...message, cid })) { reject(new Error("not connected")); return; }
      const timer = setTimeout(() => {
        this.pending.delete(cid);
        reject(new Error("no reply"));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(cid, { resolve, timer });
    });
  }

  close() {
    this.stopped = true;
    if (this.ws) this.ws.close();
  }
}

// Text-only element builder: children are nodes or strings (set as text, never as HTML).
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

export function formatPrice(minor, currency) {
  try {
    const fmt = new Intl.NumberFormat(undefined, { style: "currency", currency });
    const digits = fmt.resolvedOptions().maximumFractionDigits;
    return fmt.format(minor / 10 ** digits);
  } catch {
    return `${(minor / 100).toFixed(2)} ${currency}`;
  }
}
