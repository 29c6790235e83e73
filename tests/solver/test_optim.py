"""Each solver type's first updates against Caffe's update rules, written out by hand."""

import numpy as np
import pytest
import torch

from netcfg.solver.optim import OPTIMIZERS, apply_l1, make_optimizer, set_learning_rate

W0 = np.array([1.0, -2.0, 0.5, 0.0])
A = np.array([0.5, 3.0, -1.0, 2.0])
B = np.array([0.1, -0.2, 0.3, 0.4])
BASE_LR, LR_MULT, DECAY_MULT, WEIGHT_DECAY = 0.1, 1.5, 2.0, 0.01


def grad(w):
    return A * w + B  # the gradient of sum(A * w^2 / 2 + B * w)


def caffe_updates(type, steps, *, momentum, l1=False, delta=None):
    """Caffe's SGDSolver::ApplyUpdate (Regularize + ComputeUpdateValue) in float64."""
    rate, decay = BASE_LR * LR_MULT, WEIGHT_DECAY * DECAY_MULT
    w, h, u, h2 = W0.copy(), np.zeros(4), np.zeros(4), np.zeros(4)
    for it in range(steps):
        g = grad(w)
        if type != "AdamW":  # Caffe's Regularize, coupled to the gradient
            g = g + decay * (np.sign(w) if l1 else w)
        if type == "SGD":
            h = rate * g + momentum * h
            w = w - h
        elif type == "Nesterov":
            h_prev = h
            h = momentum * h + rate * g
            w = w - ((1 + momentum) * h - momentum * h_prev)
        elif type == "Adam":
            b1, b2, delta, t = 0.9, 0.999, delta or 1e-8, it + 1
            h = b1 * h + (1 - b1) * g
            h2 = b2 * h2 + (1 - b2) * g * g
            correction = np.sqrt(1 - b2**t) / (1 - b1**t)
            w = w - rate * correction * h / (np.sqrt(h2) + delta)
        elif type == "AdamW":  # not Caffe: Loshchilov & Hutter's decoupled decay
            b1, b2, delta, t = 0.9, 0.999, 1e-8, it + 1
            w = w * (1 - rate * decay)
            h = b1 * h + (1 - b1) * g
            h2 = b2 * h2 + (1 - b2) * g * g
            m_hat, v_hat = h / (1 - b1**t), h2 / (1 - b2**t)
            w = w - rate * m_hat / (np.sqrt(v_hat) + delta)
        elif type == "RMSProp":
            rms_decay, delta = 0.99, 1e-8
            h = rms_decay * h + (1 - rms_decay) * g * g
            w = w - rate * g / (np.sqrt(h) + delta)
        elif type == "AdaGrad":
            delta = 1e-8
            h = h + g * g
            w = w - rate * g / (np.sqrt(h) + delta)
        elif type == "AdaDelta":
            m, delta = 0.95, 1e-6
            h = m * h + (1 - m) * g * g
            dx = g * np.sqrt((u + delta) / (h + delta))
            u = m * u + (1 - m) * dx * dx
            w = w - rate * dx
    return w


def torch_updates(type, steps, *, momentum, l1=False, delta=None):
    w = torch.tensor(W0, requires_grad=True)
    group = {"params": [w], "names": ["ip1.weight"], "lr_mult": LR_MULT, "decay_mult": DECAY_MULT}
    opt = make_optimizer(
        type, [group], base_lr=BASE_LR, momentum=momentum, weight_decay=WEIGHT_DECAY,
        regularization_type="L1" if l1 else "L2", delta=delta,
    )
    for it in range(steps):
        w.grad = torch.tensor(grad(w.detach().numpy()))
        set_learning_rate(opt, BASE_LR, it)
        if l1:
            apply_l1(opt, WEIGHT_DECAY)
        opt.step()
    return w.detach().numpy()


MOMENTUM = {"SGD": 0.9, "Nesterov": 0.9}  # the rest use their defaults


