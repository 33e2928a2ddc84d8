"""Decoding media bytes into uint8 frames of the model's square size (no torchvision).

Videos: N frame indices by the released formula over the clip or its split window, decoded with decord,
falling back to PyAV when decord cannot open or seek the stream. How frames reach S x S (`resize`):
    "decoder"  both decoders scale inside FFmpeg (swscale; faster); where decord's scaler refuses a size,
               decord decodes full size and PIL resizes
    "exact"    full-size decode, then PIL bicubic per frame: the release's pixels
Images: PIL, bicubic. The aspect ratio is not kept (the release's square resize).
Frames stay uint8; the float normalisation happens in the collate, the last step, so frames travel at a
quarter of the bytes.
"""

from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)


class MediaDecodeError(Exception):
    """A media object could not be turned into frames; the sample is dropped and counted, never retried."""


def frame_indices(total: int, n: int, window: tuple[int, int] | None = None) -> list[int]:
    """N indices `s + round(i / (N - 1) * (duration - 1))` in the window [s, e] (inclusive) of a clip.

    The window defaults to the whole clip and is clipped to its last frame (annotations often count one
    frame more than a decoder finds). Indices repeat when the window is shorter than N.
    """
    if total <= 0:
        raise MediaDecodeError("the video has no frames")
    s, e = window if window is not None else (0, total - 1)
    if s >= total:
        raise MediaDecodeError(f"split window [{s}, {e}] starts after the video's last frame {total - 1}")
    e = min(e, total - 1)
    duration = e - s + 1
    if n == 1:
        return [s + (duration - 1) // 2]
    return [s + round(i / (n - 1) * (duration - 1)) for i in range(n)]


def resize_square(frames: np.ndarray, size: int) -> np.ndarray:
    """(F, H, W, 3) uint8 -> (F, size, size, 3) uint8, bicubic, aspect ratio not kept (no anyres)."""
    if frames.shape[1] == size and frames.shape[2] == size:
        return np.ascontiguousarray(frames)
    out = np.empty((frames.shape[0], size, size, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        out[i] = np.asarray(Image.fromarray(frame).resize((size, size), Image.Resampling.BICUBIC))
    return out


def _decode_decord(data: bytes, n: int, window: tuple[int, int] | None, size: int | None) -> np.ndarray:
    """decord, scaling inside the decoder when `size` is given (full size otherwise)."""
    import decord

    scale = {"width": size, "height": size} if size else {}
    reader = decord.VideoReader(io.BytesIO(data), num_threads=1, **scale)
    indices = frame_indices(len(reader), n, window)
    return reader.get_batch(indices).asnumpy()


def _decode_pyav(data: bytes, n: int, window: tuple[int, int] | None, size: int | None) -> np.ndarray:
    """Sequential decode up to the last needed frame; slower than decord's seeking, but tolerant. Scales
    inside the decoder when `size` is given (full size otherwise)."""
    import av

    def rgb(frame: av.VideoFrame) -> np.ndarray:
        if size is None:
            return frame.to_ndarray(format="rgb24")
        return frame.reformat(width=size, height=size, format="rgb24", interpolation="BICUBIC").to_ndarray()

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        total = stream.frames
        frames: list[np.ndarray] = []
        if total <= 0:  # container does not say: decode everything first
            frames = [rgb(f) for f in container.decode(stream)]
            total = len(frames)
            return np.stack([frames[i] for i in frame_indices(total, n, window)])
        indices = frame_indices(total, n, window)
        wanted, last = set(indices), max(indices)
        by_index: dict[int, np.ndarray] = {}
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                by_index[i] = rgb(frame)
            if i >= last:
                break
    if len(by_index) < len(wanted):  # the header over-counted frames: clip to what was decoded
        if not by_index:
            raise MediaDecodeError("PyAV decoded no frames")
        return np.stack([by_index[min(by_index, key=lambda k: abs(k - i))] for i in indices])
    return np.stack([by_index[i] for i in indices])


FRAME_RESIZES = ("decoder", "exact")


def decode_video(data: bytes, n: int, size: int, window: tuple[int, int] | None = None,
                 resize: str = "decoder") -> np.ndarray:
    """(n, size, size, 3) uint8 frames of an encoded video; raises MediaDecodeError when both decoders fail.
    `resize`: "decoder" (scale inside the decoder) or "exact" (full-size decode + PIL bicubic, the release's)."""
    errors = []
    if resize == "decoder":  # decord's own scaler rejects a few sizes (e.g. 48 px): then full size + PIL
        attempts = (("decord", _decode_decord, size), ("decord+PIL", _decode_decord, None),
                    ("pyav", _decode_pyav, size))
    elif resize == "exact":
        attempts = (("decord+PIL", _decode_decord, None), ("pyav+PIL", _decode_pyav, None))
    else:
        raise ValueError(f"resize {resize!r}: expected one of {', '.join(FRAME_RESIZES)}")
    for name, decoder, scale in attempts:
        try:
            return resize_square(decoder(data, n, window, scale), size)
        except MediaDecodeError:
            raise
        except Exception as exc:  # noqa: BLE001 - decoders raise anything on corrupt input
            errors.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:150]}")
    raise MediaDecodeError("; ".join(errors))


def decode_image(data: bytes, size: int) -> np.ndarray:
    """(1, size, size, 3) uint8 of an encoded image (any PIL format; alpha and palettes become RGB)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
            return np.asarray(rgb)[None]
    except Exception as exc:  # noqa: BLE001
        raise MediaDecodeError(f"image: {type(exc).__name__}: {exc}") from exc
