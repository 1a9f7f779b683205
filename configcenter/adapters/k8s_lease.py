"""The leader Lease: a coordination.k8s.io/v1 Lease held by one serve replica at a time.

The Lease follows client-go's leader election: the holder renews `renewTime`
every third of `leaseDurationSeconds`; anyone may take a lease whose renewal is
older than its duration; every write carries the resourceVersion read, so of
two replicas racing for an expired lease the API server lets exactly one win
(the other gets 409 Conflict). A holder that cannot renew in time stops
calling itself leader before another replica may take over.

serve opens it through `configcenter.wiring.open_lease_leader` as a
`configcenter.ports.leadership.Leadership`.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from configcenter.core.errors import UserError

log = logging.getLogger("configcenter.serve.leader")  # serve's log lines, as before the move


def _micro_time(moment: datetime) -> str:
    """MicroTime as the API server parses it: RFC 3339 with exactly six fraction digits."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseLeader:
    """Holds (or waits for) one Lease; `is_leader` is true only while the lease is ours."""

    def __init__(
        self,
        identity: str,
        namespace: str,
        name: str,
        *,
        kubeconfig: str | None = None,
        duration: float = 15.0,
    ) -> None:
        if duration < 1:
            raise UserError(f"--lease-duration {duration} is too short: use 1 second or more")
        self.identity = identity
        self.namespace = namespace
        self.name = name
        self.kubeconfig = kubeconfig
        self.duration = duration
        self._leader_until = 0.0  # monotonic time our last successful renewal is good until
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="configcenter-lease", daemon=True)
        self._api: Any = None
        self.last_error = ""
        #: Set when the Lease API says this replica can never hold the lease as
        #: things are (namespace missing, RBAC denies, credentials refused).
        self._problem = ""
        self._logged_at = 0.0

    def is_leader(self) -> bool:
        return time.monotonic() < self._leader_until

    def problem(self) -> str:
        return self._problem

    def start(self) -> None:
        from kubernetes import client, config

        if self.kubeconfig:
            api_client = config.new_client_from_config(config_file=self.kubeconfig)
        else:
            configuration = client.Configuration()
            try:
                config.load_incluster_config(client_configuration=configuration)
            except config.ConfigException:
                config.load_kube_config(client_configuration=configuration)
            api_client = client.ApiClient(configuration)
        self._api = client.CoordinationV1Api(api_client)
        self._try()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self.is_leader():
            self._release()
        self._leader_until = 0.0

    def _loop(self) -> None:
        while not self._stop.wait(self.duration / 3):
            self._try()

    def _try(self) -> None:
        started = time.monotonic()
        try:
            acquired = self._acquire_or_renew()
            self.last_error = ""
            if self._problem:
                log.info("leader lease %s/%s: usable again", self.namespace, self.name)
            # Cleared before leading: healthz (another thread) never says leader with the
            # problem of before still set.
            self._problem = ""
            # Renewed now: ours for the lease's duration, minus a margin for clock skew.
            self._leader_until = started + self.duration * 0.8 if acquired else 0.0
        except Exception as exc:  # the API is unreachable: keep what we have until it lapses
            self.last_error = f"{type(exc).__name__}: {getattr(exc, 'reason', '') or exc}"
            problem = self._diagnose(exc)
            now = time.monotonic()
            if problem:
                self._leader_until = 0.0
                if problem != self._problem or now - self._logged_at > 60:
                    log.error("leader lease: %s", problem)
                    self._logged_at = now
                self._problem = problem
            elif now - self._logged_at > 60 or not self._logged_at:
                log.warning("leader lease %s/%s: %s", self.namespace, self.name, self.last_error)
                self._logged_at = now

    def _diagnose(self, exc: Exception) -> str:
        """A problem no retry fixes by itself, said with its fix; "" for passing trouble."""
        status = getattr(exc, "status", None)
        where = f"Lease {self.namespace}/{self.name}"
        if status == 404:
            return (
                f"{where}: namespace {self.namespace!r} does not exist, so this replica can "
                "never lead (the reconcile schedule does not run): create it or pass "
                "--lease-namespace with an existing namespace"
            )
        if status == 403:
            return (
                f"{where}: the API server refused (HTTP 403 Forbidden), so this replica can "
                "never lead (the reconcile schedule does not run): bind a Role allowing get, "
                f"create and update on leases.coordination.k8s.io in namespace "
                f"{self.namespace!r} to the account serve runs as (see README, 'More than one "
                "replica')"
            )
        if status == 401:
            return (
                f"{where}: the API server did not accept the credentials (HTTP 401): check "
                "--kubeconfig (or the pod's service account token)"
            )
        return ""

    def _acquire_or_renew(self) -> bool:
        from kubernetes.client.exceptions import ApiException

        now = datetime.now(UTC)
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.duration)),
            "renewTime": _micro_time(now),
        }
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {**spec, "acquireTime": _micro_time(now), "leaseTransitions": 0},
            }
            try:
                self._api.create_namespaced_lease(self.namespace, body)
            except ApiException as create_error:
                if create_error.status == 409:
                    return False  # another replica created it first
                raise  # 404 here: the namespace does not exist
            log.info("leader lease %s/%s: acquired (created)", self.namespace, self.name)
            return True
        current = lease.spec
        holder = current.holder_identity or ""
        renewed = current.renew_time
        length = current.lease_duration_seconds or self.duration
        expired = renewed is None or renewed + timedelta(seconds=length) < now
        if holder != self.identity and holder and not expired:
            return False
        transitions = current.lease_transitions or 0
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": lease.metadata.resource_version,
            },
            "spec": {
                **spec,
                "acquireTime": _micro_time(current.acquire_time or now)
                if holder == self.identity
                else _micro_time(now),
                "leaseTransitions": transitions if holder == self.identity else transitions + 1,
            },
        }
        try:
            self._api.replace_namespaced_lease(self.name, self.namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                return False  # someone else wrote it since we read it
            raise
        if holder != self.identity:
            log.info("leader lease %s/%s: acquired from %r", self.namespace, self.name, holder)
        return True

    def _release(self) -> None:
        """Hand the lease back at shutdown so another replica need not wait for it to lapse."""
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity != self.identity:
                return
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.name,
                    "namespace": self.namespace,
                    "resourceVersion": lease.metadata.resource_version,
                },
                "spec": {
                    "holderIdentity": "",
                    "leaseDurationSeconds": 1,
                    "renewTime": _micro_time(datetime.now(UTC) - timedelta(seconds=60)),
                    "leaseTransitions": lease.spec.lease_transitions or 0,
                },
            }
            self._api.replace_namespaced_lease(self.name, self.namespace, body)
        except Exception as exc:
            log.warning("leader lease %s/%s: not released: %s", self.namespace, self.name, exc)
