"""The rendered dataset: deterministic, split by source scan, captions that say what the pixels show."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pytest
import torch

from lcm_distill.evaluation.imagefolder import read_imagefolder
from lcm_distill.testbed import COLOR_NAMES, COLORS, DigitsConfig, build_split, caption_for, parse_caption
from lcm_distill.testbed.digits import load_source_digits, split_indices, to_uint8_hwc


def test_split_is_disjoint_complete_and_seeded():
    a = split_indices(1797, DigitsConfig())
    assert set(a["train"]).isdisjoint(a["test"]) and len(a["train"]) + len(a["test"]) == 1797
    assert len(a["test"]) == round(0.2 * 1797)
    b = split_indices(1797, DigitsConfig())
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = split_indices(1797, DigitsConfig(seed=1))
    assert not np.array_equal(a["test"], c["test"])


def test_build_split_deterministic_and_balanced(test_split):
    again = build_split("test")
    assert torch.equal(test_split.images, again.images) and test_split.captions == again.captions
    assert test_split.images.shape == (len(test_split.captions), 3, 16, 16)
    assert test_split.images.min() >= 0 and test_split.images.max() <= 1
    counts = Counter(test_split.colors.tolist())
    assert len(counts) == len(COLOR_NAMES) and len(set(counts.values())) == 1  # every scan in every colour


def test_captions_match_labels_and_pixels(test_split):
    _, labels = load_source_digits()
    src = [int(name.split("_")[0]) for name in test_split.file_names]
    assert test_split.digits.tolist() == labels[src].tolist()
    for cap, d, c in zip(test_split.captions, test_split.digits, test_split.colors, strict=True):
        assert parse_caption(cap) == (int(d), int(c))
    # the stroke colour is the caption's colour: direction of the summed RGB equals the palette entry's
    rgb = test_split.images.sum(dim=(2, 3))
    palette = torch.tensor([COLORS[n] for n in COLOR_NAMES])
    cos = torch.nn.functional.normalize(rgb, dim=1) @ torch.nn.functional.normalize(palette, dim=1).T
    assert torch.equal(cos.argmax(1), test_split.colors)


def test_parse_caption_and_caption_for():
    assert parse_caption(caption_for(7, "red")) == (7, COLOR_NAMES.index("red"))
    assert parse_caption("  A Cyan digit 0 ") == (0, COLOR_NAMES.index("cyan"))
    for bad in ("a red cat", "a purple digit 3", "a red digit 12", ""):
        assert parse_caption(bad) is None
    with pytest.raises(ValueError, match="colour"):
        caption_for(1, "purple")
    with pytest.raises(ValueError, match="digit"):
        caption_for(10, "red")
    with pytest.raises(ValueError, match="split"):
        build_split("validation")


def test_imagefolder_roundtrip_and_bytes(digits_dir, test_split, tmp_path):
    images, captions = read_imagefolder(digits_dir, "test")
    assert captions == test_split.captions
    expected = torch.from_numpy(to_uint8_hwc(test_split.images)).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(images, expected)
    rows = [json.loads(x) for x in (digits_dir / "test" / "metadata.jsonl").read_text().splitlines()]
    assert set(rows[0]) == {"file_name", "text"} and len(rows) == len(captions)
    assert json.loads((digits_dir / "testbed.json").read_text())["source"] == "sklearn.datasets.load_digits"

    from lcm_distill.testbed import write_imagefolder

    again = write_imagefolder(tmp_path / "again", splits=("test",))

    def digest(root):
        h = hashlib.sha256((root / "test" / "metadata.jsonl").read_bytes())
        for r in rows[:: max(1, len(rows) // 50)]:
            h.update((root / "test" / r["file_name"]).read_bytes())
        return h.hexdigest()

    assert digest(again) == digest(digits_dir)


def test_hf_imagefolder_columns(digits_dir):
    """The training code reads the data with datasets' imagefolder loader: image + text columns."""
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("imagefolder", data_dir=str(digits_dir), split="test")
    assert set(ds.column_names) == {"image", "text"}
    assert ds[0]["image"].size == (16, 16) and parse_caption(ds[0]["text"]) is not None


def test_inverted_style_same_captions_other_pixels(test_split):
    inv = build_split("test", DigitsConfig(style="inverted"))
    assert inv.captions == test_split.captions
    # plain + inverted = the full colour everywhere (the stroke mask and its complement)
    palette = torch.tensor([COLORS[n] for n in COLOR_NAMES])[test_split.colors].view(-1, 3, 1, 1)
    torch.testing.assert_close(inv.images[:50] + test_split.images[:50], palette[:50].expand(-1, 3, 16, 16))
    with pytest.raises(ValueError, match="style"):
        build_split("test", DigitsConfig(style="neon"))
