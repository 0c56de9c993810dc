"""`compress` with nothing but sparsity, bits and train_data writes the smallest file the recipe knows."""
import numpy as np
import pytest

from tinytorch.compression import pipeline
from tinytorch.compression.pipeline import compress
from tinytorch.compression.prune import magnitude_prune
from tinytorch.compression.storage import load_compressed
from tinytorch.core.models import digits_mlp, train_digits_model
from tinytorch.core.tensor import manual_seed
from tinytorch.data.loader import digits_loaders

CLI_SETTINGS = dict(index_bits=6, bias_bits=8, coding="huffman")   # tito compress's MLP settings (DIGITS_RECIPES)


@pytest.fixture(scope="module")
def recipe_file():
    "The digits MLP through the one-call recipe at 95% and 3 bits, defaults only (a few seconds)."
    manual_seed(0)
    mlp = digits_mlp(seed=0)
    train_digits_model(mlp, seed=0)
    return compress(mlp, 0.95, bits=3, train_data=digits_loaders(seed=1)[0])


def test_the_default_file_is_no_larger_than_the_cli_settings(recipe_file):
    trained = recipe_file.decompress()   # the same trained weights, stored with tito compress's settings
    cli = compress(trained, None, bits=3, **CLI_SETTINGS)
    assert recipe_file.nbytes <= cli.nbytes
    for (name, a), (_, b) in zip(recipe_file.decompress().named_parameters(), cli.decompress().named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)   # same model, only the encoding differs


def test_the_default_file_beats_the_old_defaults_with_huffman(recipe_file):
    old = compress(recipe_file.decompress(), None, bits=3, index_bits=8, bias_bits=32, coding="huffman")
    assert recipe_file.nbytes < 0.8 * old.nbytes


def test_defaults_are_huffman_int8_biases_and_chosen_widths(recipe_file):
    assert recipe_file.coding == "huffman"
    assert all(entry["bits"] == 8 for entry in recipe_file.biases.values())
    assert all(2 <= entry["index_bits"] <= 16 for entry in recipe_file.weights.values())


def test_the_chosen_delta_width_is_the_smallest_of_all_widths():
    model = magnitude_prune(digits_mlp(seed=0), 0.9)
    chosen = compress(model, None, bits=4)
    fixed_width = {w: compress(model, None, bits=4, index_bits=w) for w in range(1, 17)}   # every width the format allows
    for name, entry in chosen.weights.items():
        smallest = min(pipeline._entry_bytes(cm.weights[name], "huffman") for cm in fixed_width.values())
        assert pipeline._entry_bytes(entry, "huffman") == smallest, name
    assert chosen.nbytes <= min(cm.nbytes for cm in fixed_width.values())   # per-weight widths may beat any one width


def test_the_default_file_loads_back_exactly(recipe_file, tmp_path):
    recipe_file.save(tmp_path / "best.ttcz")
    loaded = load_compressed(tmp_path / "best.ttcz").decompress()
    for (name, a), (_, b) in zip(loaded.named_parameters(), recipe_file.decompress().named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)


def test_an_explicit_width_and_coding_are_kept():
    cm = compress(magnitude_prune(digits_mlp(seed=0), 0.9), None, bits=4, index_bits=5, coding="fixed", bias_bits=32)
    assert cm.coding == "fixed"
    assert {e["index_bits"] for e in cm.weights.values()} == {5}
    assert {e["bits"] for e in cm.biases.values()} == {32}
