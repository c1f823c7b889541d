"""The web page: self-contained and locked down, and a session driven from it in a real browser.

The browser test needs Debian's chromium and chromium-driver (selenium drives them); .ci/run
installs them and sets REQUIRE_BROWSER=1, so there a missing browser fails the test; elsewhere it
is skipped with its reason.

The live page: its first HTML carries the server's state, its charts are bounded, the server
keeps open transactions' readings for a page that opens late, and the page rides out a busy or
restarted server.  Plain HTTP where that proves it; one headless Chromium for the rest.
"""

import base64
import json
import re
import time

import pytest

import ocpp_mock_server as mock
from conftest import (
    CHARGER_REQUEST_SAMPLES,
    TIMEOUT,
    Charger,
    EventStream,
    InProcessDemo,
    booted_charger,
    charger_test,
    headless_browser,
    http,
    http_port,
    http_sync,
    run,
    urllib_quote,
    wait_in_browser,
)


def test_the_page_is_self_contained_and_locked_down(start_server):
    server = start_server()
    page = http_sync(server, "GET", "/")
    assert page.status == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    text = page.body.decode("utf-8")
    assert not re.search(r"(src|href)=\"?(https?:)?//", text)  # no CDN, no remote anything
    assert (
        "innerHTML" not in text
        and "insertAdjacentHTML" not in text
        and "document.write" not in text
    )
    policy = page.headers["content-security-policy"]
    script = re.search(r"<script>(.*)</script>", text, re.S).group(1)
    digest = base64.b64encode(
        __import__("hashlib").sha256(script.encode("utf-8")).digest()
    ).decode()
    assert f"script-src 'sha256-{digest}'" in policy and "frame-ancestors 'none'" in policy


@pytest.mark.slow(6)
def test_the_page_shows_a_session_started_from_its_button(start_server):
    from_browser = headless_browser()
    from selenium.webdriver.common.by import By

    server = start_server()
    hostile = '<img src=x onerror="document.title=1">'

    async def hostile_charger():  # its id, status and vendor are shown as text, never as HTML
        charger = await Charger.connect(server.url, urllib_quote(hostile))
        await charger.call(
            "BootNotification", {"chargePointVendor": "<b>bold</b>", "chargePointModel": "M"}
        )
        await charger.expect_call("DataTransfer")
        await charger.close()

    run(hostile_charger())
    demo = InProcessDemo(server.url + "/CP-DEMO", "--meter-interval", "0.2")
    try:
        server.wait_for(r"CP-DEMO <- DataTransfer\.conf")
        from_browser.get(f"http://127.0.0.1:{http_port(server)}/")
        card = wait_in_browser(
            from_browser,
            lambda: from_browser.find_elements(
                By.CSS_SELECTOR, 'section.card[data-charger="CP-DEMO"]'
            ),
            "the charger's card",
        )[0]
        wait_in_browser(
            from_browser,
            lambda: (
                not card.find_element(
                    By.CSS_SELECTOR, 'button[data-action="startRemote"]'
                ).get_attribute("disabled")
            ),
            "an enabled button",
        )
        card.find_element(By.CSS_SELECTOR, 'button[data-action="startRemote"]').click()
        wait_in_browser(
            from_browser,
            lambda: any(
                row.text
                for row in from_browser.find_elements(
                    By.CSS_SELECTOR, '#frames .row[data-type="frame"] .label'
                )
                if row.text == "StartTransaction"
            ),
            "the StartTransaction frame in the log",
        )
        server.wait_for(r"CP-DEMO <- StartTransaction")
        canvas = wait_in_browser(
            from_browser,
            lambda: from_browser.find_elements(By.CSS_SELECTOR, "#charts canvas"),
            "a meter chart",
        )[0]
        first = int(canvas.get_attribute("data-points"))
        wait_in_browser(
            from_browser,
            lambda: int(canvas.get_attribute("data-points")) >= first + 3,
            "the chart growing",
        )
        assert "Wh" in from_browser.find_element(By.CSS_SELECTOR, "#charts .legend").text
        wait_in_browser(
            from_browser, lambda: "transaction 1" in card.text, "the open transaction on the card"
        )
        assert "OCPP 1.6" in card.find_element(By.TAG_NAME, "h3").text  # the version it speaks
        # The command box speaks the console's language.
        from_browser.find_element(By.ID, "line").send_keys("chargers")
        from_browser.find_element(By.CSS_SELECTOR, "#command button").click()
        wait_in_browser(
            from_browser,
            lambda: "CP-DEMO" in from_browser.find_element(By.ID, "reply").text,
            "the command's answer",
        )
        # Charger-controlled text stays text.
        titles = [
            element.text
            for element in from_browser.find_elements(By.CSS_SELECTOR, "section.card h3")
        ]
        assert any(title.startswith(hostile) for title in titles), titles
        assert "<b>bold</b>" in from_browser.find_element(By.TAG_NAME, "body").text
        assert from_browser.find_elements(By.CSS_SELECTOR, "#chargers img, #chargers b") == []
        assert from_browser.title == "OCPP Mock Server"
        card.find_element(By.CSS_SELECTOR, 'button[data-action="stopRemote"]').click()
        server.wait_for(r"CP-DEMO <- StopTransaction")
    finally:
        from_browser.quit()
        demo.stop()


