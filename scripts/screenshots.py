#!/usr/bin/env python3
"""Screenshots of the live page for docs/: a demo charger mid-session, at 1920 and 375 pixels wide.

    python scripts/screenshots.py        # writes docs/page-1920.png and docs/page-375.png

Needs what the browser test needs: selenium, chromium and chromedriver.
"""

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

ROOT = Path(__file__).resolve().parent.parent


def wait_line(process: subprocess.Popen, pattern: str) -> "re.Match[str]":
    for line in process.stdout:
        match = re.search(pattern, line)
        if match:
            return match
    raise SystemExit(f"the server stopped before printing {pattern!r}")


def browser(width: int, height: int) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-background-networking",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def main() -> None:
    server = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "ocpp_mock_server.py"),
            "--port",
            "0",
            "--files-dir",
            tempfile.mkdtemp(),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    url = wait_line(server, r"listening on (ws://\S+)").group(1)
    page = wait_line(server, r"web page and HTTP API: (http://\S+)").group(1)
    chargers = []
    for name, extra in (("CP-1", []), ("FLEXI-7", ["--flexicharge"])):  # in this order on the page
        chargers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "examples" / "demo_charger.py"),
                    url + "/" + name,
                    "--meter-interval",
                    "0.5",
                ]
                + extra,
                stdout=subprocess.DEVNULL,
            )
        )
        wait_line(server, name + r" .*connected from")
    try:
        time.sleep(2)
        server.stdin.write("@CP-1 startRemote\n")
        server.stdin.flush()
        time.sleep(6)  # a few meter values
        for width, height in ((1920, 1080), (375, 812)):
            driver = browser(width, height)
            try:
                driver.execute_cdp_cmd(
                    "Emulation.setDeviceMetricsOverride",
                    {
                        "width": width,
                        "height": height,
                        "deviceScaleFactor": 1,
                        "mobile": width < 600,
                    },
                )
                driver.get(page)
                time.sleep(3)
                if width > 600:  # a frame and a charger's spec warnings opened, as clicks show them
                    driver.find_element(By.CSS_SELECTOR, '#frames .row[data-type="frame"]').click()
                    driver.find_element(
                        By.CSS_SELECTOR, 'section.card[data-charger="FLEXI-7"] button.link'
                    ).click()
                time.sleep(0.5)
                driver.save_screenshot(str(ROOT / "docs" / (f"page-{width}.png")))
            finally:
                driver.quit()
    finally:
        for process in chargers + [server]:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
