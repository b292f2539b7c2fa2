"""An analyst's session in headless Chromium against the real OA server and a real day of results:
log in, open a day, sort, filter, page, open a connection, look at the network and the model,
mark a flow, and see the verdict land in Spot's feedback file."""
from __future__ import annotations

import csv
import json

import pytest

from conftest import DAY, PASSWORD, USER, shot

pytestmark = pytest.mark.browser


def results(huser) -> list[dict]:
    with open(huser / "flow" / "scored_results" / DAY / "scores" / "flow_results.csv", newline="") as f:
        return list(csv.DictReader(f))


def column(page, idx: int) -> list[str]:
    return page.eval_on_selector_all(f"#suspicious tbody tr td:nth-child({idx})", "tds => tds.map(t => t.textContent)")


def wait_rows(page):
    page.wait_for_selector("#suspicious[data-state] tbody tr[data-rank]")


def test_login_refuses_a_wrong_password_then_lets_the_analyst_in(page):
    page.goto("/")
    assert page.url.endswith("/login?next=/")
    page.fill("#username", USER)
    page.fill("#password", "wrong-password")
    page.click("#login-submit")
    assert page.inner_text("#login-error") == "Wrong user name or password."
    page.oa_errors.clear()  # the 401 answer is logged by the browser
    shot(page, "01-login-refused")
    page.fill("#username", USER)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_selector("#days-table a.day-link")
    assert page.inner_text("#who") == f"{USER} (analyst)"
    cookie = [c for c in page.context.cookies() if c["name"] == "spot_oa_session"][0]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # not readable from script


def test_day_picker_lists_the_scored_day_with_its_counts(logged_in, oa_huser):
    page = logged_in
    run = json.loads((oa_huser / "flow" / "scored_results" / DAY / "run.json").read_text())
    row = page.locator(f"#days-table tr[data-day='{DAY}'] td")
    assert row.nth(0).inner_text() == DAY
    assert row.nth(2).inner_text().replace(",", "") == str(run["flows_scored"])
    assert row.nth(3).inner_text().replace(",", "") == str(run["suspicious"])
    shot(page, "02-days")


def shown(pg, **params) -> None:
    """Wait until the table shows the answer to a query with these parameters (`page=2` is one)."""
    sel = "#suspicious" + "".join(f"[data-state*='{k}={v}']" for k, v in params.items())
    pg.wait_for_selector(sel)


def test_open_a_day_sort_filter_and_page(logged_in, oa_huser):
    page = logged_in
    want = results(oa_huser)
    page.click(f"#days-table a.day-link >> text={DAY}")
    page.click("#flows-link")  # the day opens on its incidents; the flat list is one click away
    shown(page, sort="rank")
    page.select_option("#f-size", "25")
    page.click("#apply")
    shown(page, size=25)
    assert column(page, 1) == [str(i) for i in range(1, min(25, len(want)) + 1)]
    assert page.inner_text("#page-info").endswith(f"{len(want):,} flows")
    shot(page, "03-suspicious-by-rank")

    # sort by destination port, ascending on first click
    page.click("#suspicious th[data-sort='dport']")
    shown(page, sort="dport", order="asc")
    ports = [int(p) for p in column(page, 6)]
    assert ports == sorted(int(w["dport"]) for w in want)[: len(ports)]
    # score: descending first, then ascending on the second click
    page.click("#suspicious th[data-sort='score']")
    shown(page, sort="score", order="desc")
    assert column(page, 1)[:3] == ["1", "2", "3"]
    page.click("#suspicious th[data-sort='score']")
    shown(page, sort="score", order="asc")
    assert column(page, 1)[0] == str(len(want))
    shot(page, "04-suspicious-score-ascending")

    # next page
    if len(want) > 25:
        page.click("#next")
        shown(page, page=2)
        assert page.inner_text("#page-info").startswith("Page 2")

    # filter by the top flow's destination IP
    ip = want[0]["dip"]
    expect = [str(i + 1) for i, w in enumerate(want) if ip in (w["sip"], w["dip"])]
    page.click("#suspicious th[data-sort='rank']")
    shown(page, sort="rank", order="asc")
    page.fill("#f-ip", ip)
    page.click("#apply")
    shown(page, ip=ip)
    assert page.inner_text("#page-info").endswith(f" {len(expect):,} flows")
    assert column(page, 1) == expect[:25]
    assert "ip=" + ip in page.url  # the filter is in the address, so it can be shared
    shot(page, "05-suspicious-filtered-by-ip")

    # a bad filter value is explained, not ignored
    page.fill("#f-ip", "10.0.0.999")
    page.click("#apply")
    page.wait_for_selector("#table-error:not([hidden])")
    assert "ip must be an IPv4 or IPv6 address" in page.inner_text("#table-error")
    page.oa_errors.clear()