HOSTILE_ID = "</script><script>alert(1)</script>\u2028x"
STATE_BLOCK = re.compile(r'<script type="application/json" id="state">(.*?)</script>', re.S)


def state_block(html: str) -> dict:
    """The page's state: the data block, read as a browser reads it (up to the first </script>)."""
    return json.loads(STATE_BLOCK.search(html).group(1))


def meter_values(transaction_id, energy, connector=1) -> dict:
    return {
        "connectorId": connector,
        "transactionId": transaction_id,
        "meterValue": [
            {
                "timestamp": mock.UTC_CLOCK.now(),
                "sampledValue": [
                    {
                        "value": str(energy),
                        "measurand": "Energy.Active.Import.Register",
                        "unit": "Wh",
                    },
                    {"value": "7400", "measurand": "Power.Active.Import", "unit": "W"},
                    {"value": "50", "measurand": "SoC", "unit": "Percent"},
                ],
            }
        ],
    }


async def start_transaction(charger, connector=1) -> int:
    reply = await charger.call(
        "StartTransaction", dict(CHARGER_REQUEST_SAMPLES["StartTransaction"], connectorId=connector)
    )
    return reply.payload["transactionId"]


async def send_pipelined(charger, action: str, payloads) -> None:
    """Send every CALL at once, then wait for the last reply (a charger in a hurry)."""
    last = None
    for number, payload in enumerate(payloads):
        last = f"p{number}"
        await charger.send_frame([2, last, action, payload])
    await charger.replies_until(last, timeout=4 * TIMEOUT)


@charger_test
async def test_the_first_html_carries_the_state_and_the_stream_resumes_after_it(start_server):
    server = start_server()
    charger = await booted_charger(server)
    await charger.call("Heartbeat", {"extra": 1})  # a spec warning
    transaction = await start_transaction(charger)
    for energy in (0, 10, 20):  # nobody watches: the server keeps them anyway
        await charger.call("MeterValues", meter_values(transaction, energy))
    page = await http(server, "GET", "/")
    assert page.status == 200 and page.headers["cache-control"] == "no-store"
    state = state_block(page.body.decode("utf-8"))
    assert [record["id"] for record in state["chargers"]] == ["CP-1"]
    assert state["chargers"][0]["transactions"][0]["transactionId"] == transaction
    (chart,) = state["charts"]
    assert (chart["charger"], chart["transactionId"], chart["connectorId"]) == (
        "CP-1",
        transaction,
        1,
    )
    assert [point[1:] for point in chart["points"]] == [
        [0, 7400, 50],
        [10, 7400, 50],
        [20, 7400, 50],
    ]
    assert "Heartbeat.extra" in state["warnings"]["CP-1"][0]
    assert state["limits"] == {"charts": 10, "points": 2000, "warnings": 20}
    labels = [event.get("label") for event in state["events"]]
    assert labels[-1] == "MeterValues.conf" and "StartTransaction" in labels
    # The stream resumes right after the state: its first event is the next one, nothing older,
    # and nothing is lost between the page and its stream (every event is kept once it is served).
    await charger.call("Heartbeat", {})
    await charger.call("MeterValues", meter_values(transaction, 30))
    stream = await EventStream.open(server, "?lastEventId=" + state["eventId"])
    first = await stream.next()
    assert (first["type"], first["label"]) == ("frame", "Heartbeat")
    reading = (await stream.until(lambda event: event["type"] == "meter_values"))[-1]
    assert reading["readings"][0] == ["Energy.Active.Import.Register", "30", "Wh", None]
    stream.close()
    await charger.call(
        "StopTransaction",
        {"transactionId": transaction, "meterStop": 20, "timestamp": mock.UTC_CLOCK.now()},
    )
    assert state_block((await http(server, "GET", "/")).body.decode())["charts"] == []  # closed
    await charger.close()


