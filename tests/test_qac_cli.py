"""`xmr qac train|complete` end to end on a small AOL-format log: output format, prefixes, exit codes."""

from __future__ import annotations

import io
import random

import pytest

from xmr.cli import main
from xmr.qac.model import CompletionModel

TOPICS = ["lego", "lego city", "hornby", "hornby coach", "harry potter", "hotels", "honda", "weather", "walmart",
          "ebay", "google", "games", "hotmail", "home depot"]


@pytest.fixture(scope="module")
def log_file(tmp_path_factory):
    rng = random.Random(0)
    lines = ["AnonID\tQuery\tQueryTime\tItemRank\tClickURL"]
    for user in range(40):
        day = 1 + user % 20
        for s in range(3):  # three sessions a day, an hour apart
            for i in range(rng.randint(1, 4)):
                q = rng.choice(TOPICS) if i else rng.choice(TOPICS[:4])
                lines.append(f"{user}\t{q.upper() if rng.random() < 0.2 else q}\t2006-03-{day:02d} "
                             f"{10 + s:02d}:{5 * i:02d}:00\t1\thttp://example.com/{i}")
    path = tmp_path_factory.mktemp("qac") / "log.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def model_dir(log_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("qacm") / "model"
    assert main(["qac", "train", "--log", str(log_file), "-m", str(out), "--index", "hybrid", "--trie-depth", "1",
                 "--max-leaf-size", "3", "--threads", "1", "-q"]) == 0
    return out


@pytest.mark.parametrize("cmd", [["qac"], ["qac", "train"], ["qac", "complete"]])
def test_help(cmd, capsys):
    assert main([*cmd, "--help"]) == 0
    assert "usage" in capsys.readouterr().out


def test_train_then_complete_lines(model_dir, tmp_path, capsys):
    m = CompletionModel.load(model_dir)
    assert m.meta["index"] == "hybrid" and set(m.labels) <= set(TOPICS)
    req = tmp_path / "req.txt"
    req.write_text("lego\tho\n\th\nhornby\tHORNBY \nweather\tzzz\nno tab here\n")
    assert main(["qac", "complete", "-m", str(model_dir), "--input", str(req), "--topk", "3"]) == 0
    out = capsys.readouterr().out.split("\n")
    assert len(out) == 6 and out[-1] == ""
    for line, prefix in zip(out, ["ho", "h", "hornby ", "zzz", "no tab here"]):
        got = line.split("\t") if line else []
        assert len(got) <= 3 and all(q.startswith(prefix) for q in got)
    assert out[2] == "hornby coach" and out[3] == "" and out[4] == ""
    assert out[0] and out[1]


def test_complete_from_stdin(model_dir, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("hornby\thor\n"))
    assert main(["qac", "complete", "-m", str(model_dir), "--topk", "1"]) == 0
    assert capsys.readouterr().out == "hornby coach\n"


def test_before_keeps_only_earlier_pairs(log_file, model_dir, tmp_path):
    out = tmp_path / "early"
    assert main(["qac", "train", "--log", str(log_file), "-m", str(out), "--index", "trie", "--before",
                 "2006-03-05", "--threads", "1", "-q"]) == 0
    early, full = CompletionModel.load(out), CompletionModel.load(model_dir)
    assert 0 < early.meta["nr_pairs"] < full.meta["nr_pairs"] and early.meta["index"] == "trie"


def test_co_user_prior_from_the_log_users(log_file, model_dir, tmp_path):
    full = CompletionModel.load(model_dir)
    assert full.co_users is not None and full.co_users.nr_users == 40  # one per AnonID
    out = tmp_path / "plain"
    assert main(["qac", "train", "--log", str(log_file), "-m", str(out), "--index", "trie", "--no-co-users",
                 "--threads", "1", "-q"]) == 0
    assert CompletionModel.load(out).co_users is None and not (out / "cousers").exists()


def test_bad_inputs_exit_2(log_file, model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("AnonID\tQuery\n1\tlego\n")
    cases = [
        (["qac", "train", "--log", str(bad), "-m", str(tmp_path / "x")], "lacks the column"),
        (["qac", "train", "--log", str(tmp_path / "none.tsv"), "-m", str(tmp_path / "x")], "does not exist"),
        (["qac", "train", "--log", str(log_file), "-m", str(tmp_path / "x"), "--before", "March"], "--before"),
        (["qac", "train", "--log", str(log_file), "-m", str(tmp_path / "x"), "--before", "2001-01-01"],
         "no query to train on"),
        (["qac", "complete", "-m", str(tmp_path / "nomodel"), "--input", str(log_file)], "nomodel"),
        (["qac", "complete", "-m", str(model_dir), "--input", str(tmp_path / "missing.txt")], "missing.txt"),
        (["qac", "train", "--log", str(log_file), "-m", str(tmp_path / "x"), "--index", "btree"], "btree"),
    ]
    for argv, msg in cases:
        assert main(argv) == 2, argv
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
