"""`snapguard certs maintain` against the Kubernetes API test server, through the real
client: the self-managed certificate mode of the chart.

What it must do: create the TLS Secret and publish its CA in every webhook's caBundle;
do nothing the second time; rotate a CA close to expiry so that the API server trusts
the old and the new CA before the new serving certificate is served; and fail with one
line and exit code 2 when it cannot.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from certs.authority import (
    certificate_pem,
    create_ca,
    issue_serving_certificate,
    private_key_pem,
    service_sans,
)
from certs.bundle import split_pem_bundle
from certs.inspect import subject_alt_names
from snapguard.cli import main
from tests.kubeapi.server import KubeAPIServer
from webhook.configuration import webhook_configurations

pytestmark = pytest.mark.kubeapi

NAMESPACE = "d8-snapguard"
SERVICE = "snapguard"
SECRET = "snapguard-tls"
VALIDATING = "snapguard-validating"
MUTATING = "snapguard-mutating"
WRITES = ("POST", "PUT", "PATCH", "DELETE")

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cluster(kubeapi: KubeAPIServer) -> KubeAPIServer:
    """The two webhook configurations as `snapguard webhook-config` prints them (no
    caBundle yet), as the chart installs them."""
    for configuration in webhook_configurations(service=SERVICE, namespace=NAMESPACE):
        kubeapi.put_object(configuration)
    return kubeapi


@pytest.fixture
def maintain(cluster: KubeAPIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Run:
    kubeconfig = str(cluster.kubeconfig_path(tmp_path))

    def run(
        *extra: str, kubeconfig_path: str = kubeconfig, once: bool = True
    ) -> tuple[int, str, str]:
        arguments = [
            "certs",
            "maintain",
            *(["--once"] if once else []),
            "--kubeconfig",
            kubeconfig_path,
            "--secret",
            SECRET,
            "--namespace",
            NAMESPACE,
            "--service",
            SERVICE,
            "--validating-webhook",
            VALIDATING,
            "--mutating-webhook",
            MUTATING,
            *extra,
        ]
        try:
            code = main(arguments)
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code if isinstance(exit_.code, int) else 2
        out, err = capsys.readouterr()
        return code, out, err

    return run


def secret_data(server: KubeAPIServer) -> dict[str, bytes]:
    secret = server.get_object("secrets", SECRET, NAMESPACE)
    assert secret is not None, "the TLS Secret was not created"
    return {key: base64.b64decode(value) for key, value in secret["data"].items()}


def bundles(server: KubeAPIServer) -> dict[str, list[x509.Certificate]]:
    """webhook name -> the certificates of its caBundle, in order."""
    found: dict[str, list[x509.Certificate]] = {}
    for resource, name in (
        ("validatingwebhookconfigurations", VALIDATING),
        ("mutatingwebhookconfigurations", MUTATING),
    ):
        configuration = server.get_object(resource, name)
        assert configuration is not None
        for webhook in configuration["webhooks"]:
            pem = base64.b64decode(webhook["clientConfig"].get("caBundle", ""))
            found[webhook["name"]] = [
                x509.load_pem_x509_certificate(b) for b in split_pem_bundle(pem)
            ]
    return found


def fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def writes_since(server: KubeAPIServer, start: int) -> list[tuple[str, str]]:
    return [(method, path) for method, path in server.request_log[start:] if method in WRITES]


def old_secret(ca_expires_in: timedelta) -> tuple[dict[str, Any], x509.Certificate]:
    """A Secret as an earlier maintainer left it, with a CA that expires in `ca_expires_in`."""
    now = datetime.now(UTC)
    lifetime = timedelta(days=3650)
    ca_cert, ca_key = create_ca(now=now - lifetime + ca_expires_in, days=3650)
    tls_cert, tls_key = issue_serving_certificate(
        ca_cert, ca_key, service_sans(SERVICE, NAMESPACE), now=now - timedelta(days=1), days=365
    )
    data = {
        "ca.crt": certificate_pem(ca_cert),
        "ca.key": private_key_pem(ca_key),
        "tls.crt": certificate_pem(tls_cert),
        "tls.key": private_key_pem(tls_key),
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": NAMESPACE},
        "type": "kubernetes.io/tls",
        "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
    }
    return secret, ca_cert


def publish(server: KubeAPIServer, bundle: bytes) -> None:
    """Set every webhook's caBundle directly (the state an earlier run left)."""
    for resource, name in (
        ("validatingwebhookconfigurations", VALIDATING),
        ("mutatingwebhookconfigurations", MUTATING),
    ):
        configuration = server.get_object(resource, name)
        assert configuration is not None
        for webhook in configuration["webhooks"]:
            webhook["clientConfig"]["caBundle"] = base64.b64encode(bundle).decode()
        del configuration["metadata"]["resourceVersion"]
        server.put_object(configuration)


