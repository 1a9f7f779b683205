"""Trimming live objects to what was set, via managedFields (no cluster needed)."""

from __future__ import annotations

import copy

import pytest

from configcenter.adapters.k8s_live import clean_live, keeps_label, spec_writers
from configcenter.adapters.k8s_manifests import (
    APPLIED_KINDS_ANNOTATION,
    VERSIONED_LABEL,
    is_versioned,
)

LIVE_SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {
        "name": "api",
        "namespace": "ns",
        "uid": "u",
        "resourceVersion": "7",
        "creationTimestamp": "t",
        "labels": {"app": "api"},
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
        "managedFields": [
            {
                "manager": "configcenter",
                "operation": "Apply",
                "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {
                        "f:ports": {
                            'k:{"port":80,"protocol":"TCP"}': {
                                ".": {},
                                "f:port": {},
                                "f:targetPort": {},
                            }
                        },
                        "f:selector": {},
                    },
                },
            },
            {
                "manager": "kube-controller-manager",
                "operation": "Update",
                "subresource": "status",
                "fieldsV1": {"f:status": {"f:loadBalancer": {}}},
            },
        ],
    },
    "spec": {
        "clusterIP": "10.0.0.1",
        "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}],
        "selector": {"app": "api"},
        "sessionAffinity": "None",
        "type": "ClusterIP",
    },
    "status": {"loadBalancer": {}},
}


def test_defaults_status_and_server_metadata_are_dropped() -> None:
    assert clean_live(LIVE_SERVICE) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "api", "namespace": "ns", "labels": {"app": "api"}},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": "api"}},
    }


def test_hand_edits_by_another_manager_are_kept() -> None:
    edited = {
        **LIVE_SERVICE,
        "metadata": {
            **LIVE_SERVICE["metadata"],  # type: ignore[dict-item]
            "managedFields": [
                *LIVE_SERVICE["metadata"]["managedFields"],  # type: ignore[index]
                {
                    "manager": "kubectl-edit",
                    "operation": "Update",
                    "fieldsV1": {"f:spec": {"f:sessionAffinity": {}}},
                },
            ],
        },
    }
    assert clean_live(edited)["spec"]["sessionAffinity"] == "None"


def test_secret_values_are_masked_and_objects_without_managed_fields_still_clean() -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s", "uid": "u", "resourceVersion": "1"},
        "data": {"A": "c2VjcmV0"},
        "status": {},
    }
    assert clean_live(secret) == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s"},
        "data": {"A": "***"},
    }


def test_the_prune_record_is_bookkeeping_not_drift() -> None:
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "api-config",
            "annotations": {
                APPLIED_KINDS_ANNOTATION: "apps/v1/Deployment,v1/ConfigMap",
                "configcenter.io/release": "r1",
            },
        },
        "data": {"A": "1"},
    }
    assert clean_live(config_map)["metadata"] == {
        "name": "api-config",
        "annotations": {"configcenter.io/release": "r1"},
    }


def test_overlapping_field_sets_of_several_managers_are_united_and_nothing_is_changed() -> None:
    """Two managers owning fields of the same containers (by `k:`), a finalizer (by `v:`)
    and an item by index (`i:`): the projection takes what either set, the input stays."""
    live = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "api",
            "finalizers": ["example.com/keep", "example.com/other"],
            "managedFields": [
                {
                    "manager": "configcenter",
                    "operation": "Apply",
                    "fieldsV1": {
                        "f:spec": {
                            "f:template": {
                                "f:spec": {
                                    "f:containers": {
                                        'k:{"name":"app"}': {".": {}, "f:image": {}, "f:name": {}}
                                    }
                                }
                            }
                        }
                    },
                },
                {
                    "manager": "kubectl-edit",
                    "operation": "Update",
                    "fieldsV1": {
                        "f:metadata": {"f:finalizers": {'v:"example.com/keep"': {}}},
                        "f:spec": {
                            "f:template": {
                                "f:spec": {
                                    "f:containers": {
                                        'k:{"name":"app"}': {"f:args": {}},
                                        'k:{"name":"sidecar"}': {".": {}, "f:name": {}},
                                    },
                                    "f:tolerations": {"i:1": {"f:key": {}}},
                                }
                            }
                        },
                    },
                },
            ],
        },
        "spec": {
            "replicas": 1,
            "template": {
                "spec": {
                    "containers": [
                        {"name": "app", "image": "a:1", "args": ["-v"], "imagePullPolicy": "X"},
                        {"name": "sidecar", "image": "s:1"},
                        {"name": "other", "image": "o:1"},
                    ],
                    "tolerations": [{"key": "first"}, {"key": "second", "effect": "NoSchedule"}],
                }
            },
        },
    }
    before = copy.deepcopy(live)
    cleaned = clean_live(live)
    assert live == before
    assert cleaned["metadata"] == {"name": "api", "finalizers": ["example.com/keep"]}
    assert cleaned["spec"] == {
        "template": {
            "spec": {
                "containers": [
                    {"name": "app", "image": "a:1", "args": ["-v"]},
                    {"name": "sidecar"},
                ],
                "tolerations": [{"key": "second"}],
            }
        }
    }
    # What the caller gets is its own: changing it changes nothing of the live object.
    cleaned["spec"]["template"]["spec"]["containers"][0]["args"].append("-x")
    assert live == before


