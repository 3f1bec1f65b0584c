"""The Lua scripts that make RedisStore's read-modify-writes atomic.

Each script touches the keys of one room or one scope (one Redis Cluster hash slot), except
CLAIM_ROOM_NODE, which also checks the owner's heartbeat key. Keys derived inside a script
(a participant's track hash) share the room's hash tag. Records are JSON written by Python;
scripts only decode them to read a field, and re-encode only flat track records.
"""

# KEYS: room; ARGV: record json, metadata json -> {created, record, metadata, node}
CREATE_ROOM = """
if redis.call('HSETNX', KEYS[1], 'record', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'metadata', ARGV[2], 'node', '')
  return {1, ARGV[1], ARGV[2], ''}
end
local r = redis.call('HMGET', KEYS[1], 'record', 'metadata', 'node')
return {0, r[1], r[2], r[3]}
"""

# KEYS: room; ARGV: metadata json -> 1 | 0
SET_ROOM_METADATA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'metadata', ARGV[1])
return 1
"""

# KEYS: room, participants, pmeta, counts; ARGV: track key prefix, '1' to delete only if empty
# -> nil | {room fields, participants flat, pmeta flat, {tracks flat per participant}}
DELETE_ROOM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if ARGV[2] == '1' and redis.call('HLEN', KEYS[2]) > 0 then return false end
local room = redis.call('HGETALL', KEYS[1])
local parts = redis.call('HGETALL', KEYS[2])
local metas = redis.call('HGETALL', KEYS[3])
local tracks = {}
for i = 1, #parts, 2 do
  local key = ARGV[1] .. parts[i]
  tracks[#tracks + 1] = redis.call('HGETALL', key)
  redis.call('DEL', key)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return {room, parts, metas, tracks}
"""

# KEYS: room, the room's key index -> how many keys went (0 when the room exists again: it
# was re-created between the close and this). The index names every key written in the
# room's scope (all with its hash tag), so nothing is scanned.
DROP_ROOM_DATA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local n = 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[2])) do n = n + redis.call('UNLINK', key) end
redis.call('UNLINK', KEYS[2])
return n
"""

# KEYS: room, participants, pmeta, counts; ARGV: sid, static json, metadata json, transport
# -> -1 no room | 0 exists | 1 added
ADD_PARTICIPANT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('HINCRBY', KEYS[4], ARGV[4], 1)
return 1
"""

# KEYS: participants, pmeta, counts, tracks of sid; ARGV: sid
# -> nil | {static json, metadata json, tracks flat}
REMOVE_PARTICIPANT = """
local static = redis.call('HGET', KEYS[1], ARGV[1])
if not static then return false end
local meta = redis.call('HGET', KEYS[2], ARGV[1]) or '{}'
local tracks = redis.call('HGETALL', KEYS[4])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[4])
redis.call('HINCRBY', KEYS[3], cjson.decode(static)['transport'], -1)
return {static, meta, tracks}
"""

# KEYS: participants, target hash; ARGV: sid, field, value -> 1 | 0
SET_IF_PARTICIPANT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"""

# KEYS: tracks of sid; ARGV: track sid -> removed json | nil
REMOVE_TRACK = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then redis.call('HDEL', KEYS[1], ARGV[1]) end
return v
"""

# KEYS: tracks of sid; ARGV: track sid, '1'|'0' -> updated json | nil
SET_TRACK_MUTED = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return false end
local t = cjson.decode(v)
t['muted'] = ARGV[2] == '1'
v = cjson.encode(t)
redis.call('HSET', KEYS[1], ARGV[1], v)
return v
"""

# KEYS: room; ARGV: node id, node key prefix -> owner | -1 when no room
CLAIM_ROOM_NODE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local owner = redis.call('HGET', KEYS[1], 'node')
if owner and owner ~= '' and redis.call('EXISTS', ARGV[2] .. owner) == 1 then return owner end
redis.call('HSET', KEYS[1], 'node', ARGV[1])
return ARGV[1]
"""

# KEYS: room; ARGV: node id -> 1 | 0
RELEASE_ROOM_NODE = """
if redis.call('HGET', KEYS[1], 'node') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'node', '')
return 1
"""

# KEYS: counter, the scope's key index; ARGV: by, ttl ms -> new value
INCR = """
local existed = redis.call('EXISTS', KEYS[1])
if existed == 0 then redis.call('SADD', KEYS[2], KEYS[1]) end
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if existed == 0 and tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v
"""

# KEYS: pool, held, ledger, idempotency, the scope's key index
# ARGV: holder, qty, limit, now ms, record, idempotency ttl ms, '1' when a key was given,
#       request (what the key buys; '' = not compared)
# -> {outcome, remaining, held, record}
# The idempotency key is a hash {record, request}; a string is a key written before keys
# remembered their request, replayed as it is.
CONSUME = """
local function held_by(h) return tonumber(redis.call('HGET', KEYS[2], h) or '0') end
if ARGV[7] == '1' then
  local kind = redis.call('TYPE', KEYS[4])['ok']
  local first, request = nil, nil
  if kind == 'hash' then
    local f = redis.call('HMGET', KEYS[4], 'record', 'request')
    first, request = f[1], f[2]
  elseif kind == 'string' then
    first = redis.call('GET', KEYS[4])
  end
  if first then
    local rem = tonumber(redis.call('HGET', KEYS[1], 'remaining') or '0')
    if request and request ~= '' and ARGV[8] ~= '' and request ~= ARGV[8] then
      return {'key_reused', rem, held_by(ARGV[1]), ''}
    end
    return {'duplicate', rem, held_by(ARGV[1]), first}
  end
end
local p = redis.call('HMGET', KEYS[1], 'remaining', 'opens', 'closes')
if not p[1] then return {'unknown', 0, 0, ''} end
local remaining, opens, closes = tonumber(p[1]), tonumber(p[2]), tonumber(p[3])
local now, qty, limit = tonumber(ARGV[4]), tonumber(ARGV[2]), tonumber(ARGV[3])
local held = held_by(ARGV[1])
if now < opens or (closes > 0 and now >= closes) then return {'closed', remaining, held, ''} end
if qty > remaining then return {'exhausted', remaining, held, ''} end
if limit > 0 and held + qty > limit then return {'limit', remaining, held, ''} end
redis.call('HINCRBY', KEYS[1], 'remaining', -qty)
held = redis.call('HINCRBY', KEYS[2], ARGV[1], qty)
redis.call('RPUSH', KEYS[3], ARGV[5])
if ARGV[7] == '1' then
  redis.call('HSET', KEYS[4], 'record', ARGV[5], 'request', ARGV[8])
  redis.call('PEXPIRE', KEYS[4], ARGV[6])
  redis.call('SADD', KEYS[5], KEYS[4])
end
return {'ok', remaining - qty, held, ARGV[5]}
"""
