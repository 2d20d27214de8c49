"""Portfolio checks on the test clusters (a Redis Cluster of 3 masters, a 3-node RabbitMQ
cluster): the schedule's shards live on several masters, every call of a check touches
one node, two instances share the checks with redis.minReplicas 1, each alert once."""
import json
import time

from harness import (SCHEDULE_SHARDS, alerts_key, notifications_key, now_ms, portfolio_state_key, quote_key,
                     schedule_entry, schedule_key, stored_quote, wait_until)
from test_domain import domain_config


def test_cluster_portfolio_checks_spread_over_the_masters_each_alert_once(fx):
    c = fx.cluster
    fx.env = c.env
    r = c.redis
    masters = {c.master_of_key(schedule_key(s)) for s in range(SCHEDULE_SHARDS)}
    assert len(masters) >= 2, f"the 16 schedule shards all live on {masters}: one hot node"

    config = domain_config(fx, None, {"redis": {"minReplicas": 1}})
    d1, d2 = fx.daemon(config), fx.daemon(config)
    d1.start().wait_ready(60)
    d2.start().wait_ready(60)
    base = now_ms() - 60_000
    for symbol in ("CPA", "CPB"):
        r("SET", quote_key(symbol), stored_quote(100, 0, base))
    users = [f"cp-{i}" for i in range(40)]
    for u in users:
        spec = {"rules": [{"alertId": 1, "condition": "portfolio_value_below", "threshold": 1500}],
                "channels": ["push"], "checkIntervalMs": 1000,
                "positions": [{"symbol": "CPA", "quantity": 10}, {"symbol": "CPB", "quantity": 10, "costBasis": 90}]}
        rc, out, err = fx.eventctl("monitor", "start", u, json.dumps(spec))
        assert rc == 0, err
    shards = {schedule_entry(u, r)[0] for u in users}
    assert len({c.master_of_key(schedule_key(s)) for s in shards}) >= 2, "the users' shards are on one master"

    def checked(u):
        v = r("HGET", portfolio_state_key(u), "check")
        return int(v) if v else 0
    first = {u: 0 for u in users}
    wait_until(lambda: all(checked(u) > first[u] for u in users), 20, what="a check of every user")
    r("SET", quote_key("CPA"), stored_quote(40, -60, base + 1000))  # value 1400
    wait_until(lambda: all(r("LLEN", alerts_key(u)) >= 1 for u in users), 30, what="every user's alert")
    seen = {u: checked(u) for u in users}
    wait_until(lambda: all(checked(u) > seen[u] for u in users), 20, what="another check of every user")
    time.sleep(1.5)
    counts = {u: r("LLEN", alerts_key(u)) for u in users}
    assert set(counts.values()) == {1}, counts
    wait_until(lambda: all(r("XLEN", notifications_key(u)) == 1 for u in users), 20, what="one notification each")
    a = json.loads(r("LINDEX", alerts_key(users[0]), 0))
    assert a["symbol"] == "PORTFOLIO" and a["currentValue"] == 1400 and a["unrealizedPnl"] == 100, a
    for d in (d1, d2):
        assert not d.logged("portfolio check abandoned until its lease expires"), d.name
        assert not [line for line in d.log_lines() if "CROSSSLOT" in json.dumps(line)], d.name


test_cluster_portfolio_checks_spread_over_the_masters_each_alert_once.timeout = 240
