"""Knowledge distillation (tasks soft-targets, distillation-loss, distill).

Oracles: softmax and KL divergence written out in float64 NumPy, central finite differences of
the loss in float64, and `fit` with cross-entropy (distillation with alpha = 0 must be exactly it).
"""
import copy

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinytorch.compression.distill import distill, distillation_loss, soft_targets
from tinytorch.core.activations import ReLU
from tinytorch.core.layers import Dropout, Linear, Sequential
from tinytorch.core.losses import CrossEntropyLoss
from tinytorch.core.optimizers import SGD, Adam
from tinytorch.core.tensor import Tensor
from tinytorch.core.training import evaluate, fit, predict


def as_array(value) -> np.ndarray:
    assert type(value) is np.ndarray, type(value)
    return value


def value_of(loss) -> float:
    "The number inside a scalar loss Tensor (a real Tensor, not an object that compares equal)."
    assert type(loss) is Tensor, type(loss)
    data = np.asarray(loss.data, dtype=np.float64)
    assert data.shape in ((), (1,)), data.shape
    return float(data.reshape(()))


def softmax(z, T=1.0):
    z = np.asarray(z, dtype=np.float64) / T
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def oracle_loss(zs, zt, y, T, alpha):
    "alpha T^2 mean KL(p_T || q_T) + (1 - alpha) CE, from the definitions."
    p, q = softmax(zt, T), softmax(zs, T)
    kl = np.mean(np.sum(np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - np.log(q)), 0.0), axis=1))
    ce = 0.0 if y is None else -np.mean(np.log(softmax(zs)[np.arange(len(zs)), y]))
    return alpha * T * T * kl + (1 - alpha) * ce


logit_arrays = hnp.arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(2, 6)), elements=st.floats(-20, 20))


# -- soft-targets -----------------------------------------------------------------------------


@pytest.mark.task("soft-targets")
def test_soft_targets_hand_computed():
    assert np.allclose(as_array(soft_targets([[0.0, np.log(3.0)]])), [[0.25, 0.75]])
    assert np.allclose(as_array(soft_targets([[0.0, np.log(9.0)]], T=2.0)), [[0.25, 0.75]])
    assert np.allclose(as_array(soft_targets(np.log([1.0, 2.0, 5.0]), T=1.0)), [0.125, 0.25, 0.625])   # 1-d: one row
    p = as_array(soft_targets(Tensor(np.array([[1000.0, 1000.0, -1000.0]])), T=0.5))           # no overflow
    assert p.dtype == np.float64 and np.allclose(p, [[0.5, 0.5, 0.0]])
    assert np.allclose(as_array(soft_targets([[3.0, -3.0, 0.0]], T=1e7)), 1 / 3, atol=1e-6)   # T -> inf: uniform
    assert np.allclose(as_array(soft_targets([[3.0, 2.9, 0.0]], T=1e-3)), [[1.0, 0.0, 0.0]])  # T -> 0: one-hot


@pytest.mark.task("soft-targets")
@given(logit_arrays, st.floats(0.1, 50.0))
def test_soft_targets_matches_the_softmax_oracle(z, T):
    p = as_array(soft_targets(z, T))
    assert p.shape == z.shape
    assert np.allclose(p, softmax(z, T), rtol=1e-9, atol=1e-12)
    assert np.allclose(p.sum(axis=1), 1.0) and np.all(p >= 0)


@pytest.mark.task("soft-targets")
def test_soft_targets_bad_input():
    for bad in (0.0, -1.0, float("inf"), float("nan"), True):
        with pytest.raises(ValueError, match="T"):
            soft_targets([[1.0, 2.0]], T=bad)
    with pytest.raises(ValueError):
        soft_targets([[1.0, float("nan")]])
    assert np.allclose(as_array(soft_targets([[0.0, 0.0]])), 0.5)


# -- distillation-loss ------------------------------------------------------------------------