@pytest.mark.parametrize("type", sorted(OPTIMIZERS))
@pytest.mark.parametrize("steps", [1, 2])
def test_updates_match_caffe(type, steps):
    momentum = MOMENTUM.get(type)
    got = torch_updates(type, steps, momentum=momentum)
    want = caffe_updates(type, steps, momentum=momentum)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert not np.allclose(got, W0)


def test_adam_adds_delta_before_the_bias_correction_as_caffe():
    # a delta near the gradients' size shows where it goes: a fixed torch eps is Caffe's delta
    # times sqrt(1 - momentum2 ^ t), 0.03 at t = 1 (set_learning_rate sets eps per step)
    got = torch_updates("Adam", 3, momentum=None, delta=0.5)
    np.testing.assert_allclose(got, caffe_updates("Adam", 3, momentum=None, delta=0.5), rtol=1e-12)


@pytest.mark.parametrize("type", ["SGD", "Nesterov", "AdaGrad"])
def test_l1_decay_matches_caffe(type):
    momentum = MOMENTUM.get(type)
    got = torch_updates(type, 2, momentum=momentum, l1=True)
    np.testing.assert_allclose(got, caffe_updates(type, 2, momentum=momentum, l1=True), rtol=1e-12)


def test_apply_l1_adds_decay_times_sign():
    w = torch.tensor([2.0, -3.0, 0.0], requires_grad=True)
    b = torch.tensor([1.0], requires_grad=True)  # decay_mult 0: untouched
    no_grad = torch.tensor([1.0], requires_grad=True)  # no grad: skipped
    opt = make_optimizer("SGD", [
        {"params": [w, no_grad], "names": ["w", "n"], "lr_mult": 1, "decay_mult": 2},
        {"params": [b], "names": ["b"], "lr_mult": 1, "decay_mult": 0},
    ], base_lr=0.1, weight_decay=0.5, regularization_type="L1")
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.0]
    w.grad, b.grad = torch.zeros(3), torch.zeros(1)
    apply_l1(opt, 0.5)
    assert w.grad.tolist() == [1.0, -1.0, 0.0]
    assert b.grad.tolist() == [0.0]
    assert no_grad.grad is None


def test_groups_carry_lr_mult_and_decay_mult():
    w, b, frozen = (torch.zeros(2, requires_grad=True) for _ in range(3))
    opt = make_optimizer("SGD", [
        {"params": [w], "names": ["conv1.weight"], "lr_mult": 1, "decay_mult": 1},
        {"params": [b], "names": ["conv1.bias"], "lr_mult": 2, "decay_mult": 0},
        {"params": [frozen], "names": ["conv0.weight"], "lr_mult": 0, "decay_mult": 1},
    ], base_lr=0.01, momentum=0.9, weight_decay=5e-4)
    groups = opt.param_groups
    assert len(groups) == 2  # the lr_mult 0 group is left out
    assert [g["param_names"] for g in groups] == [["conv1.weight"], ["conv1.bias"]]
    assert [g["lr"] for g in groups] == pytest.approx([0.01, 0.02])
    assert [g["weight_decay"] for g in groups] == pytest.approx([5e-4, 0.0])
    assert [(g["lr_mult"], g["decay_mult"]) for g in groups] == [(1, 1), (2, 0)]
    assert all(p is not frozen for g in groups for p in g["params"])
    set_learning_rate(opt, 0.5)
    assert [g["lr"] for g in groups] == pytest.approx([0.5, 1.0])


def test_frozen_group_is_not_updated():
    w, frozen = torch.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
    opt = make_optimizer("SGD", [
        {"params": [w], "names": ["w"], "lr_mult": 1, "decay_mult": 1},
        {"params": [frozen], "names": ["f"], "lr_mult": 0, "decay_mult": 1},
    ], base_lr=0.1)
    w.grad, frozen.grad = torch.ones(2), torch.ones(2)
    opt.step()
    assert w.tolist() == pytest.approx([0.9, 0.9])
    assert frozen.tolist() == [1.0, 1.0]


