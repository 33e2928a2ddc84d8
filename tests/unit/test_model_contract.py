"""The model contract: llava_st implements it, the platform reaches models only through it, and the batch
constants (IGNORE_INDEX, MediaKind) have one definition. The layering checks read the source (ast)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

import model_zoo
from model_zoo.contract import IGNORE_INDEX, PLACEHOLDER_VARIABLES, MediaKind, ModelConfig, ModelContract
from model_zoo.llava_st import LlavaSTForCausalLM, tiny_config

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = ROOT / "platform" / "llavast"
MODEL_ZOO = ROOT / "model_zoo"


def _modules(root: Path) -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(), str(path))) for path in sorted(root.rglob("*.py"))]


def _imports(tree: ast.Module) -> list[str]:
    """Every module name an import statement names (`from a import b` gives `a` and `a.b`)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_llava_st_satisfies_the_contract():
    contract = model_zoo.spec("llava_st")
    assert isinstance(contract, ModelContract) and contract.name == "llava_st"
    assert model_zoo.spec("llava_st") is contract
    config = tiny_config()
    assert isinstance(config, ModelConfig)
    assert model_zoo.spec_of(config) is contract
    assert contract.carried_groups <= set(contract.groups)
    for stage in (1, 2, 3):
        assert contract.stage_trainable(stage) <= set(contract.groups)
    with pytest.raises(ValueError, match="not 4"):
        contract.stage_trainable(4)


def test_a_model_missing_a_method_cannot_be_registered():
    class Half(ModelContract):
        name = "half"

        def build(self, source, **overrides):
            raise NotImplementedError

    with pytest.raises(TypeError, match="abstract"):
        Half()


def test_batch_contract_on_the_tiny_config(tiny_tokenizer):
    contract, config = model_zoo.spec("llava_st"), tiny_config()
    assert IGNORE_INDEX == -100
    assert [(k.name, int(k)) for k in MediaKind] == [("TEXT", 0), ("IMAGE", 1), ("VIDEO", 2)]
    assert (MediaKind.TEXT.marker, MediaKind.IMAGE.marker, MediaKind.VIDEO.marker) == (None, "<image>", "<video>")
    assert [contract.visual_token_count(config, k) for k in MediaKind] == [0, config.image_seq_len,
                                                                            config.video_seq_len]
    assert [contract.frames_per_sample(config, k) for k in MediaKind] == [0, 1, config.num_frames]
    for kind in (MediaKind.IMAGE, MediaKind.VIDEO):
        assert tiny_tokenizer.convert_tokens_to_ids(kind.marker) == contract.media_token_id(config, kind)
    with pytest.raises(ValueError):
        contract.media_token_id(config, MediaKind.TEXT)
    ids = contract.placeholder_ids(config)
    assert set(ids) == set(PLACEHOLDER_VARIABLES)
    assert all(tiny_tokenizer.convert_tokens_to_ids(p) == i for p, i in ids.items())


def test_weights_export_and_import_round_trip():
    contract = model_zoo.spec("llava_st")
    torch.manual_seed(0)
    source = LlavaSTForCausalLM(tiny_config())
    torch.manual_seed(1)
    target = LlavaSTForCausalLM(tiny_config())
    exported = contract.export_weights(source, contract.carried_groups)
    assert exported and {contract.group_of(n) for n in exported} == set(contract.carried_groups)
    contract.import_weights(target, exported)
    state = dict(target.named_parameters())
    assert all(torch.equal(state[name], value) for name, value in exported.items())
    with pytest.raises(ValueError, match="does not have"):
        contract.import_weights(target, {"mystery.weight": torch.zeros(1)})
    name = next(iter(exported))
    with pytest.raises(ValueError, match="shape"):
        contract.import_weights(target, {name: torch.zeros(1, 2, 3)})


def test_ignore_index_and_media_kind_are_defined_once():
    ignore, media = [], []
    for root in (PLATFORM, MODEL_ZOO):
        for path, tree in _modules(root):
            for node in ast.walk(tree):
                targets = (node.targets if isinstance(node, ast.Assign)
                           else [node.target] if isinstance(node, ast.AnnAssign) else [])
                for target in targets:
                    names = target.elts if isinstance(target, ast.Tuple) else [target]
                    ignore += [path for n in names if isinstance(n, ast.Name) and n.id == "IGNORE_INDEX"]
                if isinstance(node, ast.ClassDef) and node.name == "MediaKind":
                    media.append(path)
    assert ignore == [MODEL_ZOO / "contract.py"]
    assert media == [MODEL_ZOO / "contract.py"]


def test_the_platform_reaches_models_only_through_the_contract():
    """`model_zoo` (the registry) and `model_zoo.contract` only: never a model's package such as llava_st."""
    internals = {p.name for p in MODEL_ZOO.iterdir() if (p / "__init__.py").is_file()}
    internals |= {p.stem for p in MODEL_ZOO.glob("*.py")} - {"__init__", "contract"}
    assert "llava_st" in internals
    offenders = [(str(path.relative_to(PLATFORM)), name) for path, tree in _modules(PLATFORM)
                 for name in _imports(tree)
                 if name.startswith("model_zoo.") and name.split(".")[1] in internals]
    assert offenders == []


def test_settings_are_config_fields_read_without_the_model():
    """Every declared setting is a LlavaSTConfig field of the declared type whose default is valid; the registry
    gives the same declaration without importing torch (so loading a job stays fast)."""
    import inspect
    import subprocess
    import sys

    from model_zoo.llava_st import LlavaSTConfig

    settings = model_zoo.settings("llava_st")
    assert model_zoo.spec("llava_st").settings is settings
    parameters = inspect.signature(LlavaSTConfig.__init__).parameters
    for name, setting in settings.fields.items():
        assert name in parameters, name
        default = parameters[name].default
        assert isinstance(default, setting.type) and setting.problem(default) is None, (name, default)
    assert settings.check({name: parameters[name].default for name in settings.fields}) == []
    code = "import sys, model_zoo; model_zoo.settings('llava_st'); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        model_zoo.settings("nope")


def test_docs_list_every_setting():
    """docs/training.md's table of model settings names exactly the declared settings."""
    text = (ROOT / "docs" / "training.md").read_text()
    table = text[text.index("## Model settings"):text.index("## Tests")]
    listed = {name for row in table.splitlines() if row.startswith("| `")
              for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert listed == set(model_zoo.settings("llava_st").fields)
