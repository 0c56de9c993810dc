"""Quantized layers and models: exact byte counts, agreement with float layers, digits acceptance."""
import numpy as np
import pytest

from tinytorch.compression.quantize import (
    QuantizedConv2d, QuantizedLinear, QuantizedModel, compute_qparams, dequantize, dequantize_model,
    model_nbytes, quantize, quantize_model,
)
from tinytorch.core.activations import ReLU
from tinytorch.core.layers import Dropout, Flatten, Linear, Module, Sequential
from tinytorch.core.models import digits_mlp
from tinytorch.core.spatial import Conv2d, MaxPool2d
from tinytorch.core.tensor import Tensor
from tinytorch.core.training import evaluate
from tinytorch.data.loader import digits_loaders


@pytest.fixture(scope="module")
def test_loader():
    return digits_loaders(image=False)[1]


def _numpy_linear(x, w, b):
    return x.astype(np.float64) @ w.astype(np.float64).T + b


# --- layers ---------------------------------------------------------------------------

def test_quantized_linear_equals_numpy_oracle_on_dequantized_weights():
    rng = np.random.default_rng(0)
    lin = Linear(7, 5, rng=rng)
    qlin = QuantizedLinear.from_float(lin)
    w = lin.weight.data
    # oracle: quantize each row by hand with symmetric max|row| / 127
    scale = np.abs(w).max(axis=1, keepdims=True).astype(np.float32) / np.float32(127)
    codes = np.clip(np.round(w / scale), -128, 127)
    assert np.array_equal(qlin.weight.q, codes.astype(np.int8))
    x = rng.normal(size=(3, 7)).astype(np.float32)
    expected = _numpy_linear(x, codes * scale, lin.bias.data)
    assert np.allclose(qlin(Tensor(x)).data, expected, atol=1e-5)
    assert qlin.parameters() == []


def test_quantized_linear_without_bias_and_per_tensor():
    lin = Linear(4, 3, bias=False, rng=np.random.default_rng(1))
    qlin = QuantizedLinear.from_float(lin, per_channel=False, symmetric=False)
    assert qlin.bias is None and qlin.nbytes == 12 + 4 + 4
    assert qlin.weight.params.axis is None
    x = np.ones((2, 4), dtype=np.float32)
    assert np.allclose(qlin(Tensor(x)).data, lin(Tensor(x)).data, atol=0.02)
    with pytest.raises(ValueError, match="last dimension 4"):
        qlin(Tensor(np.ones((2, 5))))


def test_quantized_conv_matches_float_conv_with_dequantized_weights():
    rng = np.random.default_rng(2)
    conv = Conv2d(2, 3, 3, stride=2, padding=1, rng=rng)
    qconv = QuantizedConv2d.from_float(conv)
    assert qconv.weight.params.scale.shape == (3,) and qconv.weight.params.axis == 0
    x = Tensor(rng.normal(size=(2, 2, 7, 7)).astype(np.float32))
    # the float conv with exactly the dequantized weights is the oracle
    ref = Conv2d(2, 3, 3, stride=2, padding=1, rng=np.random.default_rng(9))
    ref.weight.data[...] = dequantize(qconv.weight.q, qconv.weight.params)
    ref.bias.data[...] = conv.bias.data
    out = qconv(x)
    assert out.shape == (2, 3, 4, 4)
    assert np.allclose(out.data, ref(x).data, atol=1e-5)
    assert np.allclose(out.data, conv(x).data, atol=0.05)
    assert qconv.nbytes == 3 * 2 * 9 + 3 * 12


# --- whole models ---------------------------------------------------------------------

def _small_cnn(seed=0):
    rng = np.random.default_rng(seed)
    return Sequential(Conv2d(1, 4, 3, padding=1, rng=rng), ReLU(), MaxPool2d(2), Dropout(0.5),
                      Flatten(), Linear(64, 10, rng=rng))


def test_model_nbytes_counts_float32_parameters():
    assert model_nbytes(digits_mlp(seed=0)) == 4 * (64 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10)
    assert model_nbytes(_small_cnn()) == 4 * (4 * 9 + 4 + 64 * 10 + 10)


def test_quantized_nbytes_are_exact_for_the_digits_mlp():
    model = digits_mlp(seed=0)
    weights = 64 * 256 + 256 * 128 + 128 * 10
    biases = 256 + 128 + 10
    per_tensor = quantize_model(model, per_channel=False)
    per_channel = quantize_model(model, per_channel=True)
    assert per_tensor.nbytes == weights + 4 * biases + 3 * (4 + 4)
    assert per_channel.nbytes == weights + 4 * biases + biases * (4 + 4)
    assert (model_nbytes(model), per_tensor.nbytes, per_channel.nbytes) == (203304, 52032, 55160)
    # the count is the sum of the arrays really stored
    stored = 0
    for _, layer in per_channel.quantized_layers():
        assert layer.weight.q.dtype == np.int8
        stored += layer.weight.q.nbytes + layer.weight.params.scale.nbytes
        stored += layer.weight.params.zero_point.nbytes + layer.bias.nbytes
    assert stored == per_channel.nbytes == model_nbytes(per_channel)


