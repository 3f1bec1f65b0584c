// Viewer's live panel: pinned product card with a one-click buy, sale countdown and stock,
// chat with a send box, likes, gifts with a leaderboard, viewer count. Talks over
// /ws/events/{room}; everything from the server is rendered with textContent only.
import { RoomEvents, el, formatPrice, newKey, tokenClaims } from "./room_events.js";
import { pageSync } from "./media_sync.js";

const LIKE_FLUSH_MS = 250;
const MAX_CHAT_ITEMS = 200;

const root = document.getElementById("live");
const q = new URLSearchParams(location.search);
const room = q.get("room") || "";
const token = q.get("token") || "";
const me = tokenClaims(token);
const canChat = (me.grants || []).some((g) => g === "chat" || g === "admin");

const ui = {
  viewers: el("span", { id: "live-viewers", class: "live-viewers", text: "0 watching" }),
  status: el("span", { id: "live-status", class: "live-status", text: "connecting" }),
  card: el("div", { id: "product-card", class: "product-card", hidden: true }),
  image: el("img", { id: "product-image", alt: "" }),
  title: el("h3", { id: "product-title" }),
  price: el("p", { id: "product-price", class: "price" }),
  sale: el("p", { id: "sale-info", class: "sale-info", hidden: true }),
  countdown: el("span", { id: "sale-countdown", class: "countdown" }),
  stock: el("span", { id: "sale-stock", class: "stock" }),
  buy: el("button", { id: "buy", class: "btn primary", disabled: true, text: "Buy now" }),
  orderStatus: el("p", { id: "order-status", class: "order-status", role: "status" }),
  likeTotal: el("span", { id: "like-total", text: "0" }),
  gifts: el("div", { id: "gift-buttons", class: "gift-buttons" }),
  leaderboard: el("ol", { id: "leaderboard", class: "leaderboard" }),
  chat: el("ul", { id: "chat-list", class: "chat-list", "aria-live": "polite" }),
  input: el("input", { id: "chat-input", maxlength: "200", placeholder: "Say something", autocomplete: "off" }),
  send: el("button", { id: "chat-send", class: "btn", type: "submit", text: "Send" }),
  notice: el("p", { id: "live-notice", class: "live-notice", role: "status" }),
};
const like = el("button", { id: "like", class: "btn like", type: "button" }, "♥ ", ui.likeTotal);
const form = el("form", { id: "chat-form", class: "chat-form" }, ui.input, ui.send);
if (!canChat) form.hidden = true;
ui.card.append(ui.image, el("div", { class: "product-body" }, ui.title, ui.price,
  ui.sale, ui.buy, ui.orderStatus));
ui.sale.append(ui.countdown, " · ", ui.stock);
root.append(el("section", { class: "live-panel" },
  el("div", { class: "live-top" }, ui.viewers, ui.status),
  ui.card,
  el("div", { class: "reactions" }, like, ui.gifts),
  ui.leaderboard, ui.chat, form, ui.notice));

let pinned = null;
let sale = null;          // {sku, remaining, ends_at_ms, ...}
let clockOffset = 0;      // server ms - local ms
let likeTotal = 0;
let pendingTaps = 0;
let buying = false;
const orders = [];

// commerce events wait for the anchor's frame they belong to (media_sync.js); chat does not
const sync = pageSync(apply);
const events = new RoomEvents(room, token, { onEvent: (ev) => sync.offer(ev), onStatus: (s) => {
  ui.status.textContent = s === "live" ? "" : s;
  ui.status.dataset.state = s;
} });
window.shopcastLive = { events, orders, sync, get pinned() { return pinned; }, get sale() { return sale; } };

function apply(ev) {
  switch (ev.type) {
    case "state":
      clockOffset = ev.server_ms - Date.now();
      showProduct(ev.pinned);
      sale = ev.sale;
      likeTotal = Math.max(likeTotal, ev.likes);
      ui.likeTotal.textContent = String(likeTotal);
      showViewers(ev.viewers);
      showGifts(ev.gifts);
      showLeaderboard(ev.leaderboard);
      ui.chat.replaceChildren();
      ev.chat.forEach(addChat);
      break;
    case "chat": addChat(ev); break;
    case "chat_deleted": ui.chat.querySelector(`[data-id="${CSS.escape(ev.id)}"]`)?.remove(); break;
    case "likes":
      likeTotal = Math.max(ev.total, likeTotal);
      ui.likeTotal.textContent = String(likeTotal);
      break;
    case "gift": addGift(ev); showLeaderboard(ev.leaderboard); break;
    case "product_pinned": showProduct(ev.product); break;
    case "sale": clockOffset = ev.server_ms - Date.now(); sale = ev; break;
    case "stock": if (sale && sale.sku === ev.sku) sale.remaining = ev.remaining; break;
    case "sold_out": if (sale && sale.sku === ev.sku) sale.remaining = 0; break;
    case "viewers": showViewers(ev.count); break;
    case "kicked":
      if (ev.identity === me.sub) ui.status.textContent = "you were removed from this room";
      break;
    case "error": if (!ev.cid) ui.notice.textContent = ev.message; break;
    default: break;
  }
  renderSale();
}