def test_open_a_connection_shows_all_its_flows(logged_in, oa_server):
    page = logged_in
    page.goto(f"/days/{DAY}/flows")
    wait_rows(page)
    first = page.locator("#suspicious tbody tr[data-rank='1'] a.conn-link")
    first.click()
    page.wait_for_selector("#connection tbody tr")
    sip, dip = page.evaluate("[document.body.dataset.sip, document.body.dataset.dip]")
    api = page.request.get(f"/api/v1/days/{DAY}/connections?sip={sip}&dip={dip}").json()
    assert page.locator("#connection tbody tr").count() == api["count"] >= 1
    assert page.locator("#connection tbody tr[data-rank='1']").count() == 1
    assert page.inner_text("#conn-summary").startswith(f"{api['count']:,} flow")
    shot(page, "06-connection")


def test_network_view_draws_the_top_ips_and_links_to_their_connections(logged_in):
    page = logged_in
    page.goto(f"/days/{DAY}/network")
    page.wait_for_selector("#network g.node")
    api = page.request.get(f"/api/v1/days/{DAY}/network?top=100").json()
    assert page.locator("#network g.node").count() == len(api["nodes"]) > 1
    assert page.locator("#network line.edge").count() == len(api["edges"])
    widths = [float(w) for w in page.eval_on_selector_all("#network line.edge", "ls => ls.map(l => l.getAttribute('stroke-width'))")]
    best = max(range(len(api["edges"])), key=lambda i: api["edges"][i]["score"])
    assert widths[best] == max(widths)  # the heaviest edge is the best-scored pair
    shot(page, "07-network")
    page.locator("#network line.edge").nth(best).dispatch_event("click")
    page.wait_for_url("**/connection?**")
    page.wait_for_selector("#connection tbody tr")


def test_model_panel_shows_threshold_training_day_and_histogram(logged_in, oa_huser):
    page = logged_in
    run = json.loads((oa_huser / "flow" / "scored_results" / DAY / "run.json").read_text())
    page.goto(f"/days/{DAY}/model")
    page.wait_for_selector("#histogram rect.bar")
    assert page.locator("#histogram rect.bar").count() == len(run["score_histogram"]["counts"])
    assert page.locator("#threshold-line").count() == 1
    facts = page.inner_text("#model-facts")
    assert run["training_day"] in facts and run["model_version"] in facts
    lo, hi = run["threshold_resolution"]["fpr_interval_95"]
    assert f"{100 * lo:.2f}% to {100 * hi:.2f}%" in facts  # the rate the threshold can promise
    shot(page, "08-model")


def test_ingest_summary_chart_has_a_bar_per_hour(logged_in):
    page = logged_in
    page.goto("/ingest")
    page.wait_for_selector("#ingest-chart rect.bar")
    api = page.request.get("/api/v1/ingest/summary").json()
    assert page.locator("#ingest-chart rect.bar").count() == len(api["hours"]) >= 1
    shot(page, "09-ingest-summary")


def test_marking_a_flow_low_risk_writes_spots_feedback_file(logged_in, oa_huser):
    page = logged_in
    fb = oa_huser / "flow" / "scored_results" / DAY / "feedback" / "ml_feedback.csv"
    before = fb.read_text() if fb.exists() else ""
    page.goto(f"/days/{DAY}/flows")
    wait_rows(page)
    row = results(oa_huser)[1]
    page.click("#suspicious tbody tr[data-rank='2'] .verdict button[data-sev='3']")
    page.wait_for_selector("#toast.show")
    assert page.inner_text("#toast") == "Rank 2 marked low risk"
    assert page.locator("#suspicious tbody tr[data-rank='2'] button.chosen").get_attribute("data-sev") == "3"
    shot(page, "10-feedback")
    after = fb.read_text()
    assert after != before
    stored = list(csv.DictReader(after.splitlines()))
    assert {"sev": "3", "tstart": row["treceived"], "srcIP": row["sip"], "dstIP": row["dip"], "sport": row["sport"],
            "dport": row["dport"], "ipkt": row["ipkt"], "ibyt": row["ibyt"]} in stored
    # the verdict is shown again after a reload
    page.reload()
    wait_rows(page)
    assert page.locator("#suspicious tbody tr[data-rank='2'] button.chosen").get_attribute("data-sev") == "3"


def test_logout_ends_the_session(logged_in):
    page = logged_in
    page.click("#logout")
    page.wait_for_selector("#login-submit")
    assert page.request.get("/api/v1/days").status == 401
