-- wrk script for etcd's HTTP/JSON gateway (etcd 3.4: POST /v3/kv/put and
-- POST /v3/kv/range, keys and values base64 in JSON).
--   MODE=put    durable puts of VALUE_SIZE-byte values; each wrk thread walks
--               its share of the key space in order, so a run of a few seconds
--               creates every key once before overwriting.
--   MODE=range  linearizable reads (the gateway's default: serializable=false)
--               of uniformly random keys.
-- Environment: MODE, KEYS (default 10000), VALUE_SIZE (default 1024),
-- KEY_PREFIX (default "bench"), THREAD_OFFSET / THREAD_STRIDE (to split the
-- key walk between several wrk processes).
local mode = os.getenv("MODE") or "put"
local keys = tonumber(os.getenv("KEYS") or "10000")
local value_size = tonumber(os.getenv("VALUE_SIZE") or "1024")
local prefix = os.getenv("KEY_PREFIX") or "bench"
local offset = tonumber(os.getenv("THREAD_OFFSET") or "0")
local stride = tonumber(os.getenv("THREAD_STRIDE") or "1")

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

-- Standard base64 (RFC 4648) with padding, arithmetic only (no bit library).
local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local d1 = math.floor(n / 262144) % 64
    local d2 = math.floor(n / 4096) % 64
    local d3 = math.floor(n / 64) % 64
    local d4 = n % 64
    out[#out + 1] = alphabet:sub(d1 + 1, d1 + 1) .. alphabet:sub(d2 + 1, d2 + 1)
      .. (b and alphabet:sub(d3 + 1, d3 + 1) or "=")
      .. (c and alphabet:sub(d4 + 1, d4 + 1) or "=")
  end
  return table.concat(out)
end

local threads = 0
function setup(thread)
  thread:set("tid", threads)
  thread:set("seed", math.random(1, 2147483647))
  threads = threads + 1
end

local encoded_keys = {}
local value_b64
local next_index
local step
local headers = { ["Content-Type"] = "application/json" }

function init(args)
  math.randomseed(seed or os.time())
  for i = 0, keys - 1 do
    encoded_keys[i] = b64(prefix .. "-" .. i)
  end
  value_b64 = b64(string.rep("v", value_size))
  -- Thread tid of process THREAD_OFFSET (of THREAD_STRIDE processes, each
  -- with WRK_THREADS threads) starts at offset + stride * tid and steps over
  -- every other thread's start: together they cover the key space.
  local per_process = tonumber(os.getenv("WRK_THREADS") or "1")
  step = stride * per_process
  next_index = offset + stride * (tid or 0)
  if (tid or 0) == 0 then
    -- wrk calls request() once on its first thread to inspect the request
    -- (script_verify_request in wrk.c) without sending it: start one step
    -- back so that this call, not the first key, is the one thrown away.
    next_index = next_index - step
  end
end

function request()
  if mode == "put" then
    local k = encoded_keys[next_index % keys]
    next_index = next_index + step
    return wrk.format("POST", "/v3/kv/put", headers,
      '{"key":"' .. k .. '","value":"' .. value_b64 .. '"}')
  else
    local k = encoded_keys[math.random(0, keys - 1)]
    return wrk.format("POST", "/v3/kv/range", headers, '{"key":"' .. k .. '"}')
  end
end