@pytest.mark.task("distillation-loss")
def test_distillation_loss_hand_computed():
    zs, zt = np.array([[0.0, np.log(3.0)]]), np.array([[0.0, 0.0]])      # q = [1/4, 3/4], p = [1/2, 1/2]
    kl = 0.5 * np.log(2.0) + 0.5 * np.log(2.0 / 3.0)
    assert np.isclose(value_of(distillation_loss(Tensor(zs), zt, None, T=1.0, alpha=1.0)), kl)
    assert np.isclose(value_of(distillation_loss(Tensor(zs), Tensor(zt), np.array([0]), T=1.0, alpha=0.5)),
                      0.5 * kl + 0.5 * np.log(4.0))
    assert np.isclose(value_of(distillation_loss(Tensor(3 * zs), 3 * zt, None, T=3.0, alpha=1.0)), 9 * kl)
    assert abs(value_of(distillation_loss(Tensor(zs), zs, None, T=5.0, alpha=1.0))) < 1e-5    # student = teacher


@pytest.mark.task("distillation-loss")
@given(logit_arrays, st.data())
def test_distillation_loss_matches_the_oracle(zs, data):
    zt = data.draw(hnp.arrays(np.float64, zs.shape, elements=st.floats(-20, 20)))
    y = np.array(data.draw(st.lists(st.integers(0, zs.shape[1] - 1), min_size=len(zs), max_size=len(zs))))
    T = data.draw(st.sampled_from([0.5, 1.0, 2.0, 4.0, 10.0]))
    alpha = data.draw(st.sampled_from([0.0, 0.3, 0.5, 1.0]))
    loss = value_of(distillation_loss(Tensor(zs, dtype=np.float64), zt, y, T=T, alpha=alpha))
    assert np.isclose(loss, oracle_loss(zs, zt, y, T, alpha), rtol=1e-7, atol=1e-9)
    assert value_of(distillation_loss(Tensor(zs, dtype=np.float64), zt, None, T=T, alpha=1.0)) >= -1e-9  # KL >= 0


