"""Training: accuracy, evaluate/predict modes, fit on separable data, determinism, callbacks, progress."""
import numpy as np
import pytest

from tinytorch.core.activations import ReLU
from tinytorch.core.autograd import is_grad_enabled
from tinytorch.core.layers import Dropout, Linear, Module, Sequential
from tinytorch.core.losses import CrossEntropyLoss
from tinytorch.core.optimizers import SGD, Adam
from tinytorch.core.tensor import Tensor, manual_seed
from tinytorch.core.training import accuracy, evaluate, fit, predict


def blobs(seed=0, n_per_class=40, classes=3):
    "Three Gaussian blobs far apart: linearly separable."
    rng = np.random.default_rng(seed)
    centres = np.array([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0]])[:classes]
    X = np.concatenate([rng.normal(c, 0.6, size=(n_per_class, 2)) for c in centres]).astype(np.float32)
    y = np.repeat(np.arange(classes), n_per_class).astype(np.int64)
    return X, y


def batches(X, y, batch_size, seed):
    "A fixed, seeded shuffle cut into (Tensor, labels) batches; a list is a valid loader."
    order = np.random.default_rng(seed).permutation(len(X))
    return [(Tensor(X[order[i:i + batch_size]]), y[order[i:i + batch_size]]) for i in range(0, len(X), batch_size)]


def small_mlp(seed, dropout=0.0):
    rng = np.random.default_rng(seed)
    return Sequential(Linear(2, 16, rng=rng), ReLU(), Dropout(dropout), Linear(16, 3, rng=rng))


# -- accuracy ----------------------------------------------------------------------------

def test_accuracy_hand_computed():
    logits = np.array([[0.1, 0.9, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 2.0, 0.0]])
    assert accuracy(logits, np.array([1, 0, 2, 0])) == 0.75
    assert accuracy(Tensor(logits), [1, 0, 2, 1]) == 1.0
    assert isinstance(accuracy(logits, np.array([0, 1, 0, 0])), float)


def test_accuracy_rejects_bad_shapes():
    with pytest.raises(ValueError, match="labels of shape \\(2,\\), got \\(3,\\)"):
        accuracy(np.zeros((2, 3)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="logits of shape \\(N, C\\), got \\(3,\\)"):
        accuracy(np.zeros(3), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="empty"):
        accuracy(np.zeros((0, 3)), np.array([], dtype=np.int64))


# -- fit ---------------------------------------------------------------------------------

def test_fit_separates_blobs_perfectly():
    X, y = blobs()
    train = batches(X, y, 16, seed=1)
    model = small_mlp(0)
    history = fit(model, train, CrossEntropyLoss(), Adam(model.parameters(), lr=0.05), epochs=8,
                  val_loader=train, progress=False)
    assert set(history) == {"loss", "train_acc", "val_acc"}
    assert all(len(v) == 8 for v in history.values())
    assert history["val_acc"][-1] == 1.0 and history["train_acc"][-1] == 1.0
    assert history["loss"][-1] < 0.1 < history["loss"][0]
    assert evaluate(model, train) == 1.0
    assert (predict(model, X).argmax(axis=1) == y).all()


def test_fit_loss_is_the_sample_weighted_mean():
    # With lr tiny the model barely moves, so the epoch loss must equal the mean per-sample
    # loss of the (almost) initial model, even though the last batch is smaller.
    X, y = blobs(n_per_class=7)                             # 21 samples -> batches of 8, 8, 5
    train = batches(X, y, 8, seed=0)
    model = small_mlp(0)
    expected = CrossEntropyLoss()(Tensor(predict(model, X)), y).item()
    history = fit(model, train, CrossEntropyLoss(), SGD(model.parameters(), lr=1e-9), progress=False)
    assert history["loss"][0] == pytest.approx(expected, rel=1e-5)
    assert history["val_acc"] == [None]                     # no val_loader: one None per epoch


def test_loss_needs_inputs_gets_each_batch_inputs_and_allows_no_labels():
    X, y = blobs()
    train = [(Tensor(X[i:i + 30]), None) for i in range(0, len(X), 30)]   # no labels at all
    seen = []

    def loss_fn(logits, targets, inputs):
        seen.append((targets, inputs.data.copy()))
        return (logits * logits).mean()

    model = small_mlp(0)
    history = fit(model, train, loss_fn, SGD(model.parameters(), lr=0.01), epochs=2, progress=False,
                  loss_needs_inputs=True)
    assert len(seen) == 2 * len(train)
    assert all(t is None for t, _ in seen)
    assert all(np.array_equal(x, batch.data) for (_, x), (batch, _) in zip(seen, train + train))
    assert history["train_acc"] == [None, None] and len(history["loss"]) == 2


def test_fit_with_regression_targets_has_no_accuracy():
    from tinytorch.core.losses import MSELoss
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 3)).astype(np.float32)
    y = (X @ np.array([[1.0], [-1.0], [2.0]])).astype(np.float32)
    loader = [(Tensor(X[i:i + 8]), y[i:i + 8]) for i in range(0, 32, 8)]
    model = Linear(3, 1, rng=0)
    history = fit(model, loader, MSELoss(), SGD(model.parameters(), lr=0.1), epochs=20, progress=False)
    assert history["train_acc"] == [None] * 20
    assert history["loss"][-1] < 1e-3 * history["loss"][0]


