"""
Tests for L{ccx.output.buffer} and the encodings of L{ccx.native.wire}.
"""

from twisted.trial.unittest import SynchronousTestCase

from ccx.output.buffer import _COALESCE, _MAX_CHUNKS, _TIME_RESOLUTION, StreamBuffer
from ccx.native.wire import complete_utf8_length, decoder, encoder
from ccx.protocol import BASE64, UTF8

# Bigger than the coalescing size: each append of this many bytes makes a
# chunk of its own.
BIG = _COALESCE + 1


def chunked(
    *parts: bytes, max_bytes: int = 10**6, max_lines: int = 10**6, step: float = 1.0
) -> StreamBuffer:
    """
    A buffer holding C{parts}, the i-th appended at time C{i * step}.
    """
    buffer = StreamBuffer(max_bytes, max_lines)
    for index, part in enumerate(parts):
        buffer.append(part, index * step)
    return buffer


class StreamBufferOffsetTests(SynchronousTestCase):
    """
    Offsets, appending and reading.
    """

    def test_empty(self) -> None:
        """A new buffer holds nothing, from offset 0, and is open."""
        buffer = StreamBuffer(10, 10)
        self.assertEqual((buffer.start, buffer.end, buffer.held_bytes), (0, 0, 0))
        self.assertEqual(buffer.held_lines, 0)
        self.assertFalse(buffer.closed)

    def test_append_moves_end(self) -> None:
        """Appending moves C{end} by the bytes added and counts newlines."""
        buffer = chunked(b"ab\n", b"cd\nef\n")
        self.assertEqual((buffer.start, buffer.end), (0, 9))
        self.assertEqual(buffer.held_lines, 3)

    def test_append_nothing(self) -> None:
        """Appending no bytes changes nothing."""
        buffer = chunked(b"ab", b"")
        self.assertEqual(buffer.end, 2)
        self.assertEqual(buffer.read(0, 100), (0, b"ab", 0.0))

    def test_close(self) -> None:
        """C{close} marks the stream ended and keeps what is held."""
        buffer = chunked(b"ab")
        buffer.close()
        self.assertTrue(buffer.closed)
        self.assertEqual(buffer.read(0, 10)[1], b"ab")

    def test_read_within_chunk(self) -> None:
        """A read inside one chunk returns at most C{max_bytes} from C{offset}."""
        buffer = chunked(b"0123456789")
        self.assertEqual(buffer.read(3, 4), (3, b"3456", 0.0))

    def test_read_across_chunks(self) -> None:
        """A read carries on over the following chunks, up to C{max_bytes}."""
        buffer = chunked(b"a" * BIG, b"b" * BIG, b"c" * BIG)
        first, data, when = buffer.read(BIG - 2, BIG + 4)
        self.assertEqual(first, BIG - 2)
        self.assertEqual(data, b"aa" + b"b" * BIG + b"cc")
        self.assertEqual(when, 0.0)

    def test_read_to_end(self) -> None:
        """A read asking for more than is held returns everything from C{offset}."""
        buffer = chunked(b"a" * BIG, b"b" * BIG)
        self.assertEqual(buffer.read(1, 10 * BIG)[1], b"a" * (BIG - 1) + b"b" * BIG)

    def test_read_at_end(self) -> None:
        """A read at or past C{end} returns no bytes."""
        buffer = chunked(b"abc")
        self.assertEqual(buffer.read(3, 10), (3, b"", 0.0))
        self.assertEqual(buffer.read(7, 10), (7, b"", 0.0))

    def test_read_evicted_offset(self) -> None:
        """A read from an evicted offset starts at the oldest byte still held."""
        buffer = chunked(b"0123456789", max_bytes=4)
        buffer.evict()
        self.assertEqual(buffer.read(2, 100), (6, b"6789", 0.0))

    def test_time_of_chunk(self) -> None:
        """A read gives the time the chunk holding its first byte was read."""
        buffer = chunked(b"a" * BIG, b"b" * BIG, b"c" * BIG)
        self.assertEqual(buffer.read(0, 1)[2], 0.0)
        self.assertEqual(buffer.read(BIG, 1)[2], 1.0)
        self.assertEqual(buffer.read(2 * BIG + 5, 1)[2], 2.0)
        self.assertEqual(buffer.read(BIG - 1, BIG)[2], 0.0)

    def test_coalesce_small_appends(self) -> None:
        """Small appends read close together join the previous chunk and read back as one."""
        buffer = chunked(b"one\n", b"two\n", b"three\n", step=0.001)
        # White-box: coalescing is only visible in the chunk list.
        self.assertEqual(buffer._chunks, [b"one\ntwo\nthree\n"])
        self.assertEqual(buffer.read(4, 100)[:2], (4, b"two\nthree\n"))
        self.assertEqual(buffer.held_lines, 3)

    def test_coalesce_up_to_limit(self) -> None:
        """An append that would grow a chunk past the coalescing size starts one."""
        buffer = chunked(b"a" * (_COALESCE - 1), b"b", b"c", step=0.001)
        self.assertEqual(len(buffer._chunks), 2)
        self.assertEqual(buffer.read(_COALESCE, 1), (_COALESCE, b"c", 0.002))
        self.assertEqual(buffer.read(0, 2 * _COALESCE)[1][-3:], b"abc")

    def test_small_appends_apart_in_time_not_coalesced(self) -> None:
        """Small appends read more than the time resolution apart keep their own chunks."""
        buffer = chunked(b"one\n", b"two\n", step=_TIME_RESOLUTION * 2)
        self.assertEqual(buffer._chunks, [b"one\n", b"two\n"])

    def test_coalesced_regardless_of_time_past_chunk_bound(self) -> None:
        """Past the bound on held chunks, small appends join the last chunk whatever their time."""
        buffer = chunked(*[b"x"] * (_MAX_CHUNKS + 5))
        self.assertEqual(len(buffer._chunks), _MAX_CHUNKS)
        self.assertEqual(buffer.end, _MAX_CHUNKS + 5)

    def test_time_of_coalesced_append(self) -> None:
        """A read from inside a coalesced chunk gives when its first byte was read."""
        buffer = chunked(b"one\n", b"two\n", b"three\n")
        self.assertEqual(buffer.read(0, 100)[2], 0.0)
        self.assertEqual(buffer.read(4, 100)[2], 1.0)
        self.assertEqual(buffer.read(8, 100)[2], 2.0)


