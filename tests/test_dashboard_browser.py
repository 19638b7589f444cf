"""
The dashboard in a real browser: Playwright for Python driving Debian's
chromium (no browser download) against a ccx service on 127.0.0.1.

Each test runs its browser scenario in a thread of its own (Playwright's
sync API), while the reactor keeps serving; the scenario reaches the
reactor's side (another client, the service) with
C{blockingCallFromThread}.  With C{CCX_SCREENSHOTS=DIR} the screenshots
docs/dashboard.md shows are written to DIR.
"""

import os
import time

from playwright.sync_api import sync_playwright
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from ccx.testing.proc import stopped
from tests.support import ServiceFixture, program

CHROMIUM = os.environ.get("CCX_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-precise-memory-info",
]
TOKEN = "dashboard-token-0123456789"

# The page says it is connected (a function: the page's policy forbids eval).
CONNECTED = "() => document.getElementById('status').textContent == 'connected'"

# The page keeps at most this many characters in its output pane (app.js).
PANE_CHARS = 256 * 1024


class Browser:
    """
    One page of a fresh browser, in the thread that runs the scenario.

    @ivar problems: console errors and page errors seen (a refused inline
        style or script is one: the Content-Security-Policy at work).
    """

    def __init__(self, page, base: str) -> None:
        self.page = page
        self.base = base
        self.problems = []
        page.on("console", lambda m: m.type == "error" and self.problems.append(m.text))
        page.on("pageerror", lambda e: self.problems.append(str(e)))

    def open(self) -> None:
        self.page.goto(self.base + "/")

    def row(self, process_id: str):
        return self.page.locator(f'tr[data-process-id="{process_id}"]')

    def state_is(self, text: str, timeout: float = 5000) -> None:
        self.page.wait_for_function(
            "t => document.getElementById('view-state').textContent.startsWith(t)",
            arg=text,
            timeout=timeout,
        )

    def stream_text(self, stream: str) -> str:
        return self.page.evaluate(
            "s => [...document.querySelectorAll('#output span.' + s)]"
            ".map(e => e.textContent).join('')",
            stream,
        )


