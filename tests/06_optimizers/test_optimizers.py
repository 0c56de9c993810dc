"""Optimizers: SGD/Adam updates vs hand-computed values, masks under momentum/weight decay, errors."""
import math

import numpy as np
import pytest

from tinytorch.core.layers import Linear
from tinytorch.core.losses import MSELoss
from tinytorch.core.optimizers import SGD, Adam
from tinytorch.core.tensor import Tensor


def param(values, dtype=np.float64):
    return Tensor(np.array(values, dtype=dtype), requires_grad=True, dtype=dtype)


def run(opt, p, grads):
    "Feed a fixed gradient sequence; return the parameter values after each step."
    seen = []
    for g in grads:
        opt.zero_grad()
        p.grad = np.array(g, dtype=p.data.dtype)
        opt.step()
        seen.append(p.data.copy())
    return seen


def adam_reference(w, grads, lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0):
    "Adam written out on Python floats, straight from the paper + PyTorch's L2 weight decay."
    m = v = 0.0
    out = []
    for t, g in enumerate(grads, start=1):
        g = g + wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1 ** t)) / (math.sqrt(v / (1 - b2 ** t)) + eps)
        out.append(w)
    return out


# -- SGD ----------------------------------------------------------------------------------

def test_plain_sgd_three_steps():
    p = param([1.0, -2.0])
    steps = run(SGD([p], lr=0.1), p, [[1.0, 2.0], [0.5, -1.0], [-1.0, 0.0]])
    # w - 0.1 g, three times, by hand
    np.testing.assert_allclose(steps, [[0.9, -2.2], [0.85, -2.1], [0.95, -2.1]], rtol=1e-12)


def test_sgd_momentum_and_weight_decay_three_steps():
    p = param([1.0])
    steps = run(SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1), p, [[1.0]] * 3)
    # step 1: g = 1 + 0.1*1 = 1.1,       buf = 1.1,                  w = 1 - 0.11       = 0.89
    # step 2: g = 1 + 0.1*0.89 = 1.089,  buf = 0.99 + 1.089 = 2.079, w = 0.89 - 0.2079  = 0.6821
    # step 3: g = 1.06821,               buf = 1.8711 + 1.06821,     w = 0.6821 - 0.293931 = 0.388169
    np.testing.assert_allclose(np.ravel(steps), [0.89, 0.6821, 0.388169], rtol=1e-12)


def test_sgd_momentum_without_weight_decay():
    p = param([0.0, 0.0])
    steps = run(SGD([p], lr=1.0, momentum=0.5), p, [[1.0, -1.0]] * 3)
    # buf: 1, 1.5, 1.75  -> w: -1, -2.5, -4.25
    np.testing.assert_allclose([s[0] for s in steps], [-1.0, -2.5, -4.25])
    np.testing.assert_allclose([s[1] for s in steps], [1.0, 2.5, 4.25])


# -- Adam ---------------------------------------------------------------------------------

def test_adam_three_steps():
    p = param([1.0])
    steps = np.ravel(run(Adam([p], lr=0.1), p, [[2.0], [-1.0], [0.5]]))
    # step 1 by hand: m = 0.2, v = 0.004; m_hat = 2, v_hat = 4 -> w = 1 - 0.1 * 2 / (2 + 1e-8)
    assert steps[0] == pytest.approx(1 - 0.2 / (2 + 1e-8), abs=1e-15)
    # step 2 by hand: m = 0.08, v = 0.004996; m_hat = 0.08/0.19, v_hat = 0.004996/0.001999
    step2 = steps[0] - 0.1 * (0.08 / 0.19) / (math.sqrt(0.004996 / 0.001999) + 1e-8)
    assert steps[1] == pytest.approx(step2, rel=1e-12)
    np.testing.assert_allclose(steps, adam_reference(1.0, [2.0, -1.0, 0.5], lr=0.1), rtol=1e-12)
    np.testing.assert_allclose(steps, [0.9000000005, 0.8733662967024315, 0.8393233821389425], rtol=1e-12)


def test_adam_weight_decay_and_custom_betas():
    p = param([1.0])
    steps = np.ravel(run(Adam([p], lr=0.1, weight_decay=0.5), p, [[2.0], [-1.0], [0.5]]))
    np.testing.assert_allclose(steps, [0.9000000004, 0.8505569312282295, 0.7928828035640239], rtol=1e-12)
    p = param([0.3, -0.7])
    grads = [[0.1, 3.0], [-0.2, 1.0], [0.4, -2.0]]
    steps = run(Adam([p], lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01), p, grads)
    for i, w0 in enumerate([0.3, -0.7]):
        expected = adam_reference(w0, [g[i] for g in grads], lr=0.05, b1=0.8, b2=0.99, eps=1e-6, wd=0.01)
        np.testing.assert_allclose([s[i] for s in steps], expected, rtol=1e-12)


def test_adam_first_step_is_lr_whatever_the_gradient_scale():
    p = param([0.0, 0.0, 0.0])
    run(Adam([p], lr=0.01), p, [[1e-6, -3.0, 1e4]])
    np.testing.assert_allclose(p.data, [-0.01, 0.01, -0.01], rtol=1e-2)


