"""Tests of the dataset readers, registry, splits and batching (tiny fixture files + the real Fashion-MNIST)."""

from __future__ import annotations

import gzip
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from cs_repro.data import (
    DATASETS,
    TensorBatches,
    augment_batch,
    class_balanced_split,
    load_dataset,
    subset,
)
from cs_repro.data import idx as idx_module
from cs_repro.errors import UserError

try:
    from tests.fixtures import IDX_NAMES, read_fixture_cifar, read_fixture_idx, write_cifar10, write_idx_dataset
except ImportError:
    from fixtures import IDX_NAMES, read_fixture_cifar, read_fixture_idx, write_cifar10, write_idx_dataset

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def no_debian(monkeypatch, tmp_path):
    """Hide Debian's Fashion-MNIST so 'not found' paths can be tested on machines that have it."""
    monkeypatch.setattr(idx_module, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-here")


# ---------------------------------------------------------------- registry


def test_registry_lists_the_datasets_with_their_shapes():
    assert DATASETS.names() == ["cifar10", "fashion_mnist", "imagenet", "mnist"]
    inet = DATASETS.get("imagenet")
    assert inet.streamed and not fm_streamed() and (inet.num_classes, inet.image_shape, inet.train_size) == (
        1000, (3, 224, 224), 1_281_167)
    fm, cf = DATASETS.get("fashion_mnist"), DATASETS.get("cifar10")
    assert (fm.num_classes, fm.image_shape, len(fm.mean), len(fm.std)) == (10, (1, 28, 28), 1, 1)
    assert (cf.num_classes, cf.image_shape, len(cf.mean), len(cf.std)) == (10, (3, 32, 32), 3, 3)
    assert set(fm.checksums) == set(fm.files) and all(c.algorithm == "sha256" for c in fm.checksums.values())
    assert set(cf.checksums) == set(cf.files)


def fm_streamed() -> bool:
    return DATASETS.get("fashion_mnist").streamed


def test_unknown_dataset_names_the_choices():
    with pytest.raises(UserError, match=r"unknown dataset 'imagenet21k'; choose one of: cifar10, fashion_mnist, imagenet, "
                                        r"mnist"):
        load_dataset("imagenet21k")
    with pytest.raises(UserError, match=r"imagenet is streamed from disk, not loaded into memory"):
        load_dataset("imagenet")


# ---------------------------------------------------------------- IDX reader


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["fashion_mnist", "mnist"])
def test_idx_round_trip_exact(tmp_path, name, gz, no_debian):
    root = write_idx_dataset(tmp_path / "d", n_train=50, n_test=20, seed=3, gz=gz)
    ds = load_dataset(name, root, verify_checksums=False)
    assert ds.spec.name == name
    assert ds.train_images.dtype == torch.uint8 and ds.train_labels.dtype == torch.int64
    assert ds.train_images.shape == (50, 1, 28, 28) and ds.test_images.shape == (20, 1, 28, 28)
    for key in IDX_NAMES:
        got = getattr(ds, key).numpy()
        want = read_fixture_idx(root, key)
        np.testing.assert_array_equal(got.reshape(want.shape), want)
    assert ds.train_labels.bincount().tolist() == [5] * 10


def test_idx_torchvision_layout_is_found(tmp_path, no_debian):
    write_idx_dataset(tmp_path / "FashionMNIST" / "raw", 20, 10)
    write_idx_dataset(tmp_path / "MNIST" / "raw", 30, 10)
    assert len(load_dataset("fashion_mnist", tmp_path, verify_checksums=False).train_labels) == 20
    assert len(load_dataset("mnist", tmp_path, verify_checksums=False).train_labels) == 30


def test_idx_reader_other_shapes(tmp_path):
    root = write_idx_dataset(tmp_path, 12, 4, shape=(5, 7), num_classes=3, seed=1)
    images = idx_module.read_idx(root / IDX_NAMES["train_images"], idx_module.IMAGES_MAGIC)
    labels = idx_module.read_idx(root / IDX_NAMES["train_labels"], idx_module.LABELS_MAGIC)
    assert images.shape == (12, 5, 7) and labels.tolist() == read_fixture_idx(root, "train_labels").tolist()
    assert sorted(set(labels.tolist())) == [0, 1, 2]


# ---------------------------------------------------------------- CIFAR reader


