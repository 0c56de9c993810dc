"""The LeNets of Deep Compression in tinytorch.core.models: layer shapes and weight counts of the paper."""
import numpy as np
import pytest

from tinytorch.core.layers import Linear
from tinytorch.core.models import lenet5, lenet_300_100, train_mnist_model
from tinytorch.core.spatial import Conv2d
from tinytorch.core.tensor import Tensor


def weight_shapes(model) -> list:
    return [p.data.shape for name, p in model.named_parameters() if name.endswith("weight")]


def test_lenet_300_100_is_784_300_100_10_with_266200_weights():
    model = lenet_300_100(seed=0)
    assert weight_shapes(model) == [(300, 784), (100, 300), (10, 100)]
    assert sum(int(np.prod(s)) for s in weight_shapes(model)) == 266_200
    assert model(Tensor(np.zeros((3, 784), dtype=np.float32))).shape == (3, 10)


def test_lenet5_is_the_caffe_variant_with_430500_weights():
    model = lenet5(seed=0)
    # conv 20@5x5, conv 50@5x5 on 20 channels, fc 800 -> 500, fc 500 -> 10 (Deep Compression's Table 3: 431K)
    assert weight_shapes(model) == [(20, 1, 5, 5), (50, 20, 5, 5), (500, 800), (10, 500)]
    assert sum(int(np.prod(s)) for s in weight_shapes(model)) == 430_500
    assert [type(m).__name__ for m in model] == ["Conv2d", "MaxPool2d", "Conv2d", "MaxPool2d", "Flatten",
                                                        "Linear", "ReLU", "Linear"]
    assert model(Tensor(np.zeros((2, 1, 28, 28), dtype=np.float32))).shape == (2, 10)


def test_same_seed_same_weights():
    for make in (lenet_300_100, lenet5):
        a, b, c = make(seed=3), make(seed=3), make(seed=4)
        for (name, pa), (_, pb), (_, pc) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters()):
            np.testing.assert_array_equal(pa.data, pb.data, err_msg=name)
        assert not np.array_equal(a[0].weight.data, c[0].weight.data)


def test_train_mnist_model_refuses_bad_epochs():
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        train_mnist_model(lenet_300_100(), epochs=0)
    assert isinstance(lenet5()[0], Conv2d) and isinstance(lenet_300_100()[0], Linear)