def test_float32_parameters_stay_float32():
    for opt_class in (SGD, Adam):
        p = param([1.0, 2.0], dtype=np.float32)
        data = p.data
        run(opt_class([p], lr=0.1, weight_decay=0.1), p, [[1.0, 1.0]] * 2)
        assert p.data.dtype == np.float32 and p.data is data          # updated in place


def test_parameters_without_grad_are_skipped():
    a, b = param([1.0]), param([1.0])
    opt = Adam([a, b], lr=0.1)
    a.grad = np.array([1.0])
    opt.step()
    assert b.data[0] == 1.0
    b.grad = np.array([1.0])
    opt.step()
    # b's own step counter starts at 1, so its first move is exactly lr, like a's first move
    assert b.data[0] == pytest.approx(0.9, abs=1e-6)


def test_zero_grad_and_lr_changes():
    p = param([1.0])
    opt = SGD([p], lr=0.1)
    p.grad = np.array([1.0])
    opt.zero_grad()
    assert p.grad is None
    opt.lr = 0.5                                               # a schedule can change lr between steps
    p.grad = np.array([1.0])
    opt.step()
    assert p.data[0] == pytest.approx(0.5)


# -- masks (pruning) ----------------------------------------------------------------------

MAKERS = {
    "sgd": lambda ps: SGD(ps, lr=0.1),
    "sgd-momentum-wd": lambda ps: SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.05),
    "adam-wd": lambda ps: Adam(ps, lr=0.1, weight_decay=0.05),
}


@pytest.mark.parametrize("name", MAKERS)
def test_mask_keeps_pruned_weights_at_zero_and_leaves_others_alone(name):
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4, 5))
    mask = rng.random((4, 5)) > 0.5
    grads = [rng.normal(size=(4, 5)) for _ in range(4)]

    masked = param(np.where(mask, w0, 0.0))
    masked.mask = mask
    free = param(w0)                                           # the same run without a mask
    opt_masked, opt_free = MAKERS[name]([masked]), MAKERS[name]([free])
    for g in grads:
        masked.grad, free.grad = g.copy(), g.copy()
        opt_masked.step()
        opt_free.step()
        assert np.all(masked.data[~mask] == 0.0)
        # the updates are elementwise, so kept weights follow the unmasked run exactly
        np.testing.assert_allclose(masked.data[mask], free.data[mask], rtol=1e-12)


@pytest.mark.parametrize("name", MAKERS)
def test_mask_added_mid_training_overrides_momentum(name):
    p = param([1.0, 1.0])
    opt = MAKERS[name]([p])
    for _ in range(3):                                         # build up momentum / Adam moments
        p.grad = np.array([1.0, 1.0])
        opt.step()
    p.mask = np.array([False, True])                           # prune the first weight...
    for _ in range(3):
        p.grad = np.array([-1.0, -1.0])                        # ...gradients push it back up
        opt.step()
        assert p.data[0] == 0.0
    assert p.data[1] != 0.0


# -- training actually works --------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda ps: SGD(ps, lr=0.1, momentum=0.9), lambda ps: Adam(ps, lr=0.05)],
                         ids=["sgd", "adam"])
def test_optimizers_solve_least_squares(make):
    pytest.importorskip("tinytorch.core.autograd")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3)).astype(np.float32)
    y = (X @ np.array([[1.5], [-2.0], [0.5]]) + 0.3 + 0.01 * rng.normal(size=(64, 1))).astype(np.float32)
    layer = Linear(3, 1, rng=0)
    opt = make(layer.parameters())
    for _ in range(300):
        opt.zero_grad()
        MSELoss()(layer(Tensor(X)), y).backward()
        opt.step()
    design = np.hstack([X, np.ones((64, 1))]).astype(np.float64)
    solution = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)[0].ravel()
    np.testing.assert_allclose(layer.weight.data.ravel(), solution[:3], atol=2e-3)
    np.testing.assert_allclose(layer.bias.data, solution[3:], atol=2e-3)


# -- bad arguments ------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=0.0), "lr must be > 0"),
    (dict(lr=-1.0), "lr must be > 0"),
    (dict(lr="0.1"), "lr must be > 0"),
    (dict(lr=0.1, momentum=-0.5), "momentum must be >= 0"),
    (dict(lr=0.1, weight_decay=-1.0), "weight_decay must be >= 0"),
])
def test_sgd_rejects_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SGD([param([1.0])], **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=float("nan")), "lr must be > 0"),
    (dict(betas=(1.0, 0.999)), "betas\\[0\\] must be in \\[0.0, 1.0\\), got 1.0"),
    (dict(betas=(0.9, -0.1)), "betas\\[1\\] must be in"),
    (dict(betas=0.9), "betas must be a pair"),
    (dict(eps=-1e-8), "eps must be >= 0"),
    (dict(weight_decay=-0.1), "weight_decay must be >= 0"),
])
def test_adam_rejects_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Adam([param([1.0])], **kwargs)


def test_bad_parameter_lists():
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match="model.parameters\\(\\)"):
        SGD(Linear(2, 2), lr=0.1)              # Linear is not iterable -> TypeError from list()
    with pytest.raises(TypeError, match="must be Tensors, got ndarray at index 1"):
        SGD([param([1.0]), np.ones(2)], lr=0.1)
    p = param([1.0])
    with pytest.raises(ValueError, match="more than once"):
        Adam([p, p])
