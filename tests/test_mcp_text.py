"""
The text content of MCP results, word for word (golden texts): what a model
reads for a success, a failure, a signal, a timeout, huge output and binary
output; terminal control characters; and the text of the other tools.
"""

from typing import Any, Dict, List

from twisted.trial.unittest import TestCase

from ccx.mcp.text import (
    is_binary,
    list_text,
    outcome,
    output_text,
    readable,
    run_text,
    status_text,
    stream_view,
)
from ccx.output.buffer import StreamBuffer


def buffer(data: bytes, max_bytes: int = 1 << 20, closed: bool = True) -> StreamBuffer:
    held = StreamBuffer(max_bytes, 1 << 20)
    held.append(data, 1.0)
    held.evict()
    if closed:
        held.close()
    return held


def run(status: str, exit_code: Any, signal: Any, duration: float, **fields: Any) -> Dict[str, Any]:
    result = {
        "process_id": "p1",
        "command": ["make", "test"],
        "status": status,
        "exit_code": exit_code,
        "signal": signal,
        "duration": duration,
        "dropped_bytes": 0,
        "error": None,
    }
    result.update(fields)
    return result


def views(stdout: bytes = b"", stderr: bytes = b"", limit: int = 4096) -> List[Any]:
    return [stream_view("stdout", buffer(stdout), limit), stream_view("stderr", buffer(stderr), limit)]


class RunTextTests(TestCase):
    def test_success(self):
        self.assertEqual(
            run_text(run("completed", 0, None, 0.25), views(b"ok\nall 3 passed\n")),
            "completed: exit 0 after 0.2 s\n"
            "process p1: make test\n"
            "--- stdout: 16 bytes ---\n"
            "ok\n"
            "all 3 passed",
        )

    def test_failure(self):
        self.assertEqual(
            run_text(run("failed", 2, None, 3.14), views(b"building\n", b"error: no rule\n")),
            "failed: exit 2 after 3.1 s\n"
            "process p1: make test\n"
            "--- stdout: 9 bytes ---\n"
            "building\n"
            "--- stderr: 15 bytes ---\n"
            "error: no rule",
        )

    def test_signal(self):
        self.assertEqual(
            run_text(run("failed", -9, "SIGKILL", 120.4), views()),
            "failed: killed by SIGKILL after 120 s\nprocess p1: make test\nno output",
        )

    def test_timeout(self):
        self.assertEqual(
            run_text(
                run("timeout", -15, "SIGTERM", 5.0, dropped_bytes=7, error=None),
                views(b"waiting"),
            ),
            "timeout: killed by SIGTERM after 5.0 s\n"
            "process p1: make test\n"
            "--- stdout: 7 bytes ---\n"
            "waiting\n"
            "[7 bytes of output were dropped before they were read]",
        )

    def test_error_line(self):
        text = run_text(run("failed", None, None, 0.0, error="exec failed: ENOENT"), views())
        self.assertEqual(
            text,
            "failed: never ran after 0.0 s\nprocess p1: make test\n"
            "error: exec failed: ENOENT\nno output",
        )

    def test_huge_output(self):
        """The head and the tail, cut at line ends, and the bytes left out with their offsets."""
        data = b"".join(b"line %04d\n" % i for i in range(1000))  # 10 bytes a line
        view = stream_view("stdout", buffer(data), 100)
        self.assertEqual((view.head_end, view.tail_start), (20, 9930))
        self.assertEqual(
            run_text(run("completed", 0, None, 1.0), [view]),
            "completed: exit 0 after 1.0 s\n"
            "process p1: make test\n"
            "--- stdout: 10000 bytes ---\n"
            "line 0000\n"
            "line 0001\n"
            "[... 9910 bytes left out (offsets 20 to 9930): read them with output, "
            "process_id 'p1', offsets {\"stdout\": 20} ...]\n"
            "line 0993\nline 0994\nline 0995\nline 0996\nline 0997\nline 0998\nline 0999",
        )

    def test_no_longer_held(self):
        """Output the service no longer holds is said to be gone, before what is shown."""
        held = buffer(b"a" * 50 + b"\nend\n", max_bytes=8)
        view = stream_view("stdout", held, 100)
        self.assertEqual(view.start, held.start)
        text = run_text(run("completed", 0, None, 1.0), [view])
        self.assertIn(f"[the first {held.start} bytes are no longer held]", text)
        self.assertTrue(text.endswith("end"), text)

    def test_exactly_the_limit_is_whole(self):
        """A stream of exactly the limit is shown whole; one byte more is cut."""
        data = b"x" * 99 + b"\n"
        self.assertEqual(stream_view("stdout", buffer(data), 100).tail, b"")
        cut = stream_view("stdout", buffer(data + b"y"), 100)
        self.assertNotEqual(cut.tail, b"")
        self.assertEqual(len(cut.head) + len(cut.tail), 100)

    def test_binary_output(self):
        data = bytes(range(256)) * 4
        self.assertEqual(
            run_text(run("completed", 0, None, 0.1), views(data)),
            "completed: exit 0 after 0.1 s\n"
            "process p1: make test\n"
            "--- stdout: 1024 bytes of binary output, not shown ---",
        )

    def test_utf8_cut_is_not_split(self):
        """A cut inside a multi-byte character moves to its edge: no U+FFFD appears."""
        data = "é".encode() * 200
        view = stream_view("stdout", buffer(data), 101)
        text = run_text(run("completed", 0, None, 0.1), [view])
        self.assertNotIn("\ufffd", text)


