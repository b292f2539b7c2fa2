"""An analyst allow-lists a destination in headless Chromium against the real OA server and the
real scored day: the rule is listed with the alerts it holds, the day's suspicious list hides
those flows and says by which rule and why, and removing the rule brings everything back."""
from __future__ import annotations

import csv
import json
import re
from collections import Counter

import pytest

from conftest import DAY, USER, shot

pytestmark = pytest.mark.browser


def alert_dsts(huser, top: str) -> Counter:
    out = Counter()
    for f in (huser / "flow/scored_results" / DAY / top).rglob("part-*"):
        out.update(json.loads(x)["destination"]["ip"] for x in f.read_text().splitlines() if x.strip())
    return out


def total_shown(page) -> int:
    return int(re.search(r"· ([\d,]+) flows", page.inner_text("#page-info")).group(1).replace(",", ""))


@pytest.fixture
def no_rule_left(oa_huser):
    """Whatever happens in the test, no rule stays in force to hide flows from the other browser tests."""
    yield
    from spot_ae_job.allowlist import Store
    from spot_ae_job.storage import LocalStorage

    store = Store(LocalStorage(f"file://{oa_huser}"))
    for rule in store.in_force():
        store.remove(rule.id, "browser-test", "test cleanup")


def test_allow_listing_a_destination_hides_its_flows_and_removing_it_brings_them_back(logged_in, oa_huser, no_rule_left):
    page = logged_in
    with open(oa_huser / "flow/scored_results" / DAY / "scores/flow_results.csv", newline="") as f:
        flagged = list(csv.DictReader(f))
    alerts = alert_dsts(oa_huser, "alerts")
    # a destination with some of the day's alerts, not all
    target = next(d for d, n in Counter(r["dip"] for r in flagged).most_common() if 0 < alerts[d] < sum(alerts.values()))
    hidden = sum(r["dip"] == target for r in flagged)

    page.goto(f"/days/{DAY}/flows")
    page.wait_for_selector("#suspicious[data-state] tbody tr[data-rank]")
    assert total_shown(page) == len(flagged) and page.locator("#allowlist-note").is_hidden()

    # a bad rule is refused with the server's one line, and nothing is stored
    page.click("#nav-allowlist")
    page.wait_for_selector("#allowlist[data-state]")
    page.fill("#al-dst", "10.0.0.0/33")
    page.fill("#al-why", "typo")
    page.click("#al-add")
    page.wait_for_selector("#al-error:not([hidden])")
    assert "dst must be an IPv4/IPv6 address or CIDR like 10.0.0.0/8, got '10.0.0.0/33'" in page.inner_text("#al-error")
    page.oa_errors.clear()  # the 400 answer is logged by the browser
    assert not (oa_huser / "flow/allowlist/rules").exists() or not list((oa_huser / "flow/allowlist/rules").iterdir())

    page.fill("#al-dst", target)
    page.fill("#al-why", "monitoring probes to this host")
    page.fill("#al-expires", "30")
    page.click("#al-add")
    page.wait_for_selector("#allowlist[data-state='1:1'] tbody tr[data-id]")
    row = page.locator("#allowlist tbody tr[data-id]")
    assert page.locator("#al-error").is_hidden()
    assert row.locator("td").nth(1).inner_text() == USER
    assert re.fullmatch(rf"any -> {re.escape(target)}/32 until 20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ",
                        row.locator("td").nth(2).inner_text())
    assert row.locator("td.in-force").inner_text() == "yes"
    assert int(row.locator("td.held").inner_text().replace(",", "")) == alerts[target]
    assert alert_dsts(oa_huser, "alerts_allowlisted") == Counter({target: alerts[target]})
    assert page.locator("#allowlist-audit tbody tr[data-action='add'] td").nth(5).inner_text().replace(",", "") == str(alerts[target])
    shot(page, "20-allowlist-rule-added")

    page.goto(f"/days/{DAY}/flows")
    page.wait_for_selector("#suspicious[data-state] tbody tr[data-rank]")
    page.wait_for_selector("#allowlist-note:not([hidden])")
    assert total_shown(page) == len(flagged) - hidden
    assert target not in page.eval_on_selector_all("#suspicious tbody td:nth-child(5)", "tds => tds.map(t => t.textContent)")
    note = page.inner_text("#allowlist-note")
    assert f"{hidden} suspicious flow" in note and f"any -> {target}/32" in note and "monitoring probes to this host" in note
    shot(page, "21-allowlisted-flows-hidden")
    page.fill("#f-ip", target)
    page.check("#f-allowlisted")
    page.wait_for_selector(f"#suspicious[data-state*='allowlisted=show'][data-state*='ip={target}'] tbody tr.allowlisted")
    assert page.locator("#suspicious tbody tr.allowlisted").count() == min(hidden, 50)
    shot(page, "22-allowlisted-flows-shown")

    page.goto("/allowlist")
    page.wait_for_selector("#allowlist[data-state='1:1']")
    page.once("dialog", lambda d: d.accept("probes moved"))
    page.click("button.al-remove")
    page.wait_for_selector("#allowlist[data-state='1:2']")
    assert page.locator("#allowlist tbody tr td.in-force").inner_text().startswith(f"no (removed ")
    assert page.locator("button.al-remove").count() == 0
    assert page.locator("#allowlist-audit tbody tr[data-action='remove'] td").nth(6).inner_text().replace(",", "") == str(alerts[target])
    assert alert_dsts(oa_huser, "alerts") == alerts and sum(alert_dsts(oa_huser, "alerts_allowlisted").values()) == 0
    shot(page, "23-allowlist-rule-removed")

    page.goto(f"/days/{DAY}/flows")
    page.wait_for_selector("#suspicious[data-state] tbody tr[data-rank]")
    assert total_shown(page) == len(flagged) and page.locator("#allowlist-note").is_hidden()
