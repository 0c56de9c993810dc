# %% [markdown]
# # Module 07: Training
#
# > `fit`, `evaluate`, `predict` and `accuracy`: the training loop, written once and reused by every later module.
#
# Every model in this course is trained by the same loop:
#
# ```
# for each epoch:
#     for each batch (X, y):
#         optimizer.zero_grad()
#         loss = loss_fn(model(X), y)
#         loss.backward()
#         optimizer.step()
# ```
#
# This module wraps it in `fit`, which also records a history (loss and accuracy per
# epoch), shows a progress bar on long runs, and calls *callbacks*: small hooks that
# later modules use, for example to prune a little more after every epoch.

# %%
#| default_exp core.training

# %%
#| export
from contextlib import contextmanager

import numpy as np
from tqdm import tqdm
from tinytorch.core.tensor import Tensor
from tinytorch.core.autograd import no_grad
from tinytorch.core.checks import is_int

# %% [markdown]
# ## 1. Accuracy
# The predicted class is the index of the largest logit (softmax never changes which one
# is largest, so we skip it). Accuracy is the fraction of rows where that index equals
# the label.

# %%
#| export
def accuracy(logits, labels) -> float:
    "Fraction of rows whose largest logit is at the label's index; logits (N, C), labels int (N,)."
    scores = logits.data if isinstance(logits, Tensor) else np.asarray(logits)
    labels = np.asarray(labels)
    if scores.ndim != 2:
        raise ValueError(f"accuracy expects logits of shape (N, C), got {scores.shape}")
    if labels.shape != (scores.shape[0],):
        raise ValueError(f"accuracy expects labels of shape ({scores.shape[0]},), got {labels.shape}")
    if scores.shape[0] == 0:
        raise ValueError("accuracy of an empty batch is undefined")
    return float(np.mean(scores.argmax(axis=1) == labels))

# %%
logits = np.array([[0.1, 2.0], [3.0, -1.0], [0.0, 0.5], [1.0, 0.0]])
assert accuracy(Tensor(logits), np.array([1, 0, 0, 0])) == 0.75
print("✓ accuracy: 3 of 4 rows have their largest logit at the label")

# %% [markdown]
# ## 2. Evaluate and predict
# At test time we switch the model to `eval()` (Dropout off) and turn autograd off with
# `no_grad()`: no graph is recorded, which saves memory and time. Both functions put
# the model back into the mode they found it in, so calling them in the middle of
# training is safe.
#
# A *loader* is anything we can loop over, batch by batch, as `(X, y)` pairs: a list
# works, and so will Module 08's `DataLoader`. The accuracy over the loader weights
# every sample equally, even if the last batch is smaller.

# %%
#| export
def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


@contextmanager
def _evaluation(model):
    "Eval mode and no_grad inside the block; every sub-module's own mode restored after it."
    modules = model.modules() if hasattr(model, "modules") else []
    saved = [(m, m.training) for m in modules if hasattr(m, "training")]
    if hasattr(model, "eval"):
        model.eval()
    try:
        with no_grad():
            yield model
    finally:
        for module, mode in saved:
            module.training = mode


def predict(model, X) -> np.ndarray:
    "The model's outputs (e.g. logits) for inputs X as an array, in eval mode and without recording gradients."
    with _evaluation(model):
        return model(_as_tensor(X)).data.copy()


def evaluate(model, loader) -> float:
    "Accuracy in [0, 1] of the model over every (X, y) batch of the loader (eval mode, no_grad)."
    correct, seen = 0.0, 0
    with _evaluation(model):
        for X, y in loader:
            correct += accuracy(model(_as_tensor(X)), y) * len(y)
            seen += len(y)
    if seen == 0:
        raise ValueError("evaluate got a loader that yielded no batches")
    return correct / seen

# %%
from tinytorch.core.layers import Linear

# Identity weights: the predicted class is the larger input coordinate.
model = Linear(2, 2)
model.load_state_dict({"weight": np.eye(2), "bias": np.zeros(2)})
X = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0]], dtype=np.float32)
loader = [(Tensor(X[:2]), np.array([0, 1])), (Tensor(X[2:]), np.array([0]))]
assert np.allclose(predict(model, X), X)
assert abs(evaluate(model, loader) - 2 / 3) < 1e-12       # 2 of 3 samples, not 1.5 of 2 batches
assert model.training                                       # the mode it had before
print("✓ predict returns the outputs, evaluate averages over samples, modes are restored")

# %% [markdown]
# ## 3. fit
# `fit` runs the loop above for `epochs` passes over `train_loader` and returns a
# history dict with one entry per epoch:
#
# - `"loss"`: mean training loss over the epoch's samples,
# - `"train_acc"`: accuracy on the training batches as they were seen (in train mode;
#   `None` if the targets are not integer class labels, e.g. for a regression loss),
# - `"val_acc"`: `evaluate(model, val_loader)` after the epoch, or `None` without one.
#
# **Progress.** A tqdm bar over all batches appears only if the run lasts longer than
# 2 seconds (`delay=2`), so quick runs and tests stay quiet. `progress=True` shows it
# at once, `progress=False` never.
#
# **Callbacks.** Any object with `on_step_end(model)` and/or
# `on_epoch_end(model, epoch, history)` methods; `fit` calls whichever exist.
#
# **Losses that need the inputs.** `loss_fn(logits, y)` is all most losses need. With
# `loss_needs_inputs=True`, `fit` calls `loss_fn(logits, y, X)` instead: distillation
# (Module 20) asks a teacher model about the same inputs `X`. Targets may then be `None`
# (no labels: `train_acc` is `None`). `desc` names the progress bar.
#
# **Determinism.** `fit` draws no random numbers itself: the shuffling order comes from
# the loader's seed and Dropout from its `rng` or `manual_seed`, so the same seeds give
# the same history, bit for bit.

