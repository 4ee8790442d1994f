"""Shared fixtures: the real Fashion-MNIST data, built once per test session into a temporary TFDS dir."""

import os

import pytest

from research.data import fashion_mnist

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tensorflow_datasets"))
    fashion_mnist.FashionMnistIdx(data_dir=data_dir, file_format="array_record").download_and_prepare()
    return data_dir


@pytest.fixture(scope="session")
def fashion_test_split(tfds_dir):
    """The real 10k Fashion-MNIST test images (uint8 Nx28x28x1) and labels."""
    return fashion_mnist.load("test", tfds_dir)
