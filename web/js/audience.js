// The anchor console's audience line: what the viewers' players see, from their QoE reports
// (GET /api/v1/rooms/{room}/health, polled every 10 s; ?health_interval_ms= between 500 and
// 60000 for tests). One line: who reports, the stall ratio, fps, jitter-buffer delay, transports.
import { el } from "./room_events.js";

const DEFAULT_MS = 10000;

function interval(query) {
  const asked = Number.parseInt(query.get("health_interval_ms") || "", 10);
  return Number.isFinite(asked) ? Math.min(60000, Math.max(500, asked)) : DEFAULT_MS;
}

export function describe(h) {
  if (!h.viewers_reporting) return "Audience: no viewer reports yet";
  const parts = [`Audience: ${h.viewers_reporting} reporting`,
    `stalled ${(h.stall_ratio * 100).toFixed(1)} %`];
  if (h.fps.p50 !== null) parts.push(`fps ${Math.round(h.fps.p50)}`);
  if (h.jitter_buffer_ms.p90 !== null) parts.push(`jitter buffer p90 ${Math.round(h.jitter_buffer_ms.p90)} ms`);
  if (h.flv_buffer_s.p50 !== null) parts.push(`FLV buffer ${h.flv_buffer_s.p50.toFixed(1)} s`);
  parts.push(Object.entries(h.transports).map(([t, n]) => `${t} ${n}`).join(", "));
  return parts.join(" · ");
}

// The line, kept fresh; a refusal (a token without publish or admin) shows and stops the polling.
export function watchAudience(room, token, query) {
  const line = el("p", { id: "audience-health", class: "info", role: "status",
    text: "Audience: …" });
  const url = `/api/v1/rooms/${encodeURIComponent(room)}/health`;
  let timer = null;
  const poll = async () => {
    try {
      const resp = await fetch(url, { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
      const body = await resp.json();
      if (!resp.ok) {
        line.textContent = `Audience: ${(body.error && body.error.message) || resp.status}`;
        if (resp.status === 401 || resp.status === 403) clearInterval(timer);
        return;
      }
      line.textContent = describe(body);
      line.dataset.reporting = String(body.viewers_reporting);
    } catch (e) {
      line.textContent = "Audience: health unavailable";
    }
  };
  poll();
  timer = setInterval(poll, interval(query));
  return line;
}
