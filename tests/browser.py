"""Headless Chromium for page tests: Debian's chromium + chromium-driver, installed on first use.

CI sets HARNESS_REQUIRE_BROWSER=1, so a browser that cannot be installed fails the test there; on a
workstation without root or apt the test is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Flags for a closed network (no background connections) and a root user in a container.
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync")


def _missing() -> bool:
    return not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file())


def ensure_chromium() -> None:
    if not _missing():
        return
    why = ""
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium", "chromium-driver"]
        proc = subprocess.run(install, env=env, capture_output=True, text=True)
        if proc.returncode != 0:  # stale package lists on a fresh machine
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True)
            proc = subprocess.run(install, env=env, capture_output=True, text=True)
        why = proc.stderr[-800:]
    else:
        why = "not root or no apt-get: install Debian's chromium and chromium-driver packages"
    if _missing():
        message = f"headless Chromium unavailable ({CHROMIUM}, {CHROMEDRIVER}): {why}"
        if os.environ.get("HARNESS_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)


def chrome(download_dir: Path):
    """A headless Chromium driven through chromedriver, downloading into ``download_dir``."""
    ensure_chromium()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        if os.environ.get("HARNESS_REQUIRE_BROWSER") == "1":
            pytest.fail("selenium is not installed (requirements/base.txt pins it)")
        pytest.skip("selenium is not installed")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-profile-')}")
    opts.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                           "download.prompt_for_download": False})
    # An explicit driver path: selenium's own driver manager would try the network.
    return webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
