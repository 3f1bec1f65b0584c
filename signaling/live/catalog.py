"""Products: a per-room catalog (sku, title, price in minor units, currency, image URL) and the
pinned product that every viewer sees as a card (``product_pinned``; also in joiners' state).

Products are a hash ``products`` (sku -> JSON) in the room's scope; the pin is the key
``pinned``. Image URLs are limited to http(s) and same-origin paths, so a product card can never
carry a ``javascript:`` URL into a page. A product is checked, and the event it makes is built
and packed, before anything is written: a product that could not be announced (a price no
msgpack event can carry, say) never reaches the store, so it cannot poison the room's state.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from signaling.live.errors import LiveError, not_found
from signaling.live.schema import MAX_PRICE, event, pack
from signaling.live.timeline import RoomPublisher
from signaling.store import Store

SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
MAX_PRODUCTS = 500


@dataclass(frozen=True)
class Product:
    sku: str
    title: str
    price: int  # minor units (cents)
    currency: str = "USD"
    image_url: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Product:
        return cls(str(data["sku"]), str(data["title"]), int(data["price"]),
                   str(data.get("currency", "USD")), str(data.get("image_url", "")))


def check_product(product: Product) -> None:
    if not SKU.match(product.sku):
        raise LiveError("invalid", "sku is 1-64 letters, digits, '.', '_' or '-'", 400)
    if not product.title.strip() or len(product.title) > 200:
        raise LiveError("invalid", "title is 1-200 characters", 400)
    if isinstance(product.price, bool) or not isinstance(product.price, int) or not (
        0 <= product.price <= MAX_PRICE
    ):
        raise LiveError("invalid", f"price is an integer amount in minor units, 0 to {MAX_PRICE}",
                        400)
    if not CURRENCY.match(product.currency):
        raise LiveError("invalid", "currency is a 3-letter ISO 4217 code", 400)
    url = product.image_url
    if url and not (url.startswith(("https://", "http://")) or
                    (url.startswith("/") and not url.startswith("//"))):
        raise LiveError("invalid", "image_url must be http(s) or a same-origin path", 400)


class Catalog:
    def __init__(self, store: Store, bus: RoomPublisher) -> None:
        self.store = store
        self.bus = bus

    async def put(self, room: str, product: Product) -> Product:
        """Add or replace a product; a pinned one is re-announced with its new details."""
        check_product(product)
        announcement = _announcement(product)
        existing = await self.store.hget(room, "products", product.sku)
        if existing is None and len(await self.store.hgetall(room, "products")) >= MAX_PRODUCTS:
            raise LiveError("too_many", f"at most {MAX_PRODUCTS} products per room", 409)
        await self.store.hset(room, "products", product.sku,
                              json.dumps(product.to_json(), allow_nan=False).encode())
        if await self.pinned_sku(room) == product.sku:
            await self.bus.publish(room, announcement)
        return product

    async def get(self, room: str, sku: str) -> Product | None:
        raw = await self.store.hget(room, "products", sku)
        return Product.from_json(json.loads(raw)) if raw else None

    async def require(self, room: str, sku: str) -> Product:
        product = await self.get(room, sku)
        if product is None:
            raise not_found(f"no product {sku!r} in this room", "product_not_found")
        return product

    async def list(self, room: str) -> list[Product]:
        raw = await self.store.hgetall(room, "products")
        return sorted((Product.from_json(json.loads(v)) for v in raw.values()),
                      key=lambda p: p.sku)

    async def pinned_sku(self, room: str) -> str:
        raw = await self.store.get(room, "pinned")
        return raw.decode() if raw else ""

    async def pinned(self, room: str) -> Product | None:
        sku = await self.pinned_sku(room)
        return await self.get(room, sku) if sku else None

    async def pin(self, room: str, sku: str | None) -> Product | None:
        """Pin ``sku`` (None unpins) and tell everyone."""
        if sku:
            found = await self.require(room, sku)
            check_product(found)  # one stored before the bounds existed is not pinned
            announcement = _announcement(found)
            await self.store.put(room, "pinned", sku.encode())
            product: Product | None = found
        else:
            product = None
            announcement = event("product_pinned", product=None)
            await self.store.delete(room, "pinned")
        await self.bus.publish(room, announcement)
        return product


def _announcement(product: Product) -> dict[str, Any]:
    """The ``product_pinned`` event for ``product``, packed once to prove that it can be:
    called before a write, so a product no event can carry is refused with nothing stored."""
    announcement = event("product_pinned", product=product.to_json())
    try:
        pack(announcement)
    except (OverflowError, ValueError, TypeError) as exc:
        raise LiveError("invalid", f"the product cannot be sent to viewers: {exc}", 400) from exc
    return announcement
