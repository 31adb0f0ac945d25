#!/usr/bin/env python3
"""Navigation to the first message on the group page, in headless Chromium.

Starts a real `verteilt serve` (VERTEILT_BIN, default .build/release/verteilt) on a temporary
SQLite file, seeds a group (members, conversations, messages) through the HTTP API, signs a
browser in, and loads /groups/{group}/{conversation} N times, each a full navigation:

- cold: the browser cache disabled (CDP Network.setCacheDisabled), as a first visit;
- warm: the cache on, as a returning visit (immutable assets come from the cache; the shell and
  /config.json are revalidated).

For each load it records the time from navigation start (performance.timeOrigin) until the
first message element is in the DOM (a MutationObserver installed before any page script runs),
and the bytes transferred (the Resource Timing `transferSize` of the document and every fetch:
headers + body as sent over the wire, 0 for cache hits; the WebSocket is not counted).

    swift build -c release --product verteilt
    python3 Benchmarks/WebPage/bench.py --loads 20
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request

os.environ.setdefault("SE_OFFLINE", "true")
from selenium import webdriver  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

PROBE = """
window.__firstMessage = null;
new MutationObserver((_, observer) => {
  if (document.querySelector('#message-list article.msg')) {
    window.__firstMessage = performance.now();
    observer.disconnect();
  }
}).observe(document, { childList: true, subtree: true });
"""

MEASURE = """
const nav = performance.getEntriesByType('navigation')[0];
const resources = performance.getEntriesByType('resource');
const at = (part) => resources.find((r) => r.name.includes(part))?.responseEnd ?? null;
return {
  first: window.__firstMessage,
  shell: nav.responseEnd,
  chatJs: at('/chat/chat.js'),
  page: at('/api/groups/'),
  pageBytes: resources.find((r) => r.name.includes('/api/groups/'))?.transferSize ?? 0,
  bytes: nav.transferSize + resources.reduce((s, r) => s + r.transferSize, 0),
  decoded: nav.decodedBodySize + resources.reduce((s, r) => s + r.decodedBodySize, 0),
  requests: 1 + resources.length,
  fromNetwork: 1 + resources.filter((r) => r.transferSize > 0).length,
};
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(base, path, body, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"{base}/v1/{path}", data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def seed(base, members, conversations, messages):
    """A group of `members`, `conversations` conversations holding `messages` messages each."""
    people = [post(base, "users/Create", {"first_name": f"Member{i}", "email": f"m{i}@example.com",
                                          "password": "password123"}) for i in range(members)]
    owner = people[0]["token"]
    group = post(base, "groups/Create", {"name": "Benchmark"}, owner)["group"]["id"]
    for p in people[1:]:
        post(base, "groups/AddMember", {"group_id": group, "member_id": p["user"]["id"]}, owner)
    convs = [post(base, "threads/CreateConversation", {"group_id": group, "topic": f"Topic {c}"}, owner)
             ["conversation"]["id"] for c in range(conversations)]
    for c in convs:
        for m in range(messages):
            author = people[m % len(people)]["token"]
            post(base, "threads/CreateMessage", {"conversation_id": c, "text": f"Message {m} with a little text in it"}, author)
    return owner, group, convs[0]


def percentile(values, p):
    values = sorted(values)
    k = (len(values) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--loads", type=int, default=20)
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--conversations", type=int, default=5)
    ap.add_argument("--messages", type=int, default=40)
    args = ap.parse_args()

    binary = os.path.abspath(os.environ.get("VERTEILT_BIN") or os.path.join(ROOT, ".build", "release", "verteilt"))
    workdir = tempfile.mkdtemp(prefix="verteilt-webbench-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(os.path.join(workdir, "server.log"), "w")
    server = subprocess.Popen([binary, "serve", "--port", str(port), "--database", os.path.join(workdir, "bench.sqlite"),
                               "--bcrypt-cost", "4", "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT)
    driver = None
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        token, group, conversation = seed(base, args.members, args.conversations, args.messages)

        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
            options.add_argument(a)
        driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver"), options=options)
        driver.get(base + "/config.json")
        driver.add_cookie({"name": "verteilt_session", "value": token, "path": "/", "httpOnly": True, "sameSite": "Lax"})
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PROBE})
        driver.execute_cdp_cmd("Network.enable", {})
        url = f"{base}/groups/{group}/{conversation}"

        print(f"chromium: {driver.capabilities.get('browserVersion')}; page: {args.members} members, "
              f"{args.conversations} conversations x {args.messages} messages; {args.loads} loads each")
        print("| cache | p50 ms | p90 ms | min ms | shell / chat.js / group page received, p50 ms | bytes transferred (median) | of which the group page | decoded bytes | requests (from network) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for mode in ("cold", "warm"):
            driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": mode == "cold"})
            driver.get(url)  # prime (warm) or discard (cold) once
            samples = []
            for _ in range(args.loads):
                driver.get("about:blank")
                driver.get(url)
                for _ in range(200):
                    m = driver.execute_script(MEASURE)
                    if m["first"] is not None:
                        break
                    time.sleep(0.025)
                else:
                    raise RuntimeError("no message rendered")
                samples.append(m)
            times = [s["first"] for s in samples]
            marks = " / ".join(f"{statistics.median(s[k] for s in samples):.0f}" for k in ("shell", "chatJs", "page"))
            print(f"| {mode} | {statistics.median(times):.1f} | {percentile(times, 0.9):.1f} | {min(times):.1f} | {marks} | "
                  f"{statistics.median(s['bytes'] for s in samples):,.0f} | {statistics.median(s['pageBytes'] for s in samples):,.0f} | {statistics.median(s['decoded'] for s in samples):,.0f} | "
                  f"{samples[-1]['requests']} ({samples[-1]['fromNetwork']}) |")
    finally:
        if driver:
            driver.quit()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=15)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
