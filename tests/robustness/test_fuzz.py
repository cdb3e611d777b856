"""Property-based fuzzing of the run-file reader and the image loader (``-m fuzz``).

Every input either reads, or fails with the package's own error (``RunFileError``,
``ImageError``) on one line — never another exception type, never a hang. Each test runs
a fixed number of examples (5000 run files and 10000 images: about 8 minutes in all on
a 2-core machine) and prints how many inputs it tried; docs/reliability.md records the
count of the last full run.

    .venv/bin/python -m pytest -m fuzz -s tests/robustness/test_fuzz.py
"""

from __future__ import annotations

import faulthandler
import io
import struct
import sys
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import h5py
import pytest
import timm
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from support import DATA
from support.bitflip import classify, contents, flip_bit

from inspector import ImageError, RunFileError
from inspector.images import IMAGE_EXTENSIONS, model_transform, open_images
from inspector.store import read_run

pytestmark = pytest.mark.fuzz

GOLDEN = DATA / "golden-run-1.0.h5"
RUN_FILE_EXAMPLES = 5000
IMAGE_EXAMPLES = 10000
HANG_S = 900
"""A test still running after this long is a hang: faulthandler dumps every thread's
stack and exits the process, so the run fails instead of waiting forever."""

FUZZ_SETTINGS = {
    "deadline": 20_000,  # ms per example: a slow example is reported, not waited for
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


def _report(capsys: pytest.CaptureFixture[str], what: str, counts: Counter[str]) -> None:
    total = sum(counts.values())
    parts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    with capsys.disabled():
        print(f"\nfuzz: {total} {what} tried ({parts}); no unclean failure")


def _watchdog(test: Callable[[], None]) -> None:
    faulthandler.dump_traceback_later(HANG_S, exit=True, file=sys.__stderr__)
    try:
        test()
    finally:
        faulthandler.cancel_dump_traceback_later()


# -- run files ------------------------------------------------------------------------------

GOLDEN_BYTES = GOLDEN.read_bytes()


def _metadata_offsets() -> list[int]:
    """Where the golden file's object headers start (groups, datasets, their attributes),
    plus the superblock: the places where a flipped byte changes the structure."""
    offsets = [0]
    with h5py.File(GOLDEN, "r") as handle:
        offsets.append(h5py.h5o.get_info(handle.id).addr)
        handle.visititems(lambda _, node: offsets.append(h5py.h5o.get_info(node.id).addr))
    return sorted(set(offsets))


METADATA = _metadata_offsets()
SIZE = len(GOLDEN_BYTES)


@st.composite
def corrupted_run_files(draw: st.DrawFn) -> bytes:
    data = bytearray(GOLDEN_BYTES)
    kind = draw(st.sampled_from(["truncate", "flip", "metadata", "block", "splice"]))
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, SIZE - 1))])
    if kind in ("flip", "metadata"):
        if kind == "flip":
            where = st.integers(0, SIZE - 1)
        else:  # near an object header: types, shapes, link messages, attribute messages
            where = st.builds(
                lambda base, delta: min(max(base + delta, 0), SIZE - 1),
                st.sampled_from(METADATA),
                st.integers(-16, 512),
            )
        for position, value in draw(st.lists(st.tuples(where, st.integers(0, 255)), max_size=24)):
            data[position] = value
        return bytes(data)
    start = draw(st.integers(0, SIZE - 1))
    if kind == "block":
        payload = draw(st.binary(min_size=1, max_size=1024))
        data[start : start + len(payload)] = payload
        return bytes(data[:SIZE])
    # splice: a copy of another part of the file (valid-looking structures out of place)
    source = draw(st.integers(0, SIZE - 1))
    length = draw(st.integers(1, 2048))
    data[start : start + length] = GOLDEN_BYTES[source : source + length]
    return bytes(data[:SIZE])


def test_run_file_reader_fails_only_with_run_file_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    counts: Counter[str] = Counter()
    path = tmp_path / "fuzzed.h5"

    @settings(max_examples=RUN_FILE_EXAMPLES, **FUZZ_SETTINGS)
    @given(data=corrupted_run_files(), allow_incomplete=st.booleans())
    def one(data: bytes, allow_incomplete: bool) -> None:
        path.write_bytes(data)
        try:
            run = read_run(path, allow_incomplete=allow_incomplete)
        except RunFileError as exc:
            assert "\n" not in str(exc), str(exc)
            counts["refused"] += 1
        else:
            assert run.path == path
            counts["read"] += 1

    _watchdog(one)
    assert counts["refused"] > 0 and counts["read"] > 0
    _report(capsys, "corrupted run files", counts)


# -- images ---------------------------------------------------------------------------------


def _encoded(fmt: str, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (24, 16), 90).save(buffer, fmt)
    return buffer.getvalue()


SEEDS = {
    ".png": _encoded("PNG"),
    ".jpg": _encoded("JPEG"),
    ".bmp": _encoded("BMP"),
    ".tif": _encoded("TIFF"),
    ".webp": _encoded("WEBP"),
    ".jpeg": _encoded("JPEG", "L"),
    ".tiff": _encoded("TIFF", "I;16"),
}
assert set(SEEDS) == set(IMAGE_EXTENSIONS)

SIDES = st.one_of(
    st.sampled_from([0, 1, 2, 63, 64, 65, 65_535, 100_000, 2**31 - 1, 2**32 - 1]),
    st.integers(1, 4096),
)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


