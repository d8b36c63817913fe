"""Data as real tools lay it out: img2dataset's output folder (tar + parquet + stats per shard, LAION columns kept),
shards that move between runs, a lost shard, a LAION parquet read as data.source=hf, images stored below the
training resolution."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from lcm_distill.config import ConfigError
from lcm_distill.data.webdataset import expand_shards
from lcm_distill.engine import train
from lcm_distill.engine.preflight import check_data, preflight
from lcm_distill.testing.img2dataset import laion_rows, write_img2dataset_output

ROWS = laion_rows(12)  # 3 shards of 4; rows 0, 3, 6, 9 have punsafe 0.95; rows 0, 4, 8 pwatermark 0.9


@pytest.fixture(scope="module")
def laion_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("laion") / "shards"
    write_img2dataset_output(out, ROWS, per_shard=4, image_size=12)
    return out


def _wds(make_cfg, shards, *more, out="run"):
    return make_cfg("data.source=webdataset", f"data.shards={shards}", "data.shuffle_buffer=2", *more, out=out)


def test_the_img2dataset_folder_and_a_glob_are_shard_lists(laion_dir, make_cfg):
    tars = [str(laion_dir / f"0000{i}.tar") for i in range(3)]
    assert expand_shards(str(laion_dir)) == tars  # the parquet and stats files beside them are not shards
    assert expand_shards(f"{laion_dir}/*.tar") == tars
    check_data(_wds(make_cfg, laion_dir))
    with pytest.raises(ConfigError, match=r"data.shards=.*no \*.tar shard"):
        check_data(_wds(make_cfg, laion_dir.parent))


def test_environment_variables_in_data_shards(laion_dir, make_cfg, monkeypatch):
    monkeypatch.setenv("SHARD_ROOT", str(laion_dir))
    monkeypatch.setenv("WDS_ROOT", str(laion_dir))
    plain = expand_shards("$SHARD_ROOT/{00000..00002}.tar")
    assert plain == expand_shards("${ROOT}/{00000..00002}.tar")  # webdataset's own form reads WDS_ROOT
    assert plain == [str(laion_dir / f"0000{i}.tar") for i in range(3)]
    with pytest.raises(ConfigError, match=r"data.shards=.*NOT_SET_ANYWHERE"):
        check_data(_wds(make_cfg, "$NOT_SET_ANYWHERE/{00000..00002}.tar"))


def test_punsafe_filter_on_img2dataset_json(laion_dir, make_cfg):
    from lcm_distill.data import StreamingBatches, shard_source

    def kept(*filters):
        cfg = _wds(make_cfg, laion_dir, *filters, "data.resolution=8").data
        b = StreamingBatches(shard_source(cfg), cfg, batch_size=1)
        return {k.rsplit("#", 1)[1] for batch in b.batches(endless=False) for k in batch["keys"]}, b.position

    everything, _ = kept()
    safe, position = kept("data.max_punsafe=0.5")
    assert len(everything) == 12
    unsafe = {f"{i // 4:05d}{i % 4:04d}" for i in range(12) if ROWS[i]["punsafe"] > 0.5}
    assert safe == everything - unsafe and position.filtered_samples == len(unsafe) == 4
    with pytest.raises(ConfigError, match=r"data.max_punsafe"):
        make_cfg("data.max_punsafe=2")


def test_read_samples_say_what_the_filter_counters_count(laion_dir, make_cfg):
    """A shuffle buffer larger than the shard set reads ahead across epochs before the first batch: the filter count
    then exceeds what one epoch holds. read_samples counts those reads too, so filtered / read is the true reject
    rate (4 of 12 here) whatever the read-ahead; samples counts what training consumed."""
    from itertools import islice

    from lcm_distill.data import StreamingBatches, shard_source

    cfg = _wds(make_cfg, laion_dir, "data.max_punsafe=0.5", "data.resolution=8", "data.shuffle_buffer=30").data
    b = StreamingBatches(shard_source(cfg), cfg, batch_size=2)
    list(islice(b.batches(), 3))
    p = b.position
    assert p.samples == 6 and p.filtered_samples > 4  # more than one epoch's unsafe rows: read-ahead
    assert p.read_samples - p.filtered_samples - p.samples == 30  # the kept samples waiting in the shuffle buffer
    assert abs(3 * p.filtered_samples - p.read_samples) <= 3  # 1 of 3 rejected, up to a partly read epoch
    assert b.position.state_dict()["read_samples"] == p.read_samples


def test_moved_shards_resume_and_another_set_is_refused_before_models_load(laion_dir, make_cfg, tmp_path,
                                                                           monkeypatch):  # fmt: skip
    first = tmp_path / "disk-a"
    shutil.copytree(laion_dir, first)
    cfg = _wds(make_cfg, first, "train.max_train_steps=3")
    assert train(cfg, stop_after=2).status == "interrupted"
    moved = tmp_path / "node-local"
    shutil.move(first, moved)  # the same shards on another mount
    # A literal path change and webdataset's ${ROOT} route both resume.
    monkeypatch.setenv("WDS_ROOT", str(moved))
    for shards in (moved, "${ROOT}/{00000..00002}.tar"):
        preflight(_wds(make_cfg, shards, "train.max_train_steps=3"), resume="latest", dry_run=True)
    resumed = train(_wds(make_cfg, "${ROOT}/{00000..00002}.tar", "train.max_train_steps=3"), resume="latest")
    assert resumed.status == "finished" and resumed.step == 3
    # Another shard set (one shard fewer; a shard of another size) is refused by preflight, naming data.shards.
    with pytest.raises(ConfigError, match=r"data.shards=.*3 shards were checkpointed, 2 are listed"):
        preflight(_wds(make_cfg, f"{moved}/{{00000..00001}}.tar", "train.max_train_steps=9"), resume="latest",
                  dry_run=True)  # fmt: skip
    other = tmp_path / "other"
    write_img2dataset_output(other, laion_rows(12, seed=1), per_shard=4, image_size=96)  # bigger tars
    monkeypatch.setenv("WDS_ROOT", str(other))
    with pytest.raises(ConfigError, match=r"data.shards=.*\(00000.tar\) had \d+ bytes, has \d+ now"):
        preflight(_wds(make_cfg, "${ROOT}/{00000..00002}.tar", "train.max_train_steps=9"), resume="latest",
                  dry_run=True)  # fmt: skip


def test_a_lost_shard_is_in_the_run_summary_and_the_cache_manifest(laion_dir, make_cfg, tmp_path, teacher_dir):
    folder = tmp_path / "with-a-bad-shard"
    shutil.copytree(laion_dir, folder)
    (folder / "00001.tar").write_bytes((laion_dir / "00001.tar").read_bytes()[:700])  # cut mid-member
    cfg = _wds(make_cfg, folder, "train.max_train_steps=8")  # more than an epoch
    result = train(cfg)
    summary = json.loads((result.output_dir / "run_summary.json").read_text())
    assert summary["status"] == "finished" and summary["data"] == result.data
    assert [s.split(":")[0] for s in summary["data"]["lost_shards"]] == [str(folder / "00001.tar")]
    assert summary["data"]["truncated_shards"] >= 1

    from lcm_distill.cli.cache import main as cache_main

    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    assert cache_main(["--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "cache"), "--dtype", "fp32"]) == 0
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert [s.split(":")[0] for s in manifest["lost_shards"]] == [str(folder / "00001.tar")]


def test_small_stored_images_are_counted_and_named(laion_dir, make_cfg, caplog):
    caplog.set_level(logging.WARNING)
    result = train(_wds(make_cfg, laion_dir, "train.max_train_steps=1", "data.resolution=16"))  # stored: 12 px
    assert result.data["upscaled_samples"] == 2
    assert "stored smaller than data.resolution=16" in caplog.text and "--image_size 16" in caplog.text
    result = train(_wds(make_cfg, laion_dir, "train.max_train_steps=1", "data.resolution=8", out="r8"))
    assert result.data.get("upscaled_samples", 0) == 0


def test_a_laion_parquet_as_hf_reports_what_the_filters_removed(make_cfg, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lcm_distill.testing.img2dataset import jpeg

    rows = [{**r, "image": {"bytes": jpeg(i, 16), "path": None}} for i, r in enumerate(laion_rows(8))]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "laion.parquet")
    cfg = make_cfg(f"data.dataset={tmp_path / 'laion.parquet'}", "data.caption_column=TEXT", "data.max_punsafe=0.5")
    result = train(cfg)
    assert result.data["filtered_samples"] == sum(r["punsafe"] > 0.5 for r in rows) == 3


def test_the_model_card_of_a_webdataset_run_states_its_data(laion_dir, make_cfg):
    from lcm_distill.engine.outputs import data_description

    text = data_description(_wds(make_cfg, laion_dir, "data.max_punsafe=0.1", "data.min_width=512").data)
    assert text.startswith(f"webdataset {laion_dir}") and "max_punsafe 0.1" in text and "min_width 512" in text


@pytest.mark.parametrize(("count", "warned"), [(3, True), (4, False)])
def test_unequal_reader_shares_are_named(tmp_path, make_cfg, caplog, count, warned):
    from lcm_distill.data import StreamingBatches, shard_source

    write_img2dataset_output(tmp_path / "s", laion_rows(count), per_shard=1, image_size=8)
    cfg = _wds(make_cfg, tmp_path / "s", "data.num_workers=2").data
    caplog.set_level(logging.WARNING)
    StreamingBatches(shard_source(cfg), cfg, batch_size=1, num_workers=2)
    assert ("read up to 2.0x as often" in caplog.text) is warned
