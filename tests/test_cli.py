"""The command line: python -m metalib {info, download omniglot, assign --check}."""
from __future__ import annotations

import socket

from metalib.__main__ import main
from metalib.data import omniglot as og


def test_info_reports_device_and_data(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "device:" in out and "images_background.zip" in out and "torch" in out


def test_download_omniglot_with_data_present(capsys):
    assert main(["download", "omniglot"]) == 0
    out = capsys.readouterr().out
    assert "Omniglot ready: 1623 characters x 20 drawings, 50 alphabets" in out and "all_runs.zip" in out


def test_download_failure_is_a_message_and_exit_code(tmp_path, monkeypatch, capsys):
    with socket.socket() as s:  # a localhost port with nothing listening: the download fails at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(og, "URL_PREFIX", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("METALIB_CACHE", str(tmp_path / "cache"))
    assert main(["download", "omniglot", "--root", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert "could not download" in err and "METALIB_DATA" in err


def test_assign_check_passes_on_current_notebooks(capsys):
    assert main(["assign", "--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_train_then_evaluate_a_protonet(tmp_path, capsys):
    """`python -m metalib train` (quick mode: a few steps) writes a checkpoint `evaluate` reads."""
    from metalib.__main__ import main
    from metalib.metric_train import load_metric

    out = tmp_path / "p.pt"
    assert main(["train", "protonet", "--ways", "5", "--shots", "1", "--hidden", "8", "--device", "cpu",
                 "--out", str(out)]) == 0
    assert "saved" in capsys.readouterr().out
    _, meta = load_metric(out)
    assert meta["command"].startswith("python -m metalib train protonet --ways 5")
    assert main(["evaluate", str(out), "--ways", "5", "--shots", "1", "--episodes", "10", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "5-way 1-shot" in printed and "(95% CI, 10 episodes)" in printed
    # trained on the vinyals split: the lake test classes may be among its training classes
    assert main(["evaluate", str(out), "--ways", "20", "--shots", "1", "--episodes", "4", "--split", "lake",
                 "--within-alphabet", "--device", "cpu"]) == 2
    assert "trained on the 'vinyals' split" in capsys.readouterr().err
    # two checkpoints: their ensemble, here with test-time augmentation
    assert main(["evaluate", str(out), str(out), "--tta", "1", "--ways", "5", "--episodes", "4", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert f"{out} + {out} (test-time augmentation: 1 copies): 5-way 1-shot" in printed and "4 episodes" in printed


def test_train_and_evaluate_refuse_bad_input(tmp_path, capsys):
    from metalib.__main__ import main

    assert main(["train", "matching", "--similarity", "euclidean", "--out", str(tmp_path / "m.pt")]) == 2
    assert "matching supports similarity" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing.pt")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["evaluate", "protonet_lake", "--tta", "-1", "--episodes", "1", "--device", "cpu"]) == 2
    assert "--tta must be >= 0" in capsys.readouterr().err
    assert main(["evaluate", "protonet_1shot", "maml_5w1s", "--episodes", "1", "--device", "cpu"]) == 2
    assert "ProtoNet" in capsys.readouterr().err