def test_defaults_are_caffes():
    def group(type, **kw):
        p = torch.zeros(1, requires_grad=True)
        group = {"params": [p], "lr_mult": 1, "decay_mult": 1}
        opt = make_optimizer(type, [group], base_lr=1, **kw)
        return opt.param_groups[0]

    assert group("SGD")["momentum"] == 0
    assert group("Adam")["betas"] == (0.9, 0.999) and group("Adam")["eps"] == 1e-8
    assert (group("RMSProp")["alpha"], group("RMSProp")["eps"]) == (0.99, 1e-8)
    assert group("AdaGrad")["eps"] == 1e-8
    assert (group("AdaDelta")["rho"], group("AdaDelta")["eps"]) == (0.95, 1e-6)
    assert group("Adam", momentum=0.8, momentum2=0.99, delta=1e-4)["betas"] == (0.8, 0.99)
    # one fused pass per tensor where torch has the kernel, the multi-tensor path elsewhere
    kernels = {t: [k for k in ("fused", "foreach") if group(t, momentum=0.9).get(k)] for t in OPTIMIZERS}
    assert kernels == {"SGD": ["fused"], "Nesterov": ["fused"], "Adam": ["fused"], "AdamW": ["fused"],
                       "RMSProp": ["foreach"], "AdaGrad": ["foreach"], "AdaDelta": ["foreach"]}


@pytest.mark.parametrize("type, caffe", [
    ("SGD", -1.6),  # Caffe: v = 0.5 * 1 + 0.1 * 1 = 0.6, w = -1 - 0.6 (torch alone: -1 - 0.1 * 1.5 = -1.15)
    ("Nesterov", -1.9),  # Caffe: v = 0.6, step (1 + 0.5) * 0.6 - 0.5 * 1 = 0.4 after the first step's 1.5
])
def test_a_rate_change_carries_the_velocity_as_caffe_does(type, caffe):
    w = torch.zeros(1, requires_grad=True)
    opt = make_optimizer(type, [{"params": [w], "lr_mult": 1, "decay_mult": 1}], base_lr=1.0, momentum=0.5)
    w.grad = torch.ones(1)
    set_learning_rate(opt, 1.0)
    opt.step()  # v = 1; SGD w = -1, Nesterov w = -(1 + 0.5) * 1
    set_learning_rate(opt, 0.1)
    opt.step()
    assert w.item() == pytest.approx(caffe)
    assert opt.param_groups[0]["caffe_momentum"] == 0.5  # what a snapshot keeps; "momentum" is the step's


@pytest.mark.parametrize(
    "type, kw, match",
    [
        ("Adamm", {}, "unknown solver type 'Adamm'.*Adam"),
        ("SGD", {"regularization_type": "L3"}, "unknown regularization_type 'L3'"),
        ("Nesterov", {}, "'Nesterov' needs momentum > 0"),
        ("AdamW", {"regularization_type": "L1", "weight_decay": 0.1}, "no L1 form"),
    ],
)
def test_bad_settings_are_refused_with_what_would_be_right(type, kw, match):
    p = torch.zeros(1, requires_grad=True)
    with pytest.raises(ValueError, match=match):
        make_optimizer(type, [{"params": [p], "lr_mult": 1, "decay_mult": 1}], base_lr=0.1, **kw)


def test_nothing_to_train_gives_one_idle_group_and_no_parameters_is_refused():
    # netcfg test and max_iter: 0 build a Solver for a net whose every lr_mult is 0 (check refuses training it)
    p = torch.zeros(1, requires_grad=False)
    opt = make_optimizer("SGD", [{"params": [p], "lr_mult": 0, "decay_mult": 1}], base_lr=0.1, momentum=0.9)
    assert [(g["lr"], g["params"]) for g in opt.param_groups] == [(0.0, [p])]
    opt.step()
    assert p.item() == 0.0
    with pytest.raises(ValueError, match="no parameters to optimize"):
        make_optimizer("SGD", [], base_lr=0.1)


