"""Every lr_policy against its formula, warm-up, and Caffe's multistep stepping."""

import math

import pytest

from netcfg.solver.lr_policy import POLICIES, learning_rate

ITERS = [0, 1, 7, 99, 100, 101, 250, 999, 1000]


def lr(it, **kw):
    return learning_rate(it, base_lr=0.1, **kw)


@pytest.mark.parametrize("it", ITERS)
def test_caffe_policies_follow_caffe_formulas(it):
    approx = pytest.approx
    assert lr(it, lr_policy="fixed") == 0.1
    assert lr(it, lr_policy="step", gamma=0.5, stepsize=100) == approx(
        0.1 * 0.5 ** math.floor(it / 100))
    assert lr(it, lr_policy="exp", gamma=0.999) == approx(0.1 * 0.999**it)
    assert lr(it, lr_policy="inv", gamma=1e-4, power=0.75) == approx(
        0.1 * (1 + 1e-4 * it) ** -0.75)
    assert lr(it, lr_policy="poly", power=2.0, max_iter=1000) == approx(
        0.1 * (1 - it / 1000) ** 2)
    assert lr(it, lr_policy="sigmoid", gamma=0.05, stepsize=100) == approx(
        0.1 / (1 + math.exp(-0.05 * (it - 100))))


@pytest.mark.parametrize("it", ITERS)
def test_cosine_and_linear_run_from_base_lr_to_min_lr(it):
    cos = lr(it, lr_policy="cosine", max_iter=1000, min_lr=0.001)
    lin = lr(it, lr_policy="linear", max_iter=1000, min_lr=0.001)
    assert cos == pytest.approx(0.001 + 0.099 * 0.5 * (1 + math.cos(math.pi * it / 1000)))
    assert lin == pytest.approx(0.1 + (0.001 - 0.1) * it / 1000)


def test_ends_of_decaying_policies():
    assert lr(1000, lr_policy="poly", power=1.0, max_iter=1000) == 0.0
    assert lr(1000, lr_policy="cosine", max_iter=1000, min_lr=0.01) == pytest.approx(0.01)
    assert lr(1000, lr_policy="linear", max_iter=1000) == 0.0
    # past max_iter the rate stays at its end value rather than turning NaN
    assert lr(1500, lr_policy="poly", power=0.5, max_iter=1000) == 0.0
    assert lr(1500, lr_policy="cosine", max_iter=1000, min_lr=0.01) == pytest.approx(0.01)


def test_sigmoid_far_from_its_midpoint_does_not_overflow():
    assert lr(0, lr_policy="sigmoid", gamma=1.0, stepsize=5000) == pytest.approx(0.0)
    assert lr(10**6, lr_policy="sigmoid", gamma=1.0, stepsize=5) == pytest.approx(0.1)


def caffe_multistep(iters, stepvalue, gamma=0.1):
    """Caffe's stateful loop, called once per iteration from 0."""
    current_step, out = 0, []
    for it in range(iters):
        if current_step < len(stepvalue) and it >= stepvalue[current_step]:
            current_step += 1
        out.append(0.1 * gamma**current_step)
    return out


@pytest.mark.parametrize(
    "stepvalue",
    [
        [100, 200, 300],
        [0, 5],  # a step at iteration 0 applies from the start
        [10, 10, 20],  # a repeated value: Caffe advances once per iteration
        [30, 10, 40],  # out of order: 10 is only looked at after 30
        [5, 6, 7],  # consecutive
        [1000],  # never reached
    ],
)
def test_multistep_matches_caffes_stateful_stepping(stepvalue):
    expected = caffe_multistep(400, stepvalue)
    got = [lr(it, lr_policy="multistep", gamma=0.1, stepvalue=stepvalue) for it in range(400)]
    assert got == pytest.approx(expected)


def test_multistep_drops_at_each_stepvalue():
    kw = dict(lr_policy="multistep", gamma=0.1, stepvalue=[100, 200])
    assert lr(99, **kw) == pytest.approx(0.1)
    assert lr(100, **kw) == pytest.approx(0.01)
    assert lr(199, **kw) == pytest.approx(0.01)
    assert lr(200, **kw) == pytest.approx(0.001)
    assert lr(10**6, **kw) == pytest.approx(0.001)


def test_warmup_scales_linearly_from_warmup_start():
    kw = dict(lr_policy="fixed", warmup_iter=100, warmup_start=0.1)
    assert lr(0, **kw) == pytest.approx(0.1 * 0.1)
    assert lr(50, **kw) == pytest.approx(0.1 * (0.1 + 0.9 * 0.5))
    assert lr(99, **kw) == pytest.approx(0.1 * (0.1 + 0.9 * 0.99))
    assert lr(100, **kw) == 0.1
    assert lr(0, lr_policy="fixed", warmup_iter=10) == 0.0  # warmup_start defaults to 0


def test_warmup_leaves_caffe_policies_unshifted():
    kw = dict(lr_policy="step", gamma=0.1, stepsize=100)
    assert lr(150, warmup_iter=50, **kw) == lr(150, **kw) == pytest.approx(0.01)
    # inside the warm-up the policy's own rate at `it` is what gets scaled
    assert lr(20, warmup_iter=50, **kw) == pytest.approx(0.1 * 20 / 50)
    exp = dict(lr_policy="exp", gamma=0.99)
    assert lr(20, warmup_iter=50, **exp) == pytest.approx(0.1 * 0.99**20 * 20 / 50)


def test_warmup_shifts_cosine_and_linear_to_start_when_it_ends():
    kw = dict(max_iter=1100, warmup_iter=100)
    assert lr(50, lr_policy="cosine", **kw) == pytest.approx(0.1 * 50 / 100)
    assert lr(100, lr_policy="cosine", **kw) == pytest.approx(0.1)
    assert lr(600, lr_policy="cosine", **kw) == pytest.approx(0.05)  # half-way
    assert lr(600, lr_policy="linear", **kw) == pytest.approx(0.05)
    assert lr(1100, lr_policy="linear", **kw) == pytest.approx(0.0)


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_each_required_hyperparameter_is_checked(policy):
    full = dict(gamma=0.5, power=1.0, stepsize=10, stepvalue=[10], max_iter=100)
    assert lr(5, lr_policy=policy, **full) > 0
    for name in POLICIES[policy]:
        kw = {k: v for k, v in full.items() if k != name}
        with pytest.raises(ValueError, match=f"'{policy}' needs {name}"):
            lr(5, lr_policy=policy, **kw)


def test_multistep_with_empty_stepvalue_is_missing_it():
    with pytest.raises(ValueError, match="needs stepvalue"):
        lr(0, lr_policy="multistep", gamma=0.1, stepvalue=[])


def test_unknown_policy_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown lr_policy 'cosin'.*cosine"):
        lr(0, lr_policy="cosin")


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(lr_policy="step", gamma=0.1, stepsize=0), "stepsize > 0"),
        (dict(lr_policy="poly", power=1.0, max_iter=0), "max_iter > 0"),
        (dict(lr_policy="cosine", max_iter=100, warmup_iter=100), "max_iter > warmup_iter"),
        (dict(lr_policy="fixed", warmup_iter=-1), "warmup_iter must be >= 0"),
    ],
)
def test_values_that_would_divide_by_zero_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        lr(0, **kw)
