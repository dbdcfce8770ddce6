"""Invalid configs: every agent command prints one line naming the key, exits 2, and shows no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from agent.cli.main import main

INVALID = {
    "unknown top-level key": ("sorce: {path: x}\nsource: {path: x}\ndataset: {name: d}\n", "sorce"),
    "unknown source key": ("source: {path: x, setle: 2s}\ndataset: {name: d}\n", "source.setle"),
    "missing source": ("dataset: {name: d}\n", "source"),
    "missing source.path": ("source: {settle: 2s}\ndataset: {name: d}\n", "source.path"),
    "bad settle": ("source: {path: x, settle: soon}\ndataset: {name: d}\n", "source.settle"),
    "negative rescan": ("source: {path: x, rescan: -5s}\ndataset: {name: d}\n", "source.rescan"),
    "bad delete mode": ("source: {path: x, delete: maybe}\ndataset: {name: d}\n", "source.delete"),
    "bad max_delete": ("source: {path: x, max_delete: 200%}\ndataset: {name: d}\n", "source.max_delete"),
    "ignore not a list": ("source: {path: x, ignore: 5}\ndataset: {name: d}\n", "source.ignore"),
    "dataset unnamed": ("source: {path: x}\ndataset: {create: true}\n", "dataset"),
    "bad grant role": (
        "source: {path: x}\ndataset: {name: d, grants: [{principal: b, role: x}]}\n",
        "dataset.grants[0].role",
    ),
    "bad url": ("source: {path: x}\ndataset: {name: d}\ndomino: {url: 'ftp://h'}\n", "domino.url"),
    "bad rate": (
        "source: {path: x}\ndataset: {name: d}\ndomino: {requests_per_second: 0}\n",
        "domino.requests_per_second",
    ),
    "bad burst": ("source: {path: x}\ndataset: {name: d}\ndomino: {burst: many}\n", "domino.burst"),
    "bad dialect": ("source: {path: x}\ndataset: {name: d}\ndomino: {dialect: klingon}\n", "domino.dialect"),
    "bad listen": ("source: {path: x}\ndataset: {name: d}\nserver: {listen: nowhere}\n", "server.listen"),
    "bad shutdown": ("source: {path: x}\ndataset: {name: d}\nshutdown_timeout: later\n", "shutdown_timeout"),
    "rule without when": ("source: {path: x}\ndataset: {name: d}\nrules: [{name: r}]\n", "rules[0].when"),
    "rule two triggers": (
        "source: {path: x}\ndataset: {name: d}\nrules: [{name: r, when: {files: 2, quiet: 1s}}]\n",
        "rules[0].when",
    ),
    "rule bad cron": ("source: {path: x}\ndataset: {name: d}\nrules: [{name: r, when: {cron: 'every day'}}]\n", "cron"),
    "rule bad bytes": ("source: {path: x}\ndataset: {name: d}\nrules: [{name: r, when: {bytes: huge}}]\n", "bytes"),
    "duplicate rule names": (
        "source: {path: x}\ndataset: {name: d}\nrules: [{name: r, when: {files: 1}}, {name: r, when: {files: 2}}]\n",
        "rules",
    ),
    "yaml syntax": ("source: [path: x\n", "--config"),
    "not a mapping": ("- just\n- a list\n", "top level"),
    "bad log level": ("source: {path: x}\ndataset: {name: d}\nlog: {level: chatty}\n", "log.level"),
    "zero timeout": ("source: {path: x}\ndataset: {name: d}\ndomino: {timeout: 0}\n", "domino.timeout"),
    "infinite rate": (
        "source: {path: x}\ndataset: {name: d}\ndomino: {requests_per_second: .inf}\n",
        "domino.requests_per_second",
    ),
    "proxy not a url": ("source: {path: x}\ndataset: {name: d}\ndomino: {api_proxy: nowhere}\n", "domino.api_proxy"),
    "url without a host": ("source: {path: x}\ndataset: {name: d}\ndomino: {url: 'http://'}\n", "domino.url"),
    "url with a bad port": (
        "source: {path: x}\ndataset: {name: d}\ndomino: {url: 'http://127.0.0.1:99999'}\n",
        "domino.url",
    ),
    "token file missing": (
        "source: {path: x}\ndataset: {name: d}\ndomino: {url: 'http://127.0.0.1:9', token_file: /no/such/token}\n",
        "domino.token_file",
    ),
    "empty api key": ("source: {path: x}\ndataset: {name: d}\ndomino: {api_key: ''}\n", "domino.api_key"),
    "rule every zero": ("source: {path: x}\ndataset: {name: d}\nrules: [{name: r, when: {every: 0}}]\n", "every"),
    "rule quiet zero": ("source: {path: x}\ndataset: {name: d}\nrules: [{name: r, when: {quiet: 0}}]\n", "quiet"),
    "rule bytes zero": ("source: {path: x}\ndataset: {name: d}\nrules: [{name: r, when: {bytes: 0}}]\n", "bytes"),
    "rescan zero": ("source: {path: x, rescan: 0}\ndataset: {name: d}\n", "source.rescan"),
    "empty source path": ("source: {path: ''}\ndataset: {name: d}\n", "source.path"),
    "listen on no address": ("source: {path: x}\ndataset: {name: d}\nserver: {listen: '999.1.1.1:9464'}\n", "listen"),
    "a key given twice": ("source: {path: x}\ndataset: {name: d}\nsource: {path: y}\n", "source: given twice"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
@pytest.mark.parametrize("command", ["run", "once", "check"])
def test_invalid_config_is_one_line_and_exit_2(
    case: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each invalid config gives exit code 2 and one stderr line that names the offending key."""
    text, key = INVALID[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--config", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert key in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "text",
    [
        "domino: {api_kye: SECRET-4242}\n",  # misspelt: an unknown key's value is never shown
        "domino: {url: 'http://user:SECRET-4242@127.0.0.1:99999'}\n",  # a malformed URL is quoted, its password not
        "domino: {url: 'http://user:SECRET-4242@[::1'}\n",
        "domino: {api_proxy: 'http://SECRET-4242@'}\n",
    ],
)
@pytest.mark.parametrize("command", ["run", "once", "check"])
def test_a_config_error_never_shows_a_secret(
    text: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("source: {path: x}\ndataset: {name: d}\n" + text)
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--config", str(path)])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "domino." in captured.err
    assert "SECRET-4242" not in captured.err + captured.out


def test_a_real_process_shows_no_traceback(tmp_path: Path) -> None:
    """Run as a process, an invalid config ends with exit 2, one line, no traceback."""
    path = tmp_path / "bad.yaml"
    path.write_text("source: {path: x, settle: soon}\ndataset: {name: d}\n")
    _assert_settle_is_soon(_process("run", path))


def test_a_once_that_started_its_walk_before_the_config_failed_leaves_nothing_running(tmp_path: Path) -> None:
    """`once` forks its walk before the config is validated (sync/earlyscan.py `prestart`): a config that then
    fails still ends with exit 2 and one line, and the walking child goes with the process (here every folder
    takes the walk 0.3 s, so a child left walking would outlive the check by seconds)."""
    src, mnt, slow = tmp_path / "src", tmp_path / "mnt", tmp_path / "slow"
    for i in range(40):
        (src / f"d{i}").mkdir(parents=True)
        (src / f"d{i}" / "f.csv").write_text("x")
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(
        "import os, time\n_scandir = os.scandir\n"
        "def scandir(path='.'):\n    time.sleep(0.3)\n    return _scandir(path)\n"
        "os.scandir = scandir\n"
    )
    path = tmp_path / "bad-once.yaml"
    path.write_text(f"source: {{path: {src}, settle: soon}}\ndataset: {{name: d, project_id: p, mount: {mnt}}}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(slow), *sys.path])}
    _assert_settle_is_soon(_process("once", path, env))
    deadline = time.monotonic() + 2
    while (left := _processes_naming(str(path))) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == []


def _process(command: str, config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command to its exit, its output through files: a pipe would also wait for any child it left."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        code = subprocess.run(
            [sys.executable, "-m", "agent", command, "--config", str(config)],
            stdout=out, stderr=err, timeout=60, env=env, check=False,
        ).returncode  # fmt: skip
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess([], code, out.read(), err.read())


def _assert_settle_is_soon(proc: subprocess.CompletedProcess[str]) -> None:
    """Exit 2 and one line naming the key (the configs here say `settle: soon`)."""
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "domino-sync: error: config: source.settle: got 'soon', expected a duration such as 200ms, 2s, 10m or 1h"
        " (a bare number is seconds)"
    ]


def _processes_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_missing_config_file_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config path that does not exist is a usage-level error: exit 2 naming --config."""
    with pytest.raises(SystemExit) as exit_info:
        main(["once", "--config", str(tmp_path / "missing.yaml")])
    assert exit_info.value.code == 2
    assert "--config" in capsys.readouterr().err


def test_a_bug_is_one_line_and_exit_1_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception inside a command (a bug of ours) prints one 'internal error' line and exits 1."""
    import agent.cli.agent_commands as commands

    def broken(path: Path) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(commands, "load_config", broken)
    config = tmp_path / "c.yaml"
    config.write_text("source: {path: x}\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["once", "--config", str(config)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("domino-sync: error: internal error: RuntimeError: boom (please report it;")
