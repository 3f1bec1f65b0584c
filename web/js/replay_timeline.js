// The replay's product timeline, pure: which product cards are on screen at recording time t.
// `events` is the timeline route's list ({t, type, ...}, t in seconds on the recording's clock,
// oldest first). No DOM here, so it is tested on its own.

// The cards on screen at t: the product pinned last at or before t, unless an unpin (or the
// pin of another product) came after it; with the sale of that product as it stood at t.
export function cardsAt(events, t) {
  let pinned = null;
  let since = 0;
  let sale = null;
  for (const ev of events) { // in seq order; clocks of two processes may disagree by a hair
    if (ev.t > t) continue;
    switch (ev.type) {
      case "product_pinned":
        if (!pinned || !ev.product || pinned.sku !== ev.product.sku) since = ev.t;
        pinned = ev.product || null;
        break;
      case "product_unpinned": pinned = null; break;
      case "sale": sale = { ...ev }; break;
      case "stock": if (sale && sale.sku === ev.sku) sale.remaining = ev.remaining; break;
      case "sold_out": if (sale && sale.sku === ev.sku) sale.remaining = 0; break;
      default: break;
    }
  }
  if (!pinned) return [];
  return [{ product: pinned, since, sale: sale && sale.sku === pinned.sku ? sale : null }];
}

// Whether a sale (as GET /rooms/{room}/sales answers it) still sells `sku` now, and why not.
export function saleState(sale, sku, serverNowMs) {
  if (!sale || sale.sku !== sku) return "not_on_sale";
  if (sale.remaining <= 0) return "sold_out";
  if (serverNowMs >= sale.ends_at_ms) return "ended";
  return "open";
}

// The chat said at or before t (kept only when the server keeps chat), the newest `limit`.
export function chatAt(events, t, limit = 50) {
  return events.filter((ev) => ev.type === "chat" && ev.t <= t).slice(-limit);
}
