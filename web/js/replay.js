// Replay page: plays a recording with seeking and shows the product cards of the moment the
// video is at (the timeline route, on the recording's clock). A card's buy button works while
// its product is still on sale now (GET /rooms/{room}/sales), through the same order API as the
// live page (POST /orders with an Idempotency-Key). Server text is rendered with textContent only.
import { el, formatPrice, newKey } from "./room_events.js";
import { cardsAt, chatAt, saleState } from "./replay_timeline.js";

const SALE_POLL_MS = 5000;
const TIMELINE_POLL_MS = 5000;
const BUTTON_TEXT = { open: "Buy now", sold_out: "Sold out", ended: "Sale ended",
  not_on_sale: "Not on sale now" };

const q = new URLSearchParams(location.search);
const room = q.get("room") || "";
const recording = q.get("recording") || "";
const token = q.get("token") || "";
const video = document.getElementById("video");
const cardsRoot = document.getElementById("cards");
const note = document.getElementById("timeline-note");
const stateEl = document.getElementById("state");
const errorEl = document.getElementById("error");
const chatList = document.getElementById("chat-list");

let events = [];
let shown = "";            // the cards on screen, so a timeupdate that changes nothing is cheap
let shownChat = "";        // the same for the chat list
let liveSale = null;       // the room's sale now, from REST
let clockOffset = 0;       // server ms - local ms
const buying = new Set();  // skus with an order in flight
const orders = [];

window.shopcastReplay = {
  orders,
  get events() { return events; },
  get liveSale() { return liveSale; },
  cardsAt: (t) => cardsAt(events, t),
};

function setState(text) {
  stateEl.textContent = text;
  stateEl.dataset.state = text;
}

function fail(message) {
  errorEl.textContent = message;
  errorEl.hidden = false;
  setState("error");
}

async function api(path, options = {}) {
  const res = await fetch(`/api/v1${path}`, {
    ...options, headers: { Authorization: `Bearer ${token}`, ...(options.headers || {}) },
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const err = new Error((body.error && body.error.message) || `HTTP ${res.status}`);
    err.code = body.error && body.error.code;
    throw err;
  }
  return body;
}

function card({ product }) {
  const status = el("p", { class: "order-status", role: "status" });
  const buy = el("button", { class: "btn primary buy", type: "button", disabled: true,
    "data-sku": product.sku, text: BUTTON_TEXT.not_on_sale });
  buy.addEventListener("click", () => order(product.sku, status));
  const image = el("img", { alt: "", hidden: !product.image_url });
  if (product.image_url) image.src = product.image_url;
  return el("div", { class: "product-card", "data-sku": product.sku }, image,
    el("div", { class: "product-body" },
      el("h3", { class: "product-title", text: product.title }),
      el("p", { class: "price", text: formatPrice(product.price, product.currency) }),
      buy, status));
}

function render() {
  const cards = cardsAt(events, video.currentTime);
  const key = cards.map((c) => `${c.product.sku}@${c.since}`).join(" ");
  if (key !== shown) {
    shown = key;
    cardsRoot.replaceChildren(...cards.map(card));
    if (cards.length) checkSale();
  }
  renderButtons();
  renderChat();
}

function renderChat() {
  const said = chatAt(events, video.currentTime);
  const key = said.map((m) => m.id).join(" ");
  if (key === shownChat) return;
  shownChat = key;
  chatList.hidden = !said.length;
  chatList.replaceChildren(...said.map((m) => el("li", { class: "chat-item", "data-id": m.id },
    el("span", { class: "chat-name", text: m.name || m.identity }),
    el("span", { class: "chat-text", text: m.text }))));
  chatList.scrollTop = chatList.scrollHeight;
}

function renderButtons() {
  const now = Date.now() + clockOffset;
  for (const button of cardsRoot.querySelectorAll("button.buy")) {
    const sku = button.dataset.sku;
    const state = saleState(liveSale, sku, now);
    button.dataset.state = state;
    button.disabled = state !== "open" || buying.has(sku);
    button.textContent = BUTTON_TEXT[state];
  }
}

async function checkSale() {
  try {
    const { sale } = await api(`/rooms/${encodeURIComponent(room)}/sales`);
    liveSale = sale || null;
    if (sale) clockOffset = sale.server_ms - Date.now();
  } catch {
    liveSale = null; // a closed room sells nothing
  }
  renderButtons();
}

async function order(sku, status) {
  if (buying.has(sku)) return;
  buying.add(sku);
  renderButtons();
  const key = newKey(); // one key per click: a retried request can never buy twice
  try {
    const placed = await api(`/rooms/${encodeURIComponent(room)}/orders`, {
      method: "POST", body: JSON.stringify({ sku, qty: 1 }),
      headers: { "Content-Type": "application/json", "Idempotency-Key": key },
    });
    orders.push(placed);
    status.dataset.bad = "";
    status.textContent = `Order ${placed.id} confirmed`;
  } catch (err) {
    status.dataset.bad = "1";
    status.textContent = err.message;
  } finally {
    buying.delete(sku);
    await checkSale();
  }
}

async function loadTimeline() {
  try {
    const timeline = await api(`/recordings/${encodeURIComponent(recording)}/timeline`);
    if (timeline.room !== room) throw new Error(`recording ${recording} is not of room ${room}`);
    events = timeline.events;
    note.textContent = timeline.truncated
      ? "Some of this recording's product events were too old to keep." : "";
    setState("ready");
    // a recording still being made grows: its later events are fetched as it does
    if (!timeline.finished) setTimeout(loadTimeline, TIMELINE_POLL_MS);
  } catch (err) {
    fail(`timeline: ${err.message}`);
  }
  render();
}

// Without a recording in the URL: the room's recordings, newest first, each a replay link.
async function listRecordings() {
  const list = document.getElementById("recordings");
  try {
    const { recordings } = await api(`/rooms/${encodeURIComponent(room)}/recordings`);
    list.replaceChildren(...recordings.slice().reverse().map((r) => {
      const url = `/replay?${new URLSearchParams({ room, recording: r.id, token })}`;
      const when = new Date(r.started_at * 1000).toLocaleString();
      return el("li", {}, el("a", { href: url, "data-id": r.id, text: when }),
        ` · ${Math.round(r.duration_s)} s${r.finished ? "" : " (recording)"}`);
    }));
    list.hidden = false;
    document.querySelector(".stage").hidden = true;
    setState(recordings.length ? "choose" : "no recordings");
  } catch (err) {
    fail(`recordings: ${err.message}`);
  }
}

function start() {
  if (!room || !token) {
    fail("add ?room=...&token=... (and &recording=...) to the URL");
    return;
  }
  if (!recording) {
    document.getElementById("room").textContent = room;
    listRecordings();
    return;
  }
  document.getElementById("room").textContent = room;
  const id = encodeURIComponent(recording);
  video.src = `/api/v1/recordings/${id}?token=${encodeURIComponent(token)}`;
  loadTimeline();
}

for (const name of ["timeupdate", "seeked", "seeking", "loadedmetadata"]) {
  video.addEventListener(name, render);
}
setInterval(() => { if (shown) checkSale(); }, SALE_POLL_MS);
setInterval(renderButtons, 1000); // a sale's end passes without any event
start();