class TestFirstRun:
    def test_creates_the_secret_and_publishes_its_ca_in_every_webhook(
        self, cluster: KubeAPIServer, maintain: Run
    ) -> None:
        """The first run creates a complete TLS Secret for the Service and makes both
        configurations trust exactly its CA."""
        code, out, err = maintain()
        assert (code, err) == (0, "")
        assert f"secret {NAMESPACE}/{SECRET}: created" in out
        secret = cluster.get_object("secrets", SECRET, NAMESPACE)
        assert secret is not None and secret["type"] == "kubernetes.io/tls"
        data = secret_data(cluster)
        assert set(data) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
        ca = x509.load_pem_x509_certificate(data["ca.crt"])
        serving = x509.load_pem_x509_certificate(data["tls.crt"])
        serving.verify_directly_issued_by(ca)
        assert set(service_sans(SERVICE, NAMESPACE)) <= set(subject_alt_names(serving))
        found = bundles(cluster)
        assert set(found) == {
            f"validate.{SERVICE}.{NAMESPACE}.svc",
            f"default.{SERVICE}.{NAMESPACE}.svc",
        }
        for name, certificates in found.items():
            assert [fingerprint(c) for c in certificates] == [fingerprint(ca)], name

    def test_a_missing_configuration_fails_in_one_line_after_creating_the_secret(
        self, cluster: KubeAPIServer, maintain: Run
    ) -> None:
        """The Secret comes first (the webhook pods wait for it); a configuration that
        does not exist yet is an error naming it, exit 2, and the Job retries."""
        code, out, err = maintain("--validating-webhook", "not-installed")
        assert code == 2 and f"secret {NAMESPACE}/{SECRET}: created" in out
        assert err.count("\n") == 1 and err.startswith("snapguard: error: ")
        assert '"not-installed" not found' in err
        assert set(secret_data(cluster)) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}


class TestIdempotence:
    def test_a_second_run_writes_nothing(self, cluster: KubeAPIServer, maintain: Run) -> None:
        """Run twice: the second run only reads, and every resourceVersion stays."""
        assert maintain()[0] == 0
        versions = {
            resource: (cluster.get_object(resource, name, namespace) or {})["metadata"][
                "resourceVersion"
            ]
            for resource, name, namespace in (
                ("secrets", SECRET, NAMESPACE),
                ("validatingwebhookconfigurations", VALIDATING, None),
                ("mutatingwebhookconfigurations", MUTATING, None),
            )
        }
        start = len(cluster.request_log)
        code, out, err = maintain()
        assert (code, err) == (0, "")
        assert "up to date" in out
        assert writes_since(cluster, start) == []
        for resource, version in versions.items():
            name = {"secrets": SECRET}.get(resource) or (
                VALIDATING if resource.startswith("validating") else MUTATING
            )
            obj = cluster.get_object(resource, name, NAMESPACE if resource == "secrets" else None)
            assert obj is not None and obj["metadata"]["resourceVersion"] == version, resource

    def test_a_wiped_bundle_is_published_again(self, cluster: KubeAPIServer, maintain: Run) -> None:
        """A configuration re-applied without caBundle (e.g. `kubectl apply` of
        `snapguard webhook-config`) gets the CA back; the Secret is left alone."""
        assert maintain()[0] == 0
        ca = x509.load_pem_x509_certificate(secret_data(cluster)["ca.crt"])
        for configuration in webhook_configurations(service=SERVICE, namespace=NAMESPACE):
            cluster.put_object(configuration)
        assert all(not certificates for certificates in bundles(cluster).values())
        start = len(cluster.request_log)
        code, out, _ = maintain()
        assert code == 0 and "trusts 1 CA" in out
        assert [
            path.split("?")[0].rsplit("/", 2)[1] for _, path in writes_since(cluster, start)
        ] == [
            "validatingwebhookconfigurations",
            "mutatingwebhookconfigurations",
        ]
        for certificates in bundles(cluster).values():
            assert [fingerprint(c) for c in certificates] == [fingerprint(ca)]


