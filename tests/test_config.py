"""Build configs: parsing, defaults, validation messages, overrides and round-trips."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from axnb.config import (
    DEFAULT,
    Config,
    InputConfig,
    InputProcessor,
    LayerConfig,
    OutputProcessor,
    QuantConfig,
    format_input_shapes,
    load_config,
    parse_input_shapes,
    save_config,
)
from axnb.errors import ConfigError
from axnb.types import CalibMethod, DataFormat, Layout, Method, Mode, QType, SrcDType, TensorFormat

CONFIGS = __import__("axnb.zoo", fromlist=["CONFIGS"]).CONFIGS


def full_config() -> dict:
    """Every field axnb reads, plus accepted-but-unsimulated keys at every level."""
    return {
        "input": "model.onnx",
        "output_dir": "out[  1  ]",
        "output_name": "compiled.axmodel",
        "input_shapes": "x:1x3x224x224;mask:1x64",
        "model_type": "ONNX",
        "npu_mode": "NPU3",
        "onnx_opt": {"enable_onnxsim": True},
        "compiler": {"check": 3, "check_mode": "CheckPerLayer"},
        "quant": {
            "input_configs": [
                {"tensor_name": "x", "calibration_dataset": "calib/x.tar",
                 "calibration_format": "Image", "calibration_size": 16,
                 "calibration_mean": [123.675, 116.28, 103.53],
                 "calibration_std": [58.395, 57.12, 57.375]},
                {"tensor_name": "mask", "calibration_dataset": "calib/mask",
                 "calibration_format": "Numpy", "calibration_size": -1},
            ],
            "layer_configs": [
                {"layer_name": "Conv_0", "data_type": "U16", "weight_data_type": "FP32",
                 "output_data_type": "U16"},
                {"layer_names": ["blk,  1/[mm]", "blk,\n 2"], "data_type": "U16"},
                {"op_types": ["Softmax", "LayerNormalization"], "data_type": "S16"},
                {"start_tensor_names": ["13"], "end_tensor_names": ["15"], "data_type": "FP32"},
            ],
            "calibration_method": "Percentile",
            "precision_analysis": True,
            "precision_analysis_method": "EndToEnd",
            "precision_analysis_mode": "NPUBackend",
            "input_sample_dir": "samples",
            "enable_smooth_quant": True,
            "smooth_quant_threshold": 0.5,
            "smooth_quant_strength": 0.25,
            "conv_bias_data_type": "FP32",
            "transformer_opt_level": 1,
        },
        "input_processors": [
            {"tensor_name": "x", "tensor_format": "RGB", "tensor_layout": "NCHW",
             "src_format": "BGR", "src_layout": "NHWC", "src_dtype": "U8",
             "mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0], "csc_mode": "NoCSC"},
            {"tensor_name": "mask", "tensor_format": "GRAY", "src_dtype": "FP32"},
        ],
        "output_processors": [
            {"tensor_name": "logits", "dst_perm": [0, 2, 1], "output_dtype": "FP32"},
        ],
    }


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ parsing and round-trip


def test_full_config_values() -> None:
    cfg = load_config(full_config())
    assert cfg.input_shapes["x"] == (1, 3, 224, 224) and cfg.input_shapes["mask"] == (1, 64)
    q = cfg.quant
    assert q.calibration_method is CalibMethod.Percentile
    assert q.precision_analysis_method is Method.EndToEnd
    assert q.precision_analysis_mode is Mode.Backend
    assert (q.smooth_quant_threshold, q.smooth_quant_strength) == (0.5, 0.25)
    assert q.input_configs[0].calibration_mean == (123.675, 116.28, 103.53)
    assert q.input_configs[1].calibration_format is DataFormat.Numpy
    assert q.input_configs[1].calibration_size == -1
    assert q.layer_configs[0] == LayerConfig(layer_names=("Conv_0",), data_type=QType.U16,
                                             weight_data_type=QType.FP32)
    assert q.layer_configs[1].layer_names == ("blk,  1/[mm]", "blk,\n 2")
    assert q.layer_configs[2].op_types == ("Softmax", "LayerNormalization")
    assert q.layer_configs[3].start_tensor_names == ("13",)
    proc = cfg.input_processors[0]
    assert (proc.tensor_format, proc.src_format, proc.src_layout) == (
        TensorFormat.RGB, TensorFormat.BGR, Layout.NHWC)
    assert cfg.input_processors[1].src_dtype is SrcDType.FP32
    assert cfg.output_processors[0].dst_perm == (0, 2, 1)


def test_round_trip_full_config(tmp_path: Path) -> None:
    first = load_config(write(tmp_path / "c.json", json.dumps(full_config())))
    saved = save_config(first, tmp_path / "again.json")
    second = load_config(saved)
    assert second == first
    assert second.to_dict() == first.to_dict()
    assert second.ignored == first.ignored
    # NOTE: the saved text is plain Pulsar2 JSON, with Pulsar2's enum spellings.
    text = json.loads(saved.read_text())
    assert text["quant"]["precision_analysis_mode"] == "NPUBackend"
    assert text["input_shapes"] == "x:1x3x224x224;mask:1x64"
    assert '"calibration_mean": [123.675, 116.28, 103.53]' in saved.read_text()


def test_to_dict_omits_none_and_keeps_unknown_pulsar2_keys() -> None:
    d = load_config(full_config()).to_dict()
    assert d["compiler"] == {"check": 3, "check_mode": "CheckPerLayer"}
    assert d["quant"]["layer_configs"][0] == {"layer_names": ["Conv_0"], "data_type": "U16",
                                              "weight_data_type": "FP32",
                                              "output_data_type": "U16"}
    assert "src_format" not in d["input_processors"][1]
    assert "calibration_mean" not in d["quant"]["input_configs"][1]


def test_shipped_configs_load_and_round_trip(tmp_path: Path) -> None:
    paths = sorted(CONFIGS.glob("*.json"))
    assert paths, "data/configs holds the demo configs"
    for path in paths:
        cfg = load_config(path)
        again = load_config(save_config(cfg, tmp_path / path.name))
        assert again == cfg and again.to_dict() == cfg.to_dict()
        moved = load_config(save_config(cfg.rebased(tmp_path), tmp_path / path.name))
        for ic in cfg.quant.input_configs:
            want = (CONFIGS / ic.calibration_dataset).resolve()
            got = moved.resolve_path(moved.input_config(ic.tensor_name).calibration_dataset)
            assert got.resolve() == want


def test_comments_are_stripped_outside_strings(tmp_path: Path) -> None:
    text = """// leading comment
    # python-style comment
    {
      /* a block
         comment over lines */
      "input": "http://example.com//model.onnx", // trailing
      "output_dir": "a#b/* not a comment */", # trailing too
      "quant": {"input_configs": [{"tensor_name": "it's \\"quoted\\" // here"}]}
    }
    """
    cfg = load_config(write(tmp_path / "c.json", text))
    assert cfg.input == "http://example.com//model.onnx"
    assert cfg.output_dir == "a#b/* not a comment */"
    assert cfg.quant.input_configs[0].tensor_name == 'it\'s "quoted" // here'


def test_bad_json_names_file_line_and_column(tmp_path: Path) -> None:
    text = '{\n  /* two\n  lines */\n  "input": "m.onnx"\n  "output_dir": "out"\n}\n'
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path / "broken.json", text))
    msg = str(err.value)
    assert "broken.json" in msg and "line 5" in msg and "column 3" in msg


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "config.json"
    with pytest.raises(ConfigError, match="config file not found") as err:
        load_config(missing)
    assert str(missing) in str(err.value)


def test_duplicate_json_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "dup.json", '{"input": "a.onnx", "input": "b.onnx"}')
    with pytest.raises(ConfigError, match=r"dup\.json: duplicate key 'input'"):
        load_config(path)


# ------------------------------------------------------------------ defaults


def test_defaults() -> None:
    cfg = load_config({})
    assert cfg == Config()
    q = cfg.quant
    assert q == QuantConfig()
    assert q.calibration_method is CalibMethod.MinMax
    assert q.precision_analysis is False
    assert q.precision_analysis_method is Method.PerLayer
    assert q.precision_analysis_mode is Mode.Reference
    assert (q.enable_smooth_quant, q.smooth_quant_threshold, q.smooth_quant_strength) == (
        False, 0.2, 0.6)
    assert q.conv_bias_data_type == "S32"
    assert cfg.input_shapes == {} and cfg.ignored == () and cfg.base_dir is None
    ic = load_config({"quant": {"input_configs": [{}]}}).quant.input_configs[0]
    assert ic == InputConfig(tensor_name=DEFAULT, calibration_format=DataFormat.Image,
                             calibration_size=32)
    proc = load_config({"input_processors": [{}]}).input_processors[0]
    assert (proc.tensor_format, proc.tensor_layout, proc.src_dtype) == (
        TensorFormat.AutoColorSpace, Layout.NCHW, SrcDType.FP32)
    assert proc.src_format is None and proc.src_layout is None
    layer = load_config({"quant": {"layer_configs": [{"op_type": "Add"}]}}).quant.layer_configs[0]
    assert layer.data_type is QType.U8 and layer.weight_data_type is None


def test_pulsar2_empty_values_mean_unset() -> None:
    cfg = load_config({"quant": {"input_sample_dir": "", "input_configs": [
        {"calibration_mean": [], "calibration_std": []}]},
        "output_processors": [{"tensor_name": "y", "dst_perm": []}]})
    assert cfg.quant.input_sample_dir is None
    assert cfg.quant.input_configs[0].calibration_mean is None
    assert cfg.output_processors[0].dst_perm is None


def test_direct_construction_normalises_lists_and_strings() -> None:
    made = LayerConfig(layer_names=["a"], data_type="U16")
    assert made == LayerConfig(layer_names=("a",), data_type=QType.U16)
    assert Config(input_shapes="x:1x3").input_shapes == {"x": (1, 3)}
    assert QuantConfig(precision_analysis_mode="Backend").precision_analysis_mode is Mode.Backend


def test_config_is_frozen_and_hashable() -> None:
    cfg = load_config(full_config())
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.input = "other.onnx"  # type: ignore[misc]
    assert hash(cfg) == hash(load_config(full_config()))
    with pytest.raises(TypeError):
        cfg.input_shapes["x"] = (1,)  # type: ignore[index]


# ------------------------------------------------------------------ paths and lookups


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    raw = {"input": "zoo:minilm", "output_dir": "/abs/out", "quant": {
        "input_configs": [{"calibration_dataset": "../data/calib"}], "input_sample_dir": "s"}}
    cfg = load_config(write(tmp_path / "cfgs" / "c.json", json.dumps(raw)))
    assert cfg.base_dir == (tmp_path / "cfgs").resolve()
    calib = cfg.resolve_path(cfg.input_config("x").calibration_dataset)
    assert calib.resolve() == (tmp_path / "data" / "calib").resolve()
    assert cfg.resolve_path("/abs/out") == Path("/abs/out")
    assert cfg.resolve_path("zoo:minilm") == Path("zoo:minilm")
    assert cfg.resolve_path(None) is None
    assert load_config(raw).resolve_path("s") == Path("s")


def test_save_writes_paths_verbatim(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path / "a" / "c.json", '{"input": "m.onnx"}'))
    again = load_config(save_config(cfg, tmp_path / "b" / "c.json"))
    assert again == cfg and again.input == "m.onnx"
    assert again.base_dir == (tmp_path / "b").resolve()


def test_rebased_keeps_paths_pointing_at_the_same_files(tmp_path: Path) -> None:
    raw = {"input": "zoo:minilm", "output_dir": "/abs/out", "quant": {"input_configs": [
        {"calibration_dataset": "calib"}], "input_sample_dir": "samples"}}
    cfg = load_config(write(tmp_path / "a" / "c.json", json.dumps(raw)))
    dest = tmp_path / "b" / "deep"
    moved = load_config(save_config(cfg.rebased(dest), dest / "c.json"))
    assert (moved.input, moved.output_dir) == ("zoo:minilm", "/abs/out")
    for get in (lambda c: c.quant.input_configs[0].calibration_dataset,
                lambda c: c.quant.input_sample_dir):
        assert moved.resolve_path(get(moved)).resolve() == cfg.resolve_path(get(cfg)).resolve()
    assert moved.quant.input_configs[0].calibration_dataset == os.path.join("..", "..", "a",
                                                                            "calib")


def test_input_processor_falls_back_to_default_then_defaults() -> None:
    x = {"tensor_name": "x", "tensor_format": "RGB"}
    default = {"tensor_name": "DEFAULT", "tensor_format": "GRAY"}
    cfg = load_config({"input_processors": [x, default]})
    assert cfg.input_processor("x").tensor_format is TensorFormat.RGB
    assert cfg.input_processor("y").tensor_format is TensorFormat.GRAY
    only_x = load_config({"input_processors": [x]})
    assert only_x.input_processor("y") == InputProcessor()


def test_input_config_falls_back_to_default_then_none() -> None:
    cfg = load_config({"quant": {"input_configs": [
        {"tensor_name": "a", "calibration_size": 4}, {"calibration_size": 8}]}})
    assert cfg.input_config("a").calibration_size == 4
    assert cfg.input_config("b").calibration_size == 8
    only_a = load_config({"quant": {"input_configs": [{"tensor_name": "a"}]}})
    assert only_a.input_config("b") is None


# ------------------------------------------------------------------ ignored keys


def test_unsimulated_pulsar2_keys_are_kept_and_reported() -> None:
    cfg = load_config(full_config())
    assert set(cfg.ignored) == {
        "model_type", "npu_mode", "onnx_opt", "compiler", "quant.transformer_opt_level",
        "quant.layer_configs[0].output_data_type", "input_processors[0].csc_mode",
        "output_processors[0].output_dtype"}
    assert cfg.extra["npu_mode"] == "NPU3"
    assert cfg.extra["compiler"] == {"check": 3, "check_mode": "CheckPerLayer"}


def test_ignored_values_are_copied_not_shared() -> None:
    raw = {"compiler": {"check": 3}}
    cfg = load_config(raw)
    raw["compiler"]["check"] = 0
    cfg.to_dict()["compiler"]["check"] = 1
    assert cfg.extra["compiler"] == {"check": 3}


# ------------------------------------------------------------------ overrides


def test_with_overrides_parses_strings_and_validates() -> None:
    cfg = load_config(full_config())
    new = cfg.with_overrides({
        "quant.calibration_method": "MSE",
        "quant.precision_analysis": "false",
        "quant.smooth_quant_strength": "0.75",
        "quant.input_configs[1].calibration_size": "64",
        "quant.input_configs[0].calibration_mean": "[1, 2, 3]",
        "input_shapes": "x:1x3x8x8",
        "npu_mode": "NPU1",
        "compiler.check": 0,
        "quant.fusion": "none",     # NOTE: the word, not Python's None (`--quant.fusion none`)
    })
    q = new.quant
    assert q.fusion.value == "none"
    assert q.calibration_method is CalibMethod.MSE and q.precision_analysis is False
    assert q.smooth_quant_strength == 0.75
    assert q.input_configs[1].calibration_size == 64
    assert q.input_configs[0].calibration_mean == (1.0, 2.0, 3.0)
    assert new.input_shapes == {"x": (1, 3, 8, 8)}
    assert new.extra["npu_mode"] == "NPU1" and new.extra["compiler"]["check"] == 0
    assert cfg.quant.calibration_method is CalibMethod.Percentile  # NOTE: original untouched
    assert new.quant.layer_configs == cfg.quant.layer_configs


def test_with_overrides_keeps_base_dir(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path / "c.json", "{}"))
    assert cfg.with_overrides({"quant.enable_smooth_quant": "true"}).base_dir == cfg.base_dir


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"quant.calibraton_method": "MSE"},
     "quant.calibraton_method: unknown key; did you mean 'calibration_method'?"),
    ({"qaunt.calibration_method": "MSE"}, "qaunt: unknown key; did you mean 'quant'?"),
    ({"quant.calibration_method": "MinMx"},
     "quant.calibration_method: invalid value 'MinMx'; valid: MinMax, MSE, Percentile, KL"),
    ({"quant.precision_analysis": "yes"},
     "quant.precision_analysis: expected true or false, got 'yes'"),
    ({"quant.input_configs[5].calibration_size": "8"},
     "quant.input_configs[5]: index out of range (2 entries)"),
    ({"quant.input_configs.calibration_size": "8"},
     "quant.input_configs: is a list, cannot set 'quant.input_configs.calibration_size'; "
     "use an index like quant.input_configs[0]"),
    ({"quant..x": "1"}, "quant..x: not a dotted key"),
])
def test_with_overrides_errors(overrides: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(full_config()).with_overrides(overrides)
    assert expected in str(err.value)


# ------------------------------------------------------------------ bad configs


def _quant(**kw: object) -> dict:
    return {"quant": kw}


def _layers(*entries: dict) -> dict:
    return {"quant": {"layer_configs": list(entries)}}


BAD = [
    (_quant(calibraton_method="MSE"),
     "quant.calibraton_method: unknown key; did you mean 'calibration_method'?"),
    ({"inputs": "m.onnx"}, "inputs: unknown key; did you mean 'input'"),
    (_layers({"op_type": "Add"}, {"op_type": "Mul"}, {"op_type": "Conv", "data_type": "U9"}),
     "quant.layer_configs[2].data_type: invalid value 'U9'; valid: U8, S8, U16, S16, FP32"),
    (_layers({"op_type": "Conv", "weight_data_type": "U16"}),
     "quant.layer_configs[0].weight_data_type: invalid value 'U16'; valid: S8, S4, FP32"),
    (_quant(input_configs=[{"calibration_size": "32"}]),
     "quant.input_configs[0].calibration_size: expected an integer, got '32' (str)"),
    (_quant(input_configs=[{"calibration_size": 0}]),
     "quant.input_configs[0].calibration_size: invalid value 0; valid: -1 (all samples)"),
    (_quant(input_configs=[{"calibration_size": -2}]),
     "quant.input_configs[0].calibration_size: invalid value -2"),
    (_quant(input_configs=[{"calibration_mean": [1, "a", 3]}]),
     "quant.input_configs[0].calibration_mean[1]: expected a number, got 'a'"),
    (_quant(input_configs=[{"calibration_mean": 127}]),
     "quant.input_configs[0].calibration_mean: expected a list of numbers, got 127"),
    (_quant(input_configs=[{"calibration_std": [58.0, 0, 57.0]}]),
     "quant.input_configs[0].calibration_std: [58.0, 0.0, 57.0] contains 0"),
    (_quant(input_configs=[{"calibration_mean": [1, 2, 3], "calibration_std": [1]}]),
     "quant.input_configs[0]: calibration_mean has 3 values but calibration_std has 1"),
    ({"input_processors": [{"mean": [0, 0], "std": [1, 1, 1]}]},
     "input_processors[0]: mean has 2 values but std has 3"),
    (_quant(precision_analysis="yes"),
     "quant.precision_analysis: expected true or false, got 'yes' (str)"),
    (_quant(precision_analysis_method="PerLayers"),
     "quant.precision_analysis_method: invalid value 'PerLayers'; valid: PerLayer, EndToEnd "
     "(did you mean 'PerLayer'?)"),
    (_quant(calibration_method="Entropy"),
     "quant.calibration_method: invalid value 'Entropy'; valid: MinMax, MSE, Percentile, KL"),
    (_quant(conv_bias_data_type="S16"),
     "quant.conv_bias_data_type: invalid value 'S16'; valid: S32, FP32"),
    (_quant(smooth_quant_strength=1.5), "quant.smooth_quant_strength: invalid value 1.5; valid: 0"),
    ({"input_processors": [{"tensor_format": "BRG"}]},
     "input_processors[0].tensor_format: invalid value 'BRG'; valid: BGR, RGB, GRAY, "
     "AutoColorSpace (did you mean 'RGB' or 'BGR'?)"),
    ({"input_processors": [{"src_dtype": "S8"}]},
     "input_processors[0].src_dtype: invalid value 'S8'; valid: U8, FP32"),
    ({"input_shapes": "x:1x3xAx224"}, "input_shapes: bad entry 'x:1x3xAx224'; expected name:"),
    ({"input_shapes": "1x3x224x224"}, "input_shapes: bad entry '1x3x224x224'"),
    ({"input_shapes": "x:1x0"}, "input_shapes: 'x:1x0' has a 0 dimension"),
    ({"input_shapes": [1, 3]}, "input_shapes: expected a string like 'x:1x3x224x224;y:1x64'"),
    (_layers({"data_type": "U16"}), "quant.layer_configs[0]: no selector; set layer_name(s)"),
    (_layers({"start_tensor_names": ["a"], "data_type": "U16"}),
     "quant.layer_configs[0]: start_tensor_names and end_tensor_names go together"),
    (_layers({"layer_name": "Conv_0", "op_type": "Conv"}),
     "quant.layer_configs[0]: layer names and op types cannot share one entry"),
    (_layers("Conv_0"), "quant.layer_configs[0]: expected an object, got 'Conv_0'"),
    (_quant(input_configs={"tensor_name": "x"}),
     "quant.input_configs: expected a list of objects, got {'tensor_name': 'x'}"),
    ({"quant": None}, "quant: expected an object, got None"),
    (_quant(input_configs=[{"tensor_name": "x"}, {"tensor_name": "x"}]),
     "quant.input_configs[1].tensor_name: 'x' is already used by quant.input_configs[0]"),
    ({"output_processors": [{"tensor_name": "y", "dst_perm": [0, 2]}]},
     "output_processors[0].dst_perm: [0, 2] is not a permutation of 0..1"),
    ({"output_processors": [{"tensor_name": "y", "dst_perm": [0, 1.5]}]},
     "output_processors[0].dst_perm[1]: expected an integer, got 1.5"),
    ({"input_processors": [{"tensor_name": "x", "colour": "RGB"}]},
     "input_processors[0].colour: unknown key; did you mean"),
    ({"output_processors": [{"zzz": 1}]},
     "output_processors[0].zzz: unknown key; valid: tensor_name, dst_perm, tensor_layout"),
    ({"input": 3}, "input: expected a string, got 3 (int)"),
]


@pytest.mark.parametrize(("raw", "expected"), BAD, ids=[e.split(":")[0] for _, e in BAD])
def test_bad_config_message(raw: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(raw)
    msg = str(err.value)
    assert expected in msg
    assert "\n" not in msg


def test_bad_value_in_file_raises_the_same_message(tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", '{"quant": {"calibration_method": "MinMx"}} // typo')
    with pytest.raises(ConfigError, match="did you mean 'MinMax'"):
        load_config(path)


def test_yaml_config_is_refused_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="only JSON configs are supported"):
        load_config(write(tmp_path / "c.yaml", "input: m.onnx\n"))


# ------------------------------------------------------------------ input shapes


def test_parse_input_shapes() -> None:
    assert parse_input_shapes("x:1x3x224x224;y:1x64") == {"x": (1, 3, 224, 224), "y": (1, 64)}
    assert parse_input_shapes(" input:0 : 1 x 3 X 8 ; ") == {"input:0": (1, 3, 8)}
    assert parse_input_shapes("") == {}
    shapes = {"a": (1, 2), "b:0": (4,)}
    assert parse_input_shapes(format_input_shapes(shapes)) == shapes


@pytest.mark.parametrize("text", ["x", "x:", ":1x3", "x:1x-3", "x:1,3", "x:1x3;x:1x4"])
def test_parse_input_shapes_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="input_shapes: "):
        parse_input_shapes(text)


# ------------------------------------------------------------------ saving


def test_save_creates_folders_and_replaces_atomically(tmp_path: Path) -> None:
    target = tmp_path / "new" / "dir" / "c.json"
    save_config(load_config({"input": "a.onnx"}), target)
    save_config(load_config({"input": "b.onnx"}), target)
    assert load_config(target).input == "b.onnx"
    assert [p.name for p in target.parent.iterdir()] == ["c.json"]


def test_failed_save_leaves_old_file_and_no_temp(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    target = save_config(load_config({"input": "old.onnx"}), tmp_path / "c.json")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_config(load_config({"input": "new.onnx"}), target)
    assert load_config(target).input == "old.onnx"
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]


def test_output_processor_defaults() -> None:
    out = load_config({"output_processors": [{"dst_perm": [1, 0]}]}).output_processors[0]
    assert out == OutputProcessor(tensor_name=DEFAULT, dst_perm=(1, 0))
