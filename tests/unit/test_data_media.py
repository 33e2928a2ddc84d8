"""Frame sampling by the released formula, and decoding (decord, PyAV fallback, PIL) to S x S uint8."""

from __future__ import annotations

import numpy as np
import pytest

from llavast.data import media
from llavast.data.media import MediaDecodeError, decode_image, decode_video, frame_indices
from llavast.data.synth_media import MovingObject, encode_image, encode_mp4, render_frame


def formula(n: int, s: int, e: int) -> list[int]:
    duration = e - s + 1
    return [s + round(i / (n - 1) * (duration - 1)) for i in range(n)]


@pytest.mark.parametrize(("total", "n", "window", "expected"), [
    (10, 4, None, [0, 3, 6, 9]),
    (10, 4, (2, 5), [2, 3, 4, 5]),
    (10, 4, (3, 4), [3, 3, 4, 4]),  # window shorter than N: frames repeat
    (6, 5, None, [0, 1, 2, 4, 5]),  # 2.5 rounds half to even, as Python's round
    (10, 3, (4, 50), [4, 6, 9]),  # window end clipped to the last frame
    (10, 1, (2, 6), [4]),
])
def test_frame_indices_examples(total, n, window, expected) -> None:
    assert frame_indices(total, n, window) == expected


@pytest.mark.parametrize("n", [4, 16, 100])
@pytest.mark.parametrize(("total", "window"), [(29, None), (300, (17, 250)), (48, (10, 20)), (7, (0, 6))])
def test_frame_indices_formula(total, window, n) -> None:
    s, e = window or (0, total - 1)
    got = frame_indices(total, n, window)
    assert got == formula(n, s, e)
    assert len(got) == n and got[0] == s and got[-1] == e and got == sorted(got)


def test_window_after_end_fails() -> None:
    with pytest.raises(MediaDecodeError, match="starts after"):
        frame_indices(10, 4, (12, 20))


@pytest.fixture(scope="module")
def clip() -> tuple[bytes, np.ndarray]:
    obj = MovingObject("red", "square", 8, 0, 19, (10.0, 10.0), (80.0, 50.0))
    frames = np.stack([render_frame([obj], f, 96, 64) for f in range(20)])
    return encode_mp4(frames), frames


def test_decode_video_matches_rendered_frames(clip) -> None:
    data, frames = clip
    got = decode_video(data, n=4, size=32, window=(2, 17))
    assert got.shape == (4, 32, 32, 3) and got.dtype == np.uint8
    want = media.resize_square(frames[frame_indices(20, 4, (2, 17))], 32)
    assert np.abs(got.astype(int) - want.astype(int)).mean() < 8  # H.264 is lossy


def test_pyav_fallback_agrees_with_decord(clip) -> None:
    data, _ = clip
    a = media._decode_decord(data, 6, (1, 18), 54)
    b = media._decode_pyav(data, 6, (1, 18), 54)
    assert a.shape == b.shape == (6, 54, 54, 3)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 3


@pytest.mark.parametrize("size", [48, 54, 384])  # decord's scaler rejects 48: the PIL path takes over
def test_decode_sizes(clip, size: int) -> None:
    data, frames = clip
    got = decode_video(data, n=3, size=size)
    want = media.resize_square(frames[frame_indices(20, 3)], size)
    assert got.shape == (3, size, size, 3) and np.abs(got.astype(int) - want.astype(int)).mean() < 8


def test_corrupt_video_raises_decode_error(clip) -> None:
    data, _ = clip
    for bad in (data[: len(data) // 3], b"\x00" * 1000, b""):
        with pytest.raises(MediaDecodeError):
            decode_video(bad, n=4, size=16)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_decode_image(fmt: str) -> None:
    obj = MovingObject("blue", "circle", 10, 0, 0, (30.0, 30.0), (30.0, 30.0))
    array = render_frame([obj], 0, 96, 64)
    got = decode_image(encode_image(array, fmt), 54)
    assert got.shape == (1, 54, 54, 3) and got.dtype == np.uint8
    want = media.resize_square(array[None], 54)
    assert np.abs(got.astype(int) - want.astype(int)).mean() < 4
    with pytest.raises(MediaDecodeError):
        decode_image(b"not an image", 54)


def _pil(frames: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.BICUBIC)) for f in frames])


def test_exact_resize_is_full_size_decode_then_pil_bicubic() -> None:
    """`resize="exact"` gives the release's pixels: every sampled frame decoded full size, then PIL bicubic
    to S x S; `resize="decoder"` (scaled inside FFmpeg) is close to it but not equal."""
    import io

    import decord

    obj = MovingObject("red", "square", 40, 0, 19, (40.0, 40.0), (260.0, 180.0))
    data = encode_mp4(np.stack([render_frame([obj], f, 320, 240) for f in range(20)]))
    indices = frame_indices(20, 5, (1, 18))
    full = decord.VideoReader(io.BytesIO(data), num_threads=1).get_batch(indices).asnumpy()
    assert full.shape == (5, 240, 320, 3)
    exact = decode_video(data, n=5, size=54, window=(1, 18), resize="exact")
    assert np.array_equal(exact, _pil(full, 54))
    decoder = decode_video(data, n=5, size=54, window=(1, 18))
    assert not np.array_equal(decoder, exact) and np.abs(decoder.astype(int) - exact.astype(int)).mean() < 4
    with pytest.raises(ValueError, match="resize"):
        decode_video(data, n=5, size=54, resize="nearest")


def test_exact_resize_falls_back_to_pyav_full_size(clip) -> None:
    """decord cannot copy out this 96 x 64 clip at full size (a row-alignment limit): PyAV decodes it full
    size and PIL resizes, the same pixels as the release's path."""
    data, _ = clip
    full = media._decode_pyav(data, 5, (1, 18), None)
    assert full.shape == (5, 64, 96, 3)
    assert np.array_equal(decode_video(data, n=5, size=54, window=(1, 18), resize="exact"), _pil(full, 54))
