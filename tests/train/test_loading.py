"""What a checkpoint may be loaded into, and train/eval modes (dropout on in training only)."""
import json

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor

from locmoe_ms.data.dataset import PackedSplit
from locmoe_ms.errors import UserInputError
from locmoe_ms.model.network import build_model
from locmoe_ms.train import checkpoint
from locmoe_ms.job import build_training
from locmoe_ms.train.evaluation import evaluate
from tests.conftest import small_config


def _save(net, path, extra=None, cfg=None):
    entries = {p.name: Parameter(p.data.copy(), name=p.name) for p in net.get_parameters()}
    for name, value in (extra or {}).items():
        entries[name] = Parameter(Tensor(value), name=name)
    meta = {"config_json": json.dumps(cfg.to_dict())} if cfg else {}
    return checkpoint.save(entries, path, 1, meta, keep=1)


def test_a_checkpoint_parameter_without_a_place_is_refused(tmp_path):
    cfg = small_config()
    path = _save(build_model(cfg), tmp_path, {"network.blocks.9.ffn.w_in.weight": np.ones((2, 2), np.float32),
                                              "adam_m.network.word_embedding": np.ones((2, 2), np.float32)})
    params, _ = checkpoint.load(path)
    with pytest.raises(UserInputError, match=r"2 checkpoint parameters have no place .*network.blocks.9"):
        checkpoint.restore(build_model(cfg), params, path)
    with pytest.raises(UserInputError, match=r"1 checkpoint parameters have no place .*network.blocks.9"):
        checkpoint.restore(build_model(cfg), params, path, model_only=True)  # optimizer state is ignored there
    params.pop("network.blocks.9.ffn.w_in.weight")
    checkpoint.restore(build_model(cfg), params, path, model_only=True)


def test_model_defining_keys_must_match_and_others_may_change(tmp_path):
    saved = small_config("locmoe")
    meta = {"config_json": json.dumps(saved.to_dict())}
    assert checkpoint.model_differences(meta, small_config("locmoe", train={"learning_rate": 0.1},
                                                           moe_config={"capacity_factor": 2.0})) == []
    other = small_config("hash", model={"num_layers": 3})
    assert checkpoint.model_differences(meta, other) == ["model.num_layers: saved 2, now 3",
                                                         "moe_config.router: saved 'locmoe', now 'hash'"]
    with pytest.raises(UserInputError, match=r"x.ckpt: saved for another model \(model.num_layers: saved 2, now 3; "
                                             r"moe_config.router: saved 'locmoe', now 'hash'\)"):
        checkpoint.check_same_model(tmp_path / "x.ckpt", meta, other)


def test_training_runs_with_dropout_and_evaluation_without():
    cfg = small_config(model={"dropout": 0.5})
    ms.set_seed(0)
    training = build_training(cfg)
    net = training.loss_net
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 200, (8, 17)).astype(np.int32)
    domains = np.zeros(8, np.int32)
    assert net.training, "the train step must put the network in train mode"
    a, b = (float(net(Tensor(tokens[:4]), Tensor(domains[:4]))[1].asnumpy()) for _ in range(2))
    assert a != b, "dropout draws new masks in train mode"
    split = PackedSplit(tokens, domains)
    first, second = evaluate(net, split, cfg), evaluate(net, split, cfg)
    assert first == second and net.training, "evaluation is deterministic and restores train mode"
    net.set_train(False)
    expected = np.exp(np.mean([float(net(Tensor(tokens[r]), Tensor(domains[r]))[1].asnumpy())
                               for r in (slice(0, 4), slice(4, 8))]))
    assert first == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_resume_is_exact_without_dropout_only(dropout):
    """A resumed run restores every parameter, but MindSpore keeps dropout's random state inside the compiled
    graph, where no checkpoint reaches it: with dropout the resumed step draws other masks (README says so)."""
    cfg = small_config(model={"dropout": dropout})
    rng = np.random.default_rng(2)
    batches = [(rng.integers(0, 200, (4, 17)).astype(np.int32), np.zeros(4, np.int32)) for _ in range(2)]
    ms.set_seed(0)
    unbroken = build_training(cfg)
    unbroken.step(*unbroken.inputs(*batches[0], 1))
    state = {p.name: Parameter(p.data.copy(), name=p.name) for p in unbroken.step.get_parameters()}
    expected = float(unbroken.step(*unbroken.inputs(*batches[1], 2))[0].asnumpy())
    ms.set_seed(0)
    resumed = build_training(cfg)
    checkpoint.restore(resumed.step, state, "state")
    got = float(resumed.step(*resumed.inputs(*batches[1], 2))[0].asnumpy())
    assert (got == expected) == (dropout == 0.0), (got, expected)


@pytest.mark.parametrize("value,expected", [(None, 0), ("3", 3), ("x", None), ("-1", None), ("5000", None)])
def test_device_id_comes_from_the_launchers_environment(monkeypatch, value, expected):
    from locmoe_ms.train.device import device_id
    if value is None:
        monkeypatch.delenv("DEVICE_ID", raising=False)
    else:
        monkeypatch.setenv("DEVICE_ID", value)
    if expected is None:
        with pytest.raises(UserInputError, match=rf"^DEVICE_ID = '{value}': must be an integer 0\.\.4095"):
            device_id()
    else:
        assert device_id() == expected
