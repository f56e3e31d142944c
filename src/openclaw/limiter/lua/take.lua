-- Token-bucket refill-and-take: the twin of openclaw.limiter.core.refill_and_take.
-- Keep the two expression-for-expression identical: a property test demands bit-identical
-- decisions from both.
--
-- One call decides one or more requests (coalesced by the client), each atomically:
--   KEYS[k]  the bucket key of request k (hash-tagged, so a call's keys can share a slot)
--   ARGV[1]  '' to use Redis TIME (production); an explicit time in seconds (tests only)
--   ARGV[2]  the numbers of every request in order, space-separated (one argument is far
--            cheaper for the client to send than five per request):
--            cost n capacity_1 refill_rate_1 ... capacity_n refill_rate_n
-- The value at a key is "tokens_1 updated_at_1 ... tokens_n updated_at_n" (%.17g, exact),
-- kept for as long as the slowest bucket needs to refill: an absent key is a full bucket.
-- Returns one string per request: "allowed remaining limit retry_after reset_after".

local NEVER = math.huge

local now
if ARGV[1] == '' then
  -- Redis time, so replicas with skewed clocks agree on every bucket.
  local t = redis.call('TIME')
  now = (tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000000
else
  now = tonumber(ARGV[1])
end

local function fmt(x)
  return string.format('%.17g', x)
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

local nums = {}
for v in string.gmatch(ARGV[2], '%S+') do
  nums[#nums + 1] = tonumber(v)
end

local out = {}
local a = 1
for k = 1, #KEYS do
  local key = KEYS[k]
  local cost = nums[a]
  local n = nums[a + 1]
  a = a + 2

  local saved = {}
  local raw = redis.call('GET', key)
  if raw then
    for v in string.gmatch(raw, '%S+') do
      saved[#saved + 1] = tonumber(v)
    end
  end

  local caps, rates, levels = {}, {}, {}
  local fits = true
  local never = 0 -- index of the first limit whose capacity is below the cost
  for i = 1, n do
    local capacity = nums[a]
    local rate = nums[a + 1]
    a = a + 2
    caps[i] = capacity
    rates[i] = rate
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
      value[#value + 1] = fmt(level)
      value[#value + 1] = fmt(now)
      if level < levels[binding] then
        binding = i
      end
      local full_in = time_to_full(level, caps[i], rates[i])
      if full_in > reset_after then
        reset_after = full_in
      end
    end
    local body = table.concat(value, ' ')
    if reset_after == NEVER then
      redis.call('SET', key, body)
    else
      local ttl_ms = math.ceil(reset_after * 1000)
      if ttl_ms < 1 then
        ttl_ms = 1
      end
      redis.call('SET', key, body, 'PX', ttl_ms)
    end
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
          if rates[i] > 0.0 then
            wait = (cost - levels[i]) / rates[i]
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
      local full_in = time_to_full(levels[i], caps[i], rates[i])
      if full_in > reset_after then
        reset_after = full_in
      end
    end
  end
  out[k] = allowed .. ' ' .. fmt(levels[binding]) .. ' ' .. fmt(caps[binding]) .. ' '
    .. fmt(retry_after) .. ' ' .. fmt(reset_after)
end
return out