class TestRotation:
    def test_a_ca_close_to_expiry_is_rotated_and_both_cas_are_trusted(
        self, cluster: KubeAPIServer, maintain: Run
    ) -> None:
        """A CA that expires in 10 days (inside the 30-day window) is replaced; every
        bundle then holds the new CA first and the old one, which still verifies the
        serving certificate the pods have not reloaded yet."""
        secret, old_ca = old_secret(ca_expires_in=timedelta(days=10))
        cluster.put_object(secret)
        publish(cluster, certificate_pem(old_ca))
        code, out, err = maintain()
        assert (code, err) == (0, "")
        assert "new CA stored" in out and "serving certificate renewed" in out
        data = secret_data(cluster)
        new_ca = x509.load_pem_x509_certificate(data["ca.crt"])
        assert fingerprint(new_ca) != fingerprint(old_ca)
        assert new_ca.not_valid_after_utc > datetime.now(UTC) + timedelta(days=3000)
        x509.load_pem_x509_certificate(data["tls.crt"]).verify_directly_issued_by(new_ca)
        for name, certificates in bundles(cluster).items():
            assert [fingerprint(c) for c in certificates] == [
                fingerprint(new_ca),
                fingerprint(old_ca),
            ], name

    def test_the_bundles_trust_the_new_ca_before_the_new_serving_certificate_is_stored(
        self, cluster: KubeAPIServer, maintain: Run
    ) -> None:
        """Write order: new CA into the Secret (serving certificate unchanged), then both
        bundles, then the serving certificate signed by the new CA."""
        secret, old_ca = old_secret(ca_expires_in=timedelta(days=10))
        cluster.put_object(secret)
        old_tls = base64.b64decode(secret["data"]["tls.crt"])
        publish(cluster, certificate_pem(old_ca))
        start = len(cluster.request_log)
        assert maintain()[0] == 0
        written = [path.split("?")[0] for _, path in writes_since(cluster, start)]
        assert written == [
            f"/api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}",
            f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{VALIDATING}",
            f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{MUTATING}",
            f"/api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}",
        ]
        assert secret_data(cluster)["tls.crt"] != old_tls

    def test_after_rotation_a_second_run_writes_nothing(
        self, cluster: KubeAPIServer, maintain: Run
    ) -> None:
        """The old CA stays in the bundles while it is valid; nothing flaps."""
        secret, old_ca = old_secret(ca_expires_in=timedelta(days=10))
        cluster.put_object(secret)
        publish(cluster, certificate_pem(old_ca))
        assert maintain()[0] == 0
        start = len(cluster.request_log)
        code, out, _ = maintain()
        assert code == 0 and "up to date" in out
        assert writes_since(cluster, start) == []
        assert all(len(certificates) == 2 for certificates in bundles(cluster).values())

    def test_expired_cas_leave_the_bundle(self, cluster: KubeAPIServer, maintain: Run) -> None:
        """A CA that has expired verifies nothing: the next merge drops it."""
        expired, _ = create_ca(now=datetime.now(UTC) - timedelta(days=30), days=10)
        assert maintain()[0] == 0
        current = secret_data(cluster)["ca.crt"]
        publish(cluster, certificate_pem(expired) + current)
        code, out, _ = maintain()
        assert code == 0 and "trusts 1 CA" in out
        ca = x509.load_pem_x509_certificate(current)
        for certificates in bundles(cluster).values():
            assert [fingerprint(c) for c in certificates] == [fingerprint(ca)]

    def test_a_serving_certificate_for_another_service_is_reissued_by_the_same_ca(
        self, cluster: KubeAPIServer, maintain: Run
    ) -> None:
        """A missing SAN renews the serving certificate only: same CA, bundles untouched."""
        secret, ca = old_secret(ca_expires_in=timedelta(days=3000))
        cluster.put_object(secret)
        publish(cluster, certificate_pem(ca))
        start = len(cluster.request_log)
        code, out, err = maintain("--service", "renamed")
        assert (code, err) == (0, "")
        assert "missing SANs" in out
        data = secret_data(cluster)
        assert data["ca.crt"] == certificate_pem(ca)
        assert "renamed.d8-snapguard.svc" in subject_alt_names(
            x509.load_pem_x509_certificate(data["tls.crt"])
        )
        assert [path.split("?")[0] for _, path in writes_since(cluster, start)] == [
            f"/api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}"
        ]


