"""The answer page in a real browser (Debian's headless Chromium, installed by `make test`), at a
phone's width: the answer appears live, without a reload, and nothing scrolls sideways."""

import os
import re
import shutil
import time

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from fakes import Rule

# A browser.
pytestmark = pytest.mark.slow

ANSWER = (
    "## 小结\n\n"
    + "".join(f"第{i}句话说完了。" for i in range(1, 13))
    + "\n\n```python\nprint('一行很长很长的代码，看手机上会不会横向滚动整个页面', "
    + "1234567890, " * 6
    + ")\n```\n\n"
    + "| 列一 | 列二 | 列三 | 列四 | 列五 | 列六 | 列七 | 列八 |\n|---|---|---|---|---|---|---|---|\n"
    + "| 很长的单元格内容 " * 5
    + "| 很长 | 很长 | 很长 |\n\n"
    + "**全文完**"
)


@pytest.fixture(scope="module")
def browser():
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.fail("chromium and chromedriver are not installed: run `make test`, which installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=390,844"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    yield driver
    driver.quit()


def test_the_answer_appears_live_in_a_phone_browser_without_a_reload(bot, fake_llm, browser):
    assert "对话已开始" in bot.say("/chatgpt")
    fake_llm.rules["慢慢说"] = Rule(latency=0.2, content=ANSWER, pieces=24, piece_delay=0.2)
    reply = bot.say("慢慢说")
    link = reply.split('href="')[1].split('"')[0]
    browser.get(bot.url + link.removeprefix("https://bot.example.com"))
    browser.execute_script("window.loadedOnce = true")

    status = browser.find_element(By.ID, "status")
    answer = browser.find_element(By.ID, "answer")
    assert "正在生成" in status.text
    first_seen = answer.text
    assert "全文完" not in first_seen

    WebDriverWait(browser, 15, poll_frequency=0.1).until(lambda _: "回答完毕" in status.text)
    assert browser.execute_script("return window.loadedOnce") is True, "the page updated in place, no reload"
    assert len(answer.text) > len(first_seen)
    assert browser.find_element(By.CSS_SELECTOR, "#answer h2").text == "小结"
    assert browser.find_element(By.CSS_SELECTOR, "#answer strong").text == "全文完"
    assert browser.find_element(By.CSS_SELECTOR, "#question").text == "慢慢说"
    # A phone's width: long code and wide tables scroll inside themselves, the page does not.
    width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], width
    # Nothing in the page asked the browser for anything outside the app.
    requests_made = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(name.startswith(bot.url) for name in requests_made), requests_made
    time.sleep(0.5)
    assert fake_llm.calls_for("慢慢说") == 1


SHOTS = os.path.join(os.path.dirname(__file__), "screenshots")  # kept for a person to look at


def background(browser) -> tuple[int, ...]:
    rgb = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
    return tuple(int(n) for n in re.findall(r"\d+", rgb)[:3])


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_pages_read_well_on_a_phone_in_light_and_dark(bot, fake_llm, browser, scheme, mode):
    """The answer page, the history page with its index, and a dead link, at a phone's width;
    a screenshot of each in tests/screenshots/ (printed)."""
    media = {"features": [{"name": "prefers-color-scheme", "value": scheme}]}
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", media)
    try:
        assert "对话已开始" in bot.say("/chatgpt")
        assert bot.say("第一个问题") == "答：第一个问题"
        fake_llm.rules["写一段代码"] = Rule(latency=3.2, content=ANSWER)
        link = bot.say("写一段代码").split('href="')[1].split('"')[0]
        time.sleep(1.0)  # the slow answer is finished
        assert "小结" in bot.say("继续")
        history = bot.say("/history").split('href="')[1].split('"')[0]
        os.makedirs(SHOTS, exist_ok=True)
        pages = {
            "answer": bot.url + link.removeprefix("https://bot.example.com"),
            "history": bot.url + history.removeprefix("https://bot.example.com"),
            "expired": bot.url + "/answer/" + bot.app.mpbot.links.token("1", now=time.time() - 10**8),
        }
        for name, url in pages.items():
            browser.get(url)
            WebDriverWait(browser, 10).until(lambda b: b.execute_script("return document.readyState") == "complete")
            light = sum(background(browser)) > 600
            assert light == (scheme == "light"), (name, scheme, background(browser))
            width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
            assert width[0] <= width[1], (name, width)
            path = os.path.join(SHOTS, f"{name}-{scheme}-{mode}.png")
            assert browser.save_screenshot(path)
            print(f"screenshot: {path}")
        browser.get(pages["history"])
        index = browser.find_elements(By.CSS_SELECTOR, "nav ol a")
        assert [a.text for a in index] == ["第一个问题", "写一段代码"]
        index[1].click()
        assert browser.execute_script("return location.hash") == "#q2"
        browser.get(pages["expired"])
        assert "发送「继续」" in browser.find_element(By.TAG_NAME, "body").text
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