@charger_test
async def test_the_server_keeps_the_latest_open_transactions_readings_bounded(
    start_server, monkeypatch
):
    monkeypatch.setattr(mock, "CHARTS_KEPT", 3)  # read at each reading, in this process
    monkeypatch.setattr(mock, "CHART_POINTS", 50)
    server = start_server()
    charger = await booted_charger(server)
    transactions = [await start_transaction(charger, connector) for connector in (1, 2, 3, 4)]
    await send_pipelined(
        charger,
        "MeterValues",
        [
            meter_values(transaction, 0, connector)
            for connector, transaction in enumerate(transactions, 1)
        ],
    )
    await send_pipelined(
        charger, "MeterValues", [meter_values(transactions[0], energy) for energy in range(1, 121)]
    )
    await send_pipelined(charger, "MeterValues", [meter_values(9999, 5)])  # not open: not kept
    charts = state_block((await http(server, "GET", "/")).body.decode())["charts"]
    # The latest three (the first transaction came back with readings after the fourth's).
    assert [chart["transactionId"] for chart in charts] == transactions[2:] + transactions[:1]
    energies = [point[1] for point in charts[-1]["points"]]
    assert len(energies) <= 50 and energies[-1] == 120 and energies == sorted(energies)
    assert all(len(chart["points"]) == 1 for chart in charts[:2])
    await charger.close()


@charger_test
async def test_a_hostile_charger_id_stays_text_in_the_state_block(start_server):
    server = start_server()
    charger = await Charger.connect(server.url, urllib_quote(HOSTILE_ID))
    await charger.call(
        "BootNotification", {"chargePointVendor": "</script><b>&amp;", "chargePointModel": "M"}
    )
    await charger.expect_call("DataTransfer")
    html = (await http(server, "GET", "/")).body.decode("utf-8")
    block = STATE_BLOCK.search(html).group(1)
    assert "<" not in block and ">" not in block and "&" not in block and "\u2028" not in block
    (record,) = state_block(html)["chargers"]
    assert record["id"] == HOSTILE_ID and record["boot"]["chargePointVendor"] == "</script><b>&amp;"
    assert html.count("<script") == 2  # the data block and the page's own script, nothing more
    await charger.close()


# ------------------------------------------------------------- in a browser


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for this file's browser tests."""
    driver = headless_browser()
    yield driver
    driver.quit()


def page_url(server) -> str:
    return f"http://127.0.0.1:{http_port(server)}/"


def start_button(browser, charger_id: str):
    from selenium.webdriver.common.by import By

    return browser.find_element(
        By.CSS_SELECTOR,
        f'section.card[data-charger="{charger_id}"] button[data-action="startRemote"]',
    )


def heap_after_gc(browser) -> int:
    browser.execute_cdp_cmd("HeapProfiler.collectGarbage", {})
    return browser.execute_cdp_cmd("Runtime.getHeapUsage", {})["usedSize"]


