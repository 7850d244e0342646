"""The official GRAIN module files, in their exact key layouts (docs/method.md §5.2), load into the paper preset."""

from __future__ import annotations

import pytest
import torch

from grain_pl.networks import GRAIN
from grain_pl.weights.grain_original import (
    convert_fea2code,
    convert_fusion,
    convert_invrrdb,
    expected_state,
    load_official_grain,
)
from grain_pl.weights.io import CheckpointError, check_state_dict

RDB5 = [(32, 64), (32, 96), (32, 128), (32, 160), (64, 192)]
RDB4 = [(32, 64), (32, 96), (32, 128), (64, 160)]


def conv(shapes: dict, key: str, out_channels: int, in_channels: int, kernel: int = 3, bias: bool = True) -> None:
    shapes[f"{key}.weight"] = (out_channels, in_channels, kernel, kernel)
    if bias:
        shapes[f"{key}.bias"] = (out_channels,)


def rrdb(shapes: dict, key: str, light: bool = False) -> None:
    for dense in (1,) if light else (1, 2, 3):
        for index, (out_channels, in_channels) in enumerate(RDB4 if light else RDB5, start=1):
            conv(shapes, f"{key}.RDB{dense}.conv{index}", out_channels, in_channels)


def official_invrrdb() -> dict:
    """The 718 keys of InvRRDB.state_dict(), written from the official tables, not from our code."""
    shapes: dict = {}
    conv(shapes, "enc.conv_first", 64, 3)
    for index in range(6):
        conv(shapes, f"enc.body.{index}.0", 64, 64)
    for index in range(10):
        rrdb(shapes, f"enc.RRDB_trunk.{index}")
    conv(shapes, "enc.trunk_conv", 64, 64)
    conv(shapes, "enc.out.0", 64, 64)
    conv(shapes, "enc.out.2", 3, 64)
    conv(shapes, "dec.conv_first", 64, 3)
    for resolution, blocks in {16: 3, 32: 3, 64: 3, 128: 2, 256: 1, 512: 1, 1024: 1}.items():
        for index in range(blocks):
            rrdb(shapes, f"dec.RRDB_trunk{resolution}.{index}", light=resolution >= 512)
        conv(shapes, f"dec.trunk_conv{resolution}", 64, 64)
    conv(shapes, "dec.out.0", 64, 64)
    conv(shapes, "dec.out.2", 32, 64)
    conv(shapes, "dec.out.4", 3, 32)
    return shapes


def official_fea2code() -> dict:
    """The 222 `encoder.styles.*` keys of codeStyleGAN."""
    shapes: dict = {}
    for k in range(9):
        prefix = f"encoder.styles.{k}"
        for head in ("convs1", "convs2"):
            for index, (out_channels, in_channels) in enumerate([(64, 64), (128, 64), (256, 128), (512, 256)]):
                conv(shapes, f"{prefix}.{head}.{2 * index}", out_channels, in_channels)
        for linear in ("linear1", "linear2"):
            shapes[f"{prefix}.{linear}.weight"], shapes[f"{prefix}.{linear}.bias"] = (512, 512), (512,)
        if k >= 3:
            conv(shapes, f"{prefix}.conv_first.0", 64, 64)
        for index in range(k - 3):
            conv(shapes, f"{prefix}.convs.{2 * index}", 64, 64)
    return shapes


