"""The OCI image as scripts/build-image makes it, run on this machine: its `snapguard`
through `buildah run` deciding a state, and `snapguard serve` on a read-only root
filesystem as the numeric non-root user, answering over TLS on 127.0.0.1.

Runs where buildah and mmdebstrap are installed and we are root (.ci/run installs
them); skipped elsewhere. The build is cached outside the checkout, keyed on its inputs
(see scripts/build-image), so a warm run only starts containers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

pytestmark = [
    pytest.mark.image,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(
        not (shutil.which("buildah") and shutil.which("mmdebstrap") and os.geteuid() == 0),
        reason="needs root, buildah and mmdebstrap (apt-get install buildah mmdebstrap crun)",
    ),
]


class Image:
    def __init__(self, ref: str, store: list[str]) -> None:
        self.ref = ref
        self.buildah = ["buildah", *store]

    def run(self, *args: str, volumes: dict[Path, str] | None = None) -> subprocess.CompletedProcess[str]:
        container = subprocess.run(
            [*self.buildah, "from", "--pull=never", self.ref], capture_output=True, text=True, check=True
        ).stdout.strip()
        try:
            mounts = [f"--volume={host}:{inside}:ro" for host, inside in (volumes or {}).items()]
            return subprocess.run(
                [*self.buildah, "run", "--isolation", "chroot", *mounts, container, "--", *args],
                capture_output=True, text=True, timeout=120,
            )
        finally:
            subprocess.run([*self.buildah, "rm", container], capture_output=True)

    def inspect(self) -> dict[str, object]:
        out = subprocess.run(
            [*self.buildah, "inspect", "--type", "image", self.ref], capture_output=True, text=True, check=True
        ).stdout
        data: dict[str, object] = json.loads(out)
        return data


@pytest.fixture(scope="session")
def image() -> Image:
    result = subprocess.run([str(ROOT / "scripts" / "build-image")], capture_output=True, text=True, timeout=1700)
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("IMAGE="), result.stdout
    cache = Path(os.environ.get("SNAPGUARD_IMAGE_CACHE") or Path.home() / ".cache" / "dvp-snapguard" / "image")
    store = ["--root", str(cache / "storage"), "--runroot", str(cache / "run"), "--storage-driver", "vfs"]
    return Image(last.removeprefix("IMAGE="), store)


def test_name_and_tag_are_the_charts_defaults(image: Image) -> None:
    import yaml

    chart = yaml.safe_load((ROOT / "charts" / "dvp-snapguard" / "Chart.yaml").read_text())
    values = yaml.safe_load((ROOT / "charts" / "dvp-snapguard" / "values.yaml").read_text())
    assert image.ref == f"{values['image']['repository']}:{chart['appVersion']}"
    assert not values["image"].get("tag"), "the tag defaults to the chart's appVersion"


def test_check_decides_the_state(image: Image) -> None:
    volumes = {EXAMPLES: "/examples"}
    denied = image.run("snapguard", "check", "--state", "/examples/state", "/examples/manifests/vms-db.yaml", volumes=volumes)
    assert denied.returncode == 1, denied.stderr
    assert "DENY" in denied.stdout and "vms-consistency" in denied.stdout
    admitted = image.run("snapguard", "check", "--state", "/examples/state", "/examples/manifests/vms-web.yaml", volumes=volumes)
    assert admitted.returncode == 0, admitted.stderr


def test_review_answers_as_the_webhook(image: Image) -> None:
    result = image.run(
        "snapguard", "review", "--state", "/examples/state", "/examples/reviews/vms-db.json", volumes={EXAMPLES: "/examples"}
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["response"]["allowed"] is False


def test_configuration_user_and_labels(image: Image) -> None:
    config = image.inspect()["OCIv1"]["config"]  # type: ignore[index]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["/opt/snapguard/bin/snapguard"]
    labels = config["Labels"]
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert labels["org.opencontainers.image.version"] == version
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"]
    whoami = image.run("/opt/snapguard/bin/python", "-c", "import os; print(os.getuid(), os.getgid())")
    assert whoami.stdout.split() == ["65532", "65532"]


def test_no_pip_no_compiler_no_shell(image: Image) -> None:
    probe = image.run(
        "/opt/snapguard/bin/python", "-c",
        "import importlib.util, os, shutil; "
        "print(sorted(x for x in ('pip', 'pip3', 'gcc', 'cc', 'g++', 'make', 'sh', 'bash', 'apt', 'apt-get') if shutil.which(x)), "
        "importlib.util.find_spec('pip') is None, importlib.util.find_spec('setuptools') is None)",
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["[]", "True", "True"]


@pytest.fixture
def read_only_serve(image: Image, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """`snapguard serve` in the image: root filesystem mounted read-only, /tmp a tmpfs,
    user 65532, the host's loopback (no network namespace), its certificates written to
    a host directory bound at /tmp/snapguard-certs."""
    container = subprocess.run(
        [*image.buildah, "from", "--pull=never", image.ref], capture_output=True, text=True, check=True
    ).stdout.strip()
    rootfs = subprocess.run(
        [*image.buildah, "mount", container], capture_output=True, text=True, check=True
    ).stdout.strip()
    certs = tmp_path / "certs"
    certs.mkdir()
    certs.chmod(0o777)
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = (
        'set -e; m=$1; mount --bind "$m" "$m"; mount -o remount,bind,ro "$m"; '
        'mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$m/tmp"; mount -t proc proc "$m/proc"; '
        'mount --rbind /dev "$m/dev"; cp -r "$2" "$m/tmp/examples"; mkdir "$m/tmp/snapguard-certs"; '
        'mount --bind "$3" "$m/tmp/snapguard-certs"; '
        'if touch "$m/usr/written" 2>/dev/null; then echo "root filesystem is writable" >&2; exit 99; fi; cd /; '
        'exec env -i PATH=/opt/snapguard/bin:/usr/bin HOME=/tmp PYTHONDONTWRITEBYTECODE=1 '
        'SNAPGUARD_CERT_DIR=/tmp/snapguard-certs "$4" --userspec=65532:65532 "$m" '
        '/opt/snapguard/bin/snapguard serve --state /tmp/examples/state --port "$5"'
    )
    process = subprocess.Popen(
        ["unshare", "--mount", "--pid", "--fork", "--kill-child=SIGTERM", "sh", "-c", script, "-",
         rootfs, str(EXAMPLES), str(certs), str(shutil.which("chroot")), str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        yield port, certs
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        subprocess.run([*image.buildah, "umount", container], capture_output=True)
        subprocess.run([*image.buildah, "rm", container], capture_output=True)


def _get(url: str, context: ssl.SSLContext, data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_serve_on_a_read_only_root_filesystem(read_only_serve: tuple[int, Path]) -> None:
    port, certs = read_only_serve
    start = time.monotonic()
    status = 0
    while time.monotonic() - start < 60:
        if (certs / "ca.crt").exists():
            try:
                context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
                status, _ = _get(f"https://127.0.0.1:{port}/readyz", context)
                if status == 200:
                    break
            except (OSError, ssl.SSLError):
                pass
        time.sleep(0.1)
    assert status == 200, "serve in the image never became ready"
    print(f"serve in the image: ready {time.monotonic() - start:.2f} s after start")  # docs/deploy.md
    status, body = _get(
        f"https://127.0.0.1:{port}/validate", context, (EXAMPLES / "reviews" / "vms-db.json").read_bytes()
    )
    assert status == 200
    answer = json.loads(body)["response"]
    assert answer["allowed"] is False and "vms-consistency" in answer["status"]["message"]
