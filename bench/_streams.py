"""
Checking, as a benchmark client receives it, that one process's output
arrived whole: contiguous offsets, the byte total, optionally a CRC-32.
"""

import binascii
import json
import zlib
from typing import List, Optional

import _checkout  # noqa: F401  (puts this checkout's ccx on sys.path)
from ccx.protocol import FRAME_HEADER_SIZE, output_frame_header


class StreamCheck:
    """
    Follow one process's C{process.output} notifications as a subscriber
    receives them: offsets must be contiguous, and the total is counted.

    @param decode: decode each notification's JSON (and so check offsets);
        with C{False} only the frame sizes are counted and the byte total
        comes from C{process.completed}.
    @param checksum: keep the CRC-32 of the bytes received in C{crc}.
    @param base64: the notifications carry base64 (C{encoding: "base64"}).
    """

    def __init__(self, decode: bool = True, checksum: bool = False, base64: bool = False) -> None:
        self.decode = decode
        self.base64 = base64
        self.checksum = checksum
        self.bytes = 0
        self.frames = 0
        self.frame_bytes = 0
        self.gaps: List[str] = []
        self.completion: Optional[dict] = None
        self.crc = 0

    def output(self, payload: bytes) -> None:
        self.frames += 1
        self.frame_bytes += len(payload)
        if not self.decode:
            return
        params = json.loads(payload)["params"]
        if params["type"] != "stdout":
            return
        data = params["data"]
        if self.base64:
            raw = binascii.a2b_base64(data)
            if self.checksum:
                self.crc = zlib.crc32(raw, self.crc)
            size = len(raw)
        elif self.checksum:
            raw = data.encode("utf-8")
            self.crc = zlib.crc32(raw, self.crc)
            size = len(raw)
        else:
            size = len(data) if data.isascii() else len(data.encode("utf-8"))
        if params["offset"] != self.bytes and len(self.gaps) < 5:
            self.gaps.append(f"expected offset {self.bytes}, got {params['offset']}")
        self.bytes = params["offset"] + size

    def frame(self, payload: bytes) -> None:
        """
        A binary output frame (C{encoding: "binary"}): its header says the
        stream and offset; the rest is the bytes.
        """
        self.frames += 1
        self.frame_bytes += len(payload)
        _, stream, offset, _ = output_frame_header(payload)
        if stream != "stdout":
            return
        if offset != self.bytes and len(self.gaps) < 5:
            self.gaps.append(f"expected offset {self.bytes}, got {offset}")
        size = len(payload) - FRAME_HEADER_SIZE
        if self.checksum:
            self.crc = zlib.crc32(memoryview(payload)[FRAME_HEADER_SIZE:], self.crc)
        self.bytes = offset + size

    def notification(self, message: dict) -> None:
        method = message["method"]
        params = message["params"]
        if method == "process.completed":
            self.completion = params
            if not self.decode:
                self.bytes = params["stdout_bytes"] - params["dropped_bytes"]
        elif method == "process.dropped" and len(self.gaps) < 5:
            self.gaps.append(f"dropped {params['bytes']} bytes at {params['offset']}")

    @property
    def done(self) -> bool:
        return self.completion is not None

    def problems(self, expected: int) -> List[str]:
        """
        What is wrong, if anything, once the process has completed.
        """
        found = list(self.gaps)
        if self.completion is None:
            found.append("no process.completed")
            return found
        if self.completion["status"] != "completed":
            found.append(f"status {self.completion['status']}")
        if self.completion["stdout_bytes"] != expected:
            found.append(f"program wrote {self.completion['stdout_bytes']} bytes, not {expected}")
        if self.bytes != expected:
            found.append(f"received {self.bytes} bytes, not {expected}")
        return found
