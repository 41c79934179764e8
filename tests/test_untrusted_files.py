"""Damaged and crafted model files (issue 11): a file read while another program rewrites it, a
truncated or bit-flipped file, sizes and nesting crafted to exhaust memory, an unreadable file.
Every load gives exactly the saved model or an error naming the file — never a mix of two
files, a crash, or an allocation the file's size does not justify."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections import Counter

import pytest
import torch
from conftest import TINY_PARAMS, damaged, make_tiny
from hypothesis import strategies as st
from safetensors.torch import save as st_save
from test_bad_input import run_cases
from test_io import load_into, read_raw, rewrite, write_raw

from twinlearn import io
from twinlearn.encoders import parse_spec
from twinlearn.encoders.spec import MAX_LAYERS, MAX_WIDTH


def _same_file_content(got: tuple[dict, dict], want: tuple[dict, dict]) -> bool:
    (tensors, meta), (want_tensors, want_meta) = got, want
    return meta == want_meta and tensors.keys() == want_tensors.keys() and all(
        tensors[k].dtype == want_tensors[k].dtype and torch.equal(tensors[k], want_tensors[k])
        for k in tensors
    )


# --- item 2: mixed, truncated and bit-flipped files -------------------------------------------
damage = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1, exclude_max=True),
                                                  st.integers(1, 255)), min_size=1, max_size=3)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=16)),
)


@pytest.mark.parametrize("estimator", ["TLDR", "ReLIC"])
def test_damaged_files_are_refused_never_loaded_differently(estimator, fitted_tiny, tmp_path,
                                                            record_property):
    path = tmp_path / "model.safetensors"
    fitted_tiny[estimator].save(path)
    original, want = path.read_bytes(), io.load_tensors(path)

    def check(case):
        kind, how = case
        path.write_bytes(damaged(original, case))
        try:
            got = io.load_tensors(path)
        except ValueError as err:
            assert str(path) in str(err), repr(err)
            return
        # a flip in the header's padding or JSON white space leaves the same model
        assert _same_file_content(got, want), f"{kind} {how}: a different model was loaded"

    run_cases(damage, check, record_property)


def _two_models_of_one_size(tmp_path):
    files = []
    for seed in (0, 1):
        weights = torch.randn(64 * 1024, generator=torch.Generator().manual_seed(seed))
        io.save_tensors(tmp_path / f"{seed}.safetensors", {"w": weights}, {"kind": "model"})
        files.append(((tmp_path / f"{seed}.safetensors").read_bytes(), weights))
    assert len(files[0][0]) == len(files[1][0])
    return files


@pytest.mark.parametrize("truncate", [False, True], ids=["in place (rsync --inplace)", "cp"])
def test_a_file_rewritten_while_it_loads_gives_one_model_or_an_error(truncate, tmp_path):
    # before: a silently mixed model (in place), or SIGBUS (truncated under the memory map)
    (bytes_a, weights_a), (bytes_b, weights_b) = _two_models_of_one_size(tmp_path)
    path = tmp_path / "model.safetensors"
    path.write_bytes(bytes_a)
    stop = threading.Event()

    def rewrite_forever():
        flags = os.O_WRONLY | (os.O_TRUNC if truncate else 0)
        while not stop.is_set():
            for content in (bytes_b, bytes_a):
                fd = os.open(path, flags)
                for start in range(0, len(content), 16 * 1024):
                    os.write(fd, content[start:start + 16 * 1024])
                os.close(fd)
                time.sleep(0.002)

    writer = threading.Thread(target=rewrite_forever, daemon=True)
    writer.start()
    seen = Counter()
    deadline = time.monotonic() + 4
    try:
        while time.monotonic() < deadline and (seen["refused"] < 10 or seen["a"] + seen["b"] < 10):
            try:
                weights = io.load_tensors(path)[0]["w"]
            except ValueError as err:
                assert str(path) in str(err)
                seen["refused"] += 1
                continue
            is_a, is_b = torch.equal(weights, weights_a), torch.equal(weights, weights_b)
            assert is_a or is_b, "a mix of the two files was loaded"
            seen["a" if is_a else "b"] += 1
    finally:
        stop.set()
        writer.join()
    # both outcomes happened: the loads did meet the rewrites
    assert seen["refused"] and seen["a"] + seen["b"], seen


def test_checksum_required_from_version_2_and_version_1_files_still_load(tmp_path):
    path = tmp_path / "model.safetensors"
    old_meta = {"format_version": 1, "library_version": "0.1.0", "kind": "model"}
    # a version 1 file, as the previous twinlearn wrote it: no checksum, loaded unverified
    path.write_bytes(st_save({"w": torch.ones(3)}, metadata={"twinlearn": json.dumps(old_meta)}))
    tensors, meta = io.load_tensors(path)
    assert torch.equal(tensors["w"], torch.ones(3)) and meta["format_version"] == 1
    meta = {**old_meta, "format_version": io.FORMAT_VERSION}
    path.write_bytes(st_save({"w": torch.ones(3)}, metadata={"twinlearn": json.dumps(meta)}))
    with pytest.raises(ValueError, match="no checksum"):
        io.load_tensors(path)


# --- item 9: unreadable files, crafted metadata -----------------------------------------------
def test_an_unreadable_file_is_reported_as_permission_denied(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    io.save_tensors(path, {"w": torch.ones(3)}, {"kind": "model"})
    real_open = os.open

    def refuse(name, *args, **kwargs):  # what the kernel answers for mode 000 (unless root)
        if os.fspath(name) == str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(name))
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(io.os, "open", refuse)
    with pytest.raises(PermissionError, match="permission denied") as info:
        io.load_tensors(path)
    assert str(path) in str(info.value)
    with pytest.raises(FileNotFoundError, match="no such file") as info:
        io.load_tensors(tmp_path / "missing.safetensors")
    assert "missing.safetensors" in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000")
def test_a_file_of_mode_000_is_reported_as_permission_denied(tmp_path):
    path = tmp_path / "model.safetensors"
    io.save_tensors(path, {"w": torch.ones(3)}, {"kind": "model"})
    path.chmod(0)
    with pytest.raises(PermissionError, match="permission denied"):
        io.load_tensors(path)


#: metadata a reader must refuse with a ValueError naming the file, before using any of it
CRAFTED_META = {
    "nested 100 000 deep": '{"kind": "model", "format_version": 2, "x": '
                           + "[" * 100_000 + "]" * 100_000 + "}",
    "nested 40 deep": '{"kind": "model", "format_version": 2, "x": ' + "[" * 40 + "]" * 40 + "}",
    "a 5 000-digit integer": '{"kind": "model", "format_version": 2, "x": ' + "7" * 5000 + "}",
    "a 2**64 integer": json.dumps({"kind": "model", "format_version": 2, "x": 2**64}),
    "format version -1": json.dumps({"kind": "model", "format_version": -1}),
    "format version 0": json.dumps({"kind": "model", "format_version": 0}),
    "format version true": json.dumps({"kind": "model", "format_version": True}),
    "format version 2.0": json.dumps({"kind": "model", "format_version": 2.0}),
}


@pytest.mark.parametrize("crafted", list(CRAFTED_META))
def test_crafted_metadata_is_refused_naming_the_file(crafted, tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(io.encode_file({"w": torch.ones(2)}, CRAFTED_META[crafted]))
    with pytest.raises(ValueError, match="metadata|format version") as info:
        io.load_tensors(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("header_length", [2**64 - 1, 2**40, 10**6])
def test_a_header_length_beyond_the_file_is_refused(header_length, tmp_path):
    path = tmp_path / "model.safetensors"
    io.save_tensors(path, {"w": torch.ones(2)}, {"kind": "model"})
    path.write_bytes(header_length.to_bytes(8, "little") + path.read_bytes()[8:])
    with pytest.raises(ValueError, match="header length") as info:
        io.load_tensors(path)
    assert str(path) in str(info.value)


def test_a_fifo_is_refused_without_waiting(tmp_path):
    path = tmp_path / "model.safetensors"
    os.mkfifo(path)
    with pytest.raises(ValueError, match="not a regular file"):
        io.load_tensors(path)


# --- item 3: spec strings and sizes from a file -----------------------------------------------
@pytest.mark.parametrize("encoder", ["mlp-999999999-1", "mlp-300000-1", "mlp-65-8",
                                     "mlp-1-65537", "mlp-2-8-" + "9" * 5000])
def test_a_crafted_spec_in_a_model_file_is_refused_before_anything_is_built(
    encoder, fitted_tiny, tmp_path
):
    path = tmp_path / "model.safetensors"
    fitted_tiny["TLDR"].save(path)
    rewrite(path, lambda tensors, meta: meta["params"].update(encoder=encoder))
    model = make_tiny("TLDR")
    before = model.get_params()
    start = time.monotonic()
    with pytest.raises(ValueError, match="encoder") as info:
        model.load(path, init=True)
    assert time.monotonic() - start < 2, "the spec was acted on before it was checked"
    assert str(path) in str(info.value)
    assert model.get_params() == before, "a refused load changed the estimator"


spec_numbers = (st.one_of(st.integers(0, 100), st.integers(0, 2**17), st.integers(0, 10**30))
                .map(str) | st.integers(1, 10).map(lambda d: "9" * d * 500))


@st.composite
def specs(draw):
    """Spec strings whose numbers range from plausible to absurd (5 000 digits)."""
    numbers = draw(st.lists(spec_numbers, min_size=1, max_size=70))
    return "-".join([draw(st.sampled_from(["linear", "flinear", "mlp"])), *numbers])


def test_any_spec_parses_within_bounds_or_is_refused_naming_it(record_property):
    def check(spec):
        try:
            parsed = parse_spec(spec, "encoder")
        except ValueError as err:
            assert "encoder" in str(err)
            assert len(str(err)) < 300, "the message repeats a huge spec"
            return
        assert len(parsed.hidden) <= MAX_LAYERS and all(1 <= w <= MAX_WIDTH for w in parsed.hidden)

    run_cases(specs(), check, record_property)


@pytest.mark.parametrize("estimator", ["TSimCNE", "ReLIC"])
def test_crafted_image_sizes_in_a_model_file_are_refused(estimator, fitted_tiny, tmp_path,
                                                         record_property):
    # before: image_size_ up to 1e30 was accepted, then one transform asked for 27.9 GiB
    path = tmp_path / "model.safetensors"
    fitted_tiny[estimator].save(path)
    tensors, meta = read_raw(path)
    sides = st.one_of(st.integers(-5, 2**63 - 1), st.integers(8000, 9000))

    def check(size):
        meta["fitted"]["image_size_"] = list(size)
        write_raw(path, tensors, meta)
        model = make_tiny(estimator)
        fits = all(1 <= side <= 8192 for side in size)
        try:
            load_into(model, path)
        except ValueError as err:
            assert not fits and str(path) in str(err) and "image_size_" in str(err), repr(err)
            return
        assert fits and model.image_size_ == tuple(size)

    run_cases(st.tuples(sides, sides), check, record_property)


@pytest.mark.parametrize("estimator", list(TINY_PARAMS))
def test_huge_integers_anywhere_in_the_config_are_refused(estimator, fitted_tiny, tmp_path):
    path = tmp_path / "model.safetensors"
    fitted_tiny[estimator].save(path)
    for section in ("params", "fitted"):
        rewrite(path, lambda tensors, meta, section=section: meta[section].update(crafted=10**30))
        with pytest.raises(ValueError, match="integer of 100 bits") as info:
            load_into(make_tiny(estimator), path)
        assert str(path) in str(info.value)