def test_fit_is_deterministic_given_seeds():
    X, y = blobs()

    def run():
        manual_seed(123)                                    # Dropout draws from the library generator
        model = small_mlp(7, dropout=0.2)
        train = batches(X, y, 16, seed=5)
        history = fit(model, train, CrossEntropyLoss(), SGD(model.parameters(), lr=0.1, momentum=0.9),
                      epochs=3, val_loader=train, progress=False)
        return history, model.state_dict()

    (h1, s1), (h2, s2) = run(), run()
    assert h1 == h2                                         # bit-for-bit identical floats
    for name in s1:
        np.testing.assert_array_equal(s1[name], s2[name])
    manual_seed(124)
    model = small_mlp(7, dropout=0.2)
    h3 = fit(model, batches(X, y, 16, seed=5), CrossEntropyLoss(), SGD(model.parameters(), lr=0.1, momentum=0.9),
             epochs=3, progress=False)
    assert h3["loss"] != h1["loss"]                         # the dropout seed does matter


def test_fit_trains_in_train_mode_and_evaluates_in_eval_mode():
    seen = []

    class Probe(Module):
        def __init__(self):
            super().__init__()
            self.linear = Linear(2, 3, rng=0)

        def forward(self, x):
            seen.append((self.training, is_grad_enabled()))
            return self.linear(x)

    X, y = blobs(n_per_class=4)
    train = batches(X, y, 6, seed=0)                        # 2 batches
    model = Probe()
    model.eval()                                            # fit must switch it back to training
    fit(model, train, CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), epochs=1, val_loader=train,
        progress=False)
    assert seen == [(True, True), (True, True), (False, False), (False, False)]
    assert model.training                                   # evaluate restored the mode
    seen.clear()
    model.train()
    predict(model, X)
    assert seen == [(False, False)] and model.training and is_grad_enabled()


def test_evaluate_restores_each_submodule_mode():
    model = small_mlp(0, dropout=0.5)
    model.train()
    model[2].eval()                                         # a mixed state must survive evaluate
    X, y = blobs(n_per_class=3)
    evaluate(model, [(Tensor(X), y)])
    assert model.training and model[0].training and not model[2].training
    # eval mode: Dropout is off, so predictions are repeatable
    model.train()
    np.testing.assert_array_equal(predict(model, X), predict(model, X))


def test_evaluate_weights_samples_not_batches():
    model = Linear(2, 2)
    model.load_state_dict({"weight": np.array([[1.0, 0.0], [0.0, 1.0]]), "bias": np.zeros(2)})
    X = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    y = np.array([0, 0, 0, 0])
    loader = [(Tensor(X[:3]), y[:3]), (Tensor(X[3:]), y[3:])]   # batch accuracies 1.0 and 0.0
    assert evaluate(model, loader) == 0.75


def test_callbacks_are_called():
    class Recorder:
        def __init__(self):
            self.steps, self.epochs = 0, []

        def on_step_end(self, model):
            self.steps += 1

        def on_epoch_end(self, model, epoch, history):
            self.epochs.append((epoch, len(history["loss"])))

    class OnlyEpochs:
        def __init__(self):
            self.calls = 0

        def on_epoch_end(self, model, epoch, history):
            self.calls += 1

    X, y = blobs(n_per_class=10)
    train = batches(X, y, 8, seed=0)                        # 30 samples -> 4 batches
    model = small_mlp(0)
    recorder, only = Recorder(), OnlyEpochs()
    fit(model, train, CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), epochs=3, progress=False,
        callbacks=[recorder, only, object()])
    assert recorder.steps == 12
    assert recorder.epochs == [(0, 1), (1, 2), (2, 3)]      # history already holds the epoch
    assert only.calls == 3


def test_pruning_style_callback_keeps_masks():
    # A mask set on a weight survives training: the optimizer honours it at every step.
    X, y = blobs()
    model = small_mlp(0)
    mask = np.random.default_rng(0).random(model[0].weight.shape) > 0.5
    model[0].weight.data[~mask] = 0.0
    model[0].weight.mask = mask
    fit(model, batches(X, y, 16, seed=0), CrossEntropyLoss(), Adam(model.parameters(), lr=0.05),
        epochs=2, progress=False)
    assert np.all(model[0].weight.data[~mask] == 0.0)


# -- progress bar ----------------------------------------------------------------------

def _quick_fit(progress):
    X, y = blobs(n_per_class=5)
    model = small_mlp(0)
    return fit(model, batches(X, y, 5, seed=0), CrossEntropyLoss(), SGD(model.parameters(), lr=0.1),
               epochs=2, progress=progress)


def test_progress_bar_only_when_asked_or_slow(capsys):
    _quick_fit(progress=False)
    assert capsys.readouterr().err == ""
    _quick_fit(progress=None)                               # a quick run stays silent (delay=2 s)
    assert capsys.readouterr().err == ""
    _quick_fit(progress=True)
    assert "training" in capsys.readouterr().err


# -- bad input ---------------------------------------------------------------------------

def test_fit_rejects_bad_arguments():
    X, y = blobs(n_per_class=2)
    model = small_mlp(0)
    args = (model, batches(X, y, 3, seed=0), CrossEntropyLoss(), SGD(model.parameters(), lr=0.1))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="epochs must be a positive int"):
            fit(*args, epochs=bad)
    with pytest.raises(ValueError, match="progress must be"):
        fit(*args, progress="yes")


def test_one_shot_generator_is_caught():
    X, y = blobs(n_per_class=2)
    model = small_mlp(0)
    loader = (batch for batch in batches(X, y, 3, seed=0))  # used up after one epoch
    with pytest.raises(ValueError, match="no batches in epoch 2"):
        fit(model, loader, CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), epochs=2, progress=False)
    with pytest.raises(ValueError, match="no batches"):
        evaluate(model, [])