class ReadableTests(TestCase):
    def test_terminal_sequences(self):
        """Colours, cursor moves, titles and bells go; a carriage return keeps what a terminal shows."""
        raw = (
            b"\x1b[1;31mred\x1b[0m text\r\n"
            b"\x1b]0;title\x07prompt$ \x07\n"
            b"progress 10%\rprogress 50%\rdone\n"
            b"tab\tkept\n"
        )
        self.assertEqual(readable(raw), "red text\nprompt$ \ndone\ntab\tkept\n")

    def test_invalid_utf8(self):
        self.assertEqual(readable(b"a\xffb"), "a\ufffdb")

    def test_binary_near_miss(self):
        """Text with a few odd bytes is text; a NUL, or more than a tenth odd bytes, is binary."""
        self.assertFalse(is_binary(b"x" * 90 + b"\x01" * 9))
        self.assertTrue(is_binary(b"x" * 89 + b"\x01" * 11))
        self.assertTrue(is_binary(b"text\0"))
        self.assertFalse(is_binary(b"\x1b[31mcolour\x1b[0m\r\n"))


class OtherTextTests(TestCase):
    def test_outcome_words(self):
        self.assertEqual(outcome("running", None, None, 4.0), "running for 4.0 s")
        self.assertEqual(outcome("paused", None, None, None), "paused")
        self.assertEqual(outcome("cancelled", -15, "SIGTERM", 2.0), "cancelled: killed by SIGTERM after 2.0 s")

    def test_output(self):
        chunk = lambda text, offset, end: {  # noqa: E731
            "text": text,
            "offset": offset,
            "next_offset": offset + len(text),
            "skipped_bytes": 0,
            "end": end,
        }
        result = {
            "process_id": "p1",
            "status": "running",
            "stdout": chunk("two\n", 4, 8),
            "stderr": chunk("", 0, 0),
            "finished": False,
        }
        self.assertEqual(
            output_text(result),
            "running: process p1\n--- stdout: bytes 4 to 8 of 8 ---\ntwo\n"
            'read on with offsets {"stdout": 8, "stderr": 0}',
        )
        result["stdout"] = chunk("", 8, 8)
        result["status"], result["finished"] = "completed", True
        self.assertEqual(
            output_text(result),
            "completed: process p1\nno new output\nfinished, and everything it wrote was read",
        )

    def test_status(self):
        result = {
            "process_id": "p1",
            "pid": 42,
            "command": ["sleep", "9"],
            "status": "running",
            "exit_code": None,
            "signal": None,
            "duration": None,
            "stdout_bytes": 0,
            "stderr_bytes": 3,
            "error": None,
        }
        self.assertEqual(
            status_text(result, 1.5),
            "running for 1.5 s\nprocess p1 (pid 42): sleep 9\nstdout 0 bytes, stderr 3 bytes",
        )

    def test_list(self):
        self.assertEqual(list_text([]), "no processes")
        self.assertEqual(
            list_text(
                [
                    {"process_id": "a", "state": "exited", "exit_code": 1, "command": ["false"]},
                    {"process_id": "b", "state": "running", "exit_code": None, "command": ["sleep", "1 2"]},
                ]
            ),
            "a  exited (exit 1)  false\nb  running  sleep '1 2'",
        )
