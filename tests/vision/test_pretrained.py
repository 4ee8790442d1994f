"""Weights saved by PyTorch (torch.save zip checkpoints and safetensors) give our ResNet PyTorch's outputs.

torchvision does not install beside the CPU build of torch here, so a ResNet with torchvision's layout and
names is written out below in plain torch. It gets random weights and non-trivial BatchNorm statistics (a few
training-mode forwards), is saved with `torch.save`, loaded by `research.pretrained` (which never imports torch)
and both models run the same images in eval mode.
"""

import dataclasses
import functools
import hashlib
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

from research.core.errors import InputError
from research.vision import pretrained, resnet
from research.vision.head import FastaiHead

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


class TorchBottleneck(nn.Module):
    """torchvision's Bottleneck (v1.5: the stride on the 3x3 conv)."""
    expansion = 4

    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes * 4))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


TorchBasicBlock.expansion = 1


class TorchResNet(nn.Module):
    """torchvision.models.ResNet's layout and state-dict names, with BasicBlock or Bottleneck blocks."""

    def __init__(self, layers, num_classes=1000, block=TorchBasicBlock):
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
                stage.append(block(inplanes, planes, stride if b == 0 else 1))
                inplanes = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def make_torch_resnet(layers, seed, block=TorchBasicBlock, conv_scale=1.0):
    """Random weights, BatchNorm scale/bias away from 1/0 and running statistics from a few training-mode
    forwards. `conv_scale` shrinks every conv kernel, so the running variances are small, as in many layers of
    real ImageNet models: then BatchNorm's epsilon matters and a wrong one shows."""
    torch.manual_seed(seed)
    model = TorchResNet(layers, num_classes=10, block=block)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # not the 1/0 defaults, so a swapped scale/bias would show
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.momentum = None  # running statistics: the average over the forwards below, not 0/1 mixed in
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(conv_scale)
        model.train()
        for _ in range(3):  # running statistics away from 0/1
            model(torch.randn(4, 3, 64, 64) * 2 + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def torch_resnet18(tmp_path_factory):
    model = make_torch_resnet((2, 2, 2, 2), seed=0)
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
    torch_model = make_torch_resnet((3, 4, 6, 3), seed=1)
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
    code = ("import sys, research.vision.pretrained, research.vision.resnet; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=120)


def test_download_of_an_unknown_name_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="unknown pretrained checkpoint 'resnet19'"):
        pretrained.download("resnet19", str(tmp_path))
    assert pretrained.CHECKPOINTS["resnet34"].url.endswith("resnet34-b627a593.pth")


def _served(tmp_path, monkeypatch, content: bytes, sha256: str) -> str:
    """A checkpoint "resnet18" served from a file:// URL (urllib reads it as it reads https), with `sha256`
    pinned; returns the cache directory."""
    source = tmp_path / "server" / "weights.pth"
    source.parent.mkdir()
    source.write_bytes(content)
    monkeypatch.setitem(pretrained.CHECKPOINTS, "resnet18",
                        pretrained.Checkpoint(source.as_uri(), sha256, "resnet18-test.pth"))
    return str(tmp_path / "cache")


def test_download_checks_the_digest_and_keeps_only_a_verified_file(tmp_path, monkeypatch):
    content = b"weights " * 1000
    good = hashlib.sha256(content).hexdigest()
    cache = _served(tmp_path, monkeypatch, content, "0" * 8)  # a pinned digest the file does not have
    with pytest.raises(InputError, match=f"SHA-256 {good} does not start with 00000000"):
        pretrained.download("resnet18", cache)
    assert os.listdir(cache) == []  # neither the file nor a temporary copy is left
    monkeypatch.setitem(pretrained.CHECKPOINTS, "resnet18",  # the right digest: downloaded and kept
                        dataclasses.replace(pretrained.CHECKPOINTS["resnet18"], sha256=good[:8]))
    path = pretrained.download("resnet18", cache)
    assert path == os.path.join(cache, "resnet18-test.pth") and open(path, "rb").read() == content
    assert os.listdir(cache) == ["resnet18-test.pth"]


def test_a_cached_file_is_verified_before_use(tmp_path, monkeypatch):
    content = b"weights " * 1000
    cache = _served(tmp_path, monkeypatch, content, hashlib.sha256(content).hexdigest())
    os.makedirs(cache)
    cached = os.path.join(cache, "resnet18-test.pth")
    with open(cached, "wb") as f:
        f.write(content)
    os.unlink(tmp_path / "server" / "weights.pth")  # nothing to download: the cached file must do
    assert pretrained.download("resnet18", cache) == cached
    with open(cached, "r+b") as f:  # one byte changed on disk
        f.write(b"W")
    with pytest.raises(InputError, match="resnet18-test.pth: SHA-256 .* delete it to download it again"):
        pretrained.download("resnet18", cache)


# ----------------------------------------------------------------------------------------------- ResNet-50

# torchvision's resnet50 state dict (IMAGENET1K_V1 and V2 share it), written out from torchvision's
# definition: each conv's weight with its OIHW shape and the BatchNorm after it, whose five tensors are
# .weight, .bias, .running_mean, .running_var (one value per channel) and .num_batches_tracked (a scalar).
TORCHVISION_RESNET50 = """
conv1.weight 64,3,7,7 bn1
layer1.0.conv1.weight 64,64,1,1 layer1.0.bn1
layer1.0.conv2.weight 64,64,3,3 layer1.0.bn2
layer1.0.conv3.weight 256,64,1,1 layer1.0.bn3
layer1.0.downsample.0.weight 256,64,1,1 layer1.0.downsample.1
layer1.1.conv1.weight 64,256,1,1 layer1.1.bn1
layer1.1.conv2.weight 64,64,3,3 layer1.1.bn2
layer1.1.conv3.weight 256,64,1,1 layer1.1.bn3
layer1.2.conv1.weight 64,256,1,1 layer1.2.bn1
layer1.2.conv2.weight 64,64,3,3 layer1.2.bn2
layer1.2.conv3.weight 256,64,1,1 layer1.2.bn3
layer2.0.conv1.weight 128,256,1,1 layer2.0.bn1
layer2.0.conv2.weight 128,128,3,3 layer2.0.bn2
layer2.0.conv3.weight 512,128,1,1 layer2.0.bn3
layer2.0.downsample.0.weight 512,256,1,1 layer2.0.downsample.1
layer2.1.conv1.weight 128,512,1,1 layer2.1.bn1
layer2.1.conv2.weight 128,128,3,3 layer2.1.bn2
layer2.1.conv3.weight 512,128,1,1 layer2.1.bn3
layer2.2.conv1.weight 128,512,1,1 layer2.2.bn1
layer2.2.conv2.weight 128,128,3,3 layer2.2.bn2
layer2.2.conv3.weight 512,128,1,1 layer2.2.bn3
layer2.3.conv1.weight 128,512,1,1 layer2.3.bn1
layer2.3.conv2.weight 128,128,3,3 layer2.3.bn2
layer2.3.conv3.weight 512,128,1,1 layer2.3.bn3
layer3.0.conv1.weight 256,512,1,1 layer3.0.bn1
layer3.0.conv2.weight 256,256,3,3 layer3.0.bn2
layer3.0.conv3.weight 1024,256,1,1 layer3.0.bn3
layer3.0.downsample.0.weight 1024,512,1,1 layer3.0.downsample.1
layer3.1.conv1.weight 256,1024,1,1 layer3.1.bn1
layer3.1.conv2.weight 256,256,3,3 layer3.1.bn2
layer3.1.conv3.weight 1024,256,1,1 layer3.1.bn3
layer3.2.conv1.weight 256,1024,1,1 layer3.2.bn1
layer3.2.conv2.weight 256,256,3,3 layer3.2.bn2
layer3.2.conv3.weight 1024,256,1,1 layer3.2.bn3
layer3.3.conv1.weight 256,1024,1,1 layer3.3.bn1
layer3.3.conv2.weight 256,256,3,3 layer3.3.bn2
layer3.3.conv3.weight 1024,256,1,1 layer3.3.bn3
layer3.4.conv1.weight 256,1024,1,1 layer3.4.bn1
layer3.4.conv2.weight 256,256,3,3 layer3.4.bn2
layer3.4.conv3.weight 1024,256,1,1 layer3.4.bn3
layer3.5.conv1.weight 256,1024,1,1 layer3.5.bn1
layer3.5.conv2.weight 256,256,3,3 layer3.5.bn2
layer3.5.conv3.weight 1024,256,1,1 layer3.5.bn3
layer4.0.conv1.weight 512,1024,1,1 layer4.0.bn1
layer4.0.conv2.weight 512,512,3,3 layer4.0.bn2
layer4.0.conv3.weight 2048,512,1,1 layer4.0.bn3
layer4.0.downsample.0.weight 2048,1024,1,1 layer4.0.downsample.1
layer4.1.conv1.weight 512,2048,1,1 layer4.1.bn1
layer4.1.conv2.weight 512,512,3,3 layer4.1.bn2
layer4.1.conv3.weight 2048,512,1,1 layer4.1.bn3
layer4.2.conv1.weight 512,2048,1,1 layer4.2.bn1
layer4.2.conv2.weight 512,512,3,3 layer4.2.bn2
layer4.2.conv3.weight 2048,512,1,1 layer4.2.bn3
fc.weight 1000,2048
fc.bias 1000
"""


def torchvision_resnet50_shapes() -> dict[str, tuple[int, ...]]:
    """{state-dict key: shape} of torchvision's resnet50, from TORCHVISION_RESNET50 (320 keys)."""
    shapes = {}
    for line in TORCHVISION_RESNET50.strip().splitlines():
        name, shape, *batch_norm = line.split()
        shapes[name] = tuple(int(n) for n in shape.split(","))
        for bn in batch_norm:
            channels = shapes[name][0]
            for leaf in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{bn}.{leaf}"] = (channels,)
            shapes[f"{bn}.num_batches_tracked"] = ()
    return shapes


def test_torchvision_resnet50_keys_all_map_onto_our_resnet50():
    shapes = torchvision_resnet50_shapes()
    assert len(shapes) == 320
    trainable = [k for k in shapes if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert sum(int(np.prod(shapes[k])) for k in trainable) == 25_557_032  # torchvision's parameter count
    state_dict = {name: np.full(shape, i, np.float32) for i, (name, shape) in enumerate(shapes.items())}
    ours = _shapes(resnet.resnet50(num_classes=1000), size=64)
    loaded = pretrained.load_into(ours, pretrained.torchvision_resnet_variables(state_dict))  # all names, shapes
    # Every torchvision tensor but the 53 counters lands in exactly one of our leaves, each leaf filled once.
    filled = sorted(int(np.asarray(leaf).flat[0]) for leaf in jax.tree.leaves(loaded))
    assert filled == sorted(i for i, name in enumerate(shapes) if not name.endswith("num_batches_tracked"))
    np.testing.assert_array_equal(loaded["params"]["layer3_0"]["downsample_conv"]["kernel"],
                                  state_dict["layer3.0.downsample.0.weight"].transpose(2, 3, 1, 0))


def test_the_torch_resnet50_here_has_torchvisions_state_dict():
    model = TorchResNet((3, 4, 6, 3), num_classes=1000, block=TorchBottleneck)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == torchvision_resnet50_shapes()


TOLERANCE = 5e-4  # max abs difference of the logits between PyTorch and us (measured: 6e-5)


@pytest.fixture(scope="module")
def resnet50_pair(tmp_path_factory):
    """A torchvision-layout ResNet-50 with small conv weights (running variances ~1e-2, where BatchNorm's
    epsilon counts), saved with torch.save, and ours loaded from the file."""
    torch_model = make_torch_resnet((3, 4, 6, 3), seed=2, block=TorchBottleneck, conv_scale=0.1)
    path = str(tmp_path_factory.mktemp("weights") / "resnet50.pth")
    torch.save(torch_model.state_dict(), path)
    model, variables = _ours(resnet.resnet50, path)
    return torch_model, model, variables


def test_resnet50_torch_checkpoint_matches_pytorch_forward(resnet50_pair):
    torch_model, model, variables = resnet50_pair
    running_vars = [v for k, v in torch_model.state_dict().items() if k.endswith("running_var")]
    assert np.median([float(v.mean()) for v in running_vars]) < 0.1  # epsilon is not negligible here
    difference = _max_abs_difference(torch_model, model, variables)
    print(f"resnet50 max abs difference vs PyTorch: {difference:.2e}")
    assert difference < TOLERANCE


def test_the_tolerance_catches_a_transposed_kernel_and_a_wrong_batchnorm_epsilon(resnet50_pair):
    """The mistakes a loader makes and a loose tolerance would let through, each applied to the loaded
    variables: one 3x3 kernel with height and width swapped (OIHW -> HWIO read as WHIO), and BatchNorm's
    epsilon at 1e-3 (Keras' and TensorFlow's default) instead of torch's 1e-5, i.e. every running variance
    1e-3 - 1e-5 larger."""
    torch_model, model, variables = resnet50_pair
    transposed = jax.tree.map(np.asarray, variables)
    kernel = transposed["params"]["layer2_1"]["conv2"]["kernel"]
    transposed["params"]["layer2_1"]["conv2"]["kernel"] = kernel.transpose(1, 0, 2, 3)
    wrong_epsilon = jax.tree.map(np.asarray, variables)
    wrong_epsilon["batch_stats"] = jax.tree_util.tree_map_with_path(
        lambda path, x: x + (1e-3 - 1e-5) if path[-1].key == "var" else x, wrong_epsilon["batch_stats"])
    for name, broken in (("transposed kernel", transposed), ("epsilon 1e-3", wrong_epsilon)):
        difference = _max_abs_difference(torch_model, model, broken)
        print(f"{name}: max abs difference {difference:.2e}")
        assert difference > 10 * TOLERANCE, name