class TestConcurrencyAndErrors:
    def test_a_conflicting_write_is_retried_from_a_fresh_read(
        self, cluster: KubeAPIServer, maintain: Run
    ) -> None:
        """Another maintainer changed the Secret between our read and write (409): the
        run starts over and still converges."""
        secret, old_ca = old_secret(ca_expires_in=timedelta(days=10))
        cluster.put_object(secret)
        publish(cluster, certificate_pem(old_ca))
        cluster.fail_next("update", "secrets", code=409, message="the object has been modified")
        code, _, err = maintain()
        assert (code, err) == (0, "")
        new_ca = x509.load_pem_x509_certificate(secret_data(cluster)["ca.crt"])
        assert fingerprint(new_ca) != fingerprint(old_ca)
        for certificates in bundles(cluster).values():
            assert fingerprint(new_ca) in [fingerprint(c) for c in certificates]

    def test_an_unreachable_api_server_is_one_line_and_exit_2(
        self, cluster: KubeAPIServer, maintain: Run, tmp_path: Path
    ) -> None:
        cluster.stop()
        code, out, err = maintain()
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and err.startswith("snapguard: error: ")

    @pytest.mark.parametrize(
        ("args", "expected"),
        [
            (("--renew-before", "9000h"), "--renew-before must be shorter"),
            (("--interval", "soon"), "invalid duration"),
            (("--service", "Not_A_Name"), "invalid service name"),
        ],
        ids=["renewal-window-longer-than-a-certificate", "bad-duration", "bad-service-name"],
    )
    def test_bad_arguments_are_one_line_and_exit_2(
        self, maintain: Run, args: tuple[str, ...], expected: str, cluster: KubeAPIServer
    ) -> None:
        start = len(cluster.request_log)
        code, _, err = maintain(*args)
        assert code == 2 and err.count("\n") == 1 and expected in err
        assert cluster.request_log[start:] == []


class TestLoop:
    def test_without_once_it_runs_every_interval_and_survives_api_errors(
        self, cluster: KubeAPIServer, maintain: Run, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A failed round is reported as one line and retried after 30 s (or the
        interval, when shorter); a good round waits the interval. Ctrl-C ends it."""
        import snapguard.commands.certs as certs_command

        sleeps: list[float] = []

        def fake_sleep(seconds: float) -> None:
            sleeps.append(seconds)
            if len(sleeps) == 2:
                raise KeyboardInterrupt

        monkeypatch.setattr(certs_command, "_sleep", fake_sleep)
        cluster.fail_next("get", "secrets", code=500, message="etcd is restarting")
        code, out, err = maintain("--interval", "2h", once=False)
        assert code == 130
        assert sleeps == [30.0, 7200.0]
        assert err.count("\n") == 1 and "etcd is restarting (retrying)" in err
        assert f"secret {NAMESPACE}/{SECRET}: created" in out
        assert set(secret_data(cluster)) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
