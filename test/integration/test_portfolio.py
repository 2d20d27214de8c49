"""Portfolio monitors: positions valued at the latest quotes (monitor status), portfolio
rules checked every checkIntervalMs from the schedule in Redis, edge-triggered with
cooldown, quote_stale on a silent feed, stop, two instances sharing the checks, and
alerts neither lost nor doubled when an instance dies mid-check.

Checks run every second here (checkIntervalMs 1000, the minimum). A user's state hash
records the due time of the last check applied (`check`), so a test can wait for "the
next check" without guessing at timing.
"""
import json
import random
import socket
import time

from harness import (MONITORS_KEY, monitor_key, now_ms, portfolio_outbox_key, portfolio_state_key, quote_key,
                     mgmt, rabbitmqctl, redis, schedule_claims_key, schedule_entry, schedule_key,
                     stored_quote, wait_until)
from test_domain import alerts, domain_config, monitor_start, send_quote, settle, stream

INTERVAL = 1000


# ---------------------------------------------------------------- helpers

def last_check(user):
    """The due time of the user's last applied check (0: none yet)."""
    value = redis("HGET", portfolio_state_key(user), "check")
    return int(value) if value else 0


def wait_checks(user, n=1, timeout=None):
    """Waits until n more checks of the user were applied; returns the last one's due time."""
    seen = [last_check(user)]

    def more():
        c = last_check(user)
        if c != seen[-1]:
            seen.append(c)
        return c if len(seen) > n else None
    return wait_until(more, timeout or 5 + 2 * n, 0.05, what=f"{n} more check(s) of {user}")


def status(fx, user):
    rc, out, err = fx.eventctl("monitor", "status", user)
    assert rc == 0, f"monitor status {user} exited {rc}: {err}"
    return json.loads(out)


def position(symbol, quantity, cost=None):
    p = {"symbol": symbol, "quantity": quantity}
    if cost is not None:
        p["costBasis"] = cost
    return p


def prule(alert_id, condition, threshold=None, symbol=None, seconds=None, cooldown=None):
    r = {"alertId": alert_id, "condition": condition}
    if symbol is not None:
        r["symbol"] = symbol
    if threshold is not None:
        r["threshold"] = threshold
    if seconds is not None:
        r["thresholdSec"] = seconds
    if cooldown is not None:
        r["cooldownSec"] = cooldown
    return r


def set_quote(symbol, price, change=0.0, ts=None):
    """The latest quote as quote_update stores it (the key layout is the contract)."""
    redis("SET", quote_key(symbol), stored_quote(repr(price), repr(change), now_ms() if ts is None else ts))


