-- Token-bucket refill-and-take: the twin of openclaw.limiter.core.refill_and_take.
-- Keep the two expression-for-expression identical: a property test demands bit-identical
-- decisions from both.
--
-- One call decides one or more requests (coalesced by the client), each atomically:
--   KEYS[k]  the bucket key of request k (hash-tagged, so a call's keys can share a slot)
--   ARGV[1]  '' to use Redis TIME (production); an explicit time in seconds (tests only)
--   ARGV[2]  the numbers of every request in order, as little-endian doubles (struct '<d'):
--            cost ttl n capacity_1 refill_rate_1 ... capacity_n refill_rate_n
-- The value at a key is the byte FORMAT, then tokens_i updated_at_i of each limit (doubles),
-- kept for as long as the slowest bucket needs to refill (an absent key is a full bucket), or
-- for ttl seconds if that is sooner (inf: no such bound; a key that stops mattering sooner,
-- such as a window's buckets, need not wait to refill).
-- Returns one string, per request the struct '<Bdddd':
--   allowed (1 or 0) remaining limit retry_after reset_after
--
-- Numbers travel as the eight bytes of a double, never as decimal text: exact by
-- construction, and formatting and parsing text was most of the cost of a decision.

local NEVER = math.huge
-- The first byte of a value. Values written before it ("%.17g" text, space-separated) start
-- with a digit or '-', and are still read: buckets survive an upgrade.
local FORMAT = 1
local FORMAT_BYTE = string.char(FORMAT)
local VALUE_1 = '<Bdd' -- the value of a key with one limit
local REPLY = '<Bdddd'
-- Past this a bucket is kept without expiry, as one that never refills is: it needs some
-- 31,700 years to refill, and Redis would refuse a PX that does not fit its integers.
local MAX_TTL_MS = 1e15

local spread = unpack -- Lua's, of a table; unpack is struct's below
local pack, unpack, byte = struct.pack, struct.unpack, string.byte

-- '<' and count 'd's: the struct format of that many doubles, built once per call.
local formats = {}
local function doubles(count)
  local f = formats[count]
  if not f then
    f = '<' .. string.rep('d', count)
    formats[count] = f
  end
  return f
end

local now
if ARGV[1] == '' then
  -- Redis time, so replicas with skewed clocks agree on every bucket.
  local t = redis.call('TIME')
  now = (tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000000
else
  now = tonumber(ARGV[1])
end

local function time_to_full(tokens, capacity, rate)
  if tokens >= capacity then
    return 0.0
  end
  if rate > 0.0 then
    return (capacity - tokens) / rate
  end
  return NEVER
end

-- tokens_1 updated_at_1 ... of a stored value, as many as it holds (none: full buckets).
local function load(raw)
  local saved = {}
  if not raw then
    return saved
  end
  if byte(raw, 1) == FORMAT then
    local count = (#raw - 1) / 8
    saved = { unpack(doubles(count), raw, 2) }
    saved[count + 1] = nil -- unpack's next position
  else
    for v in string.gmatch(raw, '%S+') do
      saved[#saved + 1] = tonumber(v)
    end
  end
  return saved
end

-- Keep a value until every bucket in it is full again (reset_after seconds), or ttl seconds.
local function save(key, value, reset_after, ttl)
  if ttl < reset_after then
    reset_after = ttl
  end
  local ttl_ms = math.ceil(reset_after * 1000)
  if ttl_ms > MAX_TTL_MS then -- also NEVER
    redis.call('SET', key, value)
  else
    if ttl_ms < 1 then
      ttl_ms = 1
    end
    -- As text: Redis would format a Lua number with '%.17g', which costs more.
    redis.call('SET', key, value, 'PX', string.format('%d', ttl_ms))
  end
end

local args = ARGV[2]
local pos = 1
local out = {}
for k = 1, #KEYS do
  local key = KEYS[k]
  -- The first limit comes with the cost: one unpack reads all of a one-limit request.
  local cost, ttl, n, capacity, rate
  cost, ttl, n, capacity, rate, pos = unpack('<ddddd', args, pos)
  local raw = redis.call('GET', key)

  if n == 1 then
    -- The common case without tables: the same expressions as the loop below.
    local tokens, updated_at
    if raw then
      if byte(raw, 1) == FORMAT then
        tokens, updated_at = unpack('<dd', raw, 2)
      else
        local t, u = string.match(raw, '^(%S+) (%S+)')
        tokens, updated_at = tonumber(t), tonumber(u)
      end
    end
    local level
    if tokens == nil or updated_at == nil then
      level = capacity
    else
      local elapsed = now - updated_at
      if elapsed < 0.0 then
        elapsed = 0.0
      end
      level = tokens + elapsed * rate
      if level > capacity then
        level = capacity
      end
    end
    if cost > capacity then
      out[k] = pack(REPLY, 0, level, capacity, NEVER, time_to_full(level, capacity, rate))
    elseif level < cost then
      local wait
      if rate > 0.0 then
        wait = (cost - level) / rate
      else
        wait = NEVER
      end
      out[k] = pack(REPLY, 0, level, capacity, wait, time_to_full(level, capacity, rate))
    else
      level = level - cost
      local reset_after = time_to_full(level, capacity, rate)
      save(key, pack(VALUE_1, FORMAT, level, now), reset_after, ttl)
      out[k] = pack(REPLY, 1, level, capacity, 0.0, reset_after)
    end
  else
    local saved = load(raw)
    -- capacity_i is params[2i - 1], refill_rate_i params[2i]
    local params = { capacity, rate, unpack(doubles(2 * n - 2), args, pos) }
    pos = params[2 * n + 1]
    local levels = {}
    local fits = true
    local never = 0 -- index of the first limit whose capacity is below the cost
    for i = 1, n do
      capacity = params[2 * i - 1]
      rate = params[2 * i]
      local level
      local tokens, updated_at = saved[2 * i - 1], saved[2 * i]
      if tokens == nil or updated_at == nil then
        level = capacity
      else
        local elapsed = now - updated_at
        if elapsed < 0.0 then
          elapsed = 0.0
        end
        level = tokens + elapsed * rate
        if level > capacity then
          level = capacity
        end
      end
      levels[i] = level
      if cost > capacity then
        if never == 0 then
          never = i
        end
      elseif level < cost then
        fits = false
      end
    end

    local allowed, binding, retry_after, reset_after
    if never == 0 and fits then
      allowed = 1
      binding = 1
      retry_after = 0.0
      reset_after = 0.0
      local value = {}
      for i = 1, n do
        local level = levels[i] - cost
        levels[i] = level
        value[2 * i - 1] = level
        value[2 * i] = now
        if level < levels[binding] then
          binding = i
        end
        local full_in = time_to_full(level, params[2 * i - 1], params[2 * i])
        if full_in > reset_after then
          reset_after = full_in
        end
      end
      save(key, FORMAT_BYTE .. pack(doubles(2 * n), spread(value)), reset_after, ttl)
    else
      allowed = 0
      if never > 0 then
        binding = never
        retry_after = NEVER
      else
        binding = 0
        retry_after = 0.0
        for i = 1, n do
          if levels[i] < cost then
            local wait
            if params[2 * i] > 0.0 then
              wait = (cost - levels[i]) / params[2 * i]
            else
              wait = NEVER
            end
            if binding == 0 or wait > retry_after then
              binding = i
              retry_after = wait
            end
          end
        end
      end
      reset_after = 0.0
      for i = 1, n do
        local full_in = time_to_full(levels[i], params[2 * i - 1], params[2 * i])
        if full_in > reset_after then
          reset_after = full_in
        end
      end
    end
    out[k] = pack(REPLY, allowed, levels[binding], params[2 * binding - 1], retry_after, reset_after)
  end
end
return table.concat(out)
