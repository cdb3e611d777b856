"""Checksummed run files (schema 1.1): fletcher32 on every chunked dataset, a SHA-256
manifest over every element written last and verified on read, ``--no-verify`` for
forensics, and single-bit flips that are refused or read identical — never read as other
numbers. docs/reliability.md lists each guarantee with its test."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from support import DATA
from support.bitflip import classify, contents, flip_bit

from inspector import RunFileError
from inspector.cli import main
from inspector.store import read_run
from inspector.store._checksum import verify
from inspector.store._schema import MANIFEST, MANIFEST_DIGEST

GOLDEN = DATA / "golden-run-1.1.h5"
MEAN = "analysis/attention_distance/layers/blocks.0.attn/mean"


@pytest.fixture
def run_file(tmp_path: Path) -> Path:
    path = tmp_path / "run.h5"
    shutil.copyfile(GOLDEN, path)
    return path


def test_every_dataset_that_can_is_chunked_with_fletcher32(run_file: Path) -> None:
    with h5py.File(run_file, "r") as handle:
        checked: list[str] = []

        def visit(name: str, node: h5py.Group | h5py.Dataset) -> None:
            if not isinstance(node, h5py.Dataset):
                return
            if node.shape == () or h5py.check_string_dtype(node.dtype) is not None:
                return  # scalars and strings cannot carry filters: the manifest covers them
            assert node.fletcher32 and node.chunks, name
            checked.append(name)

        handle.visititems(visit)
    assert len(checked) > 40


def test_the_manifest_covers_every_element_and_matches(run_file: Path) -> None:
    """One digest per group and dataset (the manifest's own is the root attribute
    ``manifest_sha256``): anything written after the manifest would not match it."""
    with h5py.File(run_file, "r") as handle:
        listed = set(json.loads(handle[MANIFEST][()].tobytes())["elements"])
        names = {"/"}
        handle.visititems(lambda name, node: names.add(node.name))
        assert listed == names - {f"/{MANIFEST}"}
        assert verify(handle) is True
        assert isinstance(handle.attrs[MANIFEST_DIGEST], str)


@pytest.mark.parametrize(
    ("edit", "element"),
    [
        (lambda h: h.attrs.__setitem__("model", "vit_huge"), "the root's attributes"),
        (
            lambda h: h["layers/blocks.0.attn"].attrs.__setitem__("heads", 3),
            "/layers/blocks.0.attn",
        ),
        (lambda h: h["layers/blocks.0.attn/moments/count"].write_direct(np.array(7)), "count"),
        (lambda h: h[MEAN].__setitem__(0, 1.0), f"/{MEAN}"),
        (lambda h: h.create_group("extra"), "/extra is not in its checksum manifest"),
        (lambda h: h.__delitem__(MANIFEST), "manifest /manifest is missing"),
        (lambda h: h.attrs.__delitem__(MANIFEST_DIGEST), "manifest_sha256 is missing"),
    ],
    ids=["root-attribute", "layer-attribute", "scalar", "analysis-array", "added", "no-manifest",
         "no-digest"],
)  # fmt: skip
def test_an_edited_file_is_one_clean_error_naming_the_element(
    run_file: Path, edit: object, element: str
) -> None:
    with h5py.File(run_file, "r+") as handle:
        edit(handle)  # type: ignore[operator]
    with pytest.raises(RunFileError, match="is corrupt") as info:
        read_run(run_file)
    message = str(info.value)
    assert "\n" not in message and element in message and "--no-verify" in message


def test_no_verify_reads_a_damaged_file_as_it_is(
    run_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with h5py.File(run_file, "r+") as handle:
        handle.attrs["model"] = "edited"
    assert main(["info", str(run_file)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the root's attributes do not match" in err
    assert read_run(run_file, verify=False).model == "edited"
    assert main(["info", "--no-verify", str(run_file)]) == 0
    assert "model:     edited" in capsys.readouterr().out


def test_a_damaged_chunk_names_its_dataset(run_file: Path) -> None:
    """A byte changed inside a compressed chunk: fletcher32 refuses it, named."""
    with h5py.File(run_file, "r") as handle:
        info = handle["layers/blocks.0.attn/maps"].id.get_chunk_info(0)
        offset = info.byte_offset + info.size // 2
    run_file.write_bytes(flip_bit(run_file.read_bytes(), offset * 8))
    with pytest.raises(RunFileError, match=r"/layers/blocks\.0\.attn/maps cannot be read"):
        read_run(run_file)


def test_thirty_bit_flips_are_refused_or_read_identical(tmp_path: Path) -> None:
    """Single-bit flips at 30 seeded random offsets of the 1.1 golden file: none is read
    with different values (the campaign in benchmarks/ does 500+ on real runs)."""
    expected = contents(GOLDEN)
    data = GOLDEN.read_bytes()
    rng = random.Random(18)
    flipped = tmp_path / "flipped.h5"
    outcomes: dict[str, int] = {}
    for _ in range(30):
        bit = rng.randrange(len(data) * 8)
        flipped.write_bytes(flip_bit(data, bit))
        outcome, detail = classify(flipped, expected)
        assert outcome in ("refused", "identical"), (bit, outcome, detail)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes.get("refused", 0) > 0