@pytest.mark.parametrize("as_tar", [False, True])
def test_cifar_round_trip_exact(tmp_path, as_tar):
    root = write_cifar10(tmp_path, n_per_batch=20, n_test=10, seed=5, as_tar=as_tar)
    ds = load_dataset("cifar10", root, verify_checksums=False)
    assert ds.train_images.shape == (100, 3, 32, 32) and ds.test_images.shape == (10, 3, 32, 32)
    assert ds.train_images.dtype == torch.uint8 and ds.test_labels.dtype == torch.int64
    if as_tar:
        assert (root / "cifar-10-batches-py" / "test_batch").is_file()  # extracted into the root
    for i in range(1, 6):
        images, labels = read_fixture_cifar(root, f"data_batch_{i}")
        sl = slice((i - 1) * 20, i * 20)
        np.testing.assert_array_equal(ds.train_images[sl].numpy(), images)
        assert ds.train_labels[sl].tolist() == labels
    images, labels = read_fixture_cifar(root, "test_batch")
    np.testing.assert_array_equal(ds.test_images.numpy(), images)
    assert ds.test_labels.tolist() == labels


def test_cifar_corrupted_batch_names_the_file(tmp_path):
    root = write_cifar10(tmp_path, 10, 10)
    bad = root / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(UserError, match=r"data_batch_3 is not a readable CIFAR-10 python batch.*intact copy"):
        load_dataset("cifar10", root, verify_checksums=False)


def test_cifar_pickle_cannot_run_code(tmp_path):
    import pickle

    root = write_cifar10(tmp_path, 10, 10)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(UserError, match=r"test_batch is not a readable.*unexpected object .*print"):
        load_dataset("cifar10", root, verify_checksums=False)


def test_cifar_checksum_mismatch(tmp_path):
    root = write_cifar10(tmp_path, 10, 10)
    with pytest.raises(UserError, match=r"checksum mismatch for .*data_batch_1 \(md5 of the file\): expected c99cafc1.*set data.verify_checksums: false"):
        load_dataset("cifar10", root, verify_checksums=True)


def test_cifar_missing_names_every_way(tmp_path):
    with pytest.raises(UserError) as e:
        load_dataset("cifar10", tmp_path)
    msg = str(e.value)
    assert "\n" not in msg
    for part in ("cifar10: files not found in", str(tmp_path), "set data.root to a folder holding", "cifar-10-python.tar.gz in the data.root folder", "data.download: true"):
        assert part in msg


# ---------------------------------------------------------------- real Fashion-MNIST


@pytest.mark.skipif(not DEBIAN.is_dir(), reason=f"{DEBIAN} absent (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_from_debian_with_checksums():
    ds = load_dataset("fashion_mnist", None, verify_checksums=True)
    assert ds.train_images.shape == (60000, 1, 28, 28) and ds.test_images.shape == (10000, 1, 28, 28)
    assert ds.train_labels.bincount().tolist() == [6000] * 10
    assert ds.test_labels.bincount().tolist() == [1000] * 10
    x = ds.train_images.float() / 255
    assert abs(x.mean().item() - ds.spec.mean[0]) < 1e-3 and abs(x.std().item() - ds.spec.std[0]) < 1e-3


# ---------------------------------------------------------------- errors


def test_missing_fashion_mnist_names_every_way(no_debian):
    with pytest.raises(UserError) as e:
        load_dataset("fashion_mnist", None)
    msg = str(e.value)
    assert "\n" not in msg
    for part in (
        "fashion_mnist: files not found in",
        "set data.root to a folder holding train-images-idx3-ubyte.gz",
        "apt-get install dataset-fashion-mnist",
        "data.download: true",
    ):
        assert part in msg


@pytest.mark.skipif(not DEBIAN.is_dir(), reason=f"{DEBIAN} absent (apt-get install dataset-fashion-mnist)")
def test_a_named_root_is_the_only_place_read(tmp_path):
    # Debian's copy is present, yet a root the user names that lacks one file is an error naming the file.
    root = write_idx_dataset(tmp_path / "mine", n_train=20, n_test=10, seed=1)
    (root / IDX_NAMES["test_labels"]).unlink()
    with pytest.raises(UserError) as e:
        load_dataset("fashion_mnist", root, verify_checksums=False)
    msg = str(e.value)
    assert "\n" not in msg and f"data.root {root} lacks {IDX_NAMES['test_labels']}" in msg
    assert str(DEBIAN) not in msg
    with pytest.raises(UserError, match=r"data.root .*nowhere does not exist"):
        load_dataset("fashion_mnist", tmp_path / "nowhere", verify_checksums=False)
    with pytest.raises(UserError, match=r"data.root .*nowhere does not exist"):
        load_dataset("cifar10", tmp_path / "nowhere", verify_checksums=False)
    # complete: read from the root, not from Debian (20 training images, not 60,000)
    write_idx_dataset(tmp_path / "mine", n_train=20, n_test=10, seed=1)
    assert len(load_dataset("fashion_mnist", root, verify_checksums=False).train_labels) == 20


def test_missing_mnist_without_root(no_debian):
    with pytest.raises(UserError, match=r"mnist: files not found in \(no folder: data.root is empty\); set data.root to a folder"):
        load_dataset("mnist", None)


def test_corrupted_gz_names_the_file(tmp_path, no_debian):
    root = write_idx_dataset(tmp_path, 20, 10)
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(b"this is not gzip at all")
    with pytest.raises(UserError, match=r"t10k-images-idx3-ubyte.gz is not a valid gzip file; replace it"):
        load_dataset("fashion_mnist", root, verify_checksums=False)


def test_truncated_gz_names_the_file(tmp_path, no_debian):
    root = write_idx_dataset(tmp_path, 20, 10)
    path = root / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte.gz is a corrupted or truncated gzip file"):
        load_dataset("fashion_mnist", root, verify_checksums=False)


def test_truncated_idx_content_and_wrong_magic(tmp_path, no_debian):
    root = write_idx_dataset(tmp_path, 20, 10)
    path = root / "train-labels-idx1-ubyte.gz"
    content = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(content[:-3]))
    with pytest.raises(UserError, match=r"train-labels-idx1-ubyte.gz holds 17 data bytes but its header \(20,\) needs 20"):
        load_dataset("mnist", root, verify_checksums=False)
    # an images file where a labels file belongs
    path.write_bytes((root / "t10k-images-idx3-ubyte.gz").read_bytes())
    with pytest.raises(UserError, match=r"train-labels-idx1-ubyte.gz has IDX magic number 2051, expected 2049"):
        load_dataset("mnist", root, verify_checksums=False)


