-- wrk script: GET /v1/kv/{prefix}-{n} for uniformly random n in [0, KEYS).
-- The keys must have been preloaded (ringkv-bench --phases load).
-- Environment: KEYS (default 10000), KEY_PREFIX (default "bench").
local keys = tonumber(os.getenv("KEYS") or "10000")
local prefix = os.getenv("KEY_PREFIX") or "bench"

function setup(thread)
  thread:set("seed", math.random(1, 2147483647))
end

function init(args)
  math.randomseed(seed or os.time())
end

function request()
  return wrk.format("GET", "/v1/kv/" .. prefix .. "-" .. math.random(0, keys - 1))
end