@pytest.mark.task("distillation-loss")
@pytest.mark.parametrize("T, alpha", [(1.0, 0.5), (4.0, 0.9), (2.0, 1.0), (0.7, 0.2)])
def test_distillation_loss_gradient_matches_finite_differences(T, alpha):
    rng = np.random.default_rng(int(T * 10 + alpha * 100))
    zs, zt = rng.normal(size=(3, 4)) * 2, rng.normal(size=(3, 4)) * 3
    y = np.array([0, 3, 1])
    z = Tensor(zs, requires_grad=True, dtype=np.float64)
    teacher = Tensor(zt, requires_grad=True, dtype=np.float64)
    distillation_loss(z, teacher, y, T=T, alpha=alpha).backward()
    assert teacher.grad is None or not np.any(teacher.grad), "no gradient may reach the teacher"
    grad = as_array(z.grad)
    eps = 1e-6
    numeric = np.zeros_like(zs)
    for i in np.ndindex(zs.shape):
        plus, minus = zs.copy(), zs.copy()
        plus[i] += eps
        minus[i] -= eps
        numeric[i] = (oracle_loss(plus, zt, y, T, alpha) - oracle_loss(minus, zt, y, T, alpha)) / (2 * eps)
    assert np.allclose(grad, numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.task("distillation-loss")
def test_t_squared_keeps_the_soft_gradient_from_fading():
    # At a high temperature the soft gradient tends to alpha (z - z_t) / (C N) for centred logits:
    # its size no longer depends on T (without T^2 it would shrink like 1 / T^2).
    rng = np.random.default_rng(0)
    zs, zt = rng.normal(size=(2, 5)), rng.normal(size=(2, 5))
    zs, zt = zs - zs.mean(axis=1, keepdims=True), zt - zt.mean(axis=1, keepdims=True)
    for T in (100.0, 1000.0):
        z = Tensor(zs, requires_grad=True, dtype=np.float64)
        distillation_loss(z, zt, None, T=T, alpha=1.0).backward()
        assert np.allclose(as_array(z.grad), (zs - zt) / (5 * 2), rtol=0.05, atol=1e-4)


@pytest.mark.task("distillation-loss")
def test_alpha_zero_is_cross_entropy_and_float32_works():
    rng = np.random.default_rng(1)
    zs, y = rng.normal(size=(6, 10)).astype(np.float32), rng.integers(0, 10, size=6)
    a = Tensor(zs, requires_grad=True)
    b = Tensor(zs, requires_grad=True)
    loss = distillation_loss(a, rng.normal(size=(6, 10)), y, T=3.0, alpha=0.0)
    ce = CrossEntropyLoss()(b, y)
    assert np.isclose(value_of(loss), value_of(ce), rtol=1e-6)
    loss.backward()
    ce.backward()
    assert np.allclose(as_array(a.grad), b.grad, atol=1e-7)


@pytest.mark.task("distillation-loss")
def test_distillation_loss_bad_input():
    z, t, y = Tensor(np.zeros((2, 3))), np.zeros((2, 3)), np.array([0, 1])
    with pytest.raises(ValueError, match="shape"):
        distillation_loss(z, np.zeros((2, 4)), y)
    with pytest.raises(ValueError, match="targets"):
        distillation_loss(z, t, None, alpha=0.5)
    for bad in ({"T": 0.0}, {"T": -2.0}, {"alpha": 1.5}, {"alpha": -0.1}):
        with pytest.raises(ValueError):
            distillation_loss(z, t, y, **bad)
    with pytest.raises(TypeError):
        distillation_loss(np.zeros((2, 3)), t, y)
    assert np.isclose(value_of(distillation_loss(z, t, y, T=2.0, alpha=0.5)), 0.5 * np.log(3.0))


# -- distill ----------------------------------------------------------------------------------


def make_data(n=96, features=6, seed=0, batch=32):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
    return X, y, [(Tensor(X[i:i + batch]), y[i:i + batch]) for i in range(0, n, batch)]


def teacher_net():
    net = Sequential(Linear(6, 16, rng=1), ReLU(), Linear(16, 3, rng=2))
    net[2].weight.data *= 4
    return net


@pytest.mark.task("distill")
def test_alpha_zero_is_exactly_training_on_labels():
    _, _, batches = make_data()
    a, b = teacher_net(), teacher_net()            # two identical students
    student_hist = distill(a, Sequential(Linear(6, 3, rng=5)), batches, epochs=3, alpha=0.0, lr=0.01, progress=False)
    fit_hist = fit(b, batches, CrossEntropyLoss(), Adam(b.parameters(), lr=0.01), epochs=3, progress=False)
    for p, q in zip(a.parameters(), b.parameters()):
        assert np.allclose(p.data, q.data, atol=1e-6)
    assert np.allclose(student_hist["loss"], fit_hist["loss"], rtol=1e-6)
    assert np.allclose(student_hist["train_acc"], fit_hist["train_acc"])


@pytest.mark.task("distill")
def test_student_learns_the_teacher_without_labels():
    X, _, batches = make_data(n=128)
    unlabeled = [(Xb, None) for Xb, _ in batches]
    teacher = teacher_net()
    teacher.train()                                  # its mode must come back as it was
    saved = copy.deepcopy(teacher.state_dict())
    student = Sequential(Linear(6, 3, rng=3))
    agree_before = np.mean(predict(student, X).argmax(1) == predict(teacher, X).argmax(1))
    hist = distill(student, teacher, unlabeled, epochs=25, T=2.0, alpha=1.0, lr=0.05, progress=False)
    assert set(hist) >= {"loss", "train_acc", "val_acc"} and len(hist["loss"]) == 25
    assert hist["train_acc"] == [None] * 25 and hist["val_acc"] == [None] * 25
    assert hist["loss"][-1] < 0.5 * hist["loss"][0]
    agree = np.mean(predict(student, X).argmax(1) == predict(teacher, X).argmax(1))
    assert agree > max(0.85, agree_before), (agree_before, agree)
    assert all(np.array_equal(v, teacher.state_dict()[k]) for k, v in saved.items()), "the teacher must not change"
    assert all(p.grad is None for p in teacher.parameters()), "no gradient may be recorded in the teacher"
    assert teacher.training


@pytest.mark.task("distill")
def test_soft_targets_come_from_the_teacher_in_eval_mode():
    # A teacher with dropout: in training mode its outputs are random, in eval mode fixed.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 4)).astype(np.float32)
    teacher = Sequential(Linear(4, 32, rng=0), Dropout(0.9, rng=1), Linear(32, 3, rng=2))
    teacher[2].weight.data *= 5
    student = Sequential(Linear(4, 32, rng=0), Linear(32, 3, rng=2))       # = the teacher in eval mode
    student[0].weight.data[...] = teacher[0].weight.data
    student[1].weight.data[...] = teacher[2].weight.data
    student[0].bias.data[...] = teacher[0].bias.data
    student[1].bias.data[...] = teacher[2].bias.data
    before = [p.data.copy() for p in student.parameters()]
    hist = distill(student, teacher, [(Tensor(X), None)], epochs=1, T=1.0, alpha=1.0,
                   optimizer=SGD(student.parameters(), lr=0.1), progress=False)
    assert abs(hist["loss"][0]) < 1e-5, "a student equal to the eval-mode teacher has zero loss"
    assert all(np.allclose(b, p.data, atol=1e-6) for b, p in zip(before, student.parameters()))


@pytest.mark.task("distill")
def test_history_callbacks_optimizer_and_validation():
    _, _, batches = make_data()
    steps, epochs_seen = [], []

    class Recorder:
        def on_step_end(self, model):
            steps.append(model)

        def on_epoch_end(self, model, epoch, history):
            epochs_seen.append((epoch, len(history["loss"])))

    student = Sequential(Linear(6, 3, rng=0))
    hist = distill(student, teacher_net(), batches, epochs=2, alpha=0.5, lr=0.01, val_loader=batches,
                   progress=False, callbacks=[Recorder()])
    assert len(steps) == 2 * len(batches) and all(m is student for m in steps)
    assert epochs_seen == [(0, 1), (1, 2)]
    assert hist["val_acc"][-1] == evaluate(student, batches)
    assert all(0.0 <= a <= 1.0 for a in hist["train_acc"])

    class Counting:
        "An optimizer that only counts: the student must not change."
        steps = 0

        def zero_grad(self):
            pass

        def step(self):
            Counting.steps += 1

    frozen = Sequential(Linear(6, 3, rng=0))
    before = frozen[0].weight.data.copy()
    distill(frozen, teacher_net(), batches, epochs=2, optimizer=Counting(), progress=False)
    assert Counting.steps == 2 * len(batches), "the optimizer given must be the one used"
    assert np.array_equal(frozen[0].weight.data, before)


@pytest.mark.task("distill")
def test_distill_is_quiet_for_short_runs(capsys):
    _, _, batches = make_data()
    distill(Sequential(Linear(6, 3, rng=0)), teacher_net(), batches, epochs=1, progress=None)
    distill(Sequential(Linear(6, 3, rng=0)), teacher_net(), batches, epochs=1, progress=False)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.task("distill")
def test_distill_a_digits_student(mlp, flat_loaders):
    train, test = flat_loaders
    rng = np.random.default_rng(0)
    student = Sequential(Linear(64, 32, rng=rng), ReLU(), Linear(32, 10, rng=rng))
    hist = distill(student, mlp, train, epochs=4, T=2.0, alpha=0.5, lr=1e-2, val_loader=test, progress=False)
    assert hist["val_acc"][-1] == evaluate(student, test) > 0.9


@pytest.mark.task("distill")
def test_distill_bad_input():
    _, _, batches = make_data()
    student, teacher = Sequential(Linear(6, 3, rng=0)), teacher_net()
    for bad in ({"epochs": 0}, {"epochs": 1.5}, {"progress": "yes"}, {"T": 0.0}, {"alpha": 2.0}):
        with pytest.raises(ValueError):
            distill(student, teacher, batches, **bad)
    with pytest.raises(ValueError, match="different"):
        distill(teacher, teacher, batches)
    with pytest.raises(ValueError, match="targets"):
        distill(student, teacher, [(Tensor(np.zeros((2, 6))), None)], alpha=0.5)
    hist = distill(student, teacher, batches, epochs=1, progress=False)
    assert len(hist["loss"]) == 1
