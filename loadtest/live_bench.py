"""``python -m loadtest events`` and ``python -m loadtest flashsale``: chat fan-out latency and
flash-sale throughput, measured the way clients see them (HTTP and WebSocket only).

events: N WebSocket clients on ``/ws/events/{room}``; one admin client sends chat messages at
a fixed rate, each carrying its send time; every receiver records arrival minus send time (one
process, one monotonic clock) and checks ``seq`` order. Prints p50/p95/p99/max.

flashsale: adds a product, starts a sale (stock, per-buyer limit) over REST, then fires
``attempts`` purchase requests from ``buyers`` buyers with ``concurrency`` in flight, each with
its own ``Idempotency-Key``; then re-sends a sample with the same keys. Prints orders/s and
request latency, and checks exactly ``stock`` units were sold with nobody over the limit. Run
the server with ``--redis`` to measure the Redis backend.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import time
from typing import Any

import aiohttp
import msgpack

from loadtest.stats import mint_token, write_report

TTL = 3600


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary_ms(values: list[float]) -> dict[str, float]:
    return {"p50": round(pct(values, 50), 2), "p95": round(pct(values, 95), 2),
            "p99": round(pct(values, 99), 2), "max": round(max(values, default=0.0), 2),
            "samples": len(values)}


# --- events ----------------------------------------------------------------------------------


class Receiver:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.out_of_order = 0
        self.last_seq = 0
        self.received = 0


async def _receive(ws: aiohttp.ClientWebSocketResponse, rx: Receiver, tag: str) -> None:
    async for message in ws:
        if message.type != aiohttp.WSMsgType.BINARY:
            break
        now = time.monotonic_ns()
        data = msgpack.unpackb(message.data, raw=False)
        if data.get("type") == "state":
            rx.last_seq = int(data["seq"])
            continue
        if data.get("type") == "resync":  # the room's seq started again: it counts from 1
            rx.last_seq = 0
            continue
        seq = data.get("seq")
        if isinstance(seq, int):
            if seq != rx.last_seq + 1:
                rx.out_of_order += 1
            rx.last_seq = seq
        text = data.get("text", "")
        if data.get("type") == "chat" and text.startswith(tag):
            rx.latencies.append((now - int(text[len(tag):])) / 1e6)
            rx.received += 1


def _datachannel_latencies(viewers: list[Any], tag: str) -> tuple[list[float], int]:
    """Latency of each tagged chat at each data-channel viewer, and the out-of-order count."""
    latencies: list[float] = []
    out_of_order = 0
    for viewer in viewers:
        last = None
        for data, arrived in zip(viewer.events.received, viewer.events.arrivals, strict=True):
            seq = data.get("seq")
            if data.get("type") != "state" and isinstance(seq, int):
                out_of_order += last is not None and seq != last + 1
                last = seq
            elif data.get("type") == "state":
                last = int(data["seq"])
            elif data.get("type") == "resync":  # a new seq epoch counts from 1
                last = 0
            text = data.get("text", "")
            if data.get("type") == "chat" and text.startswith(tag):
                latencies.append((arrived * 1e9 - int(text[len(tag):])) / 1e6)
    return latencies, out_of_order


async def run_events_datachannel(args: argparse.Namespace) -> dict[str, Any]:
    """The same chat load, delivered over WebRTC ``events`` data channels: a painted anchor
    publishes, N aiortc viewers (packet counting, no decoding) open their channel."""
    from loadtest.clients import play, publish
    from loadtest.media import PaintedVideoTrack, ToneAudioTrack

    tag = f"lt{random.randrange(1 << 30)}:"
    anchor = await publish(args.url, args.room, mint_token(args.secret, args.room, "lt-anchor-pub",
                           ["publish"], TTL), PaintedVideoTrack(), ToneAudioTrack())
    viewers: list[Any] = []
    try:
        await asyncio.sleep(1.0)  # the anchor is live
        for i in range(args.clients):
            viewers.append(await play(args.url, args.room, mint_token(
                args.secret, args.room, f"lt-dc-{i}", ["subscribe"], TTL),
                decode=False, events=True))
        base = args.url.rstrip("/").replace("http", "ws", 1)
        token = mint_token(args.secret, args.room, "lt-anchor", ["admin"], TTL)
        async with aiohttp.ClientSession() as http, http.ws_connect(
            f"{base}/ws/events/{args.room}?token={token}"
        ) as sender:
            await asyncio.sleep(args.settle)  # every channel has its state
            total = int(args.rate * args.duration)
            start = time.monotonic()
            for i in range(total):
                delay = start + i / args.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                text = f"{tag}{time.monotonic_ns()}"
                await sender.send_bytes(msgpack.packb({"type": "chat", "text": text}))
            await asyncio.sleep(args.settle)
    finally:
        for viewer in viewers:
            await viewer.close()
        await anchor.close()
    latencies, out_of_order = _datachannel_latencies(viewers, tag)
    return {
        "scenario": "events", "transport": "datachannel", "url": args.url,
        "clients": args.clients, "rate": args.rate, "duration_s": args.duration,
        "messages": total, "deliveries_expected": total * args.clients,
        "deliveries": len(latencies), "out_of_order": out_of_order,
        "fanout_per_s": round(len(latencies) / max(args.duration, 1e-9), 1),
        "latency_ms": summary_ms(latencies),
    }


async def run_events(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "transport", "ws") == "datachannel":
        return await run_events_datachannel(args)
    base = args.url.rstrip("/").replace("http", "ws", 1)
    tag = f"lt{random.randrange(1 << 30)}:"
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=0)) as http:
        def url(identity: str, grants: list[str]) -> str:
            token = mint_token(args.secret, args.room, identity, grants, TTL)
            return f"{base}/ws/events/{args.room}?token={token}"

        sockets = await asyncio.gather(*(
            http.ws_connect(url(f"lt-viewer-{i}", ["subscribe"])) for i in range(args.clients)))
        receivers = [Receiver() for _ in sockets]
        tasks = [asyncio.create_task(_receive(ws, rx, tag))
                 for ws, rx in zip(sockets, receivers, strict=True)]
        sender = await http.ws_connect(url("lt-anchor", ["admin"]))
        await asyncio.sleep(1.0)  # every client has its state
        total = int(args.rate * args.duration)
        interval = 1.0 / args.rate
        start = time.monotonic()
        for i in range(total):
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            text = f"{tag}{time.monotonic_ns()}"
            await sender.send_bytes(msgpack.packb({"type": "chat", "text": text}))
        await asyncio.sleep(args.settle)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(ws.close() for ws in [*sockets, sender]))
    latencies = [v for rx in receivers for v in rx.latencies]
    expected = total * args.clients
    return {
        "scenario": "events", "transport": "ws", "url": args.url, "clients": args.clients,
        "rate": args.rate,
        "duration_s": args.duration, "messages": total, "deliveries_expected": expected,
        "deliveries": len(latencies), "out_of_order": sum(rx.out_of_order for rx in receivers),
        "fanout_per_s": round(len(latencies) / max(args.duration, 1e-9), 1),
        "latency_ms": summary_ms(latencies),
    }


# --- flashsale -------------------------------------------------------------------------------


async def _json(response: aiohttp.ClientResponse) -> Any:
    return await response.json(content_type=None)


async def run_flashsale(args: argparse.Namespace) -> dict[str, Any]:
    api = f"{args.url.rstrip('/')}/api/v1/rooms/{args.room}"
    admin = {"Authorization": "Bearer " + mint_token(args.secret, args.room, "lt-admin",
                                                     ["admin"], TTL)}
    tokens = [mint_token(args.secret, args.room, f"lt-buyer-{i}", ["subscribe"], TTL)
              for i in range(args.buyers)]
    sku = f"lt-{random.randrange(1 << 30):x}"
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as http:
        async with http.post(api + "/products", headers=admin,
                             json={"sku": sku, "title": "Load test", "price": 100}) as r:
            assert r.status == 201, await r.text()
        async with http.post(api + "/sales", headers=admin, json={
            "sku": sku, "stock": args.stock, "per_user_limit": args.limit,
            "duration_s": 600}) as r:
            assert r.status == 201, await r.text()

        outcomes: collections.Counter[str] = collections.Counter()
        latencies: list[float] = []
        firsts: dict[tuple[int, str], str] = {}

        in_flight = asyncio.Semaphore(args.concurrency)  # latency excludes our own queueing

        async def attempt(buyer: int, key: str) -> None:
            headers = {"Authorization": "Bearer " + tokens[buyer], "Idempotency-Key": key}
            async with in_flight:
                t0 = time.monotonic()
                async with http.post(api + "/orders", headers=headers, json={"sku": sku}) as r:
                    body = await _json(r)
                latencies.append((time.monotonic() - t0) * 1000)
            if r.status in (200, 201):
                outcomes["duplicate" if r.status == 200 else "ok"] += 1
                previous = firsts.setdefault((buyer, key), body["id"])
                if previous != body["id"]:
                    outcomes["idempotency_violation"] += 1
            else:
                outcomes[body.get("error", {}).get("code", f"http_{r.status}")] += 1

        jobs = [(i % args.buyers, f"k{i}") for i in range(args.attempts)]
        random.shuffle(jobs)
        start = time.monotonic()
        await asyncio.gather(*(attempt(b, k) for b, k in jobs))
        elapsed = time.monotonic() - start
        retry_jobs = list(firsts)[: min(len(firsts), 200)]
        await asyncio.gather(*(attempt(b, k) for b, k in retry_jobs))
        async with http.get(api + "/orders", headers=admin) as r:
            orders = [o for o in (await _json(r))["orders"] if o["sku"] == sku]
    per_buyer = collections.Counter(o["buyer"] for o in orders)
    sold = sum(o["qty"] for o in orders)
    return {
        "scenario": "flashsale", "url": args.url, "buyers": args.buyers,
        "attempts": args.attempts, "stock": args.stock, "per_user_limit": args.limit,
        "concurrency": args.concurrency, "elapsed_s": round(elapsed, 3),
        "attempts_per_s": round(args.attempts / elapsed, 1),
        "orders_per_s": round(outcomes["ok"] / elapsed, 1),
        "outcomes": dict(outcomes), "sold": sold,
        "max_per_buyer": max(per_buyer.values(), default=0),
        "oversold": sold > args.stock, "retries_checked": len(retry_jobs),
        "latency_ms": summary_ms(latencies),
        "ok": sold == args.stock and max(per_buyer.values(), default=0) <= (args.limit or sold)
        and not outcomes["idempotency_violation"],
    }


# --- command line ----------------------------------------------------------------------------


def add_parsers(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL")
    common.add_argument("--secret", default=os.environ.get("SHOPCAST_SECRET", ""),
                        help="HS256 token key [env SHOPCAST_SECRET]")
    common.add_argument("--report", default="", help="JSON report path")
    e = sub.add_parser("events", parents=[common], help="chat fan-out latency over WebSockets")
    e.add_argument("--room", default="lt-events")
    e.add_argument("--clients", type=int, default=100)
    e.add_argument("--rate", type=float, default=20.0, help="chat messages per second")
    e.add_argument("--duration", type=float, default=10.0)
    e.add_argument("--settle", type=float, default=2.0)
    e.add_argument("--transport", choices=["ws", "datachannel"], default="ws",
                   help="deliver to WebSocket clients or to WebRTC events data channels")
    f = sub.add_parser("flashsale", parents=[common], help="flash-sale orders per second")
    f.add_argument("--room", default="lt-sale")
    f.add_argument("--buyers", type=int, default=500)
    f.add_argument("--attempts", type=int, default=2000)
    f.add_argument("--stock", type=int, default=100)
    f.add_argument("--limit", type=int, default=2)
    f.add_argument("--concurrency", type=int, default=100)


def run(args: argparse.Namespace) -> int:
    if not args.secret:
        raise SystemExit("give --secret (or SHOPCAST_SECRET) to mint tokens")
    if args.command == "events":
        report = asyncio.run(run_events(args))
        lat = report["latency_ms"]
        print(f"events: {args.clients} clients x {args.rate}/s for {args.duration}s: "
              f"{report['deliveries']}/{report['deliveries_expected']} delivered, "
              f"{report['out_of_order']} out of order")
        print(f"  fan-out latency ms: p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}  "
              f"max {lat['max']}")
        ok = report["deliveries"] == report["deliveries_expected"] and not report["out_of_order"]
    else:
        report = asyncio.run(run_flashsale(args))
        lat = report["latency_ms"]
        print(f"flashsale: {args.attempts} attempts by {args.buyers} buyers, stock "
              f"{args.stock}, limit {args.limit}: {report['elapsed_s']}s")
        print(f"  {report['attempts_per_s']} attempts/s, {report['orders_per_s']} orders/s, "
              f"sold {report['sold']}, max per buyer {report['max_per_buyer']}, "
              f"outcomes {report['outcomes']}")
        print(f"  request latency ms: p50 {lat['p50']}  p99 {lat['p99']}  max {lat['max']}")
        ok = bool(report["ok"])
    print(f"report: {write_report(report, args.report, args.command)}")
    return 0 if ok else 1
