"""SDXL's size/crop conditioning from the data (data.sdxl_time_ids=sample): every pixel sample carries time ids =
(original h, w, crop top, left, R, R) from the transform that made the crop - the source image's size from
img2dataset's json / LAION's columns when the stored image was resized, the crop in the resized image, mirrored
after a horizontal flip (diffusers' SDXL scripts' convention)."""

from __future__ import annotations

import torch
from PIL import Image

from lcm_distill.config import DataConfig
from lcm_distill.data import build_batches
from lcm_distill.data.batch import decode_sample
from lcm_distill.data.transforms import sample_rng


def test_time_ids_are_the_samples_size_and_crop():
    img = Image.new("RGB", (48, 24))  # w 48, h 24 -> resized to 32 x 16; a 16-px centre crop starts at left 8
    centre = DataConfig(resolution=16, center_crop=True, random_flip=False)
    assert decode_sample(img, "a", centre, sample_rng(0, 0, 0))["time_ids"].tolist() == [24, 48, 0, 8, 16, 16]
    meta = {"original_width": 1024, "original_height": 512, "width": 48, "height": 24}  # img2dataset: stored resized
    assert decode_sample(img, "a", centre, sample_rng(0, 0, 0), meta=meta)["time_ids"].tolist()[:2] == [512, 1024]
    assert decode_sample(img, "a", centre, sample_rng(0, 0, 0), meta={"width": 48})["time_ids"].tolist()[:2] == [24, 48]


def test_a_flip_mirrors_the_crops_left_edge():
    img = Image.fromarray((torch.arange(24 * 48 * 3) % 251).reshape(24, 48, 3).numpy().astype("uint8"))
    plain = DataConfig(resolution=16, center_crop=False, random_flip=False)
    flip = DataConfig(resolution=16, center_crop=False, random_flip=True)
    flipped = 0
    for i in range(12):  # same seed: the same crop is drawn, then (flip config only) the flip
        a, b = (decode_sample(img, "a", c, sample_rng(i, 0, 0)) for c in (plain, flip))
        top_a, left_a = a["time_ids"][2:4].tolist()
        assert b["time_ids"][2].item() == top_a
        if torch.equal(a["pixel_values"], b["pixel_values"]):
            assert b["time_ids"][3].item() == left_a
        else:
            flipped += 1
            assert torch.equal(b["pixel_values"], a["pixel_values"].flip(-1))
            assert b["time_ids"][3].item() == 32 - left_a - 16
    assert 0 < flipped < 12


def test_img2dataset_shards_give_the_source_images_size(tmp_path):
    from lcm_distill.testing.img2dataset import laion_rows, write_img2dataset_output

    rows = laion_rows(4)
    write_img2dataset_output(tmp_path / "shards", rows, per_shard=4, image_size=32)
    cfg = DataConfig(source="webdataset", shards=str(tmp_path / "shards"), resolution=16, shuffle_buffer=0,
                     center_crop=True, random_flip=False)  # fmt: skip
    batch = next(iter(build_batches(cfg, 4)))
    by_caption = {r["TEXT"]: (r["HEIGHT"], r["WIDTH"]) for r in rows}
    for caption, ids in zip(batch["captions"], batch["time_ids"].tolist(), strict=True):
        assert tuple(ids[:2]) == by_caption[caption] and ids[4:] == [16, 16]
