"""Which workload summarises a service, and the claim-template defaults drift ignores."""

from __future__ import annotations

from configcenter.adapters.k8s_live import clean_live, main_workload, without_claim_defaults


def test_the_workload_named_like_the_service_wins_deployments_first() -> None:
    refs = ["DaemonSet/api", "StatefulSet/api", "Deployment/api", "Service/api"]
    assert main_workload("api", refs) == "Deployment/api"
    assert main_workload("api", ["DaemonSet/api", "StatefulSet/api"]) == "StatefulSet/api"
    assert main_workload("api", ["Deployment/web", "DaemonSet/api"]) == "DaemonSet/api"


def test_without_one_named_like_the_service_the_first_of_the_first_kind() -> None:
    refs = ["DaemonSet/a", "StatefulSet/z", "StatefulSet/b", "ConfigMap/api"]
    assert main_workload("api", refs) == "StatefulSet/b"
    assert main_workload("api", ["ConfigMap/api", "Service/api"]) is None


LIVE_STATEFULSET = {
    "apiVersion": "apps/v1",
    "kind": "StatefulSet",
    "metadata": {
        "name": "db",
        "namespace": "shop",
        "managedFields": [
            {
                "manager": "configcenter",
                "operation": "Apply",
                "fieldsV1": {
                    "f:spec": {"f:replicas": {}, "f:volumeClaimTemplates": {}},
                },
            }
        ],
    },
    "spec": {
        "replicas": 2,
        "podManagementPolicy": "OrderedReady",
        "revisionHistoryLimit": 10,
        "volumeClaimTemplates": [
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data", "creationTimestamp": None},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "512Mi"}},
                    "volumeMode": "Filesystem",
                },
                "status": {"phase": "Pending"},
            }
        ],
    },
}


def test_server_filled_claim_template_fields_are_trimmed() -> None:
    assert clean_live(LIVE_STATEFULSET)["spec"] == {
        "replicas": 2,
        "volumeClaimTemplates": [
            {
                "metadata": {"name": "data"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "512Mi"}},
                },
            }
        ],
    }


def test_a_block_volume_mode_is_kept_and_other_kinds_are_untouched() -> None:
    block = {
        "kind": "StatefulSet",
        "spec": {"volumeClaimTemplates": [{"spec": {"volumeMode": "Block"}}]},
    }
    assert without_claim_defaults(block) == block
    deployment = {"kind": "Deployment", "spec": {"volumeClaimTemplates": [{"kind": "x"}]}}
    assert without_claim_defaults(deployment) == deployment
