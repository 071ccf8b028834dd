"""Weight averaging of two checkpoints (crm_cli.training.averaging)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_tiny_model

from crm_cli.checkpoint import load_model, save_weights
from crm_cli.config import Provenance
from crm_cli.training.averaging import average_checkpoints, average_state, main


def test_average_state_hand_computed() -> None:
    base = {"w": torch.tensor([1.0, 2.0]), "bn.running_var": torch.tensor([4.0]),
            "bn.num_batches_tracked": torch.tensor(7)}
    tuned = {"w": torch.tensor([3.0, -2.0]), "bn.running_var": torch.tensor([0.0]),
             "bn.num_batches_tracked": torch.tensor(99)}
    blended = average_state(base, tuned, 0.25)
    assert blended["w"].tolist() == [1.5, 1.0]  # 0.75 * 1 + 0.25 * 3, 0.75 * 2 + 0.25 * -2
    assert blended["bn.running_var"].tolist() == [3.0]
    assert blended["bn.num_batches_tracked"].item() == 7  # integer buffers are the base's
    assert blended["w"].dtype == torch.float32


def test_average_state_refuses_mismatches() -> None:
    with pytest.raises(ValueError, match="alpha must be in"):
        average_state({}, {}, 1.5)
    with pytest.raises(ValueError, match="different tensors"):
        average_state({"a": torch.zeros(1)}, {"b": torch.zeros(1)}, 0.5)
    with pytest.raises(ValueError, match="shapes differ"):
        average_state({"a": torch.zeros(1)}, {"a": torch.zeros(2)}, 0.5)


def test_average_checkpoints_writes_the_blend(tmp_path: Path) -> None:
    paths = []
    for seed in (0, 1):
        paths.append(tmp_path / f"m{seed}.safetensors")
        save_weights(make_tiny_model(seed), paths[-1], half=False)
    out = tmp_path / "avg.safetensors"
    main([str(paths[0]), str(paths[1]), "--alpha", "0.5", "-o", str(out)])
    blended, info = load_model(out)  # the sidecar's sha256 is checked
    first, second = load_model(paths[0])[0].state_dict(), load_model(paths[1])[0].state_dict()
    state = blended.state_dict()
    key = next(k for k, v in first.items() if v.is_floating_point() and v.numel() > 4 and not torch.equal(v, second[k]))
    # fp16 storage: compare to the hand-made mean at half precision.
    assert torch.allclose(state[key], ((first[key] + second[key]) / 2).half().float(), atol=1e-3)
    assert "x0.5" in info.provenance["init"]
    assert info.provenance["notes"] == ("weight average of two checkpoints; base: no provenance recorded; "
                                        "tuned: no provenance recorded")
    # alpha = 0 reproduces the base (at fp16 storage precision).
    same = tmp_path / "same.safetensors"
    average_checkpoints(paths[0], paths[1], 0.0, same)
    assert torch.allclose(load_model(same)[0].state_dict()[key], first[key].half().float())


def test_a_blend_records_how_both_parents_were_trained(tmp_path: Path) -> None:
    base, tuned, out = tmp_path / "base.safetensors", tmp_path / "tuned.safetensors", tmp_path / "avg.safetensors"
    save_weights(make_tiny_model(0), base, Provenance(command="crm train --out a", data="DATA/duts-tr", steps=2100))
    save_weights(make_tiny_model(1), tuned, Provenance(command="crm train --out b --init base.safetensors",
                                                       data="/home/me/DATA/duts-tr", steps=600))
    average_checkpoints(base, tuned, 0.25, out)
    provenance = load_model(out)[1].provenance
    assert provenance["data"] == "DATA/duts-tr"  # one data set under two spellings, named once, as the base has it
    assert provenance["notes"] == ("weight average of two checkpoints; base: 2100 steps of `crm train --out a`; "
                                   "tuned: 600 steps of `crm train --out b --init base.safetensors`")
    assert "base.safetensors sha256=" in provenance["init"] and provenance["init"].endswith("x0.25")
