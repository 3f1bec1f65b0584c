// Minimal MessagePack encode/decode for room events (maps, arrays, strings, numbers, nil, bool,
// bin). No dependency and no build step; enough for every type in docs/events.md.

const te = new TextEncoder();
const td = new TextDecoder();

export function encode(value) {
  const out = [];
  const u8 = (b) => out.push(b & 0xff);
  const be = (n, bytes) => { for (let i = bytes - 1; i >= 0; i--) u8(Math.floor(n / 2 ** (8 * i))); };
  const put = (v) => {
    if (v === null || v === undefined) return u8(0xc0);
    if (v === false) return u8(0xc2);
    if (v === true) return u8(0xc3);
    if (typeof v === "number") {
      if (Number.isInteger(v) && v >= 0 && v < 2 ** 32) {
        if (v < 0x80) return u8(v);
        if (v < 0x100) { u8(0xcc); return u8(v); }
        if (v < 0x10000) { u8(0xcd); return be(v, 2); }
        u8(0xce); return be(v, 4);
      }
      if (Number.isInteger(v) && v < 0 && v >= -(2 ** 31)) {
        if (v >= -32) return u8(0xe0 | (v + 32));
        if (v >= -128) { u8(0xd0); return u8(v + 256); }
        if (v >= -32768) { u8(0xd1); return be(v + 65536, 2); }
        u8(0xd2); return be(v + 2 ** 32, 4);
      }
      const buf = new DataView(new ArrayBuffer(8));
      buf.setFloat64(0, v);
      u8(0xcb);
      for (let i = 0; i < 8; i++) u8(buf.getUint8(i));
      return;
    }
    if (typeof v === "string") {
      const bytes = te.encode(v);
      const n = bytes.length;
      if (n < 32) u8(0xa0 | n);
      else if (n < 0x100) { u8(0xd9); u8(n); }
      else if (n < 0x10000) { u8(0xda); be(n, 2); }
      else { u8(0xdb); be(n, 4); }
      for (const b of bytes) out.push(b);
      return;
    }
    if (v instanceof Uint8Array) {
      const n = v.length;
      if (n < 0x100) { u8(0xc4); u8(n); } else if (n < 0x10000) { u8(0xc5); be(n, 2); } else { u8(0xc6); be(n, 4); }
      for (const b of v) out.push(b);
      return;
    }
    if (Array.isArray(v)) {
      const n = v.length;
      if (n < 16) u8(0x90 | n); else if (n < 0x10000) { u8(0xdc); be(n, 2); } else { u8(0xdd); be(n, 4); }
      v.forEach(put);
      return;
    }
    if (typeof v === "object") {
      const keys = Object.keys(v).filter((k) => v[k] !== undefined);
      const n = keys.length;
      if (n < 16) u8(0x80 | n); else if (n < 0x10000) { u8(0xde); be(n, 2); } else { u8(0xdf); be(n, 4); }
      for (const k of keys) { put(k); put(v[k]); }
      return;
    }
    throw new TypeError("cannot encode " + typeof v);
  };
  put(value);
  return new Uint8Array(out);
}

export function decode(buffer) {
  const bytes = buffer instanceof Uint8Array ? buffer : new Uint8Array(buffer);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;
  const str = (n) => { const s = td.decode(bytes.subarray(pos, pos + n)); pos += n; return s; };
  const bin = (n) => { const b = bytes.slice(pos, pos + n); pos += n; return b; };
  const arr = (n) => { const a = []; for (let i = 0; i < n; i++) a.push(get()); return a; };
  const map = (n) => {
    const m = {};
    for (let i = 0; i < n; i++) { const k = get(); m[k] = get(); }
    return m;
  };
  const u = (n) => {
    let v = 0;
    for (let i = 0; i < n; i++) v = v * 256 + bytes[pos + i];
    pos += n;
    return v;
  };
  const get = () => {
    const t = bytes[pos++];
    if (t === undefined) throw new RangeError("truncated msgpack");
    if (t < 0x80) return t;
    if (t < 0x90) return map(t & 0x0f);
    if (t < 0xa0) return arr(t & 0x0f);
    if (t < 0xc0) return str(t & 0x1f);
    if (t >= 0xe0) return t - 256;
    switch (t) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return bin(u(1));
      case 0xc5: return bin(u(2));
      case 0xc6: return bin(u(4));
      case 0xca: { const v = view.getFloat32(pos); pos += 4; return v; }
      case 0xcb: { const v = view.getFloat64(pos); pos += 8; return v; }
      case 0xcc: return u(1);
      case 0xcd: return u(2);
      case 0xce: return u(4);
      case 0xcf: { const v = Number(view.getBigUint64(pos)); pos += 8; return v; }
      case 0xd0: { const v = view.getInt8(pos); pos += 1; return v; }
      case 0xd1: { const v = view.getInt16(pos); pos += 2; return v; }
      case 0xd2: { const v = view.getInt32(pos); pos += 4; return v; }
      case 0xd3: { const v = Number(view.getBigInt64(pos)); pos += 8; return v; }
      case 0xd9: return str(u(1));
      case 0xda: return str(u(2));
      case 0xdb: return str(u(4));
      case 0xdc: return arr(u(2));
      case 0xdd: return arr(u(4));
      case 0xde: return map(u(2));
      case 0xdf: return map(u(4));
      default: throw new TypeError("unsupported msgpack type 0x" + t.toString(16));
    }
  };
  return get();
}
