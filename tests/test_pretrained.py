"""Weights saved by PyTorch (torch.save zip checkpoints and safetensors) give our ResNet PyTorch's outputs.

torchvision does not install beside the CPU build of torch here, so a ResNet with torchvision's layout and
names is written out below in plain torch. It gets random weights and non-trivial BatchNorm statistics (a few
training-mode forwards), is saved with `torch.save`, loaded by `research.pretrained` (which never imports torch)
and both models run the same images in eval mode.
"""

import functools
import os
import pickle
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
from torch import nn

from research import pretrained
from research.errors import InputError
from research.models import resnet
from research.models.head import FastaiHead

from conftest import REPO_ROOT


class TorchBasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class TorchResNet(nn.Module):
    """torchvision.models.ResNet's layout and state-dict names, BasicBlock variants."""

    def __init__(self, layers, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for i, (blocks, planes) in enumerate(zip(layers, (64, 128, 256, 512))):
            stride = 1 if i == 0 else 2
            stage = []
            for b in range(blocks):
                stage.append(TorchBasicBlock(inplanes, planes, stride if b == 0 else 1))
                inplanes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _torch_model(layers, seed):
    torch.manual_seed(seed)
    model = TorchResNet(layers, num_classes=10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # not the 1/0 defaults, so a swapped scale/bias would show
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        model.train()
        for _ in range(3):  # running statistics away from 0/1
            model(torch.randn(4, 3, 64, 64) * 2 + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def torch_resnet18(tmp_path_factory):
    model = _torch_model((2, 2, 2, 2), seed=0)
    path = str(tmp_path_factory.mktemp("weights") / "resnet18.pth")
    torch.save(model.state_dict(), path)
    return model, path


def _images(seed=1):
    return np.random.default_rng(seed).normal(size=(2, 3, 64, 64)).astype(np.float32)


def _shapes(model, size=64):
    """The model's variables as shapes only: every value comes from the checkpoint (and no init to wait for)."""
    return jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                          jnp.zeros((1, size, size, 3)))


def _ours(builder, path):
    model = builder(num_classes=10)
    return model, pretrained.load_torchvision_resnet(path, _shapes(model), skip_head=False)


@functools.cache
def _jitted_apply(model):
    return jax.jit(functools.partial(model.apply, train=False))


def _max_abs_difference(torch_model, model, variables):
    images = _images()
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(images)).numpy()
    got = np.asarray(_jitted_apply(model)(variables, jnp.asarray(images.transpose(0, 2, 3, 1))))
    assert np.abs(expected).max() > 0.1  # a real signal, not all zeros
    return float(np.abs(got - expected).max())


def test_resnet18_torch_checkpoint_matches_pytorch_forward(torch_resnet18):
    torch_model, path = torch_resnet18
    model, variables = _ours(resnet.resnet18, path)
    difference = _max_abs_difference(torch_model, model, variables)
    print(f"resnet18 max abs difference vs PyTorch: {difference:.2e}")
    assert difference < 1e-4


def test_resnet34_torch_checkpoint_matches_pytorch_forward(tmp_path):
    torch_model = _torch_model((3, 4, 6, 3), seed=1)
    path = str(tmp_path / "resnet34.pt")
    torch.save({"state_dict": torch_model.state_dict(), "epoch": 3}, path)  # a training checkpoint's layout
    model, variables = _ours(resnet.resnet34, path)
    difference = _max_abs_difference(torch_model, model, variables)
    print(f"resnet34 max abs difference vs PyTorch: {difference:.2e}")
    assert difference < 1e-4


def test_safetensors_round_trip_both_ways(torch_resnet18, tmp_path):
    torch_model, pth = torch_resnet18
    state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    theirs = str(tmp_path / "theirs.safetensors")
    safetensors.numpy.save_file(state, theirs)  # the reference implementation writes, we read
    read = pretrained.read_safetensors(theirs)
    assert read.keys() == state.keys()
    for name, value in state.items():
        assert read[name].dtype == value.dtype and np.array_equal(read[name], value), name
    ours = str(tmp_path / "ours.safetensors")
    pretrained.write_safetensors(ours, pretrained.read_torch_checkpoint(pth))  # we write, the reference reads
    back = safetensors.numpy.load_file(ours)
    for name, value in state.items():
        assert np.array_equal(back[name], value), name
    model, variables = _ours(resnet.resnet18, theirs)
    assert _max_abs_difference(torch_model, model, variables) < 1e-4


def test_reader_handles_strides_half_precision_and_shared_storage(tmp_path):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    tensors = {"transposed": base.t(), "slice": base[1:, 2:], "half": base.half(), "bf16": base.bfloat16(),
               "long": torch.arange(5)}
    path = str(tmp_path / "x.pt")
    torch.save(tensors, path)
    read = pretrained.read_torch_checkpoint(path)
    for name, tensor in tensors.items():
        np.testing.assert_array_equal(read[name].astype(np.float64), tensor.double().numpy(), err_msg=name)
    assert read["half"].dtype == np.float16 and read["long"].dtype == np.int64


def test_new_head_keeps_its_init_and_body_is_loaded(torch_resnet18):
    _, path = torch_resnet18
    model = resnet.resnet18(num_classes=5, head=FastaiHead)
    variables = _shapes(model)
    head = FastaiHead(num_classes=5).init(jax.random.key(0), jnp.ones((1, 2, 2, 512)), train=False)
    for collection in ("params", "batch_stats"):  # a freshly initialised head (the body's init is not needed)
        variables[collection]["head"] = head[collection]
    loaded = pretrained.load_torchvision_resnet(path, variables, skip_head=True)
    state = pretrained.read_torch_checkpoint(path)
    np.testing.assert_array_equal(loaded["params"]["layer2_0"]["downsample_conv"]["kernel"],
                                  state["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(loaded["batch_stats"]["layer4_1"]["bn2"]["var"], state["layer4.1.bn2.running_var"])
    jax.tree.map(np.testing.assert_array_equal, loaded["params"]["head"], variables["params"]["head"])


def test_mismatched_checkpoint_is_a_one_line_error(torch_resnet18):
    _, path = torch_resnet18
    with pytest.raises(InputError, match="missing .*layer1_2") as error:
        pretrained.load_torchvision_resnet(path, _shapes(resnet.resnet34(num_classes=10)))
    assert "\n" not in str(error.value)
    wrong_classes = _shapes(resnet.resnet18(num_classes=7))
    with pytest.raises(InputError, match=r"params/fc/bias has shape \(10,\), the model wants \(7,\)"):
        pretrained.load_torchvision_resnet(path, wrong_classes, skip_head=False)


def test_legacy_format_and_code_in_the_pickle_are_refused(tmp_path):
    legacy = str(tmp_path / "legacy.pth")
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(InputError, match="legacy format"):
        pretrained.read_torch_checkpoint(legacy)
    evil = str(tmp_path / "evil.pth")
    with zipfile.ZipFile(evil, "w") as archive:  # a pickle that would call os.system on a plain load
        archive.writestr("evil/data.pkl", pickle.dumps(_RunsCode()))
    with pytest.raises(InputError, match="refusing to load (os|posix).system"):
        pretrained.read_torch_checkpoint(evil)


class _RunsCode:
    def __reduce__(self):
        return os.system, ("echo pwned",)


def test_research_pretrained_does_not_import_torch():
    code = ("import sys, research.pretrained, research.models.resnet; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


def test_download_of_an_unknown_name_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="unknown pretrained checkpoint 'resnet19'"):
        pretrained.download("resnet19", str(tmp_path))
    cached = tmp_path / pretrained.CHECKPOINTS["resnet34"].filename
    cached.write_bytes(b"already here")  # a cached file is used as it is, without a network
    assert pretrained.download("resnet34", str(tmp_path)) == str(cached)
    assert pretrained.CHECKPOINTS["resnet34"].url.endswith("resnet34-b627a593.pth")
