"""Losses: values vs NumPy oracles, stability, gradients vs finite differences, target validation."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tinytorch.core.losses import CrossEntropyLoss, MSELoss
from tinytorch.core.tensor import Tensor
from gradcheck import numerical_grad


def ce_oracle(logits, targets, reduction="mean"):
    "Cross-entropy in float64 via np.logaddexp (an independent stable log-sum-exp)."
    logits = np.asarray(logits, dtype=np.float64)
    lse = np.logaddexp.reduce(logits, axis=1)
    losses = lse - logits[np.arange(len(targets)), targets]
    return {"mean": losses.mean(), "sum": losses.sum(), "none": losses}[reduction]


# -- MSE ----------------------------------------------------------------------------------

def test_mse_values():
    pred = np.array([[1.0, 2.0], [3.0, -1.0]])
    target = np.array([[0.0, 2.0], [1.0, 1.0]])
    # squared errors 1, 0, 4, 4
    assert MSELoss()(Tensor(pred), target).item() == pytest.approx(9 / 4)
    assert MSELoss(reduction="sum")(Tensor(pred), target).item() == pytest.approx(9.0)
    np.testing.assert_allclose(MSELoss(reduction="none")(Tensor(pred), target).data, [[1, 0], [4, 4]])
    # a Tensor target is used as a constant
    assert MSELoss()(Tensor(pred), Tensor(target)).item() == pytest.approx(9 / 4)


def test_mse_gradient_matches_finite_differences():
    pytest.importorskip("tinytorch.core.autograd")
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    for reduction in ("mean", "sum"):
        t = Tensor(pred, requires_grad=True, dtype=np.float64)
        MSELoss(reduction)(t, target).backward()
        expected = numerical_grad(lambda p: float(MSELoss(reduction)(Tensor(p, dtype=np.float64), target).item()),
                                  pred.copy())
        np.testing.assert_allclose(t.grad, expected, rtol=1e-6, atol=1e-9)
        scale = pred.size if reduction == "mean" else 1
        np.testing.assert_allclose(t.grad, 2 * (pred - target) / scale, rtol=1e-12)


def test_mse_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape.*\\(4, 1\\).*\\(4,\\)"):
        MSELoss()(Tensor(np.ones((4, 1))), np.ones(4))
    with pytest.raises(TypeError, match="pred to be a Tensor"):
        MSELoss()(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="reduction must be one of"):
        MSELoss(reduction="avg")


# -- cross-entropy ------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_oracle(reduction):
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, size=(8, 5))
    targets = rng.integers(0, 5, size=8)
    got = CrossEntropyLoss(reduction)(Tensor(logits, dtype=np.float64), targets).data
    np.testing.assert_allclose(got, ce_oracle(logits, targets, reduction), rtol=1e-12)


def test_cross_entropy_hand_computed():
    # equal logits: every class has probability 1/C, so the loss is log(C)
    assert CrossEntropyLoss()(Tensor(np.zeros((3, 4))), np.array([0, 1, 3])).item() == pytest.approx(np.log(4))
    # logits [0, ln 3] -> p = [1/4, 3/4]: losses -ln(1/4) and -ln(3/4)
    logits = Tensor([[0.0, np.log(3.0)], [0.0, np.log(3.0)]])
    expected = (np.log(4.0) + np.log(4.0 / 3.0)) / 2
    assert CrossEntropyLoss()(logits, np.array([0, 1])).item() == pytest.approx(expected, rel=1e-6)
    assert CrossEntropyLoss()(logits, np.array([0, 1])).shape == ()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_stable_for_huge_logits(dtype):
    logits = np.array([[1e4, 0.0, -1e4], [500.0, 500.0, 499.0], [-800.0, -800.0, -800.0]])
    targets = np.array([1, 2, 0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        got = CrossEntropyLoss("none")(Tensor(logits, dtype=dtype), targets).data
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ce_oracle(logits, targets, "none"), rtol=1e-5)


def test_cross_entropy_gradient_matches_finite_differences():
    pytest.importorskip("tinytorch.core.autograd")
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, size=(5, 4))
    targets = np.array([0, 3, 1, 1, 2])
    t = Tensor(logits, requires_grad=True, dtype=np.float64)
    CrossEntropyLoss()(t, targets).backward()
    expected = numerical_grad(lambda z: float(ce_oracle(z, targets)), logits.copy())
    np.testing.assert_allclose(t.grad, expected, rtol=1e-6, atol=1e-9)
    # closed form: (softmax - one_hot) / N
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(5), targets] -= 1
    np.testing.assert_allclose(t.grad, p / 5, rtol=1e-10, atol=1e-12)


def test_cross_entropy_gradient_is_finite_for_huge_logits():
    pytest.importorskip("tinytorch.core.autograd")
    t = Tensor([[1e4, 0.0, -1e4]], requires_grad=True, dtype=np.float64)
    CrossEntropyLoss()(t, np.array([1])).backward()
    np.testing.assert_allclose(t.grad, [[1.0, -1.0, 0.0]], atol=1e-12)


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, (4, 3), elements=st.floats(-1e3, 1e3)),
       arrays(np.int64, (4,), elements=st.integers(0, 2)))
def test_cross_entropy_properties(logits, targets):
    losses = CrossEntropyLoss("none")(Tensor(logits, dtype=np.float64), targets).data
    assert np.all(losses >= -1e-12)
    np.testing.assert_allclose(losses, ce_oracle(logits, targets, "none"), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8])
def test_cross_entropy_accepts_any_integer_dtype(dtype):
    loss = CrossEntropyLoss()(Tensor(np.zeros((2, 3))), np.array([0, 2], dtype=dtype))
    assert loss.item() == pytest.approx(np.log(3))


def test_cross_entropy_validates_targets():
    logits = Tensor(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="must be in \\[0, 4\\), got 4"):
        CrossEntropyLoss()(logits, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match="must be in \\[0, 4\\), got -1"):
        CrossEntropyLoss()(logits, np.array([0, -1, 1]))
    with pytest.raises(TypeError, match="integer class indices, got dtype float"):
        CrossEntropyLoss()(logits, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(TypeError, match="integer class indices, got dtype bool"):
        CrossEntropyLoss()(logits, np.array([True, False, True]))
    with pytest.raises(TypeError, match="got a Tensor"):
        CrossEntropyLoss()(logits, Tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="shape \\(3,\\).*got \\(3, 1\\)"):
        CrossEntropyLoss()(logits, np.array([[0], [1], [2]]))
    with pytest.raises(ValueError, match="shape \\(3,\\).*got \\(2,\\)"):
        CrossEntropyLoss()(logits, np.array([0, 1]))


def test_cross_entropy_validates_logits():
    with pytest.raises(ValueError, match="shape \\(N, C\\), got \\(4,\\)"):
        CrossEntropyLoss()(Tensor(np.zeros(4)), np.array([0]))
    with pytest.raises(TypeError, match="logits to be a Tensor"):
        CrossEntropyLoss()(np.zeros((2, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match="empty batch"):
        CrossEntropyLoss()(Tensor(np.zeros((0, 3))), np.array([], dtype=np.int64))
