"""The web page: self-contained and locked down, and a session driven from it in a real browser.

The browser test needs Debian's chromium and chromium-driver (selenium drives them); .ci/run
installs them and sets REQUIRE_BROWSER=1, so there a missing browser fails the test; elsewhere it
is skipped with its reason.
"""

import base64
import re
import subprocess
import sys

import pytest

from conftest import (
    DEMO_CHARGER,
    TIMEOUT,
    Charger,
    headless_browser,
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


@pytest.mark.slow(8)
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
    demo = subprocess.Popen(
        [sys.executable, str(DEMO_CHARGER), server.url + "/CP-DEMO", "--meter-interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
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
        demo.terminate()
        demo.communicate(timeout=TIMEOUT)