def fired(user):
    """(alertId, condition) of the user's alerts, oldest first."""
    return [(a["alertId"], a["condition"]) for a in alerts(user)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(port):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("eventd_portfolio_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def checks_config(fx, overrides=None, http_port=None):
    config = domain_config(fx, None, overrides or {})
    if http_port:
        config = dict(config, http={"enabled": True, "listen": f"127.0.0.1:{http_port}"})
    return config


# ---------------------------------------------------------------- eventctl

def test_portfolio_status_values_positions_at_the_latest_quotes(fx):
    spec = {"rules": [prule(1, "portfolio_value_below", 5000), prule(2, "position_pnl_pct_below", -10, "AAPL"),
                      prule(3, "quote_stale", symbol="NVDA", seconds=60),
                      {"alertId": 4, "symbol": "AAPL", "condition": "price_above", "threshold": 300}],
            "channels": ["push"], "checkIntervalMs": 5000,
            "positions": [position("AAPL", 10, 150), position("MSFT", 5), position("NVDA", 2, 400)]}
    ts = now_ms() - 30_000
    set_quote("AAPL", 187.5, -2.5, ts)
    set_quote("MSFT", 400, 4, ts + 1)
    out = monitor_start(fx, "pf-st", spec)
    assert out == "monitor for pf-st running: 4 rule(s), 3 of them portfolio rules checked every 5000 ms\n", out
    st = status(fx, "pf-st")
    assert st["status"] == "running" and st["spec"]["positions"] == spec["positions"], st
    p = st["portfolio"]
    aapl, msft, nvda = p["positions"]
    assert aapl["symbol"] == "AAPL" and aapl["quoted"] is True, aapl
    assert aapl["price"] == 187.5 and aapl["change"] == -2.5 and aapl["quoteTime"] == ts, aapl
    assert 29 <= aapl["quoteAgeSec"] <= 60, aapl
    assert aapl["marketValue"] == 1875 and aapl["dayChange"] == -25, aapl
    assert aapl["costBasis"] == 150 and aapl["unrealizedPnl"] == 375 and aapl["unrealizedPnlPct"] == 25, aapl
    assert msft["marketValue"] == 2000 and "unrealizedPnl" not in msft, msft  # no cost basis: no P&L at all
    # No quote yet: shown as such, not as zero.
    assert nvda["quoted"] is False and nvda["price"] is None and nvda["quoteTime"] is None, nvda
    assert nvda["marketValue"] is None and nvda["unrealizedPnl"] is None, nvda
    assert p["unquoted"] == ["NVDA"], p
    assert p["totals"] == {"marketValue": None, "dayChange": None, "dayChangePct": None, "unrealizedPnl": None,
                           "unrealizedPnlPct": None}, p["totals"]
    by_id = {r["alertId"]: r for r in p["rules"]}
    assert set(by_id) == {1, 2, 3}, p["rules"]  # the price rule is evaluated per quote, not here
    assert by_id[1]["holdsNow"] is None and by_id[1]["notEvaluated"] == "no quote yet for NVDA", by_id[1]
    assert by_id[2]["holdsNow"] is False and by_id[2]["currentValue"] == 25, by_id[2]
    assert by_id[3]["holdsNow"] is False and by_id[3]["symbol"] == "NVDA", by_id[3]  # silent since the start only
    assert p["schedule"]["nextCheckAt"] is not None and p["schedule"]["checkInProgress"] is False, p["schedule"]

    # Once NVDA is quoted, the totals are there.
    set_quote("NVDA", 500, 10, ts + 2)
    p = status(fx, "pf-st")["portfolio"]
    assert p["unquoted"] == [], p
    t = p["totals"]
    assert t["marketValue"] == 1875 + 2000 + 1000 and t["dayChange"] == -25 + 20 + 20, t
    close = 10 * 190 + 5 * 396 + 2 * 490
    assert abs(t["dayChangePct"] - 15 / close * 100) < 1e-9, t
    assert t["unrealizedPnl"] == 375 + 200 and abs(t["unrealizedPnlPct"] - 575 / 2300 * 100) < 1e-9, t
    assert {r["alertId"]: r["holdsNow"] for r in p["rules"]}[1] is True  # 4875 < 5000


def test_quote_hashes_of_an_older_eventd_are_read_by_checks_and_status(fx):
    # Before 2026-12 the latest quote was a hash, converted at the symbol's next quote: a
    # symbol not quoted since the upgrade still values its positions, in a check (which
    # only reads) and in `monitor status` (which converts it).
    fx.start_daemon(checks_config(fx))
    ts = now_ms() - 30_000
    redis("HSET", quote_key("PFO"), "price", "20", "change", "-1", "timestamp", ts)
    spec = {"rules": [prule(1, "portfolio_value_below", 250)], "channels": ["push"], "checkIntervalMs": INTERVAL,
            "positions": [position("PFO", 10)]}
    monitor_start(fx, "pf-old", spec)
    wait_until(lambda: fired("pf-old") == [(1, "portfolio_value_below")], 15, what="the alert from the hash's quote")
    assert alerts("pf-old")[0]["currentValue"] == 200, alerts("pf-old")
    assert redis("TYPE", quote_key("PFO")) == "hash", "a check wrote the quote"
    [pfo] = status(fx, "pf-old")["portfolio"]["positions"]
    assert pfo["price"] == 20 and pfo["change"] == -1 and pfo["quoteTime"] == ts, pfo
    assert redis("GET", quote_key("PFO")) == stored_quote(20, -1, ts), "monitor status left the hash"


def test_portfolio_spec_mistakes_are_one_line_each(fx):
    held = [position("AAPL", 1, 100), position("MSFT", 2)]
    invalid = [
        ("takes no symbol", [prule(1, "portfolio_value_below", 10, "AAPL")]),
        ("threshold", [prule(1, "portfolio_value_above")]),
        ("thresholdSec", [prule(1, "quote_stale", symbol="AAPL")]),
        ("not threshold", [prule(1, "quote_stale", 5, "AAPL", seconds=5)]),
        ("neither a position nor watched", [prule(1, "quote_stale", symbol="TSLA", seconds=5)]),
        ("with a costBasis", [prule(1, "position_pnl_pct_below", -5, "MSFT")]),
        ("only quote_stale", [prule(1, "portfolio_change_pct_below", -5, seconds=5)]),
    ]
    for word, rules in invalid:
        rc, out, err = fx.eventctl("monitor", "start", "pf-bad", json.dumps(
            {"rules": rules, "channels": ["push"], "positions": held}))
        assert rc == 2 and len(err.splitlines()) == 1 and word in err and out == "", (word, rc, out, err)
    rc, out, err = fx.eventctl("monitor", "start", "pf-bad", json.dumps(
        {"rules": [], "channels": [], "positions": held + [position("AAPL", 3)]}))
    assert rc == 2 and "/positions/2/symbol" in err and "one position per symbol" in err, err
    rc, out, err = fx.eventctl("monitor", "start", "pf-bad", json.dumps(
        {"rules": [], "channels": [], "positions": [position("AAPL", 1, 0)]}))
    assert rc == 2 and "/positions/0/costBasis: must be > 0" in err, err
    for key in (monitor_key("pf-bad"), portfolio_state_key("pf-bad")):
        assert redis("EXISTS", key) == 0, f"an invalid spec wrote {key}"
    assert schedule_entry("pf-bad") is None


def test_only_monitors_with_portfolio_rules_are_scheduled(fx):
    monitor_start(fx, "pf-none", {"rules": [{"alertId": 1, "symbol": "A", "condition": "price_above", "threshold": 1}],
                                  "channels": [], "positions": [position("A", 1)]})
    assert schedule_entry("pf-none") is None
    before = now_ms()
    monitor_start(fx, "pf-some", {"rules": [prule(1, "portfolio_value_above", 1)], "channels": [],
                                  "positions": [position("A", 1)], "checkIntervalMs": INTERVAL})
    shard, due, claimed = schedule_entry("pf-some")
    assert before <= due <= now_ms() and claimed is None, (due, before)  # due at once
    # A new spec without portfolio rules takes the user off; rules back put it on again.
    monitor_start(fx, "pf-some", {"rules": [], "channels": []})
    assert schedule_entry("pf-some") is None
    monitor_start(fx, "pf-some", {"rules": [prule(1, "portfolio_value_above", 1)], "channels": []})
    assert schedule_entry("pf-some") is not None
    assert redis("ZCARD", schedule_key(shard)) == 1


# ---------------------------------------------------------------- checks

def test_portfolio_rules_fire_once_at_the_next_check_and_not_again_while_they_hold(fx):
    fx.start_daemon(checks_config(fx))
    base = now_ms() - 60_000
    send_quote(fx, "PFA", 100, 0, ts=base)
    send_quote(fx, "PFB", 200, 0, ts=base)
    spec = {"rules": [prule(1, "portfolio_value_below", 2500), prule(2, "portfolio_value_above", 4000),
                      prule(3, "portfolio_change_pct_below", -5), prule(4, "position_pnl_pct_below", -10, "PFA")],
            "channels": ["push"], "checkIntervalMs": INTERVAL,
            "positions": [position("PFA", 10, 100), position("PFB", 10, 200)]}
    monitor_start(fx, "pf", spec)
    wait_checks("pf", 2)  # value 3000, nothing holds
    assert alerts("pf") == []

    steps = [  # quotes, then the alerts expected after the next check (cumulative)
        # PFA -15 %: its P&L rule; the portfolio is down exactly 5 % (not below -5).
        ([("PFA", 85, -15)], [(4, "position_pnl_pct_below")]),
        # PFB down too: value 2450 < 2500, the day's change -18 %.
        ([("PFB", 160, -40)], [(4, "position_pnl_pct_below"), (1, "portfolio_value_below"),
                               (3, "portfolio_change_pct_below")]),
        # Everything recovers: value 4100 > 4000.
        ([("PFA", 250, 150)], [(4, "position_pnl_pct_below"), (1, "portfolio_value_below"),
                               (3, "portfolio_change_pct_below"), (2, "portfolio_value_above")]),
        # And falls back: the three that turned false fire again (no cooldown).
        ([("PFA", 85, -15)], [(4, "position_pnl_pct_below"), (1, "portfolio_value_below"),
                              (3, "portfolio_change_pct_below"), (2, "portfolio_value_above"),
                              (4, "position_pnl_pct_below"), (1, "portfolio_value_below"),
                              (3, "portfolio_change_pct_below")]),
    ]
    for i, (quotes, want) in enumerate(steps):
        for symbol, price, change in quotes:
            send_quote(fx, symbol, price, change, ts=base + 1000 * (i + 1))
        wait_checks("pf", 1)  # a check that may have started before the quote
        wait_checks("pf", 1)  # the next one saw it
        wait_until(lambda: len(alerts("pf")) >= len(want), 10, what=f"the alerts of step {i}")
        wait_checks("pf", 2)  # conditions still true: no more alerts
        settle(fx, 0.5)
        got = fired("pf")
        assert sorted(got) == sorted(want), f"step {i}: alerts {got}, expected {want}"
    a = alerts("pf")
    by = {(x["alertId"]): x for x in a[:4]}
    assert by[4]["symbol"] == "PFA" and by[4]["threshold"] == -10 and abs(by[4]["currentValue"] + 15) < 1e-9, by[4]
    assert by[4]["positionPnlPct"] == by[4]["currentValue"] and by[4]["costBasis"] == 100, by[4]
    assert by[1]["symbol"] == "PORTFOLIO" and by[1]["currentValue"] == 2450 and by[1]["portfolioValue"] == 2450, by[1]
    assert abs(by[3]["dayChangePct"] - (-550 / 3000 * 100)) < 1e-9, by[3]
    assert by[2]["currentValue"] == 4100 and by[2]["threshold"] == 4000, by[2]
    # Each alert went on to the push channel, worded for a portfolio.
    settle(fx)
    entries = stream("pf")
    assert len(entries) == len(a), f"{len(entries)} notifications for {len(a)} alerts"
    titles = sorted({e[1]["title"] for e in entries})
    assert titles == ["PFA position P&L below -10%", "Portfolio day change below -5%", "Portfolio value above 4000",
                      "Portfolio value below 2500"], titles
    assert any(e[1]["body"] == "Portfolio value is 2450.00, below 2500 (alert 1)" for e in entries), entries[:3]
    assert redis("LLEN", portfolio_outbox_key("pf")) == 0, "confirmed alerts left in the outbox"
    assert fx.amqp.depth("eventd.alerts.dlq") == 0


test_portfolio_rules_fire_once_at_the_next_check_and_not_again_while_they_hold.timeout = 180


def test_portfolio_rule_cooldown_swallows_a_flip_inside_it(fx):
    fx.start_daemon(checks_config(fx))
    base = now_ms() - 60_000
    send_quote(fx, "PFC", 100, 0, ts=base)
    monitor_start(fx, "pfc", {"rules": [prule(1, "portfolio_value_below", 900, cooldown=3600)], "channels": [],
                              "positions": [position("PFC", 10)], "checkIntervalMs": INTERVAL})
    wait_checks("pfc", 1)
    for i, price in enumerate((80, 100, 80)):  # below, back above, below again within the hour
        send_quote(fx, "PFC", price, ts=base + 1000 * (i + 1))
        wait_checks("pfc", 2)
    settle(fx, 0.5)
    assert fired("pfc") == [(1, "portfolio_value_below")], fired("pfc")
    state = redis("HGETALL", portfolio_state_key("pfc"))
    state = dict(zip(state[::2], state[1::2]))
    assert state["held:1"] == "1" and int(state["fired:1"]) > base, state


def test_quote_stale_fires_when_the_feed_goes_silent(fx):
    fx.start_daemon(checks_config(fx))
    send_quote(fx, "PFS", 10)
    monitor_start(fx, "pfs", {"rules": [prule(1, "quote_stale", symbol="PFS", seconds=3),
                                        prule(2, "quote_stale", symbol="PFW", seconds=3),
                                        {"alertId": 3, "symbol": "PFW", "condition": "price_above", "threshold": 99}],
                              "channels": ["push"], "positions": [position("PFS", 1)], "checkIntervalMs": INTERVAL})
    # PFS quoted every half second: never stale. PFW (watched by a price rule) never
    # quoted: silent since the monitor started, so it fires after 3 s.
    started = time.monotonic()
    while time.monotonic() - started < 6:
        send_quote(fx, "PFS", 10)
        time.sleep(0.5)
    assert fired("pfs") == [(2, "quote_stale")], fired("pfs")
    [never] = alerts("pfs")
    assert never["symbol"] == "PFW" and "lastQuoteAt" not in never and never["currentValue"] > 3, never
    # The PFS feed goes silent: one alert, not one per check.
    silent_at = now_ms()
    wait_until(lambda: len(alerts("pfs")) >= 2, 10, what="the quote_stale alert for PFS")
    wait_checks("pfs", 3)
    settle(fx, 0.5)
    assert fired("pfs") == [(2, "quote_stale"), (1, "quote_stale")], fired("pfs")
    stale = alerts("pfs")[1]
    assert stale["symbol"] == "PFS" and stale["threshold"] == 3 and 3 < stale["lastQuoteAgeSec"] < 6, stale
    assert stale["lastQuoteAt"] < silent_at, stale
    # A quote ends it; silence again is a new alert.
    send_quote(fx, "PFS", 11)
    wait_checks("pfs", 2)
    wait_until(lambda: len(alerts("pfs")) >= 3, 10, what="the second quote_stale alert for PFS")
    settle(fx)
    assert fired("pfs")[2] == (1, "quote_stale"), fired("pfs")
    assert any(e[1]["title"] == "PFS quotes stale" for e in stream("pfs")), stream("pfs")


def test_stopping_a_monitor_stops_its_checks(fx):
    d = fx.start_daemon(checks_config(fx))
    send_quote(fx, "PFT", 5)
    spec = {"rules": [prule(1, "portfolio_value_below", 100)], "channels": ["push"],
            "positions": [position("PFT", 1)], "checkIntervalMs": INTERVAL}
    monitor_start(fx, "pft", spec)
    wait_until(lambda: alerts("pft"), 10, what="the first alert (the first check finds the rule true)")
    rc, out, err = fx.eventctl("monitor", "stop", "pft")
    assert rc == 0, err
    wait_until(lambda: schedule_entry("pft") is None, 5, what="pft off the schedule")
    assert redis("EXISTS", portfolio_state_key("pft")) == 0
    time.sleep(3 * INTERVAL / 1000)
    assert schedule_entry("pft") is None and redis("EXISTS", portfolio_state_key("pft")) == 0, \
        "a stopped monitor was checked"
    assert len(alerts("pft")) == 1
    # Started again: checked again, and its rules start fresh (the rule still holds: it fires).
    monitor_start(fx, "pft", spec)
    wait_until(lambda: len(alerts("pft")) == 2, 10, what="an alert after the restart")
    wait_checks("pft", 2)
    assert len(alerts("pft")) == 2
    assert not d.logged("portfolio check abandoned until its lease expires")


def test_a_takeover_publishes_what_a_dead_instance_recorded_and_does_not_run_the_check_again(fx):
    # What an instance that died after the check function and before its publish leaves:
    # the member claimed (score = its lease, now expired), the claim's due time, the
    # state of the applied check, the alert in the outbox.
    send_quote_at = now_ms()
    redis("SET", quote_key("PFK"), stored_quote(5, 0, send_quote_at))
    spec = {"rules": [prule(1, "portfolio_value_below", 100)], "channels": ["push"],
            "positions": [position("PFK", 1)], "checkIntervalMs": INTERVAL}
    monitor_start(fx, "pfk", spec)
    shard, due, _ = schedule_entry("pfk")
    updated = redis("HGET", monitor_key("pfk"), "updatedAt")
    due = int(due)
    redis("ZADD", schedule_key(shard), due + 50, "pfk")  # the lease, long expired
    redis("HSET", schedule_claims_key(shard), "pfk", due)
    redis("HSET", portfolio_state_key("pfk"), "spec", updated, "check", due, "held:1", "1", "fired:1", due)
    alert = {"type": "alert_triggered", "timestamp": due, "userId": "pfk", "alertId": 1, "symbol": "PORTFOLIO",
             "condition": "portfolio_value_below", "threshold": 100, "currentValue": 5, "portfolioValue": 5}
    redis("RPUSH", portfolio_outbox_key("pfk"), f"check:{due}:1 {json.dumps(alert)}")
    d = fx.start_daemon(checks_config(fx))
    wait_until(lambda: alerts("pfk"), 10, what="the recorded alert published by the takeover")
    wait_checks("pfk", 2)
    settle(fx)
    [a] = alerts("pfk")  # the check was not run again: the rule held, no second alert
    assert a["currentValue"] == 5 and a["timestamp"] == due, a
    assert len(stream("pfk")) == 1
    assert redis("LLEN", portfolio_outbox_key("pfk")) == 0
    assert redis("HGET", schedule_claims_key(shard), "pfk") is None or last_check("pfk") > due
    assert d.running()


# ---------------------------------------------------------------- several instances, faults

def start_users(fx, users, symbol, threshold):
    for u in users:
        monitor_start(fx, u, {"rules": [prule(1, "portfolio_value_below", threshold)], "channels": ["push"],
                              "positions": [position(symbol, 10)], "checkIntervalMs": INTERVAL})


def test_two_instances_share_checks_without_doubling_them(fx):
    ports = [free_port(), free_port()]
    d1 = fx.daemon(checks_config(fx, http_port=ports[0]))
    d2 = fx.daemon(checks_config(fx, http_port=ports[1]))
    d1.start().wait_ready()
    d2.start().wait_ready()
    base = now_ms() - 60_000
    send_quote(fx, "PF2", 100, ts=base)
    users = [f"two-{i}" for i in range(60)]
    start_users(fx, users, "PF2", 500)
    started = time.monotonic()
    for u in users[:3]:
        wait_checks(u, 3)
    send_quote(fx, "PF2", 40, ts=base + 1000)  # value 400 < 500: every rule fires, once
    wait_until(lambda: all(len(alerts(u)) >= 1 for u in users), 15, what="every user's alert")
    for u in users[:3]:
        wait_checks(u, 3)
    settle(fx)
    elapsed = time.monotonic() - started
    counts = {u: len(alerts(u)) for u in users}
    assert set(counts.values()) == {1}, f"alerts per user: {counts}"
    assert all(len(stream(u)) == 1 for u in users), "a notification was doubled or lost"
    m1, m2 = metrics(ports[0]), metrics(ports[1])
    applied = [m['eventd_portfolio_checks_total{outcome="applied"}'] for m in (m1, m2)]
    assert all(a > 0 for a in applied), f"checks applied per instance: {applied}: one did all the work"
    # One check per user and second at most (plus the first at start): none ran twice.
    assert sum(applied) <= len(users) * (elapsed + 2), (applied, elapsed)
    for m in (m1, m2):
        assert m['eventd_portfolio_checks_total{outcome="duplicate"}'] == 0, m
        assert m['eventd_portfolio_checks_total{outcome="abandoned"}'] == 0, m
    assert sum(m["eventd_portfolio_alerts_published_total"] for m in (m1, m2)) == len(users)


def test_kill9_mid_checks_neither_doubles_nor_loses_portfolio_alerts(fx):
    # 150 users, checked every second by two instances; the price makes every user's rule
    # true, false, true, false in phases of 8 s (each longer than a lease plus a check),
    # while instances are killed with -9 and restarted. Each user must end with exactly
    # two alerts and two push notifications.
    overrides = {"portfolio": {"leaseMs": 4000}}
    d1 = fx.daemon(checks_config(fx, overrides))
    d2 = fx.daemon(checks_config(fx, overrides))
    d1.start().wait_ready()
    d2.start().wait_ready()
    base = now_ms() - 120_000
    set_quote("PFX", 100, 0, base)
    users = [f"kill-{i}" for i in range(150)]
    start_users(fx, users, "PFX", 500)
    for u in users[:2]:
        wait_checks(u, 2)
    rng = random.Random(13)
    kills = orphans = unpublished = 0
    fx.on_teardown(lambda: rabbitmqctl("set_vm_memory_high_watermark", "0.4"))
    for phase, price in enumerate((40, 100, 40, 100)):
        victim = d1 if phase % 2 == 0 else d2
        if price == 40:
            # Every rule turns true: the checks record their alerts, then wait for the
            # broker, which a memory alarm makes hold every publish. The victim dies with
            # alerts recorded and not published, and claims not finished. (The quote goes
            # straight into Redis: a publish would wait for the alarm too.)
            rabbitmqctl("set_vm_memory_high_watermark", "0")
            wait_until(lambda: all(n.get("mem_alarm") for n in mgmt("GET", "nodes")), 15, 0.1,
                       what="the broker's memory alarm")
        set_quote("PFX", price, 0, base + 1000 * (phase + 1))
        phase_end = time.monotonic() + 8
        if price == 40:
            time.sleep(1.5)
        else:
            time.sleep(rng.uniform(1.0, 2.5))  # anywhere in the phase
        assert victim.running(), f"{victim.name} exited on its own"
        victim.kill9()
        kills += 1
        if price == 40:
            rabbitmqctl("set_vm_memory_high_watermark", "0.4")
        # The survivor's claims last milliseconds once the broker takes publishes again; one
        # still there a moment later (and within the 4 s lease) is a check the victim
        # claimed and did not finish.
        time.sleep(0.3)
        orphans += sum(redis("HLEN", schedule_claims_key(s)) for s in range(16))
        unpublished += sum(1 for u in users if redis("LLEN", portfolio_outbox_key(u)))
        time.sleep(0.7)
        victim.start()
        while time.monotonic() < phase_end:
            time.sleep(0.1)
    d1.wait_ready()
    d2.wait_ready()
    for u in users[:2]:
        wait_checks(u, 2)
    wait_until(lambda: sum(redis("LLEN", portfolio_outbox_key(u)) for u in users) == 0, 15,
               what="every recorded alert published")
    settle(fx, 1.5)
    assert orphans > 0, f"no kill of {kills} landed while the victim had checks in flight: nothing was tested"
    assert unpublished > 0, "no kill landed between an alert's record and its publish: nothing was tested"
    counts = {u: len(alerts(u)) for u in users}
    wrong = {u: n for u, n in counts.items() if n != 2}
    assert not wrong, f"users without exactly 2 alerts after {kills} kills: {wrong}"
    streams = {u: len(stream(u)) for u in users}
    assert set(streams.values()) == {2}, {u: n for u, n in streams.items() if n != 2}
    for u in users:
        a = alerts(u)
        assert a[0]["currentValue"] == 400 and a[1]["currentValue"] == 400, a
        assert len({x["timestamp"] for x in a}) == 2, a
    assert fx.amqp.depth("eventd.alerts.dlq") == 0 and fx.amqp.depth("eventd.notify.push.dlq") == 0
    assert redis("SCARD", MONITORS_KEY) == len(users)


test_kill9_mid_checks_neither_doubles_nor_loses_portfolio_alerts.timeout = 300
test_two_instances_share_checks_without_doubling_them.timeout = 180


def test_sigterm_finishes_the_checks_in_flight(fx):
    d = fx.start_daemon(checks_config(fx))
    send_quote(fx, "PFQ", 5)
    start_users(fx, [f"term-{i}" for i in range(50)], "PFQ", 100)
    wait_until(lambda: all(alerts(f"term-{i}") for i in range(50)), 15, what="the first check of every user")
    assert d.stop() == 0
    assert d.log_lines()[-1]["msg"] == "stopped"
    claimed = sum(redis("HLEN", schedule_claims_key(s)) for s in range(16))
    assert claimed == 0, f"{claimed} checks left claimed by a clean stop"
    assert all(redis("LLEN", portfolio_outbox_key(f"term-{i}")) == 0 for i in range(50))
    assert all(len(alerts(f"term-{i}")) == 1 for i in range(50))