# %%
#| export
def _are_class_labels(logits: Tensor, y) -> bool:
    "Integer labels (N,) for (N, C) logits: accuracy makes sense (not, e.g., regression targets)."
    return isinstance(y, np.ndarray) and y.ndim == 1 and np.issubdtype(y.dtype, np.integer) and logits.ndim == 2


def _callback_hooks(callbacks, name: str) -> list:
    return [getattr(cb, name) for cb in callbacks if callable(getattr(cb, name, None))]


def fit(model, train_loader, loss_fn, optimizer, epochs: int = 1, val_loader=None,
        progress=None, callbacks=(), loss_needs_inputs: bool = False, desc: str = "training") -> dict:
    "Train for `epochs` passes; returns {'loss': [...], 'train_acc': [...], 'val_acc': [...]}, one entry per epoch."
    if not is_int(epochs) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if progress not in (None, True, False):
        raise ValueError(f"progress must be None (auto), True or False, got {progress!r}")
    callbacks = list(callbacks)
    step_hooks = _callback_hooks(callbacks, "on_step_end")
    epoch_hooks = _callback_hooks(callbacks, "on_epoch_end")
    try:
        total = epochs * len(train_loader)
    except TypeError:                              # a loader without len(): bar without total
        total = None
    history = {"loss": [], "train_acc": [], "val_acc": []}
    bar = tqdm(total=total, disable=progress is False, delay=0 if progress else 2,
               desc=desc, unit="batch", leave=False)
    try:
        for epoch in range(epochs):
            model.train()
            loss_sum, correct, seen = 0.0, 0.0, 0
            # refresh=False: a forced redraw would show the bar before tqdm's delay is over
            last = {"loss": f"{history['loss'][-1]:.4f}"} if history["loss"] else {}
            bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", **last, refresh=False)
            for X, y in train_loader:
                X = _as_tensor(X)
                optimizer.zero_grad()
                logits = model(X)
                loss = loss_fn(logits, y, X) if loss_needs_inputs else loss_fn(logits, y)
                loss.backward()
                optimizer.step()
                for hook in step_hooks:
                    hook(model)
                n = logits.shape[0]                # y may be None (a loss that needs no labels)
                loss_sum += loss.item() * n
                if correct is not None and _are_class_labels(logits, y):
                    correct += accuracy(logits, y) * n
                else:
                    correct = None                 # regression-style targets: no accuracy
                seen += n
                bar.update(1)
            if seen == 0:
                raise ValueError(f"train_loader yielded no batches in epoch {epoch + 1} "
                                 "(a generator is used up after one pass; pass a list or a DataLoader)")
            history["loss"].append(loss_sum / seen)
            history["train_acc"].append(None if correct is None else correct / seen)
            history["val_acc"].append(evaluate(model, val_loader) if val_loader is not None else None)
            for hook in epoch_hooks:
                hook(model, epoch, history)
    finally:
        bar.close()
    return history

# %% [markdown]
# ## 4. Try it: two blobs, one linear layer
# Two well-separated Gaussian blobs are linearly separable, so a single `Linear` layer
# trained with cross-entropy must reach 100% accuracy.

# %%
from tinytorch.core.losses import CrossEntropyLoss
from tinytorch.core.optimizers import SGD

rng = np.random.default_rng(0)
X = np.concatenate([rng.normal(-2, 0.5, (50, 2)), rng.normal(2, 0.5, (50, 2))]).astype(np.float32)
y = np.repeat([0, 1], 50)
order = rng.permutation(100)
batches = [(Tensor(X[order[i:i + 20]]), y[order[i:i + 20]]) for i in range(0, 100, 20)]

class CountEpochs:
    def __init__(self):
        self.seen = []

    def on_epoch_end(self, model, epoch, history):
        self.seen.append(epoch)

model = Linear(2, 2, rng=np.random.default_rng(0))
counter = CountEpochs()
history = fit(model, batches, CrossEntropyLoss(), SGD(model.parameters(), lr=0.5),
              epochs=5, val_loader=batches, callbacks=[counter])
print({key: [round(v, 3) for v in values] for key, values in history.items()})
assert history["loss"][-1] < history["loss"][0]
assert history["val_acc"][-1] == 1.0 and evaluate(model, batches) == 1.0
assert counter.seen == [0, 1, 2, 3, 4]
assert predict(model, X[:3]).shape == (3, 2)
print("✓ fit separates two blobs perfectly and calls the epoch callback every epoch")

# %% [markdown]
# ## Summary
# - `fit` = zero_grad, forward, loss, backward, step, per batch, per epoch; it returns
#   a history you can plot.
# - `evaluate`/`predict` use eval mode and `no_grad`, and restore the model's mode.
# - Callbacks let later modules (pruning, distillation) hook into training without
#   rewriting the loop.