def test_names_must_match_params():
    p = torch.zeros(1, requires_grad=True)
    with pytest.raises(ValueError, match="1 params but 2 names"):
        make_optimizer("SGD", [{"params": [p], "names": ["a", "b"], "lr_mult": 1}], base_lr=0.1)


def test_state_missing_some_momentum_buffers_steps_as_torchs_foreach_would():
    # a hand-edited or partial state: torch's fused SGD kernel takes all buffers or none,
    # so the missing one becomes zeros, which (no dampening) is the same next step
    from netcfg.solver.state import load_optimizer_state

    def trained(fused: bool):
        torch.manual_seed(0)
        a, b = torch.randn(3, 4, requires_grad=True), torch.randn(4, requires_grad=True)
        opt = torch.optim.SGD([a, b], lr=0.1, momentum=0.9, **({"fused": True} if fused else {"foreach": True}))
        return opt, (a, b)

    ref, (a0, b0) = trained(fused=False)
    opt, (a1, b1) = trained(fused=True)
    def state():  # load_state_dict keeps the very tensors: one state each
        return {"state": {1: {"momentum_buffer": torch.full((4,), 0.5)}}, "param_groups": ref.state_dict()["param_groups"]}

    load_optimizer_state(ref, state(), "s")  # foreach: tolerates the gap by itself
    load_optimizer_state(opt, state(), "s")
    assert torch.equal(opt.state[a1]["momentum_buffer"], torch.zeros(3, 4))
    for p, q in ((a0, a1), (b0, b1)):
        p.grad = torch.arange(p.numel(), dtype=torch.float32).reshape(p.shape)
        q.grad = p.grad.clone()
    ref.step()
    opt.step()
    assert torch.allclose(a0, a1) and torch.allclose(b0, b1)


@pytest.mark.parametrize("type", ["SGD", "Nesterov"])
def test_a_skipped_first_step_leaves_clean_momentum(type):
    # fp16's scaler and the deferred NaN check skip a step through found_inf; torch's fused
    # kernel would keep the uninitialised buffers it made for a skipped first step
    def make():
        w = torch.ones(64, requires_grad=True)
        return w, make_optimizer(type, [{"params": [w], "lr_mult": 1, "decay_mult": 1}], base_lr=0.1, momentum=0.9)

    w, opt = make()
    ref_w, ref = make()
    opt.found_inf = torch.tensor(1.0)  # what GradScaler.step sets on an overflow
    w.grad = torch.full((64,), float("inf"))
    opt.step()
    assert torch.equal(w, torch.ones(64)) and torch.equal(opt.state[w]["momentum_buffer"], torch.zeros(64))
    opt.found_inf = torch.tensor(0.0)
    w.grad, ref_w.grad = torch.full((64,), 2.0), torch.full((64,), 2.0)
    opt.step()
    ref.step()
    assert torch.equal(w, ref_w)


@pytest.mark.parametrize("type", ["SGD", "Nesterov", "Adam", "AdamW"])  # those torch has fused kernels for
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_weights_are_updated_whole(type, dtype):
    # a net declared bfloat16 (or float16) is built in it: every element must move as in float32
    # (torch's fused CPU SGD updated only a tensor's tail beyond its last whole SIMD block)
    def trained(dt):
        w = (torch.arange(64, dtype=torch.float32) / 640).to(dt).requires_grad_()
        opt = make_optimizer(type, [{"params": [w], "lr_mult": 1, "decay_mult": 1}], base_lr=0.1,
                             momentum=MOMENTUM.get(type))
        for it in range(2):
            w.grad = torch.full_like(w, 0.05)
            set_learning_rate(opt, 0.1, it)
            opt.step()
        return w.detach().float()

    start = (torch.arange(64, dtype=torch.float32) / 640).to(dtype).float()
    want, got = trained(torch.float32), trained(dtype)
    assert (want - start).abs().min() > 1e-3
    torch.testing.assert_close(got - start, want - start, rtol=0.05, atol=2e-3)
