import json
import subprocess
import sys

import pytest

from personvl.cli import build_parser, main


def test_every_command_has_complete_help(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"quickstart", "synth"} <= set(commands)
    for name, sub in commands.items():
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert sub.description and "usage: personvl " + name in text
        for action in sub._actions:
            assert action.help, f"{name} {action.dest} has no help"


def test_usage_errors_exit_2_with_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["synth"])
    assert exit_info.value.code == 2
    assert "the following arguments are required: OUT" in capsys.readouterr().err
    assert main(["synth", str(tmp_path / "w"), "--cameras", "12"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cameras must be between 2 and 9" in err
    assert main(["synth", str(tmp_path / "w"), "colour=red"]) == 2
    assert "unknown config key 'colour'" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_user_errors_are_one_line_not_a_traceback(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = subprocess.run([sys.executable, "-m", "personvl", "synth", str(blocker / "w"), "--identities", "5"],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and result.stderr.startswith("personvl synth: error: cannot write to")


def test_synth_command_writes_the_world_and_prints_statistics(tmp_path, capsys):
    out = tmp_path / "w"
    code = main(["synth", str(out), "--identities", "9", "--images-per-identity", "2", "--cameras", "3",
                 "--seed", "1", "--no-progress", "--workers", "1", "--preview", "scene_identities=2",
                 "mention_rate=0.4"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "attribute-oracle text-to-image R@1" in printed and "contact sheet" in printed
    world = json.loads((out / "world.json").read_text())
    assert world["config"]["mention_rate"] == 0.4 and world["config"]["cameras"] == 3
    assert (out / "world_config.yaml").exists() and (out / "contact_sheet.png").exists()


def test_config_file_and_overrides_combine(tmp_path, capsys):
    recipe = tmp_path / "world.yaml"
    recipe.write_text("identities: 6\nimages_per_identity: 2\ncameras: 2\nscene_identities: 1\n")
    out = tmp_path / "w"
    assert main(["synth", str(out), "--config", str(recipe), "--cameras", "3", "--no-progress", "--workers", "1"]) == 0
    world = json.loads((out / "world.json").read_text())
    assert (world["config"]["identities"], world["config"]["cameras"]) == (6, 3)


def test_quickstart_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--identities", "16", "--steps", "2", "--no-progress",
                 "--workers", "1", "scene_identities=3"]) == 0
    printed = capsys.readouterr().out
    assert "split  identities" in printed and "untrained" in printed and "done in" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    for model in ("pretrained", "untrained"):
        assert set(metrics[model]["t2i"]) == {"R1", "R5", "R10", "mAP"}
        assert set(metrics[model]["reid"]) == {"mAP", "R1"} and set(metrics[model]["attributes"]) == {"mA"}
        assert 0 <= metrics[model]["t2i"]["R1"] <= 100
    assert metrics["oracle"]["t2i"]["R1"] > 0 and metrics["seconds"] > 0
    assert metrics["pretrained"] != metrics["untrained"]
    for plot in ("losses.png", "reid_cmc.png", "t2i_retrieval.png"):
        assert (out / "plots" / plot).stat().st_size > 1000
    assert (out / "world" / "contact_sheet.png").exists()
    # a second run reuses the finished world and pre-training
    assert main(["quickstart", "--out", str(out), "--identities", "16", "--steps", "2", "--no-progress",
                 "--workers", "1", "scene_identities=3"]) == 0
    assert "reusing the finished run" in capsys.readouterr().out
