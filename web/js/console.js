// Anchor console: products (add, pin, unpin), flash sales, chat moderation (delete, mute,
// ban, keyword filter) and the anchor's own chat. Changes go over REST with the page's token
// (it needs the admin grant); the live view (chat, stock) comes over /ws/events/{room}.
import { RoomEvents, el, formatPrice, tokenClaims } from "./room_events.js";
import { watchAudience } from "./audience.js";

const root = document.getElementById("console");
const q = new URLSearchParams(location.search);
const room = q.get("room") || "";
const token = q.get("token") || "";
const isAdmin = (tokenClaims(token).grants || []).includes("admin");
const api = `/api/v1/rooms/${encodeURIComponent(room)}`;

const field = (id, label, attrs = {}) => {
  const input = el("input", { id, name: id, ...attrs });
  return [el("label", { for: id, text: label }), input];
};
const ui = {
  status: el("p", { id: "console-status", class: "console-status", role: "status" }),
  products: el("ul", { id: "console-products", class: "console-list" }),
  sale: el("p", { id: "console-sale", class: "sale-info" }),
  chat: el("ul", { id: "console-chat", class: "chat-list" }),
};
const productForm = el("form", { id: "product-form", class: "console-form" },
  ...field("product-sku", "SKU", { required: true, maxlength: "64", pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]*" }),
  ...field("product-title", "Title", { required: true, maxlength: "200" }),
  ...field("product-price", "Price", { required: true, type: "number", min: "0", step: "0.01" }),
  ...field("product-currency", "Currency", { value: "USD", maxlength: "3" }),
  ...field("product-image", "Image URL", { type: "url" }),
  el("button", { class: "btn primary", type: "submit", text: "Add product" }));
const saleSku = el("select", { id: "sale-sku", name: "sale-sku" });
const saleForm = el("form", { id: "sale-form", class: "console-form" },
  el("label", { for: "sale-sku", text: "Product" }), saleSku,
  ...field("sale-stock", "Stock", { type: "number", min: "1", value: "100", required: true }),
  ...field("sale-limit", "Per buyer", { type: "number", min: "0", value: "1" }),
  ...field("sale-duration", "Seconds", { type: "number", min: "1", value: "300", required: true }),
  el("button", { id: "sale-start", class: "btn primary", type: "submit", text: "Start sale" }));
const filterForm = el("form", { id: "filter-form", class: "console-form" },
  ...field("filter-words", "Blocked words (comma separated)"),
  el("button", { class: "btn", type: "submit", text: "Save filter" }));
const chatInput = el("input", { id: "console-chat-input", maxlength: "200", placeholder: "Say something" });
const chatForm = el("form", { id: "console-chat-form", class: "chat-form" }, chatInput,
  el("button", { class: "btn", type: "submit", text: "Send" }));
const unpin = el("button", { id: "unpin", class: "btn", type: "button", text: "Unpin" });

root.append(el("section", { class: "console-panel" },
  ui.status,
  el("h2", { text: "Products" }), productForm, ui.products, unpin,
  el("h2", { text: "Flash sale" }), saleForm, ui.sale,
  el("h2", { text: "Chat" }), ui.chat, chatForm, filterForm));
ui.status.after(watchAudience(room, token, q)); // the viewers' QoE in one line

let products = [];
let pinnedSku = null;
let sale = null;
let clockOffset = 0;

function say(text, bad = false) {
  ui.status.textContent = text;
  ui.status.dataset.bad = bad ? "1" : "";
}

async function call(method, path, body) {
  const resp = await fetch(api + path, {
    method,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = resp.status === 204 ? null : await resp.json();
  if (!resp.ok) throw new Error(data && data.error ? `${data.error.message} (${data.error.code})` : `HTTP ${resp.status}`);
  return data;
}

async function guarded(work, done) {
  try {
    await work();
    if (done) say(done);
  } catch (err) {
    say(String(err.message || err), true);
  }
}

async function loadProducts() {
  const data = await call("GET", "/products");
  products = data.products;
  pinnedSku = data.pinned;
  renderProducts();
}

function renderProducts() {
  ui.products.replaceChildren(...products.map((p) => el("li", { "data-sku": p.sku },
    el("span", { class: "console-product", text: `${p.title} · ${formatPrice(p.price, p.currency)}` }),
    p.sku === pinnedSku ? el("span", { class: "pin-badge", text: "pinned" }) : "",
    el("button", { class: "btn pin", type: "button", "data-sku": p.sku, text: "Pin",
      onclick: () => guarded(() => call("POST", "/pin", { sku: p.sku }), `pinned ${p.sku}`) }))));
  const chosen = saleSku.value;
  saleSku.replaceChildren(...products.map((p) => el("option", { value: p.sku, text: p.title })));
  if (chosen) saleSku.value = chosen;
}

productForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const currency = (document.getElementById("product-currency").value || "USD").toUpperCase();
  const body = {
    sku: document.getElementById("product-sku").value.trim(),
    title: document.getElementById("product-title").value.trim(),
    price: Math.round(parseFloat(document.getElementById("product-price").value) * 100),
    currency,
  };
  const image = document.getElementById("product-image").value.trim();
  if (image) body.image_url = image;
  guarded(async () => { await call("POST", "/products", body); await loadProducts(); },
    `added ${body.sku}`);
});

unpin.addEventListener("click", () => guarded(() => call("DELETE", "/pin"), "unpinned"));

saleForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const body = {
    sku: saleSku.value,
    stock: parseInt(document.getElementById("sale-stock").value, 10),
    per_user_limit: parseInt(document.getElementById("sale-limit").value || "0", 10),
    duration_s: parseInt(document.getElementById("sale-duration").value, 10),
  };
  guarded(() => call("POST", "/sales", body), `sale started on ${body.sku}`);
});

filterForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const words = document.getElementById("filter-words").value.split(",").map((w) => w.trim()).filter(Boolean);
  guarded(() => call("POST", "/chat/filter", { words }), "filter saved");
});

function addChat(msg) {
  const who = msg.identity;
  ui.chat.append(el("li", { class: "chat-item", "data-id": msg.id },
    el("span", { class: "chat-name", text: msg.name || who }),
    el("span", { class: "chat-text", text: msg.text }),
    el("span", { class: "mod-actions" },
      el("button", { class: "btn small", type: "button", text: "Delete",
        onclick: () => guarded(() => call("DELETE", `/chat/${encodeURIComponent(msg.id)}`), "deleted") }),
      el("button", { class: "btn small", type: "button", text: "Mute",
        onclick: () => guarded(() => call("POST", "/chat/mute", { identity: who, duration_s: 600 }), `muted ${who} for 10 min`) }),
      el("button", { class: "btn small danger", type: "button", text: "Ban",
        onclick: () => guarded(() => call("POST", "/chat/ban", { identity: who }), `banned ${who}`) }))));
  while (ui.chat.childElementCount > 200) ui.chat.firstElementChild.remove();
}

function renderSale() {
  if (!sale) { ui.sale.textContent = "no sale running"; return; }
  const left = Math.max(0, Math.ceil((sale.ends_at_ms - (Date.now() + clockOffset)) / 1000));
  ui.sale.textContent = `${sale.sku}: ${sale.remaining}/${sale.stock} left · ` +
    (left ? `${left}s to go` : "ended");
}
setInterval(renderSale, 500);

function apply(ev) {
  switch (ev.type) {
    case "state":
      clockOffset = ev.server_ms - Date.now();
      sale = ev.sale;
      pinnedSku = ev.pinned ? ev.pinned.sku : null;
      ui.chat.replaceChildren();
      ev.chat.forEach(addChat);
      renderProducts();
      break;
    case "chat": addChat(ev); break;
    case "chat_deleted": ui.chat.querySelector(`[data-id="${CSS.escape(ev.id)}"]`)?.remove(); break;
    case "product_pinned": pinnedSku = ev.product ? ev.product.sku : null; renderProducts(); break;
    case "sale": clockOffset = ev.server_ms - Date.now(); sale = ev; break;
    case "stock": if (sale && sale.sku === ev.sku) sale.remaining = ev.remaining; break;
    case "sold_out": if (sale && sale.sku === ev.sku) { sale.remaining = 0; say(`${ev.sku} sold out`); } break;
    case "error": if (!ev.cid) say(ev.message, true); break;
    default: break;
  }
  renderSale();
}

const events = new RoomEvents(room, token, { onEvent: apply });
window.shopcastConsole = { events, get products() { return products; } };

chatForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = chatInput.value.trim();
  if (text && events.send({ type: "chat", text })) chatInput.value = "";
});

if (!room || !token) {
  say("add ?room=...&token=... to the URL", true);
} else if (!isAdmin) {
  root.hidden = true; // the console needs an admin token; publishing works without it
} else {
  events.connect();
  guarded(loadProducts);
}
