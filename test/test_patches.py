"""Every runtime patch of torch/ESPnet goes through storage.patches, is listed while active,
and is undone afterwards."""

import ast
from pathlib import Path

import torch

from espnet_mtla.storage.patches import PATCHES, active_patches, patched

PACKAGE = Path(__file__).resolve().parent.parent / "espnet_mtla"


class Base:
    def greet(self):
        return "base"


class Child(Base):
    pass


def test_patched_restores_and_lists():
    before = active_patches()  # ESPnet's registration, where an earlier test imported it
    with patched(Child, "greet", lambda self: "patched"):
        assert Child().greet() == "patched"
        assert active_patches() == before + ["Child.greet"]
    assert Child().greet() == "base" and "greet" not in vars(Child)  # inherited again, not copied
    assert active_patches() == before


def test_safe_loading_and_atomic_saving_patch_through_the_helper():
    from espnet_mtla.storage.safe_load import safe_loading
    from espnet_mtla.storage.training_files import atomic_torch_save

    load, save, before = torch.load, torch.save, active_patches()
    with safe_loading(), atomic_torch_save():
        assert active_patches() == before + ["torch.load", "torch.save"]
        assert torch.load is not load and torch.save is not save
    assert torch.load is load and torch.save is save and active_patches() == before


def test_no_attribute_of_another_package_is_assigned_outside_the_helper():
    """``x.y = ...`` where x is an imported module or class of torch/ESPnet/nltk: only patches.py may."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "patches.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {alias.asname or alias.name.split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names
                    if (getattr(node, "module", None) or alias.name).split(".")[0] in ("torch", "espnet2", "nltk")}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                            and target.value.id in imported):
                        offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, offenders
    assert "torch.load" in PATCHES and len(PATCHES) == len(set(PATCHES))
