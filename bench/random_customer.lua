-- wrk script: GET /v1/customers/{c} for random customers of a `lambda gen` history
-- (names customer-000000 .. customer-099999; CUSTOMERS overrides the count).
local customers = tonumber(os.getenv("CUSTOMERS") or "100000")

function setup(thread)
  thread:set("seed", math.random(1, 1e9))
end

function init(args)
  math.randomseed(seed or os.time())
end

request = function()
  return wrk.format("GET", string.format("/v1/customers/customer-%06d", math.random(0, customers - 1)))
end
