"""EfficientNet-Lite: the port is faithful (its own ImageNet heads on real photos), converted once, cut right."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from automl.backbones import get_backbone
from automl.data.images import decode_image
from automl.errors import InputError

LITES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
SAMPLE_PER_CLASS = 50
REQUIRED_TOP5 = 0.90

# natural_images class -> the ImageNet-1k class indices of the right kind (standard 0-999 order).
IMAGENET_KIND = {
    # airliner 404, airship 405, missile 657, projectile 744, space shuttle 812, warplane 895, wing 908
    "airplane": {404, 405, 657, 744, 812, 895, 908},
    # cars and their parts: ambulance 407, amphibian 408, beach wagon 436, cab 468, car mirror 475,
    # car wheel 479, convertible 511, garbage truck 569, go-kart 573, golfcart 575, grille 581,
    # half track 586, jeep 609, limousine 627, minibus 654, minivan 656, Model T 661, moving van 675,
    # pickup 717, police van 734, racer 751, recreational vehicle 757, snowplow 803, sports car 817,
    # tow truck 864, trailer truck 867
    "car": {407, 408, 436, 468, 475, 479, 511, 569, 573, 575, 581, 586, 609, 627, 654, 656, 661, 675, 717, 734}
    | {751, 757, 803, 817, 864, 867},
    # tabby 281, tiger cat 282, Persian 283, Siamese 284, Egyptian cat 285, lynx 287
    "cat": {281, 282, 283, 284, 285, 287},
    # the 118 dog breeds, Chihuahua 151 to Mexican hairless 268
    "dog": set(range(151, 269)),
    # fruit and vegetables, head cabbage 936 to pomegranate 957; corn 987, acorn 988, hip 989,
    # buckeye 990, ear 998
    "fruit": set(range(936, 958)) | {987, 988, 989, 990, 998},
    # bicycle-built-for-two 444, crash helmet 518, disk brake 535, moped 665, motor scooter 670,
    # mountain bike 671, tricycle 870
    "motorbike": {444, 518, 535, 665, 670, 671, 870},
}


@pytest.fixture(scope="module")
def photo_sample(natural_images: Path) -> dict[str, list[bytes]]:
    """50 photos per class, drawn with a fixed seed (not the first 50 by name)."""
    sample = {}
    for name in IMAGENET_KIND:
        files = sorted((natural_images / name).iterdir())
        sample[name] = [path.read_bytes() for path in random.Random(name).sample(files, SAMPLE_PER_CLASS)]
    return sample


@pytest.mark.slow
@pytest.mark.parametrize("name", LITES)
def test_imagenet_head_puts_the_right_kind_in_the_top5(name: str, photo_sample: dict[str, list[bytes]]) -> None:
    backbone = get_backbone(name)
    classifier = backbone.build_classifier("default")
    rates = {}
    for class_name, photos in photo_sample.items():
        pixels = np.stack([decode_image(photo, backbone.resize) for photo in photos]).astype("float32")
        top5 = np.argsort(-classifier.predict(pixels, batch_size=50, verbose=0), axis=1)[:, :5]
        rates[class_name] = np.mean([bool(IMAGENET_KIND[class_name] & set(row.tolist())) for row in top5])
    print(f"{name} top-5 right kind: {rates}")
    assert all(rate >= REQUIRED_TOP5 for rate in rates.values()), rates


def test_weights_are_converted_once_then_loaded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import automl_efficientnet_lite.weights as lite_weights

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    backbone = get_backbone("efficientnet_lite0")
    first = backbone.build("default")
    (converted,) = (tmp_path / "automl" / "weights").glob("efficientnet_lite0-*.npz")
    written = converted.stat().st_mtime_ns

    def must_not_convert(_: object) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(lite_weights, "load_state_dict", must_not_convert)
    second = backbone.build("default")
    assert converted.stat().st_mtime_ns == written
    assert all(np.array_equal(a, b) for a, b in zip(first.get_weights(), second.get_weights(), strict=True))
    assert backbone.weights_offline("default")
    assert backbone.weights_id("default").startswith("lite-imagenet-")


def test_lite_cuts_lie_at_the_stage_boundaries() -> None:
    """`top` before the last block (7x7x192), `half` before stage 4 (14x14x80); check_backbone proves the rest."""
    cuts = get_backbone("efficientnet_lite0").cut_points()
    assert cuts["top"].output_shape == (7, 7, 192) and cuts["half"].output_shape == (14, 14, 80)


def test_a_file_that_is_not_lite_weights_is_an_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bogus = tmp_path / "weights.pth"
    bogus.write_bytes(b"not a pytorch file")
    with pytest.raises(InputError, match=r"weights\.pth: not efficientnet_lite0 weights"):
        get_backbone("efficientnet_lite0").build(str(bogus))