@pytest.mark.parametrize(
    "managed",
    [
        [],  # no managedFields at all: the object is taken whole
        [{"manager": "configcenter", "operation": "Apply", "fieldsV1": {"f:data": {}}}],
        [
            {
                "manager": "configcenter",
                "operation": "Apply",
                "fieldsV1": {"f:metadata": {"f:labels": {f"f:{VERSIONED_LABEL}": {}}}},
            }
        ],
        [{"manager": "configcenter", "operation": "Apply", "fieldsV1": {"f:metadata": {".": {}}}}],
        [
            {
                "manager": "configcenter",
                "operation": "Apply",
                "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}},
            }
        ],
        [
            {
                "manager": "configcenter",
                "operation": "Apply",
                "fieldsV1": {"f:metadata": {"f:labels": {"f:other": {}}}},
            }
        ],
        # configcenter's own replace (a heal) is not something anyone set
        [
            {
                "manager": "configcenter",
                "operation": "Update",
                "fieldsV1": {"f:metadata": {"f:labels": {f"f:{VERSIONED_LABEL}": {}}}},
            },
            {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:data": {}}},
        ],
        [
            {
                "manager": "kube-controller-manager",
                "operation": "Update",
                "subresource": "status",
                "fieldsV1": {"f:metadata": {"f:labels": {f"f:{VERSIONED_LABEL}": {}}}},
            },
            {"manager": "kubectl-label", "operation": "Update", "fieldsV1": {"f:data": {}}},
        ],
    ],
)
@pytest.mark.parametrize("labelled", [True, False])
def test_keeps_label_answers_what_the_projection_keeps(
    managed: list[dict[str, object]], labelled: bool
) -> None:
    """`observe` leaves old config versions unprojected by asking `keeps_label` first: it
    must say exactly whether the cleaned object would carry the label."""
    labels = {VERSIONED_LABEL: "config", "other": "x"} if labelled else {"other": "x"}
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "api-config-0123456789", "labels": labels, "managedFields": managed},
        "data": {"A": "1"},
    }
    assert keeps_label(config_map, VERSIONED_LABEL) == is_versioned(clean_live(config_map))


def _workload(*entries: dict[str, object]) -> dict[str, object]:
    return {"kind": "Deployment", "metadata": {"name": "api", "managedFields": list(entries)}}


def _entry(manager: str, fields: dict[str, object], **extra: str) -> dict[str, object]:
    return {"manager": manager, "operation": "Update", "fieldsV1": fields, **extra}


RESTARTED = {
    "f:spec": {
        "f:template": {
            "f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/restartedAt": {}}}
        }
    }
}
SET_ENV = {
    "f:spec": {
        "f:template": {
            "f:spec": {
                "f:containers": {
                    'k:{"name":"app"}': {"f:env": {'k:{"name":"X"}': {".": {}, "f:value": {}}}}
                }
            }
        }
    }
}


def test_spec_writers_are_the_others_who_set_something_in_the_spec() -> None:
    """Read from the listed object's managedFields, so a plan needs no comparison with the
    release for a workload nobody else wrote to; what changes nothing that runs (status,
    `kubectl scale`: compared on its own, `kubectl rollout restart`, metadata) is left out."""
    mine = _entry("configcenter", SET_ENV, operation="Apply")
    quiet = _workload(
        mine,
        _entry("configcenter", SET_ENV),  # a heal's replace: configcenter's own
        _entry("kube-controller-manager", {"f:status": {"f:replicas": {}}}, subresource="status"),
        _entry("kubectl", {"f:spec": {"f:replicas": {}}}, subresource="scale"),
        _entry("kubectl-rollout", RESTARTED),
        _entry("kube-controller-manager", {"f:metadata": {"f:annotations": {".": {}}}}),
    )
    assert spec_writers(quiet) == ()
    assert spec_writers({"kind": "Deployment", "metadata": {"name": "api"}}) == ()

    edited = _workload(mine, _entry("kubectl-set", SET_ENV), _entry("kubectl-set", SET_ENV))
    assert spec_writers(edited) == ("kubectl-set",)
    # A restart plus anything else in the template, or a spec set as a whole, is an edit.
    both = copy.deepcopy(RESTARTED)
    both["f:spec"]["f:template"]["f:spec"] = {"f:dnsPolicy": {}}  # type: ignore[index]
    assert spec_writers(_workload(_entry("kubectl-edit", both))) == ("kubectl-edit",)
    assert spec_writers(_workload(_entry("kubectl-replace", {"f:spec": {}}))) == (
        "kubectl-replace",
    )
