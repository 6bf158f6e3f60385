"""docs/analysis/support_copies.py: support copies made five ways, on the episodes `metalab eval` scores."""

import pytest
from conftest import analysis_script, train_tiny

from metalab.data.support_augment import SupportCopies
from metalab.evaluation.checkpoints import evaluate_checkpoint
from metalab.studies.tables import estimate_cell

EPISODES = 6


@pytest.fixture(scope="module")
def trained(tmp_path_factory, omniglot_dir):
    return train_tiny(tmp_path_factory.mktemp("copies") / "run", omniglot_dir, "omniglot-5w1s-protonet")


def test_rows_agree_with_metalab_eval_with_and_without_shifted_copies(trained, omniglot_dir, capsys):
    analysis_script("support_copies").main([f"pn={trained}", "--ways", "5", "--episodes", str(EPISODES),
                                            "--copies", "3", "--data-dir", str(omniglot_dir)])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| pn |")]
    assert [row.split(" | ")[1] for row in rows] == ["none", "affine 0.5", "elastic 34", "half pixel", "whole pixel"]
    for row, copies in ((rows[0], 0), (rows[4], 3)):
        result = evaluate_checkpoint(trained, ways=5, episodes=EPISODES, part="val", data_dir=omniglot_dir, threads=1,
                                     support=SupportCopies(copies, kind="shift"))
        (score,) = result["after_steps"].values()
        assert estimate_cell(score["mean"], score["ci95"], "accuracy") in row


def test_bad_arguments_stop_in_one_line(trained, tmp_path):
    for argv in ([f"pn={tmp_path / 'missing.pt'}"], [f"pn={trained}", "--copies", "9"]):
        with pytest.raises(SystemExit) as stop:
            analysis_script("support_copies").main(argv)
        assert str(stop.value) and "\n" not in str(stop.value)
