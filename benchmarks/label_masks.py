"""Supervised tokens per sample under the two label masks (`data.label_mask`), on synthetic ST-Align.

    .venv/bin/python -m benchmarks.label_masks [--out benchmarks/results/label_masks.json]

Writes the synthetic ST-Align (`llavast data synth`, default spec), tokenises every annotation record of every
source with the tiny model's tokenizer under "assistant_content" and "release", and reports per source: the
samples, the mean supervised tokens under each mask, and the share of the release's supervised tokens that
are template tokens (headers, <|im_start|>, <|im_end|>, newlines), which carry no answer. Prints a table and
writes JSON; it is not a test.

The tiny tokenizer spells "assistant" in several pieces where Qwen2 has one token, so its release count holds
(pieces - 1) more tokens per answer than Qwen2's; the "release, Qwen2" column takes them out. Every other
template token (<|im_start|>, <|im_end|>, the newlines) is one token in both.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "label_masks.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from llavast import storage
    from llavast.data.annotations import read_annotations
    from llavast.data.records import media_of
    from llavast.data.synth import synthesize
    from llavast.data.tokenize import LABEL_MASKS, ConversationTokenizer
    from llavast.storage import StorageOptions
    from model_zoo.contract import IGNORE_INDEX
    from model_zoo.llava_st import build_tiny_tokenizer, tiny_config
    from model_zoo.llava_st.vocab import add_coordinate_tokens

    load_start = os.getloadavg()
    config = tiny_config()
    tokenizer = build_tiny_tokenizer()
    add_coordinate_tokens(tokenizer, config)
    tokenizers = {mask: ConversationTokenizer(tokenizer, config, 32768, mask) for mask in LABEL_MASKS}
    root = tempfile.mkdtemp(prefix="label_masks_")
    synthesize(root, StorageOptions())
    rows = []
    extra_pieces = len(tokenizer.encode("assistant", add_special_tokens=False)) - 1
    masks = (*LABEL_MASKS, "release_qwen2")
    for uri in sorted(storage.list_files(storage.join(root, "annotations"), StorageOptions())):
        counts: dict[str, list[int]] = {mask: [] for mask in masks}
        for record in read_annotations(uri, StorageOptions()):
            kind, _ = media_of(record)
            for mask, tok in tokenizers.items():
                sample = tok(record["conversations"], record.get("variables") or {}, kind)
                counts[mask].append(int((sample.labels != IGNORE_INDEX).sum()))
            answers = sum(turn["from"] == "gpt" for turn in record["conversations"])
            counts["release_qwen2"].append(counts["release"][-1] - extra_pieces * answers)
        n = len(counts["release"])
        mean = {mask: sum(values) / n for mask, values in counts.items()}
        rows.append({"source": Path(uri).stem, "samples": n, **mean,
                     "template_share_of_release_qwen2": 1 - mean["assistant_content"] / mean["release_qwen2"]})
    samples = sum(r["samples"] for r in rows)
    total = {mask: sum(r[mask] * r["samples"] for r in rows) / samples for mask in masks}

    print(f"{'source':15s}{'samples':>8s}{'assistant_content':>19s}{'release':>9s}{'release, Qwen2':>16s}"
          f"{'template share':>16s}")
    for r in [*rows, {"source": "all", "samples": samples, **total,
                      "template_share_of_release_qwen2": 1 - total["assistant_content"] / total["release_qwen2"]}]:
        print(f"{r['source']:15s}{r['samples']:8d}{r['assistant_content']:19.1f}{r['release']:9.1f}"
              f"{r['release_qwen2']:16.1f}{r['template_share_of_release_qwen2']:16.0%}")
    results = {"machine": {"cpus": os.cpu_count(), "load_avg_at_start": load_start, "load_avg_at_end": os.getloadavg()},
               "date": time.strftime("%Y-%m-%d"), "tokenizer": "tiny (model_zoo.llava_st.build_tiny_tokenizer)",
               "assistant_extra_pieces": extra_pieces, "per_source": rows, "mean_supervised_tokens": total}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