def test_checksum_mismatch_fashion(tmp_path, no_debian):
    root = write_idx_dataset(tmp_path, 20, 10)
    with pytest.raises(UserError) as e:
        load_dataset("fashion_mnist", root, verify_checksums=True)
    msg = str(e.value)
    assert "train-images-idx3-ubyte.gz" in msg and "sha256 of the decompressed content" in msg
    assert "expected c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888, got " in msg
    assert "set data.verify_checksums: false for a custom copy" in msg


def test_checksum_mismatch_mnist_md5_of_gz(tmp_path):
    root = write_idx_dataset(tmp_path, 20, 10)
    with pytest.raises(UserError, match=r"\(md5 of the file\): expected f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        load_dataset("mnist", root, verify_checksums=True)


def test_mnist_uncompressed_copy_cannot_be_verified_warns(tmp_path):
    root = write_idx_dataset(tmp_path, 20, 10, gz=False)
    with pytest.warns(UserWarning, match="cannot verify"):
        ds = load_dataset("mnist", root, verify_checksums=True)
    assert len(ds.test_labels) == 10


def test_download_failure_becomes_user_error(tmp_path, monkeypatch, no_debian):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(UserError, match=r"mnist: download into .* failed \(URLError: .*Name or service not known.*\); check the internet"):
        load_dataset("mnist", tmp_path, download=True)


def test_download_success_uses_torchvision_layout(tmp_path, monkeypatch, no_debian):
    import torchvision.datasets

    def fake_download(root, train, download):
        assert download is True
        write_idx_dataset(Path(root) / "FashionMNIST" / "raw", 20, 10)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", fake_download)
    ds = load_dataset("fashion_mnist", tmp_path / "dl", verify_checksums=False, download=True)
    assert ds.train_images.shape == (20, 1, 28, 28)


# ---------------------------------------------------------------- splits


def _labels(counts):
    g = torch.Generator().manual_seed(0)
    lab = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return lab[torch.randperm(len(lab), generator=g)]


def test_class_balanced_split_counts_disjoint_cover_and_seeded():
    labels = _labels([100, 90, 80, 120, 100])
    train, val = class_balanced_split(labels, val_size=52, seed=1)
    # 52 = 5 * 10 + 2: the two lowest classes give one extra
    assert labels[val].bincount().tolist() == [11, 11, 10, 10, 10]
    assert labels[train].bincount().tolist() == [89, 79, 70, 110, 90]
    assert len(set(train.tolist()) & set(val.tolist())) == 0
    assert sorted(train.tolist() + val.tolist()) == list(range(len(labels)))
    assert torch.equal(val, val.sort().values) and torch.equal(train, train.sort().values)
    train2, val2 = class_balanced_split(labels, val_size=52, seed=1)
    assert torch.equal(val, val2) and torch.equal(train, train2)
    _, val3 = class_balanced_split(labels, val_size=52, seed=2)
    assert not torch.equal(val, val3)


def test_split_errors_name_the_setting():
    labels = _labels([5, 5])
    with pytest.raises(UserError, match=r"val_size must be an integer in 1..9 \(the training set has 10 samples\), got 10"):
        class_balanced_split(labels, 10, 0)
    with pytest.raises(UserError, match=r"val_size must be"):
        class_balanced_split(labels, 0, 0)
    with pytest.raises(UserError, match=r"class 1 has 2 samples but needs 3.*choose a smaller size"):
        class_balanced_split(_labels([10, 2]), 6, 0)


def test_subset_is_class_balanced_and_seeded():
    labels = _labels([300] * 10)
    idx = subset(labels, 200, seed=7)
    assert len(idx) == 200 and len(set(idx.tolist())) == 200
    assert labels[idx].bincount().tolist() == [20] * 10
    assert torch.equal(idx, subset(labels, 200, seed=7)) and not torch.equal(idx, subset(labels, 200, seed=8))
    assert torch.equal(subset(labels, 3000, seed=0), torch.arange(3000))
    with pytest.raises(UserError, match=r"subset size must be an integer in 1..3000"):
        subset(labels, 3001, 0)


# ---------------------------------------------------------------- batches


def _toy(n=1000, c=1, hw=4):
    images = torch.randint(0, 256, (n, c, hw, hw), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    images[:, :, 0, 0] = (torch.arange(n) % 256).to(torch.uint8).view(n, 1)
    labels = torch.arange(n)  # label = sample id, to check coverage
    return images, labels


def test_batches_cover_each_sample_once_per_epoch():
    images, labels = _toy(1000)
    g = torch.Generator().manual_seed(0)
    tb = TensorBatches(images, labels, 128, (0.5,), (0.25,), generator=g)
    assert len(tb) == 8
    epochs = []
    for _ in range(2):
        seen = torch.cat([y for _, y in tb])
        assert sorted(seen.tolist()) == list(range(1000))
        epochs.append(seen)
    assert not torch.equal(epochs[0], epochs[1])  # reshuffled each epoch
    sizes = [len(y) for _, y in tb]
    assert sizes == [128] * 7 + [104]
    # in-order evaluation
    ev = TensorBatches(images, labels, 300, (0.5,), (0.25,))
    assert torch.equal(torch.cat([y for _, y in ev]), labels)


def test_batches_drop_last_and_max_batches():
    images, labels = _toy(1000)
    g = torch.Generator().manual_seed(0)
    tb = TensorBatches(images, labels, 128, (0.5,), (0.25,), generator=g, drop_last=True)
    assert len(tb) == 7 and [len(y) for _, y in tb] == [128] * 7
    tb = TensorBatches(images, labels, 128, (0.5,), (0.25,), generator=g, max_batches=3)
    assert len(tb) == 3 and [len(y) for _, y in tb] == [128] * 3
    ev = TensorBatches(images, labels, 100, (0.5,), (0.25,), max_batches=2)
    assert torch.equal(torch.cat([y for _, y in ev]), labels[:200])


def test_batches_normalise_known_pixels():
    images = torch.zeros(3, 3, 2, 2, dtype=torch.uint8)
    images[0, :, 0, 0] = 255
    images[1, :, 1, 1] = 51  # 0.2
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    x, y = next(iter(TensorBatches(images, torch.arange(3), 3, mean, std)))
    assert x.dtype == torch.float32 and x.shape == (3, 3, 2, 2)
    for ch in range(3):
        assert x[0, ch, 0, 0].item() == pytest.approx((1.0 - mean[ch]) / std[ch], abs=1e-5)
        assert x[1, ch, 1, 1].item() == pytest.approx((0.2 - mean[ch]) / std[ch], abs=1e-5)
        assert x[2, ch, 0, 1].item() == pytest.approx(-mean[ch] / std[ch], abs=1e-5)


def test_batches_split_over_processes_as_one_process_draws_them():
    images, labels = _toy(300, c=3, hw=32)

    def epoch(shard, batch_size=64, seeded=True):
        generator = torch.Generator().manual_seed(4) if seeded else None
        tb = TensorBatches(images, labels, batch_size, (0.5,) * 3, (0.25,) * 3, generator=generator, augment=seeded,
                           shard=shard)
        return len(tb), [(x.clone(), y.clone()) for x, y in tb]

    length, single = epoch((0, 1))
    assert length == 5 and [len(y) for _, y in single] == [64] * 4 + [44]
    (n0, rank0), (n1, rank1) = epoch((0, 2)), epoch((1, 2))
    # training: rank r takes half r of each global batch (order and crops as for one process); the last,
    # partial global batch is left out rather than split unequally
    assert n0 == n1 == 4 and [len(y) for _, y in rank0] == [32] * 4
    for (x, y), (x0, y0), (x1, y1) in zip(single, rank0, rank1):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
    # evaluation: whole batches, rank r takes batches r, r + 2, ...; together every sample once, in order
    _, everything = epoch((0, 1), 64, seeded=False)
    (e0, even), (e1, odd) = epoch((0, 2), 64, seeded=False), epoch((1, 2), 64, seeded=False)
    assert (e0, e1) == (3, 2)
    assert torch.equal(torch.cat([y for _, y in even[:1] + odd[:1] + even[1:2] + odd[1:2] + even[2:]]), labels)
    assert torch.equal(even[1][0], everything[2][0]) and torch.equal(odd[1][0], everything[3][0])
    with pytest.raises(ValueError, match="does not split into 3 equal parts"):
        epoch((0, 3))
    with pytest.raises(ValueError, match="rank must lie in 0..processes-1"):
        epoch((2, 2))


def test_batches_same_seed_same_stream():
    images, labels = _toy(300, c=3, hw=32)
    runs = []
    for _ in range(2):
        tb = TensorBatches(images, labels, 64, (0.5,) * 3, (0.25,) * 3, generator=torch.Generator().manual_seed(4), augment=True)
        runs.append([(x.clone(), y.clone()) for x, y in tb])
    for (x0, y0), (x1, y1) in zip(*runs):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


# ---------------------------------------------------------------- augmentation


def _reference_augment(images, state, pad=4):
    """Slow per-sample pad / crop / flip, drawing offsets y, x then flips from a generator in `state`."""
    g = torch.Generator().set_state(state)
    b, c, h, w = images.shape
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    flips = torch.rand(b, generator=g) < 0.5
    out = torch.empty_like(images)
    for i in range(b):
        p = torch.zeros(c, h + 2 * pad, w + 2 * pad, dtype=images.dtype)
        p[:, pad : pad + h, pad : pad + w] = images[i]
        crop = p[:, oy[i] : oy[i] + h, ox[i] : ox[i] + w]
        out[i] = crop.flip(-1) if flips[i] else crop
    return out, oy, ox, flips


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_augment_matches_slow_reference(dtype):
    images = torch.randint(1, 256, (64, 3, 32, 32), generator=torch.Generator().manual_seed(1)).to(dtype)
    g = torch.Generator().manual_seed(123)
    state = g.get_state()
    out = augment_batch(images, g)
    ref, oy, ox, flips = _reference_augment(images, state)
    assert out.shape == images.shape and out.dtype == dtype
    assert torch.equal(out, ref)
    # the draws exercise all cases: edges of the offset range, flipped and not
    assert flips.any() and (~flips).any() and {0, 8} <= set(oy.tolist()) | set(ox.tolist())
    # deterministic for a seed, different for another
    assert torch.equal(augment_batch(images, torch.Generator().manual_seed(123)), out)
    assert not torch.equal(augment_batch(images, torch.Generator().manual_seed(124)), out)


def test_augment_brings_in_exactly_the_zero_padding_of_the_offsets():
    images = torch.full((200, 1, 32, 32), 9, dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    out = augment_batch(images, g)
    _, oy, ox, _ = _reference_augment(images, state)
    dy, dx = (oy - 4).abs(), (ox - 4).abs()
    expected_zeros = 32 * dy + 32 * dx - dy * dx  # zero rows and columns from the padding
    assert torch.equal((out == 0).flatten(1).sum(1), expected_zeros)
    assert set(torch.unique(out).tolist()) == {0, 9}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_augment_on_cuda_matches_cpu_reference():
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    g = torch.Generator(device="cuda").manual_seed(5)
    out = augment_batch(images.cuda(), g)
    assert out.is_cuda and out.shape == images.shape
    # same generator seed twice gives the same result on the device
    assert torch.equal(augment_batch(images.cuda(), torch.Generator(device="cuda").manual_seed(5)), out)
    tb = TensorBatches(images, torch.arange(32), 8, (0.5,) * 3, (0.25,) * 3, generator=g, augment=True, device="cuda")
    seen = torch.cat([y for _, y in tb])
    assert seen.is_cuda and sorted(seen.tolist()) == list(range(32))
