"""An analyst triages the real scored day by its incidents in headless Chromium against the real
OA server: the day opens on its incidents (sorted and filtered on the server, the flat list one
click away); an incident shows its timeline, hosts graph, explanations, family and member flows;
a verdict on it is one file and shows on each member flow; a host has its page. The browser
tests share the day: verdict files written here are removed afterwards."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import DAY, USER, shot

pytestmark = pytest.mark.browser


def day_dir(huser):
    return huser / "flow" / "scored_results" / DAY


def incidents_by_severity(huser) -> pd.DataFrame:
    """The day's incidents in the list's default order: most severe, then first seen, then id."""
    inc = pd.read_parquet(day_dir(huser) / "incidents")
    return inc.sort_values(["severity", "first_seen", "incident_id"], ascending=[False, True, True], kind="stable")


@pytest.fixture
def no_verdict_left(oa_huser):
    """Whatever happens in the test, the verdict files it wrote are gone afterwards."""
    d = oa_huser / "flow" / "verdicts"
    before = set(d.iterdir()) if d.exists() else set()
    yield
    for f in (set(d.iterdir()) if d.exists() else set()) - before:
        f.unlink()


def test_the_day_opens_on_its_incidents_sorted_and_filtered_on_the_server(logged_in, oa_huser):
    page = logged_in
    inc = incidents_by_severity(oa_huser)
    page.click(f"#days-table a.day-link >> text={DAY}")
    page.wait_for_selector("#incidents[data-state*='sort=severity'] tbody tr[data-id]")
    rows = page.locator("#incidents tbody tr[data-id]")
    assert rows.count() == min(50, len(inc))
    assert [rows.nth(i).get_attribute("data-id") for i in range(rows.count())] == list(inc["incident_id"][:50])
    assert page.inner_text("#i-page-info").endswith(f"{len(inc):,} incidents")
    top = inc.iloc[0]
    assert rows.nth(0).locator("td").nth(0).inner_text() == f"{top['severity']} {top['severity_level']}"
    assert page.get_attribute("#flows-link", "href") == f"/days/{DAY}/flows"
    shot(page, "30-incidents")

    page.click("#incidents th[data-sort='flows']")
    page.wait_for_selector("#incidents[data-state*='sort=flows'][data-state*='order=desc'] tbody tr[data-id]")
    assert int(rows.nth(0).locator("td").nth(6).inner_text().replace(",", "")) == inc["flows"].max()

    host = top["main_host"]
    want = {i for i, hs in zip(inc["incident_id"], inc["hosts"]) if host in {h["ip"] for h in hs}}
    page.fill("#i-host", host)
    page.click("#i-apply")
    page.wait_for_selector(f"#incidents[data-state*='host={host}'] tbody tr[data-id]")
    assert {rows.nth(i).get_attribute("data-id") for i in range(rows.count())} == want
    assert f"host={host}" in page.url  # the filter is in the address, so it can be shared
    shot(page, "31-incidents-of-a-host")

    page.fill("#i-host", "10.0.0.999")
    page.click("#i-apply")
    page.wait_for_selector("#inc-error:not([hidden])")
    assert "host must be an IPv4 or IPv6 address, got '10.0.0.999'" in page.inner_text("#inc-error")
    page.oa_errors.clear()  # the 400 answer is logged by the browser

    page.click("#flows-link")
    page.wait_for_selector("#suspicious[data-state] tbody tr[data-rank]")


def test_an_incident_shows_its_timeline_hosts_explanations_family_and_flows(logged_in, oa_huser):
    page = logged_in
    inc = incidents_by_severity(oa_huser)
    top = inc.iloc[0]
    mem = pd.read_parquet(day_dir(oa_huser) / "incident_members")
    mem = mem[mem["incident_id"] == top["incident_id"]].sort_values("rank")
    page.goto(f"/days/{DAY}")
    page.click(f"#incidents tr[data-id='{top['incident_id']}'] a.incident-link")
    page.wait_for_selector("#timeline[data-drawn]")
    page.wait_for_selector("#members[data-state] tbody tr[data-rank]")
    api = page.request.get(f"/api/v1/days/{DAY}/incidents/{top['incident_id']}").json()
    tl = api["timeline"]
    assert page.locator("#timeline circle.pt").count() == len(tl["bins"] if tl["binned"] else tl["points"]) > 0
    assert page.locator("#timeline line.thr").count() == 1
    g = api["graph"]
    nodes = sum(n["as_source"] > 0 for n in g["nodes"]) + sum(n["as_target"] > 0 for n in g["nodes"])
    assert page.locator("#hosts-graph a.host-node").count() == nodes and page.locator("#hosts-graph line.edge").count() == len(g["edges"])
    assert page.inner_text("#inc-family").startswith(top["family"])
    for e in top["top_explanations"]:
        assert f"{e['feature']} ({e['flows']:,} flow" in page.inner_text("#inc-explanations")
    assert page.inner_text("#m-page-info").endswith(f"{len(mem):,} flows")
    shown = [int(x) for x in page.eval_on_selector_all("#members tbody tr td:nth-child(1)", "tds => tds.map(t => t.textContent)")]
    assert shown == list(mem["rank"][:50])
    shot(page, "32-incident")

    page.locator("#hosts-graph a.host-node").first.click()
    page.wait_for_url(f"**/days/{DAY}/hosts/**")
    page.go_back()
    page.wait_for_selector("#members[data-state] tbody tr[data-rank]")
    page.locator("#members tbody tr a.conn-link").first.click()  # a member flow opens its connection
    page.wait_for_selector("#connection tbody tr")


def test_a_verdict_on_an_incident_is_one_file_and_marks_each_member_flow(logged_in, oa_huser, no_verdict_left):
    page = logged_in
    inc = incidents_by_severity(oa_huser)
    target = inc.sort_values(["flows", "incident_id"], ascending=[False, True]).iloc[0]
    iid, flows = target["incident_id"], int(target["flows"])
    vdir = oa_huser / "flow" / "verdicts"
    before = set(vdir.glob("*.json")) if vdir.exists() else set()
    page.goto(f"/days/{DAY}/incidents/{iid}")
    page.wait_for_selector("#members[data-state] tbody tr[data-rank]")
    assert page.locator("#inc-verdict-buttons button").count() == 3
    page.select_option("#inc-verdict-family", "dos")  # the analyst names the attack's family too
    page.click("#inc-sev2")
    page.wait_for_selector("#toast.show")
    toast = page.inner_text("#toast")
    assert toast.startswith(f"Incident marked medium risk, dos: {flows} flows, ")
    assert page.inner_text("#inc-verdict-note").strip() == "Medium risk, dos (you, just now)"
    [new] = set(vdir.glob("*.json")) - before
    recs = [json.loads(x) for x in new.read_text().splitlines()]
    assert toast.endswith(f"{len(recs)} connection(s)")
    assert {(v["incident_id"], v["sev"], v["who"], v["family"]) for v in recs} == {(iid, 2, USER, "dos")}
    page.wait_for_selector("#members tbody tr[data-rank] .verdict[data-sev='2']")
    shown = page.locator("#members tbody tr[data-rank]").count()
    assert page.locator("#members tbody tr[data-rank] .verdict[data-sev='2'] button.chosen[data-sev='2']").count() == shown == min(50, flows)
    assert page.locator("#inc-sev2.chosen").count() == 1
    shot(page, "33-incident-verdict")

    # each member flow shows it in the day's flat list too, and the incident list says it
    page.goto(f"/days/{DAY}/flows?size=500")
    page.wait_for_selector("#suspicious[data-state] tbody tr[data-rank]")
    mine = page.locator(f"#suspicious tbody tr:has(a.incident-link[href$='{iid}'])")
    assert mine.count() > 0
    assert page.locator(f"#suspicious tbody tr:has(a.incident-link[href$='{iid}']) button.chosen[data-sev='2']").count() == mine.count()
    page.goto(f"/days/{DAY}")
    page.wait_for_selector(f"#incidents tr[data-id='{iid}']")
    assert page.locator(f"#incidents tr[data-id='{iid}'] td").last.inner_text() == "Medium"


def test_a_host_page_shows_its_day_ranking_incidents_and_history(logged_in, oa_huser):
    page = logged_in
    hosts = pd.read_parquet(day_dir(oa_huser) / "hosts").sort_values("host_rank")
    h = hosts.iloc[0]
    page.goto(f"/days/{DAY}")
    page.wait_for_selector("#incidents tbody tr[data-id]")
    link = page.locator(f"#incidents a.host-link >> text='{h['ip']}'")
    if link.count():  # the top host is usually an incident's main host: reach it from the list
        link.first.click()
    else:
        page.goto(f"/days/{DAY}/hosts/{h['ip']}")
    page.wait_for_selector("#host-history[data-state='loaded']")
    page.wait_for_selector("#host-incidents[data-state] tbody tr")
    assert page.inner_text("#host-summary").startswith(f"Rank {h['host_rank']} of {DAY}'s hosts: {h['suspicious']:,} suspicious")
    assert page.locator("#host-ranking tbody tr").count() == 2
    assert page.locator("#host-ranking tr[data-side='src'] td").nth(2).inner_text().replace(",", "") == str(h["src_suspicious"])
    assert page.locator("#host-incidents tbody tr[data-id]").count() == min(25, h["n_incidents"])
    assert {page.locator("#host-incidents tbody tr[data-id]").nth(i).get_attribute("data-id")
            for i in range(min(25, h["n_incidents"]))} <= set(h["incidents"])
    assert page.locator("#host-history tbody tr[data-day]").count() == 1 and page.locator("#host-trend circle.pt").count() >= 1
    shot(page, "34-host")
