"""The COCO-style recipe on a tiny stand-in: captions JSON + image folder -> a seeded fixed-size reference set ->
lcm-distill-evaluate with Inception FID at that size and a named open_clip model, streamed in chunks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lcm_distill.cli.evaluate import main as evaluate_main
from lcm_distill.cli.reference import center_square, select
from lcm_distill.cli.reference import main as reference_main

SIZES = [(20, 14), (14, 24), (16, 16), (30, 12), (18, 22), (24, 20)]


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """COCO's layout in miniature: val/<id>.jpg of mixed, non-square sizes and annotations/captions.json."""
    root = tmp_path_factory.mktemp("coco")
    (root / "val").mkdir()
    images, annotations = [], []
    for i, (w, h) in enumerate(SIZES):
        name = f"{i:012d}.jpg"
        colour = np.array([40 * i, 255 - 40 * i, 128], dtype=np.uint8)
        Image.fromarray(np.broadcast_to(colour, (h, w, 3)).copy()).save(root / "val" / name)
        images.append({"id": 100 + i, "file_name": name, "width": w, "height": h})
        for j in range(2):
            annotations.append({"id": 10 * i + j, "image_id": 100 + i, "caption": f" a  photo {i} take {j}\n"})
    (root / "annotations").mkdir()
    (root / "annotations" / "captions.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    return root


def _reference(coco, out, *extra):
    return reference_main(["--captions", str(coco / "annotations" / "captions.json"), "--images", str(coco / "val"),
                           "--size", "16", "--out", str(out), *extra])  # fmt: skip


def test_reference_set_is_seeded_fixed_size_one_caption_each(coco, tmp_path):
    assert _reference(coco, tmp_path / "a", "--num", "4", "--seed", "0") == 0
    rows = [json.loads(x) for x in (tmp_path / "a" / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and len({r["source"] for r in rows}) == 4
    for r in rows:
        with Image.open(tmp_path / "a" / r["file_name"]) as im:
            assert im.size == (16, 16)
        i = int(r["source"][:-4])
        assert r["text"] in (f"a photo {i} take 0", f"a photo {i} take 1")  # whitespace normalised
    assert (tmp_path / "a" / "prompts.txt").read_text().splitlines() == [r["text"] for r in rows]
    protocol = json.loads((tmp_path / "a" / "reference.json").read_text())
    assert protocol["num"] == 4 and protocol["size"] == 16 and protocol["seed"] == 0
    _reference(coco, tmp_path / "b", "--num", "4", "--seed", "0")
    assert (tmp_path / "b" / "metadata.jsonl").read_text() == (tmp_path / "a" / "metadata.jsonl").read_text()
    picks = {tuple(select({n: [f"{n}-0", f"{n}-1"] for n in "abcdef"}, 3, seed)) for seed in range(6)}
    assert len(picks) > 1  # the seed changes the subset / captions


def test_center_square_keeps_the_middle():
    image = np.zeros((16, 32, 3), dtype=np.uint8)
    image[:, 8:24] = (0, 255, 0)  # the middle 16 columns green, the sides black
    out = np.asarray(center_square(Image.fromarray(image), 16))
    assert out.shape == (16, 16, 3) and (out[:, 2:14, 1] > 200).all() and (out[:, 2:14, 0] < 50).all()


@pytest.mark.parametrize(
    ("extra", "flag"),
    [(["--num", "7"], "--num 7: the captions name only 6"), (["--size", "4"], "--size 4"),
     (["--images", "/nonexistent"], "--images /nonexistent")],
)
def test_reference_errors_name_the_flag(coco, tmp_path, capsys, extra, flag):
    argv = ["--captions", str(coco / "annotations" / "captions.json"), "--images", str(coco / "val"),
            "--out", str(tmp_path / "o"), *extra]  # fmt: skip
    with pytest.raises(SystemExit):
        reference_main(argv)
    assert flag in capsys.readouterr().err


def test_coco_recipe_end_to_end_fid_at_the_reference_size_and_clip(coco, tmp_path, lcm_dir, tiny_clip_name):
    """Reference at 8 px vs the LCM's 16 px images: generated images are resized to 8 for Inception FID; generation
    in chunks of 3 of 5 images gives the same numbers as one chunk."""
    _reference(coco, tmp_path / "ref", "--size", "8")
    common = ["--model", str(lcm_dir), "--kind", "lcm", "--reference", str(tmp_path / "ref"), "--steps", "1",
              "--guidance", "2", "--num-images", "5", "--batch-size", "2", "--fid-features", "inception",
              "--clip-model", tiny_clip_name, "--clip-pretrained", "random", "--grid-prompts", "2"]  # fmt: skip
    assert evaluate_main([*common, "--chunk-images", "3", "--out", str(tmp_path / "e3")]) == 0
    assert evaluate_main([*common, "--out", str(tmp_path / "e1")]) == 0
    r3, r1 = (json.loads((tmp_path / e / "report.json").read_text()) for e in ("e3", "e1"))
    assert r3["reference"]["fid_image_size"] == 8 and r3["reference"]["protocol"]["size"] == 8
    assert r3["reference"]["num_images"] == 6 and r3["image_size"] == [16, 16]
    row3, row1 = r3["results"][0], r1["results"][0]
    assert row3["fid"] is not None and row3["fid"] == pytest.approx(row1["fid"], rel=1e-4)
    assert 0.0 <= row3["scores"]["clip_score"] <= 100.0  # random weights: a different number in every run
    assert (tmp_path / "e3" / "quality_vs_steps.png").exists()


def test_chunked_generation_equals_one_chunk(tiny_pipe, tiny_extractor, tiny_clip_name):
    """Image i keeps seed + i in every chunk, scores are weighted by chunk size: chunks of 2 of 5 images give the
    numbers of one chunk (a chunk restarting the seeds, or an unweighted mean of chunk means, would not)."""
    import torch

    from lcm_distill.evaluation import ClipScoreConfig, ClipScorer, EvalConfig, extract_features, run_evaluation

    torch.manual_seed(0)
    clip = ClipScorer(ClipScoreConfig(tiny_clip_name, pretrained=None, batch_size=3))
    prompts = [f"a photo {i}" for i in range(5)]
    ref = extract_features(tiny_extractor, torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1)))
    rows = []
    for chunk in (2, 1024):
        config = EvalConfig(steps=(1,), guidance_scales=(3.0,), batch_size=2, chunk_images=chunk, warmup=False)
        rows.append(run_evaluation(tiny_pipe, prompts, config, None, tiny_extractor, ref, [clip]).results[0])
    assert rows[0].fid == pytest.approx(rows[1].fid, rel=1e-5)
    assert rows[0].scores == pytest.approx(rows[1].scores, rel=1e-5)


def test_fid_sized_resizes_only_when_sizes_differ():
    import torch

    from lcm_distill.evaluation.harness import fid_sized

    x = torch.rand(2, 3, 16, 16)
    assert fid_sized(x, None) is x and fid_sized(x, 16) is x
    small = fid_sized(x, 8)
    assert small.shape == (2, 3, 8, 8) and small.min() >= 0 and small.max() <= 1
    assert torch.allclose(small.mean(), x.mean(), atol=0.02)  # an average, not a corner crop


def test_the_grid_is_the_same_whatever_the_chunk(tiny_pipe, tmp_path):
    """Grid columns come from the first images across chunks (with chunks of 2 the grid held only 2 of 4 columns)."""
    from PIL import Image

    from lcm_distill.evaluation import EvalConfig, run_evaluation

    prompts = [f"a photo {i}" for i in range(5)]
    for chunk in (2, 1024):
        config = EvalConfig(steps=(1,), guidance_scales=(3.0,), batch_size=2, chunk_images=chunk, warmup=False,
                            grid_prompts=4)  # fmt: skip
        run_evaluation(tiny_pipe, prompts, config, tmp_path / f"c{chunk}")
    a, b = (np.asarray(Image.open(tmp_path / f"c{c}" / "grid_g3.png")) for c in (2, 1024))
    assert a.shape == b.shape and np.array_equal(a, b)