class StreamBufferEvictionTests(SynchronousTestCase):
    """
    Eviction by bytes and by lines, and C{keep_from}.
    """

    def test_within_limits(self) -> None:
        """Nothing is evicted while the buffer is within its limits."""
        buffer = chunked(b"0123456789", max_bytes=10, max_lines=1)
        self.assertEqual(buffer.evict(), 0)
        self.assertEqual(buffer.start, 0)

    def test_by_bytes_whole_chunks(self) -> None:
        """Whole old chunks go first, then the oldest left is trimmed to fit."""
        buffer = chunked(b"a" * BIG, b"b" * BIG, b"c" * BIG, max_bytes=BIG + 3)
        self.assertEqual(buffer.evict(), 2 * BIG - 3)
        self.assertEqual(buffer.held_bytes, BIG + 3)
        self.assertEqual(
            buffer.read(0, 10 * BIG), (2 * BIG - 3, b"bbb" + b"c" * BIG, 1.0)
        )

    def test_by_bytes_partial_trim(self) -> None:
        """Eviction by bytes trims the first chunk to exactly C{max_bytes}."""
        buffer = chunked(b"0123456789", max_bytes=3)
        self.assertEqual(buffer.evict(), 7)
        self.assertEqual((buffer.start, buffer.end), (7, 10))
        self.assertEqual(buffer.read(0, 10)[1], b"789")

    def test_by_lines_whole_chunks(self) -> None:
        """Eviction by lines drops whole old chunks while over C{max_lines}."""
        first = b"x\n" * (BIG // 2 + 1)
        buffer = chunked(first, b"y\n", max_lines=1)
        buffer.evict()
        self.assertEqual(buffer.start, len(first))
        self.assertEqual(buffer.held_lines, 1)
        self.assertEqual(buffer.read(0, 100)[1], b"y\n")

    def test_by_lines_partial_trim(self) -> None:
        """Eviction by lines trims the first chunk just after its excess lines."""
        buffer = chunked(b"one\n", b"two\n", b"three\n", b"four", max_lines=2)
        self.assertEqual(buffer.evict(), 4)
        self.assertEqual(buffer.held_lines, 2)
        self.assertEqual(buffer.read(0, 100), (4, b"two\nthree\nfour", 1.0))

    def test_by_lines_and_bytes(self) -> None:
        """When both limits are exceeded, the stricter one decides."""
        buffer = chunked(b"a\nb\nc\nd\n", max_bytes=5, max_lines=1)
        buffer.evict()
        self.assertEqual(buffer.read(0, 100)[1], b"d\n")
        buffer = chunked(b"a\nb\nc\nd\n", max_bytes=3, max_lines=3)
        buffer.evict()
        self.assertEqual(buffer.read(0, 100)[1], b"\nd\n")

    def test_bytes_over_lines_at_limit(self) -> None:
        """Eviction by bytes keeps C{max_bytes} when lines are at their limit."""
        # Same bytes as test_by_bytes_partial_trim_one_chunk below, but in
        # two chunks: an old chunk with no newline must only be trimmed.
        buffer = chunked(b"a" * BIG, b"\n", max_bytes=10, max_lines=1)
        buffer.evict()
        self.assertEqual(buffer.held_bytes, 10)
        self.assertEqual(buffer.read(0, 100)[1], b"a" * 9 + b"\n")

    def test_by_bytes_partial_trim_one_chunk(self) -> None:
        """A long line is trimmed to C{max_bytes}, its newline kept."""
        buffer = chunked(b"a" * BIG + b"\n", max_bytes=10, max_lines=1)
        buffer.evict()
        self.assertEqual(buffer.read(0, 100)[1], b"a" * 9 + b"\n")

    def test_keep_from_not_evicted(self) -> None:
        """Bytes at or after C{keep_from} stay, however far over the limits."""
        buffer = chunked(b"a" * BIG, b"b" * BIG, max_bytes=2, max_lines=0)
        self.assertEqual(buffer.evict(keep_from=0), 0)
        self.assertEqual(buffer.evict(keep_from=BIG + 5), BIG + 5)
        self.assertEqual(buffer.start, BIG + 5)
        self.assertEqual(buffer.held_bytes, BIG - 5)

    def test_keep_from_within_limits(self) -> None:
        """With a far C{keep_from}, eviction still stops at the limits."""
        buffer = chunked(b"0123456789", max_bytes=8)
        self.assertEqual(buffer.evict(keep_from=10), 2)
        self.assertEqual(buffer.start, 2)

    def test_many_chunks(self) -> None:
        """Offsets and reads stay right after many chunks were evicted."""
        buffer = StreamBuffer(2 * BIG, 10**6)
        for index in range(200):
            buffer.append(bytes([65 + index % 26]) * BIG, float(index))
            buffer.evict()
        self.assertEqual(buffer.start, 198 * BIG)
        self.assertEqual(buffer.end, 200 * BIG)
        self.assertEqual(buffer.read(0, 2), (198 * BIG, b"QQ", 198.0))
        self.assertEqual(buffer.read(199 * BIG - 1, 2), (199 * BIG - 1, b"QR", 198.0))


class StreamBufferFullTests(SynchronousTestCase):
    """
    L{StreamBuffer.is_full}.
    """

    def test_below_limits(self) -> None:
        """A buffer below its limits is not full."""
        buffer = chunked(b"a\nb", max_bytes=4, max_lines=2)
        self.assertFalse(buffer.is_full(0))

    def test_bytes_limit(self) -> None:
        """A buffer at its byte limit with nothing evictable is full."""
        buffer = chunked(b"abcd", max_bytes=4, max_lines=2)
        self.assertTrue(buffer.is_full(0))

    def test_lines_limit(self) -> None:
        """A buffer at its line limit with nothing evictable is full."""
        buffer = chunked(b"a\nb\n", max_bytes=100, max_lines=2)
        self.assertTrue(buffer.is_full(0))

    def test_evictable(self) -> None:
        """A buffer holding bytes before C{keep_from} is not full: it may evict them."""
        buffer = chunked(b"abcdef", max_bytes=4, max_lines=2)
        self.assertFalse(buffer.is_full(1))
        self.assertTrue(buffer.is_full(buffer.start))


class CompleteUTF8LengthTests(SynchronousTestCase):
    """
    L{complete_utf8_length}.
    """

    def test_ascii(self) -> None:
        """ASCII is complete at every length, including none."""
        self.assertEqual(complete_utf8_length(b""), 0)
        self.assertEqual(complete_utf8_length(b"abc"), 3)

    def test_complete_characters(self) -> None:
        """Data ending with a whole character is complete."""
        for text in ["é", "€", "😀", "aé€😀", "😀€é"]:
            data = text.encode("utf-8")
            self.assertEqual(complete_utf8_length(data), len(data), text)

    def test_split_at_every_position(self) -> None:
        """A character cut anywhere is left out, and only it."""
        for prefix in [b"", b"x", "€".encode("utf-8")]:
            for character in ["é", "€", "😀"]:
                encoded = character.encode("utf-8")
                for cut in range(1, len(encoded)):
                    data = prefix + encoded[:cut]
                    self.assertEqual(
                        complete_utf8_length(data),
                        len(prefix),
                        (prefix, character, cut),
                    )

    def test_stray_continuation_bytes(self) -> None:
        """Continuation bytes with no lead byte cannot be completed: they are kept."""
        self.assertEqual(complete_utf8_length(b"\x80\x80\x80\x80\x80"), 5)
        self.assertEqual(complete_utf8_length(b"a\x80"), 2)


class EncodingTests(SynchronousTestCase):
    """
    L{encoder} and L{decoder}.
    """

    def test_utf8(self) -> None:
        """UTF-8 text is carried as itself."""
        text = "é€😀 ok"
        self.assertEqual(encoder(UTF8)(text.encode("utf-8")), text)
        self.assertEqual(decoder(UTF8)(text), text.encode("utf-8"))

    def test_utf8_replacement(self) -> None:
        """Invalid UTF-8 is decoded with replacement characters."""
        self.assertEqual(encoder(UTF8)(b"a\xffb\xe2\x82"), "a\ufffdb\ufffd")

    def test_base64_round_trip(self) -> None:
        """Any bytes survive base64 encoding and decoding."""
        data = bytes(range(256)) + "é€😀".encode("utf-8")[:-1]
        text = encoder(BASE64)(data)
        self.assertIsInstance(text, str)
        self.assertEqual(decoder(BASE64)(text), data)

    def test_base64_invalid(self) -> None:
        """Invalid base64 raises L{ValueError}."""
        self.assertRaises(ValueError, decoder(BASE64), "not base64!")
