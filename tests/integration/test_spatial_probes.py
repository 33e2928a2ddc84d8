"""Spatial probes: the tiny LLaVA-ST learns to read WHERE from pixels (benchmarks/spatial_probe.py).

Each probe trains the untrained tiny model through the project's own model, tokenizer, data path
(`PrepareSamples` + `LlavaSTCollate`) and synthetic renderer, with fixed seeds, in a plain torch loop (a few
hundred steps, about two minutes each on 2 CPU cores). A change that breaks the spatial path (the box placeholders,
the quantiser, the resize, the patch order, LAPE's rows and columns) makes one of them fail; the numbers in the
comments are what they reached when written (docs/results.md has the ablation they come from).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.spatial_probe import Recipe, coordinate_loss, run_probe, score, tiny_base, train

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_base(tmp_path_factory.mktemp("probe-base"))


@pytest.fixture(autouse=True, scope="module")
def _threads():
    """The same thread count on every machine, so a fixed seed gives the same run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("task", ["side", "height"])
def test_left_right_and_top_bottom_are_read_from_pixels(task: str, base: Path, tmp_path: Path) -> None:
    """Warm-up on large shapes (half-size 14-22 px), then asked about held-out SMALL ones (5-8 px, the synthetic
    benchmark's): >= 95% (98.3% for side when written; one answer for every image scores about 50%)."""
    recipe = Recipe(task=task, train_images=2000, eval_images=120, steps=400, radius=(14, 22), lape_init="sincos")
    result = run_probe(recipe, base, tmp_path)
    assert result.constant_score < 60
    assert result.eval_score >= 95, result


@pytest.fixture(scope="module")
def memorised(base: Path, tmp_path_factory: pytest.TempPathFactory):
    """16 images of the same red square (half-size 8 px) in 16 places: only WHERE tells them apart, so they cannot
    be memorised by colour, shape or size."""
    recipe = Recipe(task="rec", train_images=0, eval_images=16, steps=400, radius=(8, 8), same_shape=True,
                    lape_init="sincos")
    return recipe, train(recipe, base, tmp_path_factory.mktemp("memorise"))


def test_boxes_of_16_images_are_memorised(memorised) -> None:
    """Their boxes in coordinate tokens: Acc@0.5 >= 90% on them (100%, mIoU 95, when written)."""
    recipe, trained = memorised
    assert score(trained.model, trained.train, recipe.task, trained.collate).right >= 90


def test_scrambled_patches_change_the_coordinate_loss(memorised) -> None:
    """The memorised model reads position: the same images with their 2x2-pixel tiles permuted (every visual token
    keeps its content, at another token's position) answer far worse. The excess coordinate loss (soft CE minus
    the soft labels' own entropy) was 0.05 as drawn and 1.03 scrambled when written. A model blind to where a token
    sits (LAPE's rows and columns lost, patches reordered) would score both the same."""
    _, trained = memorised
    drawn = coordinate_loss(trained.model, trained.train, trained.collate, scramble=False)
    scrambled = coordinate_loss(trained.model, trained.train, trained.collate, scramble=True)
    assert drawn < 0.2 and scrambled > 5 * drawn and scrambled > 0.5, (drawn, scrambled)