@st.composite
def png_headers(draw: st.DrawFn) -> tuple[str, bytes]:
    header = struct.pack(
        ">IIBBBBB", draw(SIDES), draw(SIDES), draw(st.sampled_from([1, 2, 4, 8, 16, 3, 0])),
        draw(st.sampled_from([0, 2, 3, 4, 6, 1])), draw(st.integers(0, 1)),
        draw(st.integers(0, 1)), draw(st.integers(0, 2)),
    )  # fmt: skip
    body = zlib.compress(draw(st.binary(max_size=64)) + bytes(draw(st.integers(0, 20_000))))
    chunks = [_png_chunk(b"IHDR", header), _png_chunk(b"IDAT", body), _png_chunk(b"IEND", b"")]
    return ".png", b"\x89PNG\r\n\x1a\n" + b"".join(draw(st.permutations(chunks)))


@st.composite
def bmp_headers(draw: st.DrawFn) -> tuple[str, bytes]:
    width, height = draw(SIDES.map(lambda v: v & 0x7FFFFFFF)), draw(st.integers(-5000, 5000))
    bits = draw(st.sampled_from([1, 4, 8, 16, 24, 32, 0, 7]))
    pixels = draw(st.binary(max_size=2048))
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, 0, len(pixels), 0, 0, 0, 0)
    header = b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 14 + len(info))
    return ".bmp", header + info + pixels


@st.composite
def jpeg_headers(draw: st.DrawFn) -> tuple[str, bytes]:
    """A baseline JPEG's SOF0 segment with random sizes and components, then noise."""
    components = draw(st.integers(0, 5))
    sof = struct.pack(">BHHB", 8, draw(SIDES) & 0xFFFF, draw(SIDES) & 0xFFFF, components)
    sof += b"".join(struct.pack(">BBB", i + 1, 0x11, 0) for i in range(components))
    segment = b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof
    return ".jpg", b"\xff\xd8" + segment + draw(st.binary(max_size=1024)) + b"\xff\xd9"


@st.composite
def mutated_images(draw: st.DrawFn) -> tuple[str, bytes]:
    extension = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[extension])
    for position, value in draw(
        st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), max_size=16)
    ):
        data[position] = value
    cut = draw(st.one_of(st.just(len(data)), st.integers(1, len(data))))
    return extension, bytes(data[:cut])


IMAGES = st.one_of(
    st.tuples(st.sampled_from(IMAGE_EXTENSIONS), st.binary(max_size=4096)),
    mutated_images(),
    png_headers(),
    bmp_headers(),
    jpeg_headers(),
)


@pytest.fixture(scope="module")
def transform():  # type: ignore[no-untyped-def]
    return model_transform(timm.create_model("test_vit"))[0]


def test_image_loader_fails_only_with_image_errors(
    tmp_path: Path, transform, capsys: pytest.CaptureFixture[str]
) -> None:
    counts: Counter[str] = Counter()
    good = tmp_path / "good.png"
    Image.new("RGB", (32, 32), (200, 40, 40)).save(good)

    @settings(max_examples=IMAGE_EXAMPLES, **FUZZ_SETTINGS)
    @given(image=IMAGES, in_folder=st.booleans())
    def one(image: tuple[str, bytes], in_folder: bool) -> None:
        extension, data = image
        folder = tmp_path / "folder"
        folder.mkdir(exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        path = folder / f"fuzzed{extension}"
        path.write_bytes(data)
        if in_folder:  # next to a good image: the fuzzed one is read or skipped
            (folder / "good.png").write_bytes(good.read_bytes())
        # max_pixels well below the default keeps a decode of a claimed 89 M-pixel header
        # from taking seconds; tests/robustness/test_bad_input.py checks the default limit.
        try:
            images = open_images(path if not in_folder else folder, transform, max_pixels=1 << 22)
        except ImageError as exc:
            assert not in_folder and "\n" not in str(exc), str(exc)
            counts["refused"] += 1
            return
        batches = list(images.batches(2))
        for batch, _ids, _ in batches:
            assert batch.shape[1:] == (3, 160, 160) and torch.isfinite(batch).all()
        decoded = [i for _, ids, _ in batches for i in ids]
        assert set(decoded) | {p.rsplit("/", 1)[-1] for p, _ in images.skipped} >= set(images.ids)
        if in_folder:
            assert "good.png" in decoded
        counts["read" if path.name in decoded else "skipped"] += 1

    _watchdog(one)
    assert counts["refused"] > 0 and counts["read"] > 0
    _report(capsys, "fuzzed image files", counts)


# -- single-bit flips in a checksummed (schema 1.1) run file -----------------------------------

GOLDEN_1_1 = GOLDEN.with_name("golden-run-1.1.h5")
BIT_FLIPS = 500


def test_bit_flips_in_a_checksummed_run_file_are_refused_or_read_identical(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """500 single-bit flips at random offsets of the 1.1 golden file, every one against
    the unflipped file's attributes and datasets: none is read with other values
    (benchmarks/bitflip_campaign.py runs the same on larger real runs)."""
    expected = contents(GOLDEN_1_1)
    data = GOLDEN_1_1.read_bytes()
    flipped = tmp_path / "flipped.h5"
    counts: Counter[str] = Counter()

    @settings(max_examples=BIT_FLIPS, database=None, **FUZZ_SETTINGS)
    @given(st.integers(0, len(data) * 8 - 1))
    def flip(bit: int) -> None:
        flipped.write_bytes(flip_bit(data, bit))
        outcome, detail = classify(flipped, expected)
        assert outcome in ("refused", "identical"), (bit, outcome, detail)
        counts[outcome] += 1

    _watchdog(flip)
    _report(capsys, "single-bit flips of a 1.1 run file", counts)
