"""The gradual pruning schedule (given) and iterative pruning (task iterative-prune)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinytorch.compression.prune as prune_module
from tinytorch.compression.prune import iterative_prune, magnitude_prune, polynomial_schedule, prunable_weights
from tinytorch.core.activations import ReLU
from tinytorch.core.layers import Linear, Sequential
from tinytorch.core.losses import CrossEntropyLoss
from tinytorch.core.optimizers import Adam
from tinytorch.core.training import evaluate, fit
from compression_oracles import zero_fraction


def test_schedule_hand_computed():
    assert np.allclose(polynomial_schedule(0.0, 0.8, 4, power=1), [0.2, 0.4, 0.6, 0.8])
    # s_t = 0.9 + (0.5 - 0.9) * (1 - t/2)^3: t=1 -> 0.9 - 0.4/8 = 0.85
    assert np.allclose(polynomial_schedule(0.5, 0.9, 2), [0.85, 0.9])
    assert polynomial_schedule(0.3, 0.3, 3).tolist() == [0.3, 0.3, 0.3]


@given(st.floats(0.0, 0.99), st.floats(0.0, 0.99), st.integers(1, 40), st.floats(0.5, 5.0))
def test_schedule_properties(a, b, steps, power):
    initial, final = min(a, b), max(a, b)
    s = polynomial_schedule(initial, final, steps, power)
    assert len(s) == steps and s[-1] == final
    assert np.all(np.diff(s) >= -1e-12) and np.all(s >= initial - 1e-12) and np.all(s <= final + 1e-12)
    t = np.arange(1, steps + 1) / steps
    assert np.allclose(s, final + (initial - final) * (1 - t) ** power)


def test_schedule_bad_input():
    for args in ((0.5, 0.2, 3), (0.0, 1.0, 3), (0.0, 0.5, 0), (0.0, 0.5, 2.5)):
        with pytest.raises(ValueError):
            polynomial_schedule(*args)
    with pytest.raises(ValueError, match="power"):
        polynomial_schedule(0.0, 0.5, 3, power=0)
    assert len(polynomial_schedule(0.0, 0.5, 3)) == 3


def fresh_net():
    return Sequential(Linear(6, 24, rng=0), ReLU(), Linear(24, 2, rng=1))


@pytest.mark.task("iterative-prune")
def test_history_follows_the_schedule(small_batches):
    data = small_batches()
    net = fresh_net()
    hist = iterative_prune(net, data, 0.8, steps=4, epochs_per_step=2, test_data=data, progress=False)
    assert set(hist) >= {"step", "target", "sparsity", "accuracy"}
    assert all(isinstance(hist[key], list) for key in ("step", "target", "sparsity", "accuracy"))
    assert hist["step"] == [0, 1, 2, 3, 4]
    assert np.allclose(hist["target"][1:], 0.8 - 0.8 * (1 - np.arange(1, 5) / 4) ** 3)   # the cubic schedule
    n = 6 * 24 + 24 * 2
    for target, sparsity in zip(hist["target"][1:], hist["sparsity"][1:]):
        assert sparsity == round(target * n) / n                 # exact counts at every step
    assert hist["sparsity"][-1] == zero_fraction(net) == round(0.8 * n) / n
    assert hist["accuracy"][-1] == evaluate(net, data)
    assert all(w.mask is not None for _, w in prunable_weights(net)), "masks stay for later fine-tuning"


@pytest.mark.task("iterative-prune")
@given(st.floats(0.1, 0.95), st.integers(1, 4), st.integers(0, 1))
def test_sparsity_never_decreases_and_pruned_weights_stay_zero(final, steps, epochs):
    from tinytorch.core.tensor import Tensor
    rng = np.random.default_rng(steps)
    X = rng.normal(size=(40, 6)).astype(np.float32)
    data = [(Tensor(X), (X[:, 0] > 0).astype(np.int64))]
    net = fresh_net()
    hist = iterative_prune(net, data, final, steps=steps, epochs_per_step=epochs, progress=False)
    assert all(b >= a for a, b in zip(hist["sparsity"], hist["sparsity"][1:]))
    assert hist["accuracy"] == [None] * (steps + 1)
    for _, w in prunable_weights(net):
        assert (w.data[~w.mask] == 0).all()


@pytest.mark.task("iterative-prune")
def test_fine_tuning_happens_and_helps(small_batches):
    data = small_batches(n=128)
    trained = fresh_net()
    before = evaluate(trained, data)
    hist = iterative_prune(trained, data, 0.0, steps=1, epochs_per_step=30, test_data=data, progress=False, lr=0.01)
    assert hist["accuracy"] == [before, evaluate(trained, data)]
    assert evaluate(trained, data) > max(0.9, before), "30 epochs of fine-tuning must learn the problem"
    untouched = fresh_net()
    iterative_prune(untouched, data, 0.5, steps=2, epochs_per_step=0, progress=False)
    assert np.array_equal(untouched[2].bias.data, fresh_net()[2].bias.data), "0 epochs: prune only"
    assert zero_fraction(untouched) == pytest.approx(0.5, abs=0.01)


@pytest.mark.task("iterative-prune")
def test_iterative_prune_on_digits(mlp, flat_loaders):
    train, test = flat_loaders
    hist = iterative_prune(mlp, list(train)[:6], 0.9, steps=3, epochs_per_step=1, test_data=test,
                           progress=False, lr=3e-3)
    assert hist["sparsity"][-1] == pytest.approx(0.9, abs=1e-4)
    assert hist["accuracy"][-1] > 0.8


@pytest.mark.task("iterative-prune")
def test_step_zero_records_the_model_as_given(small_batches):
    data = small_batches()
    net = fresh_net()
    net[0].weight.data[0, :] = 0.0                               # 6 of 192 weights already zero
    before = evaluate(net, data)
    hist = iterative_prune(net, data, 0.5, steps=2, epochs_per_step=1, test_data=data, initial_sparsity=0.1,
                           progress=False)
    assert [hist[key][0] for key in ("step", "target", "sparsity", "accuracy")] == [0, 0.1, 6 / 192, before]


@pytest.mark.task("iterative-prune")
def test_weights_match_the_recipe_with_one_adam_for_the_whole_run(small_batches):
    """The lesson's recipe, written out: prune to each target, then fit with the one Adam, whose
    moment estimates carry over; a fresh Adam per step, another loss or another lr end elsewhere."""
    net, recipe = fresh_net(), fresh_net()
    iterative_prune(net, small_batches(), 0.6, steps=3, epochs_per_step=2, progress=False, lr=0.02)
    optimizer = Adam(recipe.parameters(), lr=0.02)
    for target in polynomial_schedule(0.0, 0.6, 3, 3):
        magnitude_prune(recipe, float(target))
        fit(recipe, small_batches(), CrossEntropyLoss(), optimizer, epochs=2, progress=False)
    for (name, got), (_, want) in zip(prunable_weights(net), prunable_weights(recipe)):
        np.testing.assert_allclose(got.data, want.data, rtol=1e-6, atol=1e-7,
                                   err_msg=f"{name}: not what prune, then fit with one Adam(lr=lr), gives")


# Ungraded: it watches the student's own process (a patched Adam), which the grader keeps apart from
# the tests (tito/grading/DESIGN.md); `tito test` runs it, so a student still sees it fail.
def test_one_adam_serves_the_whole_run(small_batches, monkeypatch):
    made = []

    class CountingAdam(prune_module.Adam):
        def __init__(self, *args, **kwargs):
            made.append(kwargs.get("lr", args[1] if len(args) > 1 else None))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(prune_module, "Adam", CountingAdam)
    iterative_prune(fresh_net(), small_batches(), 0.6, steps=3, epochs_per_step=1, progress=False, lr=0.02)
    assert made == [0.02], f"expected one Adam(model.parameters(), lr=lr) for the whole run, got {len(made)}"
