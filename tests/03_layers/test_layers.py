"""Layers: Module bookkeeping, Linear/Flatten/Dropout/Sequential forward and gradients."""
import numpy as np
import pytest

from tinytorch.core.activations import ReLU, Sigmoid, Tanh
from tinytorch.core.layers import Dropout, Flatten, Linear, Module, Sequential
from tinytorch.core.tensor import Tensor, manual_seed
from gradcheck import numerical_grad


def to_float64(module):
    "Replace every parameter with a float64 copy (finite differences need the precision)."
    for _, sub in module.named_modules():
        if isinstance(sub, Module):
            for name, param in list(sub._parameters.items()):
                setattr(sub, name, Tensor(param.data.astype(np.float64), requires_grad=True, dtype=np.float64))
    return module


def mlp(seed=0):
    rng = np.random.default_rng(seed)
    return Sequential(Linear(4, 6, rng=rng), ReLU(), Linear(6, 5, rng=rng), Tanh(), Linear(5, 3, rng=rng))


# -- Linear -------------------------------------------------------------------------------

def test_linear_forward_matches_numpy():
    layer = Linear(4, 3, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    out = layer(Tensor(x))
    assert out.shape == (5, 3) and out.data.dtype == np.float32
    np.testing.assert_allclose(out.data, x @ layer.weight.data.T + layer.bias.data, rtol=1e-5, atol=1e-6)
    # leading batch dimensions are kept, as in PyTorch
    x3 = np.ones((2, 7, 4), dtype=np.float32)
    assert layer(Tensor(x3)).shape == (2, 7, 3)
    # hand-computed: W = [[1, 2]], b = [0.5] -> [1, 1] @ W.T + b = 3.5
    tiny = Linear(2, 1)
    tiny.load_state_dict({"weight": np.array([[1.0, 2.0]]), "bias": np.array([0.5])})
    assert tiny(Tensor([[1.0, 1.0]])).data.tolist() == [[3.5]]


def test_linear_init_is_pytorch_uniform_and_seeded():
    layer = Linear(400, 300, rng=np.random.default_rng(0))
    bound = 1 / np.sqrt(400)
    w = layer.weight.data
    assert w.shape == (300, 400) and layer.bias.shape == (300,) and w.dtype == np.float32
    assert layer.weight.requires_grad and layer.bias.requires_grad
    assert np.abs(w).max() <= bound and np.abs(layer.bias.data).max() <= bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.01 * bound       # std of U(-a, a) is a / sqrt(3)
    assert abs(w.mean()) < 0.01 * bound
    same = Linear(400, 300, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(same.weight.data, w)
    np.testing.assert_array_equal(Linear(400, 300, rng=0).weight.data, Linear(400, 300, rng=0).weight.data)
    manual_seed(3)
    a = Linear(5, 5).weight.data
    manual_seed(3)
    np.testing.assert_array_equal(Linear(5, 5).weight.data, a)


def test_linear_without_bias():
    layer = Linear(3, 2, bias=False)
    assert layer.bias is None and [n for n, _ in layer.named_parameters()] == ["weight"]
    x = np.ones((1, 3), dtype=np.float32)
    np.testing.assert_allclose(layer(Tensor(x)).data, x @ layer.weight.data.T, rtol=1e-6)
    assert repr(layer) == "Linear(in_features=3, out_features=2, bias=False)"


def test_linear_gradients_match_finite_differences():
    pytest.importorskip("tinytorch.core.autograd")
    rng = np.random.default_rng(2)
    layer = to_float64(Linear(4, 3, rng=rng))
    x = rng.normal(size=(5, 4))
    proj = rng.normal(size=(5, 3))
    xt = Tensor(x, requires_grad=True, dtype=np.float64)
    (layer(xt) * proj).sum().backward()

    def loss(_nudged):  # reads x and the parameters themselves: numerical_grad nudges them in place
        return float(((x @ layer.weight.data.T + layer.bias.data) * proj).sum())

    np.testing.assert_allclose(xt.grad, numerical_grad(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(layer.weight.grad, numerical_grad(loss, layer.weight.data), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(layer.bias.grad, numerical_grad(loss, layer.bias.data), rtol=1e-6, atol=1e-8)
    # and the closed forms: dW = proj.T @ x, db = proj.sum(0)
    np.testing.assert_allclose(layer.weight.grad, proj.T @ x, rtol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, proj.sum(axis=0), rtol=1e-12)


def test_sequential_gradients_match_finite_differences():
    pytest.importorskip("tinytorch.core.autograd")
    rng = np.random.default_rng(3)
    net = to_float64(Sequential(Linear(3, 4, rng=rng), Sigmoid(), Linear(4, 2, rng=rng)))
    x = rng.normal(size=(6, 3))
    proj = rng.normal(size=(6, 2))
    (net(Tensor(x, dtype=np.float64)) * proj).sum().backward()

    def loss(_nudged):  # runs the net, whose parameters numerical_grad nudges in place
        return float((net(Tensor(x, dtype=np.float64)).data * proj).sum())

    for name, param in net.named_parameters():
        np.testing.assert_allclose(param.grad, numerical_grad(loss, param.data), rtol=1e-6, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "4", None])
def test_linear_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="in_features must be a positive int"):
        Linear(bad, 3)
    with pytest.raises(ValueError, match="out_features must be a positive int"):
        Linear(3, bad)


def test_linear_names_expected_and_received_width():
    with pytest.raises(ValueError) as err:
        Linear(64, 10)(Tensor(np.ones((8, 32))))
    assert "64" in str(err.value) and "(8, 32)" in str(err.value)
    with pytest.raises(TypeError, match="rng"):
        Linear(2, 2, rng="seed")


@pytest.mark.parametrize("layer", [Linear(2, 2), Flatten(), Dropout(0.5)], ids=repr)
def test_layers_want_tensors(layer):
    with pytest.raises(TypeError, match="expects a Tensor, got ndarray"):
        layer(np.ones((2, 2)))


# -- Module bookkeeping -------------------------------------------------------------------

def test_sequential_names_like_pytorch():
    net = mlp()
    assert [n for n, _ in net.named_parameters()] == [
        "0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    assert [n for n, _ in net.named_modules()] == ["", "0", "1", "2", "3", "4"]
    assert net.modules()[0] is net and len(net.children()) == 5
    assert [p.shape for p in net.parameters()] == [(6, 4), (6,), (5, 6), (5,), (3, 5), (3,)]
    assert len(net) == 5 and isinstance(net[1], ReLU) and net[-1] is net[4]
    assert list(net) == net.children()
    tail = net[2:]
    assert isinstance(tail, Sequential) and len(tail) == 3
    assert [n for n, _ in tail.named_parameters()] == ["2.weight", "2.bias", "4.weight", "4.bias"]
    with pytest.raises(IndexError, match="out of range"):
        net[5]


def test_nested_modules_and_custom_attributes():
    class Block(Module):
        def __init__(self):
            super().__init__()
            self.body = Sequential(Linear(2, 2, rng=0), ReLU())
            self.scale = Tensor(np.ones(2), requires_grad=True)
            self.constant = Tensor(np.ones(2))              # requires_grad=False: not a parameter
            self.act = Sigmoid()

        def forward(self, x):
            return self.act(self.body(x) * self.scale)

    block = Block()
    # PyTorch's order: a module's own parameters first, then its children's
    assert [n for n, _ in block.named_parameters()] == ["scale", "body.0.weight", "body.0.bias"]
    assert [n for n, _ in block.named_modules()] == ["", "body", "body.0", "body.1", "act"]
    block.scale = None                                      # reassigning unregisters
    assert "scale" not in [n for n, _ in block.named_parameters()]
    shared = Linear(2, 2)
    twice = Sequential(shared, shared)
    assert len(twice.parameters()) == 2                     # a shared layer's weights count once


def test_registration_order_is_assignment_order():
    class Net(Module):
        def __init__(self):
            super().__init__()
            self.b = Tensor([1.0], requires_grad=True)
            self.a = Linear(1, 1)
            self.c = Tensor([2.0], requires_grad=True)

    assert [n for n, _ in Net().named_parameters()] == ["b", "c", "a.weight", "a.bias"]


def test_forgetting_super_init_is_a_clear_error():
    class Broken(Module):
        def __init__(self):
            self.w = Tensor([1.0], requires_grad=True)

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Broken()


def test_train_eval_propagate():
    net = Sequential(Linear(2, 2), Sequential(Dropout(0.5), Linear(2, 2)))
    assert net.eval() is net
    assert all(not m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    net.train(False)
    assert not net[1][0].training


def test_zero_grad_clears_every_parameter():
    net = mlp()
    for p in net.parameters():
        p.grad = np.ones(p.shape, dtype=np.float32)
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_repr_like_pytorch():
    net = Sequential(Flatten(), Linear(4, 2), ReLU(), Dropout(0.1), Sequential(Linear(2, 2, bias=False)))
    assert repr(net) == (
        "Sequential(\n"
        "  (0): Flatten(start_dim=1)\n"
        "  (1): Linear(in_features=4, out_features=2, bias=True)\n"
        "  (2): ReLU()\n"
        "  (3): Dropout(p=0.1)\n"
        "  (4): Sequential(\n"
        "    (0): Linear(in_features=2, out_features=2, bias=False)\n"
        "  )\n"
        ")")


def test_sequential_rejects_non_layers():
    with pytest.raises(TypeError, match="layer '1'"):
        Sequential(Linear(2, 2), 3)


# -- state_dict -----------------------------------------------------------------------------

def test_state_dict_round_trip_copies():
    net, other = mlp(0), mlp(1)
    state = net.state_dict()
    assert list(state) == [n for n, _ in net.named_parameters()]
    assert all(isinstance(v, np.ndarray) for v in state.values())
    state["0.weight"][...] = 7.0                           # a copy: the model is untouched
    assert not np.any(net[0].weight.data == 7.0)
    weight_object = other[0].weight
    other.load_state_dict(net.state_dict())
    assert other[0].weight is weight_object                 # loaded in place
    assert other[0].weight.data.dtype == np.float32
    x = Tensor(np.random.default_rng(0).normal(size=(3, 4)))
    np.testing.assert_array_equal(other(x).data, net(x).data)


def test_load_state_dict_accepts_tensors():
    layer = Linear(2, 1)
    layer.load_state_dict({"weight": Tensor([[1.0, 2.0]]), "bias": Tensor([3.0])})
    assert layer.weight.data.tolist() == [[1.0, 2.0]] and layer.bias.data.tolist() == [3.0]


def test_load_state_dict_errors_and_atomicity():
    net = mlp()
    before = net.state_dict()
    good = mlp(5).state_dict()

    missing = dict(good)
    del missing["2.bias"]
    with pytest.raises(KeyError, match="missing keys \\['2.bias'\\]"):
        net.load_state_dict(missing)

    extra = dict(good, **{"9.weight": np.zeros(1)})
    with pytest.raises(KeyError, match="unexpected keys \\['9.weight'\\]"):
        net.load_state_dict(extra)

    wrong = dict(good)
    wrong["4.weight"] = np.zeros((5, 3))
    with pytest.raises(ValueError, match="4.weight.*\\(5, 3\\).*\\(3, 5\\)"):
        net.load_state_dict(wrong)

    for name, value in net.state_dict().items():           # nothing was half-loaded
        np.testing.assert_array_equal(value, before[name])


# -- Flatten and Dropout --------------------------------------------------------------------

def test_flatten():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(Flatten()(Tensor(x)).data, x.reshape(2, 60))
    np.testing.assert_array_equal(Flatten(start_dim=2)(Tensor(x)).data, x.reshape(2, 3, 20))
    np.testing.assert_array_equal(Flatten(start_dim=0)(Tensor(x)).data, x.reshape(120))
    with pytest.raises(ValueError, match="start_dim=4"):
        Flatten(start_dim=4)(Tensor(x))


def test_flatten_gradient_has_input_shape():
    pytest.importorskip("tinytorch.core.autograd")
    x = Tensor(np.ones((2, 3, 2)), requires_grad=True)
    w = np.arange(12, dtype=np.float32).reshape(2, 6)
    (Flatten()(x) * w).sum().backward()
    np.testing.assert_array_equal(x.grad, w.reshape(2, 3, 2))


def test_dropout_train_and_eval():
    drop = Dropout(0.3, rng=np.random.default_rng(0))
    x = np.full((400, 250), 2.0, dtype=np.float32)
    out = drop(Tensor(x)).data
    assert set(np.unique(out).tolist()) == {0.0, np.float32(2.0 / 0.7)}
    assert abs((out == 0).mean() - 0.3) < 0.01
    assert abs(out.mean() - 2.0) < 0.03                     # inverted dropout keeps the mean
    drop.eval()
    np.testing.assert_array_equal(drop(Tensor(x)).data, x)
    np.testing.assert_array_equal(Dropout(0.0)(Tensor(x)).data, x)
    np.testing.assert_array_equal(Dropout(1.0)(Tensor(x)).data, np.zeros_like(x))


def test_dropout_is_seeded():
    a = Dropout(0.5, rng=7)(Tensor(np.ones((10, 10)))).data
    b = Dropout(0.5, rng=7)(Tensor(np.ones((10, 10)))).data
    np.testing.assert_array_equal(a, b)
    manual_seed(11)
    c = Dropout(0.5)(Tensor(np.ones((10, 10)))).data
    manual_seed(11)
    np.testing.assert_array_equal(Dropout(0.5)(Tensor(np.ones((10, 10)))).data, c)


def test_dropout_gradient_uses_the_same_mask():
    pytest.importorskip("tinytorch.core.autograd")
    x = Tensor(np.ones((20, 20)), requires_grad=True)
    out = Dropout(0.4, rng=0)(x)
    out.sum().backward()
    np.testing.assert_allclose(x.grad, out.data, rtol=1e-6)       # d out / d x = mask / (1 - p)


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.5", None])
def test_dropout_rejects_bad_p(bad):
    with pytest.raises(ValueError, match="p must be in \\[0, 1\\]"):
        Dropout(bad)