def official_fusion() -> dict:
    """The 30 keys of Fusion."""
    shapes: dict = {}
    for index, channels in enumerate((192, 128, 96, 224), start=1):
        conv(shapes, f"se{index}.fc1", channels // 16, channels, kernel=1, bias=False)
        conv(shapes, f"se{index}.fc2", channels, channels // 16, kernel=1, bias=False)
    for index, (in_channels, width) in enumerate([(192, 128), (128, 64), (96, 32)], start=1):
        conv(shapes, f"conv{index}.0", width, in_channels)
        conv(shapes, f"conv{index}.2", width, width)
    for index, (out_channels, in_channels) in enumerate([(128, 224), (128, 128), (64, 128), (64, 64), (3, 64)]):
        conv(shapes, f"out.{2 * index}", out_channels, in_channels)
    return shapes


def tagged(shapes: dict, start: int = 0) -> dict:
    """Cheap tensors of the right shapes whose value tells which key they came from (1 float stored each)."""
    return {key: torch.tensor(float(start + index)).expand(shape) for index, (key, shape) in
            enumerate(sorted(shapes.items()))}


@pytest.fixture(scope="module")
def paper_grain() -> GRAIN:
    with torch.device("meta"):
        grain = GRAIN("paper-1024-lr16")
    return grain.to_empty(device="cpu")


def test_official_tables_have_the_documented_sizes():
    assert len(official_invrrdb()) == 718
    assert sum(key.startswith("enc.") for key in official_invrrdb()) == 320
    assert len(official_fea2code()) == 222
    assert len(official_fusion()) == 30


@pytest.mark.parametrize("official, convert, parts", [
    (official_invrrdb, convert_invrrdb, ("encoder", "decoder")),
    (official_fea2code, convert_fea2code, ("latent_codes",)),
    (official_fusion, convert_fusion, ("fusion",)),
])
def test_converted_keys_and_shapes_match_grain_exactly(paper_grain, official, convert, parts):
    converted = convert({key: torch.empty(shape, device="meta") for key, shape in official().items()})
    check_state_dict(expected_state(paper_grain, parts), converted, source="<official layout>", what=str(parts))


def test_values_land_where_the_official_names_say(paper_grain, tmp_path):
    invrrdb, fea2code, fusion = tagged(official_invrrdb()), tagged(official_fea2code(), 1000), tagged(
        official_fusion(), 2000)
    # the three wrappers the official code writes: stage 1-3 `state_dict` + opts, stage-4 `state_dict2`, flat
    torch.save({"state_dict": invrrdb, "opts": {"learning_rate": 1e-4, "exp_dir": "x"}}, tmp_path / "inv.pt")
    torch.save({"state_dict2": {"module." + k: v for k, v in fea2code.items()}, "opts": {}}, tmp_path / "code.pt")
    torch.save(fusion, tmp_path / "fusion.pt")
    loaded = load_official_grain(paper_grain, invrrdb=tmp_path / "inv.pt", code_stylegan=tmp_path / "code.pt",
                                 fusion=tmp_path / "fusion.pt")
    assert len(loaded) == 3
    state = paper_grain.state_dict()
    expectations = {
        "decoder.scales.512.trunk_conv.weight": invrrdb["dec.trunk_conv512.weight"],
        "decoder.scales.128.blocks.1.rdb3.conv5.bias": invrrdb["dec.RRDB_trunk128.1.RDB3.conv5.bias"],
        "decoder.scales.1024.blocks.0.rdb1.conv4.weight": invrrdb["dec.RRDB_trunk1024.0.RDB1.conv4.weight"],
        "encoder.down.5.0.weight": invrrdb["enc.body.5.0.weight"],
        "encoder.to_lr.2.bias": invrrdb["enc.out.2.bias"],
        "decoder.to_hr.4.weight": invrrdb["dec.out.4.weight"],
        "latent_codes.blocks.8.downsample.0.weight": fea2code["encoder.styles.8.conv_first.0.weight"],
        "latent_codes.blocks.8.downsample.10.weight": fea2code["encoder.styles.8.convs.8.weight"],
        "latent_codes.blocks.2.even_linear.weight": fea2code["encoder.styles.2.linear2.weight"],
        "latent_codes.blocks.2.odd_convs.6.bias": fea2code["encoder.styles.2.convs1.6.bias"],
        "fusion.branches.256.se.fc1.weight": fusion["se1.fc1.weight"],
        "fusion.branches.1024.convs.2.weight": fusion["conv3.2.weight"],
        "fusion.merge_se.fc2.weight": fusion["se4.fc2.weight"],
        "fusion.head.8.bias": fusion["out.8.bias"],
    }
    for ours, theirs in expectations.items():
        assert torch.equal(state[ours], theirs), ours


def test_wrong_shapes_name_the_file_and_the_key(paper_grain, tmp_path):
    fusion = tagged(official_fusion())
    fusion["conv1.0.weight"] = torch.zeros(64, 192, 3, 3)
    torch.save({"state_dict": fusion}, tmp_path / "Fusion_model.pt")
    with pytest.raises(CheckpointError, match=r"Fusion_model\.pt.*fusion\.branches\.256\.convs\.0\.weight: "
                                              r"expected \(128, 192, 3, 3\), got \(64, 192, 3, 3\)"):
        load_official_grain(paper_grain, fusion=tmp_path / "Fusion_model.pt")


def test_missing_and_unexpected_keys_are_listed(paper_grain, tmp_path):
    invrrdb = tagged(official_invrrdb())
    del invrrdb["dec.trunk_conv64.bias"]
    invrrdb["dec.RRDB_trunk2048.0.RDB1.conv1.weight"] = torch.zeros(1)
    torch.save({"state_dict": invrrdb}, tmp_path / "invRRDB_model.pt")
    with pytest.raises(CheckpointError) as error:
        load_official_grain(paper_grain, invrrdb=tmp_path / "invRRDB_model.pt")
    message = str(error.value)
    assert "invRRDB_model.pt" in message
    assert "missing 1 key(s): decoder.scales.64.trunk_conv.bias" in message
    assert "unexpected 1 key(s): decoder.scales.2048.blocks.0.rdb1.conv1.weight" in message


def test_nothing_is_loaded_unless_every_file_fits(paper_grain, tmp_path):
    torch.save({"state_dict": tagged(official_invrrdb(), 5000)}, tmp_path / "inv.pt")
    (tmp_path / "fusion.pt").write_bytes(b"PK\x03\x04 truncated")
    before = paper_grain.encoder.conv_first.weight.clone()
    with pytest.raises(CheckpointError, match=r"fusion\.pt: cannot read it"):
        load_official_grain(paper_grain, invrrdb=tmp_path / "inv.pt", fusion=tmp_path / "fusion.pt")
    assert torch.equal(paper_grain.encoder.conv_first.weight, before)


def test_a_file_of_the_wrong_module_is_refused(paper_grain, tmp_path):
    torch.save({"state_dict": tagged(official_fusion())}, tmp_path / "Fusion_model.pt")
    with pytest.raises(CheckpointError, match=r"Fusion_model\.pt: does not fit the official invRRDB_model\.pt"):
        load_official_grain(paper_grain, invrrdb=tmp_path / "Fusion_model.pt")