class DashboardTestCase(TestCase):
    timeout = 90
    settings: dict = {}

    @inlineCallbacks
    def setUp(self):
        self.ccx = yield ServiceFixture(self, **self.settings).start()
        self.node = self.ccx.service.node
        self.other = yield self.ccx.connect("/ws", headers=self.headers())
        self.base = f"http://127.0.0.1:{self.ccx.port}"

    def headers(self):
        token = self.settings.get("token")
        return {"Authorization": f"Bearer {token}"} if token else {}

    def in_browser(self, scenario):
        """
        Run C{scenario(browser)} in a thread with a fresh chromium; fire
        with its result.
        """

        def run():
            with sync_playwright() as p:
                chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = chromium.new_page(viewport={"width": 1200, "height": 900})
                    browser = Browser(page, self.base)
                    result = scenario(browser)
                    self.assertEqual(browser.problems, [])
                    return result
                finally:
                    chromium.close()

        return deferToThread(run)

    # -- the reactor's side, from the scenario's thread --------------------

    def execute(self, params):
        params = {"on_disconnect": "keep", **params}
        return blockingCallFromThread(reactor, self.ccx.execute, self.other, params)

    def completed(self, process_id):
        return blockingCallFromThread(
            reactor, self.other.notification, "process.completed", process_id
        )

    def process(self, process_id):
        return self.node.registry.get(process_id)

    def screenshot(self, page, name):
        """
        A screenshot, kept in C{$CCX_SCREENSHOTS} (docs/img) when set.
        """
        directory = os.environ.get("CCX_SCREENSHOTS") or os.path.abspath(self.mktemp())
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, name)
        page.screenshot(path=path)
        with open(path, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")


class PageTests(DashboardTestCase):
    @inlineCallbacks
    def test_page_loads_with_its_policy(self):
        """The page and its scripts load, under a strict policy that nothing breaks."""

        def scenario(b):
            response = b.page.goto(b.base + "/")
            policy = response.headers["content-security-policy"]
            b.page.wait_for_selector("#main", state="visible")
            b.page.wait_for_function(CONNECTED)
            return policy

        policy = yield self.in_browser(scenario)
        self.assertIn("script-src 'self';", policy)
        self.assertNotIn("unsafe", policy)

    @inlineCallbacks
    def test_another_clients_program_appears_within_a_second(self):
        def scenario(b):
            b.open()
            b.page.wait_for_function(CONNECTED)
            started = self.execute({"command": [program("sleep"), "30"]})
            began = time.monotonic()
            b.row(started["process_id"]).wait_for(timeout=1000)
            seen = time.monotonic() - began
            self.execute({"command": [program("seq"), "1", "5"]})
            b.page.wait_for_function("() => document.querySelectorAll('#rows tr').length == 2")
            text = b.row(started["process_id"]).inner_text()
            self.screenshot(b.page, "dashboard-table.png")
            blockingCallFromThread(
                reactor, self.other.call, "control",
                {"type": "CANCEL", "process_id": started["process_id"]},
            )
            return seen, text

        seen, text = yield self.in_browser(scenario)
        self.assertLess(seen, 1.0)
        self.assertIn("running", text)
        self.assertIn(f"{program('sleep')} 30", text)

    @inlineCallbacks
    def test_output_byte_exact(self):
        """A known program's stdout and stderr appear exactly, told apart."""
        script = (
            "printf 'h\\303\\251llo <b>&amp;</b>\\tend\\n'; printf 'err \\342\\202\\254\\n' >&2; "
            "seq 1 3000; printf 'tail'"
        )
        stdout = "héllo <b>&amp;</b>\tend\n" + "".join(f"{i}\n" for i in range(1, 3001)) + "tail"

        def scenario(b):
            b.open()
            started = self.execute({"command": [program("sh"), "-c", script]})
            self.completed(started["process_id"])
            b.row(started["process_id"]).click()
            b.page.wait_for_function(
                "n => [...document.querySelectorAll('#output span.stdout')]"
                ".map(e => e.textContent).join('').length >= n",
                arg=len(stdout),
            )
            self.screenshot(b.page, "dashboard-output.png")
            return b.stream_text("stdout"), b.stream_text("stderr")

        out, err = yield self.in_browser(scenario)
        self.assertEqual(out, stdout)
        self.assertEqual(err, "err €\n")

    @inlineCallbacks
    def test_pause_resume_cancel(self):
        """Pause shows paused and the group is stopped; Resume runs it again; Cancel ends it."""

        def scenario(b):
            b.open()
            started = self.execute({"command": [program("sleep"), "30"]})
            pid = started["pid"]
            b.row(started["process_id"]).click()
            b.state_is("running")
            b.page.click("#pause")
            b.state_is("paused")
            blockingCallFromThread(reactor, until_true, lambda: stopped(pid))
            # The table shows it too (watch), whoever paused it.
            b.page.wait_for_function(
                "id => document.querySelector(`tr[data-process-id='${id}'] .state`)"
                ".textContent == 'paused'",
                arg=started["process_id"],
                timeout=5000,
            )
            paused_row = b.row(started["process_id"]).inner_text()
            b.page.click("#resume")
            b.state_is("running")
            blockingCallFromThread(reactor, until_true, lambda: stopped(pid) is False)
            b.page.click("#cancel")
            b.state_is("exited", timeout=10000)
            return self.process(started["process_id"]).state.value, paused_row

        state, paused_row = yield self.in_browser(scenario)
        self.assertEqual(state, "cancelled")
        self.assertIn("paused", paused_row)

    @inlineCallbacks
    def test_start_form(self):
        """The form starts an allowed program with its arguments; a refusal is shown."""

        def scenario(b):
            b.open()
            b.page.wait_for_selector("#start-program option[value='printf']", state="attached")
            b.page.select_option("#start-program", "printf")
            b.page.fill("#start-args", "'%s|%s' 'a b' \"c\"")
            b.page.click("#start-form button[type=submit]")
            b.page.wait_for_function(
                "() => document.querySelector('#output span.stdout')?.textContent == 'a b|c'"
            )
            b.page.fill("#start-cwd", "/nonexistent-dir")
            b.page.click("#start-form button[type=submit]")
            b.page.wait_for_function("() => document.getElementById('start-message').textContent != ''")
            return b.page.inner_text("#start-message")

        message = yield self.in_browser(scenario)
        self.assertIn("nonexistent-dir", message)

    @inlineCallbacks
    def test_stdin_box(self):
        def scenario(b):
            b.open()
            started = self.execute({"command": [program("cat")], "stdin": True})
            b.row(started["process_id"]).click()
            b.state_is("running")
            b.page.fill("#stdin", "typed here")
            b.page.press("#stdin", "Enter")
            b.page.wait_for_function(
                "() => document.querySelector('#output span.stdout')?.textContent == 'typed here\\n'"
            )
            b.page.click("#eof")
            b.state_is("exited", timeout=5000)

        yield self.in_browser(scenario)

    @inlineCallbacks
    def test_scrollback_through_the_journal(self):
        """Earlier output than the page keeps is read back from ccx on demand, exactly."""
        whole = "".join(f"{i}\n" for i in range(1, 100001)).encode()

        def scenario(b):
            b.open()
            started = self.execute({"command": [program("seq"), "1", "100000"]})
            self.completed(started["process_id"])
            b.row(started["process_id"]).click()
            first = "n => Number(document.querySelector('#output span.stdout')?.dataset.start) == n"
            b.page.wait_for_function(first, arg=len(whole) - 64 * 1024)
            b.page.click("#earlier")
            b.page.wait_for_function(first, arg=len(whole) - 128 * 1024)
            return b.stream_text("stdout")

        shown = yield self.in_browser(scenario)
        self.assertEqual(shown.encode(), whole[-128 * 1024 :])

    @inlineCallbacks
    def test_flood_stays_responsive(self):
        """With a program printing as fast as it can, clicks take effect within a second and memory stays bounded."""

        def scenario(b):
            b.open()
            started = self.execute({"command": [program("yes"), "flood"], "on_full": "drop"})
            b.row(started["process_id"]).click()
            b.page.wait_for_function(
                "() => document.getElementById('output').textContent.length > 100000"
            )
            # Flooding on: the page is under load.  Real clicks, where the
            # buttons are, measured until they took effect.
            time.sleep(2)
            pause, resume = (b.page.locator(s).bounding_box() for s in ("#pause", "#resume"))
            began = time.monotonic()
            b.page.mouse.click(pause["x"] + 5, pause["y"] + 5)
            b.state_is("paused", timeout=5000)
            shown_paused = time.monotonic() - began
            blockingCallFromThread(reactor, until_true, lambda: stopped(started["pid"]))
            paused = time.monotonic() - began
            began = time.monotonic()
            b.page.mouse.click(resume["x"] + 5, resume["y"] + 5)
            b.state_is("running", timeout=5000)
            resumed = time.monotonic() - began
            time.sleep(2)
            shown = b.page.evaluate("() => document.getElementById('output').textContent.length")
            heap = b.page.evaluate("() => performance.memory.usedJSHeapSize")
            drops = b.page.inner_text("#drop-count")
            b.page.click("#cancel")
            b.state_is("exited", timeout=10000)
            return shown_paused, paused, resumed, shown, heap, drops

        figures = yield self.in_browser(scenario)
        shown_paused, paused, resumed, shown, heap, drops = figures
        self.assertLess(shown_paused, 1.0, figures)
        self.assertLess(paused, 1.0, figures)
        self.assertLess(resumed, 1.0, figures)
        # The pane's own bound, and a few drop markers beyond it.
        self.assertLess(shown, PANE_CHARS + 64 * 1024)
        self.assertLess(heap, 64 * 1024 * 1024)
        # What was dropped, if anything, is named (ccx's journal may hold
        # all of it for a reader that keeps up).
        self.assertRegex(drops, r"^(none|\d+ ranges?)$")

    @inlineCallbacks
    def test_pty_colours_and_resize(self):
        """A program on a terminal renders in xterm.js: its colours are in the buffer, and the page sizes it."""

        def scenario(b):
            b.open()
            started = self.execute(
                {
                    "command": [program("sh"), "-c", "printf '\\033[31mred\\033[0m plain\\n'; exec sleep 30"],
                    "pty": {"rows": 24, "cols": 80},
                }
            )
            b.page.wait_for_function("() => document.querySelectorAll('#rows tr').length == 1")
            b.row(started["process_id"]).click()
            b.page.wait_for_function(
                "() => window.ccxDashboard.view?.term?.buffer.active.getLine(0)"
                "?.translateToString(true) == 'red plain'"
            )
            cells = b.page.evaluate(
                """() => {
                  const line = window.ccxDashboard.view.term.buffer.active.getLine(0);
                  return [0, 4].map(x => { const c = line.getCell(x);
                    return [c.getChars(), c.isFgPalette(), c.getFgColor(), c.isFgDefault()]; });
                }"""
            )
            size = b.page.evaluate(
                "() => [window.ccxDashboard.view.term.rows, window.ccxDashboard.view.term.cols]"
            )
            process = self.process(started["process_id"])
            blockingCallFromThread(
                reactor, until_true,
                lambda: [process.window.rows, process.window.cols] == size,
            )
            self.screenshot(b.page, "dashboard-terminal.png")
            b.page.click("#cancel")
            b.state_is("exited", timeout=10000)
            return cells, size

        cells, size = yield self.in_browser(scenario)
        self.assertEqual(cells[0], ["r", True, 1, False])
        self.assertEqual(cells[1], ["p", False, -1, True])
        self.assertNotEqual(size, [24, 80])


class TokenTests(DashboardTestCase):
    settings = {"token": TOKEN}

    @inlineCallbacks
    def test_token_prompt(self):
        """The page asks for the token, refuses a near miss, keeps the right one for the session."""

        def scenario(b):
            b.open()
            b.page.wait_for_selector("#login", state="visible")
            main_hidden = b.page.is_hidden("#main")
            b.page.fill("#token", TOKEN[:-1])
            b.page.click("#login-form button")
            b.page.wait_for_function(
                "() => document.getElementById('login-message').textContent.includes('not the one')"
            )
            b.page.fill("#token", TOKEN)
            b.page.click("#login-form button")
            b.page.wait_for_function(CONNECTED)
            stored = b.page.evaluate("() => sessionStorage.getItem('ccx-token')")
            b.page.reload()
            b.page.wait_for_function(CONNECTED)
            asked_again = b.page.is_visible("#login")
            return main_hidden, stored, asked_again

        main_hidden, stored, asked_again = yield self.in_browser(scenario)
        self.assertTrue(main_hidden)
        self.assertEqual(stored, TOKEN)
        self.assertFalse(asked_again)


def until_true(predicate, timeout=10.0):
    from tests.support import until

    return until(predicate, timeout)
