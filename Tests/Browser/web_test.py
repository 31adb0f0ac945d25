#!/usr/bin/env python3
"""The web app in a real browser: headless Chromium (Debian's chromium + chromium-driver) driven
by selenium against a real `verteilt serve` on a temporary SQLite file and a free loopback port.

Two people in two separate browsers sign up, one creates a group and an invite link, the other
joins through it; messages appear live on the other side, unread badges count and clear, a reload
keeps the conversation, a dropped connection (the server restarts while one browser cannot get
back in) resumes with no lost and no doubled message, and switching micro-frontends leaves no
stray globals or nodes. An admin reads the development mailbox and the workflow runs (cancel,
retry) in the admin view; a non-admin gets its "not allowed" page. Screenshots of the main screens
go to artifacts/browser/.

Run by scripts/test; alone: VERTEILT_BIN=.build/debug/verteilt python3 Tests/Browser/web_test.py
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import unittest
import urllib.error
import urllib.parse
import urllib.request

os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager reach for the network

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import (ElementClickInterceptedException, ElementNotInteractableException,
                                        NoSuchElementException, StaleElementReferenceException, TimeoutException)  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ARTIFACTS = os.path.join(ROOT, "artifacts", "browser")
BIN = os.path.abspath(os.environ.get("VERTEILT_BIN") or os.path.join(ROOT, ".build", "debug", "verteilt"))
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
WAIT = float(os.environ.get("BROWSER_TEST_WAIT", "15"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real `verteilt serve` process; restartable on the same port and database."""

    def __init__(self, workdir, *extra_args):
        self.extra_args = list(extra_args)
        self.port = free_port()
        self.database = os.path.join(workdir, "web-test.sqlite")
        self.log_path = os.path.join(workdir, "server.log")
        self.process = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                [BIN, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--database", self.database,
                 "--bcrypt-cost", "4", "--log-level", "info", "--public-url", self.url, *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, cwd=os.path.dirname(self.database))
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("server did not start:\n" + self.log_tail())

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log_tail(self, lines=60):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no server log)"


