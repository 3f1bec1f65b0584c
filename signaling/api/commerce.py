"""REST: products, the pinned product, flash sales and orders of a room.

The handlers are thin: they call the same services as the event gateway (``signaling.live``),
so buying over REST and over a data channel is the same atomic step with the same answers.
"""

from __future__ import annotations

from aiohttp import web

from signaling.api.routes import Call, Route, json_response
from signaling.api.schema import Schema, array, obj
from signaling.errors import bad_request
from signaling.live.catalog import Product
from signaling.live.gateway import allowed
from signaling.live.schema import MAX_PER_USER, MAX_PRICE, MAX_QTY, MAX_SALE_S, MAX_STOCK
from signaling.room_names import require_room_name
from signaling.tokens import Grant

IDEMPOTENCY_HEADER = "Idempotency-Key"

PRODUCT: Schema = obj(
    ["sku", "title", "price"],
    sku={"type": "string", "minLength": 1, "maxLength": 64,
         "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$"},
    title={"type": "string", "minLength": 1, "maxLength": 200},
    price={"type": "integer", "minimum": 0, "maximum": MAX_PRICE,
           "description": "minor units (cents)"},
    currency={"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217, default USD"},
    image_url={"type": "string", "maxLength": 2048, "description": "http(s) or /path"},
)
SALE: Schema = {"type": "object", "description": "id, sku, stock, remaining, per_user_limit, "
                "starts_at_ms, ends_at_ms, server_ms, product"}
ORDER: Schema = {"type": "object", "description": "id, room, sale_id, sku, title, qty, buyer, "
                 "unit_price, total, currency, created_at_ms, key"}


def room_of(call: Call) -> str:
    return require_room_name(call.param("room"))


async def add_product(call: Call) -> web.StreamResponse:
    body = call.body
    product = Product(body["sku"], body["title"], body["price"], body.get("currency", "USD"),
                      body.get("image_url", ""))
    await call.signaling.live.catalog.put(room_of(call), product)
    return json_response(product.to_json(), status=201)


async def list_products(call: Call) -> web.StreamResponse:
    room = room_of(call)
    catalog = call.signaling.live.catalog
    return json_response({"products": [p.to_json() for p in await catalog.list(room)],
                          "pinned": await catalog.pinned_sku(room) or None})


async def pin(call: Call) -> web.StreamResponse:
    product = await call.signaling.live.catalog.pin(room_of(call), call.body["sku"])
    return json_response({"product": product.to_json() if product else None})


async def unpin(call: Call) -> web.StreamResponse:
    await call.signaling.live.catalog.pin(room_of(call), None)
    return json_response({"product": None})


async def start_sale(call: Call) -> web.StreamResponse:
    body = call.body
    sale = await call.signaling.live.sales.start(
        room_of(call), body["sku"], body["stock"], body.get("per_user_limit", 0),
        body["duration_s"],
    )
    return json_response(sale, status=201)


async def get_sale(call: Call) -> web.StreamResponse:
    return json_response({"sale": await call.signaling.live.sales.current(room_of(call))})


async def create_order(call: Call) -> web.StreamResponse:
    key = call.request.headers.get(IDEMPOTENCY_HEADER, "").strip()
    if not key or len(key) > 128:
        raise bad_request(f"an {IDEMPOTENCY_HEADER} header (1-128 characters) is required",
                          "idempotency_key_required")
    assert call.claims is not None
    order, duplicate = await call.signaling.live.sales.purchase(
        room_of(call), call.claims.identity, call.body["sku"], call.body.get("qty", 1), key
    )
    return json_response(order, status=200 if duplicate else 201)


async def list_orders(call: Call) -> web.StreamResponse:
    assert call.claims is not None
    buyer = "" if allowed(call.claims, Grant.ADMIN) else call.claims.identity
    return json_response({"orders": await call.signaling.live.sales.orders(room_of(call), buyer)})


BASE = "/rooms/{room}"

ROUTES = [
    Route("POST", BASE + "/products", add_product, "Add or replace a product", "addProduct",
          "commerce", body=PRODUCT, response=PRODUCT, status=201,
          description="A pinned product that changes is announced again (`product_pinned`)."),
    Route("GET", BASE + "/products", list_products, "List the room's products", "listProducts",
          "commerce", grant=Grant.SUBSCRIBE,
          response=obj(["products", "pinned"], products=array(PRODUCT),
                       pinned={"description": "pinned sku or null"})),
    Route("POST", BASE + "/pin", pin, "Pin a product", "pinProduct", "commerce",
          body=obj(["sku"], sku={"type": "string", "minLength": 1, "maxLength": 64}),
          response=obj(["product"], product=PRODUCT), errors=(404,),
          description="Everyone in the room gets `product_pinned`; joiners get it in `state`."),
    Route("DELETE", BASE + "/pin", unpin, "Unpin the pinned product", "unpinProduct",
          "commerce", response=obj(["product"], product={"type": "null"})),
    Route("POST", BASE + "/sales", start_sale, "Start a flash sale", "startSale", "commerce",
          body=obj(["sku", "stock", "duration_s"],
                   sku={"type": "string", "minLength": 1, "maxLength": 64},
                   stock={"type": "integer", "minimum": 1, "maximum": MAX_STOCK},
                   per_user_limit={"type": "integer", "minimum": 0, "maximum": MAX_PER_USER,
                                   "description": "0 = no limit"},
                   duration_s={"type": "integer", "minimum": 1, "maximum": MAX_SALE_S}),
          response=SALE, status=201, errors=(404,),
          description="Opens now for duration_s; announced as `sale` with a countdown."),
    Route("GET", BASE + "/sales", get_sale, "The sale on screen", "getSale", "commerce",
          grant=Grant.SUBSCRIBE, response=obj(["sale"], sale=SALE)),
    Route("POST", BASE + "/orders", create_order, "Buy in the flash sale", "createOrder",
          "commerce", grant=Grant.SUBSCRIBE,
          body=obj(["sku"], sku={"type": "string", "minLength": 1, "maxLength": 64},
                   qty={"type": "integer", "minimum": 1, "maximum": MAX_QTY}),
          response=ORDER, status=201, errors=(404, 409, 422),
          headers={IDEMPOTENCY_HEADER: "required; a retry with the same key (and the same sku "
                   "and qty) returns the same order (200) instead of buying again"},
          description="Buyer = the token's sub. One atomic step checks the window, stock, "
          "per-buyer limit and key. 409 codes: sold_out, limit_reached, sale_closed. 422 "
          "idempotency_key_reused: the key was used before for another sku or qty."),
    Route("GET", BASE + "/orders", list_orders, "List orders", "listOrders", "commerce",
          grant=Grant.SUBSCRIBE, response=obj(["orders"], orders=array(ORDER)),
          description="Admins see every order of the room; others see their own."),
]
