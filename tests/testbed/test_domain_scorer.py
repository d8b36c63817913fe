"""The LCF domains' prompt-accuracy scorer: caption parsing per domain, a classifier trained on VAE round trips,
and the evaluation flag that points at it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lcm_distill.testbed.domains import SPECS, parse_domain_caption, render_domain, vae_roundtrip, write_domain

ROOT = Path(__file__).parents[2]
VAE = ROOT / "assets" / "testbed" / "teacher-eps" / "vae"


@pytest.mark.parametrize("domain", sorted(SPECS))
def test_every_caption_parses_to_its_object_and_colour(domain):
    _, captions = render_domain(domain, "test", 1)
    spec = SPECS[domain]
    names, rounds = spec.names, spec.per_prompt_scale
    labels = [parse_domain_caption(domain, c) for c in captions]
    prompts = len(spec.colors) * len(names)
    assert len(captions) == rounds * prompts and len(set(labels)) == prompts  # each prompt once a round
    assert labels[0] == (0, 0) and labels[1] == (1, 0)  # captions: colour-major within a round
    assert labels[len(names)] == ((0, 1) if len(spec.colors) > 1 else (0, 0))  # uncoloured: the next round
    assert parse_domain_caption(domain, "a red digit 7") is None or domain in ("shapes_known", "outlines")
    assert parse_domain_caption(domain, "a purple circle") is None


def test_round_trip_classifier_and_its_scorer(tmp_path):
    """A classifier trained (briefly) on VAE round trips is saved with domain.json; load_prompt_accuracy then reads
    shapes captions, rejects digit captions, and scores clean round trips of the test split far above chance."""
    from diffusers import AutoencoderKL

    from lcm_distill.evaluation.imagefolder import read_imagefolder
    from lcm_distill.testbed.scorers import load_prompt_accuracy

    root = write_domain(tmp_path / "shapes", "shapes", train_per_prompt=4, test_per_prompt=2)
    acc = write_domain_classifier_fast(root)
    meta = json.loads((root / "classifier" / "domain.json").read_text())
    assert meta == {"domain": "shapes", "vae": str(VAE)}
    scorer = load_prompt_accuracy(root)
    images, captions = read_imagefolder(root, "test")
    trip = vae_roundtrip(AutoencoderKL.from_pretrained(VAE).eval(), images)
    assert trip.shape == images.shape and trip.min() >= 0.0 and trip.max() <= 1.0
    assert not torch.allclose(trip, images, atol=0.05)  # the testbed VAE cannot draw grey backgrounds: why round trips
    ok = scorer(trip, captions)
    assert ok.mean().item() == pytest.approx(acc["joint"], abs=1e-6) and acc["joint"] > 0.5  # chance: 1/30
    assert scorer.last_details["color_accuracy"] > 0.8
    with pytest.raises(ValueError, match="'shapes' domain"):
        scorer(trip[:1], ["a red digit 3"])


def write_domain_classifier_fast(root: Path) -> dict[str, float]:
    from lcm_distill.testbed.domains import write_domain_classifier

    return write_domain_classifier(root, "shapes", VAE, steps=150)


def test_evaluate_flag_names_the_folder_without_a_classifier(tmp_path, capsys):
    from lcm_distill.cli.evaluate import main

    model = tmp_path / "m"
    model.mkdir()
    (model / "model_index.json").write_text("{}")  # passes the model check; the flag check must stop the run
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n")
    for extra, what in ((["--prompt-accuracy", "testbed", "--prompt-accuracy-dir", str(tmp_path)],
                         f"--prompt-accuracy-dir {tmp_path}: no classifier"),
                        (["--prompt-accuracy", "none", "--prompt-accuracy-dir", str(tmp_path)], "drop one")):
        with pytest.raises(SystemExit):
            main(["--model", str(model), "--kind", "lcm", "--out", str(tmp_path / "o"), "--prompts", str(prompts),
                  "--fid-features", "none", *extra])
        assert what in capsys.readouterr().err
