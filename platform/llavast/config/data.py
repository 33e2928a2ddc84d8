"""The `data:` section of a job YAML: which manifest to stream and how the Ray Data pipeline runs.

Frame count and frame size belong to the model (N, the vision tower's square size); they may be written
here for readability, and the pipeline refuses to start when they disagree with the model's config.
Per-worker batch size belongs to the trainer (`train.micro_batch_size`) and is passed to `iter_batches`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from llavast.config.base import Section
from llavast.storage import StorageOptions


class DecodeSection(Section):
    """How samples are decoded and tokenised (`data/pipeline.build_dataset`): training and evaluation alike.

    num_frames, image_size: optional; must match the model's N and square frame size when given.
    max_length: token budget per sample; longer samples lose whole trailing turns, or are dropped.
    decode_concurrency: decoding actors (each fetches media, decodes frames, tokenises).
    decode_batch_size: samples per decode call; decode_num_cpus: CPUs reserved per decoding actor.
        Budget: trainers + decode_concurrency * decode_num_cpus must fit the cluster's CPUs.
    fetch_threads: concurrent media downloads inside one decoding actor (I/O bound).
    label_mask: which tokens the loss learns. "assistant_content" (default): each answer's content, its
        <|im_end|> and newline. "release": as the authors' release (LLaVA-NeXT preprocess_qwen), also each
        assistant header and every <|im_start|>, <|im_end|> and newline token of every turn (see
        docs/data.md, "Tokens").
    frame_resize: how video frames reach the model's size. "decoder" (default): scaled inside the decoder
        (faster); "exact": full-size decode, then PIL bicubic, the release's pixels (see docs/data.md, "Frames").
    """

    num_frames: PositiveInt | None = None
    image_size: PositiveInt | None = None
    max_length: PositiveInt = 32768
    decode_concurrency: PositiveInt = 2
    decode_batch_size: PositiveInt = 8
    decode_num_cpus: float = Field(default=1.0, gt=0.0)
    fetch_threads: PositiveInt = 8
    label_mask: Literal["assistant_content", "release"] = "assistant_content"
    frame_resize: Literal["decoder", "exact"] = "decoder"


class DataConfig(DecodeSection):
    """Streaming ST-Align from an index written by `llavast data index`. The decoding keys (num_frames,
    image_size, max_length, decode_*, fetch_threads, label_mask, frame_resize) are an eval job's `decode`
    section's: see "kind: eval" below.

    manifest: URI of the index folder (holds manifest/, summary.json, quarantine.jsonl).
    storage: endpoint/region of the bucket holding the manifest and the media (credentials: AWS chain).
    prefetch_batches: batches the consumer's iterator prepares ahead of the training step.
    shuffle: each epoch (seeded by seed and epoch) "blocks" shuffles the order of the manifest's row
        groups before they are split between workers, "rows" also shuffles each worker's rows,
        "none" keeps manifest order (see docs/data.md, "Planning").
    """

    manifest: str
    storage: StorageOptions = Field(default_factory=StorageOptions)
    prefetch_batches: int = Field(default=2, ge=0)
    shuffle: Literal["rows", "blocks", "none"] = "rows"
    seed: int = 0