def test_quantize_model_structure_and_original_untouched():
    model = _small_cnn()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    qmodel = quantize_model(model)
    assert isinstance(qmodel, QuantizedModel) and not qmodel.training
    assert [n for n, _ in qmodel.quantized_layers()] == ["0", "5"]
    assert isinstance(qmodel.model[0], QuantizedConv2d) and isinstance(qmodel.model[5], QuantizedLinear)
    assert qmodel.parameters() == []
    assert model.training and isinstance(model[0], Conv2d)
    for name, value in model.state_dict().items():
        assert np.array_equal(value, before[name])
    x = Tensor(np.random.default_rng(3).normal(size=(4, 1, 8, 8)).astype(np.float32))
    model.eval()
    assert np.allclose(qmodel(x).data, model(x).data, atol=0.05)


def test_dequantize_model_is_a_working_float_copy():
    model = _small_cnn()
    qmodel = quantize_model(model)
    back = dequantize_model(qmodel)
    assert isinstance(back[0], Conv2d) and isinstance(back[5], Linear)
    assert [n for n, _ in back.named_parameters()] == [n for n, _ in model.named_parameters()]
    for (_, layer), float_layer in zip(qmodel.quantized_layers(), (back[0], back[5])):
        assert np.array_equal(float_layer.weight.data, layer.weight.dequantize())
    x = Tensor(np.random.default_rng(4).normal(size=(3, 1, 8, 8)).astype(np.float32))
    assert np.allclose(back(x).data, qmodel(x).data, atol=1e-5)
    # trainable again, and re-quantizing the dequantized weights gives the same codes
    assert all(p.requires_grad for p in back.parameters())
    again = quantize_model(back)
    for (_, a), (_, b) in zip(qmodel.quantized_layers(), again.quantized_layers()):
        assert np.array_equal(a.weight.q, b.weight.q)


def test_custom_module_container_is_supported():
    class Net(Module):
        def __init__(self):
            super().__init__()
            self.fc1 = Linear(4, 8, rng=np.random.default_rng(0))
            self.act = ReLU()
            self.fc2 = Linear(8, 2, rng=np.random.default_rng(1))

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x)))

    net = Net()
    qnet = quantize_model(net)
    assert [n for n, _ in qnet.quantized_layers()] == ["fc1", "fc2"]
    assert isinstance(net.fc1, Linear)  # the original keeps its float layers
    x = Tensor(np.random.default_rng(5).normal(size=(3, 4)).astype(np.float32))
    assert np.allclose(qnet(x).data, net(x).data, atol=0.02)


def test_unsupported_inputs_raise():
    class Scale(Module):
        def __init__(self):
            super().__init__()
            self.w = Tensor(np.ones(3), requires_grad=True)

        def forward(self, x):
            return x * self.w

    with pytest.raises(TypeError, match="Scale"):
        quantize_model(Sequential(Linear(3, 3), Scale()))
    with pytest.raises(ValueError, match="bits"):
        quantize_model(digits_mlp(), bits=9)
    with pytest.raises(TypeError, match="already quantized"):
        quantize_model(quantize_model(digits_mlp()))
    with pytest.raises(TypeError, match="QuantizedModel"):
        dequantize_model(digits_mlp())


def test_pruned_weights_stay_exactly_zero():
    "Module 18 stores pruned weights in INT8: symmetric codes keep zeros at code 0."
    rng = np.random.default_rng(6)
    lin = Linear(16, 8, rng=rng)
    mask = rng.random((8, 16)) < 0.6
    lin.weight.data[mask] = 0.0
    lin.weight.data[3] = 0.0   # a fully pruned neuron
    q = QuantizedLinear.from_float(lin).weight
    assert np.all(q.q[mask] == 0) and np.all(q.q[3] == 0)
    assert np.all(q.dequantize()[mask] == 0.0)
    assert q.params.scale[3] == 1.0
    # asymmetric codes: zero is still exact after dequantization
    qa = QuantizedLinear.from_float(lin, symmetric=False).weight
    assert np.all(qa.dequantize()[mask] == 0.0)


def test_lower_bits_store_codes_in_their_range():
    qmodel = quantize_model(digits_mlp(seed=1), bits=4)
    for _, layer in qmodel.quantized_layers():
        assert layer.weight.q.min() >= -8 and layer.weight.q.max() <= 7
        p = compute_qparams(layer.to_float().weight.data, bits=4, symmetric=True, per_channel=True)
        assert np.array_equal(quantize(layer.to_float().weight.data, p), layer.weight.q)


# --- acceptance on the trained digits MLP ------------------------------------------------

@pytest.mark.parametrize("per_channel", [False, True])
def test_int8_digits_mlp_keeps_accuracy_and_is_about_4x_smaller(trained_digits, test_loader, per_channel):
    trained_mlp, _ = trained_digits("mlp")  # the reference digits MLP, fully trained
    fp32_acc = evaluate(trained_mlp, test_loader)
    assert fp32_acc >= 0.96
    qmodel = quantize_model(trained_mlp, per_channel=per_channel)
    int8_acc = evaluate(qmodel, test_loader)
    assert fp32_acc - int8_acc <= 0.005, (fp32_acc, int8_acc)
    ratio = model_nbytes(trained_mlp) / qmodel.nbytes
    assert ratio == 203304 / (55160 if per_channel else 52032)
    assert 3.5 <= ratio <= 4.0


def test_int8_predictions_mostly_agree_with_fp32(trained_digits, test_loader):
    trained_mlp, _ = trained_digits("mlp")
    qmodel = quantize_model(trained_mlp)
    trained_mlp.eval()
    agree = total = 0
    for X, _ in test_loader:
        a = trained_mlp(X).data.argmax(axis=1)
        b = qmodel(X).data.argmax(axis=1)
        agree += int((a == b).sum())
        total += len(a)
    assert agree / total >= 0.99