function showViewers(n) { ui.viewers.textContent = `${n} watching`; }

function showProduct(product) {
  pinned = product || null;
  ui.card.hidden = !pinned;
  if (!pinned) return;
  ui.title.textContent = pinned.title;
  ui.price.textContent = formatPrice(pinned.price, pinned.currency);
  ui.image.hidden = !pinned.image_url;
  if (pinned.image_url) ui.image.src = pinned.image_url;
  ui.orderStatus.textContent = "";
}

function renderSale() {
  const active = pinned && sale && sale.sku === pinned.sku;
  ui.sale.hidden = !active;
  if (!active) { ui.buy.disabled = true; ui.buy.textContent = "Not on sale yet"; return; }
  const left = Math.max(0, sale.ends_at_ms - (Date.now() + clockOffset));
  const ended = left === 0;
  const s = Math.ceil(left / 1000);
  ui.countdown.textContent = ended ? "sale ended"
    : `ends in ${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  ui.stock.textContent = sale.remaining > 0 ? `${sale.remaining} left` : "sold out";
  ui.buy.disabled = buying || ended || sale.remaining <= 0;
  ui.buy.textContent = sale.remaining <= 0 ? "Sold out" : ended ? "Sale ended" : "Buy now";
}
setInterval(renderSale, 250);

function showOrderStatus(text, bad = false) {
  ui.orderStatus.textContent = text;
  ui.orderStatus.dataset.bad = bad ? "1" : "";
}

async function buy() {
  if (!pinned || buying) return;
  buying = true;
  renderSale();
  const key = newKey(); // one key per click: a retried request can never buy twice
  try {
    const reply = await events.request({ type: "purchase", sku: pinned.sku, qty: 1, key });
    if (reply.type === "order") {
      orders.push(reply.order);
      showOrderStatus(`Order ${reply.order.id} confirmed`);
    } else {
      showOrderStatus(reply.message || reply.code, true);
    }
  } catch (err) {
    showOrderStatus(String(err.message || err), true);
  } finally {
    buying = false;
    renderSale();
  }
}
ui.buy.addEventListener("click", buy);

function addChat(msg) {
  const li = el("li", { class: "chat-item", "data-id": msg.id },
    el("span", { class: "chat-name", text: msg.name || msg.identity }),
    el("span", { class: "chat-text", text: msg.text }));
  ui.chat.append(li);
  while (ui.chat.childElementCount > MAX_CHAT_ITEMS) ui.chat.firstElementChild.remove();
  ui.chat.scrollTop = ui.chat.scrollHeight;
}

function addGift(ev) {
  const li = el("li", { class: "chat-item gift-item" },
    el("span", { class: "chat-name", text: ev.name || ev.identity }),
    el("span", { class: "chat-text", text: `sent ${ev.count} × ${ev.title} (${ev.value})` }));
  ui.chat.append(li);
}

function showGifts(catalog) {
  ui.gifts.replaceChildren(...catalog.map((g) => el("button", {
    class: "btn gift", type: "button", "data-gift": g.id, title: `${g.value} coins`,
    onclick: () => events.send({ type: "gift", gift: g.id, count: 1 }),
  }, g.title)));
}

function showLeaderboard(rows) {
  ui.leaderboard.replaceChildren(...rows.slice(0, 5).map(([who, value]) =>
    el("li", {}, el("span", { text: who }), el("span", { class: "value", text: String(value) }))));
}

like.addEventListener("click", () => {
  pendingTaps += 1;
  likeTotal += 1;
  ui.likeTotal.textContent = String(likeTotal);
});
setInterval(() => { // taps leave at most every 250 ms, however fast the button is hit
  if (pendingTaps > 0 && events.send({ type: "like", count: Math.min(pendingTaps, 100) })) {
    pendingTaps -= Math.min(pendingTaps, 100);
  }
}, LIKE_FLUSH_MS);

form.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = ui.input.value.trim();
  if (!text) return;
  ui.notice.textContent = events.send({ type: "chat", text }) ? "" : "not connected";
  ui.input.value = "";
});

if (room && token) events.connect();
else ui.status.textContent = "add ?room=...&token=... to the URL";
