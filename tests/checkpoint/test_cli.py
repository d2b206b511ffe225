"""`trillion convert` and `trillion inspect` through the CLI entry point."""

import json

import torch

from trillion.checkpoint import load_model
from trillion.cli.main import main
from trillion.tokenizer import Tokenizer
from trillion.train.tokenizer import train_tokenizer

TOKENS = torch.randint(0, 512, (2, 45), generator=torch.Generator().manual_seed(3))  # tiny: vocab 512


@torch.no_grad()
def test_convert_round_trip_and_inspect(tmp_path, capsys):
    hf, ds, back = tmp_path / "hf", tmp_path / "ds", tmp_path / "back"
    assert main(["convert", "tiny", str(hf), "--to", "hf", "--seed", "4"]) == 0
    original = load_model(hf)
    assert torch.equal(original(TOKENS), load_model("tiny", seed=4)(TOKENS))
    tokenizer = train_tokenizer([f"x = {i}\n" for i in range(50)], 300).to_str()
    (hf / "tokenizer.json").write_text(tokenizer)

    assert main(["convert", str(hf), str(ds), "--to", "deepseek"]) == 0
    assert Tokenizer.from_file(ds).encode("x = 1") == Tokenizer.from_file(hf).encode("x = 1")  # carried along
    assert main(["convert", str(ds), str(back), "--to", "hf"]) == 0
    assert json.loads((back / "config.json").read_text())["dtype"] == "bfloat16"  # the release's dtype

    # deepseek -> hf is lossless (FP8 / FP4 values are exact in bf16); hf -> deepseek loses only
    # the quantisation error.
    quantised, restored, want = load_model(ds)(TOKENS), load_model(back)(TOKENS), original(TOKENS)
    assert torch.equal(restored, quantised)
    rel = (restored - want).norm() / want.norm()
    assert 0 < rel < 0.2
    capsys.readouterr()

    assert main(["inspect", str(ds), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ok"] and info["layout"] == "deepseek" and info["missing"] == [] and info["unexpected"] == []
    assert info["config"]["dim"] == 64 and info["config"]["layer_kinds"] == {"window": 1, "csa": 2, "hca": 1}
    assert info["config"]["ratios"] == {"csa": [4], "hca": [16]}
    assert info["parameters"]["total"] == sum(p.numel() for p in original.parameters())
    assert info["parameters"]["mtp"] > 0
    q = info["quantization"]
    assert q["config"]["fmt"] == "e4m3" and q["scheme"] == "release" and q["formats"]["mxfp4"] > 0
    assert info["dtypes"]["float8_e4m3fn"] == q["formats"]["fp8"] and info["dtypes"]["int8"] == q["formats"]["mxfp4"]
    assert q["weights"] == q["scales"] == q["formats"]["fp8"] + q["formats"]["mxfp4"]
    assert info["tokenizer"]["ok"] and info["tokenizer"]["chat_template"] and info["tokenizer"]["bos_token_id"] == 0
    assert info["dtypes"]["int64"] == 1  # the one hash layer's tid2eid
    assert len(info["shards"]) == 1 and info["total_bytes"] == (ds / "model.safetensors").stat().st_size

    assert main(["inspect", str(hf)]) == 0
    text = capsys.readouterr().out
    assert "(layout hf)" in text and "status        ok" in text and "quantization  none" in text


def test_inspect_reports_a_broken_folder(hf_folder, tmp_path, capsys):
    import shutil

    path = shutil.copytree(hf_folder, tmp_path / "broken")
    config = json.loads((path / "config.json").read_text())
    config["num_hidden_layers"] = 4  # one layer fewer than stored: layer 4's tensors are unexpected
    config["layer_types"] = config["layer_types"][:4]
    config["mlp_layer_types"] = config["mlp_layer_types"][:4]
    config["compress_ratios"] = config["compress_ratios"][:4] + config["compress_ratios"][5:]
    (path / "config.json").write_text(json.dumps(config))
    assert main(["inspect", str(path), "--json"]) == 1
    info = json.loads(capsys.readouterr().out)
    assert not info["ok"] and info["missing"] == []
    assert "model.layers.4.attn.wq_a.weight" in info["unexpected"]
    assert main(["inspect", str(path)]) == 1
    assert "NOT LOADABLE" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["convert", "no-such-flavor", str(tmp_path / "x"), "--to", "hf"]) == 1
    err = capsys.readouterr().err
    assert "neither a checkpoint folder nor a flavor" in err and "Traceback" not in err
    assert main(["convert", "tiny", str(tmp_path / "x"), "--to", "deepseek", "--dtype", "bfloat16"]) == 1
    assert "--dtype applies to --to hf only" in capsys.readouterr().err


def test_inspect_checks_the_tokenizer_files(tmp_path, capsys):
    """A corrupt tokenizer.json (or tokenizer / generation config) is named, and the folder is not ok."""
    path = tmp_path / "tok"
    assert main(["convert", "tiny", str(path), "--to", "hf"]) == 0  # vocab 512
    tok = train_tokenizer([f"y = {i}\n" for i in range(50)], 300)
    tok.save(str(path / "tokenizer.json"))
    assert main(["inspect", str(path)]) == 0
    n = tok.get_vocab_size()
    assert (f"tokenizer     tokenizer.json, {n} tokens; BOS 0 added to text prompts; no chat template"
            in capsys.readouterr().out)

    (path / "tokenizer.json").write_text(tok.to_str()[:500])  # cut short: "EOF while parsing"
    assert main(["inspect", str(path)]) == 1
    out = capsys.readouterr().out
    assert "NOT LOADABLE" in out and f"error: {path / 'tokenizer.json'}: not a readable tokenizer.json (EOF" in out

    tok.save(str(path / "tokenizer.json"))
    (path / "generation_config.json").write_text('{"eos_token_id": 1,')
    (path / "tokenizer_config.json").write_text("[]")
    assert main(["inspect", str(path), "--json"]) == 1
    errors = json.loads(capsys.readouterr().out)["errors"]
    assert any(e.startswith(f"{path / 'generation_config.json'}: not valid JSON") for e in errors)
    assert any(e.startswith(f"{path / 'tokenizer_config.json'}: expected a JSON object") for e in errors)
