"""The preload server runs a job's command in a forked child: same bytes, same exit status, same log."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import ROOT


def harness(args, env, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow  # 26 s: .ci/run runs it (the default suite's budget is 10 minutes on 2 cores)
def test_forked_jobs_give_the_same_images_exit_codes_and_output(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("HARNESS_PRELOAD_SOCKET", None)
    socket_path = tmp_path / "s.sock"
    server_log = tmp_path / "server.log"
    with open(server_log, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "harness", "preload-server", "--socket", str(socket_path)],
                                  cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        configs = {}
        for name in ("served", "direct"):
            cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
            cfg["systems"] = {"base": dict(cfg["systems"]["cogview3-base"], steps=3),
                              "relay": dict(cfg["systems"]["cogview3"], input="base", steps=2)}
            cfg.update(num_prompts=2, results_dir=str(tmp_path / name / "results"), tr_sweep=[],
                       expansion={"enabled": False})
            configs[name] = tmp_path / f"{name}.yaml"
            configs[name].write_text(yaml.safe_dump(cfg))
        deadline = time.time() + 60
        while not socket_path.exists() and time.time() < deadline:
            time.sleep(0.2)
        served_env = dict(env, HARNESS_PRELOAD_SOCKET=str(socket_path))
        for name, run_env in (("served", served_env), ("direct", env)):
            for system in ("base", "relay"):
                proc = harness(["generate", "--config", str(configs[name]), "--benchmark", "smoke", "--system", system],
                               run_env)
                assert proc.returncode == 0, proc.stderr
                assert f"smoke/{system}: 2 generated, 0 kept" in proc.stdout  # the child's output reaches the job
        served = [(tmp_path / "served" / "results" / "smoke" / s / "manifest.jsonl").read_text() for s in ("base", "relay")]
        direct = [(tmp_path / "direct" / "results" / "smoke" / s / "manifest.jsonl").read_text() for s in ("base", "relay")]
        sha = lambda text: [line.split('"sha256": "')[1][:64] for line in text.splitlines()]  # noqa: E731
        assert [sha(t) for t in served] == [sha(t) for t in direct]
        assert server_log.read_text().count("python -m harness generate") == 2  # both ran in the server's children

        bad = harness(["generate", "--config", str(configs["served"]), "--benchmark", "smoke", "--system", "nosuch"],
                      served_env)
        assert bad.returncode == 2 and "system 'nosuch' is not in the config's systems" in bad.stderr
        assert server_log.read_text().count("python -m harness generate") == 3
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert not socket_path.exists()
    # Nobody listening: the command runs in its own process.
    proc = harness(["generate", "--config", str(configs["served"]), "--benchmark", "smoke", "--system", "base"], served_env)
    assert proc.returncode == 0 and "0 generated, 2 kept" in proc.stdout
