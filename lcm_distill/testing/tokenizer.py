"""A real CLIP BPE tokenizer built offline from the vocabulary file that the open_clip_torch wheel ships.

OpenAI CLIP's byte-level BPE: 256 byte symbols, the same with ``</w>``, one token per merge, then
``<|startoftext|>`` / ``<|endoftext|>``. With all 48,894 merges this is the 49,408-token SD tokenizer (same ids);
``num_merges`` cuts it down for tiny text encoders. No network is touched.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

FULL_MERGES = 49152 - 256 - 2


def bpe_vocab_path() -> Path:
    """Location of ``bpe_simple_vocab_16e6.txt.gz`` inside the installed open_clip package (not imported)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "open_clip_torch is not installed; it ships the CLIP BPE vocabulary the offline tokenizer is built from. "
            "Install it with `pip install open_clip_torch` (pinned in requirements.txt)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the open_clip_torch install; reinstall open_clip_torch.")
    return path


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def write_clip_tokenizer_files(out_dir: str | Path, num_merges: int = FULL_MERGES) -> tuple[Path, Path]:
    """Write vocab.json and merges.txt for a CLIP tokenizer with the first ``num_merges`` merges."""
    if not 0 <= num_merges <= FULL_MERGES:
        raise ValueError(f"num_merges={num_merges} must lie in [0, {FULL_MERGES}].")
    with gzip.open(bpe_vocab_path(), "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")[1 : FULL_MERGES + 1]
    merges = [tuple(line.split()) for line in lines[:num_merges]]
    symbols = list(_bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = out / "vocab.json", out / "merges.txt"
    vocab_file.write_text(json.dumps({tok: i for i, tok in enumerate(vocab_list)}, ensure_ascii=False))
    merges_file.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    return vocab_file, merges_file


def build_clip_tokenizer(out_dir: str | Path, num_merges: int = FULL_MERGES, pad_token: str | None = None):
    """A transformers CLIPTokenizer (max length 77) built from the offline files. Padding: eos as in SD 1.x, or
    ``pad_token`` (SD 2.x pads with ``!``, id 0, as OpenCLIP does)."""
    from transformers import CLIPTokenizer

    vocab_file, merges_file = write_clip_tokenizer_files(out_dir, num_merges)
    vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
    lines = merges_file.read_text(encoding="utf-8").split("\n")[1:]
    merges = [tuple(line.split()) for line in lines if line]
    extra = {"pad_token": pad_token} if pad_token else {}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77, **extra)


def vocab_size(num_merges: int) -> int:
    """Token count of the tokenizer built with ``num_merges`` merges (49,408 for the full one)."""
    return 512 + num_merges + 2