def test_a_page_opened_late_charts_from_the_first_reading_lists_warnings_and_guards_start(
    start_server, browser
):
    from selenium.webdriver.common.by import By

    server = start_server()

    def card(charger_id: str = "CP-1"):
        return browser.find_element(By.CSS_SELECTOR, f'section.card[data-charger="{charger_id}"]')

    async def scenario():
        charger = await booted_charger(server)
        await charger.call("Heartbeat", {"extra": 1})
        transaction = await start_transaction(charger)
        for energy in (0, 10, 20):  # before any page opens
            await charger.call("MeterValues", meter_values(transaction, energy))
        hostile = await Charger.connect(server.url, urllib_quote(HOSTILE_ID))
        await hostile.call("BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})
        browser.get(page_url(server))
        # The first paint, from the state block: the cards, the transaction, the whole chart.
        assert browser.find_element(By.ID, "no-chargers").get_attribute("hidden") is not None
        assert f"transaction {transaction}" in fresh(lambda: card().text)
        assert browser.execute_script(
            "return [...charts.values()].map((chart) => chart.points.map((point) => point.energy))"
        ) == [[0, 10, 20]]
        titles = browser.execute_script(  # read at once, in the page
            "return [...document.querySelectorAll('section.card h3')].map((e) => e.textContent)"
        )
        assert any(title.startswith("</script><script>alert(1)</script>") for title in titles)
        # a transaction is open on 1
        assert fresh(lambda: start_button(browser, "CP-1").get_attribute("disabled"))
        await wait_async(lambda: browser.find_element(By.ID, "status").text == "live")
        toggle = lambda: card().find_element(By.CSS_SELECTOR, "button.link")  # noqa: E731
        assert fresh(lambda: toggle().text) == "1 spec warning(s)"
        fresh(lambda: toggle().click())
        warnings = fresh(lambda: card().find_element(By.CSS_SELECTOR, "ul.warnings").text)
        assert "Heartbeat.extra" in warnings
        await charger.call(
            "StopTransaction",
            {"transactionId": transaction, "meterStop": 20, "timestamp": mock.UTC_CLOCK.now()},
        )
        await wait_async(lambda: not start_button(browser, "CP-1").get_attribute("disabled"))
        fresh(lambda: start_button(browser, "CP-1").click())
        call = await charger.expect_call("RemoteStartTransaction")
        # the Start is in flight
        assert fresh(lambda: start_button(browser, "CP-1").get_attribute("disabled"))
        await charger.answer(call, {"status": "Rejected"})
        await wait_async(lambda: not start_button(browser, "CP-1").get_attribute("disabled"))
        await charger.close()
        await hostile.close()

    run(scenario())


async def wait_async(condition, timeout: float = TIMEOUT) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not fresh(condition):
        assert time.monotonic() < deadline, "the page did not get there in time"
        await asyncio.sleep(0.05)


def fresh(read, tries: int = 100):
    """``read()`` of elements the page may redraw meanwhile (a card is rebuilt when its charger's
    state changes): read again when an element went stale, as a person looks again."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(tries - 1):
        try:
            return read()
        except StaleElementReferenceException:
            time.sleep(0.02)
    return read()


@pytest.mark.slow(4)
def test_fifteen_hundred_transactions_make_ten_charts_of_bounded_points_and_little_heap(
    start_server, browser, monkeypatch
):
    from selenium.webdriver.common.by import By

    monkeypatch.setattr(mock, "CHART_POINTS", 50)  # the page takes its limits from the server
    server = start_server()
    browser.get(page_url(server))
    wait_in_browser(browser, lambda: browser.find_element(By.ID, "status").text == "live", "live")
    before = heap_after_gc(browser)

    async def flood():
        charger = await booted_charger(server)
        transaction = await start_transaction(charger)
        await send_pipelined(
            charger, "MeterValues", [meter_values(transaction, energy) for energy in range(120)]
        )
        await send_pipelined(
            charger,
            "MeterValues",
            [meter_values(100000 + number, number) for number in range(1500)],
        )
        await charger.close()

    run(flood())
    wait_in_browser(
        browser,
        lambda: browser.find_element(By.CSS_SELECTOR, "#charts h3").text.endswith(
            "transaction 101499"
        ),
        "the last transaction's chart",
        timeout=30,
    )
    boxes = browser.find_elements(By.CSS_SELECTOR, "#charts section.chart")
    assert len(boxes) == 10
    assert (
        browser.execute_script(
            "return Math.max(...[...charts.values()].map((chart) => chart.points.length))"
        )
        <= 50
    )
    assert browser.execute_script("return document.documentElement.scrollHeight") < 6000
    grown = heap_after_gc(browser) - before
    print(f"JS heap grew by {(grown / 1e6):.1f} MB")
    assert grown < 50 * 1024 * 1024, grown


@pytest.mark.slow(3)
def test_the_page_retries_a_busy_server_and_redraws_after_a_restart(
    start_server, browser, monkeypatch
):
    from selenium.webdriver.common.by import By

    first = start_server()
    ws_port, web_port = first.port, http_port(first)

    async def old_charger():
        charger = await booted_charger(first, "CP-OLD")
        await charger.close()

    run(old_charger())
    browser.get(page_url(first))
    wait_in_browser(browser, lambda: browser.find_element(By.ID, "status").text == "live", "live")
    assert browser.find_elements(By.CSS_SELECTOR, 'section.card[data-charger="CP-OLD"]')
    first.stop()
    refusals = []
    event_stream = mock.EventStreams.open

    async def busy_at_first(self, request, writer):  # what a server over its connection bound says
        if len(refusals) < 2:
            refusals.append(request.path)
            raise mock.HttpError(503, "busy", (("Retry-After", "1"),))
        return await event_stream(self, request, writer)

    monkeypatch.setattr(mock.EventStreams, "open", busy_at_first)
    second = start_server("--port", str(ws_port), "--http-port", str(web_port))
    wait_in_browser(
        browser,
        lambda: "busy" in browser.find_element(By.ID, "status").text,
        "the page saying the server is busy",
    )
    wait_in_browser(
        browser,
        lambda: browser.find_element(By.ID, "status").text == "live",
        "live again",
        timeout=10,
    )

    async def new_charger():
        charger = await booted_charger(second, "CP-NEW")
        await charger.close()

    run(new_charger())
    wait_in_browser(
        browser,
        lambda: browser.find_elements(By.CSS_SELECTOR, 'section.card[data-charger="CP-NEW"]'),
        "the new run's charger",
    )
    assert not browser.find_elements(By.CSS_SELECTOR, 'section.card[data-charger="CP-OLD"]')
    rows = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#frames .row .who")]
    assert "CP-NEW" in rows and "CP-OLD" not in rows
    assert len(refusals) == 2