def post_json(base, method, body, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"{base}/v1/{method}", data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def new_browser(width=1280, height=900, phone=False):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--lang=en-US"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    driver.console = []  # console lines collected so far (get_log drains the buffer)
    if phone:  # a window cannot be narrower than 500 px: emulate the phone's viewport instead
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": True})
    return driver


def console(driver):
    try:
        driver.console.extend(driver.get_log("browser"))
    except Exception:  # noqa: BLE001 - diagnostics only
        pass
    return driver.console


def js_errors(driver):
    """Console errors that are bugs: not the network failures the scenario causes on purpose."""
    ignore = ("Failed to load resource", "net::ERR_", "WebSocket connection to", "/api/session")
    return [e for e in console(driver) if e["level"] == "SEVERE" and not any(s in e["message"] for s in ignore)]


class WebAppInABrowser(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(BIN):
            raise RuntimeError(f"no server binary at {BIN}: build with `swift build --product verteilt` or set VERTEILT_BIN")
        shutil.rmtree(ARTIFACTS, ignore_errors=True)
        os.makedirs(ARTIFACTS, exist_ok=True)
        cls.workdir = tempfile.mkdtemp(prefix="verteilt-web-")
        cls.server = Server(cls.workdir)
        cls.server.start()
        cls.browsers = {}

    @classmethod
    def tearDownClass(cls):
        for d in cls.browsers.values():
            try:
                d.quit()
            except Exception:  # noqa: BLE001
                pass
        cls.server.stop()
        shutil.rmtree(cls.workdir, ignore_errors=True)

    # ---- helpers --------------------------------------------------------------------------------
    def browser(self, name, **size):
        if name not in self.browsers:
            self.browsers[name] = new_browser(**size)
        return self.browsers[name]

    def wait(self, driver, condition, what, timeout=WAIT):
        try:
            # Elements are re-rendered as live data arrives: a stale or missing one means "not yet".
            return WebDriverWait(driver, timeout, poll_frequency=0.05,
                                 ignored_exceptions=(StaleElementReferenceException, NoSuchElementException)).until(condition)
        except TimeoutException:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what} (at {driver.current_url})") from None

    def shot(self, driver, name):
        driver.save_screenshot(os.path.join(ARTIFACTS, f"{name}.png"))

    def el(self, driver, css):
        return driver.find_element(By.CSS_SELECTOR, css)

    def click(self, driver, css):
        """Clicks the element, finding it again if a live update replaced it meanwhile."""
        def attempt(d):
            el = d.find_element(By.CSS_SELECTOR, css)
            if not el.is_displayed():
                return False
            try:
                el.click()
            except (ElementClickInterceptedException, ElementNotInteractableException):
                return False
            return True
        self.wait(driver, attempt, f"click {css}")

    def visible(self, driver, css):
        def check(d):
            found = [e for e in d.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]
            return found[0] if found else False
        return self.wait(driver, check, f"{css} visible")

    def fill(self, driver, css, text):
        field = self.visible(driver, css)
        field.clear()
        field.send_keys(text)
        return field

    def state(self, driver):
        return driver.execute_script("return window.verteilt && window.verteilt.state")

    def texts(self, driver):
        return driver.execute_script(
            "return [...document.querySelectorAll('#message-list article.msg:not(.pending) .text')].map(e => e.textContent)")

    def badge(self, driver, css):
        return driver.execute_script(
            "const b = document.querySelector(arguments[0] + ' .badge'); return b && !b.hidden ? Number(b.dataset.count) : 0", css)

    def message(self, driver, text):
        """The message element whose text is `text`."""
        return self.wait(driver, lambda d: d.execute_script(
            "return [...document.querySelectorAll('#message-list article.msg')].find(a => a.querySelector('.text')?.textContent === arguments[0]) || false",
            text), f"message {text!r}")

    def act(self, driver, text, label):
        """Presses a message's action button with the keyboard (the actions show on focus)."""
        button = self.message(driver, text).find_element(By.XPATH, f".//div[@class='msg-actions']/button[normalize-space()='{label}' or @aria-label='{label}']")
        driver.execute_script("arguments[0].focus()", button)
        button.send_keys(Keys.ENTER)

    def assert_labelled(self, driver, screen):
        """Every visible form control has a label, every button a name (screen readers)."""
        unnamed = driver.execute_script("""
            const shown = (e) => e.offsetParent !== null;
            return [...document.querySelectorAll('input, textarea, select')].filter(shown)
                .filter((e) => e.labels.length === 0 && !e.getAttribute('aria-label')).map((e) => e.outerHTML)
              .concat([...document.querySelectorAll('button')].filter(shown)
                .filter((b) => !b.textContent.trim() && !b.getAttribute('aria-label')).map((b) => b.outerHTML));""")
        self.assertEqual(unnamed, [], f"{screen}: controls without a label or name")

    def api(self, driver, method, body):
        """A call as the browser's signed-in user (its HttpOnly session cookie as a bearer token)."""
        token = driver.get_cookie("verteilt_session")["value"]
        req = urllib.request.Request(f"{self.server.url}/v1/{method}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req) as r:
            return json.load(r)

    def sign_up(self, driver, first, email, password="correct horse battery"):
        self.fill(driver, "#signup-first_name", first)
        self.fill(driver, "#signup-email", email)
        self.fill(driver, "#signup-password", password)
        self.click(driver, "#signup-form button[type=submit]")

    def send(self, driver, text):
        box = self.visible(driver, "#composer-text")
        for i, line in enumerate(text.split("\n")):
            if i:
                box.send_keys(Keys.SHIFT, Keys.ENTER)  # Shift+Enter: a new line, not a send
            box.send_keys(line)
        box.send_keys(Keys.ENTER)
        self.wait(driver, lambda d: text in self.texts(d), f"own message {text!r} confirmed")

    def diagnose(self):
        """On failure: what each browser showed and logged, and what the server logged."""
        print("\n======== diagnostics ========", file=sys.stderr)
        for name, d in self.browsers.items():
            try:
                self.shot(d, f"failure-{name}")
                print(f"--- {name}: {d.current_url} state={self.state(d)}", file=sys.stderr)
                print(d.execute_script("return document.getElementById('app')?.innerText?.slice(0, 1500)"), file=sys.stderr)
            except Exception as e:  # noqa: BLE001
                print(f"--- {name}: cannot inspect ({e})", file=sys.stderr)
            for entry in console(d)[-40:]:
                print(f"  [{name} console {entry['level']}] {entry['message']}", file=sys.stderr)
        print("--- server log (tail) ---\n" + self.server.log_tail(), file=sys.stderr)

    # ---- the scenario -------------------------------------------------------------------------
    def mails(self, to):
        """The development mailbox's mails to `to`, newest first (read with a service key)."""
        if not getattr(self, "service_key", None):
            out = subprocess.run([BIN, "keys", "create", f"web-test-{time.time_ns()}", "--database", self.server.database],
                                 check=True, capture_output=True, text=True, cwd=self.workdir)
            type(self).service_key = out.stdout.strip().splitlines()[-1]
        return post_json(self.server.url, "mail/List", {"to": to}, self.service_key)["mails"]

    def mailed_link(self, to, path):
        """The link to `path` in the newest mail to `to` that has one, once the workers sent it."""
        def find(_):
            for mail in self.mails(to):
                for line in mail["text"].splitlines():
                    if line.startswith(self.server.url + path + "?"):
                        return line
            return False
        deadline = time.time() + WAIT
        while time.time() < deadline:
            link = find(None)
            if link:
                return link
            time.sleep(0.2)
        raise AssertionError(f"no mail to {to} with a link to {path}")

    def test_forgotten_password_and_email_confirmation(self):
        base = self.server.url
        eve = self.browser("eve")
        email = f"eve+{time.time_ns()}@example.com"
        eve.get(f"{base}/account/signup")
        self.sign_up(eve, "Eve", email)
        self.wait(eve, lambda d: d.current_url.endswith("/groups"), "signed up")

        # Settings say the address is not confirmed; the link in the sign-up mail confirms it.
        eve.get(f"{base}/settings/profile")
        self.wait(eve, lambda d: "Not confirmed" in self.el(d, "#profile-email-status").text, "not confirmed yet")
        self.visible(eve, "#resend-verification")
        link = self.mailed_link(email, "/account/verify")
        eve.get(link)
        self.wait(eve, lambda d: f"{email} is confirmed" in self.el(d, "#verify-message").text, "address confirmed")
        self.shot(eve, "11-email-confirmed")
        eve.get(link)  # a second use of the link fails and says what to do
        self.wait(eve, lambda d: "invalid or has expired" in self.el(d, "#verify-message").text, "used link refused")
        eve.get(f"{base}/settings/profile")
        self.wait(eve, lambda d: self.el(d, "#profile-email-status").text == "Confirmed.", "settings say confirmed")
        self.assertFalse(self.el(eve, "#resend-verification").is_displayed())

        # Forgotten password: from the login page to a mailed code, a new password, signed in.
        self.click(eve, "#logout-link")
        self.wait(eve, lambda d: "/account/login" in d.current_url and self.state(d)["user"] is None, "logged out")
        self.click(eve, "#forgot-link")
        self.fill(eve, "#forgot-email", "not an address")
        self.click(eve, "#forgot-form button[type=submit]")
        self.wait(eve, lambda d: self.el(d, "#forgot-email-error").text, "a malformed address is shown at its field")
        self.fill(eve, "#forgot-email", email.upper())
        self.click(eve, "#forgot-form button[type=submit]")
        self.wait(eve, lambda d: "/account/reset" in d.current_url and "code is on its way" in self.el(d, "#reset-sent").text,
                  "the code form")
        self.assert_labelled(eve, "reset")
        link = self.mailed_link(email, "/account/reset")
        code = urllib.parse.parse_qs(urllib.parse.urlparse(link).query)["code"][0]
        # A wrong code is shown, then the mailed link fills the form in.
        self.fill(eve, "#reset-code", "000000" if code != "000000" else "000001")
        self.fill(eve, "#reset-new_password", "a forgotten-no-more phrase")
        self.click(eve, "#reset-form button[type=submit]")
        self.wait(eve, lambda d: "invalid or expired" in self.el(d, "#reset-code-error").text.lower(), "wrong code shown at its field")
        eve.get(link)
        self.wait(eve, lambda d: self.el(d, "#reset-code").get_attribute("value") == code
                  and self.el(d, "#reset-email").get_attribute("value") == email, "the link fills email and code")
        self.fill(eve, "#reset-new_password", "a forgotten-no-more phrase")
        self.shot(eve, "12-reset-password")
        self.click(eve, "#reset-form button[type=submit]")
        self.wait(eve, lambda d: d.current_url.endswith("/groups") and self.state(d)["user"], "signed in with the new password")
        me = self.state(eve)["user"]
        self.assertEqual(self.api(eve, "users/Read", {"ids": [me]})["users"][me]["email"], email)
        with self.assertRaises(urllib.error.HTTPError) as old:
            post_json(base, "users/Login", {"email": email, "password": "correct horse battery"})
        self.assertEqual(old.exception.code, 401)
        self.assertEqual(js_errors(eve), [], "JavaScript errors")

    def admin_cli(self, *args):
        """`verteilt admin ...` against the test server's database, as an operator runs it."""
        subprocess.run([BIN, "admin", *args, "--database", self.server.database],
                       check=True, capture_output=True, text=True, cwd=self.workdir)

    def runs(self, driver, **filters):
        return self.api(driver, "workflows/ListRuns", filters)["runs"]

    def run_status(self, driver, run_id):
        return self.api(driver, "workflows/ReadRun", {"id": run_id})["run"]["status"]

    def test_admin_mailbox_and_workflow_runs(self):
        try:
            self.admin_scenario()
        except BaseException:
            traceback.print_exc()
            self.diagnose()
            raise

    def admin_scenario(self):
        base = self.server.url
        suffix = str(time.time_ns())
        root = self.browser("root")
        nina = self.browser("nina", width=390, height=844, phone=True)

        # An account gets the admin role from the command line; reloaded, the app shows the Admin link.
        root_email = f"root-{suffix}@example.com"
        root.get(f"{base}/account/signup")
        self.sign_up(root, "Root", root_email)
        self.wait(root, lambda d: d.current_url.endswith("/groups"), "root signed up")
        self.assertFalse(self.el(root, "#admin-link").is_displayed(), "no Admin link without the role")
        self.admin_cli("grant", root_email)
        root.refresh()
        self.visible(root, "#admin-link")

        # Nina (no admin role, on a phone) signs up: no Admin link, and /admin says she may not.
        nina_email = f"nina-{suffix}@example.com"
        nina.get(f"{base}/account/signup")
        self.sign_up(nina, "Nina", nina_email)
        self.wait(nina, lambda d: d.current_url.endswith("/groups"), "nina signed up")
        self.assertFalse(self.el(nina, "#admin-link").is_displayed(), "no Admin link for a non-admin")
        for path in ("/admin", "/admin/runs/someid"):
            nina.get(base + path)
            self.wait(nina, lambda d: self.state(d)["microFrontend"] == "admin"
                      and self.el(d, "#admin-title").text == "Not allowed", f"{path}: the not-allowed view")
            self.assertTrue(self.el(nina, "#admin-denied").is_displayed())
            self.assertFalse(self.el(nina, "#admin-tabs").is_displayed())
            self.assertFalse([p for p in nina.find_elements(By.CSS_SELECTOR, "[data-panel]") if p.is_displayed()])
        self.shot(nina, "13-admin-not-allowed-phone")
        with self.assertRaises(urllib.error.HTTPError) as refused:
            self.api(nina, "mail/List", {})
        self.assertEqual(refused.exception.code, 403, "the server refuses her too")

        # The mailbox lists mails newest first: Nina's verification mail above Root's.
        self.mailed_link(root_email, "/account/verify")
        link = self.mailed_link(nina_email, "/account/verify")
        self.click(root, "#admin-link")
        self.wait(root, lambda d: d.current_url == f"{base}/admin/mail", "/admin leads to the mailbox")
        self.assertEqual(self.el(root, "#admin-link").get_attribute("aria-current"), "page")
        items = self.wait(root, lambda d: [a.text for a in d.find_elements(By.CSS_SELECTOR, "#mail-list a")], "mails listed")
        mine = [i for i, t in enumerate(items) if nina_email in t or root_email in t]
        self.assertEqual(len(mine), 2, items)
        self.assertIn(nina_email, items[mine[0]])
        self.assertIn("Confirm your email address", items[mine[0]])
        self.assert_labelled(root, "mailbox")

        # Filtered by her address, it is the one mail; opened, its text, links and HTML show.
        self.fill(root, "#mail-to", "not an address")
        self.click(root, "#mail-filter button[type=submit]")
        self.wait(root, lambda d: self.el(d, "#mail-to-error").text, "a malformed address is shown at its field")
        self.fill(root, "#mail-to", nina_email)
        self.click(root, "#mail-filter button[type=submit]")
        self.wait(root, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#mail-list a")) == 1
                  and "One mail to" in self.el(d, "#mail-info").text, "one mail to nina")
        self.assertIn("to=", root.current_url)
        self.click(root, "#mail-list a")
        self.wait(root, lambda d: "/admin/mail/" in d.current_url and self.el(d, "#mail-detail").is_displayed(), "mail open")
        self.assertIn("Confirm your email address", self.el(root, "#mail-subject").text)
        self.assertIn(nina_email, self.el(root, "#mail-meta").text)
        self.assertIn(link, self.el(root, "#mail-text").text)
        listed = [a.get_attribute("href") for a in root.find_elements(By.CSS_SELECTOR, "#mail-links a")]
        self.assertEqual(listed, [link], "the mail's one link, once")
        self.assertEqual(root.find_elements(By.LINK_TEXT, "Confirm my address"), [], "mail HTML never enters the app's page")
        frame = self.el(root, "#mail-html iframe")
        self.assertEqual(frame.get_attribute("sandbox"), "allow-popups allow-popups-to-escape-sandbox")
        self.assertTrue(frame.get_attribute("title"))
        self.shot(root, "14-admin-mail")
        root.execute_script("arguments[0].scrollIntoView({block: 'center'})", frame)
        self.shot(root, "14b-admin-mail-html")
        root.switch_to.frame(frame)
        try:
            self.wait(root, lambda d: "Confirm my address" in d.find_element(By.TAG_NAME, "body").text, "the HTML part in the frame")
            anchor = root.find_element(By.LINK_TEXT, "Confirm my address")
            self.assertEqual(anchor.get_attribute("href"), link)
            # The app's policy holds in the frame: the mail's inline style does not apply.
            self.assertNotEqual(root.find_element(By.TAG_NAME, "body").value_of_css_property("line-height"), "24px")
            # The frame's link works: it opens in a new tab (never inside the frame) and confirms Nina's address.
            before = root.window_handles
            anchor.click()
        finally:
            root.switch_to.default_content()
        self.wait(root, lambda d: len(d.window_handles) == len(before) + 1, "the link opens a tab")
        root.switch_to.window([w for w in root.window_handles if w not in before][0])
        self.wait(root, lambda d: f"{nina_email} is confirmed" in self.el(d, "#verify-message").text, "the mailed link works")
        root.close()
        root.switch_to.window(before[0])

        # At phone width the open mail takes the place of the list, with a way back.
        root.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
        try:
            self.visible(root, "#mail-back")
            self.assertFalse(self.el(root, "#mail-list").is_displayed())
            self.assertLessEqual(root.execute_script("return document.documentElement.scrollWidth"), 390, "nothing wider than the phone")
            self.assertTrue(root.execute_script("const m = document.getElementById('app'); return m.scrollWidth <= m.clientWidth"),
                            "no sideways scrolling")
            self.shot(root, "15-admin-mail-phone")
            self.click(root, "#mail-back")
            self.wait(root, lambda d: self.el(d, "#mail-list").is_displayed() and not self.el(d, "#mail-detail").is_displayed(), "back to the list")
        finally:
            root.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

        # Workflow runs: the two verification mails' runs, filtered by status and function.
        self.wait(root, lambda d: len(self.runs(d, status="completed", function_id="verify-email")) >= 2, "both runs completed")
        self.click(root, "#admin-tabs a[data-tab='runs']")
        self.wait(root, lambda d: d.current_url == f"{base}/admin/runs" and d.find_elements(By.CSS_SELECTOR, "#runs-list a"), "runs listed")
        Select(self.el(root, "#runs-status")).select_by_value("completed")
        self.fill(root, "#runs-function_id", "verify-email")
        self.click(root, "#runs-filter button[type=submit]")
        self.wait(root, lambda d: "status=completed" in d.current_url and "function_id=verify-email" in d.current_url, "filters in the URL")
        def filtered(d):
            rows = [a.text for a in d.find_elements(By.CSS_SELECTOR, "#runs-list a")]
            return len(rows) >= 2 and all("verify-email" in r and "completed" in r for r in rows)
        self.wait(root, filtered, "only completed verify-email runs listed")
        self.click(root, "#runs-list a")
        self.wait(root, lambda d: self.el(d, "#run-detail").is_displayed() and "verify-email" in self.el(d, "#run-title").text, "run open")
        self.wait(root, lambda d: "send" in self.el(d, "#run-steps").text and "Attempt 1" in self.el(d, "#run-attempts").text, "steps and attempts")
        self.assertFalse(self.el(root, "#run-retry").is_displayed(), "a completed run is not retried")
        self.assertFalse(self.el(root, "#run-cancel").is_displayed(), "nor cancelled")
        self.assert_labelled(root, "runs")
        self.shot(root, "16-admin-run")

        # A run waiting for an event (the unread digest of a chat message Nina has not read) is
        # cancelled and retried from the page; a refusal by the server is shown there.
        group = self.api(root, "groups/Create", {"name": "Admins and friends"})["group"]["id"]
        nina_id = self.state(nina)["user"]
        self.api(root, "groups/AddMember", {"group_id": group, "member_id": nina_id})
        chat = self.api(root, "chats/CreateChat", {"user_ids": [nina_id]})["chat"]["id"]
        self.api(root, "chats/CreateMessage", {"chat_id": chat, "text": "Are you there?"})
        waiting = self.wait(root, lambda d: [r["id"] for r in self.runs(d, status="waiting", function_id="unread-digest")
                                             if (r["event"] or {}).get("user_id") == nina_id] or False, "the digest run waits")[0]
        root.get(f"{base}/admin/runs?status=waiting")
        self.wait(root, lambda d: d.find_elements(By.CSS_SELECTOR, f"#runs-list a[data-run-id='{waiting}']"), "the waiting run listed")
        self.click(root, f"#runs-list a[data-run-id='{waiting}']")
        self.wait(root, lambda d: "waiting" in self.el(d, "#run-title").text, "the waiting run open")
        self.assertFalse(self.el(root, "#run-retry").is_displayed())
        self.click(root, "#run-cancel")
        self.wait(root, lambda d: "cancelled" in self.el(d, "#run-title").text and self.el(d, "#run-retry").is_displayed(), "cancelled")
        self.assertEqual(self.run_status(root, waiting), "cancelled")
        self.assertIn("cancelled by an administrator", self.el(root, "#run-meta").text)
        self.click(root, "#run-retry")
        self.wait(root, lambda d: self.el(d, "#run-cancel").is_displayed(), "queued again: it may be cancelled")
        self.wait(root, lambda d: self.run_status(d, waiting) == "waiting", "the retried run waits again")
        self.click(root, "#runs-refresh")
        self.wait(root, lambda d: "waiting" in self.el(d, "#run-title").text, "refreshed")
        self.api(root, "workflows/CancelRun", {"id": waiting})  # meanwhile, elsewhere
        self.click(root, "#run-cancel")
        self.wait(root, lambda d: "already finished" in self.el(d, "#run-error").text, "the server's refusal shown")
        self.wait(root, lambda d: "cancelled" in self.el(d, "#run-title").text, "and the run as it is now")

        # Leaving the admin view leaves nothing of it behind.
        footprint = "return { globals: Object.getOwnPropertyNames(window).sort(), mfNodes: [...document.querySelectorAll('[data-mf]')].map(n => n.tagName + ':' + n.dataset.mf).sort(), head: document.head.children.length, body: document.body.children.length }"
        self.click(root, "nav a[href='/settings']")
        self.wait(root, lambda d: self.state(d)["microFrontend"] == "settings", "settings loaded")
        self.visible(root, "#profile-first_name")
        baseline = root.execute_script(footprint)
        self.assertFalse([n for n in baseline["mfNodes"] if n.endswith(":admin")], baseline["mfNodes"])
        self.click(root, "#admin-link")
        self.wait(root, lambda d: self.state(d)["microFrontend"] == "admin" and d.find_elements(By.CSS_SELECTOR, "#mail-list a"), "admin again")
        self.click(root, "nav a[href='/settings']")
        self.wait(root, lambda d: self.state(d)["microFrontend"] == "settings", "settings again")
        self.visible(root, "#profile-first_name")
        self.assertEqual(root.execute_script(footprint), baseline)

        for name in ("root", "nina"):
            self.assertEqual(js_errors(self.browsers[name]), [], f"{name}: JavaScript errors")

    def test_admin_mailbox_says_when_mail_goes_to_smtp(self):
        # A second server whose mails go to an SMTP server (nothing listens: they are only queued).
        workdir = os.path.join(self.workdir, "smtp")
        os.makedirs(workdir, exist_ok=True)
        server = Server(workdir, "--smtp-url", f"smtp://127.0.0.1:{free_port()}?security=none")
        server.start()
        try:
            driver = self.browser("smtp-admin")
            email = f"smtp-admin-{time.time_ns()}@example.com"
            driver.get(f"{server.url}/account/signup")
            self.sign_up(driver, "Sam", email)
            self.wait(driver, lambda d: d.current_url.endswith("/groups"), "signed up")
            subprocess.run([BIN, "admin", "grant", email, "--database", server.database],
                           check=True, capture_output=True, text=True, cwd=workdir)
            driver.get(f"{server.url}/admin/mail")
            self.wait(driver, lambda d: "SMTP server" in self.el(d, "#mail-info").text
                      and "empty" in self.el(d, "#mail-info").text, "the mailbox says mails go to SMTP")
            self.assertEqual(driver.find_elements(By.CSS_SELECTOR, "#mail-list li"), [])
            self.assertEqual(js_errors(driver), [], "JavaScript errors")
        except BaseException:
            traceback.print_exc()
            print("--- smtp server log ---\n" + server.log_tail(), file=sys.stderr)
            raise
        finally:
            server.stop()

    def test_two_people_chat_through_an_invite(self):
        try:
            self.scenario()
        except BaseException:
            traceback.print_exc()
            self.diagnose()
            raise

    def scenario(self):
        base = self.server.url
        suffix = str(int(time.time() * 1000))
        ada = self.browser("ada")
        bob = self.browser("bob", width=390, height=844, phone=True)

        # A deep link while signed out lands on the login form, remembering where it was going.
        ada.get(base + "/groups")
        self.wait(ada, lambda d: "/account/login" in d.current_url, "redirect to login")
        self.assertIn("next=%2Fgroups", ada.current_url)
        self.visible(ada, "#login-email")
        self.assert_labelled(ada, "login")
        self.shot(ada, "01-login")

        # Sign-up: the server's error appears next to the field it names, and clears on retry.
        self.click(ada, "#login-form a[href^='/account/signup']")
        self.visible(ada, "#signup-first_name")
        self.sign_up(ada, "Ada", f"ada-{suffix}@example.com", password="short")
        err = self.wait(ada, lambda d: self.el(d, "#signup-password-error").text, "password error")
        self.assertIn("8 characters", err)
        self.assertEqual(self.el(ada, "#signup-password").get_attribute("aria-invalid"), "true")
        self.assert_labelled(ada, "sign-up")
        self.shot(ada, "02-signup-error")
        self.fill(ada, "#signup-password", "correct horse battery")
        self.click(ada, "#signup-form button[type=submit]")
        self.wait(ada, lambda d: d.current_url.endswith("/groups"), "signed in, at /groups")
        self.visible(ada, "#new-group-name")
        self.assertEqual(self.el(ada, "#signup-password-error").text if ada.find_elements(By.CSS_SELECTOR, "#signup-password-error") else "", "")

        # Ada creates a group (it starts with a "General" conversation) and an invite link.
        self.fill(ada, "#new-group-name", "Friends")
        self.click(ada, "#new-group-form button[type=submit]")
        self.wait(ada, lambda d: "/groups/" in d.current_url, "group page")
        group_id = ada.current_url.rstrip("/").split("/")[-1]
        general = self.visible(ada, "a[data-conversation-id]")
        conversation_id = general.get_attribute("data-conversation-id")
        self.assertIn("General", general.text)
        self.click(ada, "#invite-panel summary")
        self.click(ada, "#create-link")
        link = self.wait(ada, lambda d: self.el(d, "#invite-link").get_attribute("value"), "invite link")
        self.assertTrue(link.startswith(base + "/invite/"), link)
        self.click(ada, "#copy-link")
        self.wait(ada, lambda d: self.el(d, "#copy-link").text == "Copied", "link copied")
        self.fill(ada, "#invite-email", "carol@example.com")
        self.click(ada, "#invite-email-form button[type=submit]")
        self.wait(ada, lambda d: "Invited carol@example.com" in self.el(d, "#invite-email-result").text
                  and base + "/invite/" in self.el(d, "#invite-email-result").text, "email invite made")
        self.assert_labelled(ada, "group page")
        self.shot(ada, "03-group-with-invite")

        # Bob opens the link signed out: a preview, then sign-up, then back to the invite, join.
        bob.get(link)
        self.wait(bob, lambda d: "Friends" in self.el(d, "#invite-title").text, "invite preview")
        self.assertIn("Ada", self.el(bob, "#invite-text").text)
        self.assertFalse(self.el(bob, "#main-nav").is_displayed(), "no app navigation while signed out")
        self.shot(bob, "04-invite-preview-phone")
        self.click(bob, "#invite-signup")
        self.visible(bob, "#signup-first_name")
        self.sign_up(bob, "Bob", f"bob-{suffix}@example.com")
        self.wait(bob, lambda d: "/invite/" in d.current_url, "back at the invite after sign-up")
        self.click(bob, "#invite-accept")
        self.wait(bob, lambda d: d.current_url.endswith(f"/groups/{group_id}"), "joined: group page")
        self.visible(bob, f"a[data-conversation-id='{conversation_id}']")
        # Ada's member list shows Bob at once (member.joined, then the page's members part).
        self.wait(ada, lambda d: "Bob" in self.el(d, "#member-list").text, "bob appears in ada's member list")

        # Ada opens the conversation and writes; Bob, on the group page, sees the badges count.
        self.click(ada, f"a[data-conversation-id='{conversation_id}']")
        self.wait(ada, lambda d: d.current_url.endswith(f"/{conversation_id}"), "conversation open")
        self.wait(ada, lambda d: self.state(d)["realtime"] == "live", "ada live")
        self.wait(bob, lambda d: self.state(d)["realtime"] == "live", "bob live")
        self.send(ada, "Hello Bob")
        self.send(ada, "Are you there?")
        self.wait(bob, lambda d: self.badge(d, f"a[data-conversation-id='{conversation_id}']") == 2,
                  "bob's conversation badge counts 2")
        self.shot(bob, "05-unread-badge-phone")

        # Bob opens it: both messages, the badge clears; his answer appears live at Ada's.
        self.click(bob, f"a[data-conversation-id='{conversation_id}']")
        self.wait(bob, lambda d: self.texts(d)[-2:] == ["Hello Bob", "Are you there?"], "bob sees both")
        self.wait(bob, lambda d: self.badge(d, f"a[data-conversation-id='{conversation_id}']") == 0, "badge cleared")
        composer_before = ada.execute_script("return document.getElementById('composer').getBoundingClientRect().toJSON()")
        list_before = ada.execute_script("return document.getElementById('message-list').getBoundingClientRect().toJSON()")
        self.send(bob, "Hi Ada!\nYes, here.")
        self.wait(ada, lambda d: self.texts(d)[-1:] == ["Hi Ada!\nYes, here."], "ada sees bob's answer live")
        # No layout jump: the composer and the list stay where they were.
        self.assertEqual(composer_before, ada.execute_script("return document.getElementById('composer').getBoundingClientRect().toJSON()"))
        self.assertEqual(list_before, ada.execute_script("return document.getElementById('message-list').getBoundingClientRect().toJSON()"))
        self.assert_labelled(ada, "conversation")
        self.assert_labelled(bob, "conversation (phone)")
        self.shot(ada, "06-conversation")
        self.shot(bob, "07-conversation-phone")

        # Bob takes a username (the reload below loads it into his session): Ada can mention him.
        bob_name = f"Bob{suffix}"
        self.api(bob, "users/Update", {"username": bob_name})

        # A reload keeps the conversation, and Bob's read mark (no badge for what he saw).
        expected = ["Hello Bob", "Are you there?", "Hi Ada!\nYes, here."]
        ada.refresh()
        self.wait(ada, lambda d: self.texts(d) == expected, "ada's conversation after reload")
        bob.get(f"{base}/groups/{group_id}")
        self.visible(bob, f"a[data-conversation-id='{conversation_id}']")
        time.sleep(0.3)
        self.assertEqual(self.badge(bob, f"a[data-conversation-id='{conversation_id}']"), 0)
        bob.get(f"{base}/groups/{group_id}/{conversation_id}")
        self.wait(bob, lambda d: self.texts(d) == expected, "bob's conversation after reload")

        # A dropped connection: the server restarts while Ada cannot get back in (her ticket
        # requests are blocked); Bob reconnects and writes; once Ada is let back in she resumes
        # from her cursor and gets every message once, in order.
        self.wait(ada, lambda d: self.state(d)["realtime"] == "live", "ada live before the drop")
        ada.execute_cdp_cmd("Network.enable", {})
        ada.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*streams/Token*"]})
        cursor_before = self.state(ada)["cursor"]
        self.server.stop()
        self.server.start()
        self.wait(ada, lambda d: self.state(d)["realtime"] == "reconnecting", "ada notices the drop")
        self.assertIn("Reconnecting", self.el(ada, "#connection").text)
        self.shot(ada, "08-reconnecting")
        self.wait(bob, lambda d: self.state(d)["realtime"] == "live", "bob back after the restart", timeout=30)
        missed = ["While you were away 1", "While you were away 2", "While you were away 3"]
        for text in missed:
            self.send(bob, text)
        time.sleep(0.5)
        self.assertNotIn(missed[0], self.texts(ada), "ada cannot have them yet")
        ada.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
        self.wait(ada, lambda d: self.state(d)["realtime"] == "live", "ada reconnected", timeout=30)
        self.wait(ada, lambda d: self.texts(d) == expected + missed, "ada has every missed message once, in order")
        self.assertGreater(self.state(ada)["cursor"], cursor_before)

        # Replies, edits, reactions and deletions travel live both ways.
        self.act(bob, "Hello Bob", "Reply to Ada")
        self.wait(bob, lambda d: "Replying to Ada" in self.el(d, "#composer-context-text").text, "reply context")
        self.send(bob, "Replying to your hello")
        quote = self.wait(ada, lambda d: self.message(d, "Replying to your hello").find_elements(By.CSS_SELECTOR, ".reply-quote"), "reply quote at ada")
        self.assertIn("Hello Bob", quote[0].text)
        self.act(ada, "Are you there?", "Edit")
        box = self.visible(ada, "#composer-text")
        self.assertEqual(box.get_attribute("value"), "Are you there?")
        box.clear()
        box.send_keys("Are you still there?", Keys.ENTER)
        self.wait(bob, lambda d: "(edited)" in self.message(d, "Are you still there?").text, "edit seen live by bob")
        self.act(bob, "Hello Bob", "React with 👍")
        self.wait(ada, lambda d: "👍 1" in self.message(d, "Hello Bob").text, "reaction seen live by ada")
        self.send(ada, "Oops, wrong window")
        self.wait(bob, lambda d: "Oops, wrong window" in self.texts(d), "bob sees the mistake")
        self.act(ada, "Oops, wrong window", "Delete")
        ada.switch_to.alert.accept()
        self.wait(bob, lambda d: "Oops, wrong window" not in self.texts(d) and "This message was deleted." in self.texts(d),
                  "deletion seen live by bob")
        expected = ["Hello Bob", "Are you still there?", "Hi Ada!\nYes, here."] + missed + [
            "Replying to your hello", "This message was deleted."]
        self.assertEqual(self.texts(ada), expected)

        # Typing shows on the other side; presence dots show who is online.
        self.visible(bob, "#composer-text").send_keys("typing something")
        self.wait(ada, lambda d: "Bob is typing" in self.el(d, "#typing").text, "typing indicator")
        self.el(bob, "#composer-text").clear()
        bob_id = self.state(bob)["user"]
        self.wait(ada, lambda d: d.find_elements(By.CSS_SELECTOR, f".presence.online[data-user-id='{bob_id}']"), "bob online")

        # A mention of Bob is highlighted for him (his name in a <mark>, as text), not for Ada.
        mention = f"Thanks @{bob_name.lower()}, <b>see</b> you & ada@example.org"
        self.send(ada, mention)
        at_bob = self.message(bob, mention)
        self.wait(bob, lambda d: "mentions-me" in at_bob.get_attribute("class"), "the mention highlighted for bob")
        marks = at_bob.find_elements(By.CSS_SELECTOR, ".text mark.mention")
        self.assertEqual([m.text for m in marks], [f"@{bob_name.lower()}"])
        self.assertEqual(at_bob.find_elements(By.CSS_SELECTOR, ".text b"), [], "user text is never HTML")
        self.assertIn("mentions you", at_bob.get_attribute("aria-label"))
        self.assertNotIn("mentions-me", self.message(ada, mention).get_attribute("class"))
        self.shot(bob, "07b-mention-phone")

        # Search finds messages of the group.
        self.fill(ada, "#search-query", "away")
        self.click(ada, "#search-form button[type=submit]")
        self.wait(ada, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#search-results li a")) == 3, "three search hits")

        # Older messages load on scrolling up, and the list stays where the reader was.
        history = self.api(ada, "threads/CreateConversation", {"group_id": group_id, "topic": "History"})["conversation"]["id"]
        for i in range(30):
            self.api(ada, "threads/CreateMessage", {"conversation_id": history, "text": f"Old message {i}"})
        self.wait(ada, lambda d: d.find_elements(By.CSS_SELECTOR, f"a[data-conversation-id='{history}']"), "new conversation appears live")
        ada.get(f"{base}/groups/{group_id}/{history}")
        self.wait(ada, lambda d: len(self.texts(d)) == 25, "the latest 25")
        self.assertEqual(self.texts(ada)[-1], "Old message 29")
        self.assertTrue(ada.find_elements(By.CSS_SELECTOR, "#message-list .day"), "a day separator")
        ada.execute_script("document.getElementById('message-list').scrollTop = 0")
        self.wait(ada, lambda d: len(self.texts(d)) == 30, "older messages loaded")
        self.assertEqual(self.texts(ada)[0], "Old message 0")
        self.assertIn("beginning of the conversation", self.el(ada, "#message-list .older").text)
        # The reader still sees what was at the top (Old message 5), not the newly loaded ones.
        self.assertTrue(ada.execute_script(
            "const l = document.getElementById('message-list'), box = l.getBoundingClientRect(),"
            " r = arguments[0].getBoundingClientRect();"
            "return l.scrollTop > 0 && r.top >= box.top && r.bottom <= box.bottom", self.message(ada, "Old message 5")),
            "the reader's place is kept")

        # Optimistic send: while the network refuses, the message shows as sending, then as not
        # sent with a Retry; retried, it arrives once (the same id: the server stores it once).
        ada.get(f"{base}/groups/{group_id}/{conversation_id}")
        self.wait(ada, lambda d: "Replying to your hello" in self.texts(d), "ada back in General")
        ada.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*threads/CreateMessage*"]})
        box = self.visible(ada, "#composer-text")
        box.send_keys("Sent through a bad network", Keys.ENTER)
        self.wait(ada, lambda d: d.find_elements(By.CSS_SELECTOR, "#message-list article.msg.pending"), "shown at once, pending")
        self.wait(ada, lambda d: d.find_elements(By.CSS_SELECTOR, "#message-list article.msg.failed"), "not sent, after retries", timeout=30)
        ada.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
        self.click(ada, "#message-list article.msg.failed .status button")
        self.wait(ada, lambda d: "Sent through a bad network" in self.texts(d), "sent on retry")
        self.wait(bob, lambda d: self.texts(d).count("Sent through a bad network") == 1, "bob gets it once")
        self.assertEqual(self.texts(ada).count("Sent through a bad network"), 1)

        # The groups list counts a group's unread messages too, and clears when they are read.
        ada.get(f"{base}/groups")
        self.visible(ada, f"a[data-group-id='{group_id}']")
        self.send(bob, "Anyone for lunch?")
        self.wait(ada, lambda d: self.badge(d, f"a[data-group-id='{group_id}']") == 1, "ada's group badge counts 1")
        self.click(ada, f"a[data-group-id='{group_id}']")
        self.wait(ada, lambda d: self.badge(d, f"a[data-conversation-id='{conversation_id}']") == 1, "and its conversation 1")
        self.click(ada, f"a[data-conversation-id='{conversation_id}']")
        self.wait(ada, lambda d: "Anyone for lunch?" in self.texts(d), "ada reads it")
        self.wait(ada, lambda d: self.badge(d, f"a[data-group-id='{group_id}']") == 0, "group badge cleared")

        # A private chat: Ada opens one from the member list; Bob's chat badge counts and clears.
        ada.get(f"{base}/groups/{group_id}")
        # What she read stays read after leaving the page at once.
        self.visible(ada, f"a[data-group-id='{group_id}']")
        self.assertEqual(self.badge(ada, f"a[data-group-id='{group_id}']"), 0)
        self.click(ada, "#member-list button")
        self.wait(ada, lambda d: "/chats/" in d.current_url, "private chat open")
        chat_id = ada.current_url.rstrip("/").split("/")[-1]
        self.wait(ada, lambda d: self.state(d)["realtime"] == "live", "ada live in the chat")
        self.send(ada, "Just between us")
        bob.get(f"{base}/chats")
        self.wait(bob, lambda d: self.badge(d, f"a[data-chat-id='{chat_id}']") == 1, "bob's chat badge")
        self.click(bob, f"a[data-chat-id='{chat_id}']")
        self.wait(bob, lambda d: self.texts(d) == ["Just between us"], "bob reads the private message")
        self.wait(bob, lambda d: self.badge(d, f"a[data-chat-id='{chat_id}']") == 0, "chat badge cleared")
        self.send(bob, "Sure")
        self.wait(ada, lambda d: self.texts(d) == ["Just between us", "Sure"], "ada gets the private answer live")
        self.shot(ada, "10-private-chat")

        # Switching micro-frontends leaves no stray globals or nodes behind.
        footprint = """return {
            globals: Object.getOwnPropertyNames(window).sort(),
            mfNodes: [...document.querySelectorAll('[data-mf]')].map(n => n.tagName + ':' + n.dataset.mf).sort(),
            head: document.head.children.length, body: document.body.children.length,
            chatHandle: typeof window.verteiltChat }"""
        self.click(ada, "nav a[href='/settings']")
        self.wait(ada, lambda d: self.state(d)["microFrontend"] == "settings", "settings loaded")
        self.visible(ada, "#profile-first_name")
        baseline = ada.execute_script(footprint)
        self.assertEqual(baseline["chatHandle"], "undefined")
        self.assertTrue(all(n.endswith(":settings") for n in baseline["mfNodes"]), baseline["mfNodes"])
        for _ in range(2):
            self.click(ada, "nav a[href='/groups']")
            self.wait(ada, lambda d: self.state(d)["microFrontend"] == "chat", "chat loaded")
            self.visible(ada, "#new-group-name")
            in_chat = ada.execute_script(footprint)
            self.assertEqual(in_chat["chatHandle"], "object", "the chat adds its handle while loaded")
            self.assertFalse([n for n in in_chat["mfNodes"] if n.endswith(":settings")], in_chat["mfNodes"])
            self.click(ada, "nav a[href='/settings']")
            self.wait(ada, lambda d: self.state(d)["microFrontend"] == "settings", "settings again")
            self.visible(ada, "#profile-first_name")
            self.assertEqual(ada.execute_script(footprint), baseline)
        # The back button goes back to the chat.
        ada.back()
        self.wait(ada, lambda d: self.state(d)["microFrontend"] == "chat", "back to chat")

        # Settings: the profile saves; another device's session is listed and revoked.
        ada_email, ada_password = f"ada-{suffix}@example.com", "correct horse battery"
        ada.get(f"{base}/settings/profile")
        self.fill(ada, "#profile-last_name", "Lovelace")
        self.click(ada, "#profile-form button[type=submit]")
        self.wait(ada, lambda d: self.el(d, "#profile-form .form-ok").text == "Saved.", "profile saved")
        other = post_json(base, "users/Login", {"email": ada_email, "password": ada_password})
        self.click(ada, "a[data-tab='sessions']")
        self.wait(ada, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#session-list li")) == 2, "two sessions listed")
        self.assert_labelled(ada, "sessions")
        self.shot(ada, "09-settings-sessions")
        self.click(ada, "#session-list li button.danger")
        self.wait(ada, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#session-list li")) == 1, "the other session revoked")
        with self.assertRaises(urllib.error.HTTPError) as revoked:
            post_json(base, "users/ListSessions", {}, other["token"])
        self.assertEqual(revoked.exception.code, 401)

        # Password: a wrong current password is shown next to that field; then it changes.
        self.click(ada, "a[data-tab='password']")
        self.fill(ada, "#password-old_password", "not my password")
        self.fill(ada, "#password-password", "a brand new passphrase")
        self.click(ada, "#password-form button[type=submit]")
        self.wait(ada, lambda d: self.el(d, "#password-old_password-error").text, "wrong current password shown at its field")
        self.fill(ada, "#password-old_password", ada_password)
        self.fill(ada, "#password-password", "a brand new passphrase")
        self.click(ada, "#password-form button[type=submit]")
        self.wait(ada, lambda d: "Password changed" in self.el(d, "#password-form .form-ok").text, "password changed")

        # Log out, and log in again with the new password (a wrong one is shown first).
        self.click(ada, "#logout-link")
        self.wait(ada, lambda d: "/account/login" in d.current_url and self.state(d)["user"] is None, "logged out")
        ada.get(f"{base}/groups/{group_id}")
        self.wait(ada, lambda d: "/account/login" in d.current_url, "signed-out deep link goes to login")
        self.fill(ada, "#login-email", ada_email)
        self.fill(ada, "#login-password", ada_password)
        self.click(ada, "#login-form button[type=submit]")
        self.wait(ada, lambda d: "Invalid email or password" in self.el(d, "#login-form [role=alert]").text, "old password refused")
        self.fill(ada, "#login-password", "a brand new passphrase")
        self.click(ada, "#login-form button[type=submit]")
        self.wait(ada, lambda d: d.current_url.endswith(f"/groups/{group_id}"), "logged in, back where the deep link pointed")
        self.visible(ada, f"a[data-conversation-id='{conversation_id}']")

        # ?next= never leads to another site.
        for evil in ("https://evil.example/x", "//evil.example/x", "/\\evil.example/x"):
            ada.get(f"{base}/account/login?next={urllib.parse.quote(evil)}")
            self.wait(ada, lambda d: d.current_url == f"{base}/groups", f"next={evil} stays here")

        for name, d in self.browsers.items():
            self.assertEqual(js_errors(d), [], f"{name}: JavaScript errors")


if __name__ == "__main__":
    unittest.main(verbosity=2)
